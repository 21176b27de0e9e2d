package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"credfed/api"
	"credfed/certs"
)

// caller is who is calling the API: the verified client certificate's
// identity, or nobody; refused says why a certificate that the handshake
// verified is no longer good (revoked, suspended or expired since).
type caller struct {
	id      certs.Identity
	authed  bool
	refused string
}

// callerOf reads the identity of a client certificate that the TLS
// handshake verified (certs.Verifier.ServerConfig with OptionalClientCert)
// and checks it again, as of this request, against the revocation list and
// its validity period.
func (s *Server) callerOf(r *http.Request) caller {
	if c, ok := s.inProcessCaller(r.Context()); ok {
		return c
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return caller{}
	}
	p := peerOf(r)
	if p.err != nil {
		return caller{}
	}
	id, leaf := p.id, p.chain[0]
	if time.Now().After(leaf.NotAfter) { // real time: Config.Now is the clock of record dates
		return caller{id: id, refused: "the client certificate has expired"}
	}
	if s.cfg.Registered != nil && !s.cfg.Registered(id.Region) {
		return caller{id: id, refused: "the client certificate's region is not registered in the federation (removed?)"}
	}
	if s.cfg.Revocations != nil {
		err := s.cfg.Revocations.CheckSerials(leaf, p.serials, id)
		for _, issuer := range p.issuers {
			// The handshake verified the chain presented; an intermediate
			// of it revoked since refuses it on this connection too.
			if err == nil {
				err = s.cfg.Revocations.CheckIssuerSerial(issuer, id)
			}
		}
		if err != nil {
			var ve *certs.VerifyError
			msg := "the client certificate is revoked or suspended"
			if errors.As(err, &ve) && ve.Reason == certs.ErrSuspended {
				msg = "the client certificate's identity is suspended"
			} else if errors.As(err, &ve) && ve.Reason == certs.ErrRevoked {
				msg = "the client certificate is revoked"
			}
			return caller{id: id, refused: msg}
		}
	}
	return caller{id: id, authed: true}
}

// access says which callers a route admits.
type access struct {
	roles  []certs.Role // admitted roles
	any    bool         // any certificate of the federation
	public bool         // no certificate needed
}

func roles(r ...certs.Role) access { return access{roles: r} }

var (
	anyCertificate = access{any: true}
	publicAccess   = access{public: true}
)

// admits returns the refusal of a caller the route does not admit.
func (a access) admits(c caller) *api.Error {
	if a.public {
		return nil
	}
	if c.refused != "" {
		return &api.Error{Code: api.CodeUnauthenticated, Message: c.refused}
	}
	if !c.authed {
		return &api.Error{Code: api.CodeUnauthenticated, Message: "this route needs a client certificate of the federation"}
	}
	if a.any || slices.Contains(a.roles, c.id.Role) {
		return nil
	}
	names := make([]string, len(a.roles))
	for i, r := range a.roles {
		names[i] = string(r)
	}
	return &api.Error{Code: api.CodeForbidden,
		Message: fmt.Sprintf("%s %s certificate may not use this route (admitted: %s)", article(string(c.id.Role)), c.id.Role, strings.Join(names, ", "))}
}

// article is "an" before a vowel, "a" otherwise.
func article(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}
