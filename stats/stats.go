// Package stats is the federation's statistics (GET /v1/stats): a city or
// province node gathers exact counts from every district of its region and
// the lookups and checks made through its coordinators, merges them into
// tables and suppresses small counts (Suppress) before anything leaves it;
// nothing of a person is ever counted by name, sent or shown.
package stats

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/internal/keyrate"
	"credfed/storage"
)

// Exchange operations.
const (
	// OpCounts is served by districts to the coordinator nodes above them:
	// the district's exact counts of its records and cases.
	OpCounts = "stats.counts"
	// OpAudit is served by city nodes to their province: the lookups and
	// checks the city's coordinators made, counted from its audit log.
	OpAudit = "stats.audit"
)

// LateAfter is the reporting deadline: a record first recorded more than
// LateAfter working days after its decision date was reported late.
const LateAfter = 7

// Other is the label of the bucket that takes what a bounded table has no
// room for (departments, institutions, categories and purposes beyond their
// caps, or unknown to the catalog). It is not a valid code of any of them.
const Other = "(other)"

// Bounds on what one answer holds. A district sends at most maxCategories
// categories and maxDepartments departments (then Other); a coordinator
// node at most maxInstitutions institutions; a merged usage table keeps at
// most maxInstitutionRows institutions, a records table maxColumns
// categories.
const (
	maxCategories      = 1024
	maxDepartments     = 256
	maxInstitutions    = 256
	maxInstitutionRows = 256
	maxColumns         = 1024
	maxLabel           = 256
	maxCount           = int64(1) << 48
)

// DefaultAuditScan is how many of the newest audit entries a coordinator
// node counts lookups and checks in (Config.AuditScan).
const DefaultAuditScan = 2_000_000

// Operations counted from the audit log: the asking node's entry of a
// lookup or check (one per lookup, however many districts answered).
const (
	OperationLookup = "lookup"
	OperationCheck  = "check"
)

// Records is a district's records and cases (storage.DB).
type Records interface {
	EachRecordFacts(fn func(storage.RecordFacts) error) error
	Cases(kind string, limit int, keep func(storage.Case) bool) ([]storage.Case, error)
}

// AuditLog is a coordinator node's own audit log (storage.AuditLog).
type AuditLog interface {
	Head() (uint64, [32]byte)
	Range(from, to uint64, fn func(storage.AuditEntry) error) error
}

// Registry is the federation's region registry (consensus.State).
type Registry interface {
	Regions() []consensus.Region
}

// Config configures the statistics of one node.
type Config struct {
	Self     certs.Identity
	Registry Registry
	Endpoint *exchange.Endpoint
	// Records are a district's (districts only); AuditLog a coordinator
	// node's (coordinators only).
	Records  Records
	AuditLog AuditLog
	Catalog  func() *credit.Catalog
	// Calendar tells working days (default credit.DefaultCalendar).
	Calendar *credit.Calendar
	Audit    *audit.Recorder
	Now      func() time.Time
	// Timeout bounds a gathering (default 20 s): every district scans its
	// records.
	Timeout time.Duration
	// AuditScan is how many of the newest audit entries are counted
	// (default DefaultAuditScan).
	AuditScan uint64
	// Rate limits the stats requests of one caller (default one every 2 s,
	// bursts of 5).
	Rate       rate.Limit
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service is a node's statistics.
type Service struct {
	cfg      Config
	log      *slog.Logger
	requests *prometheus.CounterVec
	answered *prometheus.CounterVec
	callers  *keyrate.Limiters[string]
	// scans admits one scan of the records (or of the audit log) at a
	// time.
	scans chan struct{}
}

// maxCallers bounds the per-caller limiters kept.
const maxCallers = 4096

// New returns the service and registers its exchange operation: OpCounts
// on a district, OpAudit on a city.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 20 * time.Second
	}
	if cfg.AuditScan == 0 {
		cfg.AuditScan = DefaultAuditScan
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 0.5
	}
	if cfg.Calendar == nil {
		cfg.Calendar = credit.DefaultCalendar()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: cfg.Logger, callers: keyrate.New[string](cfg.Rate, 5, maxCallers), scans: make(chan struct{}, 1),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_stats_requests_total", Help: "Statistics requests to this node (GET /v1/stats), by decision (allowed, denied).",
		}, []string{"decision"}),
		answered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_stats_answers_total", Help: "Statistics this node answered for a coordinator node over the exchange, by operation and decision.",
		}, []string{"operation", "decision"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.requests, s.answered)
	}
	if cfg.Endpoint != nil {
		switch cfg.Self.Role {
		case certs.District:
			cfg.Endpoint.Handle(OpCounts, s.serveCounts, exchange.AllowRoles(certs.Province, certs.City), exchange.MaxBody(256),
				exchange.RateLimit(1, 4))
		case certs.City:
			cfg.Endpoint.Handle(OpAudit, s.serveAudit, exchange.AllowRoles(certs.Province), exchange.MaxBody(256),
				exchange.RateLimit(1, 4))
		}
	}
	return s
}

