package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"credfed/certs"
)

// TestPeerIdentityOncePerConnection: the identity of a connection's client
// certificate is parsed at its first request and kept in the connection's
// slot; a request that presents another certificate on the same slot (a
// connection cannot, but the slot does not rely on it) gets that
// certificate's identity, concurrent requests agree, and a request
// without a slot is parsed as before.
func TestPeerIdentityOncePerConnection(t *testing.T) {
	ca, err := certs.NewCA("pc", 0)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(region string) *x509.Certificate {
		is, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: "pc", Role: certs.Coordinator, Region: region, Institution: "office"}})
		if err != nil {
			t.Fatal(err)
		}
		return is.Cert
	}
	a, b := issue("zhejiang/quzhou"), issue("zhejiang/hangzhou")
	connCtx := ConnContext(t.Context(), nil)
	req := func(c *x509.Certificate, withSlot bool) *http.Request {
		r := httptest.NewRequest("GET", "/v1/federation", nil)
		if withSlot {
			r = r.WithContext(connCtx)
		}
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
		return r
	}
	var wg sync.WaitGroup
	ids := make([]certs.Identity, 8)
	errs := make([]error, 8)
	for i := range ids {
		wg.Go(func() { ids[i], errs[i] = PeerIdentity(req(a, true)) })
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i].Region != "zhejiang/quzhou" {
			t.Fatalf("request %d on the connection: %+v, %v", i, ids[i], errs[i])
		}
	}
	slot := connCtx.Value(peerKey{}).(*peerSlot)
	if p := slot.parsed.Load(); p == nil || p.chain[0] != a {
		t.Fatalf("the slot holds %+v, want the connection's certificate", p)
	}
	if id, err := PeerIdentity(req(b, true)); err != nil || id.Region != "zhejiang/hangzhou" {
		t.Errorf("another certificate on the slot: %+v, %v, want its own identity", id, err)
	}
	if id, err := PeerIdentity(req(a, false)); err != nil || id.Region != "zhejiang/quzhou" {
		t.Errorf("a request without a slot: %+v, %v", id, err)
	}
	// No certificate: a typed error, not a panic.
	plain := req(a, true)
	plain.TLS = nil
	if _, err := PeerIdentity(plain); !errors.Is(err, certs.ErrNoCertificate) {
		t.Errorf("a request without TLS: %v, want ErrNoCertificate", err)
	}
	plain.TLS = &tls.ConnectionState{}
	if _, err := PeerIdentity(plain); !errors.Is(err, certs.ErrNoCertificate) {
		t.Errorf("a request without a client certificate: %v, want ErrNoCertificate", err)
	}
	// A certificate without an identity is refused on every request, not
	// only the first.
	bad := *a
	bad.URIs = nil
	for i := range 2 {
		if _, err := PeerIdentity(req(&bad, true)); err == nil {
			t.Errorf("request %d with a certificate without an identity: no error", i)
		}
	}
}

// TestKeptSerialsStillRefuse: the serials kept in a connection's slot are
// the ones the revocation list is checked with on every request, so
// revoking the leaf's serial, the first serial of its lineage (a renewal)
// or its intermediate's refuses the next request on the same slot, and a
// chain other than the slot's (another intermediate) is checked with its
// own serials.
func TestKeptSerialsStillRefuse(t *testing.T) {
	f := newSerialsFixture(t, "ks")
	inter, other, first, id := f.inter, f.other, f.first, f.id
	renewal := func(ca *certs.CA) *certs.Issued {
		is, err := ca.Issue(certs.IssueRequest{Identity: id, Lineage: &certs.Lineage{First: first.Cert.SerialNumber, Lifetime: time.Hour}})
		if err != nil {
			t.Fatal(err)
		}
		return is
	}
	cases := []struct {
		name   string
		revoke func(leaf, issuer *x509.Certificate) string // the serial to revoke
		other  bool                                        // the refused request presents the other intermediate's chain
	}{
		{name: "leaf", revoke: func(leaf, _ *x509.Certificate) string { return certs.SerialString(leaf.SerialNumber) }},
		{name: "lineage", revoke: func(_, _ *x509.Certificate) string { return certs.SerialString(first.Cert.SerialNumber) }},
		{name: "intermediate", revoke: func(_, issuer *x509.Certificate) string { return certs.SerialString(issuer.SerialNumber) }},
		{name: "another chain on the slot", other: true, revoke: func(_, _ *x509.Certificate) string { return certs.SerialString(other.Cert.SerialNumber) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			revs := certs.NewRevocationList()
			s := New(Config{Cluster: cluster{}, Records: &records{}, Lookups: noLookups{}, Revocations: revs})
			connCtx := ConnContext(t.Context(), nil)
			is := renewal(inter)
			chain := []*x509.Certificate{is.Cert, inter.Cert}
			req := func(chain []*x509.Certificate) *http.Request {
				r := httptest.NewRequest("GET", "/v1/federation", nil).WithContext(connCtx)
				r.TLS = &tls.ConnectionState{PeerCertificates: chain}
				return r
			}
			for i := range 2 {
				if c := s.callerOf(req(chain)); !c.authed {
					t.Fatalf("request %d before the revocation: %+v", i, c)
				}
			}
			if err := revs.Revoke(certs.Revocation{Serial: tc.revoke(is.Cert, inter.Cert), At: time.Now()}); err != nil {
				t.Fatal(err)
			}
			refused := chain
			if tc.other {
				// The same leaf presented under another intermediate (a
				// slot does not rely on a connection's chain being fixed).
				refused = []*x509.Certificate{is.Cert, other.Cert}
			}
			if c := s.callerOf(req(refused)); c.authed || !strings.Contains(c.refused, "revoked") {
				t.Fatalf("after revoking: %+v, want refused as revoked", c)
			}
			if tc.other {
				if c := s.callerOf(req(chain)); !c.authed {
					t.Fatalf("the slot's own chain, not revoked: %+v", c)
				}
			}
		})
	}
}

// TestZeroSerialsAreChecked: a caller that passes the zero CertSerials
// gets the certificate's own serials checked, not none.
func TestZeroSerialsAreChecked(t *testing.T) {
	ca, err := certs.NewCA("zs", 0)
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: "zs", Role: certs.Coordinator, Region: "zhejiang", Institution: "office"}})
	if err != nil {
		t.Fatal(err)
	}
	revs := certs.NewRevocationList()
	if err := revs.Revoke(certs.Revocation{Serial: certs.SerialString(is.Cert.SerialNumber), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := revs.CheckSerials(is.Cert, certs.CertSerials{}, is.Identity); !errors.Is(err, certs.ErrRevoked) {
		t.Fatalf("zero serials: %v, want ErrRevoked", err)
	}
}
