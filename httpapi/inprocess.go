package httpapi

import (
	"context"

	"credfed/certs"
)

// inProcessKey is the context key of an in-process caller.
type inProcessKey struct{}

// AsCaller returns ctx carrying id as the API caller of a request served
// in the node's own process: the console, whose users log in with a
// password instead of a certificate, calls the API this way. Requests
// from the network never carry it, since only code in the process can put
// a value into a request's context. The caller is checked as a
// certificate would be on every request: its region must be registered
// and its identity not suspended.
func AsCaller(ctx context.Context, id certs.Identity) context.Context {
	return context.WithValue(ctx, inProcessKey{}, id)
}

// inProcessCaller checks the in-process caller of ctx, if any.
func (s *Server) inProcessCaller(ctx context.Context) (caller, bool) {
	id, ok := ctx.Value(inProcessKey{}).(certs.Identity)
	if !ok {
		return caller{}, false
	}
	if s.cfg.Registered != nil && !s.cfg.Registered(id.Region) {
		return caller{id: id, refused: "the account's region is not registered in the federation (removed?)"}, true
	}
	if s.cfg.Revocations != nil {
		if err := s.cfg.Revocations.CheckIdentity(id); err != nil {
			return caller{id: id, refused: "the account's identity is suspended"}, true
		}
	}
	return caller{id: id, authed: true}, true
}
