package httpapi

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

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
	if p := slot.parsed.Load(); p == nil || p.leaf != a {
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
