package httpapi

import (
	"net/http"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
)

func (s *Server) custodyRoutes() []route {
	return []route{{method: "GET", pattern: "/v1/custody", access: roles(certs.Operator, certs.Coordinator), handle: s.getCustody}}
}

// getCustody is GET /v1/custody: a coordinator's account of the pseudonyms
// it handed to each district, and the districts flagged for asking for
// subjects they never publish (reviewers: operators and coordinators).
func (s *Server) getCustody(w http.ResponseWriter, r *http.Request, c caller) error {
	if s.cfg.Custody == nil {
		return fault.New(fault.Forbidden, "this node keeps no pseudonym custody")
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
