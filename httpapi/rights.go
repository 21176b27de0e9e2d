package httpapi

import (
	"context"
	"net/http"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
	"credfed/rights"
)

// Rights is the data subject's side (rights.Service).
type Rights interface {
	// Report gathers the subject's own report; AccessLog who looked the
	// subject up. Both are audited before they return.
	// Report's document is the signed JSON the gathering coordinator
	// signed (api.Report with its signature), to be sent as it is.
	Report(ctx context.Context, caller certs.Identity, subject, authentication string) ([]byte, rights.Report, error)
	AccessLog(ctx context.Context, caller certs.Identity, subject, authentication string) (rights.AccessLog, error)
}

func (s *Server) rightsRoutes() []route {
	return []route{
		{method: "POST", pattern: "/v1/reports", access: roles(certs.Portal), handle: s.postReport},
		{method: "POST", pattern: "/v1/access-log", access: roles(certs.Portal), handle: s.postAccessLog},
	}
}

// postReport is a subject's own report, signed by the coordinator that
// gathered it, sent as it was signed.
func (s *Server) postReport(w http.ResponseWriter, r *http.Request, c caller) error {
	if s.cfg.Rights == nil {
		return fault.New(fault.Unavailable, "this node does not serve reports")
	}
	var in api.SubjectRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	signed, _, err := s.cfg.Rights.Report(r.Context(), c.id, in.Subject, in.Authentication)
	if err != nil {
		return err
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
	writeJSON(w, http.StatusOK, rights.AccessLogDocument(log))
	return nil
}
