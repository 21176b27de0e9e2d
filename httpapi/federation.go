package httpapi

import "net/http"

func (s *Server) federationRoutes() []route {
	return []route{{method: "GET", pattern: "/v1/federation", access: anyCertificate, handle: s.getFederation}}
}

// getFederation is GET /v1/federation: the node, its place in Raft, its
// index replica and jobs, and the region registry.
func (s *Server) getFederation(w http.ResponseWriter, r *http.Request, c caller) error {
	v, err := s.cfg.Cluster.Federation(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
