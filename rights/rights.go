// Package rights is the data subject's side of the federation: the own
// report and the access log, gathered at a coordinator node from every
// district that holds the subject's records and every coordinator that
// looked; a district forwards its portal's requests to its city.
package rights

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"credfed/attest"
	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/internal/keyrate"
	"credfed/keyring"
	"credfed/storage"
)

// Exchange operations.
const (
	// OpForward is served by coordinators: a district forwards its
	// portal's report or access-log request.
	OpForward = "rights.forward"
	// OpRecords is served by districts: every record of a subject (all
	// statuses, until retention ends) and the lookups it answered.
	OpRecords = "rights.records"
	// OpAccess is served by coordinators: the lookups it made of a
	// pseudonym.
	OpAccess = "rights.access"
)

// Kinds of forwarded requests.
const (
	KindReport    = "report"
	KindAccessLog = "access-log"
)

// MaxAuthentication bounds the portal's authentication reference.
const MaxAuthentication = 256

// Wire bodies.
type forwardRequest struct {
	Kind           string         `cbor:"1,keyasint"`
	Subject        string         `cbor:"2,keyasint"`
	Authentication string         `cbor:"3,keyasint"`
	Requester      certs.Identity `cbor:"4,keyasint"`
}

type recordsRequest struct {
	Subject   string           `cbor:"1,keyasint"`
	Pseudonym credit.Pseudonym `cbor:"2,keyasint"`
	Requester certs.Identity   `cbor:"3,keyasint"`
	// AccessOnly asks for the lookups answered, not the records.
	AccessOnly bool `cbor:"4,keyasint,omitempty"`
	// Authentication is how the portal verified the person.
	Authentication string `cbor:"5,keyasint,omitempty"`
	// Pseudonyms are the subject's pseudonyms under every retained key
	// version (a key rotation), Pseudonym among them: the district
	// recognises the subject by any it holds, and finds the lookups it
	// answered under each.
	Pseudonyms []credit.Pseudonym `cbor:"6,keyasint,omitempty"`
}

type recordsReply struct {
	Records []credit.Record `cbor:"1,keyasint"`
	Access  []Access        `cbor:"2,keyasint"`
}

type accessRequest struct {
	Pseudonym credit.Pseudonym `cbor:"1,keyasint"`
	Requester certs.Identity   `cbor:"2,keyasint"`
	// Pseudonyms are the subject's pseudonyms under every retained key
	// version (Pseudonym among them): the lookups a coordinator made
	// before a key rotation are registered under the old one.
	Pseudonyms []credit.Pseudonym `cbor:"3,keyasint,omitempty"`
}

type accessReply struct {
	Access []Access `cbor:"1,keyasint"`
}

// Report is a subject's own report as gathered by a coordinator node.
type Report struct {
	Pseudonym credit.Pseudonym `cbor:"1,keyasint"`
	// GatheredBy is the region of the coordinator node that gathered it.
	GatheredBy string    `cbor:"2,keyasint"`
	At         time.Time `cbor:"3,keyasint"`
	// Districts are every district the index names for the subject, sorted.
	Districts []District `cbor:"4,keyasint"`
	// Lists are the codes of the lists the records put the subject on (as
	// others see them: repaired records do not count).
	Lists  []string  `cbor:"5,keyasint,omitempty"`
	Access AccessLog `cbor:"6,keyasint"`
	// RequestID is the gathering's id, in the audit entries of the
	// coordinator and of every district asked.
	RequestID string `cbor:"7,keyasint,omitempty"`
}

// District is one district's part of a report.
type District struct {
	Region string          `cbor:"1,keyasint"`
	Name   string          `cbor:"2,keyasint,omitempty"`
	Status exchange.Status `cbor:"3,keyasint"`
	Error  string          `cbor:"4,keyasint,omitempty"`
	// Records are the district's records of the subject, current versions,
	// every status, until their retention ends.
	Records []credit.Record `cbor:"5,keyasint,omitempty"`
}

// Index is a coordinator's view of the replicated state.
type Index interface {
	// Entries returns every index entry of a pseudonym (a district that
	// holds only records past display is named too).
	Lookup(ctx context.Context, p credit.Pseudonym, strong bool) ([]consensus.IndexEntry, uint64, error)
	Region(path string) (consensus.Region, bool)
	Regions() []consensus.Region
}

// Records is where a district finds a subject's records.
type Records interface {
	RecordsBySubject(subject string) ([]credit.Record, error)
}

