package httpapi

import (
	"context"
	"net/http"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
)

// Keys is the operators' key rotation (lifecycle.Service, served through
// Config.Lifecycle when it implements it).
type Keys interface {
	KeyStatus(ctx context.Context, caller certs.Identity) (api.KeyStatus, error)
	RotateKeys(ctx context.Context, caller certs.Identity, wait time.Duration) (api.KeyStatus, error)
}

func (s *Server) keyRoutes() []route {
	return []route{
		{method: "GET", pattern: "/v1/keys", access: roles(certs.Operator), handle: s.getKeys},
		{method: "POST", pattern: "/v1/keys/rotate", access: roles(certs.Operator), handle: s.rotateKeys},
	}
}

func (s *Server) keyService() (Keys, error) {
	if k, ok := s.cfg.Lifecycle.(Keys); ok && k != nil {
		return k, nil
	}
	return nil, fault.New(fault.Unavailable, "this node does not rotate keys")
}

func (s *Server) getKeys(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.keyService()
	if err != nil {
		return err
	}
	out, err := svc.KeyStatus(r.Context(), c.id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) rotateKeys(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.keyService()
	if err != nil {
		return err
	}
	var in api.KeyRotateRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &in); err != nil {
			return err
		}
	}
	var wait time.Duration
	if in.Wait != "" {
		if wait, err = time.ParseDuration(in.Wait); err != nil || wait <= 0 {
			return fault.Field(fault.BadRequest, "wait", "must be a positive duration such as 30s")
		}
	}
	out, err := svc.RotateKeys(r.Context(), c.id, wait)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
