package rights

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/keyring"
	"credfed/storage"
)

// Objections (异议) and credit repair (信用修复): the subject files one at
// any district's portal, naming the record by its ref; the district
// forwards it to its city, which checks in the index that the named
// district holds something of the subject and passes it on; the holding
// district keeps the case beside the record, and the collecting department
// decides it there.

// Exchange operations of cases.
const (
	// OpCaseForward is served by coordinators: a district forwards its
	// portal's filing or status request.
	OpCaseForward = "rights.case.forward"
	// OpCase is served by districts: a coordinator passes a filing or a
	// status request on to the district that holds the record.
	OpCase = "rights.case"
)

// Kinds of cases.
const (
	KindObjection = storage.CaseObjection
	KindRepair    = storage.CaseRepair
)

// Actions of a case request.
const (
	actionFile = "file"
	actionGet  = "get"
)

// Limits of a filing.
const (
	MaxReason      = 2000
	MaxEvidence    = 32
	MaxEvidenceRef = 256
	// noticeWindow is how long before an objection a lookup is still
	// notified of its outcome.
	noticeWindow = 30 * 24 * time.Hour
)

// Objection outcomes and repair decisions.
const (
	OutcomeUpheld    = "upheld"
	OutcomeCorrected = "corrected"
	OutcomeRevoked   = "revoked"
	OutcomeApproved  = "approved"
	OutcomeRejected  = "rejected"
)

// RepairGrounds are the grounds a repair may rest on.
var RepairGrounds = []string{"performance", "volunteer_service", "donation", "training"}

// Filing is an objection or a repair request as a portal files it.
type Filing struct {
	Kind           string   `cbor:"1,keyasint"`
	Subject        string   `cbor:"2,keyasint"`
	Record         string   `cbor:"3,keyasint"` // a credit.Ref
	Reason         string   `cbor:"4,keyasint,omitempty"`
	Evidence       []string `cbor:"5,keyasint,omitempty"`
	Authentication string   `cbor:"6,keyasint"`
	Grounds        string   `cbor:"7,keyasint,omitempty"`
}

// Decision is a collecting department's decision of a case.
type Decision struct {
	Outcome string
	Reason  string
	// Correction applies to an objection corrected.
	Correction credit.Correction
}

// Case is a case as its parties see it.
type Case struct {
	storage.Case
	// Ref is the record's reference.
	Ref string `cbor:"30,keyasint"`
	// Overdue says an open case is past its deadline.
	Overdue bool `cbor:"31,keyasint,omitempty"`
}

type caseForward struct {
	Action    string         `cbor:"1,keyasint"`
	Filing    Filing         `cbor:"2,keyasint"`
	ID        string         `cbor:"3,keyasint,omitempty"`
	Requester certs.Identity `cbor:"4,keyasint"`
}

type caseRequest struct {
	Action    string           `cbor:"1,keyasint"`
	Filing    Filing           `cbor:"2,keyasint"`
	ID        string           `cbor:"3,keyasint,omitempty"`
	Requester certs.Identity   `cbor:"4,keyasint"`
	Pseudonym credit.Pseudonym `cbor:"5,keyasint,omitempty"`
}

// CaseStore is where a district keeps cases and reads and changes records
// (storage.DB).
type CaseStore interface {
	PutCase(c storage.Case) error
	GetCase(kind, id string) (storage.Case, error)
	Cases(kind string, limit int, keep func(storage.Case) bool) ([]storage.Case, error)
	Record(department, id string) (credit.Record, error)
	UpdateRecord(next credit.Record) error
}

// NewCaseID returns a fresh case id: a prefix for the kind, 26 random
// base32 characters, and the holding district's region with dots for
// slashes, so that any node can tell where a case is kept.
func NewCaseID(kind, district string) string {
	pfx := "ob"
	if kind == storage.CaseRepair {
		pfx = "rp"
	}
	return exchange.NewID(pfx) + "." + strings.ReplaceAll(district, "/", ".")
}