// AuditReader reads this node's audit entries of a subject.
type AuditReader interface {
	BySubject(pseudonymHex string) ([]storage.AuditEntry, error)
}

// Config configures the rights service of one node.
type Config struct {
	Self certs.Identity
	Key  credit.PseudonymKey // coordinators only
	// Keys, if set, are the key versions (a key rotation: the index is
	// read under every live version, the audit logs searched under every
	// retained one); Key is then not used.
	Keys        keyring.Ring
	Identifiers credit.ParseOptions
	Index       Index
	Endpoint    *exchange.Endpoint
	// Records and Resolve are a district's records and its pseudonyms of
	// its own subjects (districts only).
	Records Records
	Resolve func(ctx context.Context, subjects []string) ([]credit.Pseudonym, error)
	// Own, if set, returns a district's pseudonyms of a subject under the
	// current version first, then those it published under older versions
	// (pseudonym.Resolver.Own).
	Own      func(ctx context.Context, subject string) ([]credit.Pseudonym, error)
	AuditLog AuditReader
	// Cases are a district's cases and records; Notify wakes its
	// publisher after a record changed (districts only).
	Cases   CaseStore
	Notify  func()
	Catalog func() *credit.Catalog
	Audit   *audit.Recorder
	// Signer signs the reports a coordinator gathers (coordinators only).
	Signer *attest.Signer
	Now    func() time.Time
	// Timeout bounds a request across the federation (default 10 s).
	Timeout time.Duration
	// PortalRate is how many report and access-log requests one portal may
	// make per second (default 5, burst 20).
	PortalRate rate.Limit
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service is a node's rights service.
type Service struct {
	cfg      Config
	log      *slog.Logger
	requests *prometheus.CounterVec

	portals *keyrate.Limiters[string]
	nodes   *keyrate.Limiters[string]
	// caseMu makes checking for an open case and filing one a single step.
	caseMu sync.Mutex
}

// maxPortals bounds the per-portal limiters kept.
const maxPortals = 4096

// New returns the service and registers its exchange operations.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.PortalRate <= 0 {
		cfg.PortalRate = 5
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: cfg.Logger, portals: keyrate.New[string](cfg.PortalRate, 20, maxPortals),
		nodes: keyrate.New[string](2*cfg.PortalRate, 40, maxPortals),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_rights_requests_total", Help: "Reports and access logs asked of this node, by kind and decision.",
		}, []string{"kind", "decision"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.requests)
	}
	if cfg.Endpoint != nil {
		if cfg.Self.Role.IsCoordinatorNode() {
			cfg.Endpoint.Handle(OpForward, s.serveForward, exchange.AllowRoles(certs.District), exchange.MaxBody(8<<10))
			cfg.Endpoint.Handle(OpAccess, s.serveAccess, exchange.AllowRoles(certs.Province, certs.City), exchange.MaxBody(8<<10))
			cfg.Endpoint.Handle(OpCaseForward, s.serveCaseForward, exchange.AllowRoles(certs.District), exchange.MaxBody(128<<10))
		} else {
			cfg.Endpoint.Handle(OpRecords, s.serveRecords, exchange.AllowRoles(certs.Province, certs.City), exchange.MaxBody(8<<10))
			cfg.Endpoint.Handle(OpCase, s.serveCase, exchange.AllowRoles(certs.Province, certs.City), exchange.MaxBody(128<<10))
		}
	}
	return s
}

// Signed is a gathered report or access log; a report's Doc is its signed
// JSON document (api.Report with its signature), as the coordinator that
// gathered it signed it.
type Signed struct {
	Report Report `cbor:"1,keyasint"`
	Doc    []byte `cbor:"2,keyasint,omitempty"`
}

// Report returns the subject's own report for a portal: its signed JSON
// document. At a district it is gathered and signed by the district's city
// (its province if the city cannot be reached), and relayed as it came. It
// is in this node's audit log before it is returned.
func (s *Service) Report(ctx context.Context, caller certs.Identity, subject, authentication string) ([]byte, Report, error) {
	got, err := s.portalRequest(ctx, caller, KindReport, subject, authentication)
	return got.Doc, got.Report, err
}

// AccessLog returns who looked the subject up, for a portal.
func (s *Service) AccessLog(ctx context.Context, caller certs.Identity, subject, authentication string) (AccessLog, error) {
	got, err := s.portalRequest(ctx, caller, KindAccessLog, subject, authentication)
	return got.Report.Access, err
}

