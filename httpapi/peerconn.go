package httpapi

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"sync/atomic"

	"credfed/certs"
)

// peerKey is the context key of a connection's peerSlot.
type peerKey struct{}

// peerSlot holds the identity parsed from a connection's client
// certificate, parsed at its first request: the certificate of a TLS 1.3
// connection never changes, so its identity need not be parsed again for
// every request (about 2 % of a province's CPU under lookups). Only the
// parse is kept; whether the identity may still call (revocation, expiry,
// registration) is checked on every request. The connection's streams
// read it at once (HTTP/2), hence no lock on their path.
type peerSlot struct{ parsed atomic.Pointer[peerParse] }

// peerParse is one certificate's identity, or why it has none.
type peerParse struct {
	leaf *x509.Certificate
	id   certs.Identity
	err  error
}

// ConnContext is the http.Server ConnContext of the API listener: it gives
// each connection a slot for its client certificate's identity.
func ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, &peerSlot{})
}

// PeerIdentity is certs.PeerIdentity of r's connection, parsed once per
// connection when r's context has a slot (ConnContext). A request without
// a client certificate gets certs.ErrNoCertificate.
func PeerIdentity(r *http.Request) (certs.Identity, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return certs.Identity{}, &certs.VerifyError{Reason: certs.ErrNoCertificate}
	}
	slot, ok := r.Context().Value(peerKey{}).(*peerSlot)
	if !ok {
		return certs.PeerIdentity(*r.TLS)
	}
	leaf := r.TLS.PeerCertificates[0]
	if p := slot.parsed.Load(); p != nil && p.leaf == leaf {
		return p.id, p.err
	}
	p := &peerParse{leaf: leaf}
	p.id, p.err = certs.PeerIdentity(*r.TLS)
	slot.parsed.Store(p)
	return p.id, p.err
}