// caseDistrict is the district a case id names.
func caseDistrict(kind, id string) (string, error) {
	pfx := "ob-"
	if kind == storage.CaseRepair {
		pfx = "rp-"
	}
	rest, ok := strings.CutPrefix(id, pfx)
	i := strings.IndexByte(rest, '.')
	if !ok && (strings.HasPrefix(id, "ob-") || strings.HasPrefix(id, "rp-")) {
		other := map[string]string{"ob-": KindObjection, "rp-": KindRepair}[id[:3]]
		return "", fault.New(fault.NotFound, "no such %s: the id is %s %s's", kind, article(other), other)
	}
	if !ok || len(id) > 200 || i != 26 {
		return "", fault.New(fault.NotFound, "no such %s", kind)
	}
	district := strings.ReplaceAll(rest[i+1:], ".", "/")
	if certs.CheckRegion(district) != nil {
		return "", fault.New(fault.NotFound, "no such %s", kind)
	}
	return district, nil
}

// File files an objection or a repair request for a portal. At a
// district it goes to the city, which routes it to the holding district.
func (s *Service) File(ctx context.Context, caller certs.Identity, in Filing) (Case, error) {
	entry := audit.By(caller, in.Kind+".file")
	entry.Authentication = audit.Bound(in.Authentication, MaxAuthentication)
	fail := func(e error) (Case, error) {
		entry.Decision, entry.Reason = storage.DecisionDenied, string(fault.KindOf(e))
		if err := s.cfg.Audit.Record(entry); err != nil {
			return Case{}, err
		}
		return Case{}, e
	}
	if in.Kind != storage.CaseObjection && in.Kind != storage.CaseRepair {
		entry.Operation = "case.file"
		return fail(fault.New(fault.BadRequest, "unknown kind of case"))
	}
	if e := s.checkPortal(caller, in.Authentication); e != nil {
		return fail(e)
	}
	if e := checkFiling(in); e != nil {
		return fail(e)
	}
	if _, err := s.parseSubject(in.Subject); err != nil {
		return fail(err)
	}
	ref, _ := credit.ParseRef(in.Record)
	entry.Records = []string{ref.String()}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var c Case
	err := s.forwardCase(ctx, caseForward{Action: actionFile, Filing: in, Requester: caller}, &c)
	if err != nil {
		return fail(err)
	}
	entry.Subject = c.Subject
	entry.Reference = c.ID
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return Case{}, err
	}
	return c, nil
}

// Get returns a case: to a portal (forwarded to the holding district), or
// to the collecting department at its own node.
func (s *Service) Get(ctx context.Context, caller certs.Identity, kind, id string) (Case, error) {
	if kind != storage.CaseObjection && kind != storage.CaseRepair {
		return Case{}, fault.New(fault.NotFound, "no such case")
	}
	district, err := caseDistrict(kind, id)
	if err != nil {
		return Case{}, err
	}
	switch caller.Role {
	case certs.Department:
		if s.cfg.Self.Role != certs.District || district != s.cfg.Self.Region {
			return Case{}, s.elsewhere(kind, district)
		}
		c, err := s.localCase(kind, id)
		if err != nil {
			return Case{}, err
		}
		if c.Department != caller.Institution || caller.Region != s.cfg.Self.Region {
			return Case{}, fault.New(fault.Forbidden, "the %s is decided by the department that collected the record", kind)
		}
		return c, nil
	case certs.Portal:
		if !certs.InRegion(caller.Region, s.cfg.Self.Region) {
			return Case{}, fault.New(fault.Forbidden, "a portal of %s asks through its own node", caller.Region)
		}
		ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
		var c Case
		if err := s.forwardCase(ctx, caseForward{Action: actionGet, Filing: Filing{Kind: kind}, ID: id, Requester: caller}, &c); err != nil {
			return Case{}, err
		}
		return c, nil
	}
	return Case{}, fault.New(fault.Forbidden, "cases are followed through a portal or by the collecting department")
}

