package httpapi

import (
	"net/http"

	"credfed/api"
	"credfed/credit"
	"credfed/lookup"
)

// Lookups admit any certificate so that a refusal (a department trying to
// look someone up) is audited like any other lookup; the service admits
// coordinators only.
func (s *Server) lookupRoutes() []route {
	return []route{{method: "POST", pattern: "/v1/lookups", access: anyCertificate, handle: s.postLookup}}
}

// postLookup is a coordinator's federated lookup (POST /v1/lookups).
func (s *Server) postLookup(w http.ResponseWriter, r *http.Request, c caller) error {
	var in api.LookupRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	ans, err := s.cfg.Lookups.Lookup(r.Context(), c.id, lookup.Request{Subject: in.Subject, Purpose: in.Purpose,
		User: in.User, Reference: in.Reference, Authorization: in.Authorization, Consistency: in.Consistency})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, lookupView(ans, in, s.cfg.Cluster.Catalog()))
	return nil
}

func lookupView(ans lookup.Answer, in api.LookupRequest, cat *credit.Catalog) api.LookupAnswer {
	out := api.LookupAnswer{LookupID: ans.LookupID, SubjectPseudonym: ans.Pseudonym.String(), Purpose: in.Purpose, Reference: in.Reference,
		Index:     api.LookupIndex{Consistency: ans.Consistency, AppliedIndex: ans.AppliedIndex},
		Districts: make([]api.DistrictResult, 0, len(ans.Districts))}
	for _, d := range ans.Districts {
		part := api.DistrictResult{District: d.Region, Name: d.Name, Status: string(d.Status), Error: d.Error,
			Records: make([]api.Record, 0, len(d.Records))}
		for _, rec := range d.Records {
			part.Records = append(part.Records, recordView(rec, cat))
		}
		out.Districts = append(out.Districts, part)
	}
	return out
}