// portalRequest checks a portal's request, runs it here (a coordinator) or
// forwards it (a district), and audits it either way.
func (s *Service) portalRequest(ctx context.Context, caller certs.Identity, kind, subject, authentication string) (Signed, error) {
	entry := audit.By(caller, kind)
	entry.Authentication = audit.Bound(authentication, MaxAuthentication)
	fail := func(e error) (Signed, error) {
		entry.Decision, entry.Reason = storage.DecisionDenied, string(fault.KindOf(e))
		if err := s.cfg.Audit.Record(entry); err != nil {
			return Signed{}, err
		}
		s.requests.WithLabelValues(kind, "denied").Inc()
		return Signed{}, e
	}
	if caller.Role != certs.Portal {
		return fail(fault.New(fault.Forbidden, "a subject's %s is asked through a portal, not with %s %s certificate", kind, article(string(caller.Role)), caller.Role))
	}
	if !certs.InRegion(caller.Region, s.cfg.Self.Region) {
		return fail(fault.New(fault.Forbidden, "a portal of %s asks through its own node", caller.Region))
	}
	if e := checkAuthentication(authentication); e != nil {
		return fail(e)
	}
	if !s.portals.Allow(caller.String()) {
		return fail(fault.New(fault.TooManyRequests, "this portal asks more than %g reports and access logs per second", float64(s.cfg.PortalRate)))
	}
	sub, err := s.parseSubject(subject)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var got Signed
	if s.cfg.Self.Role.IsCoordinatorNode() {
		got, err = s.gatherSigned(ctx, kind, sub, caller, authentication)
	} else {
		got, err = s.forward(ctx, kind, sub.ID, authentication, caller)
	}
	if !got.Report.Pseudonym.IsZero() {
		entry.Subject = got.Report.Pseudonym.String()
	}
	if s.cfg.Self.Role.IsCoordinatorNode() {
		entry.LookupID = got.Report.RequestID
	}
	if err != nil {
		return fail(err)
	}
	entry.Decision = storage.DecisionAllowed
	if kind == KindReport {
		entry.Records = refsOf(&got.Report)
	}
	if err := s.cfg.Audit.Record(entry); err != nil {
		return Signed{}, err
	}
	s.requests.WithLabelValues(kind, "allowed").Inc()
	return got, nil
}

// gatherSigned gathers at this coordinator and, for a report, signs its
// document.
func (s *Service) gatherSigned(ctx context.Context, kind string, sub credit.Subject, requester certs.Identity, authentication string) (Signed, error) {
	rep, err := s.gather(ctx, sub, requester, authentication, kind == KindAccessLog)
	out := Signed{Report: rep}
	if err != nil || kind != KindReport {
		return out, err
	}
	if s.cfg.Signer == nil {
		return out, fault.New(fault.Unavailable, "this node cannot sign reports")
	}
	doc := reportDocument(rep, s.cfg.Self.Federation, sub.Masked(), s.cfg.Catalog(), credit.TodayAt(s.cfg.Now()))
	if out.Doc, err = s.cfg.Signer.Sign(doc); err != nil {
		return out, fault.Wrap(fault.Internal, err, "the report could not be signed")
	}
	return out, nil
}

func refsOf(rep *Report) []string {
	var out []string
	for _, d := range rep.Districts {
		for _, r := range d.Records {
			out = append(out, credit.RefOf(d.Region, r).String())
		}
	}
	return out
}

// allow takes a token of the portal's rate.
func (s *Service) allow(caller certs.Identity) bool { return s.portals.Allow(caller.String()) }

func checkAuthentication(v string) *fault.Error {
	switch {
	case strings.TrimSpace(v) == "":
		return fault.Field(fault.BadRequest, "authentication", "required: how the portal verified the person's real name")
	case len(v) > MaxAuthentication:
		return fault.Field(fault.BadRequest, "authentication", "must be at most %d bytes, got %d", MaxAuthentication, len(v))
	case !utf8.ValidString(v):
		return fault.Field(fault.BadRequest, "authentication", "must be valid UTF-8")
	}
	for i, r := range v {
		if !unicode.IsPrint(r) {
			return fault.Field(fault.BadRequest, "authentication", "must be printable text (U+%04X at byte %d)", r, i)
		}
	}
	return nil
}

