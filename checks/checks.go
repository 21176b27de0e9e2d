// Package checks is the check before a decision (应查必查): a coordinator
// finds the districts whose index entries hold a list flag or a negative
// record, asks them for what the scenario's purpose may see, and answers
// the lists, the measures that follow with their legal basis and the
// three-years-clean result; departments check through their district,
// which forwards to its city, and batches run as resumable jobs.
package checks

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"credfed/api"
	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/internal/keyrate"
	"credfed/keyring"
	"credfed/lookup"
	"credfed/storage"
)

const (
	// Op is served by districts: a coordinator node asks for what a
	// check's purpose may see of one or more subjects.
	Op = "check"
	// OpForward is served by coordinators: a district forwards the check
	// of one of its departments.
	OpForward = "check.forward"
	// MaxSubjectsPerCall bounds the subjects of one Op request.
	MaxSubjectsPerCall = 1000
	// MaxRecordsPerSubject bounds the records a district sends of one
	// subject in a check (the most recent decisions first).
	MaxRecordsPerSubject = 64
)

// subjectQuery is one subject of an Op request, with the case reference,
// authorization and check id of its own row.
type subjectQuery struct {
	Subject       string           `cbor:"1,keyasint"`
	Pseudonym     credit.Pseudonym `cbor:"2,keyasint"`
	Reference     string           `cbor:"3,keyasint,omitempty"`
	Authorization string           `cbor:"4,keyasint,omitempty"`
	CheckID       string           `cbor:"5,keyasint,omitempty"`
	// Pseudonyms are the subject's pseudonyms under every key version the
	// index may hold it under (a key rotation), Pseudonym among them.
	Pseudonyms []credit.Pseudonym `cbor:"6,keyasint,omitempty"`
}

// districtRequest is Op's body; the purpose and the end user travel in
// the exchange Meta.
type districtRequest struct {
	// Requester is the user the asking node vouches for: one of its
	// coordinators, or a department of a district below it whose check
	// the district forwarded.
	Requester certs.Identity `cbor:"1,keyasint"`
	Scenario  string         `cbor:"2,keyasint"`
	Subjects  []subjectQuery `cbor:"3,keyasint"`
	// Classify marks a classification: no scenario, the purpose in Meta.
	Classify bool `cbor:"4,keyasint,omitempty"`
}

// subjectAnswer is a district's answer for one subject: the records the
// purpose may see, or why the subject was refused.
type subjectAnswer struct {
	Records []credit.Record `cbor:"1,keyasint"`
	Code    exchange.Code   `cbor:"2,keyasint,omitempty"`
	Error   string          `cbor:"3,keyasint,omitempty"`
}

type districtReply struct {
	Answers []subjectAnswer `cbor:"1,keyasint"`
}

// forwardRequest is OpForward's body.
type forwardRequest struct {
	Requester certs.Identity   `cbor:"1,keyasint"`
	Check     api.CheckRequest `cbor:"2,keyasint"`
	// Classification is a portal's request for a subject's own
	// classification (then Check is empty).
	Classification *api.ClassificationRequest `cbor:"3,keyasint,omitempty"`
}

// Index is the coordinator's view of the replicated state.
type Index interface {
	Lookup(ctx context.Context, p credit.Pseudonym, strong bool) ([]consensus.IndexEntry, uint64, error)
	Region(path string) (consensus.Region, bool)
	Regions() []consensus.Region
}

// Records is where a district finds a subject's records (storage.DB).
type Records interface {
	RecordsBySubject(subject string) ([]credit.Record, error)
}

// Quotas admits queries against the querier quotas and notes them for
// the anomaly flags (as for lookups).
type Quotas = lookup.Quotas

// Config configures the check service of one node.
type Config struct {
	Self certs.Identity
	Key  credit.PseudonymKey // coordinators only
	// Keys, if set, are the key versions (a key rotation: checks read the
	// index under every live version); Key is then not used.
	Keys        keyring.Ring
	Identifiers credit.ParseOptions
	Index       Index
	Endpoint    *exchange.Endpoint
	// Records and Resolve (its subjects' pseudonyms, its cache first) are a
	// district's.
	Records Records
	Resolve func(ctx context.Context, subjects []string) ([]credit.Pseudonym, error)
	// Own, if set, returns a district's pseudonyms of a subject under the
	// current version first, then the older versions it published under
	// (pseudonym.Resolver.Own), to recognise a coordinator at another
	// version during a key rotation.
	Own     func(ctx context.Context, subject string) ([]credit.Pseudonym, error)
	Catalog func() *credit.Catalog
	Audit   *audit.Recorder
	// Quotas, nil for none.
	Quotas Quotas
	// Batches keeps batch jobs (coordinators; storage.DB).
	Batches BatchStore
	// ChunkRows is how many rows of a batch are checked, audited and kept
	// at a time (default DefaultChunkRows).
	ChunkRows int
	// Now is the node's clock; nil is time.Now.
	Now func() time.Time
	// Timeout bounds one check across districts (default 5 s).
	Timeout time.Duration
	// ForwardRate bounds the checks a district node forwards per second
	// (default 100, burst twice that).
	ForwardRate rate.Limit
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
}

