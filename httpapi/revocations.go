package httpapi

import (
	"context"
	"net/http"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/fault"
)

// Lifecycle is the operators' control of certificates (lifecycle.Service).
type Lifecycle interface {
	Revoke(ctx context.Context, caller certs.Identity, serial, reason string) (api.RevocationList, error)
	Suspend(ctx context.Context, caller certs.Identity, identity, reason string) (api.RevocationList, error)
	Unsuspend(ctx context.Context, caller certs.Identity, identity string) (api.RevocationList, error)
	List() api.RevocationList
	// PublishCatalog publishes the next catalog version.
	PublishCatalog(ctx context.Context, caller certs.Identity, next *credit.Catalog) (api.CatalogApplied, error)
}

func (s *Server) revocationRoutes() []route {
	return []route{
		{method: "GET", pattern: "/v1/revocations", access: roles(certs.Operator), handle: s.getRevocations},
		{method: "POST", pattern: "/v1/revocations", access: roles(certs.Operator), handle: s.postRevocation},
		{method: "POST", pattern: "/v1/suspensions", access: roles(certs.Operator), handle: s.postSuspension},
		{method: "DELETE", pattern: "/v1/suspensions", access: roles(certs.Operator), handle: s.deleteSuspension},
	}
}

func (s *Server) lifecycle() (Lifecycle, error) {
	if s.cfg.Lifecycle == nil {
		return nil, fault.New(fault.Unavailable, "this node does not serve revocations")
	}
	return s.cfg.Lifecycle, nil
}

func (s *Server) getRevocations(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.lifecycle()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, svc.List())
	return nil
}

func (s *Server) postRevocation(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.lifecycle()
	if err != nil {
		return err
	}
	var in api.RevokeRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	out, err := svc.Revoke(r.Context(), c.id, in.Serial, in.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) postSuspension(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.lifecycle()
	if err != nil {
		return err
	}
	var in api.SuspendRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	out, err := svc.Suspend(r.Context(), c.id, in.Identity, in.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteSuspension(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.lifecycle()
	if err != nil {
		return err
	}
	out, err := svc.Unsuspend(r.Context(), c.id, r.URL.Query().Get("identity"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