// Region is a row's region: its path and display name.
type Region struct {
	Path string
	Name string
}

// Source is one node the statistics were gathered from, with its status:
// a district for the records, cases and timeliness, a coordinator node
// (this one among them) for the lookups and checks.
type Source struct {
	Region Region
	Status exchange.Status
	Error  string
	// AuditFrom is the time of the oldest audit entry counted, and
	// AuditComplete says the whole log was counted (coordinators).
	AuditFrom     time.Time
	AuditComplete bool
}

// Category is a column of the records table.
type Category struct {
	Domain     string
	DomainName string
	Polarity   credit.Polarity
	Severity   credit.Severity
}

// RecordTable counts the records held (latest versions, whatever their
// status) by district (rows) and category (columns).
type RecordTable struct {
	Categories []Category
	Districts  []Region
	Published
}

// Case table columns.
const (
	ObjectionsOpen = iota
	ObjectionsResolved
	ObjectionsOverdue
	RepairsOpen
	RepairsResolved
	RepairsOverdue
	// ObjectionsAged is the first of the open objections' age columns,
	// one per bucket (AgeBuckets, then the older ones).
	ObjectionsAged
	caseColumns = ObjectionsAged + len(AgeBuckets) + 1
)

// CaseTable counts objections and repair requests by district (rows):
// open, resolved (decided) and overdue (open past their deadline: a part
// of open), columns by the constants above; column totals only (a row's
// sum means nothing).
type CaseTable struct {
	Districts []Region
	Published
}

// Department is a row of the timeliness table.
type Department struct {
	District   Region
	Department string
}

// TimelinessTable counts, by department (rows, within their district),
// the records held that were first recorded more than LateAfter working
// days after their decision date; one column, its total the region's.
type TimelinessTable struct {
	Departments []Department
	Published
}

// Institution is a row of a usage table.
type Institution struct {
	// Node is the coordinator node whose audit log counted the queries.
	Node        string
	Region      string
	Institution string
}

// UsageTable counts lookups (or checks) made by institution (rows) and
// purpose (columns), with every margin.
type UsageTable struct {
	Purposes     []string
	Institutions []Institution
	Published
}

// Answer is the statistics of a coordinator node's region, suppressed.
type Answer struct {
	Node         string
	At           time.Time
	Districts    []Source
	Coordinators []Source
	Records      RecordTable
	Cases        CaseTable
	Timeliness   TimelinessTable
	Lookups      UsageTable
	Checks       UsageTable
}