// Service is a node's check service.
type Service struct {
	cfg      Config
	log      *slog.Logger
	nodes    *keyrate.Limiters[string]
	portals  *keyrate.Limiters[string] // a portal's own classifications
	checks   *prometheus.CounterVec
	answered *prometheus.CounterVec
	rows     *prometheus.CounterVec
	batch    *batchRunner
}

// New returns the service and registers its exchange operations.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.ChunkRows <= 0 {
		cfg.ChunkRows = DefaultChunkRows
	}
	if cfg.ForwardRate <= 0 {
		cfg.ForwardRate = 100
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: cfg.Logger,
		nodes:   keyrate.New[string](cfg.ForwardRate, int(2*cfg.ForwardRate), 4096),
		portals: keyrate.New[string](1, 5, 4096),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_checks_total", Help: "Checks asked of this node, by decision.",
		}, []string{"decision"}),
		answered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_checks_answered_total", Help: "Subjects of checks this district answered for coordinators, by decision.",
		}, []string{"decision"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_check_batch_rows_total", Help: "Rows of batch checks this coordinator checked, by status.",
		}, []string{"status"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.checks, s.answered, s.rows)
	}
	if cfg.Endpoint != nil {
		switch {
		case cfg.Self.Role == certs.District:
			cfg.Endpoint.Handle(Op, s.answer, exchange.AllowRoles(certs.Province, certs.City), exchange.MaxBody(MaxSubjectsPerCall*1<<10))
		case cfg.Self.Role.IsCoordinatorNode():
			cfg.Endpoint.Handle(OpForward, s.serveForward, exchange.AllowRoles(certs.District), exchange.MaxBody(16<<10))
		}
	}
	if cfg.Self.Role.IsCoordinatorNode() && cfg.Batches != nil {
		s.batch = newBatchRunner(s)
	}
	return s
}

// Check runs a check for the caller: at a coordinator node for one of its
// coordinators, at a district node for one of its departments (forwarded
// to the district's coordinators). Allowed or refused, it is audited at
// this node before it returns; a restriction is an answer, not an error.
func (s *Service) Check(ctx context.Context, caller certs.Identity, in api.CheckRequest) (api.CheckAnswer, error) {
	if s.cfg.Self.Role == certs.District {
		return s.forward(ctx, caller, in)
	}
	if caller.Role == certs.Department {
		entry := audit.By(caller, "check")
		return api.CheckAnswer{}, s.refuse(&entry, fault.New(fault.Forbidden, "a department checks through its own district's node, which forwards the check to its city"))
	}
	if !certs.InRegion(caller.Region, s.cfg.Self.Region) {
		entry := audit.By(caller, "check")
		return api.CheckAnswer{}, s.refuse(&entry, fault.New(fault.Forbidden, "a coordinator of %s checks through its own node, not the node of %s", caller.Region, s.cfg.Self.Region))
	}
	return s.run(ctx, caller, nil, in)
}

// refuse audits a refused check and returns its refusal.
func (s *Service) refuse(entry *storage.AuditEntry, e error) error {
	entry.Decision, entry.Reason = storage.DecisionDenied, string(fault.KindOf(e))
	if err := s.cfg.Audit.Record(*entry); err != nil {
		return err
	}
	s.checks.WithLabelValues("denied").Inc()
	return e
}

// plan is what a check needs of the catalog: the scenario and its purpose.
type plan struct {
	cat      *credit.Catalog
	scenario credit.Scenario
	purpose  credit.Purpose
	// own marks a subject's own classification (no reference, no
	// authorization: the portal authenticated the person).
	own bool
}

