// Package disclosure is the public list of serious-dishonesty records
// (GET /v1/disclosures): each district lists its own publicly disclosable
// records, masked, newest recorded first, and a city or province node
// gathers the lists of its districts over the exchange.
package disclosure

import (
	"context"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/time/rate"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/internal/keyrate"
	"credfed/storage"
)

// Op is served by districts: a coordinator node asks for a page of the
// district's list.
const Op = "disclosure.list"

// Page sizes.
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// Entry is one disclosed record. It names the subject by the masked
// identifier only (credit.Subject.Masked: region and check character
// kept), and the record by its decision number; neither the record's id
// nor its summary (free text that may name anyone) is disclosed.
type Entry struct {
	Subject     string `cbor:"1,keyasint"`
	CatalogItem string `cbor:"2,keyasint"`
	// Reason is the catalog item's name: the kind of serious dishonesty.
	Reason     string `cbor:"3,keyasint"`
	LegalBasis string `cbor:"4,keyasint"`
	// DecisionNumber is the decision's document number, with every run of
	// 18 or more letters and digits masked, in whatever width or with
	// whatever separators it is written (see scrub).
	DecisionNumber string      `cbor:"5,keyasint"`
	District       string      `cbor:"6,keyasint"`
	DistrictName   string      `cbor:"7,keyasint,omitempty"`
	Department     string      `cbor:"8,keyasint"`
	DecidedOn      credit.Date `cbor:"9,keyasint"`
	// DisplayUntil is the first day the record is no longer listed.
	DisplayUntil credit.Date   `cbor:"10,keyasint"`
	Status       credit.Status `cbor:"11,keyasint"`
	// RecordedAt is when the district first recorded the record; with Tie
	// it is the entry's place in the list (storage.RecordPosition). It
	// travels in nanoseconds (wireEntry): the exchange's CBOR would keep
	// whole seconds of a time.
	RecordedAt time.Time `cbor:"-"`
	Tie        []byte    `cbor:"13,keyasint"`
}

// wireEntry is an Entry as it travels.
type wireEntry struct {
	Entry
	At int64 `cbor:"12,keyasint"`
}

// position is the entry's place in the newest-recorded-first order.
func (e Entry) position() storage.RecordPosition {
	p := storage.RecordPosition{RecordedAt: e.RecordedAt, District: e.District}
	copy(p.Tie[:], e.Tie)
	return p
}

// Page is one page of the list.
type Page struct {
	Entries []Entry
	// Next is the cursor of the next page, empty on the last.
	Next string
	// Districts is every district the page was gathered from, by region,
	// with its status: a page with one that is not ok may miss entries.
	Districts []District
}

// District is one district's part of a page.
type District struct {
	Region string
	Name   string
	Status exchange.Status
	Error  string
}

// Records are a district's records (storage.DB).
type Records interface {
	NewestRecords(q storage.NewestQuery) ([]storage.Newest, error)
}

// Registry is the federation's region registry (consensus.State).
type Registry interface {
	Regions() []consensus.Region
}

