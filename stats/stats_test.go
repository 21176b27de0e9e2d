package stats

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/internal/exchangetest"
	"credfed/storage"
)

const fed = "statstest"

type registry []consensus.Region

func (r registry) Regions() []consensus.Region { return r }

func openDB(t *testing.T) *storage.DB {
	t.Helper()
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// day is noon of d in China.
func day(d credit.Date) time.Time {
	return time.Date(d.Time().Year(), d.Time().Month(), d.Time().Day(), 12, 0, 0, 0, credit.ChinaStandardTime)
}

// accepted is a record as intake stores it, submitted at the given time.
func accepted(t *testing.T, cat *credit.Catalog, district, dept, id, item string, decided credit.Date, at time.Time) credit.Record {
	t.Helper()
	subject := credit.SyntheticPerson(len(id)*31+int(id[len(id)-1]), credit.NewDate(1980, 1, 2))
	r, err := cat.Accept(credit.Record{ID: id, Subject: subject, CatalogItem: item, DecisionNumber: "罚〔2026〕" + id,
		OccurredOn: decided - 5, DecidedOn: decided, Summary: "处罚事由", Department: dept, District: district},
		at, credit.ParseOptions{TestMode: true})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func submit(t *testing.T, db *storage.DB, recs ...credit.Record) {
	t.Helper()
	out, err := db.SubmitRecords(recs)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if o != storage.Accepted {
			t.Fatalf("record %d: %v", i, o)
		}
	}
}

var pseudo = strings.Repeat("ab", 16)

func putCase(t *testing.T, db *storage.DB, kind, id, state string, deadline credit.Date) {
	t.Helper()
	if err := db.PutCase(storage.Case{Kind: kind, ID: id, Department: "market", Record: "R-1", Subject: pseudo,
		FiledAt: time.Now(), Deadline: deadline, State: state}); err != nil {
		t.Fatal(err)
	}
}

// monday is a Monday of March 2026, a month without holidays: seven working
// days after it is Wednesday 11 March.
var monday = credit.NewDate(2026, 3, 2)

// TestCountDistrict counts a district's records by category and its late
// records by department (the first version's submission counts, not a
// correction's), and its cases.
func TestCountDistrict(t *testing.T) {
	cat := credit.DefaultCatalog()
	db := openDB(t)
	const district = "zhejiang/quzhou/kecheng"
	deadline := credit.DefaultCalendar().AddWorkingDays(monday, LateAfter)
	if deadline != credit.NewDate(2026, 3, 11) {
		t.Fatalf("seven working days after %s is %s", monday, deadline)
	}
	submit(t, db,
		accepted(t, cat, district, "market", "M-1", "FOOD-DRUG-PENALTY", monday, day(monday)),
		accepted(t, cat, district, "market", "M-2", "FOOD-DRUG-PENALTY", monday, day(deadline)),   // on the last day
		accepted(t, cat, district, "market", "M-3", "FOOD-DRUG-PENALTY", monday, day(deadline+1)), // late
		accepted(t, cat, district, "market", "M-4", "FOOD-SAFETY-SERIOUS", monday, day(deadline+20)),
		accepted(t, cat, district, "tax", "T-1", "TAX-SERIOUS", monday, day(monday+1)),
		accepted(t, cat, district, "tax", "T-2", "MORAL-MODEL", monday, day(monday+1)),
	)
	// A correction long after does not make an on-time record late.
	r, err := db.Record("market", "M-1")
	if err != nil {
		t.Fatal(err)
	}
	r.Version, r.RecordedAt, r.Reason, r.Summary = 2, day(deadline+30).UTC(), "更正", "更正后的事由"
	if err := db.UpdateRecord(r); err != nil {
		t.Fatal(err)
	}
	today := deadline + 40
	putCase(t, db, storage.CaseObjection, "ob-1", storage.CaseOpen, today-1)    // overdue
	putCase(t, db, storage.CaseObjection, "ob-2", storage.CaseOpen, today)      // due today: not overdue
	putCase(t, db, storage.CaseObjection, "ob-3", storage.CaseDecided, today-5) // resolved
	putCase(t, db, storage.CaseRepair, "rp-1", storage.CaseOpen, 0)             // no deadline
	putCase(t, db, storage.CaseRepair, "rp-2", storage.CaseDecided, today-9)

	got, err := countDistrict(context.Background(), db, cat, credit.DefaultCalendar(), today)
	if err != nil {
		t.Fatal(err)
	}
	byCat := map[categoryCount]int64{}
	for _, c := range got.Records {
		k := c
		k.Count = 0
		byCat[k] += c.Count
	}
	want := map[categoryCount]int64{
		{Domain: "FOOD-DRUG", Polarity: credit.Negative, Severity: credit.Ordinary}: 3,
		{Domain: "FOOD-DRUG", Polarity: credit.Negative, Severity: credit.Serious}:  1,
		{Domain: "TAX", Polarity: credit.Negative, Severity: credit.Serious}:        1,
	}
	it, _ := cat.Item("MORAL-MODEL")
	want[categoryCount{Domain: it.Domain, Polarity: it.Polarity, Severity: it.Severity}] = 1
	if len(byCat) != len(want) {
		t.Errorf("categories %+v, want %+v", byCat, want)
	}
	for k, v := range want {
		if byCat[k] != v {
			t.Errorf("category %+v: %d, want %d (all: %+v)", k, byCat[k], v, byCat)
		}
	}
	late := map[string]int64{}
	for _, d := range got.Departments {
		late[d.Department] = d.Late
	}
	if len(late) != 2 || late["market"] != 2 || late["tax"] != 0 {
		t.Errorf("late by department %v, want market 2 (M-3, M-4), tax 0", late)
	}
	// Filed today: every open case is in the first age bucket.
	if !reflect.DeepEqual(got.Objections, caseCounts{Open: 2, Resolved: 1, Overdue: 1, Ages: []int64{2, 0, 0, 0}}) ||
		!reflect.DeepEqual(got.Repairs, caseCounts{Open: 1, Resolved: 1, Ages: []int64{1, 0, 0, 0}}) {
		t.Errorf("cases: objections %+v, repairs %+v", got.Objections, got.Repairs)
	}
	if bad := badCounts(&got); bad != "" {
		t.Errorf("a district's own counts are refused: %s", bad)
	}
}

// TestCountDistrictBoundsDepartments: departments beyond the bound are
// counted in Other.
func TestCountDistrictBoundsDepartments(t *testing.T) {
	cat := credit.DefaultCatalog()
	db := openDB(t)
	const district = "zhejiang/quzhou/kecheng"
	var recs []credit.Record
	for i := range maxDepartments + 10 {
		dept := "dept-" + string(rune('a'+i/26/26%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i%26))
		recs = append(recs, accepted(t, cat, district, dept, "R-"+dept, "FOOD-DRUG-PENALTY", monday, day(monday+30)))
	}
	submit(t, db, recs...)
	got, err := countDistrict(context.Background(), db, cat, credit.DefaultCalendar(), monday+40)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	other := false
	for _, d := range got.Departments {
		total += d.Late
		other = other || d.Department == Other
	}
	if len(got.Departments) != maxDepartments || !other || total != int64(len(recs)) {
		t.Errorf("%d departments (other: %v), %d late; want %d with Other, %d late", len(got.Departments), other, total, maxDepartments, len(recs))
	}
	if bad := badCounts(&got); bad != "" {
		t.Errorf("bounded counts are refused: %s", bad)
	}
}

// node is a node's statistics on a real endpoint and store.
type node struct {
	id  certs.Identity
	ep  *exchange.Endpoint
	db  *storage.DB
	reg consensus.Region
	svc *Service
}

func newNode(t *testing.T, ca *certs.CA, role certs.Role, path string) *node {
	id := certs.Identity{Federation: fed, Role: role, Region: path}
	n := &node{id: id, ep: exchangetest.Endpoint(t, ca, id), db: openDB(t)}
	n.reg = consensus.Region{Path: path, Name: path[strings.LastIndexByte(path, '/')+1:], Role: role, Exchange: n.ep.Addr().String()}
	return n
}

func (n *node) start(reg registry, cat *credit.Catalog, now func() time.Time) {
	n.svc = New(Config{Self: n.id, Registry: reg, Endpoint: n.ep, Records: n.db, AuditLog: n.db.Audit(),
		Catalog: func() *credit.Catalog { return cat }, Audit: audit.New(n.db.Audit(), n.id.Region, now, nil, nil),
		Now: now, Timeout: 10 * time.Second, Rate: 100, Registerer: prometheus.NewRegistry()})
}

// lookups appends n allowed lookups of an institution to a node's log.
func lookups(t *testing.T, db *storage.DB, op string, caller certs.Identity, purpose string, n int) {
	t.Helper()
	for range n {
		e := audit.By(caller, op)
		e.Purpose, e.Decision, e.At = purpose, storage.DecisionAllowed, time.Now()
		if _, err := db.Audit().Append(e); err != nil {
			t.Fatal(err)
		}
	}
}

func user(role certs.Role, region, inst string) certs.Identity {
	return certs.Identity{Federation: fed, Role: role, Region: region, Institution: inst}
}

// TestStatsAtCityAndProvince: a city gathers its districts (not another
// city's) and its own lookups; the province gathers every district and
// the cities' lookups as well as its own; small counts are suppressed, and
// with them the totals that would give them back; an unreachable district
// is named with its status. The request is audited once at the node
// asked, and counted.
func TestStatsAtCityAndProvince(t *testing.T) {
	ca := exchangetest.CA(t, fed)
	cat := credit.DefaultCatalog()
	now := func() time.Time { return day(monday + 40) }
	prov := newNode(t, ca, certs.Province, "zhejiang")
	city := newNode(t, ca, certs.City, "zhejiang/quzhou")
	a := newNode(t, ca, certs.District, "zhejiang/quzhou/kecheng")
	b := newNode(t, ca, certs.District, "zhejiang/quzhou/qujiang")
	x := newNode(t, ca, certs.District, "zhejiang/hangzhou/xihu")
	gone := consensus.Region{Path: "zhejiang/quzhou/longyou", Name: "longyou", Role: certs.District} // no exchange address
	reg := registry{prov.reg, city.reg, a.reg, b.reg, x.reg, gone}
	for _, n := range []*node{prov, city, a, b, x} {
		n.start(reg, cat, now)
	}
	var recs []credit.Record
	for i := range 12 {
		recs = append(recs, accepted(t, cat, a.id.Region, "market", "A-"+string(rune('a'+i)), "FOOD-DRUG-PENALTY", monday, day(monday)))
	}
	recs = append(recs, accepted(t, cat, a.id.Region, "market", "A-late", "FOOD-DRUG-PENALTY", monday, day(monday+20)))
	submit(t, a.db, recs...)
	recs = nil
	for i := range 7 {
		recs = append(recs, accepted(t, cat, b.id.Region, "tax", "B-"+string(rune('a'+i)), "FOOD-DRUG-PENALTY", monday, day(monday+20)))
	}
	recs = append(recs, accepted(t, cat, b.id.Region, "tax", "B-tax", "TAX-SERIOUS", monday, day(monday)))
	submit(t, b.db, recs...)
	for i := range 9 {
		submit(t, x.db, accepted(t, cat, x.id.Region, "market", "X-"+string(rune('a'+i)), "FOOD-DRUG-PENALTY", monday, day(monday)))
	}
	putCase(t, a.db, storage.CaseObjection, "ob-1", storage.CaseOpen, monday+30)

	cityCoord := user(certs.Coordinator, city.id.Region, "quzhou-market")
	provCoord := user(certs.Coordinator, prov.id.Region, "province-office")
	lookups(t, city.db, OperationLookup, cityCoord, "ADMIN-LICENSING", 6)
	lookups(t, city.db, OperationLookup, cityCoord, "LAW-ENFORCEMENT", 2)
	lookups(t, city.db, OperationCheck, cityCoord, "ADMIN-LICENSING", 5)
	lookups(t, prov.db, OperationLookup, provCoord, "ADMIN-LICENSING", 7)
	lookups(t, prov.db, "lookup.answer", provCoord, "ADMIN-LICENSING", 3) // not a lookup made
	denied := audit.By(provCoord, OperationLookup)
	denied.Decision = storage.DecisionDenied
	if _, err := prov.db.Audit().Append(denied); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	// The city.
	ans, err := city.svc.Stats(ctx, cityCoord)
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]exchange.Status{}
	for _, d := range ans.Districts {
		status[d.Region.Path] = d.Status
	}
	if len(status) != 3 || status[a.id.Region] != exchange.StatusOK || status[b.id.Region] != exchange.StatusOK || status[gone.Path] != exchange.StatusUnreachable {
		t.Fatalf("city districts %+v", ans.Districts)
	}
	food := catIndex(t, ans.Records.Categories, "FOOD-DRUG", credit.Negative, credit.Ordinary)
	tax := catIndex(t, ans.Records.Categories, "TAX", credit.Negative, credit.Serious)
	if len(ans.Records.Districts) != 2 || ans.Records.Districts[0].Path != a.id.Region {
		t.Fatalf("record rows %+v", ans.Records.Districts)
	}
	wantCell(t, "kecheng food", ans.Records.Cells[0][food], 13)
	wantCell(t, "kecheng total", ans.Records.RowTotals[0], 13)
	wantCell(t, "qujiang food", ans.Records.Cells[1][food], 7)
	wantSuppressed(t, "qujiang tax (1)", ans.Records.Cells[1][tax])
	wantSuppressed(t, "qujiang total", ans.Records.RowTotals[1])
	wantSuppressed(t, "tax total", ans.Records.ColTotals[tax])
	wantCell(t, "food total", ans.Records.ColTotals[food], 20)
	wantSuppressed(t, "grand total", *ans.Records.Total)
	// One open objection: suppressed, and its column total.
	wantSuppressed(t, "kecheng objections open", ans.Cases.Cells[0][ObjectionsOpen])
	wantSuppressed(t, "objections open total", ans.Cases.ColTotals[ObjectionsOpen])
	wantCell(t, "objections resolved total", ans.Cases.ColTotals[ObjectionsResolved], 0)
	// Late: kecheng's market 1 (suppressed), qujiang's tax 7.
	if len(ans.Timeliness.Departments) != 2 {
		t.Fatalf("timeliness rows %+v", ans.Timeliness.Departments)
	}
	wantSuppressed(t, "kecheng market late", ans.Timeliness.Cells[0][0])
	wantCell(t, "qujiang tax late", ans.Timeliness.Cells[1][0], 7)
	wantSuppressed(t, "late total", ans.Timeliness.ColTotals[0])
	// Lookups: 6 and 2 (suppressed) by one institution; checks 5.
	lic := slicesIndex(ans.Lookups.Purposes, "ADMIN-LICENSING")
	law := slicesIndex(ans.Lookups.Purposes, "LAW-ENFORCEMENT")
	if len(ans.Lookups.Institutions) != 1 || ans.Lookups.Institutions[0] != (Institution{Node: city.id.Region, Region: city.id.Region, Institution: "quzhou-market"}) {
		t.Fatalf("lookup rows %+v", ans.Lookups.Institutions)
	}
	wantCell(t, "licensing lookups", ans.Lookups.Cells[0][lic], 6)
	wantSuppressed(t, "law-enforcement lookups", ans.Lookups.Cells[0][law])
	wantSuppressed(t, "institution's lookups", ans.Lookups.RowTotals[0])
	wantCell(t, "licensing checks", ans.Checks.Cells[0][lic], 5)
	wantCell(t, "all checks", *ans.Checks.Total, 5)
	if len(ans.Coordinators) != 1 || ans.Coordinators[0].Region.Path != city.id.Region || !ans.Coordinators[0].AuditComplete {
		t.Errorf("city coordinators %+v", ans.Coordinators)
	}

	// The province: every district, the city's lookups and its own.
	ans, err = prov.svc.Stats(ctx, provCoord)
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Districts) != 4 || len(ans.Records.Districts) != 3 {
		t.Fatalf("province districts %+v, rows %+v", ans.Districts, ans.Records.Districts)
	}
	wantCell(t, "province food total", ans.Records.ColTotals[food], 29)
	if len(ans.Coordinators) != 2 || ans.Coordinators[0].Region.Path != prov.id.Region || ans.Coordinators[1].Region.Path != city.id.Region ||
		ans.Coordinators[1].Status != exchange.StatusOK {
		t.Fatalf("province coordinators %+v", ans.Coordinators)
	}
	rows := map[Institution]int{}
	for i, r := range ans.Lookups.Institutions {
		rows[r] = i
	}
	pi, ok := rows[Institution{Node: prov.id.Region, Region: prov.id.Region, Institution: "province-office"}]
	if !ok || len(rows) != 2 {
		t.Fatalf("province lookup rows %+v", ans.Lookups.Institutions)
	}
	wantCell(t, "province office licensing lookups", ans.Lookups.Cells[pi][lic], 7)
	wantCell(t, "licensing lookups in the province", ans.Lookups.ColTotals[lic], 13)

	// Audited once at the node asked, counted.
	entries, _, err := prov.db.Audit().Page(storage.AuditFilter{Operation: "stats"}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Decision != storage.DecisionAllowed || entries[0].Subject != "" || entries[0].Caller != provCoord.String() {
		t.Errorf("province stats entries %+v", entries)
	}
	for _, d := range []*node{a, b, x} {
		if got, _, _ := d.db.Audit().Page(storage.AuditFilter{}, 0, 10); len(got) != 0 {
			t.Errorf("district %s audited %d entries for statistics; the coordinator audits", d.id.Region, len(got))
		}
	}
	if v := testutil.ToFloat64(prov.svc.requests.WithLabelValues("allowed")); v != 1 {
		t.Errorf("allowed stats requests %v, want 1", v)
	}
}