// planFor finds the scenario and checks the requester's stated fields
// against it: the purpose (when given) must be the scenario's, admit the
// requester's role, and have its end user; the row fields are checked by
// checkRow.
func planFor(cat *credit.Catalog, requester certs.Identity, scenario, purpose, user string) (plan, *fault.Error) {
	pl := plan{cat: cat}
	sc, ok := cat.Scenario(scenario)
	switch {
	case scenario == "":
		return pl, fault.Field(fault.BadRequest, "scenario", "required: the scenario of the decision (GET /v1/catalog lists them)")
	case !ok:
		return pl, fault.Field(fault.BadRequest, "scenario", "not a scenario of catalog version %d (GET /v1/catalog lists them)", cat.Version)
	}
	pl.scenario = sc
	if purpose != "" && purpose != sc.Purpose {
		return pl, fault.Field(fault.BadRequest, "purpose", "a check in scenario %s runs under purpose %s", sc.Code, sc.Purpose)
	}
	p, ok := cat.Purpose(sc.Purpose)
	if !ok {
		return pl, fault.Field(fault.Internal, "scenario", "scenario %s names a purpose the catalog lacks", sc.Code)
	}
	pl.purpose = p
	switch {
	case requester.Role != certs.Coordinator && requester.Role != certs.Department:
		return pl, fault.New(fault.Forbidden, "checks are made by coordinators and departments, not with %s %s certificate", article(string(requester.Role)), requester.Role)
	case !p.Admits(string(requester.Role)):
		return pl, fault.Field(fault.Forbidden, "scenario", "the purpose of scenario %s (%s) may not be used by a %s", sc.Code, p.Code, requester.Role)
	case strings.TrimSpace(user) == "":
		return pl, fault.Field(fault.BadRequest, "user", "required: the end user who asks")
	}
	if e := lookup.CheckField("user", user); e != nil {
		return pl, e
	}
	return pl, nil
}