// Open lists the open cases of the caller's department (department role,
// at its own district node), oldest deadline first.
func (s *Service) Open(ctx context.Context, caller certs.Identity, kind, state string) ([]Case, error) {
	if err := s.collector(caller); err != nil {
		return nil, err
	}
	if kind != storage.CaseObjection && kind != storage.CaseRepair {
		return nil, fault.New(fault.NotFound, "no such kind of case")
	}
	switch state {
	case "", storage.CaseOpen, storage.CaseDecided, "overdue", "all":
	default:
		return nil, fault.Field(fault.BadRequest, "state", "must be open, overdue, decided or all")
	}
	today := credit.TodayAt(s.cfg.Now())
	found, err := s.cfg.Cases.Cases(kind, 10000, func(c storage.Case) bool {
		if c.Department != caller.Institution {
			return false
		}
		switch state {
		case "", storage.CaseOpen:
			return c.State == storage.CaseOpen
		case "overdue":
			return c.State == storage.CaseOpen && c.Deadline != 0 && today > c.Deadline
		case storage.CaseDecided:
			return c.State == storage.CaseDecided
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	out := make([]Case, 0, len(found))
	for _, c := range found {
		out = append(out, s.view(c, today))
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Deadline != out[j].Deadline {
			return out[i].Deadline < out[j].Deadline
		}
		return out[i].FiledAt.Before(out[j].FiledAt)
	})
	return out, nil
}

// Decide records the collecting department's decision of a case and
// changes the record accordingly.
func (s *Service) Decide(ctx context.Context, caller certs.Identity, kind, id string, d Decision) (Case, error) {
	entry := audit.By(caller, kind+".decide")
	entry.Reference = audit.Bound(id, audit.MaxField)
	fail := func(e error) (Case, error) {
		entry.Decision, entry.Reason = storage.DecisionDenied, string(fault.KindOf(e))
		if err := s.cfg.Audit.Record(entry); err != nil {
			return Case{}, err
		}
		return Case{}, e
	}
	if err := s.collector(caller); err != nil {
		return fail(err)
	}
	if kind != storage.CaseObjection && kind != storage.CaseRepair {
		return fail(fault.New(fault.NotFound, "no such kind of case"))
	}
	district, derr := caseDistrict(kind, id)
	if derr != nil {
		return fail(derr)
	}
	if district != s.cfg.Self.Region {
		return fail(s.elsewhere(kind, district))
	}
	sc, err := s.cfg.Cases.GetCase(kind, id)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidRecord) {
		return fail(fault.New(fault.NotFound, "no such %s at this node", kind))
	} else if err != nil {
		return Case{}, err
	}
	entry.Subject = sc.Subject
	entry.Records = []string{sc.Department + "/" + sc.Record}
	if sc.Department != caller.Institution {
		return fail(fault.New(fault.Forbidden, "the %s is decided by the department that collected the record, not by %s", kind, caller.Institution))
	}
	if sc.State != storage.CaseOpen {
		return fail(fault.New(fault.Conflict, "the %s was decided on %s", kind, sc.DecidedAt.UTC().Format("2006-01-02")))
	}
	if e := checkText("reason", d.Reason, MaxReason, true); e != nil {
		return fail(e)
	}
	if d.Correction != (credit.Correction{}) && (kind != storage.CaseObjection || d.Outcome != OutcomeCorrected) {
		return fail(fault.Field(fault.BadRequest, "correction", "a correction goes with an objection's outcome corrected only"))
	}
	now := s.cfg.Now()
	rec, err := s.cfg.Cases.Record(sc.Department, sc.Record)
	if err != nil {
		return Case{}, err
	}
	next := rec
	next.Version = rec.Version + 1
	next.RecordedAt = now.UTC()
	next.Reason = d.Reason
	change := true
	switch {
	case kind == storage.CaseObjection && d.Outcome == OutcomeUpheld:
		next.Status = sc.PriorStatus
		if next.Status == "" || next.Status == credit.StatusDisputed {
			next.Status = credit.StatusActive
		}
	case kind == storage.CaseObjection && d.Outcome == OutcomeCorrected:
		cat := s.cfg.Catalog()
		if cat == nil {
			return Case{}, fault.New(fault.Unavailable, "the catalog has not arrived yet")
		}
		opt := s.cfg.Identifiers
		opt.Today = credit.TodayAt(now)
		base := rec
		base.Status = credit.StatusActive
		corrected, err := cat.Correct(base, d.Correction, d.Reason, now, opt)
		if err != nil {
			var fe *credit.FieldError
			if errors.As(err, &fe) {
				return fail(fault.Field(fault.BadRequest, fe.Field, "%s", fe.Message))
			}
			return fail(fault.New(fault.BadRequest, "the correction is not valid"))
		}
		next = corrected
	case kind == storage.CaseObjection && d.Outcome == OutcomeRevoked:
		next.Status = credit.StatusRevoked
	case kind == storage.CaseRepair && d.Outcome == OutcomeApproved:
		if rec.Status != credit.StatusActive {
			return fail(fault.New(fault.Conflict, "the record is %s now; only an active record is repaired", rec.Status))
		}
		next.Status = credit.StatusRepaired
	case kind == storage.CaseRepair && d.Outcome == OutcomeRejected:
		change = false
	default:
		allowed := "upheld, corrected or revoked"
		if kind == storage.CaseRepair {
			allowed = "approved or rejected"
		}
		return fail(fault.Field(fault.BadRequest, "outcome", "must be %s", allowed))
	}
	if change {
		if err := s.cfg.Cases.UpdateRecord(next); errors.Is(err, storage.ErrConflict) {
			return fail(fault.New(fault.Conflict, "the record changed meanwhile; try again"))
		} else if err != nil {
			return Case{}, err
		}
		sc.Version = next.Version
		if s.cfg.Notify != nil {
			s.cfg.Notify()
		}
	}
	if kind == storage.CaseObjection {
		sc.Notify, sc.Confidential = s.lookers(sc, now)
	}
	sc.State, sc.Outcome, sc.Decision = storage.CaseDecided, d.Outcome, d.Reason
	sc.DecidedBy, sc.DecidedAt = caller.String(), now.UTC()
	if err := s.cfg.Cases.PutCase(sc); err != nil {
		return Case{}, err
	}
	entry.Decision = storage.DecisionAllowed
	entry.Purpose = d.Outcome
	if err := s.cfg.Audit.Record(entry); err != nil {
		return Case{}, err
	}
	return s.view(sc, credit.TodayAt(now)), nil
}

// lookers are the institutions that looked the record up while it was
// disputed or in the 30 days before the objection, from this district's
// audit log; confidential are those whose lookups the subject's access
// log still hides (their purpose's delay has not passed).
func (s *Service) lookers(sc storage.Case, now time.Time) (notify, confidential []string) {
	entries, err := s.cfg.AuditLog.BySubject(sc.Subject)
	if err != nil {
		s.log.Warn("the lookups of a disputed record could not be read for the notice list", "error", err)
		return nil, nil
	}
	shownFrom := delays(s.cfg.Catalog())
	want := sc.Department + "/" + sc.Record
	from := sc.FiledAt.Add(-noticeWindow)
	seen := map[string]bool{}
	for _, e := range entries {
		if _, ok := answeringOps[e.Operation]; !ok || e.Decision != storage.DecisionAllowed || e.At.Before(from) {
			continue
		}
		for _, r := range e.Records {
			if r == want {
				who := e.Institution
				if e.Caller != "" {
					who = callerRegion(e.Caller) + "/" + e.Institution
				}
				if seen[who] {
					continue
				}
				seen[who] = true
				if now.Before(shownFrom(e.Purpose, e.At)) {
					confidential = append(confidential, who)
				} else {
					notify = append(notify, who)
				}
			}
		}
	}
	sort.Strings(notify)
	sort.Strings(confidential)
	return notify, confidential
}

func (s *Service) collector(caller certs.Identity) error {
	switch {
	case s.cfg.Self.Role != certs.District:
		return fault.New(fault.Forbidden, "cases are kept by the district that holds the record; this is a %s node", s.cfg.Self.Role)
	case caller.Role != certs.Department:
		return fault.New(fault.Forbidden, "cases are decided by the collecting department, not by a %s", caller.Role)
	case caller.Region != s.cfg.Self.Region:
		return fault.New(fault.Forbidden, "a department of %s may not act on the node of %s", caller.Region, s.cfg.Self.Region)
	}
	return nil
}

func (s *Service) localCase(kind, id string) (Case, error) {
	sc, err := s.cfg.Cases.GetCase(kind, id)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidRecord) {
		return Case{}, fault.New(fault.NotFound, "no such %s", kind)
	} else if err != nil {
		return Case{}, err
	}
	return s.view(sc, credit.TodayAt(s.cfg.Now())), nil
}

