package httpapi

import (
	"net/http"

	"credfed/certs"

	"credfed/api"
	"credfed/credit"
	"credfed/fault"
)

func (s *Server) catalogRoutes() []route {
	return []route{
		{method: "GET", pattern: "/v1/catalog", access: anyCertificate, handle: s.getCatalog},
		{method: "POST", pattern: "/v1/catalog", access: roles(certs.Operator), maxBody: 8 << 20, handle: s.postCatalog},
	}
}

// catalog returns the replicated catalog or an unavailable refusal.
func (s *Server) catalog() (*credit.Catalog, error) {
	if c := s.cfg.Cluster.Catalog(); c != nil {
		return c, nil
	}
	return nil, fault.New(fault.Unavailable, "this node has not received the federation's catalog yet")
}

func (s *Server) getCatalog(w http.ResponseWriter, r *http.Request, c caller) error {
	cat, err := s.catalog()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.Catalog{
		Version: cat.Version, Items: cat.Items, Purposes: cat.Purposes, Lists: cat.Lists,
		Scenarios: cat.Scenarios, Domains: cat.Domains, Occupations: cat.Occupations,
		Rules: cat.Rules, Levels: cat.Levels,
	})
	return nil
}

// postCatalog publishes the next catalog version (JSON, as GET answers
// it): an operator of the province.
func (s *Server) postCatalog(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.lifecycle()
	if err != nil {
		return err
	}
	var in api.Catalog
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	out, err := svc.PublishCatalog(r.Context(), c.id, api.CatalogOf(&in))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
