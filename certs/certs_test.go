package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func district(fed, region string) Identity {
	return Identity{Federation: fed, Role: District, Region: region}
}

func mustCA(t *testing.T, fed string) *CA {
	t.Helper()
	ca, err := NewCA(fed, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *CA, req IssueRequest) *Issued {
	t.Helper()
	is, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		uri  string
		want Identity
	}{
		{"spiffe://demo/district/tianjin/heping", Identity{"demo", District, "tianjin/heping", ""}},
		{"spiffe://demo/department/tianjin/heping/market-supervision", Identity{"demo", Department, "tianjin/heping", "market-supervision"}},
		{"spiffe://demo/coordinator/tianjin/city-credit-office", Identity{"demo", Coordinator, "tianjin", "city-credit-office"}},
		{"spiffe://demo/province/zhejiang", Identity{"demo", Province, "zhejiang", ""}},
	}
	for _, tt := range tests {
		got, err := ParseIdentity(tt.uri)
		if err != nil {
			t.Fatalf("%s: %v", tt.uri, err)
		}
		if got != tt.want {
			t.Errorf("%s: got %+v want %+v", tt.uri, got, tt.want)
		}
		if got.String() != tt.uri {
			t.Errorf("round trip: %s != %s", got.String(), tt.uri)
		}
	}
	bad := []string{
		"", "https://demo/district/tianjin", "spiffe://demo/district", "spiffe://demo/mayor/tianjin",
		"spiffe://demo/department/tianjin", "spiffe://Demo/district/tianjin", "spiffe://demo/district/Tianjin",
		"spiffe://demo/district/a/b/c/d/e", "spiffe://demo/district//x", "spiffe://demo:8443/district/x",
		"spiffe://demo/district/x?y=1", "spiffe://demo/district/-x",
	}
	for _, s := range bad {
		if _, err := ParseIdentity(s); !errors.Is(err, ErrBadIdentity) {
			t.Errorf("%q: got %v, want ErrBadIdentity", s, err)
		}
	}
}

func TestRegionHelpers(t *testing.T) {
	if ParentRegion("zhejiang/quzhou/kecheng") != "zhejiang/quzhou" || ParentRegion("zhejiang") != "" {
		t.Error("ParentRegion")
	}
	if !InRegion("zhejiang/quzhou/kecheng", "zhejiang/quzhou") || InRegion("zhejiang/quzhouxi", "zhejiang/quzhou") ||
		!InRegion("zhejiang", "zhejiang") {
		t.Error("InRegion")
	}
}

func TestIssueNodeCertificate(t *testing.T) {
	ca := mustCA(t, "demo")
	is := mustIssue(t, ca, IssueRequest{Identity: district("demo", "tianjin/heping"), Hosts: []string{"localhost", "127.0.0.1"}})
	c := is.Cert
	if _, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || c.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatal("not ECDSA")
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://demo/district/tianjin/heping" {
		t.Fatalf("URIs %v", c.URIs)
	}
	if len(c.DNSNames) != 1 || c.DNSNames[0] != "localhost" || len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal([]byte{127, 0, 0, 1}) {
		t.Fatalf("SANs %v %v", c.DNSNames, c.IPAddresses)
	}
	usages := map[x509.ExtKeyUsage]bool{}
	for _, u := range c.ExtKeyUsage {
		usages[u] = true
	}
	if !usages[x509.ExtKeyUsageServerAuth] || !usages[x509.ExtKeyUsageClientAuth] {
		t.Fatalf("ext key usage %v", c.ExtKeyUsage)
	}
	user := mustIssue(t, ca, IssueRequest{Identity: Identity{"demo", Department, "tianjin/heping", "market-supervision"}, Hosts: []string{"127.0.0.1"}})
	if len(user.Cert.IPAddresses) != 0 || len(user.Cert.ExtKeyUsage) != 1 || user.Cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("user certificate: IPs %v usages %v", user.Cert.IPAddresses, user.Cert.ExtKeyUsage)
	}
	if _, err := ca.Issue(IssueRequest{Identity: district("other", "x")}); !errors.Is(err, ErrWrongFederation) {
		t.Fatalf("issue for another federation: %v", err)
	}
	if _, err := ca.Issue(IssueRequest{Identity: Identity{"demo", Portal, "x", ""}}); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("user without institution: %v", err)
	}
}

