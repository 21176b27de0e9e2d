package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
)

// AuditLog is the answering node's own audit log as reviewers read it
// (node.Node). The API serves GET /v1/audit when Config.Cluster
// implements it.
type AuditLog interface {
	// AuditPage returns the entries q selects, oldest first, after
	// registering the review itself (an entry by reviewer) durably.
	AuditPage(ctx context.Context, reviewer certs.Identity, q AuditQuery) (api.AuditPage, error)
}

// AuditQuery is what GET /v1/audit selects. Zero fields select
// everything.
type AuditQuery struct {
	// From and To bound the entries' time, both inclusive.
	From, To time.Time
	// Operation, Institution and Pseudonym (the subject's, lowercase hex)
	// must equal the entry's.
	Operation, Institution, Pseudonym string
	// After is the cursor: only entries after this sequence number.
	After uint64
	// Limit is the most entries of the page (1 to MaxAuditLimit).
	Limit int
}

// Page sizes of GET /v1/audit.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
)

// The audit log is reviewed by operators.
func (s *Server) auditRoutes() []route {
	return []route{{method: "GET", pattern: "/v1/audit", access: roles(certs.Operator), handle: s.getAudit}}
}

// getAudit is GET /v1/audit: this node's audit entries, filtered by from,
// to (RFC 3339), operation, institution and pseudonym, paged with
// ?cursor= and ?limit= (default 100, at most 1000). Operators of this
// node's region or one above it review it.
func (s *Server) getAudit(w http.ResponseWriter, r *http.Request, c caller) error {
	log, ok := s.cfg.Cluster.(AuditLog)
	if !ok {
		return fault.New(fault.Unavailable, "this node does not serve its audit log")
	}
	region, err := s.nodeRegion(r.Context())
	if err != nil {
		return err
	}
	if c.id.Region == "" || !certs.InRegion(region, c.id.Region) {
		return fault.New(fault.Forbidden, "the audit log of %s is reviewed by the operators of %s or a region above it, not by an operator of %s",
			region, region, c.id.Region)
	}
	q, err := auditQueryOf(r)
	if err != nil {
		return err
	}
	page, err := log.AuditPage(r.Context(), c.id, q)
	if err != nil {
		return err
	}
	if page.Entries == nil {
		page.Entries = []api.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// maxAuditParam bounds the operation and institution asked for (the
// longest name an entry keeps).
const maxAuditParam = 1024

func auditQueryOf(r *http.Request) (AuditQuery, error) {
	v := r.URL.Query()
	q := AuditQuery{Limit: DefaultAuditLimit, Operation: v.Get("operation"), Institution: v.Get("institution")}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		if s := v.Get(t.name); s != "" {
			at, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return q, fault.Field(fault.BadRequest, t.name, "must be a time in RFC 3339 (2026-12-01T08:00:00+08:00)")
			}
			*t.dst = at
		}
	}
	if !q.From.IsZero() && !q.To.IsZero() && q.To.Before(q.From) {
		return q, fault.Field(fault.BadRequest, "to", "is before from")
	}
	for name, s := range map[string]string{"operation": q.Operation, "institution": q.Institution} {
		if len(s) > maxAuditParam {
			return q, fault.Field(fault.BadRequest, name, "is longer than %d bytes", maxAuditParam)
		}
	}
	if p := v.Get("pseudonym"); p != "" {
		if !isPseudonymHex(p) {
			// Never repeated: it may be an identifier sent by mistake.
			return q, fault.Field(fault.BadRequest, "pseudonym", "must be a subject's pseudonym, 32 to 128 lowercase hex digits (an identifier is never accepted here)")
		}
		q.Pseudonym = p
	}
	if c := v.Get("cursor"); c != "" {
		after, err := strconv.ParseUint(c, 10, 64)
		if err != nil {
			return q, fault.Field(fault.BadRequest, "cursor", "is not a cursor this node handed out")
		}
		q.After = after
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxAuditLimit {
			return q, fault.Field(fault.BadRequest, "limit", "must be a whole number from 1 to %d", MaxAuditLimit)
		}
		q.Limit = n
	}
	return q, nil
}

func isPseudonymHex(p string) bool {
	if len(p) < 32 || len(p) > 128 || len(p)%2 != 0 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
