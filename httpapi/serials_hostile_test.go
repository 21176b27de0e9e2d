package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/certs"
	"credfed/internal/wait"
)

// serialsFixture: a root, two intermediates, a first certificate and a
// renewal of it issued by the first intermediate.
type serialsFixture struct {
	root, inter, other *certs.CA
	first, renewal     *certs.Issued
	id                 certs.Identity
}

func newSerialsFixture(t *testing.T, fed string) *serialsFixture {
	t.Helper()
	root, err := certs.NewCA(fed, 0)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("ops", 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := root.NewIntermediate("ops2", 0)
	if err != nil {
		t.Fatal(err)
	}
	id := certs.Identity{Federation: fed, Role: certs.Department, Region: "zhejiang/quzhou/kecheng", Institution: "tax"}
	first, err := inter.Issue(certs.IssueRequest{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	renewal, err := inter.Issue(certs.IssueRequest{Identity: id, Lineage: &certs.Lineage{First: first.Cert.SerialNumber, Lifetime: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if len(renewal.Chain) == 0 || renewal.Chain[0] != inter.Cert && !renewal.Chain[0].Equal(inter.Cert) {
		t.Fatalf("the renewal's chain %v does not hold its intermediate", renewal.Chain)
	}
	return &serialsFixture{root: root, inter: inter, other: other, first: first, renewal: renewal, id: id}
}

// serialsServer serves callerOf's verdict over real mutual TLS, HTTP/2,
// with the API's ConnContext. flag is read by the handler before callerOf
// and reported back.
func serialsServer(t *testing.T, f *serialsFixture, revs *certs.RevocationList, flag *atomic.Bool) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	node, err := f.root.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: f.id.Federation, Role: certs.District, Region: "zhejiang/quzhou/kecheng"},
		Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Cluster: cluster{}, Records: &records{}, Lookups: noLookups{}, Revocations: revs})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		before := flag != nil && flag.Load()
		got := s.callerOf(r)
		fmt.Fprintf(w, "%v|%v|%s|%d", before, got.authed, got.refused, r.ProtoMajor)
	})
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = certs.NewVerifier(f.root.Cert, f.id.Federation, nil).ServerConfig(node.TLSCertificate(), certs.OptionalClientCert, "h2", "http/1.1")
	srv.Config.ConnContext = ConnContext
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &conns
}

type serialsAnswer struct {
	flagBefore, authed, reused bool
	refused                    string
	proto                      int
}

func serialsClient(t *testing.T, f *serialsFixture, is *certs.Issued, maxVersion uint16) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(f.root.Cert)
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: maxVersion,
		Certificates: []tls.Certificate{is.TLSCertificate()}}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func serialsGet(t *testing.T, hc *http.Client, url string) (serialsAnswer, error) {
	var an serialsAnswer
	ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { an.reused = i.Reused }})
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/who", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return an, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fs := strings.Split(string(body), "|")
	if resp.StatusCode != 200 || len(fs) != 4 {
		return an, fmt.Errorf("%d %q", resp.StatusCode, body)
	}
	an.flagBefore, an.authed, an.refused = fs[0] == "true", fs[1] == "true", fs[2]
	fmt.Sscan(fs[3], &an.proto)
	return an, nil
}

