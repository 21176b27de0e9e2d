// Package lookup is the federated lookup: a coordinator pseudonymizes the
// subject, reads the index for the districts that hold something, asks
// them in parallel over the exchange and merges their answers; each
// district checks the request again and answers only what the purpose may
// see. Both ends register the lookup in their audit log before answering.
package lookup

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/storage"
)

// Op is served by districts: a coordinator node asks for the records of
// one subject that a purpose may see.
const Op = "lookup"

// request is Op's body. The purpose, end user, case reference and
// authorization travel in the exchange Meta.
type request struct {
	Subject   string           `cbor:"1,keyasint"` // canonical identifier
	Pseudonym credit.Pseudonym `cbor:"2,keyasint"`
	// Requester is the coordinator user the asking node vouches for (its
	// client certificate, verified by that node).
	Requester certs.Identity `cbor:"3,keyasint"`
}

type reply struct {
	Records []credit.Record `cbor:"1,keyasint"`
}

// Index is the coordinator's view of the replicated state (the node's
// Raft replica).
type Index interface {
	// Lookup returns the index entries of a pseudonym and the applied
	// index the read reflects; strong reads through the leader.
	Lookup(ctx context.Context, p credit.Pseudonym, strong bool) ([]consensus.IndexEntry, uint64, error)
	// Region returns a region of the registry.
	Region(path string) (consensus.Region, bool)
}

// Records is where a district finds a subject's records (storage.DB).
type Records interface {
	RecordsBySubject(subject string) ([]credit.Record, error)
}

// Config configures the lookup service of one node.
type Config struct {
	// Self is the node's identity.
	Self certs.Identity
	// Key is the pseudonym key (coordinators only).
	Key credit.PseudonymKey
	// Identifiers are the federation's identifier rules (test mode).
	Identifiers credit.ParseOptions
	Index       Index
	Endpoint    *exchange.Endpoint
	// Records are the district's records, and Resolve returns its
	// subjects' pseudonyms (its cache first), for its audit entries
	// (districts only).
	Records Records
	Resolve func(ctx context.Context, subjects []string) ([]credit.Pseudonym, error)
	// Catalog is the replicated catalog, nil before it has arrived.
	Catalog func() *credit.Catalog
	Audit   *audit.Recorder
	// Now is the node's clock (display periods, audit times); nil is
	// time.Now.
	Now func() time.Time
	// Timeout bounds a lookup across districts (default 5 s).
	Timeout    time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service is a node's lookup service.
type Service struct {
	cfg      Config
	log      *slog.Logger
	asked    *prometheus.CounterVec
	results  *prometheus.CounterVec
	answered *prometheus.CounterVec
}

// New returns the service; on a district it registers Op on the endpoint.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: cfg.Logger,
		asked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookups_total", Help: "Lookups asked of this coordinator, by decision.",
		}, []string{"decision"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookup_district_results_total", Help: "Per-district results of this coordinator's lookups, by status.",
		}, []string{"status"}),
		answered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookups_answered_total", Help: "Lookups this district answered for coordinators, by decision.",
		}, []string{"decision"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.asked, s.results, s.answered)
	}
	if cfg.Self.Role == certs.District && cfg.Endpoint != nil {
		cfg.Endpoint.Handle(Op, s.answer, exchange.AllowRoles(certs.Province, certs.City), exchange.MaxBody(64<<10))
	}
	return s
}

// Request is a lookup as a coordinator user asks it.
type Request struct {
	Subject       string
	Purpose       string
	User          string
	Reference     string
	Authorization string
	// Consistency is "local" (default) or "strong".
	Consistency string
}

// Answer is a lookup's merged answer.
type Answer struct {
	Pseudonym    credit.Pseudonym
	Consistency  string
	AppliedIndex uint64
	// Districts holds every district the index names, sorted by region.
	Districts []District
}

// District is one district's part of an answer.
type District struct {
	Region string
	Name   string
	Status exchange.Status
	// Records are what the purpose may see, each verified to be of this
	// district.
	Records []credit.Record
	// Error says why the status is not ok (built to be shown).
	Error string
}

