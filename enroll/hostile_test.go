package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"sync/atomic"
	"testing"
	"time"

	"credfed/certs"
	"credfed/exchange"
	"credfed/internal/wait"
)

// Hostile tests of renewal (issue 12): a coordinator above that answers
// certs.renew with certificates it should not. Each test passes when the
// defence holds; a failure proves a defect.

// signFunc is what a hostile signer answers for a caller's CSR key.
type signFunc func(caller certs.Identity, current *x509.Certificate, pub *ecdsa.PublicKey) (*x509.Certificate, error)

// hostileSigner makes m answer certs.renew with sign's certificate (signed
// by the federation's intermediate, so that it verifies), counting calls.
func (w *world) hostileSigner(m *member, calls *atomic.Int64, sign signFunc) {
	m.ep.Handle(OpRenew, func(ctx context.Context, req *exchange.Request) (any, error) {
		calls.Add(1)
		var in renewRequest
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		pub, err := certs.ParseCSR(in.CSR)
		if err != nil {
			return nil, exchange.Errorf(exchange.CodeBadRequest, "csr")
		}
		leaf, err := sign(req.Caller, req.Leaf, pub)
		if err != nil {
			return nil, exchange.Errorf(exchange.CodeInternal, "sign")
		}
		return renewAnswer{Chain: [][]byte{leaf.Raw, w.inter.Cert.Raw}}, nil
	}, exchange.AllowRoles(certs.District), exchange.MaxBody(8<<10))
}

// TestHostileSignerCannotMakeTheRenewerSpin: a coordinator above answers
// every renewal with a certificate that verifies, for the right identity
// and key and host names, but whose two thirds are already over (NotBefore
// far back, NotAfter a minute ahead). The node must not renew again at
// once, in a loop: each renewal is a new key, a handshake with the signer
// and (on a node) two synced file replacements. At most a few renewals may
// happen within two seconds.
func TestHostileSignerCannotMakeTheRenewerSpin(t *testing.T) {
	w := newWorld(t)
	var calls atomic.Int64
	evil := w.node(certs.Province, "zj", 0, false)
	w.hostileSigner(evil, &calls, func(caller certs.Identity, cur *x509.Certificate, pub *ecdsa.PublicKey) (*x509.Certificate, error) {
		now := time.Now()
		// NotAfter = NotBefore + Validity + ClockSkew = now + 1 min; the
		// lifetime read back is 6 min, so RenewAt is a minute ago.
		return w.inter.Sign(certs.IssueRequest{Identity: caller, Hosts: hostsOf(cur),
			NotBefore: now.Add(-10 * time.Minute), Validity: 11*time.Minute - certs.ClockSkew}, pub)
	})
	d := w.node(certs.District, "zj/qz/kc", 10*time.Minute, false, evil)
	aged, err := w.root.Issue(certs.IssueRequest{Identity: d.id, Hosts: []string{"127.0.0.1", "localhost"}, Validity: time.Minute,
		NotBefore: time.Now().Add(-50*time.Second - certs.ClockSkew)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SetCertificate(aged.TLSCertificate()); err != nil {
		t.Fatal(err)
	}
	r := d.svc.NewRenewer(d, "", "")
	r.Start()
	defer r.Close()
	// The first renewal is due: wait for it.
	if err := wait.For(ctxT(t), 10*time.Millisecond, func() bool { return calls.Load() >= 1 }); err != nil {
		t.Fatalf("no renewal at all: %v", err)
	}
	start := time.Now()
	window, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	const tooMany = 10
	if err := wait.For(window, 10*time.Millisecond, func() bool { return calls.Load() >= tooMany }); err == nil {
		t.Errorf("a signer answering certificates already due made the node renew %d times in %v (a loop without pause)",
			calls.Load(), time.Since(start).Round(time.Millisecond))
	}
}

// TestHostileSignerCannotMakeTheNodeInstallAWorseCertificate: a
// coordinator above answers a renewal with a certificate of the right
// identity over the right key, signed by the federation's intermediate —
// but without the node's host names (its peers, which dial it by address,
// would refuse it, and it is written over the node's files), or with a
// lifetime of a minute instead of the ten minutes renewed (it ends long
// before the certificate it replaces). The node must refuse it and keep
// its certificate.
func TestHostileSignerCannotMakeTheNodeInstallAWorseCertificate(t *testing.T) {
	for _, name := range []string{"without the node's host names", "ending before the certificate it replaces"} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			var sign signFunc
			switch name {
			case "without the node's host names":
				sign = func(caller certs.Identity, cur *x509.Certificate, pub *ecdsa.PublicKey) (*x509.Certificate, error) {
					return w.inter.Sign(certs.IssueRequest{Identity: caller, Hosts: []string{"evil.example"}, Validity: Lifetime(cur)}, pub)
				}
			default:
				sign = func(caller certs.Identity, cur *x509.Certificate, pub *ecdsa.PublicKey) (*x509.Certificate, error) {
					return w.inter.Sign(certs.IssueRequest{Identity: caller, Hosts: hostsOf(cur), Validity: time.Minute}, pub)
				}
			}
			var calls atomic.Int64
			evil := w.node(certs.Province, "zj", 0, false)
			w.hostileSigner(evil, &calls, sign)
			d := w.node(certs.District, "zj/qz/kc", 10*time.Minute, false, evil)
			before := d.Certificate()
			err := d.svc.NewRenewer(d, "", "").Renew(ctxT(t))
			if calls.Load() != 1 {
				t.Fatalf("the hostile signer was asked %d times", calls.Load())
			}
			got := d.Certificate().Leaf
			if err == nil || !got.Equal(before.Leaf) {
				t.Errorf("installed a renewal %s: hosts %v %v, lifetime %v, ends %v before the old one (renew error: %v)", name,
					got.IPAddresses, got.DNSNames, Lifetime(got), before.Leaf.NotAfter.Sub(got.NotAfter).Round(time.Second), err)
			}
		})
	}
}