// Config configures the disclosure service of one node.
type Config struct {
	Self     certs.Identity
	Records  Records // districts only
	Registry Registry
	Endpoint *exchange.Endpoint
	// Catalog is the replicated catalog, nil before it has arrived.
	Catalog func() *credit.Catalog
	// Now is the node's clock (display periods); nil is time.Now.
	Now func() time.Time
	// Timeout bounds the gathering from the districts (default 5 s).
	Timeout time.Duration
	// Rate and Burst limit the requests of one client address (an IPv6
	// client by its /64): default 5 a second, bursts of 30.
	Rate  rate.Limit
	Burst int
	// MaxScans bounds the scans of the records a district runs at once
	// (default 2); a request waits for one at most Timeout.
	MaxScans   int
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// maxClients bounds the per-address limiters kept.
const maxClients = 4096

// Service is a node's disclosure service.
type Service struct {
	cfg   Config
	log   *slog.Logger
	scans chan struct{}

	requests *prometheus.CounterVec
	results  *prometheus.CounterVec
	answered *prometheus.CounterVec
	scanTime prometheus.Histogram

	clients *keyrate.Limiters[netip.Addr]
}

// New returns the service; on a district it registers Op on the endpoint.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 5
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 30
	}
	if cfg.MaxScans <= 0 {
		cfg.MaxScans = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: cfg.Logger, scans: make(chan struct{}, cfg.MaxScans), clients: keyrate.New[netip.Addr](cfg.Rate, cfg.Burst, maxClients),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_disclosure_requests_total",
			Help: "Public disclosure list requests to this node, by decision (served, limited, refused, unavailable). They are not audited: they disclose public data only.",
		}, []string{"decision"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_disclosure_district_results_total", Help: "Per-district results of this coordinator's disclosure pages, by status.",
		}, []string{"status"}),
		answered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_disclosure_answers_total", Help: "Disclosure pages this district answered for coordinators, by decision.",
		}, []string{"decision"}),
		scanTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "credfed_disclosure_scan_seconds", Help: "Time of one scan of this district's records for a disclosure page.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.requests, s.results, s.answered, s.scanTime)
	}
	if cfg.Self.Role == certs.District && cfg.Endpoint != nil {
		cfg.Endpoint.Handle(Op, s.answer, exchange.AllowRoles(certs.Province, certs.City), exchange.MaxBody(1<<10),
			exchange.RateLimit(20, 40))
	}
	return s
}

// Query is a request for one page.
type Query struct {
	// Cursor is the "next" of the previous page, empty for the first.
	Cursor string
	// Limit is the page size: 0 for DefaultLimit, at most MaxLimit.
	Limit int
}

// List is one page of the public list at this node: a district's own
// records, a coordinator's gathered from the districts of its region.
// client is the caller's address, whose requests are rate-limited (the
// zero address counts as one client). Nothing is audited: the list holds
// public data only; the requests are counted.
func (s *Service) List(ctx context.Context, client netip.Addr, q Query) (Page, error) {
	if !s.allow(client) {
		s.requests.WithLabelValues("limited").Inc()
		return Page{}, fault.New(fault.TooManyRequests, "too many disclosure requests from this address; at most %g a second, bursts of %d", float64(s.cfg.Rate), s.cfg.Burst)
	}
	page, err := s.list(ctx, q)
	switch e := fault.As(err); {
	case err == nil:
		s.requests.WithLabelValues("served").Inc()
	case e != nil && (e.Kind == fault.BadRequest || e.Kind == fault.Forbidden):
		s.requests.WithLabelValues("refused").Inc()
	default:
		s.requests.WithLabelValues("unavailable").Inc()
	}
	return page, err
}

func (s *Service) list(ctx context.Context, q Query) (Page, error) {
	switch {
	case q.Limit == 0:
		q.Limit = DefaultLimit
	case q.Limit < 0 || q.Limit > MaxLimit:
		return Page{}, fault.Field(fault.BadRequest, "limit", "must be from 1 to %d", MaxLimit)
	}
	after, err := decodeCursor(q.Cursor)
	if err != nil {
		return Page{}, err
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		return Page{}, fault.New(fault.Unavailable, "this node has not received the federation's catalog yet")
	}
	names := map[string]string{}
	for _, r := range s.cfg.Registry.Regions() {
		names[r.Path] = r.Name
	}
	var entries []Entry
	var parts []District
	switch {
	case s.cfg.Self.Role == certs.District:
		entries, err = s.local(ctx, cat, after, q.Limit+1)
		if err != nil {
			return Page{}, err
		}
		parts = []District{{Region: s.cfg.Self.Region, Status: exchange.StatusOK}}
	case s.cfg.Self.Role.IsCoordinatorNode():
		entries, parts = s.gather(ctx, after, q.Limit+1)
	default:
		return Page{}, fault.New(fault.Forbidden, "the disclosure list is served by province, city and district nodes")
	}
	out := Page{Entries: entries, Districts: parts}
	if len(out.Entries) > q.Limit {
		out.Entries = out.Entries[:q.Limit]
		out.Next = encodeCursor(out.Entries[q.Limit-1].position())
	}
	for i := range out.Entries {
		out.Entries[i].DistrictName = names[out.Entries[i].District]
	}
	for i := range out.Districts {
		out.Districts[i].Name = names[out.Districts[i].Region]
	}
	return out, nil
}

