package systemtest

// Hostile tests of what issue 12 added, on in-process federations with
// real nodes (Badger, Raft, QUIC, HTTPS with mTLS): joins with tokens,
// renewals through the online intermediate, the removal and re-adding of a
// region, and backups. The attackers: a holder of a join token who edits
// it, hostile join bodies, one token at two coordinators at once, a
// district posing as the coordinator a new node joins through, a thief of
// a certificate who renews it, the holder of a stolen intermediate, the
// users of a removed district, and operators and users after another
// node's backup. Each test is named after the attack and passes when the
// defence holds; a failing test proves a defect.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
)

// heCSR makes a key and a PEM CSR (its subject is what the CSR claims;
// signers ignore it).
func heCSR(t *testing.T, id certs.Identity) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, der, err := certs.NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// heHTTP is an HTTPS client that verifies the federation's CA, presents
// cert (nil: none) and connects from the loopback address src ("" for the
// default), so that limits per address do not mix a test's attempts.
func heHTTP(t *testing.T, f *localfed.Federation, cert *tls.Certificate, src string) *http.Client {
	t.Helper()
	pool, err := certs.LoadPool(f.Layout.CA)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	tr := &http.Transport{TLSClientConfig: tc, DialContext: d.DialContext, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// heDo sends one request and returns the answer's status, body and the
// API error in it (nil on 2xx).
func heDo(t *testing.T, c *http.Client, method, url string, body any) (int, []byte, *api.Error, error) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctxT(t, 30*time.Second), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode/100 == 2 {
		return resp.StatusCode, data, nil, nil
	}
	var eb api.ErrorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error != nil {
		return resp.StatusCode, data, eb.Error, nil
	}
	return resp.StatusCode, data, &api.Error{Code: http.StatusText(resp.StatusCode), Message: string(data)}, nil
}

// heJoin posts a join (api.JoinRequest or raw bytes) to node name from src;
// it may run on any goroutine (a transport failure is an *api.Error too).
func heJoin(t *testing.T, f *localfed.Federation, name, src string, req any) (*api.JoinAnswer, *api.Error) {
	t.Helper()
	status, data, e, err := heDo(t, heHTTP(t, f, nil, src), "POST", "https://"+f.Node(name).APIAddr()+"/v1/join", req)
	if err != nil {
		return nil, &api.Error{Code: "transport", Message: err.Error()}
	}
	if e != nil {
		return nil, e
	}
	var out api.JoinAnswer
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, &api.Error{Code: "decode", Message: fmt.Sprintf("join answer (%d): %v", status, err)}
	}
	return &out, nil
}

// heSrc is the n-th loopback source address of a test (127.0.0.2 on).
func heSrc(n int) string { return fmt.Sprintf("127.0.%d.%d", 1+n/250, 2+n%250) }