func (s *Service) view(sc storage.Case, today credit.Date) Case {
	c := Case{Case: sc, Ref: credit.Ref{District: s.cfg.Self.Region, Department: sc.Department, ID: sc.Record}.String()}
	c.Overdue = sc.State == storage.CaseOpen && sc.Deadline != 0 && today > sc.Deadline
	return c
}

func (s *Service) checkPortal(caller certs.Identity, authentication string) *fault.Error {
	if caller.Role != certs.Portal {
		return fault.New(fault.Forbidden, "a subject files through a portal, not with a %s certificate", caller.Role)
	}
	if !certs.InRegion(caller.Region, s.cfg.Self.Region) {
		return fault.New(fault.Forbidden, "a portal of %s files through its own node", caller.Region)
	}
	return checkAuthentication(authentication)
}

func (s *Service) parseSubject(subject string) (credit.Subject, error) {
	opt := s.cfg.Identifiers
	opt.Today = credit.TodayAt(s.cfg.Now())
	sub, err := credit.ParseSubject(subject, opt)
	if err != nil {
		var ie *credit.IdentifierError
		msg := "not a valid identifier"
		if errors.As(err, &ie) {
			msg = ie.Message
		}
		return sub, fault.Field(fault.InvalidIdentifier, "subject", "%s", msg)
	}
	return sub, nil
}