// TestStatsRefusals: who may not ask is refused, typed, audited and
// counted.
func TestStatsRefusals(t *testing.T) {
	ca := exchangetest.CA(t, fed)
	cat := credit.DefaultCatalog()
	city := newNode(t, ca, certs.City, "zhejiang/quzhou")
	d := newNode(t, ca, certs.District, "zhejiang/quzhou/kecheng")
	reg := registry{city.reg, d.reg}
	city.start(reg, cat, time.Now)
	d.start(reg, cat, time.Now)
	for _, c := range []struct {
		svc    *Service
		caller certs.Identity
		kind   fault.Kind
	}{
		{city.svc, user(certs.Department, "zhejiang/quzhou", "market"), fault.Forbidden},
		{city.svc, user(certs.Coordinator, "zhejiang/hangzhou", "other-city"), fault.Forbidden},
		{city.svc, user(certs.Coordinator, "zhejiang", "province"), fault.Forbidden}, // through its own node
		{d.svc, user(certs.Operator, "zhejiang/quzhou/kecheng", "ops"), fault.Forbidden},
	} {
		_, err := c.svc.Stats(context.Background(), c.caller)
		if fault.KindOf(err) != c.kind {
			t.Errorf("%v: %v, want %s", c.caller, err, c.kind)
		}
	}
	entries, _, err := city.db.Audit().Page(storage.AuditFilter{Operation: "stats"}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 || entries[0].Decision != storage.DecisionDenied || entries[0].Reason != string(fault.Forbidden) {
		t.Errorf("refusals audited %+v", entries)
	}
	if v := testutil.ToFloat64(city.svc.requests.WithLabelValues("denied")); v != 3 {
		t.Errorf("denied %v, want 3", v)
	}
	// A district refuses a district's request for its counts.
	other := newNode(t, ca, certs.District, "zhejiang/quzhou/qujiang")
	err = other.ep.Call(context.Background(), exchange.Peer{Name: d.reg.Path, Addr: d.reg.Exchange, Identity: &d.id}, OpCounts,
		exchange.Meta{}, countsRequest{Version: wireVersion}, &countsReply{})
	if exchange.StatusOf(err) != exchange.StatusDenied {
		t.Errorf("a district asking a district's counts: %v, want denied", err)
	}
	// A city of another province is refused a district's counts.
	far := newNode(t, ca, certs.City, "jiangsu/nanjing")
	err = far.ep.Call(context.Background(), exchange.Peer{Name: d.reg.Path, Addr: d.reg.Exchange, Identity: &d.id}, OpCounts,
		exchange.Meta{}, countsRequest{Version: wireVersion}, &countsReply{})
	if exchange.CodeOf(err) != exchange.CodeForbidden {
		t.Errorf("another province's city asking a district's counts: %v, want forbidden", err)
	}
}

// TestBadAnswersDropped: a district's or a city's malformed answer is not
// merged.
func TestBadAnswersDropped(t *testing.T) {
	for _, r := range []countsReply{
		{Records: []categoryCount{{Domain: "FOOD-DRUG", Count: -1}}},
		{Departments: []departmentCount{{Department: "a", Late: 1}, {Department: "a", Late: 2}}},
		{Objections: caseCounts{Open: 1, Overdue: 2}},
		{Records: make([]categoryCount, maxCategories+1)},
	} {
		if badCounts(&r) == "" {
			t.Errorf("accepted %+v", r)
		}
	}
	if badAudit(&auditReply{Usage: []usageCount{{Operation: OperationLookup, Region: "zhejiang/hangzhou", Institution: "x", Count: 3}}}, "zhejiang/quzhou") == "" {
		t.Error("a city's count of another city's lookups is accepted")
	}
	if badAudit(&auditReply{Usage: []usageCount{{Operation: "stats", Count: 3}}}, "zhejiang/quzhou") == "" {
		t.Error("a count of another operation is accepted")
	}
}

func catIndex(t *testing.T, cats []Category, domain string, p credit.Polarity, s credit.Severity) int {
	t.Helper()
	for i, c := range cats {
		if c.Domain == domain && c.Polarity == p && c.Severity == s {
			return i
		}
	}
	t.Fatalf("no category %s/%s/%s in %+v", domain, p, s, cats)
	return -1
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func wantCell(t *testing.T, what string, c Cell, v int64) {
	t.Helper()
	if c.Suppressed || c.Value != v {
		t.Errorf("%s: %+v, want %d", what, c, v)
	}
}

func wantSuppressed(t *testing.T, what string, c Cell) {
	t.Helper()
	if !c.Suppressed || c.Value != 0 {
		t.Errorf("%s: %+v, want suppressed", what, c)
	}
}

// TestCaseAgesAreBucketedAndChecked: an open case's age in days falls in
// one bucket (5, 15, 30, older), and a reply whose ages do not add up to
// its open cases is refused.
func TestCaseAgesAreBucketedAndChecked(t *testing.T) {
	for days, want := range map[int]int{0: 0, 5: 0, 6: 1, 15: 1, 16: 2, 30: 2, 31: 3, 400: 3} {
		if got := ageBucket(days); got != want {
			t.Errorf("ageBucket(%d) = %d, want %d", days, got, want)
		}
	}
	for _, ages := range [][]int64{{1, 0, 0}, {1, 1, 0, 0}, {-1, 2, 0, 0}} {
		r := countsReply{Objections: caseCounts{Open: 1, Ages: ages}}
		if badCounts(&r) == "" {
			t.Errorf("ages %v of 1 open objection accepted", ages)
		}
	}
	if r := (countsReply{Objections: caseCounts{Open: 1}}); badCounts(&r) != "" {
		t.Errorf("a reply without ages (a district not counting them yet) refused: %s", badCounts(&r))
	}
}