// forward sends a portal's request to the coordinators above the district,
// nearest first, until one answers; only an unreachable one is passed
// over (no other coordinator can vouch for the district's portals).
func (s *Service) forward(ctx context.Context, kind, subject, authentication string, requester certs.Identity) (Signed, error) {
	peers := consensus.CoordinatorsAbove(s.cfg.Index.Regions(), s.cfg.Self)
	if len(peers) == 0 {
		return Signed{}, fault.New(fault.Unavailable, "no coordinator node above this district is registered to gather the %s", kind)
	}
	req := forwardRequest{Kind: kind, Subject: subject, Authentication: authentication, Requester: requester}
	var last error
	for _, p := range peers {
		var got Signed
		err := s.cfg.Endpoint.Call(ctx, p, OpForward, exchange.Meta{Authentication: authentication}, req, &got)
		if err == nil {
			if kind == KindReport && len(got.Doc) == 0 {
				return got, fault.New(fault.Unavailable, "the coordinator answered the report unsigned")
			}
			return got, nil
		}
		last = err
		if !passOver(err) || ctx.Err() != nil {
			break
		}
	}
	return Signed{}, remoteFault(last, kind)
}

// passOver reports whether a coordinator's failure lets the next one be
// asked: it could not be reached, not a refusal.
func passOver(err error) bool {
	var e *exchange.Error
	if errors.As(err, &e) {
		return e.Code == exchange.CodeUnavailable
	}
	return true
}

// remoteFault maps a coordinator's refusal to the fault the portal sees.
func remoteFault(err error, kind string) error {
	var e *exchange.Error
	if errors.As(err, &e) {
		switch e.Code {
		case exchange.CodeForbidden:
			return fault.New(fault.Forbidden, "the coordinator refused the %s: %s", kind, e.Message)
		case exchange.CodeBadRequest:
			return fault.New(fault.BadRequest, "the coordinator refused the %s: %s", kind, e.Message)
		case exchange.CodeTooManyRequests:
			return fault.New(fault.TooManyRequests, "the coordinator is busy: %s", e.Message)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fault.Wrap(fault.DeadlineExceeded, err, "the %s was not gathered in time", kind)
	}
	return fault.Wrap(fault.Unavailable, err, "no coordinator could gather the %s", kind)
}

// serveForward gathers a report or access log that a district forwards
// for one of its portals.
func (s *Service) serveForward(ctx context.Context, req *exchange.Request) (any, error) {
	var in forwardRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	entry := audit.By(in.Requester, in.Kind)
	entry.Caller = req.Caller.String()
	entry.Authentication = audit.Bound(in.Authentication, MaxAuthentication)
	deny := func(code exchange.Code, msg string) (any, error) {
		if entry.Operation != KindReport && entry.Operation != KindAccessLog {
			// Audited, but no label: the kind is the peer's word.
			entry.Operation = "rights.forward"
			return s.refuseWire(&entry, code, msg)
		}
		if err := s.auditRefusal(&entry, code); err != nil {
			return nil, err
		}
		// Counted as a served forward is, once audited.
		s.requests.WithLabelValues(entry.Operation, "denied").Inc()
		return nil, exchange.Errorf(code, "%s", msg)
	}
	switch {
	case in.Kind != KindReport && in.Kind != KindAccessLog:
		return deny(exchange.CodeBadRequest, "unknown kind of request")
	case !certs.InRegion(req.Caller.Region, s.cfg.Self.Region):
		return deny(exchange.CodeForbidden, "the forwarding district is not below this node: a district forwards its portals' requests to the coordinators above it")
	case in.Requester.Role != certs.Portal || in.Requester.Federation != s.cfg.Self.Federation || !certs.InRegion(in.Requester.Region, req.Caller.Region):
		return deny(exchange.CodeForbidden, "the requester is not a portal of the forwarding district")
	}
	if e := checkAuthentication(in.Authentication); e != nil {
		return deny(exchange.CodeBadRequest, e.Message)
	}
	// A district node vouches for its portals as a coordinator node does
	// for its users; what it may ask is bounded per node as well as per
	// portal it names.
	if !s.nodes.Allow(req.Caller.String()) || !s.portals.Allow(in.Requester.String()) {
		return deny(exchange.CodeTooManyRequests, "this district or portal asks too often")
	}
	sub, err := s.parseSubject(in.Subject)
	if err != nil {
		return deny(exchange.CodeBadRequest, "invalid subject identifier")
	}
	got, err := s.gatherSigned(ctx, in.Kind, sub, in.Requester, in.Authentication)
	entry.Subject, entry.LookupID = got.Report.Pseudonym.String(), got.Report.RequestID
	if err != nil {
		return deny(exchange.CodeUnavailable, "the request could not be gathered")
	}
	entry.Decision = storage.DecisionAllowed
	if in.Kind == KindReport {
		entry.Records = refsOf(&got.Report)
	}
	if err := s.cfg.Audit.Record(entry); err != nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
	}
	s.requests.WithLabelValues(in.Kind, "allowed").Inc()
	return got, nil
}