// TestHostileSerialsKeptAliveH2: on one kept-alive HTTP/2 connection, a
// revocation of the leaf, of the first serial of its lineage or of its
// intermediate, arriving between two requests, refuses the very next one.
func TestHostileSerialsKeptAliveH2(t *testing.T) {
	f := newSerialsFixture(t, "hs")
	for _, tc := range []struct {
		name   string
		serial *big.Int
	}{
		{"leaf", f.renewal.Cert.SerialNumber},
		{"lineage", f.first.Cert.SerialNumber},
		{"intermediate", f.inter.Cert.SerialNumber},
	} {
		t.Run(tc.name, func(t *testing.T) {
			revs := certs.NewRevocationList()
			srv, conns := serialsServer(t, f, revs, nil)
			hc := serialsClient(t, f, f.renewal, 0)
			for i := range 3 {
				an, err := serialsGet(t, hc, srv.URL)
				if err != nil || !an.authed || an.proto != 2 || (i > 0 && !an.reused) {
					t.Fatalf("request %d before revoking: %+v %v", i, an, err)
				}
			}
			if err := revs.Revoke(certs.Revocation{Serial: certs.SerialString(tc.serial), At: time.Now()}); err != nil {
				t.Fatal(err)
			}
			an, err := serialsGet(t, hc, srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			if !an.reused || conns.Load() != 1 {
				t.Fatalf("the request after revoking was not on the same connection (reused %v, %d connections)", an.reused, conns.Load())
			}
			if an.authed || !strings.Contains(an.refused, "revoked") {
				t.Fatalf("the next request on the kept-alive connection after revoking %s: %+v, want refused as revoked", tc.name, an)
			}
		})
	}
}

// TestHostileSerialsConcurrentRevocation: many concurrent streams of one
// HTTP/2 connection while its intermediate is revoked; no request whose
// handler started after Revoke returned may be let through.
func TestHostileSerialsConcurrentRevocation(t *testing.T) {
	f := newSerialsFixture(t, "hc")
	revs := certs.NewRevocationList()
	var revoked atomic.Bool
	srv, conns := serialsServer(t, f, revs, &revoked)
	hc := serialsClient(t, f, f.renewal, 0)
	if an, err := serialsGet(t, hc, srv.URL); err != nil || !an.authed || an.proto != 2 {
		t.Fatalf("first request: %+v %v", an, err)
	}
	var after, before, leaked atomic.Int64
	var errs atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				an, err := serialsGet(t, hc, srv.URL)
				switch {
				case err != nil:
					errs.Add(1)
					lastErr.Store(err.Error())
				case an.flagBefore && an.authed:
					leaked.Add(1)
				case an.flagBefore:
					after.Add(1)
				default:
					before.Add(1)
				}
			}
		})
	}
	wait.Until(t, 20*time.Second, "requests before the revocation", func() bool { return before.Load() >= 200 })
	if err := revs.Revoke(certs.Revocation{Serial: certs.SerialString(f.inter.Cert.SerialNumber), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	revoked.Store(true)
	wait.Until(t, 20*time.Second, "requests after the revocation", func() bool { return after.Load()+leaked.Load() >= 500 })
	close(stop)
	wg.Wait()
	if n := leaked.Load(); n > 0 {
		t.Fatalf("%d requests started after the revocation were let through", n)
	}
	if n := errs.Load(); n > 0 {
		t.Fatalf("%d requests failed, last %v", n, lastErr.Load())
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want the one HTTP/2 connection", n)
	}
}

// TestHostileSerialsChainKey: one slot, chains that share the leaf but
// differ in an intermediate or in length, and a copy of the leaf (same
// bytes, another pointer), alternated concurrently: each request is
// judged by its own chain's serials, never the slot's.
func TestHostileSerialsChainKey(t *testing.T) {
	f := newSerialsFixture(t, "hk")
	revs := certs.NewRevocationList()
	if err := revs.Revoke(certs.Revocation{Serial: certs.SerialString(f.other.Cert.SerialNumber), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	s := New(Config{Cluster: cluster{}, Records: &records{}, Lookups: noLookups{}, Revocations: revs})
	connCtx := ConnContext(t.Context(), nil)
	leafCopy, err := x509.ParseCertificate(f.renewal.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	clean := []*x509.Certificate{f.renewal.Cert, f.inter.Cert}
	bad := []*x509.Certificate{f.renewal.Cert, f.other.Cert}
	badLonger := []*x509.Certificate{f.renewal.Cert, f.inter.Cert, f.other.Cert}
	cleanCopy := []*x509.Certificate{leafCopy, f.inter.Cert}
	badCopy := []*x509.Certificate{leafCopy, f.other.Cert}
	short := []*x509.Certificate{f.renewal.Cert}
	cases := []struct {
		chain []*x509.Certificate
		ok    bool
	}{{clean, true}, {bad, false}, {badLonger, false}, {cleanCopy, true}, {badCopy, false}, {short, true}}
	call := func(chain []*x509.Certificate) caller {
		r := httptest.NewRequest("GET", "/v1/federation", nil).WithContext(connCtx)
		r.TLS = &tls.ConnectionState{PeerCertificates: chain}
		return s.callerOf(r)
	}
	// Sequentially, each after each.
	for _, a := range cases {
		for _, b := range cases {
			call(a.chain)
			if c := call(b.chain); c.authed != b.ok || (!b.ok && !strings.Contains(c.refused, "revoked")) {
				t.Fatalf("chain of %d after chain of %d: %+v, want authed %v", len(b.chain), len(a.chain), c, b.ok)
			}
		}
	}
	// Concurrently on the one slot.
	var wrong atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 400 {
				tc := cases[(g+i)%len(cases)]
				if c := call(tc.chain); c.authed != tc.ok {
					wrong.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Fatalf("%d concurrent requests judged by another chain's serials", n)
	}
}

// TestHostileSerialsAliasedChain: a chain changed in place (the same
// backing array, another intermediate or another leaf) is another chain to
// the slot, which keeps a copy of the slice it parsed. Not reachable over
// TLS (a connection's slice never changes), but "no kept parse serves
// another chain" must not depend on that: a slot keyed by the request's own
// slice compared it with itself and served the old serials and identity.
func TestHostileSerialsAliasedChain(t *testing.T) {
	f := newSerialsFixture(t, "ha")
	revs := certs.NewRevocationList()
	if err := revs.Revoke(certs.Revocation{Serial: certs.SerialString(f.other.Cert.SerialNumber), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	otherID := certs.Identity{Federation: "ha", Role: certs.Department, Region: "zhejiang/hangzhou/xihu", Institution: "tax"}
	otherLeaf, err := f.inter.Issue(certs.IssueRequest{Identity: otherID})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Cluster: cluster{}, Records: &records{}, Lookups: noLookups{}, Revocations: revs})
	connCtx := ConnContext(t.Context(), nil)
	call := func(chain []*x509.Certificate) caller {
		r := httptest.NewRequest("GET", "/v1/federation", nil).WithContext(connCtx)
		r.TLS = &tls.ConnectionState{PeerCertificates: chain}
		return s.callerOf(r)
	}
	chain := []*x509.Certificate{f.renewal.Cert, f.inter.Cert}
	if c := call(chain); !c.authed {
		t.Fatalf("clean chain: %+v", c)
	}
	chain[1] = f.other.Cert // revoked intermediate, in place
	if c := call(chain); c.authed {
		t.Errorf("a chain changed in place to a revoked intermediate was judged by the kept serials: %+v", c)
	}
	chain[1] = f.inter.Cert
	call(chain)
	chain[0] = otherLeaf.Cert // another certificate, in place
	if c := call(chain); c.id != otherID {
		t.Errorf("a chain changed in place to another leaf got the kept identity %v, want %v", c.id, otherID)
	}
}

// TestHostileSerialsZeroAndNil: the zero CertSerials of a renewal checks
// its lineage too; a zero or nil serial neither panics nor escapes a
// revocation list that holds it (a restored snapshot bypasses ParseSerial).
func TestHostileSerialsZeroAndNil(t *testing.T) {
	f := newSerialsFixture(t, "hz")
	revs := certs.NewRevocationList()
	if err := revs.Revoke(certs.Revocation{Serial: certs.SerialString(f.first.Cert.SerialNumber), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := revs.CheckSerials(f.renewal.Cert, certs.CertSerials{}, f.id); !errors.Is(err, certs.ErrRevoked) {
		t.Fatalf("zero CertSerials of a renewal whose first serial is revoked: %v, want ErrRevoked", err)
	}
	if err := revs.Revoke(certs.Revocation{Serial: "0", At: time.Now()}); err == nil {
		t.Fatalf("Revoke accepted serial 0")
	}
	zero := *f.first.Cert
	zero.SerialNumber = big.NewInt(0)
	nilSerial := *f.first.Cert
	nilSerial.SerialNumber = nil
	restored := certs.NewRevocationList()
	restored.Replace(certs.RevocationSnapshot{Version: 1, Revocations: []certs.Revocation{{Serial: "0"}}})
	if err := restored.CheckSerials(&zero, certs.SerialsOf(&zero), f.id); !errors.Is(err, certs.ErrRevoked) {
		t.Fatalf("serial 0 in the list, cert of serial 0: %v, want ErrRevoked", err)
	}
	if err := restored.CheckIssuerSerial(certs.SerialString(zero.SerialNumber), f.id); !errors.Is(err, certs.ErrRevoked) {
		t.Fatalf("issuer of serial 0: %v, want ErrRevoked", err)
	}
	if err := revs.CheckSerials(&nilSerial, certs.CertSerials{}, f.id); err != nil {
		t.Fatalf("nil serial, nothing of it revoked: %v", err)
	}
	if err := restored.CheckSerials(f.first.Cert, certs.SerialsOf(f.first.Cert), f.id); err != nil {
		t.Fatalf("a clean first certificate against a list holding 0: %v", err)
	}
}

// TestHostileSerialsNoRenegotiation: the API speaks TLS 1.3 only, which
// has no renegotiation; a TLS 1.2 client (the only way to renegotiate to
// another certificate on a connection) is refused at the handshake.
func TestHostileSerialsNoRenegotiation(t *testing.T) {
	f := newSerialsFixture(t, "hn")
	srv, _ := serialsServer(t, f, certs.NewRevocationList(), nil)
	hc := serialsClient(t, f, f.renewal, tls.VersionTLS12)
	if an, err := serialsGet(t, hc, srv.URL); err == nil {
		t.Fatalf("a TLS 1.2 client was served: %+v", an)
	}
}
