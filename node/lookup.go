package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/storage"
)

// opLookup is served by districts: a coordinator node asks for the records
// of one subject that a purpose may see.
const opLookup = "lookup"

// lookupRequest is the body of opLookup. The purpose, end user, case
// reference and authorization travel in the exchange Meta.
type lookupRequest struct {
	Subject   string           `cbor:"1,keyasint"` // canonical identifier
	Pseudonym credit.Pseudonym `cbor:"2,keyasint"`
	// Requester is the coordinator user the asking node vouches for (its
	// client certificate, verified by that node).
	Requester certs.Identity `cbor:"3,keyasint"`
}

type lookupReply struct {
	Records []credit.Record `cbor:"1,keyasint"`
}

// lookupInput is POST /v1/lookups's body.
type lookupInput struct {
	Subject       string `json:"subject"`
	Purpose       string `json:"purpose"`
	User          string `json:"user"`
	Reference     string `json:"reference"`
	Authorization string `json:"authorization,omitempty"`
	// Consistency is "local" (default: this node's index replica) or
	// "strong" (a linearizable read through the Raft leader).
	Consistency string `json:"consistency,omitempty"`
}

type lookupOutput struct {
	SubjectPseudonym string         `json:"subject_pseudonym"`
	Purpose          string         `json:"purpose"`
	Reference        string         `json:"reference"`
	Index            lookupIndex    `json:"index"`
	Districts        []districtPart `json:"districts"`
}

type lookupIndex struct {
	Consistency  string `json:"consistency"`
	AppliedIndex uint64 `json:"applied_index"`
}

type districtPart struct {
	District string       `json:"district"`
	Name     string       `json:"name,omitempty"`
	Status   string       `json:"status"`
	Records  []recordView `json:"records"`
	Error    string       `json:"error,omitempty"`
}

// checkLookup applies the rules every lookup must pass, at the asking node
// and again at each answering district: a known purpose that admits the
// requester's role, the subject's authorization where the purpose needs
// it, a named end user and a case reference.
func checkLookup(cat *credit.Catalog, requester certs.Identity, purpose, user, reference, authorization string) (credit.Purpose, *apiError) {
	if requester.Role != certs.Coordinator {
		return credit.Purpose{}, errorf(codeForbidden, "lookups are made by coordinators, not by a %s certificate", requester.Role)
	}
	p, ok := cat.Purpose(purpose)
	switch {
	case purpose == "":
		return p, fieldError(codeBadRequest, "purpose", "required: every lookup names a purpose of the catalog")
	case !ok:
		return p, fieldError(codeForbidden, "purpose", "purpose %q is not in catalog version %d", purpose, cat.Version)
	case p.SubjectOwn:
		return p, fieldError(codeForbidden, "purpose", "purpose %q is the subject's own inquiry, made through a portal", purpose)
	case !p.Admits(string(requester.Role)):
		return p, fieldError(codeForbidden, "purpose", "purpose %q may not be used by a %s", purpose, requester.Role)
	case strings.TrimSpace(user) == "":
		return p, fieldError(codeBadRequest, "user", "required: the end user who asks")
	case strings.TrimSpace(reference) == "":
		return p, fieldError(codeBadRequest, "reference", "required: the case reference the lookup serves")
	case p.AuthorizationRequired && strings.TrimSpace(authorization) == "":
		return p, fieldError(codeForbidden, "authorization", "purpose %q requires the subject's authorization reference", purpose)
	}
	return p, nil
}

