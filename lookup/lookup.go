// Package lookup is the federated lookup: a coordinator pseudonymizes the
// subject, reads the index for the districts that hold something, asks
// them in parallel over the exchange and merges their answers; each
// district checks the request again and answers only what the purpose may
// see. Both ends register the lookup in their audit log before answering.
//
// A lookup goes to a district alone (Op) when nothing else waits for that
// district; lookups that arrive while its earlier requests are in flight
// go together (OpBatch, batch.go), each decided and registered at the
// district exactly as alone.
package lookup

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/keyring"
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
	// Pseudonyms are the subject's pseudonyms under every key version the
	// index may hold it under (a key rotation: keyring), Pseudonym among
	// them; a district may be at another version for a moment.
	Pseudonyms []credit.Pseudonym `cbor:"4,keyasint,omitempty"`
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
	// RecordsBySubjects reads the records of several subjects in one
	// transaction (a batch), with an error per subject and one for all.
	RecordsBySubjects(subjects []string) ([][]credit.Record, []error, error)
}

// Config configures the lookup service of one node.
type Config struct {
	// Self is the node's identity.
	Self certs.Identity
	// Key is the pseudonym key (coordinators only); Keys, if set, the key
	// versions (a key rotation: the lookup reads the index under every
	// live version), and then Key is not used.
	Key  credit.PseudonymKey
	Keys keyring.Ring
	// Identifiers are the federation's identifier rules (test mode).
	Identifiers credit.ParseOptions
	Index       Index
	Endpoint    *exchange.Endpoint
	// Records are the district's records, and Resolve returns its
	// subjects' pseudonyms (its cache first), for its audit entries
	// (districts only).
	Records Records
	Resolve func(ctx context.Context, subjects []string) ([]credit.Pseudonym, error)
	// Own, if set, returns the district's pseudonyms of one subject under
	// the current version first, then under the older versions it
	// published (pseudonym.Resolver.Own); nil uses Resolve alone.
	Own func(ctx context.Context, subject string) ([]credit.Pseudonym, error)
	// OwnAll, if set, is Own of several subjects at once (a batch:
	// pseudonym.Resolver.OwnAll); nil asks Own of each.
	OwnAll func(ctx context.Context, subjects []string) ([][]credit.Pseudonym, error)
	// Catalog is the replicated catalog, nil before it has arrived.
	Catalog func() *credit.Catalog
	Audit   *audit.Recorder
	// Quotas admits lookups against the querier quotas and notes them for
	// the anomaly flags (queriers.Tracker); nil for none.
	Quotas Quotas
	// Now is the node's clock (display periods, audit times); nil is
	// time.Now.
	Now func() time.Time
	// Timeout bounds a lookup across districts (default 5 s).
	Timeout    time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Quotas admits queries against the querier quotas and notes the ones
// that ran (queriers.Tracker behind an adapter).
type Quotas interface {
	Admit(institution, purpose string, n int) error
	Observe(institution, purpose, subject, reference string, batch int)
}

// QuotaKey is who a quota counts a query against: the requester's region
// and institution ("zhejiang/quzhou/kecheng/market-supervision"), or its
// region when it names none. Same-named institutions of two regions are
// two accounts, and a district cannot name one of another region's.
func QuotaKey(id certs.Identity) string {
	if id.Institution != "" {
		return id.Region + "/" + id.Institution
	}
	return id.Region
}

// Service is a node's lookup service.
type Service struct {
	cfg      Config
	log      *slog.Logger
	asked    *prometheus.CounterVec
	results  *prometheus.CounterVec
	answered *prometheus.CounterVec
	phantom  *prometheus.CounterVec
	forged   *prometheus.CounterVec
	batches  prometheus.Histogram
	// outcomes bounds the outcome entries being appended after their
	// lookup was answered (OperationRecords); at the bound the next one is
	// appended before its lookup is answered.
	outcomes chan struct{}
	// inflight counts them, for Wait.
	inflight sync.WaitGroup
	// batch sends the lookups to the districts (OpBatch).
	batch *batcher
}

// OperationRecords is the coordinator's audit entry of what a lookup
// returned (the ids of the records), written after the lookup's own entry
// ("lookup": who asked, why, about whom), which is durable before the
// answer is released. Each district's own entry of what it returned is
// durable before it answers, so this one need not hold the answer back.
const OperationRecords = "lookup.records"

// maxPendingOutcomes bounds the outcome entries appended in the background.
const maxPendingOutcomes = 512

// Wait returns once the outcome entries of the lookups answered so far are
// appended (tests, shutdown).
func (s *Service) Wait() { s.inflight.Wait() }

// New returns the service; on a district it registers Op and OpBatch on
// the endpoint.
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
	s := &Service{cfg: cfg, log: cfg.Logger, outcomes: make(chan struct{}, maxPendingOutcomes),
		asked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookups_total", Help: "Lookups asked of this node, by decision (a district refuses every lookup asked of it).",
		}, []string{"decision"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookup_district_results_total", Help: "Per-district results of this coordinator's lookups, by status.",
		}, []string{"status"}),
		answered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookups_answered_total", Help: "Lookups this district answered for coordinators, by decision.",
		}, []string{"decision"}),
		phantom: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookup_phantom_answers_total",
			Help: "Answers without records from a district the index says holds some, by district (region path): a district that plants index entries to be sent lookups shows here.",
		}, []string{"district"}),
		forged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookup_forged_answers_total",
			Help: "District answers dropped for holding records of another district or of another subject, by district (region path).",
		}, []string{"district"}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "credfed_lookup_district_request_lookups",
			Help:    "Lookups per request this coordinator sent to a district: 1 for a lookup alone, more for a batch (lookup.batch).",
			Buckets: []float64{1, 2, 4, 8, 16, 32},
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.asked, s.results, s.answered, s.phantom, s.forged, s.batches)
	}
	s.batch = newBatcher(s)
	if cfg.Self.Role == certs.District && cfg.Endpoint != nil {
		cfg.Endpoint.Handle(Op, s.answer, exchange.AllowRoles(certs.Province, certs.City), exchange.MaxBody(64<<10))
		cfg.Endpoint.Handle(OpBatch, s.answerBatch, exchange.AllowRoles(certs.Province, certs.City), exchange.MaxBody(maxBatchBody))
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
	// LookupID is the lookup's federation-wide id: in this node's audit
	// entry and in each answering district's, so that the subject's access
	// log shows the lookup once.
	LookupID     string
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
// this node's audit log before the answer (or the refusal) is returned; the
// entry keeps only the stated fields that pass validation (StatedFields).
//
// Two kinds of district answers are noted in the audit log with the
// lookup's entry and counted by district: forged ones (records of another
// district or of another subject), which are dropped, and phantom ones (no
// records from a district whose index entry says it holds some). A
// district can plant index entries for subjects it holds nothing of, to be
// sent their lookups; that cannot be told in advance, but every lookup it
// draws that way is a phantom answer.
func (s *Service) Lookup(ctx context.Context, caller certs.Identity, in Request) (Answer, error) {
	entry := audit.By(caller, "lookup")
	entry.LookupID = exchange.NewID("lk")
	cat := s.cfg.Catalog()
	entry.Purpose, entry.User, entry.Reference, entry.Authorization = StatedFields(cat, in.Purpose, in.User, in.Reference, in.Authorization)
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
	ring := keyring.Or(s.cfg.Keys, s.cfg.Key)
	if serr == nil && ring != nil {
		entry.Subject = ring.Pseudonym(subject.ID).String()
	}
	if !s.cfg.Self.Role.IsCoordinatorNode() || ring == nil {
		return deny(fault.New(fault.Forbidden, "lookups are served by coordinator nodes (province, city); this is a %s node", s.cfg.Self.Role))
	}
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
	if s.cfg.Quotas != nil {
		if err := s.cfg.Quotas.Admit(QuotaKey(caller), in.Purpose, 1); err != nil {
			if fe := fault.As(err); fe != nil {
				return deny(fe)
			}
			return Answer{}, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	p := ring.Pseudonym(subject.ID)
	live, entries, applied, err := keyring.Read(ctx, s.cfg.Index.Lookup, ring, subject.ID, strong)
	switch {
	case errors.Is(err, consensus.ErrStale), errors.Is(err, context.DeadlineExceeded):
		return Answer{}, fault.Wrap(fault.DeadlineExceeded, err, "the strong read of the index did not complete before the lookup's deadline")
	case errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrClosed), errors.Is(err, consensus.ErrOutcomeUnknown):
		return Answer{}, fault.Wrap(fault.Unavailable, err, "a strong read needs the Raft leader, and none is known")
	case err != nil:
		return Answer{}, err
	}
	out := Answer{LookupID: entry.LookupID, Pseudonym: p, Consistency: in.Consistency, AppliedIndex: applied}
	var peers []exchange.Peer
	var partOf []int
	var idOf []certs.Identity
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
			idOf = append(idOf, id)
		}
		out.Districts = append(out.Districts, part)
	}
	meta := exchange.Meta{Purpose: in.Purpose, User: in.User, Reference: in.Reference, Authorization: in.Authorization, LookupID: entry.LookupID}
	req := request{Subject: subject.ID, Pseudonym: p, Requester: caller, Pseudonyms: live}
	// The lookup's entry is made durable while the districts answer: the
	// answer waits for both, not for one after the other.
	asked := entry
	asked.Decision = storage.DecisionAllowed
	durable := make(chan error, 1)
	go func() { durable <- s.cfg.Audit.Record(asked) }()
	results := s.batch.fanOut(ctx, peers, meta, req)
	var notes []storage.AuditEntry
	note := func(i int, operation, decision, reason string) {
		n := entry
		n.Caller, n.Role, n.Institution, n.Operation, n.District = idOf[i].String(), string(certs.District), "", operation, out.Districts[partOf[i]].Region
		n.Records, n.Decision, n.Reason = nil, decision, reason
		notes = append(notes, n)
	}
	for i, res := range results {
		part := &out.Districts[partOf[i]]
		part.Status = res.Status
		if res.Err != nil {
			part.Error = exchange.WireMessage(res.Err)
			continue
		}
		recs := res.Resp.(*reply).Records
		if why := foreign(recs, part.Region, subject.ID); why != "" {
			// A district answers for its own records of the subject only;
			// an answer holding others is not shown, nor registered as
			// seen.
			s.log.Warn("a district answered a lookup with records of "+why+"; its answer is dropped", "district", part.Region)
			s.forged.WithLabelValues(part.Region).Inc()
			note(i, "lookup.forged_answer", storage.DecisionDenied, "forged_answer")
			part.Status, part.Error = exchange.StatusError, "the district answered with records of "+why
			continue
		}
		if len(recs) == 0 {
			// The index says this district holds something: either the
			// purpose may see none of it (or it expired since the entry
			// was written), or the entry was planted to draw lookups.
			s.log.Info("a district the index names answered a lookup with no records (phantom answer)", "district", part.Region)
			s.phantom.WithLabelValues(part.Region).Inc()
			note(i, "lookup.phantom_answer", storage.DecisionAllowed, "")
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
	if err := <-durable; err != nil {
		return Answer{}, err // not registered: not answered
	}
	entry.Decision, entry.Operation = storage.DecisionAllowed, OperationRecords
	if err := s.recordOutcome(entry, notes); err != nil {
		return Answer{}, err
	}
	if s.cfg.Quotas != nil {
		s.cfg.Quotas.Observe(QuotaKey(caller), in.Purpose, entry.Subject, in.Reference, 1)
	}
	s.asked.WithLabelValues("allowed").Inc()
	return out, nil
}

// foreign says what is wrong with an answer holding records of another
// district than the one asked, or of another subject than the one looked
// up ("" when nothing is).
func foreign(recs []credit.Record, district, subject string) string {
	for _, r := range recs {
		switch {
		case r.District != district:
			return "another district"
		case r.Subject != subject:
			return "another subject"
		}
	}
	return ""
}

// StatedFields returns what an audit entry keeps of a lookup's stated
// purpose, user, case reference and authorization: each as given when it
// passes validation (a purpose: when it is in the catalog), empty when
// not, so that a refused lookup's entry holds nothing the edge refused —
// an unknown purpose may be anything, an identifier too.
func StatedFields(cat *credit.Catalog, purpose, user, reference, authorization string) (string, string, string, string) {
	keep := func(name, v string) string {
		if CheckField(name, v) != nil {
			return ""
		}
		return v
	}
	if cat == nil {
		purpose = ""
	} else if _, ok := cat.Purpose(purpose); !ok {
		purpose = ""
	}
	return purpose, keep("user", user), keep("reference", reference), keep("authorization", authorization)
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
		// Never the purpose given: it may be anything, an identifier too.
		return p, fault.Field(fault.Forbidden, "purpose", "the purpose is not in catalog version %d (GET /v1/catalog lists the purposes)", cat.Version)
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
		if e := CheckField(f.name, f.v); e != nil {
			return p, e
		}
	}
	return p, nil
}

// MaxFieldLength bounds the user, case reference and authorization of a
// lookup (they travel to every district and into every audit entry).
const MaxFieldLength = 256

// CheckField refuses a stated field that is too long or not plain
// printable text, naming the field and never its value.
func CheckField(name, v string) *fault.Error {
	if len(v) > MaxFieldLength {
		return fault.Field(fault.BadRequest, name, "must be at most %d bytes, got %d", MaxFieldLength, len(v))
	}
	if !utf8.ValidString(v) {
		return fault.Field(fault.BadRequest, name, "must be valid UTF-8")
	}
	pos := 0
	for _, r := range v {
		pos++
		if !credit.TextRune(r) {
			return fault.Field(fault.BadRequest, name, "must be printable text: character %d is U+%04X, a control, format or invisible character", pos, r)
		}
	}
	return nil
}

// answer is a district's side of one lookup (Op): decide, register,
// answer.
func (s *Service) answer(ctx context.Context, req *exchange.Request) (any, error) {
	var in request
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "catalog not replicated yet")
	}
	now := s.cfg.Now()
	subject, serr := s.parseSubject(in.Subject, now)
	var recs []credit.Record
	var rerr error
	if serr == nil {
		recs, rerr = s.cfg.Records.RecordsBySubject(subject)
	}
	d := s.decide(ctx, req.Caller, cat, in, req.Meta, now, subject, serr, recs, rerr, nil)
	if d.entry.Operation != "" {
		if err := s.cfg.Audit.Record(d.entry); err != nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
		}
		s.countAnswer(d)
	}
	if d.err != nil {
		return nil, d.err
	}
	return d.out, nil
}

