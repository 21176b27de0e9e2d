package httpapi

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"slices"
	"sync/atomic"

	"credfed/certs"
)

// peerKey is the context key of a connection's peerSlot.
type peerKey struct{}

// peerSlot holds what is parsed from a connection's client certificate,
// at its first request: the certificate of a TLS 1.3 connection never
// changes, so its identity need not be parsed again for every request
// (about 2 % of a province's CPU under lookups), nor its serial numbers
// rendered (about 3 %). Only the parse is kept; whether the identity may
// still call (revocation, expiry, registration) is checked on every
// request. The connection's streams read it at once (HTTP/2), hence no
// lock on their path.
type peerSlot struct{ parsed atomic.Pointer[peerParse] }

// peerParse is one certificate chain's identity, or why it has none, and
// the serials the revocation list keys its certificates by.
type peerParse struct {
	chain   []*x509.Certificate // a copy of the chain presented: the leaf, then its issuers
	id      certs.Identity
	err     error
	serials certs.CertSerials // the leaf's
	issuers []string          // chain[1:]'s serials (certs.SerialString)
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
	p := peerOf(r)
	return p.id, p.err
}

// peerOf returns the parse of r's certificate chain (which it must have),
// kept in r's connection slot when there is one and the slot's is of
// another chain (a connection's never changes, but the slot does not rely
// on it): the same certificates, pointer for pointer. The slot keeps a copy
// of the slice, so a chain changed in place is another chain.
func peerOf(r *http.Request) *peerParse {
	chain := r.TLS.PeerCertificates
	slot, ok := r.Context().Value(peerKey{}).(*peerSlot)
	if ok {
		if p := slot.parsed.Load(); p != nil && slices.Equal(p.chain, chain) {
			return p
		}
	}
	p := &peerParse{chain: slices.Clone(chain), serials: certs.SerialsOf(chain[0])}
	p.id, p.err = certs.PeerIdentity(*r.TLS)
	for _, c := range chain[1:] {
		p.issuers = append(p.issuers, certs.SerialString(c.SerialNumber))
	}
	if ok {
		slot.parsed.Store(p)
	}
	return p
}
