package httpapi

import (
	"net/http"
	"slices"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
)

// Queriers is the account of the institutions that query through this
// node (queriers.Tracker): counts, quotas and anomaly flags, never a
// subject.
type Queriers interface {
	Report() api.Queriers
}

// querierReviewers are the roles that review the queriers of a node, in
// its region or above it.
var querierReviewers = []certs.Role{certs.Operator, certs.Coordinator}

func (s *Server) querierRoutes() []route {
	return []route{{method: "GET", pattern: "/v1/audit/queriers", access: roles(querierReviewers...), handle: s.getQueriers}}
}

// getQueriers is GET /v1/audit/queriers: per institution, the queries by
// purpose, the quotas in their current window and the anomaly flags, for
// the operators and coordinators of this node's region or one above it.
// It holds counts only, so the review is not itself audited.
func (s *Server) getQueriers(w http.ResponseWriter, r *http.Request, c caller) error {
	if s.cfg.Queriers == nil {
		return fault.New(fault.Forbidden, "this node accounts for no queriers: institutions query through coordinator nodes")
	}
	region, err := s.nodeRegion(r.Context())
	if err != nil {
		return err
	}
	if !c.authed || c.id.Region == "" || region == "" || !certs.InRegion(region, c.id.Region) || !slices.Contains(querierReviewers, c.id.Role) {
		return fault.New(fault.Forbidden, "the queriers of %s are reviewed by the operators and coordinators of %s or a region above it, not by a %s of %s",
			region, region, c.id.Role, c.id.Region)
	}
	rep := s.cfg.Queriers.Report()
	if rep.Institutions == nil {
		rep.Institutions = []api.Querier{}
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