// postLookup is a coordinator's federated lookup: pseudonym, index, fan-out
// to the holding districts, merged answer. Allowed or refused, the lookup
// is in this node's audit log before the answer leaves.
func (h *handlers) postLookup(w http.ResponseWriter, r *http.Request, c caller) error {
	n := h.n
	var in lookupInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	entry := storage.AuditEntry{At: h.now().UTC(), Node: n.cfg.Region, Caller: c.id.String(), Role: string(c.id.Role),
		Institution: c.id.Institution, User: in.User, Operation: "lookup", Purpose: in.Purpose,
		Reference: in.Reference, Authorization: in.Authorization}
	deny := func(e *apiError) error {
		entry.Decision, entry.Reason = storage.DecisionDenied, e.Code
		if err := h.audit(entry); err != nil {
			return err
		}
		n.metrics.lookups.WithLabelValues("denied").Inc()
		return e
	}
	subject, serr := credit.ParseSubject(in.Subject, h.parseOptions())
	if serr == nil && n.key.Valid() {
		entry.Subject = n.key.Pseudonym(subject.ID).String()
	}
	if !n.cfg.Role.IsCoordinatorNode() || !n.key.Valid() {
		return deny(errorf(codeForbidden, "lookups are served by coordinator nodes (province, city); this is a %s node", n.cfg.Role))
	}
	cat, err := h.catalog()
	if err != nil {
		return err
	}
	if _, e := checkLookup(cat, c.id, in.Purpose, in.User, in.Reference, in.Authorization); e != nil {
		return deny(e)
	}
	if !certs.InRegion(c.id.Region, n.cfg.Region) {
		return deny(errorf(codeForbidden, "a coordinator of %s looks up through its own node, not the node of %s", c.id.Region, n.cfg.Region))
	}
	if serr != nil {
		var ie *credit.IdentifierError
		msg := "not a valid identifier"
		if errors.As(serr, &ie) {
			msg = ie.Message
		}
		return deny(fieldError(codeInvalidIdentifier, "subject", "%s", msg))
	}
	strong := false
	switch in.Consistency {
	case "", "local":
		in.Consistency = "local"
	case "strong":
		strong = true
	default:
		return deny(fieldError(codeBadRequest, "consistency", "must be local or strong"))
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(n.cfg.LookupTimeout))
	defer cancel()
	p := n.key.Pseudonym(subject.ID)
	entries, applied, err := n.rep.Lookup(ctx, p, strong)
	switch {
	case errors.Is(err, consensus.ErrStale), errors.Is(err, context.DeadlineExceeded):
		return errorf(codeDeadlineExceeded, "the strong read of the index did not complete before the lookup's deadline")
	case errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrClosed), errors.Is(err, consensus.ErrOutcomeUnknown):
		return errorf(codeUnavailable, "a strong read needs the Raft leader, and none is known")
	case err != nil:
		return err
	}
	out := lookupOutput{SubjectPseudonym: p.String(), Purpose: in.Purpose, Reference: in.Reference,
		Index: lookupIndex{Consistency: in.Consistency, AppliedIndex: applied}, Districts: []districtPart{}}
	var peers []exchange.Peer
	var partOf []int
	for _, e := range entries {
		if !e.Holds() {
			continue
		}
		part := districtPart{District: e.District, Records: []recordView{}}
		reg, ok := n.rep.State().Region(e.District)
		part.Name = reg.Name
		if !ok || reg.Exchange == "" {
			part.Status, part.Error = string(exchange.StatusUnreachable), "district has no registered exchange address"
		} else {
			id := reg.Identity(n.cfg.Federation)
			peers = append(peers, exchange.Peer{Name: reg.Path, Addr: reg.Exchange, Identity: &id})
			partOf = append(partOf, len(out.Districts))
		}
		out.Districts = append(out.Districts, part)
	}
	meta := exchange.Meta{Purpose: in.Purpose, User: in.User, Reference: in.Reference, Authorization: in.Authorization}
	req := lookupRequest{Subject: subject.ID, Pseudonym: p, Requester: c.id}
	results := n.ep.FanOut(ctx, peers, opLookup, meta, req, func() any { return &lookupReply{} })
	for i, res := range results {
		part := &out.Districts[partOf[i]]
		part.Status = string(res.Status)
		if res.Err != nil {
			part.Error = wireMessage(res.Err)
			continue
		}
		for _, rec := range res.Resp.(*lookupReply).Records {
			part.Records = append(part.Records, viewOf(rec, cat))
			entry.Records = append(entry.Records, rec.District+"/"+rec.Department+"/"+rec.ID)
		}
	}
	for _, part := range out.Districts {
		n.metrics.lookupDistrict.WithLabelValues(part.Status).Inc()
	}
	sort.Slice(out.Districts, func(i, j int) bool { return out.Districts[i].District < out.Districts[j].District })
	entry.Decision = storage.DecisionAllowed
	if err := h.audit(entry); err != nil {
		return err
	}
	n.metrics.lookups.WithLabelValues("allowed").Inc()
	writeJSON(w, http.StatusOK, out)
	return nil
}