// decision is a district's answer to one lookup before it is registered:
// the audit entry to append (none when entry.Operation is empty: a
// failure that answers nothing), and either the records or the error.
type decision struct {
	entry storage.AuditEntry
	out   reply
	err   *exchange.Error
}

func (s *Service) countAnswer(d decision) {
	if d.entry.Decision == storage.DecisionDenied {
		s.answered.WithLabelValues("denied").Inc()
	} else {
		s.answered.WithLabelValues("allowed").Inc()
	}
}

// parseSubject parses a subject identifier sent by a coordinator, by the
// rules of the day at now.
func (s *Service) parseSubject(id string, now time.Time) (string, error) {
	opt := s.cfg.Identifiers
	opt.Today = credit.TodayAt(now)
	subject, err := credit.ParseSubject(id, opt)
	return subject.ID, err
}

// decide is the district's side of one lookup, given the subject's
// records (recs, or the error reading them, rerr) when the subject
// identifier parsed (serr nil), and the district's pseudonyms of the
// subject if already resolved (own; nil resolves them here): it checks the request again (the catalog
// is replicated, so both ends decide alike) and keeps only what the
// purpose may see today, by the node's clock.
//
// The entry names the subject by the pseudonym this district holds for it
// when it holds records of the subject (resolved, from its cache first),
// never by the one the caller sent: a caller could send another and keep
// the lookup out of the subject's access log. Of a subject it holds
// nothing of, it resolves nothing and the entry names the pseudonym sent:
// a lookup sent to it must not make it ask a coordinator for a pseudonym,
// which custody would count against the district.
func (s *Service) decide(ctx context.Context, caller certs.Identity, cat *credit.Catalog, in request, m exchange.Meta, now time.Time,
	subject string, serr error, recs []credit.Record, rerr error, own []credit.Pseudonym) decision {
	entry := storage.AuditEntry{Caller: caller.String(), Role: string(in.Requester.Role), Institution: in.Requester.Institution,
		Operation: "lookup.answer", District: s.cfg.Self.Region, Requester: in.Requester.String()}
	if exchange.ValidID("lk", m.LookupID) {
		entry.LookupID = m.LookupID
	}
	entry.Purpose, entry.User, entry.Reference, entry.Authorization = StatedFields(cat, m.Purpose, m.User, m.Reference, m.Authorization)
	deny := func(code exchange.Code, msg string) decision {
		entry.Decision, entry.Reason = storage.DecisionDenied, string(code)
		return decision{entry: entry, err: exchange.Errorf(code, "%s", msg)}
	}
	fail := func(code exchange.Code, msg string) decision {
		return decision{err: exchange.Errorf(code, "%s", msg)}
	}
	if serr == nil {
		switch {
		case rerr != nil:
			return fail(exchange.CodeInternal, "records unavailable")
		case len(recs) > 0:
			var err error
			if own == nil {
				own, err = s.own(ctx, subject)
			}
			if err != nil || len(own) == 0 {
				return fail(exchange.CodeUnavailable, "the lookup cannot be registered now (no pseudonym for the audit); nothing was answered")
			}
			entry.Subject = own[0].String()
			if !keyring.Matches(keyring.All(in.Pseudonym, in.Pseudonyms), own) {
				return deny(exchange.CodeBadRequest, "the pseudonym sent is not the subject's")
			}
		case !in.Pseudonym.IsZero():
			entry.Subject = in.Pseudonym.String()
		}
	}
	if in.Requester.Federation != s.cfg.Self.Federation || !certs.InRegion(in.Requester.Region, caller.Region) {
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
	return decision{entry: entry, out: out}
}

// recordOutcome appends what a lookup returned. An anomaly (a forged or
// phantom answer) is appended before the answer is released, like the
// lookup's own entry; a plain outcome in the background, within
// maxPendingOutcomes (beyond it, before the answer too). A lookup that
// returned nothing has no outcome entry.
func (s *Service) recordOutcome(e storage.AuditEntry, notes []storage.AuditEntry) error {
	switch {
	case len(notes) > 0 && len(e.Records) == 0:
		return s.cfg.Audit.Record(notes[0], notes[1:]...)
	case len(notes) > 0:
		return s.cfg.Audit.Record(e, notes...)
	case len(e.Records) == 0:
		return nil
	}
	select {
	case s.outcomes <- struct{}{}:
	default:
		return s.cfg.Audit.Record(e)
	}
	s.inflight.Add(1)
	go func() {
		defer s.inflight.Done()
		defer func() { <-s.outcomes }()
		// Deferred: nothing waits on it, so it may share the next
		// lookup's commit instead of paying a sync of its own.
		if err := s.cfg.Audit.RecordDeferred(e); err != nil {
			s.log.Error("the outcome entry of an answered lookup could not be written; the districts' entries hold what they returned",
				"lookup_id", e.LookupID)
		}
	}()
	return nil
}

// own returns a district's pseudonyms of a subject it holds records of:
// the current version's first (what its audit entry names), then those it
// published under older versions.
func (s *Service) own(ctx context.Context, subject string) ([]credit.Pseudonym, error) {
	if s.cfg.Own != nil {
		return s.cfg.Own(ctx, subject)
	}
	ps, err := s.cfg.Resolve(ctx, []string{subject})
	if err == nil && len(ps) != 1 {
		return nil, errors.New("lookup: no pseudonym resolved")
	}
	return ps, err
}