// checkRow checks one subject's case reference and authorization.
func (pl plan) checkRow(reference, authorization string) *fault.Error {
	if pl.own {
		return nil
	}
	switch {
	case strings.TrimSpace(reference) == "":
		return fault.Field(fault.BadRequest, "reference", "required: the case reference the check serves")
	case pl.purpose.AuthorizationRequired && strings.TrimSpace(authorization) == "":
		return fault.Field(fault.Forbidden, "authorization", "purpose %q requires the subject's authorization reference", pl.purpose.Code)
	}
	for _, f := range []struct{ name, v string }{{"reference", reference}, {"authorization", authorization}} {
		if e := lookup.CheckField(f.name, f.v); e != nil {
			return e
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

// institutionOf is who a quota counts a query against.
func institutionOf(id certs.Identity) string { return lookup.QuotaKey(id) }

// run is a check at a coordinator node, for a requester it vouches for
// (via nil) or that the district via forwarded.
func (s *Service) run(ctx context.Context, requester certs.Identity, via *certs.Identity, in api.CheckRequest) (api.CheckAnswer, error) {
	entry := audit.By(requester, "check")
	if via != nil {
		entry.Caller, entry.Requester = via.String(), requester.String()
	}
	entry.LookupID = exchange.NewID("lk")
	cat := s.cfg.Catalog()
	entry.Purpose, entry.User, entry.Reference, entry.Authorization = lookup.StatedFields(cat, in.Purpose, in.User, in.Reference, in.Authorization)
	key := s.ring()
	if !s.cfg.Self.Role.IsCoordinatorNode() || key == nil {
		return api.CheckAnswer{}, s.refuse(&entry, fault.New(fault.Forbidden, "checks are run by coordinator nodes (province, city); this is a %s node", s.cfg.Self.Role))
	}
	if cat == nil {
		return api.CheckAnswer{}, fault.New(fault.Unavailable, "this node has not received the federation's catalog yet")
	}
	pl, e := planFor(cat, requester, in.Scenario, in.Purpose, in.User)
	if e == nil {
		entry.Purpose = pl.purpose.Code
		e = pl.checkRow(in.Reference, in.Authorization)
	}
	if e != nil {
		return api.CheckAnswer{}, s.refuse(&entry, e)
	}
	sub, e := s.parse(in.Subject)
	if sub.ID != "" {
		entry.Subject = key.Pseudonym(sub.ID).String()
	}
	if e != nil {
		return api.CheckAnswer{}, s.refuse(&entry, e)
	}
	strong := false
	switch in.Consistency {
	case "", "local":
		in.Consistency = "local"
	case "strong":
		strong = true
	default:
		return api.CheckAnswer{}, s.refuse(&entry, fault.Field(fault.BadRequest, "consistency", "must be local or strong"))
	}
	if s.cfg.Quotas != nil {
		if err := s.cfg.Quotas.Admit(institutionOf(requester), pl.purpose.Code, 1); err != nil {
			return api.CheckAnswer{}, s.refuse(&entry, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	p := key.Pseudonym(sub.ID)
	live, entries, applied, err := keyring.Read(ctx, s.cfg.Index.Lookup, key, sub.ID, strong)
	if err != nil {
		return api.CheckAnswer{}, indexFault(err)
	}
	row := &pending{query: subjectQuery{Subject: sub.ID, Pseudonym: p, Reference: in.Reference, Authorization: in.Authorization, CheckID: entry.LookupID,
		Pseudonyms: live}}
	row.route(entries, s.cfg.Index, s.cfg.Self.Federation)
	s.ask(ctx, requester, pl, in.User, []*pending{row})
	out := row.assemble(pl, credit.TodayAt(s.cfg.Now()))
	out.CheckID, out.Reference, out.SubjectPseudonym = entry.LookupID, in.Reference, p.String()
	out.Index = api.LookupIndex{Consistency: in.Consistency, AppliedIndex: applied}
	entry.Decision, entry.Records = storage.DecisionAllowed, row.refs()
	if err := s.cfg.Audit.Record(entry, row.notes(entry)...); err != nil {
		return api.CheckAnswer{}, err
	}
	if s.cfg.Quotas != nil {
		s.cfg.Quotas.Observe(institutionOf(requester), pl.purpose.Code, entry.Subject, in.Reference, 1)
	}
	s.checks.WithLabelValues("allowed").Inc()
	return out, nil
}

// parse reads a subject's identifier, refusing it with the check-character
// message and never the identifier.
func (s *Service) parse(subject string) (credit.Subject, *fault.Error) {
	opt := s.cfg.Identifiers
	opt.Today = credit.TodayAt(s.cfg.Now())
	sub, err := credit.ParseSubject(subject, opt)
	if err != nil {
		var ie *credit.IdentifierError
		msg := "not a valid identifier"
		if errors.As(err, &ie) {
			msg = ie.Message
		}
		return credit.Subject{}, fault.Field(fault.InvalidIdentifier, "subject", "%s", msg)
	}
	return sub, nil
}

func indexFault(err error) error {
	switch {
	case errors.Is(err, consensus.ErrStale), errors.Is(err, context.DeadlineExceeded):
		return fault.Wrap(fault.DeadlineExceeded, err, "the strong read of the index did not complete before the check's deadline")
	case errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrClosed), errors.Is(err, consensus.ErrOutcomeUnknown):
		return fault.Wrap(fault.Unavailable, err, "a strong read needs the Raft leader, and none is known")
	}
	return err
}

// pending is one subject of a check on its way: the districts its index
// entries send it to, and what each answered.
type pending struct {
	query subjectQuery
	parts []part
}

type part struct {
	region, name string
	peer         *exchange.Peer // nil: no exchange address
	id           certs.Identity
	summary      credit.IndexSummary
	status       exchange.Status
	err          string
	records      []credit.Record
	phantom      bool
}

// needed reports whether a check must ask the district of an index entry:
// it may put the subject on a list, or hold a bad record that the
// three-years-clean condition must see.
func needed(e consensus.IndexEntry) bool {
	s := e.Summary
	return e.Holds() && (s.OnRedList || s.OnDishonestyList || s.Negative > 0 || s.HasDisputed)
}

// consensusEntry is an index entry.
type consensusEntry = consensus.IndexEntry

// route picks the districts a check asks from the subject's index
// entries (needed).
func (r *pending) route(entries []consensus.IndexEntry, idx Index, federation string) {
	var asked []consensus.IndexEntry
	for _, e := range entries {
		if needed(e) {
			asked = append(asked, e)
		}
	}
	r.routeAll(asked, idx, federation)
}

// routeAll asks the district of every entry.
func (r *pending) routeAll(entries []consensus.IndexEntry, idx Index, federation string) {
	for _, e := range entries {
		pt := part{region: e.District, summary: e.Summary}
		reg, ok := idx.Region(e.District)
		pt.name = reg.Name
		if !ok || reg.Exchange == "" {
			pt.status, pt.err = exchange.StatusUnreachable, "district has no registered exchange address"
		} else {
			pt.id = reg.Identity(federation)
			pt.peer = &exchange.Peer{Name: reg.Path, Addr: reg.Exchange, Identity: &pt.id}
		}
		r.parts = append(r.parts, pt)
	}
	slices.SortFunc(r.parts, func(a, b part) int { return strings.Compare(a.region, b.region) })
}

// ask sends the rows' subjects to their districts, each district getting
// its subjects in calls of at most MaxSubjectsPerCall, the districts in
// parallel.
func (s *Service) ask(ctx context.Context, requester certs.Identity, pl plan, user string, rows []*pending, authentication ...string) {
	byDistrict := map[string][]slot{}
	var order []string
	peers := map[string]exchange.Peer{}
	for _, r := range rows {
		for i, pt := range r.parts {
			if pt.peer == nil {
				continue
			}
			if _, ok := byDistrict[pt.region]; !ok {
				order = append(order, pt.region)
				peers[pt.region] = *pt.peer
			}
			byDistrict[pt.region] = append(byDistrict[pt.region], slot{r, i})
		}
	}
	meta := exchange.Meta{Purpose: pl.purpose.Code, User: user}
	if len(authentication) > 0 {
		meta.Authentication = authentication[0]
	}
	// Calls of at most MaxSubjectsPerCall subjects and about
	// recordsPerCall records (the index entries count them), so that an
	// answer stays well inside the exchange's frame; at most
	// callsPerDistrict of them in flight to each district.
	var wg sync.WaitGroup
	for _, d := range order {
		sem := make(chan struct{}, callsPerDistrict)
		slots := byDistrict[d]
		for len(slots) > 0 {
			n, recs := 0, 0
			for n < len(slots) && n < MaxSubjectsPerCall && (n == 0 || recs < recordsPerCall) {
				recs += slots[n].row.parts[slots[n].part].summary.Records()
				n++
			}
			call := slots[:n]
			slots = slots[n:]
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				s.call(ctx, peers[d], requester, pl, meta, call)
			})
		}
	}
	wg.Wait()
}

// callsPerDistrict bounds the calls of one check (or batch chunk) in
// flight to one district; recordsPerCall is the records one call is sized
// for (a few hundred bytes each: about 2 MiB).
const (
	callsPerDistrict = 4
	recordsPerCall   = 4000
)

// slot is one subject's part at one district.
type slot struct {
	row  *pending
	part int
}

// call asks one district for the subjects of call and fills their parts.
func (s *Service) call(ctx context.Context, peer exchange.Peer, requester certs.Identity, pl plan, meta exchange.Meta, call []slot) {
	n := len(call)
	req := districtRequest{Requester: requester, Scenario: pl.scenario.Code, Subjects: make([]subjectQuery, n), Classify: pl.scenario.Code == ""}
	for i, sl := range call {
		req.Subjects[i] = sl.row.query
	}
	m := meta
	if n == 1 {
		m.Reference, m.Authorization, m.LookupID = req.Subjects[0].Reference, req.Subjects[0].Authorization, req.Subjects[0].CheckID
	}
	var rep districtReply
	err := s.cfg.Endpoint.Call(ctx, peer, Op, m, req, &rep)
	if err == nil && len(rep.Answers) != n {
		err = exchange.Errorf(exchange.CodeInternal, "the district answered %d subjects of %d", len(rep.Answers), n)
	}
	for i, sl := range call {
		pt := &sl.row.parts[sl.part]
		if err != nil {
			pt.status, pt.err = statusOf(err), exchange.WireMessage(err)
			continue
		}
		a := rep.Answers[i]
		if a.Code != "" {
			pt.status, pt.err = exchange.StatusDenied, a.Error
			if a.Code != exchange.CodeForbidden {
				pt.status = exchange.StatusError
			}
			continue
		}
		if foreign(a.Records, pt.region, sl.row.query.Subject) {
			pt.status, pt.err = exchange.StatusError, "the district answered with records of another district or subject"
			continue
		}
		pt.status, pt.records = exchange.StatusOK, a.Records
		pt.phantom = len(a.Records) == 0
	}
}

// statusOf is the district status of a failed call.
func statusOf(err error) exchange.Status {
	var e *exchange.Error
	switch {
	case errors.As(err, &e) && e.Code == exchange.CodeForbidden:
		return exchange.StatusDenied
	case errors.Is(err, context.DeadlineExceeded):
		return exchange.StatusTimeout
	case errors.As(err, &e):
		return exchange.StatusError
	}
	return exchange.StatusUnreachable
}

func foreign(recs []credit.Record, district, subject string) bool {
	for _, r := range recs {
		if r.District != district || r.Subject != subject {
			return true
		}
	}
	return false
}

// assemble builds a subject's answer from what its districts sent: the
// lists, the measures of the scenario, the three-years-clean result.
func (r *pending) assemble(pl plan, today credit.Date) api.CheckAnswer {
	out := api.CheckAnswer{Scenario: pl.scenario.Code, ScenarioName: pl.scenario.Name, Purpose: pl.purpose.Code,
		Lists: []api.CheckList{}, Measures: []api.CheckMeasure{}, Districts: []api.DistrictResult{}, Complete: true}
	var recs []credit.Record
	for _, pt := range r.parts {
		d := api.DistrictResult{District: pt.region, Name: pt.name, Status: string(pt.status), Error: pt.err, Records: []api.Record{}}
		if pt.status == exchange.StatusOK {
			for _, rec := range pt.records {
				d.Records = append(d.Records, api.RecordOf(rec, pl.cat))
			}
			recs = append(recs, pt.records...)
		} else {
			out.Complete = false
			if pt.summary.OnDishonestyList {
				out.Unconfirmed = append(out.Unconfirmed, pt.region+": the index says a record there puts the subject on a serious-dishonesty list")
			}
			if pt.summary.OnRedList {
				out.Unconfirmed = append(out.Unconfirmed, pt.region+": the index says a record there puts the subject on a red list")
			}
			if pt.summary.Negative > 0 {
				out.Unconfirmed = append(out.Unconfirmed, pt.region+": the index counts negative records there")
			}
		}
		out.Districts = append(out.Districts, d)
	}
	codes := credit.ListsOn(recs, pl.cat, today, pl.purpose)
	lists := pl.cat.ListsOf(codes)
	for _, l := range lists {
		cl := api.CheckList{List: l.Code, Name: l.Name, Kind: string(l.Kind), LegalBasis: l.LegalBasis, Records: []api.Record{}}
		for _, rec := range recs {
			it, ok := pl.cat.Item(rec.CatalogItem)
			if ok && slices.Contains(it.Lists, l.Code) && credit.IsDisplayable(rec, it, today, pl.purpose) {
				cl.Records = append(cl.Records, api.RecordOf(rec, pl.cat))
			}
		}
		out.Lists = append(out.Lists, cl)
	}
	// A district that did not answer may hold a bad record: the condition
	// is not granted on what is missing.
	out.ThreeYearsClean = credit.ThreeYearsClean(recs, pl.cat, today, pl.purpose) && (out.Complete || !unansweredNegative(r.parts))
	for _, a := range pl.scenario.Applicable(lists, out.ThreeYearsClean) {
		out.Measures = append(out.Measures, api.CheckMeasure{Code: a.Code, Text: a.Text, LegalBasis: a.LegalBasis, Kind: string(a.Kind),
			Lists: a.Because, Condition: a.Condition})
	}
	return out
}

func unansweredNegative(parts []part) bool {
	for _, pt := range parts {
		if pt.status != exchange.StatusOK && (pt.summary.Negative > 0 || pt.summary.HasDisputed) {
			return true
		}
	}
	return false
}

// refs are the refs of the records the check's answer shows.
func (r *pending) refs() []string {
	var out []string
	for _, pt := range r.parts {
		if pt.status != exchange.StatusOK {
			continue
		}
		for _, rec := range pt.records {
			out = append(out, credit.RefOf(pt.region, rec).String())
		}
	}
	return out
}

// notes are the audit notes of a check's phantom answers (a district the
// index names answered nothing).
func (r *pending) notes(entry storage.AuditEntry) []storage.AuditEntry {
	var out []storage.AuditEntry
	for _, pt := range r.parts {
		if pt.status == exchange.StatusOK && pt.phantom {
			n := entry
			n.Caller, n.Role, n.Institution, n.Operation, n.District = pt.id.String(), string(certs.District), "", "check.phantom_answer", pt.region
			n.Records, n.Decision, n.Reason = nil, storage.DecisionAllowed, ""
			out = append(out, n)
		}
	}
	return out
}

// ring is the coordinator's pseudonym key versions (nil on a node that
// holds none).
func (s *Service) ring() keyring.Ring { return keyring.Or(s.cfg.Keys, s.cfg.Key) }