// heStartFedSigningCities starts a local federation whose two cities hold
// the online intermediate too (as the province does), so that joins and
// renewals can be served by more than one coordinator.
func heStartFedSigningCities(t *testing.T, spec localfed.Spec, opts node.Options) *localfed.Federation {
	t.Helper()
	spec.Dir = t.TempDir()
	l, err := localfed.Create(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"quzhou", "hangzhou"} {
		ln, ok := l.Node(name)
		if !ok {
			t.Fatalf("no node %s", name)
		}
		cfg, err := node.LoadConfig(ln.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS.SignerCert = filepath.Join(spec.Dir, "intermediate-"+localfed.IntermediateName+".pem")
		cfg.TLS.SignerKey = filepath.Join(spec.Dir, "intermediate-"+localfed.IntermediateName+"-key.pem")
		data, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ln.ConfigPath, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return startFed(t, spec, opts)
}

// heAdd adds a district region at the province and returns its token.
func heAdd(t *testing.T, f *localfed.Federation, path string) api.JoinToken {
	t.Helper()
	added, err := clientOf(t, f, f.Province(), f.Layout.Operator).AddRegion(ctxT(t, 30*time.Second),
		api.RegionAddRequest{Path: path, Role: "district", TokenLife: "1h"})
	if err != nil {
		t.Fatalf("region add %s: %v", path, err)
	}
	tok, err := api.ParseJoinToken(added.Token)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// pairOf is a tls.Certificate from a PEM chain and a key.
func pairOf(t *testing.T, chainPEM string, key *ecdsa.PrivateKey) tls.Certificate {
	t.Helper()
	keyPEM, err := certs.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair([]byte(chainPEM), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// filesOf writes a pair to files, for the API client.
func filesOf(t *testing.T, chainPEM string, key *ecdsa.PrivateKey) localfed.ClientFiles {
	t.Helper()
	keyPEM, err := certs.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "c-key.pem")
	if err := os.WriteFile(cp, []byte(chainPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kp, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return localfed.ClientFiles{Cert: cp, Key: kp}
}

// TestHostileJoinTokens: what a holder of a join token, or of none, can do
// at POST /v1/join (the route needs no certificate). A district's token
// with its role rewritten must not yield a coordinator's certificate or
// the pseudonym key; hostile bodies are refused and leave the token live;
// one token presented at once at the province and at a city joins once; a
// coordinator not above the region does not commit it; a token is not
// good for another region; joins are rate limited per address; a token
// sent to a district posing as the coordinator is not handed over; no
// token or secret reaches the audit log, the logs or the metrics.
func TestHostileJoinTokens(t *testing.T) {
	logs := &lockedBuffer{}
	f := heStartFedSigningCities(t, localfed.Spec{Districts: 2}, node.Options{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	prov := f.Province()
	var secrets []api.JoinToken
	src := 0
	next := func() string { src++; return heSrc(src) }

	t.Run("a district's token with its role rewritten to city gets no coordinator certificate and no pseudonym key", func(t *testing.T) {
		tok := heAdd(t, f, "zhejiang/quzhou/kaihua")
		secrets = append(secrets, tok)
		for _, role := range []string{"city", "province"} {
			forged := tok
			forged.Role = role
			id := certs.Identity{Federation: tok.Federation, Role: certs.Role(role), Region: tok.Region}
			_, csr := heCSR(t, id)
			ans, e := heJoin(t, f, prov, next(), api.JoinRequest{Token: forged.String(), CSR: csr, Exchange: "127.0.0.1:1"})
			if e != nil {
				continue
			}
			leaf, _ := certs.LoadCertFile(writeTemp(t, ans.Certificate))
			got, _ := certs.IdentityOf(leaf)
			own, _ := os.ReadFile(filepath.Join(f.Dir, "pseudonym.key"))
			t.Errorf("a district's join token rewritten to %s was accepted: certificate for %s, pseudonym key handed over: %v (the federation's: %v)",
				role, got, ans.PseudonymKey != "", ans.PseudonymKey != "" && strings.TrimSpace(string(own)) == ans.PseudonymKey)
			return // the token is spent
		}
	})

	t.Run("hostile join bodies are refused and leave the token live", func(t *testing.T) {
		tok := heAdd(t, f, "zhejiang/quzhou/qujiang")
		secrets = append(secrets, tok)
		id := certs.Identity{Federation: tok.Federation, Role: certs.District, Region: tok.Region}
		_, csr := heCSR(t, id)
		good := api.JoinRequest{Token: tok.String(), CSR: csr, Exchange: "127.0.0.1:17901"}
		nine := make([]string, 9)
		for i := range nine {
			nine[i] = fmt.Sprintf("h%d.example", i)
		}
		otherFed := tok
		otherFed.Federation = "elsewhere"
		truncatedCSR := "-----BEGIN CERTIFICATE REQUEST-----\nMIIBDzCBlgIBADAXMRUwEwYDVQQDEwxub3QgYSBQLTI1Ni0=\n-----END CERTIFICATE REQUEST-----\n"
		bodies := map[string]any{
			"nine host names":            func() api.JoinRequest { r := good; r.Hosts = nine; return r }(),
			"a wildcard host name":       func() api.JoinRequest { r := good; r.Hosts = []string{"*.quzhou.example"}; return r }(),
			"a host name with a NUL":     func() api.JoinRequest { r := good; r.Hosts = []string{"a\x00.example"}; return r }(),
			"a wildcard exchange":        func() api.JoinRequest { r := good; r.Exchange = "0.0.0.0:7443"; return r }(),
			"an IPv6 wildcard exchange":  func() api.JoinRequest { r := good; r.Exchange = "[::]:7443"; return r }(),
			"an exchange without a port": func() api.JoinRequest { r := good; r.Exchange = "127.0.0.1"; return r }(),
			"a plain-HTTP API":           func() api.JoinRequest { r := good; r.API = "http://127.0.0.1:1"; return r }(),
			"a garbage CSR":              func() api.JoinRequest { r := good; r.CSR = "garbage"; return r }(),
			"a CSR that does not parse":  func() api.JoinRequest { r := good; r.CSR = truncatedCSR; return r }(),
			"a garbage token":            func() api.JoinRequest { r := good; r.Token = "credfed-join-1.AAAA"; return r }(),
			"another federation's token": func() api.JoinRequest { r := good; r.Token = otherFed.String(); return r }(),
			"a body of 2 MiB":            []byte(`{"token":"` + strings.Repeat("x", 2<<20) + `"}`),
			"JSON that is not an object": []byte(`[1,2,3]`),
		}
		for name, body := range bodies {
			ans, e := heJoin(t, f, prov, next(), body)
			if e == nil {
				t.Errorf("%s: joined (%s)", name, ans.Region)
				continue
			}
			if e.Code != api.CodeBadRequest {
				t.Errorf("%s: %s %q, want bad_request", name, e.Code, e.Message)
			}
			t.Logf("%s: %s %s", name, e.Code, e.Message)
			if strings.Contains(e.Message, base64.RawURLEncoding.EncodeToString(tok.Secret)) {
				t.Errorf("%s: the refusal repeats the token's secret", name)
			}
		}
		fed, err := clientOf(t, f, prov, f.Layout.Operator).Federation(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if r := registered(fed, tok.Region); r == nil || r.Exchange != "" {
			t.Fatalf("after the refused joins the region is %+v, want registered without an address", r)
		}
		ans, e := heJoin(t, f, prov, next(), good)
		if e != nil {
			t.Fatalf("the token after the refused bodies: %v", e)
		}
		leaf, err := certs.LoadCertFile(writeTemp(t, ans.Certificate))
		if err != nil {
			t.Fatal(err)
		}
		if len(leaf.DNSNames) != 0 || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
			t.Errorf("the joined certificate's hosts: %v %v, want only the exchange host", leaf.DNSNames, leaf.IPAddresses)
		}
	})

	t.Run("one token presented at once at the province and at a city joins once", func(t *testing.T) {
		tok := heAdd(t, f, "zhejiang/quzhou/longyou")
		secrets = append(secrets, tok)
		id := certs.Identity{Federation: tok.Federation, Role: certs.District, Region: tok.Region}
		const n = 8
		var ok atomic.Int32
		var wg sync.WaitGroup
		refusals := make([]*api.Error, n)
		srcs := make([]string, n)
		for i := range srcs {
			srcs[i] = next()
		}
		start := make(chan struct{})
		for i := 0; i < n; i++ {
			_, csr := heCSR(t, id)
			at := prov
			if i%2 == 1 {
				at = "quzhou"
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, e := heJoin(t, f, at, srcs[i], api.JoinRequest{Token: tok.String(), CSR: csr, Exchange: fmt.Sprintf("127.0.0.1:%d", 17910+i)})
				if e == nil {
					ok.Add(1)
					t.Logf("attempt %d joined at %s", i, at)
				}
				refusals[i] = e
			}()
		}
		close(start)
		wg.Wait()
		if ok.Load() != 1 {
			t.Errorf("%d joins with one token at two coordinators at once, want 1", ok.Load())
		}
		for i, e := range refusals {
			if e != nil && e.Code != api.CodeConflict && !strings.Contains(e.Message, "used") {
				t.Errorf("attempt %d: %s %q, want a refusal that says the token was used", i, e.Code, e.Message)
			}
		}
	})

	t.Run("a coordinator not above the region does not commit its join", func(t *testing.T) {
		tok := heAdd(t, f, "zhejiang/quzhou/jiangshan")
		secrets = append(secrets, tok)
		_, csr := heCSR(t, certs.Identity{Federation: tok.Federation, Role: certs.District, Region: tok.Region})
		req := api.JoinRequest{Token: tok.String(), CSR: csr, Exchange: "127.0.0.1:17921"}
		if _, e := heJoin(t, f, "hangzhou", next(), req); e == nil || e.Code != api.CodeForbidden {
			t.Errorf("a quzhou district's token at hangzhou: %v, want forbidden", e)
		} else {
			t.Logf("at hangzhou: %s", e.Message)
		}
		if _, e := heJoin(t, f, "quzhou", next(), req); e != nil {
			t.Errorf("the token at quzhou after hangzhou's refusal: %v", e)
		}
	})

	t.Run("a token is not good for another region", func(t *testing.T) {
		tokA := heAdd(t, f, "zhejiang/quzhou/changshan")
		tokB := heAdd(t, f, "zhejiang/hangzhou/gongshu") // has its own live token
		secrets = append(secrets, tokA, tokB)
		for _, other := range []string{tokB.Region, "zhejiang/quzhou/kaihua2", regionOf(f, f.Districts()[0]), "zhejiang/hangzhou/binjiang"} {
			forged := tokA
			forged.Region = other
			_, csr := heCSR(t, certs.Identity{Federation: tokA.Federation, Role: certs.District, Region: other})
			if ans, e := heJoin(t, f, prov, next(), api.JoinRequest{Token: forged.String(), CSR: csr, Exchange: "127.0.0.1:17931"}); e == nil {
				t.Errorf("changshan's token joined %s (%s)", other, ans.Region)
			} else {
				t.Logf("as %s: %s %s", other, e.Code, e.Message)
			}
		}
	})

	t.Run("joins are rate limited per address", func(t *testing.T) {
		from := next()
		limited := false
		for i := 0; i < 12 && !limited; i++ {
			_, e := heJoin(t, f, prov, from, api.JoinRequest{Token: "credfed-join-1.AAAA", CSR: "x", Exchange: "127.0.0.1:1"})
			limited = e != nil && e.Code == api.CodeTooManyRequests
		}
		if !limited {
			t.Error("12 joins at once from one address were all answered")
		}
	})

	t.Run("a token sent to a district posing as the coordinator is not handed over", func(t *testing.T) {
		tok := heAdd(t, f, "zhejiang/quzhou/changshan")
		secrets = append(secrets, tok)
		// A district operator holds its node's certificate, valid for its
		// host names (which a joining node chooses: joinHosts takes any).
		// It answers at the address the token's coordinator name resolves
		// to (here: rewritten in the token, as DNS would).
		district := nodeCertificate(t, f, f.Districts()[0])
		caPEM, err := os.ReadFile(f.Layout.CA)
		if err != nil {
			t.Fatal(err)
		}
		var stolen atomic.Value
		hostile := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/v1/ca":
				json.NewEncoder(w).Encode(map[string]string{"ca": string(caPEM)})
			case "/v1/join":
				var in api.JoinRequest
				json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in)
				stolen.Store(in.Token)
				w.WriteHeader(http.StatusServiceUnavailable)
				json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: api.CodeUnavailable, Message: "try later"}})
			}
		}))
		hostile.TLS = &tls.Config{Certificates: []tls.Certificate{district}, MinVersion: tls.VersionTLS13}
		hostile.StartTLS()
		defer hostile.Close()
		redirected := tok
		redirected.API = hostile.URL
		dir := t.TempDir()
		cfg := node.Config{Federation: tok.Federation, Role: certs.District, Region: tok.Region, DataDir: filepath.Join(dir, "data"),
			Listen: node.ListenConfig{Exchange: "127.0.0.1:17941", API: "127.0.0.1:18941", Metrics: "127.0.0.1:0"},
			TLS:    node.TLSConfig{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "n.pem"), Key: filepath.Join(dir, "n-key.pem")}}
		_, jerr := node.Join(ctxT(t, 20*time.Second), cfg, redirected.String())
		if s, _ := stolen.Load().(string); s != "" {
			got, _ := api.ParseJoinToken(s)
			t.Errorf("the joining node sent its token to a district's server (it verified only the CA and the host name): the district now holds the secret of %s (join: %v)",
				got.Region, jerr)
			// It can use it at the real coordinator before the node does.
			_, csr := heCSR(t, certs.Identity{Federation: tok.Federation, Role: certs.District, Region: tok.Region})
			if _, e := heJoin(t, f, prov, next(), api.JoinRequest{Token: s, CSR: csr, Exchange: "127.0.0.1:17942"}); e == nil {
				t.Errorf("and joined with it as %s", tok.Region)
			}
		}
	})

	t.Run("a district's operator cannot add a coordinator below its district and get the pseudonym key", func(t *testing.T) {
		d := f.Districts()[0]
		kcOp := issueUser(t, f, "operator", regionOf(f, d), "ops-kc")
		path := regionOf(f, d) + "/street"
		added, err := clientOf(t, f, prov, kcOp).AddRegion(ctxT(t, 30*time.Second), api.RegionAddRequest{Path: path, Role: "city", TokenLife: "1h"})
		if err != nil {
			t.Logf("refused: %v", err)
			return
		}
		tok, err := api.ParseJoinToken(added.Token)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, tok)
		_, csr := heCSR(t, certs.Identity{Federation: tok.Federation, Role: certs.City, Region: path})
		ans, e := heJoin(t, f, prov, next(), api.JoinRequest{Token: added.Token, CSR: csr, Exchange: "127.0.0.1:17961"})
		if e != nil {
			t.Errorf("%s's operator added city region %s (the join then failed: %v)", regionOf(f, d), path, e)
			return
		}
		own, _ := os.ReadFile(filepath.Join(f.Dir, "pseudonym.key"))
		t.Errorf("%s's operator added city region %s through the province, joined it, and received the federation's pseudonym key: %v",
			regionOf(f, d), path, ans.PseudonymKey != "" && strings.TrimSpace(string(own)) == ans.PseudonymKey)
	})

	t.Run("no token or secret in the audit log, the logs or the metrics", func(t *testing.T) {
		own, err := os.ReadFile(filepath.Join(f.Dir, "pseudonym.key"))
		if err != nil {
			t.Fatal(err)
		}
		needles := map[string]string{"the pseudonym key": strings.TrimSpace(string(own))}
		for i, tok := range secrets {
			needles[fmt.Sprintf("token %d", i)] = tok.String()
			needles[fmt.Sprintf("secret %d (base64)", i)] = base64.RawURLEncoding.EncodeToString(tok.Secret)
			needles[fmt.Sprintf("secret %d (std base64)", i)] = base64.StdEncoding.EncodeToString(tok.Secret)
			needles[fmt.Sprintf("secret %d (hex)", i)] = hex.EncodeToString(tok.Secret)
			h := sha256.Sum256(tok.Secret)
			needles[fmt.Sprintf("token hash %d (hex)", i)] = hex.EncodeToString(h[:])
		}
		var audit strings.Builder
		for _, n := range []string{prov, "quzhou", "hangzhou"} {
			for _, e := range auditEntries(t, f, n) {
				fmt.Fprintf(&audit, "%+v\n", e)
			}
		}
		for _, l := range leaks(logs.String(), allMetrics(t, f), []string{audit.String()}, needles) {
			t.Error(l)
		}
	})
}