// gather builds a subject's report at a coordinator: the index names the
// districts, each sends its records and the lookups it answered, every
// coordinator sends the lookups it made.
func (s *Service) gather(ctx context.Context, sub credit.Subject, requester certs.Identity, authentication string, accessOnly bool) (Report, error) {
	ring := s.ring()
	if ring == nil {
		return Report{}, fault.New(fault.Unavailable, "this node holds no pseudonym key")
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		return Report{}, fault.New(fault.Unavailable, "this node has not received the federation's catalog yet")
	}
	now := s.cfg.Now()
	p := ring.Pseudonym(sub.ID)
	retained := ring.AuditPseudonyms(sub.ID)
	rep := Report{Pseudonym: p, GatheredBy: s.cfg.Self.Region, At: now.UTC(), RequestID: exchange.NewID("rq")}
	_, entries, _, err := keyring.Read(ctx, s.cfg.Index.Lookup, ring, sub.ID, false)
	if err != nil {
		return rep, fault.Wrap(fault.Unavailable, err, "the index could not be read")
	}
	var peers []exchange.Peer
	var partOf []int
	for _, e := range entries {
		part := District{Region: e.District}
		reg, ok := s.cfg.Index.Region(e.District)
		part.Name = reg.Name
		if !ok || reg.Exchange == "" {
			part.Status, part.Error = exchange.StatusUnreachable, "district has no registered exchange address"
		} else {
			id := reg.Identity(s.cfg.Self.Federation)
			peers = append(peers, exchange.Peer{Name: reg.Path, Addr: reg.Exchange, Identity: &id})
			partOf = append(partOf, len(rep.Districts))
		}
		rep.Districts = append(rep.Districts, part)
	}
	var wg sync.WaitGroup
	var coordAccess []Access
	var incomplete []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		coordAccess, incomplete = s.coordinatorAccess(ctx, p, retained, requester)
	}()
	meta := exchange.Meta{Purpose: selfPurpose(cat), LookupID: rep.RequestID}
	results := s.cfg.Endpoint.FanOut(ctx, peers, OpRecords, meta,
		recordsRequest{Subject: sub.ID, Pseudonym: p, Requester: requester, AccessOnly: accessOnly, Authentication: authentication, Pseudonyms: retained},
		func() any { return &recordsReply{} })
	wg.Wait()
	var distAccess []Access
	var all []credit.Record
	for i, res := range results {
		part := &rep.Districts[partOf[i]]
		part.Status = res.Status
		if res.Err != nil {
			part.Error = exchange.WireMessage(res.Err)
			incomplete = append(incomplete, part.Region)
			continue
		}
		r := res.Resp.(*recordsReply)
		if !ofSubject(r.Records, part.Region, sub.ID) {
			s.log.Warn("a district answered a report with records not its own or of another subject; its answer is dropped", "district", part.Region)
			part.Status, part.Error = exchange.StatusError, "the district answered with records that are not its own or not the subject's"
			incomplete = append(incomplete, part.Region)
			continue
		}
		for _, a := range r.Access {
			a.Districts = []string{part.Region}
			distAccess = append(distAccess, a)
		}
		if !accessOnly {
			part.Records = r.Records
			all = append(all, r.Records...)
		}
	}
	sort.Slice(rep.Districts, func(i, j int) bool { return rep.Districts[i].Region < rep.Districts[j].Region })
	if !accessOnly {
		rep.Lists = credit.ListsOn(all, cat, credit.TodayAt(now), credit.Purpose{SubjectOwn: true})
	}
	rep.Access = merge(coordAccess, distAccess, delays(cat), now)
	sort.Strings(incomplete)
	rep.Access.Incomplete = incomplete
	return rep, nil
}

// selfPurpose is the catalog's purpose of the subject's own inquiry.
func selfPurpose(cat *credit.Catalog) string {
	for _, p := range cat.Purposes {
		if p.SubjectOwn {
			return p.Code
		}
	}
	return ""
}