func checkFiling(in Filing) *fault.Error {
	if _, err := credit.ParseRef(in.Record); err != nil {
		var fe *credit.FieldError
		if errors.As(err, &fe) {
			return fault.Field(fault.BadRequest, "record", "%s", fe.Message)
		}
		return fault.Field(fault.BadRequest, "record", "not a record reference")
	}
	if e := checkText("reason", in.Reason, MaxReason, in.Kind == storage.CaseObjection); e != nil {
		return e
	}
	if len(in.Evidence) > MaxEvidence {
		return fault.Field(fault.BadRequest, "evidence", "at most %d evidence references", MaxEvidence)
	}
	for _, ev := range in.Evidence {
		if e := checkText("evidence", ev, MaxEvidenceRef, true); e != nil {
			return e
		}
	}
	if in.Kind == storage.CaseObjection && in.Grounds != "" {
		return fault.Field(fault.BadRequest, "grounds", "grounds are given for a repair, not for an objection (state the objection's reason)")
	}
	if in.Kind == storage.CaseRepair {
		ok := false
		for _, g := range RepairGrounds {
			ok = ok || in.Grounds == g
		}
		if !ok {
			return fault.Field(fault.BadRequest, "grounds", "must be one of %s", strings.Join(RepairGrounds, ", "))
		}
	}
	return nil
}

// checkText refuses a field that is missing (when required), too long or
// not plain text, naming the field and never its value.
func checkText(field, v string, max int, required bool) *fault.Error {
	if required && strings.TrimSpace(v) == "" {
		return fault.Field(fault.BadRequest, field, "required")
	}
	if len(v) > max {
		return fault.Field(fault.BadRequest, field, "must be at most %d bytes, got %d", max, len(v))
	}
	if !plainText(v) {
		return fault.Field(fault.BadRequest, field, "must be plain text (no control or invisible characters)")
	}
	return nil
}

// plainText reports whether v is UTF-8 text (credit.TextRune), line breaks
// and tabs, with no control or invisible character.
func plainText(v string) bool {
	if !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if r != '\n' && r != '\t' && !(unicode.IsPrint(r) && credit.TextRune(r)) {
			return false
		}
	}
	return true
}

// forwardCase sends a case request to the coordinators above the
// district, nearest first, until one answers.
func (s *Service) forwardCase(ctx context.Context, req caseForward, out *Case) error {
	if s.cfg.Self.Role.IsCoordinatorNode() {
		return fault.New(fault.Forbidden, "cases are filed at a district's portal")
	}
	var last error
	for _, p := range consensus.CoordinatorsAbove(s.cfg.Index.Regions(), s.cfg.Self) {
		err := s.cfg.Endpoint.Call(ctx, p, OpCaseForward, exchange.Meta{Authentication: req.Filing.Authentication}, req, out)
		if err == nil {
			return nil
		}
		last = err
		if !passOver(err) || ctx.Err() != nil {
			break
		}
	}
	if last == nil {
		return fault.New(fault.Unavailable, "no coordinator node is registered to route the %s", req.Filing.Kind)
	}
	return caseFault(last, req.Filing.Kind)
}

// caseFault maps a refusal from the far end to the fault the portal sees.
func caseFault(err error, kind string) error {
	var e *exchange.Error
	if errors.As(err, &e) {
		switch e.Code {
		case exchange.CodeNotFound:
			return fault.New(fault.NotFound, "%s", e.Message)
		case exchange.CodeConflict:
			return fault.New(fault.Conflict, "%s", e.Message)
		case exchange.CodeForbidden:
			return fault.New(fault.Forbidden, "%s", e.Message)
		case exchange.CodeBadRequest:
			return fault.New(fault.BadRequest, "%s", e.Message)
		case exchange.CodeTooManyRequests:
			return fault.New(fault.TooManyRequests, "%s", e.Message)
		case exchange.CodeTooEarly:
			return fault.New(fault.TooEarly, "%s", e.Message)
		}
	}
	return remoteFault(err, kind)
}