// Stats gathers the statistics of this coordinator node's region for a
// coordinator or operator of the region, suppressed. Allowed or refused,
// the request is in this node's audit log (operation "stats", no subject)
// before it returns.
func (s *Service) Stats(ctx context.Context, caller certs.Identity) (Answer, error) {
	entry := audit.By(caller, "stats")
	fail := func(e *fault.Error) (Answer, error) {
		entry.Decision, entry.Reason = storage.DecisionDenied, string(e.Kind)
		if err := s.cfg.Audit.Record(entry); err != nil {
			return Answer{}, err
		}
		s.requests.WithLabelValues("denied").Inc()
		return Answer{}, e
	}
	switch {
	case caller.Role != certs.Coordinator && caller.Role != certs.Operator:
		return fail(fault.New(fault.Forbidden, "statistics are asked with a coordinator or operator certificate"))
	case !s.cfg.Self.Role.IsCoordinatorNode():
		return fail(fault.New(fault.Forbidden, "statistics are served by coordinator nodes (province, city); this is a %s node", s.cfg.Self.Role))
	case caller.Federation != s.cfg.Self.Federation || !certs.InRegion(caller.Region, s.cfg.Self.Region):
		return fail(fault.New(fault.Forbidden, "statistics of %s are asked by its own coordinators and operators", s.cfg.Self.Region))
	case !s.callers.Allow(caller.String()):
		return fail(fault.New(fault.TooManyRequests, "statistics are asked at most %g times a second", float64(s.cfg.Rate)))
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		return fail(fault.New(fault.Unavailable, "this node has not received the federation's catalog yet"))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ans := s.gather(ctx, cat)
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return Answer{}, err
	}
	s.requests.WithLabelValues("allowed").Inc()
	return ans, nil
}

// gather asks every district of the region for its counts and every city
// below (and this node's own log) for its lookups and checks, and builds
// the suppressed tables.
func (s *Service) gather(ctx context.Context, cat *credit.Catalog) Answer {
	ans := Answer{Node: s.cfg.Self.Region, At: s.cfg.Now().UTC()}
	var districts, cities []exchange.Peer
	var dsrc, csrc []int
	for _, reg := range s.cfg.Registry.Regions() {
		if reg.Path == s.cfg.Self.Region || !certs.InRegion(reg.Path, s.cfg.Self.Region) {
			continue
		}
		var peers *[]exchange.Peer
		var idx *[]int
		var list *[]Source
		switch reg.Role {
		case certs.District:
			peers, idx, list = &districts, &dsrc, &ans.Districts
		case certs.City:
			peers, idx, list = &cities, &csrc, &ans.Coordinators
		default:
			continue
		}
		src := Source{Region: Region{Path: reg.Path, Name: reg.Name}}
		if reg.Exchange == "" {
			src.Status, src.Error = exchange.StatusUnreachable, "no registered exchange address"
		} else {
			id := reg.Identity(s.cfg.Self.Federation)
			*peers = append(*peers, exchange.Peer{Name: reg.Path, Addr: reg.Exchange, Identity: &id})
			*idx = append(*idx, len(*list))
		}
		*list = append(*list, src)
	}
	var counts []countsReply
	var countRows []Region
	var usage []usageCount
	done := make(chan struct{})
	var distResults []exchange.Result
	go func() {
		defer close(done)
		distResults = s.cfg.Endpoint.FanOut(ctx, districts, OpCounts, exchange.Meta{}, countsRequest{Version: wireVersion},
			func() any { return &countsReply{} })
	}()
	cityResults := s.cfg.Endpoint.FanOut(ctx, cities, OpAudit, exchange.Meta{}, auditRequest{Version: wireVersion},
		func() any { return &auditReply{} })
	// This node's own lookups and checks.
	own := Source{Region: Region{Path: s.cfg.Self.Region, Name: s.nameOf(s.cfg.Self.Region)}, Status: exchange.StatusOK}
	if rep, err := s.countAudit(ctx, cat); err != nil {
		own.Status, own.Error = exchange.StatusError, "the audit log could not be read"
		s.log.Warn("statistics: this node's audit log could not be counted", "error_type", errorType(err))
	} else {
		own.AuditFrom, own.AuditComplete = rep.From, rep.Complete
		usage = appendFrom(usage, rep.Usage, s.cfg.Self.Region)
	}
	<-done
	for i, res := range cityResults {
		src := &ans.Coordinators[csrc[i]]
		src.Status = res.Status
		if res.Err != nil {
			src.Error = exchange.WireMessage(res.Err)
			continue
		}
		rep := res.Resp.(*auditReply)
		if why := badAudit(rep, src.Region.Path); why != "" {
			s.log.Warn("a city answered statistics with "+why+"; its answer is dropped", "city", src.Region.Path)
			src.Status, src.Error = exchange.StatusError, "the city answered with "+why
			continue
		}
		src.AuditFrom, src.AuditComplete = rep.From.UTC(), rep.Complete
		usage = appendFrom(usage, rep.Usage, src.Region.Path)
	}
	ans.Coordinators = append([]Source{own}, ans.Coordinators...)
	for i, res := range distResults {
		src := &ans.Districts[dsrc[i]]
		src.Status = res.Status
		if res.Err != nil {
			src.Error = exchange.WireMessage(res.Err)
			continue
		}
		rep := res.Resp.(*countsReply)
		if why := badCounts(rep); why != "" {
			s.log.Warn("a district answered statistics with "+why+"; its answer is dropped", "district", src.Region.Path)
			src.Status, src.Error = exchange.StatusError, "the district answered with "+why
			continue
		}
		counts = append(counts, *rep)
		countRows = append(countRows, src.Region)
	}
	sort.Slice(ans.Districts, func(i, j int) bool { return ans.Districts[i].Region.Path < ans.Districts[j].Region.Path })
	sort.Slice(ans.Coordinators[1:], func(i, j int) bool {
		return ans.Coordinators[1+i].Region.Path < ans.Coordinators[1+j].Region.Path
	})
	// Rows in region order.
	order := make([]int, len(countRows))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(i, j int) bool { return countRows[order[i]].Path < countRows[order[j]].Path })
	sortedCounts := make([]countsReply, len(order))
	sortedRows := make([]Region, len(order))
	for i, o := range order {
		sortedCounts[i], sortedRows[i] = counts[o], countRows[o]
	}
	ans.Records = recordTable(cat, sortedRows, sortedCounts)
	ans.Cases = caseTable(sortedRows, sortedCounts)
	ans.Timeliness = timelinessTable(sortedRows, sortedCounts)
	ans.Lookups = usageTable(cat, usage, OperationLookup)
	ans.Checks = usageTable(cat, usage, OperationCheck)
	return ans
}