// wireMessage is what a lookup answer says about a district's error: the
// code and the peer's message, which exchange handlers build on purpose.
func wireMessage(err error) string {
	var e *exchange.Error
	if errors.As(err, &e) {
		if e.Message == "" {
			return string(e.Code)
		}
		return string(e.Code) + ": " + e.Message
	}
	return "error"
}

// audit writes an entry durably; an operation whose entry cannot be
// written is not answered.
func (h *handlers) audit(e storage.AuditEntry) error {
	return h.n.audit(e)
}

func (n *Node) audit(e storage.AuditEntry) error {
	if _, err := n.db.Audit().Append(e); err != nil {
		n.metrics.auditFailures.Inc()
		n.log.Error("audit append failed; refusing the operation", "operation", e.Operation, "error_type", fmt.Sprintf("%T", err))
		return errorf(codeUnavailable, "the audit log could not be written; nothing was answered")
	}
	return nil
}

// registerExchange registers the operations this node serves to others.
func (n *Node) registerExchange() {
	if n.cfg.Role == certs.District {
		n.ep.Handle(opLookup, n.answerLookup, exchange.AllowRoles(certs.Province, certs.City), exchange.MaxBody(64<<10))
	}
}

// answerLookup is a district's side of a lookup: it checks the purpose
// again (the catalog is replicated, so both ends decide alike), audits,
// and returns only what the purpose may see.
func (n *Node) answerLookup(ctx context.Context, req *exchange.Request) (any, error) {
	var in lookupRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	cat := n.rep.State().Catalog()
	if cat == nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "catalog not replicated yet")
	}
	m := req.Meta
	entry := storage.AuditEntry{At: time.Now().UTC(), Node: n.cfg.Region, Caller: req.Caller.String(),
		Role: string(in.Requester.Role), Institution: in.Requester.Institution, User: m.User, Operation: "lookup.answer",
		Purpose: m.Purpose, Reference: m.Reference, Authorization: m.Authorization, District: n.cfg.Region}
	if !in.Pseudonym.IsZero() {
		entry.Subject = in.Pseudonym.String()
	}
	deny := func(code exchange.Code, msg string) (any, error) {
		entry.Decision, entry.Reason = storage.DecisionDenied, string(code)
		if _, err := n.db.Audit().Append(entry); err != nil {
			n.metrics.auditFailures.Inc()
			return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
		}
		n.metrics.answered.WithLabelValues("denied").Inc()
		return nil, exchange.Errorf(code, "%s", msg)
	}
	if in.Requester.Federation != n.cfg.Federation || !certs.InRegion(in.Requester.Region, req.Caller.Region) {
		return deny(exchange.CodeForbidden, "the requester is not a user of the asking node")
	}
	if in.Pseudonym.IsZero() {
		return deny(exchange.CodeBadRequest, "pseudonym missing")
	}
	if _, e := checkLookup(cat, in.Requester, m.Purpose, m.User, m.Reference, m.Authorization); e != nil {
		code := exchange.CodeForbidden
		if e.Code == codeBadRequest {
			code = exchange.CodeBadRequest
		}
		return deny(code, e.Message)
	}
	subject, err := credit.ParseSubject(in.Subject, credit.ParseOptions{TestMode: n.cfg.TestMode})
	if err != nil {
		return deny(exchange.CodeBadRequest, "invalid subject identifier")
	}
	p, _ := cat.Purpose(m.Purpose)
	recs, err := n.db.RecordsBySubject(subject.ID)
	if err != nil {
		return nil, exchange.Errorf(exchange.CodeInternal, "records unavailable")
	}
	today := credit.TodayAt(time.Now())
	out := lookupReply{Records: []credit.Record{}}
	for _, r := range recs {
		it, ok := cat.Item(r.CatalogItem)
		if ok && credit.IsDisplayable(r, it, today, p) {
			out.Records = append(out.Records, r)
			entry.Records = append(entry.Records, r.Department+"/"+r.ID)
		}
	}
	entry.Decision = storage.DecisionAllowed
	if _, err := n.db.Audit().Append(entry); err != nil {
		n.metrics.auditFailures.Inc()
		return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
	}
	n.metrics.answered.WithLabelValues("allowed").Inc()
	return out, nil
}