// serveCaseForward routes a district's case request to the holding
// district: a filing only if the index names that district for the
// subject.
func (s *Service) serveCaseForward(ctx context.Context, req *exchange.Request) (any, error) {
	var in caseForward
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	kind := in.Filing.Kind
	entry := audit.By(in.Requester, "case.forward")
	entry.Caller = req.Caller.String()
	deny := func(code exchange.Code, msg string) (any, error) { return s.refuseWire(&entry, code, msg) }
	if kind != storage.CaseObjection && kind != storage.CaseRepair {
		return deny(exchange.CodeBadRequest, "unknown kind of case")
	}
	entry.Operation = kind + ".forward"
	if !certs.InRegion(req.Caller.Region, s.cfg.Self.Region) {
		return deny(exchange.CodeForbidden, "the forwarding district is not below this node: a district forwards its portals' cases to the coordinators above it")
	}
	if in.Requester.Role != certs.Portal || in.Requester.Federation != s.cfg.Self.Federation || !certs.InRegion(in.Requester.Region, req.Caller.Region) {
		return deny(exchange.CodeForbidden, "the requester is not a portal of the forwarding district")
	}
	if !s.nodes.Allow(req.Caller.String()) || !s.allow(in.Requester) {
		return deny(exchange.CodeTooManyRequests, "this district or portal asks too often")
	}
	var district string
	fwd := caseRequest{Action: in.Action, Filing: in.Filing, ID: in.ID, Requester: in.Requester}
	switch in.Action {
	case actionFile:
		if e := checkFiling(in.Filing); e != nil {
			return deny(exchange.CodeBadRequest, e.Message)
		}
		if e := checkAuthentication(in.Filing.Authentication); e != nil {
			return deny(exchange.CodeBadRequest, e.Message)
		}
		sub, err := s.parseSubject(in.Filing.Subject)
		if err != nil {
			return deny(exchange.CodeBadRequest, "invalid subject identifier")
		}
		ring := s.ring()
		if ring == nil {
			return deny(exchange.CodeUnavailable, "this node holds no pseudonym key")
		}
		p := ring.Pseudonym(sub.ID)
		entry.Subject = p.String()
		ref, _ := credit.ParseRef(in.Filing.Record)
		entry.Records = []string{ref.String()}
		named, err := s.indexNames(ctx, ring, sub.ID, ref.District)
		if err != nil {
			return deny(exchange.CodeUnavailable, "the index could not be read")
		}
		if !named {
			return deny(exchange.CodeNotFound, "the district named holds no record of the subject")
		}
		district, fwd.Pseudonym = ref.District, p
	case actionGet:
		d, err := caseDistrict(kind, in.ID)
		if err != nil {
			return deny(exchange.CodeNotFound, "no such "+kind)
		}
		district = d
		entry.Reference = in.ID
	default:
		return deny(exchange.CodeBadRequest, "unknown action")
	}
	reg, ok := s.cfg.Index.Region(district)
	if !ok || reg.Role != certs.District || reg.Exchange == "" {
		return deny(exchange.CodeNotFound, "the district named is not registered")
	}
	id := reg.Identity(s.cfg.Self.Federation)
	var out Case
	err := s.cfg.Endpoint.Call(ctx, exchange.Peer{Name: reg.Path, Addr: reg.Exchange, Identity: &id}, OpCase, exchange.Meta{}, fwd, &out)
	if err != nil {
		var e *exchange.Error
		if errors.As(err, &e) && e.Code != exchange.CodeUnavailable && e.Code != exchange.CodeInternal {
			return deny(e.Code, e.Message)
		}
		return deny(exchange.CodeUnavailable, "the holding district could not be reached")
	}
	entry.Reference = out.ID
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
	}
	return out, nil
}