func writeTemp(t *testing.T, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.pem")
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// interSerial is the serial of the local federation's online intermediate.
func interSerial(t *testing.T, f *localfed.Federation) string {
	t.Helper()
	c, err := certs.LoadCertFile(filepath.Join(f.Dir, "intermediate-"+localfed.IntermediateName+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	return certs.SerialString(c.SerialNumber)
}

// renewAt renews the certificate of files at node name over a new key and
// returns the renewed pair as files and as a tls.Certificate.
func renewAt(t *testing.T, f *localfed.Federation, name string, files localfed.ClientFiles, id certs.Identity) (localfed.ClientFiles, tls.Certificate, error) {
	t.Helper()
	key, csr := heCSR(t, id)
	ans, err := clientOf(t, f, name, files).RenewCertificate(ctxT(t, 30*time.Second), []byte(csr))
	if err != nil {
		return localfed.ClientFiles{}, tls.Certificate{}, err
	}
	nf := filesOf(t, ans.Certificate, key)
	nf.Identity = files.Identity
	return nf, pairOf(t, ans.Certificate, key), nil
}

// TestHostileRenewal: a thief of a certificate renews it at the province
// (POST /v1/certificates/renew); the operator then revokes the stolen
// serial. A renewal keeps the identity and lifetime whatever the CSR says,
// is rate limited per identity, and a suspension reaches renewals on
// kept-alive connections. Revoking the intermediate refuses what it signed
// on kept-alive HTTPS connections too.
func TestHostileRenewal(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	prov := f.Province()
	op := clientOf(t, f, prov, f.Layout.Operator)

	t.Run("a thief's renewal of a stolen certificate is refused once the stolen serial is revoked", func(t *testing.T) {
		stolen := issueUser(t, f, "coordinator", "zhejiang", "credit-office-laptop")
		id, _ := certs.ParseIdentity(stolen.Identity)
		// The thief renews first: a new key only the thief holds.
		renewed, _, err := renewAt(t, f, prov, stolen, id)
		if err != nil {
			t.Fatal(err)
		}
		// The operator learns of the theft and revokes the certificate
		// (docs/operations.md: "key copied to a laptop").
		if _, err := op.Revoke(ctxT(t, 30*time.Second), api.RevokeRequest{Serial: serialOf(t, stolen.Cert), Reason: "key copied to a laptop"}); err != nil {
			t.Fatal(err)
		}
		wait.Until(t, 10*time.Second, "the stolen certificate to be refused", func() bool {
			_, err := clientOf(t, f, prov, stolen).Federation(ctxT(t, 5*time.Second))
			return err != nil
		})
		if _, err := clientOf(t, f, prov, renewed).Federation(ctxT(t, 10*time.Second)); err == nil {
			subject := credit.SyntheticPerson(7272, credit.NewDate(1983, 3, 3))
			_, lerr := clientOf(t, f, prov, renewed).Lookup(ctxT(t, 20*time.Second),
				api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "thief", Reference: "after-revoke"})
			again, _, rerr := renewAt(t, f, prov, renewed, id)
			t.Errorf("the thief's renewal of the revoked certificate is served (serial revocation does not reach renewals): lookup %v; renews again: %v (a new certificate written: %v)",
				errString(lerr), rerr == nil, again.Cert != "")
		}
	})

	t.Run("a renewal keeps the caller's identity and lifetime whatever the CSR says", func(t *testing.T) {
		dept := f.Layout.Departments[f.Districts()[0]]
		id, _ := certs.ParseIdentity(dept.Identity)
		key, der, err := certs.NewCSR(certs.Identity{Federation: id.Federation, Role: certs.Operator, Region: "zhejiang", Institution: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		ans, err := clientOf(t, f, prov, dept).RenewCertificate(ctxT(t, 30*time.Second), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
		if err != nil {
			t.Fatal(err)
		}
		pair := pairOf(t, ans.Certificate, key)
		got, err := certs.IdentityOf(pair.Leaf)
		old := mustLeaf(t, dept)
		if err != nil || got != id {
			t.Errorf("renewed as %v (%v), want %s", got, err, id)
		}
		if d := pair.Leaf.NotAfter.Sub(pair.Leaf.NotBefore) - old.NotAfter.Sub(old.NotBefore); d > time.Minute || d < -time.Minute {
			t.Errorf("the renewal's lifetime differs by %v from the renewed certificate's", d)
		}
		if len(pair.Leaf.DNSNames)+len(pair.Leaf.IPAddresses) != 0 || pair.Leaf.IsCA {
			t.Errorf("a user renewal with host names %v %v or CA %v", pair.Leaf.DNSNames, pair.Leaf.IPAddresses, pair.Leaf.IsCA)
		}
	})

	t.Run("renewals are rate limited per identity", func(t *testing.T) {
		u := issueUser(t, f, "portal", regionOf(f, f.Districts()[0]), "portal-rate")
		id, _ := certs.ParseIdentity(u.Identity)
		limited := false
		for i := 0; i < 6 && !limited; i++ {
			_, _, err := renewAt(t, f, prov, u, id)
			limited = api.Code(err) == api.CodeTooManyRequests
		}
		if !limited {
			t.Error("six renewals of one identity at once were all signed")
		}
	})

	t.Run("a suspension refuses a renewed certificate on a kept-alive connection", func(t *testing.T) {
		u := issueUser(t, f, "coordinator", "zhejiang", "credit-office-susp")
		id, _ := certs.ParseIdentity(u.Identity)
		_, pair, err := renewAt(t, f, prov, u, id)
		if err != nil {
			t.Fatal(err)
		}
		c := heHTTP(t, f, &pair, "")
		url := "https://" + f.Node(prov).APIAddr() + "/v1/federation"
		if st, _, e, err := heDo(t, c, "GET", url, nil); err != nil || e != nil {
			t.Fatalf("the renewal before the suspension: %d %v %v", st, e, err)
		}
		if _, err := op.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: id.String(), Reason: "review"}); err != nil {
			t.Fatal(err)
		}
		wait.Until(t, 10*time.Second, "the renewed certificate to be refused on its kept-alive connection", func() bool {
			st, _, _, err := heDo(t, c, "GET", url, nil)
			return err == nil && st == http.StatusUnauthorized
		})
	})

	t.Run("a revoked intermediate refuses its leaves on kept-alive HTTPS connections", func(t *testing.T) {
		u := issueUser(t, f, "coordinator", "zhejiang", "credit-office-inter")
		id, _ := certs.ParseIdentity(u.Identity)
		_, pair, err := renewAt(t, f, prov, u, id)
		if err != nil {
			t.Fatal(err)
		}
		c := heHTTP(t, f, &pair, "")
		url := "https://" + f.Node(prov).APIAddr() + "/v1/federation"
		get := func() (int, bool, error) {
			var reused bool
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctxT(t, 10*time.Second),
				&httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}), "GET", url, nil)
			resp, err := c.Do(req)
			if err != nil {
				return 0, reused, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode, reused, nil
		}
		if st, _, err := get(); err != nil || st != http.StatusOK {
			t.Fatalf("the intermediate's leaf before the revocation: %d %v", st, err)
		}
		if _, err := op.Revoke(ctxT(t, 30*time.Second), api.RevokeRequest{Serial: interSerial(t, f), Reason: "signer key stolen"}); err != nil {
			t.Fatal(err)
		}
		// A new connection with the leaf is refused (the handshake checks
		// the chain): the revocation has arrived.
		wait.Until(t, 10*time.Second, "a new connection with the leaf to be refused", func() bool {
			st, _, e, err := heDo(t, heHTTP(t, f, &pair, ""), "GET", url, nil)
			return err != nil || e != nil && st == http.StatusUnauthorized
		})
		st, reused, err := get()
		if !reused {
			t.Skipf("the client did not keep its connection alive (status %d, %v): the attack needs one", st, err)
		}
		if err == nil && st == http.StatusOK {
			t.Errorf("a leaf of the revoked intermediate is served on its kept-alive connection (the API checks the leaf's serial and identity only)")
		}
	})
}

func errString(err error) string {
	if err == nil {
		return "answered"
	}
	return err.Error()
}

// TestHostileRemovedRegion: a district is removed (region remove: its node
// identity suspended, the region out of the registry). Its portal and
// department keep their certificates. They must not get reports at the
// coordinators above, nor renew their certificates there; and when the
// path is added again and a new node joins, the new node's certificate
// must work and the removed node's not.
func TestHostileRemovedRegion(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	prov := f.Province()
	removed, other := f.Districts()[0], f.Districts()[1]
	path := regionOf(f, removed)
	op := clientOf(t, f, prov, f.Layout.Operator)
	subject := credit.SyntheticPerson(7373, credit.NewDate(1984, 4, 4))
	submit(t, f, other, record("RM-1", subject, "FOOD-DRUG-PENALTY", "held elsewhere"))
	waitIndexed(t, f, subject, 1)
	if _, err := op.RemoveRegion(ctxT(t, 30*time.Second), path); err != nil {
		t.Fatal(err)
	}
	nodeID := certs.Identity{Federation: f.Layout.Federation, Role: certs.District, Region: path}
	for _, n := range []string{prov, "quzhou"} {
		wait.Until(t, 10*time.Second, "the removal at "+n, func() bool {
			_, sus := suspendedHas(revocationsAt(t, f, n), nodeID.String())
			_, still := f.Node(n).Replica().State().Region(path)
			return sus && !still
		})
	}

	t.Run("the removed district's portal gets no report at the coordinators above", func(t *testing.T) {
		portal := f.Layout.Portals[removed]
		for _, at := range []string{"quzhou", prov} {
			_, rep, err := clientOf(t, f, at, portal).Report(ctxT(t, 30*time.Second),
				api.SubjectRequest{Subject: subject, Authentication: "实名认证 FACE-2026-002"})
			if err == nil {
				n := 0
				if rep != nil {
					for _, d := range rep.Districts {
						n += len(d.Records)
					}
				}
				t.Errorf("the portal of removed district %s got a signed report at %s (%d records)", path, at, n)
			}
		}
	})

	t.Run("the removed district's users cannot renew their certificates above", func(t *testing.T) {
		for what, files := range map[string]localfed.ClientFiles{"department": f.Layout.Departments[removed], "portal": f.Layout.Portals[removed]} {
			id, _ := certs.ParseIdentity(files.Identity)
			if got, _, err := renewAt(t, f, prov, files, id); err == nil {
				t.Errorf("the %s of removed district %s renewed its certificate at the province (a new certificate: %v)", what, path, got.Cert != "")
			}
		}
	})

	t.Run("re-adding the path: the new node's certificate works, the removed node's does not", func(t *testing.T) {
		tok := heAdd(t, f, path)
		key, csr := heCSR(t, nodeID)
		ans, e := heJoin(t, f, prov, heSrc(1), api.JoinRequest{Token: tok.String(), CSR: csr, Exchange: "127.0.0.1:17951"})
		if e != nil {
			t.Fatalf("the new node's join: %v", e)
		}
		fresh := pairOf(t, ans.Certificate, key)
		old := nodeCertificate(t, f, removed)
		url := "https://" + f.Node(prov).APIAddr() + "/v1/federation"
		served := func(pair *tls.Certificate) (bool, string) {
			st, _, e, err := heDo(t, heHTTP(t, f, pair, ""), "GET", url, nil)
			switch {
			case err != nil:
				return false, "handshake refused: " + err.Error()
			case e != nil:
				return false, fmt.Sprintf("%d %s: %s", st, e.Code, e.Message)
			}
			return true, ""
		}
		if ok, why := served(&fresh); !ok {
			t.Errorf("the node that joined the re-added region is refused (%s): the removed node's suspension stays on the identity, "+
				"and lifting it would let the removed node's certificate back in", why)
		}
		if ok, _ := served(&old); ok {
			t.Error("the removed node's certificate is served again after the path was re-added")
		}
	})
}

// TestHostileBackupIsTheDistrictOperatorsAlone: GET /v1/backup at a
// district, by everyone but an operator of that district: operators of
// the province, its city and another district, the district's department
// and portal, the district's own node certificate, and the district's
// operator at another node. Only the district's operator at its own node
// gets a file.
func TestHostileBackupIsTheDistrictOperatorsAlone(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2, Encrypt: true}, node.Options{})
	d, other := f.Districts()[0], f.Districts()[1]
	own := issueUser(t, f, "operator", regionOf(f, d), "ops-own")
	nodeFiles := localfed.ClientFiles{Cert: filepath.Join(f.Dir, "nodes", d, d+".pem"), Key: filepath.Join(f.Dir, "nodes", d, d+"-key.pem")}
	refused := map[string]struct {
		at    string
		files localfed.ClientFiles
	}{
		"the province's operator":              {d, f.Layout.Operator},
		"the city's operator":                  {d, issueUser(t, f, "operator", "zhejiang/quzhou", "ops-qz")},
		"another district's operator":          {d, issueUser(t, f, "operator", regionOf(f, other), "ops-other")},
		"the district's department":            {d, f.Layout.Departments[d]},
		"the district's portal":                {d, f.Layout.Portals[d]},
		"the district's node certificate":      {d, nodeFiles},
		"the district's operator at its city":  {"quzhou", own},
		"the district's operator at the other": {other, own},
	}
	for who, c := range refused {
		var buf bytes.Buffer
		_, err := clientOf(t, f, c.at, c.files).Backup(ctxT(t, 30*time.Second), &buf)
		if err == nil {
			t.Errorf("%s took a backup of %s (%d bytes)", who, c.at, buf.Len())
			continue
		}
		if code := api.Code(err); code != api.CodeForbidden {
			t.Errorf("%s: %v (code %q), want forbidden", who, err, code)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: a refused backup streamed %d bytes", who, buf.Len())
		}
	}
	var buf bytes.Buffer
	info, err := clientOf(t, f, d, own).Backup(ctxT(t, 30*time.Second), &buf)
	if err != nil || buf.Len() == 0 || info.Region != regionOf(f, d) {
		t.Fatalf("the district's own operator: %+v, %d bytes, %v", info, buf.Len(), err)
	}
	if bytes.Contains(buf.Bytes(), []byte(localfed.Department)) {
		t.Error("the backup holds the department's name in the clear")
	}
}