// allow takes a token of client's limiter.
func (s *Service) allow(client netip.Addr) bool {
	key := client.Unmap()
	if key.Is6() {
		// One IPv6 client holds a /64 at least: a per-address limit would
		// be a limit on nothing.
		key = netip.PrefixFrom(key, 64).Masked().Addr()
	}
	return s.clients.Allow(key)
}

// local is a district's own list: up to limit entries after the position,
// from one scan of its records.
func (s *Service) local(ctx context.Context, cat *credit.Catalog, after *storage.RecordPosition, limit int) ([]Entry, error) {
	busy := time.NewTimer(s.cfg.Timeout)
	defer busy.Stop()
	select {
	case s.scans <- struct{}{}:
		defer func() { <-s.scans }()
	case <-busy.C:
		return nil, fault.New(fault.Unavailable, "this district is busy listing its records; ask again shortly")
	case <-ctx.Done():
		return nil, fault.Wrap(fault.Unavailable, ctx.Err(), "this district is busy listing its records; ask again shortly")
	}
	today := credit.TodayAt(s.cfg.Now())
	start := time.Now()
	var items []string
	for _, it := range cat.Items {
		if it.Polarity == credit.Negative && it.Severity == credit.Serious && it.Disclosure == credit.Public {
			items = append(items, it.Code)
		}
	}
	if len(items) == 0 {
		return nil, nil // the catalog discloses nothing
	}
	found, err := s.cfg.Records.NewestRecords(storage.NewestQuery{After: after, Limit: limit, Items: items,
		Keep: func(h storage.RecordHead) bool {
			it, ok := cat.Item(h.CatalogItem)
			return ok && credit.PubliclyDisclosable(credit.Record{CatalogItem: h.CatalogItem, DecidedOn: h.DecidedOn, Status: h.Status}, it, today)
		}})
	s.scanTime.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(found))
	for _, n := range found {
		r := n.Record
		it, ok := cat.Item(r.CatalogItem)
		if !ok || !credit.PubliclyDisclosable(r, it, today) {
			continue // the head and the record come from one snapshot: checked again on the whole record
		}
		kind := it.SubjectKind
		if kind != credit.Person && kind != credit.Organization {
			kind = credit.Person
		}
		masked := credit.Subject{Kind: kind, ID: r.Subject}.Masked()
		out = append(out, Entry{Subject: masked, CatalogItem: r.CatalogItem, Reason: it.Name, LegalBasis: r.LegalBasis,
			DecisionNumber: scrub(r.DecisionNumber), District: s.cfg.Self.Region, Department: r.Department,
			DecidedOn: r.DecidedOn, DisplayUntil: credit.DisplayUntil(r, it), Status: r.Status,
			RecordedAt: n.Position.RecordedAt, Tie: n.Position.Tie[:]})
	}
	return out, nil
}