// indexNames reports whether the index names district for the subject
// (its pseudonyms under the live key versions): the local replica first,
// and on a miss a strong read through the leader (a record just submitted
// may not have reached this replica yet).
func (s *Service) indexNames(ctx context.Context, ring keyring.Ring, canonicalID, district string) (bool, error) {
	for _, strong := range []bool{false, true} {
		_, entries, _, err := keyring.Read(ctx, s.cfg.Index.Lookup, ring, canonicalID, strong)
		if err != nil {
			return false, err
		}
		for _, e := range entries {
			if e.District == district {
				return true, nil
			}
		}
	}
	return false, nil
}

// serveCase is the holding district's side: it files the case beside the
// record (an objection marks the record disputed), or shows one.
func (s *Service) serveCase(ctx context.Context, req *exchange.Request) (any, error) {
	var in caseRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	kind := in.Filing.Kind
	entry := audit.By(in.Requester, "case.answer")
	entry.Caller = req.Caller.String()
	entry.District = s.cfg.Self.Region
	deny := func(code exchange.Code, msg string) (any, error) { return s.refuseWire(&entry, code, msg) }
	if kind != storage.CaseObjection && kind != storage.CaseRepair {
		return deny(exchange.CodeBadRequest, "unknown kind of case")
	}
	if in.Action != actionFile && in.Action != actionGet {
		return deny(exchange.CodeBadRequest, "unknown action")
	}
	entry.Operation = kind + "." + in.Action
	if in.Requester.Role != certs.Portal || in.Requester.Federation != s.cfg.Self.Federation {
		return deny(exchange.CodeForbidden, "cases are filed and followed through a portal")
	}
	now := s.cfg.Now()
	today := credit.TodayAt(now)
	if in.Action == actionGet {
		entry.Reference = audit.Bound(in.ID, audit.MaxField)
		c, err := s.localCase(kind, in.ID)
		if err != nil {
			return deny(exchange.CodeNotFound, "no such "+kind)
		}
		// The portal sees what the subject's access log shows.
		c.Confidential = nil
		entry.Subject = c.Subject
		entry.Decision = storage.DecisionAllowed
		if err := s.cfg.Audit.Record(entry); err != nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
		}
		return c, nil
	}
	if in.Action != actionFile {
		return deny(exchange.CodeBadRequest, "unknown action")
	}
	if e := checkFiling(in.Filing); e != nil {
		return deny(exchange.CodeBadRequest, e.Message)
	}
	sub, err := s.parseSubject(in.Filing.Subject)
	if err != nil {
		return deny(exchange.CodeBadRequest, "invalid subject identifier")
	}
	ref, _ := credit.ParseRef(in.Filing.Record)
	entry.Records = []string{ref.Department + "/" + ref.ID}
	if ref.District != s.cfg.Self.Region {
		return deny(exchange.CodeNotFound, "the record is not held by this district")
	}
	rec, err := s.cfg.Cases.Record(ref.Department, ref.ID)
	if err != nil || rec.Subject != sub.ID {
		// The same answer whether the record is missing or another
		// subject's: a filing learns nothing of other people's records.
		return deny(exchange.CodeNotFound, "this district holds no such record of the subject")
	}
	own, err := s.cfg.Resolve(ctx, []string{sub.ID})
	if err != nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "the filing cannot be registered now (no pseudonym for the audit)")
	}
	entry.Subject = own[0].String()
	cat := s.cfg.Catalog()
	if cat == nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "catalog not replicated yet")
	}
	it, ok := cat.Item(rec.CatalogItem)
	if !ok {
		return deny(exchange.CodeConflict, "the record's catalog item is no longer in the catalog")
	}
	// One open case per record and kind: the check and the filing are one
	// step (concurrent filings of one record would each see none open).
	s.caseMu.Lock()
	defer s.caseMu.Unlock()
	open, err := s.cfg.Cases.Cases(kind, 1, func(c storage.Case) bool {
		return c.State == storage.CaseOpen && c.Department == rec.Department && c.Record == rec.ID
	})
	if err != nil {
		return nil, exchange.Errorf(exchange.CodeInternal, "cases unavailable")
	}
	if len(open) > 0 {
		return deny(exchange.CodeConflict, article(kind)+" "+kind+" of this record is open already ("+open[0].ID+")")
	}
	sc := storage.Case{Kind: kind, ID: NewCaseID(kind, s.cfg.Self.Region), Department: rec.Department, Record: rec.ID,
		Subject: own[0].String(), Portal: in.Requester.String(), Authentication: in.Filing.Authentication,
		Reason: in.Filing.Reason, Evidence: in.Filing.Evidence, Grounds: in.Filing.Grounds, FiledAt: now.UTC(),
		State: storage.CaseOpen, PriorStatus: rec.Status}
	switch kind {
	case storage.CaseObjection:
		if rec.Status != credit.StatusActive && rec.Status != credit.StatusRepaired && rec.Status != credit.StatusExpired {
			return deny(exchange.CodeConflict, "the record is "+string(rec.Status)+"; an objection is filed against a record in use")
		}
		sc.Deadline = credit.ObjectionDeadline(today, it, credit.DefaultCalendar())
	case storage.CaseRepair:
		if !it.Repairable || it.Polarity != credit.Negative {
			return deny(exchange.CodeForbidden, "records of item "+it.Code+" cannot be repaired (the catalog marks the item not repairable)")
		}
		from, ok := credit.RepairEligibleFrom(rec, it)
		if !ok {
			return deny(exchange.CodeConflict, "the record is "+string(rec.Status)+"; only an active record can be repaired")
		}
		if today < from {
			return deny(exchange.CodeTooEarly, "repair of this record may be applied for from "+from.String()+" (its minimum publicity period)")
		}
		sc.Deadline = credit.DefaultCalendar().AddWorkingDays(today, repairDeadlineDays)
	}
	entry.Reference = sc.ID
	// The case first, then the record: a crash between leaves an open
	// objection whose record is not yet marked, which Reconcile marks at
	// start; never a disputed record without its objection.
	if err := s.cfg.Cases.PutCase(sc); err != nil {
		return nil, exchange.Errorf(exchange.CodeInternal, "the case could not be stored")
	}
	if kind == storage.CaseObjection {
		if err := s.markDisputed(rec, sc.ID, now); err != nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "the record could not be marked disputed; the objection is kept and will be")
		}
	}
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
	}
	return s.view(sc, today), nil
}