// TestHostileCSRCannotChangeWhatARenewalIsFor: the CSR of a renewal names
// another identity, host names and a CA basic constraint; the renewal
// keeps the caller's identity, the current certificate's host names and
// lifetime, and is a leaf.
func TestHostileCSRCannotChangeWhatARenewalIsFor(t *testing.T) {
	w := newWorld(t)
	prov := w.node(certs.Province, "zj", 0, true)
	d := w.node(certs.District, "zj/qz/kc", 10*time.Minute, false, prov)
	_, csr, err := certs.NewCSR(certs.Identity{Federation: fed, Role: certs.Province, Region: "zj"})
	if err != nil {
		t.Fatal(err)
	}
	cur := d.Certificate().Leaf
	chain, err := prov.svc.Renewal(ctxT(t), d.id, cur, csr)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	id, err := certs.IdentityOf(leaf)
	switch {
	case err != nil || id != d.id:
		t.Errorf("renewed for %v (%v), want %s", id, err, d.id)
	case leaf.IsCA || leaf.BasicConstraintsValid && leaf.MaxPathLen > 0:
		t.Error("the renewal is a CA")
	case Lifetime(leaf) != Lifetime(cur):
		t.Errorf("lifetime %v, want %v", Lifetime(leaf), Lifetime(cur))
	case len(leaf.DNSNames) != len(cur.DNSNames) || len(leaf.IPAddresses) != len(cur.IPAddresses):
		t.Errorf("hosts %v %v, want %v %v", leaf.DNSNames, leaf.IPAddresses, cur.DNSNames, cur.IPAddresses)
	}
}

// TestHostileIntermediateNearItsEndDoesNotShrinkRenewalsForGood: an
// intermediate that ends within the hour signs a renewal of a 7-day node
// certificate, which is capped at the intermediate's end. The operator then
// installs a fresh intermediate. The next renewal must be back at the
// node's lifetime, not keep the capped hour for ever (each renewal has
// "the lifetime of the certificate that asks for it", so lifetimes can
// only shrink, down to a minute, and every node would renew every 40 s).
func TestHostileIntermediateNearItsEndDoesNotShrinkRenewalsForGood(t *testing.T) {
	w := newWorld(t)
	ending, err := w.root.NewIntermediate("ending", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	self := certs.Identity{Federation: fed, Role: certs.Province, Region: "zj"}
	old := New(Config{Self: self, Signer: ending, Verifier: w.verifier()})
	fresh := New(Config{Self: self, Signer: w.inter, Verifier: w.verifier()})
	id := certs.Identity{Federation: fed, Role: certs.District, Region: "zj/qz/kc"}
	week := 7 * 24 * time.Hour
	cur, err := w.root.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}, Validity: week})
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := certs.NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	capped, err := old.Renewal(ctxT(t), id, cur.Cert, csr)
	if err != nil {
		t.Fatal(err)
	}
	if Lifetime(capped[0]) > 2*time.Hour {
		t.Fatalf("the renewal by an intermediate ending within the hour lasts %v", Lifetime(capped[0]))
	}
	next, err := fresh.Renewal(ctxT(t), id, capped[0], csr)
	if err != nil {
		t.Fatal(err)
	}
	if got := Lifetime(next[0]); got < week-time.Hour {
		t.Errorf("after a fresh intermediate, a 7-day certificate renews for %v: the cap of the old intermediate stays for good", got.Round(time.Minute))
	}
}
