package httpapi

import (
	"net/http"
	"slices"
	"time"

	"credfed/api"
	"credfed/pseudonym"
)

func (s *Server) federationRoutes() []route {
	return []route{{method: "GET", pattern: "/v1/federation", access: anyCertificate, handle: s.getFederation}}
}

// getFederation is GET /v1/federation: the node, its place in Raft, its
// index replica and jobs, and the region registry. The custody check's
// job (its findings) is shown to the custody's reviewers only.
func (s *Server) getFederation(w http.ResponseWriter, r *http.Request, c caller) error {
	v, err := s.cfg.Cluster.Federation(r.Context())
	if err != nil {
		return err
	}
	if !reviewsCustody(c, v.Node.Region) {
		v.Jobs = slices.DeleteFunc(v.Jobs, func(j api.JobStatus) bool { return j.Name == pseudonym.CheckJobName })
	}
	v.API = s.recent.health(time.Now())
	writeJSON(w, http.StatusOK, v)
	return nil
}