// repairDeadlineDays is how many working days a collector has to decide
// a repair request.
const repairDeadlineDays = 15

// markDisputed marks an active record disputed. A repaired record stays
// repaired (an objection must not show it to ordinary purposes again), an
// expired one out of display.
func (s *Service) markDisputed(rec credit.Record, caseID string, now time.Time) error {
	if rec.Status != credit.StatusActive {
		return nil
	}
	next := rec
	next.Version = rec.Version + 1
	next.Status = credit.StatusDisputed
	next.Reason = "objection " + caseID
	next.RecordedAt = now.UTC()
	if err := s.cfg.Cases.UpdateRecord(next); err != nil {
		return err
	}
	if s.cfg.Notify != nil {
		s.cfg.Notify()
	}
	return nil
}

// elsewhere is the refusal of a case whose id names another district: it
// names that district only if it is a registered one (an id is the
// caller's input).
func (s *Service) elsewhere(kind, district string) error {
	if reg, ok := s.cfg.Index.Region(district); ok && reg.Role == certs.District {
		return fault.New(fault.NotFound, "no such %s at this node: the id names a case kept at %s, decided on that district's node", kind, district)
	}
	return fault.New(fault.NotFound, "no such %s at this node", kind)
}

// Reconcile marks disputed the records of open objections that a crash
// left unmarked (a district calls it at start).
func (s *Service) Reconcile() error {
	if s.cfg.Self.Role != certs.District || s.cfg.Cases == nil {
		return nil
	}
	open, err := s.cfg.Cases.Cases(storage.CaseObjection, 1<<20, func(c storage.Case) bool { return c.State == storage.CaseOpen })
	if err != nil {
		return err
	}
	for _, c := range open {
		rec, err := s.cfg.Cases.Record(c.Department, c.Record)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		if rec.Status != credit.StatusActive {
			continue
		}
		if err := s.markDisputed(rec, c.ID, s.cfg.Now()); err != nil {
			return err
		}
		e := storage.AuditEntry{Role: string(certs.District), Operation: "objection.reconcile", Subject: c.Subject,
			District: s.cfg.Self.Region, Records: []string{c.Department + "/" + c.Record}, Reference: c.ID,
			Decision: storage.DecisionAllowed}
		if err := s.cfg.Audit.Record(e); err != nil {
			return err
		}
	}
	return nil
}

// article is "an" before a vowel, "a" otherwise.
func article(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}
