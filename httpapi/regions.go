package httpapi

import (
	"context"
	"net"
	"net/http"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
)

// Regions is the operators' control of the registry and the joins of new
// nodes (lifecycle.Service).
type Regions interface {
	AddRegion(ctx context.Context, caller certs.Identity, req api.RegionAddRequest) (api.RegionAdded, error)
	PromoteRegion(ctx context.Context, caller certs.Identity, path string) (api.RegionChanged, error)
	RemoveRegion(ctx context.Context, caller certs.Identity, path string) (api.RegionChanged, error)
	Join(ctx context.Context, from string, req api.JoinRequest) (api.JoinAnswer, error)
	CA() (string, error)
}

func (s *Server) regionRoutes() []route {
	return []route{
		{method: "POST", pattern: "/v1/regions", access: roles(certs.Operator), handle: s.postRegion},
		{method: "POST", pattern: "/v1/regions/promote", access: roles(certs.Operator), handle: s.promoteRegion},
		{method: "DELETE", pattern: "/v1/regions", access: roles(certs.Operator), handle: s.deleteRegion},
		// A joining node has no certificate yet: the token is its proof.
		{method: "POST", pattern: "/v1/join", access: publicAccess, handle: s.postJoin},
		{method: "GET", pattern: "/v1/ca", access: publicAccess, handle: s.getCA},
	}
}

func (s *Server) regionService() (Regions, error) {
	if s.cfg.Regions == nil {
		return nil, fault.New(fault.Unavailable, "this node does not manage regions")
	}
	return s.cfg.Regions, nil
}

func (s *Server) postRegion(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.regionService()
	if err != nil {
		return err
	}
	var in api.RegionAddRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	out, err := svc.AddRegion(r.Context(), c.id, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) promoteRegion(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.regionService()
	if err != nil {
		return err
	}
	var in struct {
		Path string `json:"path"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	out, err := svc.PromoteRegion(r.Context(), c.id, in.Path)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteRegion(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.regionService()
	if err != nil {
		return err
	}
	out, err := svc.RemoveRegion(r.Context(), c.id, r.URL.Query().Get("path"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) postJoin(w http.ResponseWriter, r *http.Request, _ caller) error {
	svc, err := s.regionService()
	if err != nil {
		return err
	}
	var in api.JoinRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	out, err := svc.Join(r.Context(), host, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getCA(w http.ResponseWriter, _ *http.Request, _ caller) error {
	svc, err := s.regionService()
	if err != nil {
		return err
	}
	ca, err := svc.CA()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"ca": ca})
	return nil
}