// scrub masks, in text a department wrote, every run of 18 or more letters
// and digits: an identifier has that shape, and nothing on the list may
// show one whole, in any writing. A run is read as a reader would read it:
// full-width and other compatibility forms fold to ASCII (NFKC), digits of
// any script count by their value, Latin, Greek and Cyrillic letters and
// other numbers count, invisible marks (Mn, Me, Cf) are skipped, and up to
// maxGap separators (spaces, dashes, dots, slashes, brackets: anything but
// a letter or digit) between two characters do not end it. Other letters,
// such as Han characters, end a run. A run of exactly 18 that folds to
// ASCII is masked like an identifier (credit.MaskIdentifier, folded, its
// separators dropped), any other entirely; shorter runs stay as written. scrub(scrub(s)) == scrub(s): the
// coordinator checks districts' answers with it (badAnswer).
func scrub(s string) string {
	var b strings.Builder
	written := 0 // s[:written] is in b
	var run struct {
		on         bool
		start, end int // bytes of s, from the run's first character to past its last
		count      int // letters and digits in it
		ascii      bool
		fold       strings.Builder
		gap        int // separators since its last character
	}
	flush := func() {
		if !run.on {
			return
		}
		run.on = false
		b.WriteString(s[written:run.start])
		switch {
		case run.count < idLength:
			b.WriteString(s[run.start:run.end])
		case run.count == idLength && run.ascii:
			b.WriteString(credit.MaskIdentifier(run.fold.String()))
		default:
			b.WriteString(strings.Repeat("*", run.count))
		}
		written = run.end
	}
	for i, r := range s {
		kind, fold := classify(r)
		switch kind {
		case separator:
			if run.on {
				if run.gap++; run.gap > maxGap {
					flush()
				}
			}
		case breaker:
			flush()
		case alnum:
			if !run.on {
				run.on, run.start, run.count, run.ascii = true, i, 0, true
				run.fold.Reset()
			}
			run.end, run.gap = i+utf8.RuneLen(r), 0
			if fold == "" {
				run.count++
				run.ascii = false
			} else {
				run.count += len(fold)
				run.fold.WriteString(fold)
			}
		}
	}
	flush()
	b.WriteString(s[written:])
	return b.String()
}

// idLength is the length of an identifier; maxGap is the most separators
// between two characters of one run.
const (
	idLength = 18
	maxGap   = 3
)

// The kinds of character scrub tells apart.
const (
	separator = iota // punctuation, symbols, spaces: at most maxGap do not end a run
	breaker          // a letter of another script: ends a run
	invisible        // a mark or format character: skipped
	alnum            // a letter or digit of a run
)

// classify says what kind r is; for a letter or digit, fold is the ASCII
// letters and digits it stands for ("" if none: a Greek letter, say).
func classify(r rune) (kind int, fold string) {
	switch {
	case r < utf8.RuneSelf:
		if r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' {
			return alnum, string(r)
		}
		return separator, ""
	case unicode.IsDigit(r):
		return alnum, string('0' + digitValue(r))
	}
	var ascii []byte
	for _, c := range []byte(norm.NFKC.String(string(r))) {
		if c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' {
			ascii = append(ascii, c)
		}
	}
	switch {
	case len(ascii) > 0:
		return alnum, string(ascii)
	case unicode.IsNumber(r) || unicode.In(r, unicode.Latin, unicode.Greek, unicode.Cyrillic) && unicode.IsLetter(r):
		return alnum, ""
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf):
		return invisible, ""
	case unicode.IsLetter(r):
		return breaker, ""
	}
	return separator, ""
}

// digitValue is the value of the decimal digit r (unicode.Nd). Unicode
// assigns decimal digits only in contiguous ranges of whole sets 0 to 9.
func digitValue(r rune) rune {
	zero := r
	for unicode.IsDigit(zero - 1) {
		zero--
	}
	return (r - zero) % 10
}

// request is Op's body.
type request struct {
	After *cursor `cbor:"1,keyasint,omitempty"`
	Limit int     `cbor:"2,keyasint"`
}

type reply struct {
	Entries []wireEntry `cbor:"1,keyasint"`
}

// answer is a district's side: a page of its own list for a coordinator.
// The list is public, so the answer is not audited; it is counted.
func (s *Service) answer(ctx context.Context, req *exchange.Request) (any, error) {
	var in request
	if err := req.Decode(&in); err != nil {
		s.answered.WithLabelValues("refused").Inc()
		return nil, err
	}
	if in.Limit < 1 || in.Limit > MaxLimit+1 {
		s.answered.WithLabelValues("refused").Inc()
		return nil, exchange.Errorf(exchange.CodeBadRequest, "limit must be from 1 to %d", MaxLimit+1)
	}
	var after *storage.RecordPosition
	if in.After != nil {
		p, err := in.After.position()
		if err != nil {
			s.answered.WithLabelValues("refused").Inc()
			return nil, exchange.Errorf(exchange.CodeBadRequest, "%s", fault.As(err).Message)
		}
		after = &p
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "catalog not replicated yet")
	}
	entries, err := s.local(ctx, cat, after, in.Limit)
	if err != nil {
		s.answered.WithLabelValues("failed").Inc()
		if fault.As(err) != nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "%s", fault.As(err).Message)
		}
		return nil, exchange.Errorf(exchange.CodeInternal, "records unavailable")
	}
	s.answered.WithLabelValues("allowed").Inc()
	out := reply{Entries: make([]wireEntry, len(entries))}
	for i, e := range entries {
		out.Entries[i] = wireEntry{Entry: e, At: e.RecordedAt.UnixNano()}
	}
	return out, nil
}