// coordinatorAccess asks every coordinator node (this one locally) for the
// lookups it made of p, or of retained (the subject's pseudonyms under
// every retained key version: lookups made before a key rotation are
// registered under the old one).
func (s *Service) coordinatorAccess(ctx context.Context, p credit.Pseudonym, retained []credit.Pseudonym, requester certs.Identity) ([]Access, []string) {
	var out []Access
	var incomplete []string
	own, err := bySubjects(s.cfg.AuditLog, keyring.All(p, retained))
	if err != nil {
		incomplete = append(incomplete, s.cfg.Self.Region)
	}
	out = append(out, fromAsking(own)...)
	var peers []exchange.Peer
	for _, reg := range s.cfg.Index.Regions() {
		if !reg.Role.IsCoordinatorNode() || reg.Path == s.cfg.Self.Region || reg.Exchange == "" {
			continue
		}
		id := reg.Identity(s.cfg.Self.Federation)
		peers = append(peers, exchange.Peer{Name: reg.Path, Addr: reg.Exchange, Identity: &id})
	}
	results := s.cfg.Endpoint.FanOut(ctx, peers, OpAccess, exchange.Meta{}, accessRequest{Pseudonym: p, Requester: requester, Pseudonyms: retained},
		func() any { return &accessReply{} })
	for _, res := range results {
		if res.Err != nil {
			incomplete = append(incomplete, res.Peer.Name)
			continue
		}
		for _, a := range res.Resp.(*accessReply).Access {
			a.Coordinator = res.Peer.Name // a coordinator speaks for its own lookups only
			out = append(out, a)
		}
	}
	return out, incomplete
}

// serveAccess answers another coordinator: the lookups this node made of a
// pseudonym. The request is audited.
func (s *Service) serveAccess(ctx context.Context, req *exchange.Request) (any, error) {
	var in accessRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	entry := audit.By(in.Requester, "access-log.answer")
	entry.Caller = req.Caller.String()
	entry.Subject = in.Pseudonym.String()
	if in.Pseudonym.IsZero() || in.Requester.Role != certs.Portal {
		entry.Decision, entry.Reason, entry.Subject = storage.DecisionDenied, string(exchange.CodeBadRequest), ""
		if err := s.cfg.Audit.Record(entry); err != nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
		}
		return nil, exchange.Errorf(exchange.CodeBadRequest, "an access-log request names a pseudonym and the portal that asks")
	}
	if len(in.Pseudonyms) > maxRetainedVersions {
		in.Pseudonyms = in.Pseudonyms[len(in.Pseudonyms)-maxRetainedVersions:]
	}
	own, err := bySubjects(s.cfg.AuditLog, keyring.All(in.Pseudonym, in.Pseudonyms))
	if err != nil {
		return nil, exchange.Errorf(exchange.CodeInternal, "audit log unreadable")
	}
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
	}
	return accessReply{Access: fromAsking(own)}, nil
}