// Lookup is a coordinator's federated lookup. Allowed or refused, it is in
// this node's audit log before the answer (or the refusal) is returned.
func (s *Service) Lookup(ctx context.Context, caller certs.Identity, in Request) (Answer, error) {
	entry := audit.By(caller, "lookup")
	entry.User, entry.Purpose, entry.Reference, entry.Authorization = in.User, in.Purpose, in.Reference, in.Authorization
	deny := func(e *fault.Error) (Answer, error) {
		entry.Decision, entry.Reason = storage.DecisionDenied, string(e.Kind)
		if err := s.cfg.Audit.Record(entry); err != nil {
			return Answer{}, err
		}
		s.asked.WithLabelValues("denied").Inc()
		return Answer{}, e
	}
	opt := s.cfg.Identifiers
	opt.Today = credit.TodayAt(s.cfg.Now())
	subject, serr := credit.ParseSubject(in.Subject, opt)
	key := s.cfg.Key
	if serr == nil && key.Valid() {
		entry.Subject = key.Pseudonym(subject.ID).String()
	}
	if !s.cfg.Self.Role.IsCoordinatorNode() || !key.Valid() {
		return deny(fault.New(fault.Forbidden, "lookups are served by coordinator nodes (province, city); this is a %s node", s.cfg.Self.Role))
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		return Answer{}, fault.New(fault.Unavailable, "this node has not received the federation's catalog yet")
	}
	if _, e := checkRequest(cat, caller, in.Purpose, in.User, in.Reference, in.Authorization); e != nil {
		return deny(e)
	}
	if !certs.InRegion(caller.Region, s.cfg.Self.Region) {
		return deny(fault.New(fault.Forbidden, "a coordinator of %s looks up through its own node, not the node of %s", caller.Region, s.cfg.Self.Region))
	}
	if serr != nil {
		var ie *credit.IdentifierError
		msg := "not a valid identifier"
		if errors.As(serr, &ie) {
			msg = ie.Message
		}
		return deny(fault.Field(fault.InvalidIdentifier, "subject", "%s", msg))
	}
	strong := false
	switch in.Consistency {
	case "", "local":
		in.Consistency = "local"
	case "strong":
		strong = true
	default:
		return deny(fault.Field(fault.BadRequest, "consistency", "must be local or strong"))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	p := key.Pseudonym(subject.ID)
	entries, applied, err := s.cfg.Index.Lookup(ctx, p, strong)
	switch {
	case errors.Is(err, consensus.ErrStale), errors.Is(err, context.DeadlineExceeded):
		return Answer{}, fault.Wrap(fault.DeadlineExceeded, err, "the strong read of the index did not complete before the lookup's deadline")
	case errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrClosed), errors.Is(err, consensus.ErrOutcomeUnknown):
		return Answer{}, fault.Wrap(fault.Unavailable, err, "a strong read needs the Raft leader, and none is known")
	case err != nil:
		return Answer{}, err
	}
	out := Answer{Pseudonym: p, Consistency: in.Consistency, AppliedIndex: applied}
	var peers []exchange.Peer
	var partOf []int
	for _, e := range entries {
		if !e.Holds() {
			continue
		}
		part := District{Region: e.District}
		reg, ok := s.cfg.Index.Region(e.District)
		part.Name = reg.Name
		if !ok || reg.Exchange == "" {
			part.Status, part.Error = exchange.StatusUnreachable, "district has no registered exchange address"
		} else {
			id := reg.Identity(s.cfg.Self.Federation)
			peers = append(peers, exchange.Peer{Name: reg.Path, Addr: reg.Exchange, Identity: &id})
			partOf = append(partOf, len(out.Districts))
		}
		out.Districts = append(out.Districts, part)
	}
	meta := exchange.Meta{Purpose: in.Purpose, User: in.User, Reference: in.Reference, Authorization: in.Authorization}
	req := request{Subject: subject.ID, Pseudonym: p, Requester: caller}
	results := s.cfg.Endpoint.FanOut(ctx, peers, Op, meta, req, func() any { return &reply{} })
	for i, res := range results {
		part := &out.Districts[partOf[i]]
		part.Status = res.Status
		if res.Err != nil {
			part.Error = wireMessage(res.Err)
			continue
		}
		recs := res.Resp.(*reply).Records
		if !ofDistrict(recs, part.Region) {
			// A district answers for its own records only; an answer that
			// names another is not shown, nor registered as seen.
			s.log.Warn("a district answered a lookup with records of another district; its answer is dropped", "district", part.Region)
			part.Status, part.Error = exchange.StatusError, "the district answered with records of another district"
			continue
		}
		part.Records = recs
		for _, rec := range recs {
			entry.Records = append(entry.Records, rec.District+"/"+rec.Department+"/"+rec.ID)
		}
	}
	for _, part := range out.Districts {
		s.results.WithLabelValues(string(part.Status)).Inc()
	}
	sort.Slice(out.Districts, func(i, j int) bool { return out.Districts[i].Region < out.Districts[j].Region })
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return Answer{}, err
	}
	s.asked.WithLabelValues("allowed").Inc()
	return out, nil
}

// ofDistrict reports whether every record names district as its own.
func ofDistrict(recs []credit.Record, district string) bool {
	for _, r := range recs {
		if r.District != district {
			return false
		}
	}
	return true
}