// gather is a coordinator's list: a page from every district of its
// region, merged.
func (s *Service) gather(ctx context.Context, after *storage.RecordPosition, limit int) ([]Entry, []District) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var parts []District
	var peers []exchange.Peer
	var partOf []int
	for _, reg := range s.cfg.Registry.Regions() {
		if reg.Role != certs.District || !certs.InRegion(reg.Path, s.cfg.Self.Region) {
			continue
		}
		part := District{Region: reg.Path}
		if reg.Exchange == "" {
			part.Status, part.Error = exchange.StatusUnreachable, "district has no registered exchange address"
		} else {
			id := reg.Identity(s.cfg.Self.Federation)
			peers = append(peers, exchange.Peer{Name: reg.Path, Addr: reg.Exchange, Identity: &id})
			partOf = append(partOf, len(parts))
		}
		parts = append(parts, part)
	}
	req := request{Limit: limit}
	if after != nil {
		c := cursorOf(*after)
		req.After = &c
	}
	var out []Entry
	results := s.cfg.Endpoint.FanOut(ctx, peers, Op, exchange.Meta{}, req, func() any { return &reply{} })
	for i, res := range results {
		part := &parts[partOf[i]]
		part.Status = res.Status
		if res.Err != nil {
			part.Error = exchange.WireMessage(res.Err)
			continue
		}
		entries := make([]Entry, len(res.Resp.(*reply).Entries))
		for i, w := range res.Resp.(*reply).Entries {
			entries[i] = w.Entry
			entries[i].RecordedAt = time.Unix(0, w.At).UTC()
		}
		if why := s.badAnswer(entries, part.Region, after, limit); why != "" {
			s.log.Warn("a district answered a disclosure page with "+why+"; its answer is dropped", "district", part.Region)
			part.Status, part.Error = exchange.StatusError, "the district answered with "+why
			continue
		}
		out = append(out, entries...)
	}
	for _, p := range parts {
		s.results.WithLabelValues(string(p.Status)).Inc()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].position().Before(out[j].position()) })
	if len(out) > limit {
		out = out[:limit]
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Region < parts[j].Region })
	return out, parts
}

// badAnswer says what is wrong with a district's page ("" if nothing):
// a district answers for itself, with masked subjects, in order, after the
// cursor and within the limit. A page with anything else is not shown.
func (s *Service) badAnswer(entries []Entry, district string, after *storage.RecordPosition, limit int) string {
	if len(entries) > limit {
		return "more entries than asked for"
	}
	for i, e := range entries {
		switch {
		case e.District != district:
			return "entries of another district"
		case !isMasked(e.Subject):
			return "an identifier that is not masked"
		case scrub(e.DecisionNumber) != e.DecisionNumber:
			return "a decision number that is not scrubbed"
		case len(e.Tie) != storage.TieSize:
			return "an entry without its place in the list"
		case after != nil && !after.Before(e.position()):
			return "entries before the cursor"
		case i > 0 && !entries[i-1].position().Before(e.position()):
			return "entries out of order"
		}
	}
	return ""
}

// isMasked reports whether s has the shape of a masked identifier: 18
// characters with the middle of a person's (7-17) or of an organization's
// (1-2 and 9-17) hidden.
func isMasked(s string) bool {
	if len(s) != 18 {
		return false
	}
	hidden := func(from, to int) bool { return strings.Count(s[from:to], "*") == to-from }
	return hidden(6, 17) || hidden(0, 2) && hidden(8, 17)
}
