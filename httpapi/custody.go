package httpapi

import (
	"context"
	"net/http"
	"slices"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
)

// custodyReviewers are the roles that review a coordinator's custody of
// the pseudonym key, in its region or above it.
var custodyReviewers = []certs.Role{certs.Operator, certs.Coordinator}

func (s *Server) custodyRoutes() []route {
	return []route{{method: "GET", pattern: "/v1/custody", access: roles(custodyReviewers...), handle: s.getCustody}}
}

// reviewsCustody reports whether a caller reviews the custody of a node of
// region: an operator or a coordinator of that region or one above it. A
// district's operator is the reviewed party, another city's coordinator
// none of its business.
func reviewsCustody(c caller, region string) bool {
	if !c.authed || c.id.Region == "" || region == "" || !certs.InRegion(region, c.id.Region) {
		return false
	}
	return slices.Contains(custodyReviewers, c.id.Role)
}

// nodeRegion is the answering node's region.
func (s *Server) nodeRegion(ctx context.Context) (string, error) {
	v, err := s.cfg.Cluster.Federation(ctx)
	if err != nil {
		return "", err
	}
	return v.Node.Region, nil
}

// getCustody is GET /v1/custody: a coordinator's account of the pseudonyms
// it handed to each district, and the districts flagged for asking for
// subjects they never publish (reviewers: operators and coordinators of
// the node's region or one above it).
func (s *Server) getCustody(w http.ResponseWriter, r *http.Request, c caller) error {
	if s.cfg.Custody == nil {
		return fault.New(fault.Forbidden, "this node keeps no pseudonym custody")
	}
	region, err := s.nodeRegion(r.Context())
	if err != nil {
		return err
	}
	if !reviewsCustody(c, region) {
		return fault.New(fault.Forbidden, "the custody accounts of %s are for the operators and coordinators of %s or a region above it, not for a %s of %s",
			region, region, c.id.Role, c.id.Region)
	}
	accts, err := s.cfg.Custody.Accounts(r.Context())
	if err != nil {
		return err
	}
	out := api.Custody{Districts: make([]api.CustodyAccount, len(accts))}
	for i, a := range accts {
		out.Districts[i] = api.CustodyAccount{District: a.District, Issued: a.Issued, Checked: a.Checked, Unmatched: a.Unmatched,
			Flagged: !a.FlaggedAt.IsZero()}
		if !a.FlaggedAt.IsZero() {
			out.Districts[i].FlaggedAt = a.FlaggedAt.UTC().Format(time.RFC3339)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
