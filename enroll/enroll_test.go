package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"credfed/certs"
	"credfed/exchange"
	"credfed/fault"
	"credfed/internal/wait"
)

const fed = "demo"

// world is a root, an intermediate, and nodes on real exchange endpoints
// that verify against the root.
type world struct {
	t     *testing.T
	root  *certs.CA
	inter *certs.CA
	revs  *certs.RevocationList
}

func newWorld(t *testing.T) *world {
	root, err := certs.NewCA(fed, 0)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediate("online", 0)
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, root: root, inter: inter, revs: certs.NewRevocationList()}
}

// member is one node: its endpoint, its certificate holder, its service.
type member struct {
	id   certs.Identity
	ep   *exchange.Endpoint
	mu   sync.Mutex
	cert tls.Certificate
	svc  *Service
	reg  *prometheus.Registry
}

func (m *member) Certificate() tls.Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cert
}

func (m *member) SetCertificate(c tls.Certificate) error {
	if err := m.ep.SetCertificate(c); err != nil {
		return err
	}
	m.mu.Lock()
	m.cert = c
	m.mu.Unlock()
	return nil
}

func (w *world) verifier() *certs.Verifier { return certs.NewVerifier(w.root.Cert, fed, w.revs) }

// node starts a node of role at region with a certificate of the given
// lifetime issued by the root; signer says whether it holds the
// intermediate; above are the coordinators it asks.
func (w *world) node(role certs.Role, region string, life time.Duration, signer bool, above ...*member) *member {
	t := w.t
	id := certs.Identity{Federation: fed, Role: role, Region: region}
	is, err := w.root.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1", "localhost"}, Validity: life})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := exchange.New(exchange.Config{Certificate: is.TLSCertificate(), Verifier: w.verifier(),
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	m := &member{id: id, ep: ep, cert: is.TLSCertificate(), reg: prometheus.NewRegistry()}
	cfg := Config{Self: id, Verifier: w.verifier(), Endpoint: ep, Registerer: m.reg,
		Coordinators: func() []exchange.Peer {
			var out []exchange.Peer
			for _, a := range above {
				aid := a.id
				out = append(out, exchange.Peer{Name: a.id.Region, Addr: a.ep.Addr().String(), Identity: &aid})
			}
			return out
		}}
	if signer {
		cfg.Signer = w.inter
	}
	m.svc = New(cfg)
	return m
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRenewalThroughTheNearestCoordinatorThatSigns(t *testing.T) {
	w := newWorld(t)
	prov := w.node(certs.Province, "zj", 0, true)
	city := w.node(certs.City, "zj/qz", 0, false, prov) // holds no signer
	dist := w.node(certs.District, "zj/qz/kc", 10*time.Minute, false, city, prov)
	old := dist.Certificate()

	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "kc.pem"), filepath.Join(dir, "kc-key.pem")
	writePair(t, old, cp, kp)
	r := dist.svc.NewRenewer(dist, cp, kp)
	if err := r.Renew(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	got := dist.Certificate()
	if got.Leaf.Equal(old.Leaf) {
		t.Fatal("the holder still has the old certificate")
	}
	if id, err := certs.IdentityOf(got.Leaf); err != nil || id != dist.id {
		t.Fatalf("renewed identity %v (%v), want %s", id, err, dist.id)
	}
	if Lifetime(got.Leaf) != Lifetime(old.Leaf) {
		t.Fatalf("lifetime %v, want that of the renewed certificate %v", Lifetime(got.Leaf), Lifetime(old.Leaf))
	}
	if len(got.Leaf.IPAddresses) != 1 || !got.Leaf.IPAddresses[0].Equal(old.Leaf.IPAddresses[0]) || len(got.Leaf.DNSNames) != 1 {
		t.Fatalf("host names not kept: %v %v", got.Leaf.IPAddresses, got.Leaf.DNSNames)
	}
	if len(got.Certificate) != 2 {
		t.Fatalf("the renewal must carry the intermediate: %d certificates", len(got.Certificate))
	}
	onDisk, err := certs.LoadKeyPair(cp, kp)
	if err != nil || !onDisk.Leaf.Equal(got.Leaf) {
		t.Fatalf("files not replaced with the renewal: %v", err)
	}
	if v := testutil.ToFloat64(dist.svc.renewed.WithLabelValues("renewed")); v != 1 {
		t.Fatalf("renewals counted %v, want 1", v)
	}
	if v := testutil.ToFloat64(prov.svc.signed.WithLabelValues("signed")); v != 1 {
		t.Fatalf("the province signed %v, want 1", v)
	}
	// The renewed certificate works on the exchange: the city (whose
	// verifier has only the root) accepts a new connection with it.
	if _, err := dist.ep.PeerAt(ctxT(t), city.ep.Addr().String()); err != nil {
		t.Fatalf("a new connection with the renewed certificate: %v", err)
	}
	// And the province renews itself with its own signer.
	pr := prov.svc.NewRenewer(prov, "", "")
	if err := pr.Renew(ctxT(t)); err != nil || len(prov.Certificate().Certificate) != 2 {
		t.Fatalf("the province's own renewal: %v", err)
	}
}

func writePair(t *testing.T, c tls.Certificate, cp, kp string) {
	t.Helper()
	var chain []*x509.Certificate
	for _, der := range c.Certificate[1:] {
		x, _ := x509.ParseCertificate(der)
		chain = append(chain, x)
	}
	key, err := certs.EncodeKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, certs.ChainPEM(c.Leaf, chain), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kp, key, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSignerRefusesWhatItMayNotSign(t *testing.T) {
	w := newWorld(t)
	prov := w.node(certs.Province, "zj", 0, true)
	city := w.node(certs.City, "zj/qz", 0, true, prov) // a city that signs for its region
	other := w.node(certs.District, "zj/hz/xh", 0, false, city)
	mine := w.node(certs.District, "zj/qz/kc", 0, false, city)

	// A district of another city asks this city: forbidden, and its
	// certificate is unchanged.
	before := other.Certificate()
	err := other.svc.NewRenewer(other, "", "").Renew(ctxT(t))
	if !(exchange.CodeOf(err) == exchange.CodeForbidden) {
		t.Fatalf("a district outside the signer's region: got %v, want forbidden", err)
	}
	if !other.Certificate().Leaf.Equal(before.Leaf) {
		t.Fatal("a refused renewal changed the certificate")
	}
	// A bad CSR is a bad request (the service directly: the exchange client
	// always sends a good one).
	if _, err := city.svc.Renewal(ctxT(t), mine.id, mine.Certificate().Leaf, []byte("garbage")); fault.KindOf(err) != fault.BadRequest {
		t.Fatalf("garbage CSR: got %v, want bad_request", err)
	}
	// Renewing too often is refused: the burst is 3, and the garbage CSR
	// above took one (the limit is checked before the CSR).
	r := mine.svc.NewRenewer(mine, "", "")
	var limited error
	for i := 0; i < 5 && limited == nil; i++ {
		if err := r.Renew(ctxT(t)); err != nil {
			limited = err
		}
	}
	if !(exchange.CodeOf(limited) == exchange.CodeTooManyRequests) {
		t.Fatalf("renewing five times at once: got %v, want too_many_requests", limited)
	}
	if v := testutil.ToFloat64(mine.svc.renewed.WithLabelValues("failed")); v != 1 {
		t.Fatalf("failed renewals counted %v, want 1", v)
	}
	// A suspended identity cannot even connect to ask.
	sus := w.node(certs.District, "zj/qz/qj", 0, false, city)
	if err := w.revs.Suspend(certs.Suspension{Identity: sus.id.String(), Reason: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := sus.svc.NewRenewer(sus, "", "").Renew(ctxT(t)); err == nil {
		t.Fatal("a suspended district renewed its certificate")
	}
}

func TestRenewerChecksWhatTheSignerAnswers(t *testing.T) {
	w := newWorld(t)
	m := w.node(certs.District, "zj/qz/kc", 0, false)
	key, _, err := certs.NewCSR(m.id)
	if err != nil {
		t.Fatal(err)
	}
	// A hostile signer answers a valid certificate of another identity, or
	// of the right identity over another key, or garbage.
	otherID := certs.Identity{Federation: fed, Role: certs.District, Region: "zj/qz/qj"}
	wrongID, err := w.inter.Sign(certs.IssueRequest{Identity: otherID, Hosts: []string{"127.0.0.1"}}, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := mustIssued(t, w.inter, m.id)
	foreign, _ := certs.NewCA("other", 0)
	foreignLeaf := mustIssued(t, foreign, certs.Identity{Federation: "other", Role: certs.District, Region: "zj/qz/kc"})
	for name, ders := range map[string][][]byte{
		"another identity": {wrongID.Raw, w.inter.Cert.Raw},
		"another key":      {wrongKey.Cert.Raw, w.inter.Cert.Raw},
		"another CA":       {foreignLeaf.Cert.Raw},
		"garbage":          {[]byte("x")},
		"nothing":          nil,
	} {
		if _, err := m.svc.checkChain(ders, key, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRenewerRenewsInTheBackgroundAtTwoThirds(t *testing.T) {
	w := newWorld(t)
	prov := w.node(certs.Province, "zj", 0, true)
	// A one-minute certificate issued 50 s ago: two thirds of it are over.
	id := certs.Identity{Federation: fed, Role: certs.District, Region: "zj/qz/kc"}
	d := w.node(certs.District, "zj/qz/kc", 0, false, prov)
	aged, err := w.root.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}, Validity: time.Minute,
		NotBefore: time.Now().Add(-50*time.Second - certs.ClockSkew)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetCertificate(aged.TLSCertificate()); err != nil {
		t.Fatal(err)
	}
	if got := RenewAt(aged.Cert); got.After(time.Now()) {
		t.Fatalf("renew at %v: want already due", got)
	}
	r := d.svc.NewRenewer(d, "", "")
	r.Start()
	defer r.Close()
	if err := wait.For(ctxT(t), 50*time.Millisecond, func() bool {
		return testutil.ToFloat64(d.svc.renewed.WithLabelValues("renewed")) >= 1
	}); err != nil {
		t.Fatalf("no background renewal: %v", err)
	}
	got := d.Certificate().Leaf
	if got.Equal(aged.Cert) || Lifetime(got) != time.Minute || !RenewAt(got).After(time.Now().Add(30*time.Second)) {
		t.Fatalf("renewed: lifetime %v, renew at %v", Lifetime(got), RenewAt(got))
	}
	if exp := testutil.ToFloat64(d.svc.expiry); exp != float64(got.NotAfter.Unix()) {
		t.Fatalf("expiry metric %v, want %v", exp, got.NotAfter.Unix())
	}
	r.Close() // returns: the loop stops
}

func TestRetryDelayIsBounded(t *testing.T) {
	for _, life := range []time.Duration{time.Minute, 7 * 24 * time.Hour, 365 * 24 * time.Hour} {
		prev := time.Duration(0)
		for n := 1; n < 40; n++ {
			d := retryDelay(life, n)
			if d < prev || d > life/10 || d > 10*time.Minute || d <= 0 {
				t.Fatalf("life %v, failure %d: delay %v after %v", life, n, d, prev)
			}
			prev = d
		}
	}
}

func mustIssued(t *testing.T, ca *certs.CA, id certs.Identity) *certs.Issued {
	t.Helper()
	is, err := ca.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return is
}