func (s *Service) nameOf(path string) string {
	for _, r := range s.cfg.Registry.Regions() {
		if r.Path == path {
			return r.Name
		}
	}
	return ""
}

// errorType names an error's type for a log line: a storage error's text
// may quote a key.
func errorType(err error) string { return fmt.Sprintf("%T", err) }

// scan takes the scan slot, waiting at most until ctx ends.
func (s *Service) scan(ctx context.Context) (func(), error) {
	select {
	case s.scans <- struct{}{}:
		return func() { <-s.scans }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// recordTable builds the records table: the catalog's categories (every
// one, in catalog order, so that a category's absence says nothing), then
// Other for what no catalog item has.
func recordTable(cat *credit.Catalog, rows []Region, counts []countsReply) RecordTable {
	t := RecordTable{Districts: rows}
	col := map[Category]int{} // bounded by the catalog's items (maxColumns)
	for _, it := range cat.Items {
		c := Category{Domain: it.Domain, Polarity: it.Polarity, Severity: it.Severity}
		if _, ok := col[c]; ok || len(col) >= maxColumns {
			continue
		}
		col[c] = len(t.Categories)
		if d, ok := cat.Domain(it.Domain); ok {
			c.DomainName = d.Name
		}
		t.Categories = append(t.Categories, c)
	}
	other := len(t.Categories)
	t.Categories = append(t.Categories, Category{Domain: Other})
	cells := make([][]int64, len(rows))
	for r, rep := range counts {
		cells[r] = make([]int64, len(t.Categories))
		for _, cc := range rep.Records {
			c, ok := col[Category{Domain: cc.Domain, Polarity: cc.Polarity, Severity: cc.Severity}]
			if !ok {
				c = other
			}
			cells[r][c] += cc.Count
		}
	}
	t.Published = Table{Cols: len(t.Categories), Cells: cells, RowTotals: true, ColTotals: true}.Publish()
	return t
}

func caseTable(rows []Region, counts []countsReply) CaseTable {
	cells := make([][]int64, len(rows))
	for r, rep := range counts {
		o, p := rep.Objections, rep.Repairs
		cells[r] = append([]int64{o.Open, o.Resolved, o.Overdue, p.Open, p.Resolved, p.Overdue}, make([]int64, len(AgeBuckets)+1)...)
		copy(cells[r][ObjectionsAged:], o.Ages) // none from a district that does not count them
	}
	return CaseTable{Districts: rows, Published: Table{Cols: caseColumns, Cells: cells, ColTotals: true}.Publish()}
}

func timelinessTable(rows []Region, counts []countsReply) TimelinessTable {
	var t TimelinessTable
	var cells [][]int64
	for r, rep := range counts {
		deps := append([]departmentCount(nil), rep.Departments...)
		sort.Slice(deps, func(i, j int) bool { return deps[i].Department < deps[j].Department })
		for _, d := range deps {
			t.Departments = append(t.Departments, Department{District: rows[r], Department: d.Department})
			cells = append(cells, []int64{d.Late})
		}
	}
	t.Published = Table{Cols: 1, Cells: cells, ColTotals: true}.Publish()
	return t
}

// appendFrom appends a source's usage counts, each marked with the node
// that counted it.
func appendFrom(usage, from []usageCount, node string) []usageCount {
	for _, u := range from {
		u.Node = node
		usage = append(usage, u)
	}
	return usage
}

// usageTable builds the table of one operation: the catalog's purposes,
// then Other; institutions with any use of any operation, the most used
// maxInstitutionRows of them, the rest in Other.
func usageTable(cat *credit.Catalog, usage []usageCount, operation string) UsageTable {
	var t UsageTable
	col := map[string]int{} // bounded by the catalog's purposes
	for _, p := range cat.Purposes {
		if _, ok := col[p.Code]; !ok && len(col) < maxColumns {
			col[p.Code] = len(t.Purposes)
			t.Purposes = append(t.Purposes, p.Code)
		}
	}
	other := len(t.Purposes)
	t.Purposes = append(t.Purposes, Other)
	used := map[Institution]int64{} // bounded: each source sends at most maxInstitutions+1
	for _, u := range usage {
		used[Institution{Node: u.Node, Region: u.Region, Institution: u.Institution}] += u.Count
	}
	insts := make([]Institution, 0, len(used))
	for k := range used {
		insts = append(insts, k)
	}
	sort.Slice(insts, func(i, j int) bool {
		if used[insts[i]] != used[insts[j]] {
			return used[insts[i]] > used[insts[j]]
		}
		return less(insts[i], insts[j])
	})
	otherRow := Institution{Institution: Other}
	row := map[Institution]Institution{}
	for i, k := range insts {
		if i < maxInstitutionRows-1 && k.Institution != Other {
			row[k] = k
		} else {
			row[k] = otherRow
		}
	}
	index := map[Institution]int{}
	var cells [][]int64
	kept := make([]Institution, 0, len(insts))
	for _, k := range insts {
		if _, ok := index[row[k]]; !ok {
			kept = append(kept, row[k])
			index[row[k]] = -1
		}
	}
	sort.Slice(kept, func(i, j int) bool {
		if (kept[i] == otherRow) != (kept[j] == otherRow) {
			return kept[j] == otherRow
		}
		return less(kept[i], kept[j])
	})
	for i, k := range kept {
		index[k] = i
		cells = append(cells, make([]int64, len(t.Purposes)))
	}
	for _, u := range usage {
		if u.Operation != operation {
			continue
		}
		c, ok := col[u.Purpose]
		if !ok {
			c = other
		}
		cells[index[row[Institution{Node: u.Node, Region: u.Region, Institution: u.Institution}]]][c] += u.Count
	}
	t.Institutions = kept
	t.Published = Table{Cols: len(t.Purposes), Cells: cells, RowTotals: true, ColTotals: true}.Publish()
	return t
}

func less(a, b Institution) bool {
	if a.Node != b.Node {
		return a.Node < b.Node
	}
	if a.Region != b.Region {
		return a.Region < b.Region
	}
	return a.Institution < b.Institution
}