// serveRecords is a district's part of a report: every record of the
// subject it holds, and the lookups of the subject it answered. The entry
// names the subject by the district's own pseudonym when it holds records
// (the caller's otherwise: resolving one for a subject it does not hold
// would count against it in custody).
func (s *Service) serveRecords(ctx context.Context, req *exchange.Request) (any, error) {
	var in recordsRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	entry := audit.By(in.Requester, "report.answer")
	if in.AccessOnly {
		entry.Operation = "access-log.answer"
	}
	entry.Caller = req.Caller.String()
	entry.District = s.cfg.Self.Region
	entry.Authentication = audit.Bound(in.Authentication, MaxAuthentication)
	if exchange.ValidID("rq", req.Meta.LookupID) {
		entry.LookupID = req.Meta.LookupID
	}
	deny := func(code exchange.Code, msg string) (any, error) { return s.refuseWire(&entry, code, msg) }
	if in.Requester.Role != certs.Portal || in.Requester.Federation != s.cfg.Self.Federation || !certs.InRegion(in.Requester.Region, req.Caller.Region) {
		return deny(exchange.CodeForbidden, "a report is asked for a portal of the asking coordinator's region")
	}
	if e := checkAuthentication(in.Authentication); e != nil {
		return deny(exchange.CodeBadRequest, e.Message)
	}
	opt := s.cfg.Identifiers
	opt.Today = credit.TodayAt(s.cfg.Now())
	sub, err := credit.ParseSubject(in.Subject, opt)
	if err != nil {
		return deny(exchange.CodeBadRequest, "invalid subject identifier")
	}
	recs, err := s.cfg.Records.RecordsBySubject(sub.ID)
	if err != nil {
		return nil, exchange.Errorf(exchange.CodeInternal, "records unavailable")
	}
	pseudo := in.Pseudonym
	if len(in.Pseudonyms) > maxRetainedVersions {
		in.Pseudonyms = in.Pseudonyms[len(in.Pseudonyms)-maxRetainedVersions:]
	}
	sent := keyring.All(in.Pseudonym, in.Pseudonyms)
	var mine []credit.Pseudonym
	if len(recs) > 0 {
		own, err := s.own(ctx, sub.ID)
		if err != nil || len(own) == 0 {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "the report cannot be registered now (no pseudonym for the audit); nothing was answered")
		}
		if !keyring.Matches(sent, own) {
			entry.Subject = own[0].String()
			return deny(exchange.CodeBadRequest, "the pseudonym sent is not the subject's")
		}
		pseudo, mine = own[0], own
	}
	entry.Subject = pseudo.String()
	out := recordsReply{Records: []credit.Record{}}
	if !in.AccessOnly {
		out.Records = recs
		for _, r := range recs {
			entry.Records = append(entry.Records, r.Department+"/"+r.ID)
		}
	}
	if len(recs) > 0 {
		// Under every pseudonym this district gave the subject, and those
		// the coordinator sent (a lookup answered before a key rotation is
		// registered under the old one).
		answered, err := bySubjects(s.cfg.AuditLog, keyring.All(pseudo, append(mine, sent...)))
		if err != nil {
			return nil, exchange.Errorf(exchange.CodeInternal, "audit log unreadable")
		}
		out.Access = fromAnswering(answered, s.cfg.Self.Region)
	}
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
	}
	return out, nil
}

// refuseWire registers a refused exchange request and returns its refusal
// (unavailable if the refusal cannot be registered).
func (s *Service) refuseWire(entry *storage.AuditEntry, code exchange.Code, msg string) (any, error) {
	if err := s.auditRefusal(entry, code); err != nil {
		return nil, err
	}
	return nil, exchange.Errorf(code, "%s", msg)
}

// auditRefusal registers entry as denied for code; its error is what the
// peer is told when the audit log cannot take it.
func (s *Service) auditRefusal(entry *storage.AuditEntry, code exchange.Code) error {
	entry.Decision, entry.Reason = storage.DecisionDenied, string(code)
	if err := s.cfg.Audit.Record(*entry); err != nil {
		return exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
	}
	return nil
}

// ofSubject reports whether every record is the district's own and of the
// subject.
func ofSubject(recs []credit.Record, district, subject string) bool {
	for _, r := range recs {
		if r.District != district || r.Subject != subject {
			return false
		}
	}
	return true
}

// maxRetainedVersions bounds the pseudonyms of a subject a request may
// name (one per retained key version).
const maxRetainedVersions = 16

// ring is the coordinator's pseudonym key versions (nil on a node that
// holds none).
func (s *Service) ring() keyring.Ring { return keyring.Or(s.cfg.Keys, s.cfg.Key) }

// own returns a district's pseudonyms of a subject it holds records of:
// the current version's first, then those it published under older ones.
func (s *Service) own(ctx context.Context, subject string) ([]credit.Pseudonym, error) {
	if s.cfg.Own != nil {
		return s.cfg.Own(ctx, subject)
	}
	return s.cfg.Resolve(ctx, []string{subject})
}

// bySubjects reads the audit entries under each pseudonym, each entry
// once, in the order of the log.
func bySubjects(log AuditReader, ps []credit.Pseudonym) ([]storage.AuditEntry, error) {
	var out []storage.AuditEntry
	seen := map[credit.Pseudonym]bool{}
	for _, p := range ps {
		if seen[p] || p.IsZero() {
			continue
		}
		seen[p] = true
		es, err := log.BySubject(p.String())
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
	}
	if len(seen) > 1 {
		slices.SortStableFunc(out, func(a, b storage.AuditEntry) int { return cmp.Compare(a.Seq, b.Seq) })
		out = slices.CompactFunc(out, func(a, b storage.AuditEntry) bool { return a.Seq == b.Seq })
	}
	return out, nil
}
