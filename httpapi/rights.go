package httpapi

import (
	"context"
	"net/http"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/fault"
	"credfed/rights"
)

// Rights is the data subject's side (rights.Service).
type Rights interface {
	// Report gathers the subject's own report; AccessLog who looked the
	// subject up. Both are audited before they return.
	Report(ctx context.Context, caller certs.Identity, subject, authentication string) (rights.Report, error)
	AccessLog(ctx context.Context, caller certs.Identity, subject, authentication string) (rights.AccessLog, error)
}

// Signer signs a document as this node (attest.Signer).
type Signer interface {
	Sign(doc any) ([]byte, error)
}

func (s *Server) rightsRoutes() []route {
	return []route{
		{method: "POST", pattern: "/v1/reports", access: roles(certs.Portal), handle: s.postReport},
		{method: "POST", pattern: "/v1/access-log", access: roles(certs.Portal), handle: s.postAccessLog},
	}
}

// postReport is a subject's own report, signed by this node.
func (s *Server) postReport(w http.ResponseWriter, r *http.Request, c caller) error {
	if s.cfg.Rights == nil || s.cfg.Signer == nil {
		return fault.New(fault.Unavailable, "this node does not serve reports")
	}
	var in api.SubjectRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	rep, err := s.cfg.Rights.Report(r.Context(), c.id, in.Subject, in.Authentication)
	if err != nil {
		return err
	}
	doc := reportView(rep, c.id.Federation, credit.MaskIdentifier(in.Subject), s.cfg.Cluster.Catalog())
	signed, err := s.cfg.Signer.Sign(doc)
	if err != nil {
		return fault.Wrap(fault.Internal, err, "the report could not be signed")
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(signed)
	return nil
}

// postAccessLog is who looked the subject up.
func (s *Server) postAccessLog(w http.ResponseWriter, r *http.Request, c caller) error {
	if s.cfg.Rights == nil {
		return fault.New(fault.Unavailable, "this node does not serve access logs")
	}
	var in api.SubjectRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	log, err := s.cfg.Rights.AccessLog(r.Context(), c.id, in.Subject, in.Authentication)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, accessLogView(log))
	return nil
}

func reportView(rep rights.Report, federation, masked string, cat *credit.Catalog) api.Report {
	out := api.Report{Federation: federation, SubjectPseudonym: rep.Pseudonym.String(), Subject: masked,
		GeneratedAt: rep.At.UTC().Format(time.RFC3339), GatheredBy: rep.GatheredBy,
		Districts: make([]api.DistrictResult, 0, len(rep.Districts)), Lists: []api.ReportList{},
		AccessLog: accessLogView(rep.Access)}
	for _, d := range rep.Districts {
		part := api.DistrictResult{District: d.Region, Name: d.Name, Status: string(d.Status), Error: d.Error,
			Records: make([]api.Record, 0, len(d.Records))}
		for _, rec := range d.Records {
			v := recordView(rec, cat)
			v.Subject = masked
			part.Records = append(part.Records, v)
		}
		out.Districts = append(out.Districts, part)
	}
	for _, code := range rep.Lists {
		l := api.ReportList{List: code}
		if cat != nil {
			if def, ok := cat.List(code); ok {
				l.Name, l.Kind = def.Name, string(def.Kind)
			}
		}
		out.Lists = append(out.Lists, l)
	}
	return out
}

func accessLogView(log rights.AccessLog) api.AccessLog {
	out := api.AccessLog{Entries: make([]api.AccessEntry, 0, len(log.Entries)), Delayed: log.Delayed, Incomplete: log.Incomplete}
	for _, a := range log.Entries {
		e := api.AccessEntry{At: a.At.UTC().Format(time.RFC3339), LookupID: a.LookupID, Operation: a.Operation,
			Institution: a.Institution, Role: a.Role, User: a.User, Purpose: a.Purpose, Reference: a.Reference,
			Coordinator: a.Coordinator, Districts: a.Districts}
		if e.Districts == nil {
			e.Districts = []string{}
		}
		if len(a.Districts) > 0 {
			e.District = a.Districts[0]
		}
		out.Entries = append(out.Entries, e)
	}
	return out
}
