package httpapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"credfed/api"
	"credfed/certs"
)

// caller is who is calling the API: the verified client certificate's
// identity, or nobody.
type caller struct {
	id     certs.Identity
	authed bool
}

// callerOf reads the identity of a client certificate that the TLS
// handshake verified (certs.Verifier.ServerConfig with OptionalClientCert).
func callerOf(r *http.Request) caller {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return caller{}
	}
	id, err := certs.PeerIdentity(*r.TLS)
	if err != nil {
		return caller{}
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
		Message: fmt.Sprintf("a %s certificate may not use this route (admitted: %s)", c.id.Role, strings.Join(names, ", "))}
}
