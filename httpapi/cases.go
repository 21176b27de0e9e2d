package httpapi

import (
	"context"
	"net/http"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
	"credfed/rights"
)

// Cases are objections and repair requests (rights.Service).
type Cases interface {
	File(ctx context.Context, caller certs.Identity, in rights.Filing) (rights.Case, error)
	Get(ctx context.Context, caller certs.Identity, kind, id string) (rights.Case, error)
	Open(ctx context.Context, caller certs.Identity, kind, state string) ([]rights.Case, error)
	Decide(ctx context.Context, caller certs.Identity, kind, id string, d rights.Decision) (rights.Case, error)
}

func (s *Server) caseRoutes() []route {
	var out []route
	for _, k := range []struct{ kind, path, decide string }{
		{rights.KindObjection, "/v1/objections", "resolution"},
		{rights.KindRepair, "/v1/repairs", "decision"},
	} {
		kind := k.kind
		out = append(out,
			route{method: "POST", pattern: k.path, access: roles(certs.Portal), handle: s.postCase(kind)},
			route{method: "GET", pattern: k.path, access: roles(certs.Department), handle: s.listCases(kind)},
			route{method: "GET", pattern: k.path + "/{id}", access: roles(certs.Portal, certs.Department), handle: s.getCase(kind)},
			route{method: "POST", pattern: k.path + "/{id}/" + k.decide, access: roles(certs.Department), handle: s.decideCase(kind)},
		)
	}
	return out
}

// handler is a route's handler.
type handler = func(w http.ResponseWriter, r *http.Request, c caller) error

func (s *Server) cases() (Cases, error) {
	if s.cfg.Cases == nil {
		return nil, fault.New(fault.Unavailable, "this node does not serve objections and repairs")
	}
	return s.cfg.Cases, nil
}

func (s *Server) postCase(kind string) handler {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		svc, err := s.cases()
		if err != nil {
			return err
		}
		var in api.CaseRequest
		if err := decodeJSON(r, &in); err != nil {
			return err
		}
		got, err := svc.File(r.Context(), c.id, rights.Filing{Kind: kind, Subject: in.Subject, Record: in.Record,
			Reason: in.Reason, Evidence: in.Evidence, Authentication: in.Authentication, Grounds: in.Grounds})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusCreated, caseView(got))
		return nil
	}
}

func (s *Server) getCase(kind string) handler {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		svc, err := s.cases()
		if err != nil {
			return err
		}
		got, err := svc.Get(r.Context(), c.id, kind, r.PathValue("id"))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, caseView(got))
		return nil
	}
}

func (s *Server) listCases(kind string) handler {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		svc, err := s.cases()
		if err != nil {
			return err
		}
		got, err := svc.Open(r.Context(), c.id, kind, r.URL.Query().Get("state"))
		if err != nil {
			return err
		}
		out := api.Cases{Cases: make([]api.Case, 0, len(got))}
		for _, g := range got {
			out.Cases = append(out.Cases, caseView(g))
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

func (s *Server) decideCase(kind string) handler {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		svc, err := s.cases()
		if err != nil {
			return err
		}
		var in api.CaseDecision
		if err := decodeJSON(r, &in); err != nil {
			return err
		}
		d := rights.Decision{Outcome: in.Outcome, Reason: in.Reason}
		if in.Correction != nil {
			if d.Correction, err = correctionOf(*in.Correction); err != nil {
				return err
			}
		}
		got, err := svc.Decide(r.Context(), c.id, kind, r.PathValue("id"), d)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, caseView(got))
		return nil
	}
}

func caseView(c rights.Case) api.Case {
	v := api.Case{ID: c.ID, Kind: c.Kind, Record: c.Ref, State: c.State, Outcome: c.Outcome,
		FiledAt: c.FiledAt.UTC().Format(time.RFC3339), Overdue: c.Overdue, Reason: c.Reason, Grounds: c.Grounds,
		Evidence: c.Evidence, Decision: c.Decision, DecidedBy: c.DecidedBy, Version: c.Version, Notify: c.Notify, NotifyConfidential: c.Confidential}
	if c.Deadline != 0 {
		v.Deadline = c.Deadline.String()
	}
	if !c.DecidedAt.IsZero() {
		v.DecidedAt = c.DecidedAt.UTC().Format(time.RFC3339)
	}
	return v
}