func TestVerify(t *testing.T) {
	ca := mustCA(t, "demo")
	revs := NewRevocationList()
	v := NewVerifier(ca.Cert, "demo", revs)
	now := time.Now()
	good := mustIssue(t, ca, IssueRequest{Identity: district("demo", "tianjin/heping")})
	id, err := v.Verify([]*x509.Certificate{good.Cert}, x509.ExtKeyUsageClientAuth)
	if err != nil || id != district("demo", "tianjin/heping") {
		t.Fatalf("good: %v %v", id, err)
	}

	otherCA := mustCA(t, "demo")
	foreign := mustIssue(t, otherCA, IssueRequest{Identity: district("demo", "tianjin/heping")})
	// A CA of the same name but another key: the federation named "other"
	// is only reachable through a CA that names it.
	otherFedCA := mustCA(t, "other")
	otherFed := mustIssue(t, otherFedCA, IssueRequest{Identity: district("other", "tianjin/heping")})
	expired := mustIssue(t, ca, IssueRequest{Identity: district("demo", "a"), NotBefore: now.Add(-48 * time.Hour), Validity: time.Hour})
	future := mustIssue(t, ca, IssueRequest{Identity: district("demo", "a"), NotBefore: now.Add(48 * time.Hour)})
	user := mustIssue(t, ca, IssueRequest{Identity: Identity{"demo", Portal, "a", "portal"}})

	cases := []struct {
		name  string
		chain []*x509.Certificate
		usage x509.ExtKeyUsage
		want  error
	}{
		{"none", nil, x509.ExtKeyUsageClientAuth, ErrNoCertificate},
		{"other CA", []*x509.Certificate{foreign.Cert}, x509.ExtKeyUsageClientAuth, ErrUntrusted},
		{"other federation", []*x509.Certificate{otherFed.Cert}, x509.ExtKeyUsageClientAuth, ErrUntrusted},
		{"expired", []*x509.Certificate{expired.Cert}, x509.ExtKeyUsageClientAuth, ErrExpired},
		{"not yet valid", []*x509.Certificate{future.Cert}, x509.ExtKeyUsageClientAuth, ErrNotYetValid},
		{"user as server", []*x509.Certificate{user.Cert}, x509.ExtKeyUsageServerAuth, ErrWrongUsage},
		{"no URI", []*x509.Certificate{rawCert(t, ca, nil)}, x509.ExtKeyUsageClientAuth, ErrNoIdentity},
		{"malformed URI", []*x509.Certificate{rawCert(t, ca, []string{"spiffe://demo/mayor/x"})}, x509.ExtKeyUsageClientAuth, ErrNoIdentity},
		{"two URIs", []*x509.Certificate{rawCert(t, ca, []string{"spiffe://demo/district/a", "spiffe://demo/district/b"})}, x509.ExtKeyUsageClientAuth, ErrNoIdentity},
		{"wrong federation, same CA", []*x509.Certificate{rawCert(t, ca, []string{"spiffe://other/district/a"})}, x509.ExtKeyUsageClientAuth, ErrWrongFederation},
	}
	for _, c := range cases {
		_, err := v.Verify(c.chain, c.usage)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		var ve *VerifyError
		if !errors.As(err, &ve) {
			t.Errorf("%s: %T is not a *VerifyError", c.name, err)
		}
	}

	if err := revs.Revoke(Revocation{Serial: SerialString(good.Cert.SerialNumber), Reason: "key compromise"}); err != nil {
		t.Fatal(err)
	}
	// The refusal names the serial, never the reason (an operator's text,
	// which ends up in logs).
	if _, err := v.Verify([]*x509.Certificate{good.Cert}, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrRevoked) ||
		strings.Contains(err.Error(), "key compromise") || !strings.Contains(err.Error(), SerialString(good.Cert.SerialNumber)) {
		t.Fatalf("revoked: %v", err)
	}
	second := mustIssue(t, ca, IssueRequest{Identity: district("demo", "tianjin/hexi")})
	if err := revs.Suspend(Suspension{Identity: "spiffe://demo/district/tianjin/hexi"}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify([]*x509.Certificate{second.Cert}, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrSuspended) {
		t.Fatalf("suspended: %v", err)
	}
	if !revs.Reinstate("spiffe://demo/district/tianjin/hexi") {
		t.Fatal("reinstate found nothing")
	}
	if _, err := v.Verify([]*x509.Certificate{second.Cert}, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("reinstated: %v", err)
	}
}

// rawCert issues a client certificate with arbitrary URI SANs, as a broken
// or hostile issuer might.
func rawCert(t *testing.T, ca *CA, uris []string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "raw"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseSerial(t *testing.T) {
	for in, want := range map[string]string{"255": "255", "0xff": "255", "00:ff": "255", " 10 ": "10"} {
		got, err := ParseSerial(in)
		if err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1", "0", "abc", "0xzz"} {
		if _, err := ParseSerial(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestRevocationSnapshotAndSubscribe(t *testing.T) {
	l := NewRevocationList()
	calls := 0
	cancel := l.Subscribe(func() { calls++ })
	if err := l.Revoke(Revocation{Serial: "0x10"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Revoke(Revocation{Serial: "16"}); err != nil { // same serial again
		t.Fatal(err)
	}
	if err := l.Suspend(Suspension{Identity: "spiffe://demo/portal/a/b"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Suspend(Suspension{Identity: "not a uri"}); err == nil {
		t.Fatal("bad identity suspended")
	}
	snap := l.Snapshot()
	if snap.Version != 2 || len(snap.Revocations) != 1 || snap.Revocations[0].Serial != "16" || len(snap.Suspensions) != 1 {
		t.Fatalf("snapshot %+v", snap)
	}
	m := NewRevocationList()
	m.Replace(snap)
	if got := m.Snapshot(); got.Version != snap.Version || len(got.Revocations) != 1 || len(got.Suspensions) != 1 {
		t.Fatalf("replace: %+v", got)
	}
	cancel()
	l.Reinstate("spiffe://demo/portal/a/b")
	if calls != 3 {
		t.Fatalf("subscriber called %d times, want 3 (before cancel)", calls)
	}
}

func TestFilesRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "demo")
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(dir); err == nil {
		t.Fatal("second CA written over the first")
	}
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v %v", st.Mode(), err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Federation != "demo" || !loaded.Cert.Equal(ca.Cert) {
		t.Fatal("loaded CA differs")
	}
	is := mustIssue(t, loaded, IssueRequest{Identity: Identity{"demo", Department, "tianjin/heping", "tax"}})
	cp, kp, err := is.WriteFiles(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(cp) != "tax.pem" || filepath.Base(kp) != "tax-key.pem" {
		t.Fatalf("paths %s %s", cp, kp)
	}
	if st, err := os.Stat(kp); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v %v", st.Mode(), err)
	}
	pair, err := LoadKeyPair(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(ca.Cert, "demo", nil)
	if _, err := v.Verify([]*x509.Certificate{pair.Leaf}, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyPair(cp, filepath.Join(dir, CAKeyFile)); !errors.Is(err, ErrBadPEM) {
		t.Fatalf("mismatched pair: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPool(filepath.Join(dir, "junk.pem")); !errors.Is(err, ErrBadPEM) {
		t.Fatalf("junk pool: %v", err)
	}
}

// TestTLSHandshake runs real TLS 1.3 handshakes in memory with the
// configurations the package builds.
func TestTLSHandshake(t *testing.T) {
	ca := mustCA(t, "demo")
	revs := NewRevocationList()
	v := NewVerifier(ca.Cert, "demo", revs)
	server := mustIssue(t, ca, IssueRequest{Identity: district("demo", "tianjin/heping"), Hosts: []string{"127.0.0.1"}})
	client := mustIssue(t, ca, IssueRequest{Identity: Identity{"demo", City, "tianjin", ""}})
	user := mustIssue(t, ca, IssueRequest{Identity: Identity{"demo", Coordinator, "tianjin", "office"}})

	handshake := func(scfg, ccfg *tls.Config) (serverErr, clientErr error, peer Identity) {
		a, b := pipe(t)
		srv := tls.Server(a, scfg)
		cli := tls.Client(b, ccfg)
		done := make(chan error, 1)
		go func() { done <- srv.Handshake(); srv.Close() }()
		clientErr = cli.Handshake()
		cli.Close()
		serverErr = <-done
		if serverErr == nil {
			peer, _ = PeerIdentity(srv.ConnectionState())
		}
		return
	}
	required := v.ServerConfig(server.TLSCertificate(), RequireClientCert)
	sErr, cErr, peer := handshake(required, v.ClientConfig(client.TLSCertificate(), "127.0.0.1", nil))
	if sErr != nil || cErr != nil || peer.Role != City {
		t.Fatalf("mutual: %v / %v / %+v", sErr, cErr, peer)
	}
	// No client certificate: refused when required, admitted when optional.
	noCert := v.ClientConfig(tls.Certificate{}, "127.0.0.1", nil)
	noCert.Certificates = nil
	if sErr, _, _ := handshake(required, noCert); sErr == nil {
		t.Fatal("no client certificate admitted where required")
	}
	if sErr, cErr, _ := handshake(v.ServerConfig(server.TLSCertificate(), OptionalClientCert), noCert); sErr != nil || cErr != nil {
		t.Fatalf("optional: %v / %v", sErr, cErr)
	}
	// The client checks the server's identity against what it expected.
	want := func(id Identity) error {
		if id.Region != "tianjin/hexi" {
			return &VerifyError{Reason: ErrWrongUsage, Subject: id.String(), Detail: "not the peer dialed"}
		}
		return nil
	}
	if _, cErr, _ := handshake(required, v.ClientConfig(client.TLSCertificate(), "127.0.0.1", want)); !errors.Is(cErr, ErrWrongUsage) {
		t.Fatalf("unexpected peer accepted: %v", cErr)
	}
	// A user certificate can be a client but the client refuses it as a server.
	if _, cErr, _ := handshake(v.ServerConfig(user.TLSCertificate(), RequireClientCert), v.ClientConfig(client.TLSCertificate(), "", nil)); cErr == nil {
		t.Fatal("user certificate accepted as a server")
	}
	// Revoked client: refused on the next handshake.
	if err := revs.Revoke(Revocation{Serial: SerialString(client.Cert.SerialNumber)}); err != nil {
		t.Fatal(err)
	}
	if sErr, _, _ := handshake(required, v.ClientConfig(client.TLSCertificate(), "127.0.0.1", nil)); !errors.Is(sErr, ErrRevoked) {
		t.Fatalf("revoked client: %v", sErr)
	}
}