// checkRequest applies the rules every lookup must pass, at the asking node
// and again at each answering district: a known purpose that admits the
// requester's role, the subject's authorization where the purpose needs
// it, a named end user and a case reference.
func checkRequest(cat *credit.Catalog, requester certs.Identity, purpose, user, reference, authorization string) (credit.Purpose, *fault.Error) {
	if requester.Role != certs.Coordinator {
		return credit.Purpose{}, fault.New(fault.Forbidden, "lookups are made by coordinators, not by a %s certificate", requester.Role)
	}
	p, ok := cat.Purpose(purpose)
	switch {
	case purpose == "":
		return p, fault.Field(fault.BadRequest, "purpose", "required: every lookup names a purpose of the catalog")
	case !ok:
		return p, fault.Field(fault.Forbidden, "purpose", "purpose %q is not in catalog version %d", purpose, cat.Version)
	case p.SubjectOwn:
		return p, fault.Field(fault.Forbidden, "purpose", "purpose %q is the subject's own inquiry, made through a portal", purpose)
	case !p.Admits(string(requester.Role)):
		return p, fault.Field(fault.Forbidden, "purpose", "purpose %q may not be used by a %s", purpose, requester.Role)
	case strings.TrimSpace(user) == "":
		return p, fault.Field(fault.BadRequest, "user", "required: the end user who asks")
	case strings.TrimSpace(reference) == "":
		return p, fault.Field(fault.BadRequest, "reference", "required: the case reference the lookup serves")
	case p.AuthorizationRequired && strings.TrimSpace(authorization) == "":
		return p, fault.Field(fault.Forbidden, "authorization", "purpose %q requires the subject's authorization reference", purpose)
	}
	for _, f := range []struct{ name, v string }{{"user", user}, {"reference", reference}, {"authorization", authorization}} {
		if e := checkField(f.name, f.v); e != nil {
			return p, e
		}
	}
	return p, nil
}

// MaxFieldLength bounds the user, case reference and authorization of a
// lookup (they travel to every district and into every audit entry).
const MaxFieldLength = 256

// checkField refuses a stated field that is too long or not plain
// printable text, naming the field and never its value.
func checkField(name, v string) *fault.Error {
	if len(v) > MaxFieldLength {
		return fault.Field(fault.BadRequest, name, "must be at most %d bytes, got %d", MaxFieldLength, len(v))
	}
	if !utf8.ValidString(v) {
		return fault.Field(fault.BadRequest, name, "must be valid UTF-8")
	}
	for i, r := range v {
		if !unicode.IsPrint(r) {
			return fault.Field(fault.BadRequest, name, "must be printable text (U+%04X at byte %d)", r, i)
		}
	}
	return nil
}

// wireMessage is what an answer says about a district's error: the code
// and the peer's message, which exchange handlers build on purpose.
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

// answer is a district's side of a lookup: it checks the request again
// (the catalog is replicated, so both ends decide alike), audits, and
// returns only what the purpose may see today, by the node's clock.
func (s *Service) answer(ctx context.Context, req *exchange.Request) (any, error) {
	var in request
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "catalog not replicated yet")
	}
	m := req.Meta
	entry := storage.AuditEntry{Caller: req.Caller.String(), Role: string(in.Requester.Role), Institution: in.Requester.Institution,
		User: m.User, Operation: "lookup.answer", Purpose: m.Purpose, Reference: m.Reference, Authorization: m.Authorization,
		District: s.cfg.Self.Region}
	deny := func(code exchange.Code, msg string) (any, error) {
		entry.Decision, entry.Reason = storage.DecisionDenied, string(code)
		if err := s.cfg.Audit.Record(entry); err != nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
		}
		s.answered.WithLabelValues("denied").Inc()
		return nil, exchange.Errorf(code, "%s", msg)
	}
	now := s.cfg.Now()
	opt := s.cfg.Identifiers
	opt.Today = credit.TodayAt(now)
	subject, serr := credit.ParseSubject(in.Subject, opt)
	if serr == nil {
		// The entry names the subject by the pseudonym this district holds
		// for it, never by the one the caller sent: a caller could send
		// another and keep the lookup out of the subject's access log.
		own, err := s.cfg.Resolve(ctx, []string{subject.ID})
		if err != nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "the lookup cannot be registered now (no pseudonym for the audit); nothing was answered")
		}
		entry.Subject = own[0].String()
		if in.Pseudonym != own[0] {
			return deny(exchange.CodeBadRequest, "the pseudonym sent is not the subject's")
		}
	}
	if in.Requester.Federation != s.cfg.Self.Federation || !certs.InRegion(in.Requester.Region, req.Caller.Region) {
		return deny(exchange.CodeForbidden, "the requester is not a user of the asking node")
	}
	if _, e := checkRequest(cat, in.Requester, m.Purpose, m.User, m.Reference, m.Authorization); e != nil {
		code := exchange.CodeForbidden
		if e.Kind == fault.BadRequest {
			code = exchange.CodeBadRequest
		}
		return deny(code, e.Message)
	}
	if serr != nil {
		return deny(exchange.CodeBadRequest, "invalid subject identifier")
	}
	p, _ := cat.Purpose(m.Purpose)
	recs, err := s.cfg.Records.RecordsBySubject(subject.ID)
	if err != nil {
		return nil, exchange.Errorf(exchange.CodeInternal, "records unavailable")
	}
	today := credit.TodayAt(now)
	out := reply{Records: []credit.Record{}}
	for _, r := range recs {
		it, ok := cat.Item(r.CatalogItem)
		if ok && credit.IsDisplayable(r, it, today, p) {
			out.Records = append(out.Records, r)
			entry.Records = append(entry.Records, r.Department+"/"+r.ID)
		}
	}
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
	}
	s.answered.WithLabelValues("allowed").Inc()
	return out, nil
}
