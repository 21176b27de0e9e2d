package queriers

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gopkg.in/yaml.v3"

	"credfed/api"
	"credfed/fault"
)

// clock is an injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

var shanghai = time.FixedZone("CST", 8*60*60)

// at is a time of 2026-12-01 in Shanghai.
func at(h, m int) time.Time { return time.Date(2026, 12, 1, h, m, 0, 0, shanghai) }

func newTracker(t *testing.T, cfg Config, c *clock) *Tracker {
	t.Helper()
	cfg.Now = c.Now
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return New(cfg)
}

func quota(inst, purpose string, limit int, per time.Duration) Quota {
	return Quota{Institution: inst, Purpose: purpose, Limit: limit, Per: Duration(per)}
}

// refusal checks that err is too_many_requests resetting at reset, with
// the wait from now.
func refusal(t *testing.T, err error, reset, now time.Time) {
	t.Helper()
	e := fault.As(err)
	if e == nil || e.Kind != fault.TooManyRequests {
		t.Fatalf("want too_many_requests, got %v", err)
	}
	if want := reset.UTC().Format(time.RFC3339); !strings.Contains(e.Message, want) {
		t.Errorf("message %q does not give the reset %s", e.Message, want)
	}
	if e.RetryAfter != reset.Sub(now) {
		t.Errorf("RetryAfter %v, want %v", e.RetryAfter, reset.Sub(now))
	}
}

func usage(t *testing.T, tr *Tracker, inst, purpose string) api.QuotaUsage {
	t.Helper()
	for _, q := range querier(t, tr, inst).Quotas {
		if q.Purpose == purpose {
			return q
		}
	}
	t.Fatalf("%s has no quota for %q", inst, purpose)
	return api.QuotaUsage{}
}

func querier(t *testing.T, tr *Tracker, inst string) api.Querier {
	t.Helper()
	for _, q := range tr.Report().Institutions {
		if q.Institution == inst {
			return q
		}
	}
	t.Fatalf("no account of %s", inst)
	return api.Querier{}
}

// TestQuotaFixedWindow: a quota admits up to its limit, then refuses with
// the exact reset (the next midnight in Shanghai) until the window ends;
// n queries at once are taken all or nothing.
func TestQuotaFixedWindow(t *testing.T) {
	c := &clock{t: at(10, 0)}
	tr := newTracker(t, Config{Quotas: []Quota{quota("", "", 10, 24*time.Hour)}}, c)
	midnight := time.Date(2026, 12, 2, 0, 0, 0, 0, shanghai)
	for i := range 7 {
		if err := tr.Admit("bank-a", "credit-check", 1); err != nil {
			t.Fatalf("query %d: %v", i+1, err)
		}
	}
	// 4 more do not fit in the 3 left: none is taken.
	refusal(t, tr.Admit("bank-a", "credit-check", 4), midnight, c.Now())
	if err := tr.Admit("bank-a", "hiring", 3); err != nil {
		t.Fatalf("3 more within the limit: %v", err)
	}
	c.Set(at(23, 59))
	refusal(t, tr.Admit("bank-a", "credit-check", 1), midnight, c.Now())
	if u := usage(t, tr, "bank-a", ""); u.Used != 10 || u.Limit != 10 || u.Per != "24h" || !u.Default || u.ResetsAt != "2026-12-01T16:00:00Z" {
		t.Errorf("usage %+v", u)
	}
	q := querier(t, tr, "bank-a")
	if q.Admitted != 10 || q.Refused != 5 {
		t.Errorf("admitted %d refused %d, want 10 and 5", q.Admitted, q.Refused)
	}
	// More than the whole quota at once says so.
	if e := fault.As(tr.Admit("bank-a", "credit-check", 11)); e == nil || !strings.Contains(e.Message, "send at most 10") {
		t.Errorf("a batch above the quota: %v", e)
	}
	c.Set(midnight)
	for i := range 10 {
		if err := tr.Admit("bank-a", "credit-check", 1); err != nil {
			t.Fatalf("after the reset, query %d: %v", i+1, err)
		}
	}
	refusal(t, tr.Admit("bank-a", "credit-check", 1), midnight.Add(24*time.Hour), c.Now())
	if err := tr.Admit("bank-a", "x", 0); err != nil {
		t.Errorf("nothing to admit: %v", err)
	}
	if err := tr.Admit("bank-a", "x", -1); err == nil {
		t.Error("a negative count was admitted")
	}
}

// TestQuotaHourlyWindowsAlign: a 1h window ends on the hour; a request
// over two quotas gets the reset of the later.
func TestQuotaHourlyWindowsAlign(t *testing.T) {
	c := &clock{t: at(9, 20)}
	tr := newTracker(t, Config{Quotas: []Quota{quota("", "", 3, time.Hour), quota("", "", 3, 24*time.Hour)}}, c)
	for range 3 {
		if err := tr.Admit("bank-a", "p", 1); err != nil {
			t.Fatal(err)
		}
	}
	// Both are full: the hourly one resets at 10:00, the daily one at
	// midnight, and nothing is admitted before midnight.
	refusal(t, tr.Admit("bank-a", "p", 1), time.Date(2026, 12, 2, 0, 0, 0, 0, shanghai), c.Now())
	c.Set(at(10, 0))
	refusal(t, tr.Admit("bank-a", "p", 1), time.Date(2026, 12, 2, 0, 0, 0, 0, shanghai), c.Now())
	if u := usage(t, tr, "bank-a", ""); u.Per != "1h" || u.Used != 0 || u.ResetsAt != "2026-12-01T03:00:00Z" {
		t.Errorf("the hourly quota after its reset: %+v", u)
	}
}

// TestQuotaMatching: a default quota holds each institution on its own; a
// quota naming an institution replaces the default of the same purpose
// and per for it only; a purpose quota counts that purpose only.
func TestQuotaMatching(t *testing.T) {
	c := &clock{t: at(10, 0)}
	tr := newTracker(t, Config{Quotas: []Quota{
		quota("", "", 5, 24*time.Hour),
		quota("", "credit-check", 2, time.Hour),
		quota("bank-x", "", 50, 24*time.Hour),
		quota("bank-y", "hiring", 1, 24*time.Hour),
	}}, c)
	admit := func(inst, purpose string, n int) error { return tr.Admit(inst, purpose, n) }
	// Each institution has its own count of the default.
	for _, inst := range []string{"bank-a", "bank-b"} {
		if err := admit(inst, "contract", 5); err != nil {
			t.Fatalf("%s: %v", inst, err)
		}
		if admit(inst, "contract", 1) == nil {
			t.Fatalf("%s: the default quota of 5 admitted a 6th", inst)
		}
	}
	// The purpose quota holds credit-check only.
	if err := admit("bank-c", "credit-check", 2); err != nil {
		t.Fatal(err)
	}
	if admit("bank-c", "credit-check", 1) == nil {
		t.Fatal("credit-check beyond its 2 per hour")
	}
	if err := admit("bank-c", "contract", 3); err != nil {
		t.Fatalf("another purpose within the default: %v", err)
	}
	// bank-x's own quota replaces the default of every purpose per 24h,
	// not the credit-check one.
	if err := admit("bank-x", "contract", 40); err != nil {
		t.Fatalf("bank-x within its own quota: %v", err)
	}
	if err := admit("bank-x", "credit-check", 2); err != nil {
		t.Fatal(err)
	}
	if admit("bank-x", "credit-check", 1) == nil {
		t.Fatal("bank-x is not held to the default credit-check quota")
	}
	if admit("bank-x", "contract", 9) == nil {
		t.Fatal("bank-x beyond its 50")
	}
	// bank-y's hiring quota holds bank-y only, besides the default.
	if err := admit("bank-y", "hiring", 1); err != nil {
		t.Fatal(err)
	}
	if admit("bank-y", "hiring", 1) == nil {
		t.Fatal("bank-y beyond its hiring quota")
	}
	if err := admit("bank-z", "hiring", 2); err != nil {
		t.Fatalf("bank-y's quota held bank-z: %v", err)
	}
	x := querier(t, tr, "bank-x")
	if len(x.Quotas) != 2 || x.Quotas[0].Purpose != "credit-check" || !x.Quotas[0].Default || x.Quotas[1].Limit != 50 || x.Quotas[1].Default || x.Quotas[1].Used != 42 {
		t.Errorf("bank-x quotas %+v", x.Quotas)
	}
	if y := querier(t, tr, "bank-y"); len(y.Quotas) != 3 {
		t.Errorf("bank-y is held to %d quotas, want the two defaults and its own: %+v", len(y.Quotas), y.Quotas)
	}
}

// TestConcurrentAdmitNeverOverAdmits: many goroutines asking at once get
// exactly the limit admitted, no more (run with -race).
func TestConcurrentAdmitNeverOverAdmits(t *testing.T) {
	c := &clock{t: at(10, 0)}
	tr := newTracker(t, Config{Quotas: []Quota{quota("", "", 1000, 24*time.Hour)}, Registerer: prometheus.NewRegistry()}, c)
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				n := 1 + (g+i)%3
				if err := tr.Admit("bank-a", "credit-check", n); err == nil {
					admitted.Add(int64(n))
				} else if fault.KindOf(err) == fault.TooManyRequests {
					refused.Add(1)
				} else {
					t.Error(err)
				}
				tr.Observe(Query{Institution: "bank-a", Purpose: "credit-check", Subject: fmt.Sprint(g, i), Reference: "R"})
				if i%10 == 0 {
					tr.Report()
				}
			}
		}()
	}
	wg.Wait()
	used := usage(t, tr, "bank-a", "").Used
	if admitted.Load() > 1000 || int64(used) != admitted.Load() || used < 998 {
		t.Fatalf("admitted %d, quota used %d: want at most 1000 and the same", admitted.Load(), used)
	}
	if got := testutil.ToFloat64(tr.refusals); got != float64(refused.Load()) || got == 0 {
		t.Errorf("refusals metric %v, refused %d", got, refused.Load())
	}
}

func flagOf(t *testing.T, tr *Tracker, inst, name string) *api.QuerierFlag {
	t.Helper()
	for _, f := range querier(t, tr, inst).Flags {
		if f.Flag == name {
			return &f
		}
	}
	return nil
}

func flagCount(tr *Tracker, name string) float64 {
	return testutil.ToFloat64(tr.flagsTotal.WithLabelValues(name))
}

// TestDistinctSubjectsFlag: many subjects under one reference raise it;
// as many subjects each under its own reference do not; subjects never
// appear in the report.
func TestDistinctSubjectsFlag(t *testing.T) {
	c := &clock{t: at(10, 0)}
	tr := newTracker(t, Config{Flags: Flags{DistinctSubjects: 20, ReferenceRatio: 0.1}}, c)
	pseudo := func(i int) string { return fmt.Sprintf("%064x", 0xabc000+i) }
	for i := range 40 {
		tr.Observe(Query{Institution: "careful", Purpose: "p", Subject: pseudo(i), Reference: fmt.Sprint("CASE-", i), At: c.Now()})
		// The same subject twice under one case is still casework.
		tr.Observe(Query{Institution: "careful", Purpose: "p", Subject: pseudo(i), Reference: fmt.Sprint("CASE-", i), At: c.Now()})
	}
	if f := flagOf(t, tr, "careful", api.FlagDistinctSubjects); f != nil {
		t.Errorf("one reference per subject raised %+v", f)
	}
	for i := range 19 {
		tr.Observe(Query{Institution: "screener", Purpose: "p", Subject: pseudo(i), Reference: "CASE-1", At: c.Now()})
	}
	if f := flagOf(t, tr, "screener", api.FlagDistinctSubjects); f != nil {
		t.Errorf("19 subjects, below the threshold of 20, raised %+v", f)
	}
	for i := 19; i < 40; i++ {
		tr.Observe(Query{Institution: "screener", Purpose: "p", Subject: pseudo(i), At: c.Now()})
	}
	f := flagOf(t, tr, "screener", api.FlagDistinctSubjects)
	if f == nil || f.Basis != 40 || f.Observed != 1.0/40 || f.Threshold != 0.1 || f.Count != 21 || f.Since != "2026-12-01T02:00:00Z" {
		t.Fatalf("flag %+v", f)
	}
	if n := flagCount(tr, api.FlagDistinctSubjects); n != 1 {
		t.Errorf("metric %v, want 1 episode", n)
	}
	body, _ := json.Marshal(tr.Report())
	if strings.Contains(string(body), pseudo(3)) || strings.Contains(string(body), "abc0") || strings.Contains(string(body), "CASE") {
		t.Errorf("the report holds a subject or a reference: %s", body)
	}
	// A new window starts from nothing.
	c.Set(at(11, 0))
	for i := range 19 {
		tr.Observe(Query{Institution: "careful", Purpose: "p", Subject: pseudo(100 + i), At: c.Now()})
	}
	if f := flagOf(t, tr, "careful", api.FlagDistinctSubjects); f != nil {
		t.Errorf("the previous window's subjects were counted: %+v", f)
	}
}

// TestOffHoursFlag: queries within 07:00-21:00 in Shanghai do not raise
// it; one before 07:00 or from 21:00 does.
func TestOffHoursFlag(t *testing.T) {
	c := &clock{t: at(10, 0)}
	tr := newTracker(t, Config{}, c)
	for _, tm := range []time.Time{at(7, 0), at(12, 30), at(20, 59)} {
		tr.Observe(Query{Institution: "day", Purpose: "p", At: tm})
	}
	if f := flagOf(t, tr, "day", api.FlagOffHours); f != nil {
		t.Errorf("working hours raised %+v", f)
	}
	tr.Observe(Query{Institution: "night", Purpose: "p", At: at(6, 59)})
	if f := flagOf(t, tr, "night", api.FlagOffHours); f == nil || f.Since != "2026-11-30T22:59:00Z" || f.Observed != 1 {
		t.Fatalf("06:59: %+v", f)
	}
	tr.Observe(Query{Institution: "night", Purpose: "p", At: at(21, 0)})
	if f := flagOf(t, tr, "night", api.FlagOffHours); f == nil || f.Count != 2 || f.At != "2026-12-01T13:00:00Z" {
		t.Fatalf("21:00: %+v", f)
	}
	// The same instant written in UTC is judged in Shanghai.
	tr.Observe(Query{Institution: "utc", Purpose: "p", At: time.Date(2026, 12, 1, 23, 0, 0, 0, time.UTC)}) // 07:00 in Shanghai
	if f := flagOf(t, tr, "utc", api.FlagOffHours); f != nil {
		t.Errorf("07:00 in Shanghai raised %+v", f)
	}

	// Hours spanning midnight, and a threshold of 3 per window.
	tr2 := newTracker(t, Config{Flags: Flags{WorkingHours: "22:00-06:00", OffHoursQueries: 3}}, c)
	for _, tm := range []time.Time{at(23, 0), at(3, 0), at(10, 5), at(10, 10)} {
		tr2.Observe(Query{Institution: "shift", Purpose: "p", At: tm})
	}
	if f := flagOf(t, tr2, "shift", api.FlagOffHours); f != nil {
		t.Errorf("two off-hours queries raised a threshold of 3: %+v", f)
	}
	tr2.Observe(Query{Institution: "shift", Purpose: "p", At: at(10, 15)})
	if f := flagOf(t, tr2, "shift", api.FlagOffHours); f == nil || f.Observed != 3 || f.Threshold != 3 {
		t.Errorf("a third one: %+v", f)
	}
}

// TestTimeZone: the default zone is UTC+08:00 (from tzdata, or the fixed
// fallback); an unknown one is refused without being repeated.
func TestTimeZone(t *testing.T) {
	loc, err := loadLocation(DefaultTimeZone)
	if err != nil {
		t.Fatal(err)
	}
	if _, off := time.Date(2026, 7, 1, 0, 0, 0, 0, loc).Zone(); off != 8*3600 {
		t.Errorf("offset %d", off)
	}
	err = Config{TimeZone: "Mars/Olympus_Mons"}.Validate()
	if ce, ok := err.(*ConfigError); !ok || ce.Field != "time_zone" || strings.Contains(err.Error(), "Mars") {
		t.Errorf("unknown zone: %v", err)
	}
}

// TestRarePurposeFlag: a purpose under 5% of 100 queries raises it; a mix
// of purposes each above it does not, nor a rare one before 50 queries.
func TestRarePurposeFlag(t *testing.T) {
	c := &clock{t: at(10, 0)}
	tr := newTracker(t, Config{Flags: Flags{RarePurposeShare: 0.05, RarePurposeAfter: 50}}, c)
	for i := range 100 {
		p := "credit-check"
		if i%3 == 0 {
			p = "contract"
		}
		tr.Observe(Query{Institution: "mixed", Purpose: p, At: c.Now()})
	}
	tr.Observe(Query{Institution: "young", Purpose: "credit-check", At: c.Now()})
	tr.Observe(Query{Institution: "young", Purpose: "hiring", At: c.Now()})
	for i := range 100 {
		tr.Observe(Query{Institution: "bank", Purpose: "credit-check", At: c.Now().Add(time.Duration(i) * time.Second)})
	}
	for _, inst := range []string{"mixed", "young", "bank"} {
		if f := flagOf(t, tr, inst, api.FlagRarePurpose); f != nil {
			t.Errorf("%s raised %+v", inst, f)
		}
	}
	tr.Observe(Query{Institution: "bank", Purpose: "hiring", At: c.Now()})
	f := flagOf(t, tr, "bank", api.FlagRarePurpose)
	if f == nil || f.Purpose != "hiring" || f.Basis != 101 || f.Observed != 1.0/101 || f.Threshold != 0.05 {
		t.Fatalf("flag %+v", f)
	}
	if q := querier(t, tr, "bank"); q.Purposes["hiring"] != 1 || q.Purposes["credit-check"] != 100 || q.Queries != 101 {
		t.Errorf("counts %+v", q)
	}
}

// observeBatch observes a batch of n rows.
func observeBatch(tr *Tracker, inst string, n int, at time.Time) {
	for i := range n {
		tr.Observe(Query{Institution: inst, Purpose: "p", Subject: fmt.Sprint(i), Reference: fmt.Sprint("B", i), At: at, Batch: n})
	}
}

// TestLargeBatchFlag: after five batches of about 200 rows, one of 5000
// raises it once; batches near the usual size, or before five batches,
// do not.
func TestLargeBatchFlag(t *testing.T) {
	c := &clock{t: at(10, 0)}
	tr := newTracker(t, Config{}, c)
	for _, n := range []int{200, 180, 220, 200, 250, 300} {
		observeBatch(tr, "steady", n, c.Now())
	}
	observeBatch(tr, "early", 200, c.Now())
	observeBatch(tr, "early", 5000, c.Now())
	for i := range 50 {
		tr.Observe(Query{Institution: "single", Purpose: "p", Subject: fmt.Sprint(i), Reference: fmt.Sprint(i), At: c.Now(), Batch: 1})
	}
	for _, inst := range []string{"steady", "early", "single"} {
		if f := flagOf(t, tr, inst, api.FlagLargeBatch); f != nil {
			t.Errorf("%s raised %+v", inst, f)
		}
	}
	observeBatch(tr, "steady", 5000, c.Now())
	f := flagOf(t, tr, "steady", api.FlagLargeBatch)
	if f == nil || f.Observed != 5000 || f.Threshold != 2200 || f.Basis != 6 || f.Count != 1 {
		t.Fatalf("flag %+v", f)
	}
	if n := flagCount(tr, api.FlagLargeBatch); n != 1 {
		t.Errorf("metric %v, want 1", n)
	}
}

// TestFlagHold: a flag raised again within the hold period is the same
// episode; after it, the flag leaves the report, and a new raise is a
// new episode.
func TestFlagHold(t *testing.T) {
	c := &clock{t: at(22, 0)}
	tr := newTracker(t, Config{Flags: Flags{Hold: Duration(2 * time.Hour)}}, c)
	tr.Observe(Query{Institution: "night", Purpose: "p", At: c.Now()})
	c.Set(at(23, 30))
	tr.Observe(Query{Institution: "night", Purpose: "p", At: c.Now()})
	if f := flagOf(t, tr, "night", api.FlagOffHours); f == nil || f.Count != 2 || f.Since != "2026-12-01T14:00:00Z" {
		t.Fatalf("%+v", f)
	}
	if n := flagCount(tr, api.FlagOffHours); n != 1 {
		t.Errorf("metric %v within the hold", n)
	}
	c.Set(at(23, 30).Add(2*time.Hour + time.Second))
	if f := flagOf(t, tr, "night", api.FlagOffHours); f != nil {
		t.Errorf("after the hold: %+v", f)
	}
	tr.Observe(Query{Institution: "night", Purpose: "p", At: c.Now()})
	if f := flagOf(t, tr, "night", api.FlagOffHours); f == nil || f.Count != 1 {
		t.Errorf("new episode: %+v", f)
	}
	if n := flagCount(tr, api.FlagOffHours); n != 2 {
		t.Errorf("metric %v, want 2 episodes", n)
	}
	// A disabled flag is never raised.
	tr2 := newTracker(t, Config{Flags: Flags{Disable: []string{api.FlagOffHours}}}, c)
	tr2.Observe(Query{Institution: "night", Purpose: "p", At: c.Now()})
	if f := flagOf(t, tr2, "night", api.FlagOffHours); f != nil {
		t.Errorf("disabled: %+v", f)
	}
}

// TestBounds: 100,000 distinct institutions, subjects, purposes and batch
// sizes leave every map within its cap; the institutions beyond the cap
// share one account, held to the default quota together.
func TestBounds(t *testing.T) {
	c := &clock{t: at(10, 0)}
	tr := newTracker(t, Config{MaxInstitutions: 100, Quotas: []Quota{quota("", "", 1_000_000, 24*time.Hour), quota("named", "", 5, time.Hour)},
		Flags: Flags{DistinctCap: 500, DistinctBudget: 1000}}, c)
	const n = 100_000
	for i := range n {
		inst := fmt.Sprint("inst-", i)
		if err := tr.Admit(inst, "p", 1); err != nil {
			t.Fatal(err)
		}
		tr.Observe(Query{Institution: inst, Purpose: "p", Subject: fmt.Sprint("s", i), Reference: fmt.Sprint("r", i), At: c.Now()})
	}
	// An institution named in a quota is tracked beyond the cap.
	if err := tr.Admit("named", "p", 5); err != nil {
		t.Fatal(err)
	}
	if tr.Admit("named", "p", 1) == nil {
		t.Error("the named institution beyond the cap is not held to its own quota")
	}
	for i := range n {
		tr.Observe(Query{Institution: "named", Purpose: fmt.Sprint("p-", i), Subject: fmt.Sprint("s", i), Reference: fmt.Sprint("r", i),
			At: c.Now(), Batch: 2 + i%(n/2)})
	}
	tr.mu.Lock()
	if len(tr.insts) != 102 { // 100 + named + (other)
		t.Errorf("%d accounts", len(tr.insts))
	}
	held := 0
	for _, a := range tr.insts {
		held += len(a.subjects) + len(a.refs)
		if len(a.subjects) > 500 || len(a.refs) > 500 || len(a.purposes) > maxPurposes+1 || len(a.pending) > maxPending || len(a.windows) > 2 || len(a.flags) > 4 {
			t.Errorf("%s: %d subjects, %d refs, %d purposes, %d pending, %d windows, %d flags", a.name,
				len(a.subjects), len(a.refs), len(a.purposes), len(a.pending), len(a.windows), len(a.flags))
		}
	}
	if held != tr.entries || tr.entries > 1000 {
		t.Errorf("%d entries held, %d counted, budget 1000", held, tr.entries)
	}
	other := tr.insts[otherName]
	ok := other != nil && other.overflow && other.queries == n-100 && other.windows[0].used == n-100 && other.subjectsFull
	tr.mu.Unlock()
	if !ok {
		t.Fatalf("overflow account %+v", other)
	}
	rep := tr.Report()
	if last := rep.Institutions[len(rep.Institutions)-1]; last.Institution != otherName || !last.Overflow || len(rep.Institutions) != 102 {
		t.Errorf("the report's last account %+v of %d", last.Institution, len(rep.Institutions))
	}
	// A new window gives the budget back.
	c.Set(at(11, 0))
	tr.Observe(Query{Institution: "named", Purpose: "p", Subject: "s", At: c.Now()})
	tr.mu.Lock()
	a := tr.insts["named"]
	subjects, refs, entries := len(a.subjects), len(a.refs), tr.entries
	tr.mu.Unlock()
	if subjects != 1 || refs != 0 || entries > 1000 {
		t.Errorf("after the window: %d subjects, %d refs, %d entries", subjects, refs, entries)
	}
}

// TestValidate: each bad field is refused by name, without its value.
func TestValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("the zero config: %v", err)
	}
	long := strings.Repeat("x", 300)
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{Quotas: []Quota{quota("", "", 0, time.Hour)}}, "quotas[0].limit"},
		{Config{Quotas: []Quota{quota("", "", 1, time.Hour), quota("", "", 1, 0)}}, "quotas[1].per"},
		{Config{Quotas: []Quota{quota("", "", 1, 400*24*time.Hour)}}, "quotas[0].per"},
		{Config{Quotas: []Quota{quota(long, "", 1, time.Hour)}}, "quotas[0].institution"},
		{Config{Quotas: []Quota{quota("a", "p\n", 1, time.Hour)}}, "quotas[0].purpose"},
		{Config{Quotas: []Quota{quota("a", "p", 1, time.Hour), quota("a", "p", 9, time.Hour)}}, "quotas[1]"},
		{Config{Quotas: make([]Quota, MaxQuotas+1)}, "quotas"},
		{Config{MaxInstitutions: -1}, "max_institutions"},
		{Config{Flags: Flags{Disable: []string{"offhours"}}}, "flags.disable[0]"},
		{Config{Flags: Flags{Window: Duration(time.Second)}}, "flags.window"},
		{Config{Flags: Flags{Hold: Duration(-time.Second)}}, "flags.hold"},
		{Config{Flags: Flags{DistinctSubjects: 2000}}, "flags.distinct_subjects"},
		{Config{Flags: Flags{DistinctSubjects: 5, DistinctCap: 10, DistinctBudget: 5}}, "flags.distinct_cap"},
		{Config{Flags: Flags{ReferenceRatio: 1.5}}, "flags.reference_ratio"},
		{Config{Flags: Flags{RarePurposeShare: -0.1}}, "flags.rare_purpose_share"},
		{Config{Flags: Flags{BatchFactor: 0.5}}, "flags.batch_factor"},
		{Config{Flags: Flags{BatchAfter: batchHistory + 1}}, "flags.batch_after"},
		{Config{Flags: Flags{OffHoursQueries: -1}}, "flags.off_hours_queries"},
		{Config{Flags: Flags{WorkingHours: "7-21"}}, "flags.working_hours"},
		{Config{Flags: Flags{WorkingHours: "07:00-25:00"}}, "flags.working_hours"},
		{Config{Flags: Flags{WorkingHours: "08:00-08:00"}}, "flags.working_hours"},
	} {
		err := c.cfg.Validate()
		ce, ok := err.(*ConfigError)
		if !ok || ce.Field != c.field {
			t.Errorf("want a refusal of %s, got %v", c.field, err)
			continue
		}
		if strings.Contains(err.Error(), long) || strings.Contains(err.Error(), "offhours") || strings.Contains(err.Error(), "7-21") {
			t.Errorf("%s: the value is repeated: %v", c.field, err)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("New took a config Validate refuses")
		}
	}()
	New(Config{MaxInstitutions: -1})
}

// TestYAML: the `queriers:` section reads as docs/config.md writes it.
func TestYAML(t *testing.T) {
	var cfg Config
	dec := yaml.NewDecoder(strings.NewReader(`
quotas:
  - {purpose: credit-check, limit: 2000, per: 24h}
  - {institution: bank-x, limit: 50000, per: 24h}
time_zone: Asia/Shanghai
max_institutions: 1000
flags:
  window: 30m
  working_hours: "08:00-20:00"
  batch_factor: 20
  disable: [off_hours]
`))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Quotas) != 2 || cfg.Quotas[1] != quota("bank-x", "", 50000, 24*time.Hour) || cfg.Quotas[0].Purpose != "credit-check" ||
		cfg.MaxInstitutions != 1000 || cfg.Flags.Window != Duration(30*time.Minute) || cfg.Flags.BatchFactor != 20 || cfg.Flags.Disable[0] != "off_hours" {
		t.Errorf("%+v", cfg)
	}
	if err := yaml.Unmarshal([]byte("quotas: [{limit: 1, per: a day}]"), &cfg); err == nil || !strings.Contains(err.Error(), "not a duration") {
		t.Errorf("a bad duration: %v", err)
	}
}

// TestIsZero: every YAML field of Config and Flags makes it non-zero, and
// an empty section is omitted when marshalled.
func TestIsZero(t *testing.T) {
	if !(Config{Now: time.Now}).IsZero() {
		t.Fatal("a config with only a clock is not zero")
	}
	for _, sub := range []string{"", "Flags"} {
		var cfg Config
		v := reflect.ValueOf(&cfg).Elem()
		if sub != "" {
			v = v.FieldByName(sub)
		}
		for i := range v.NumField() {
			name := v.Type().Field(i).Name
			if tag := v.Type().Field(i).Tag.Get("yaml"); tag == "-" || name == "Flags" {
				continue
			}
			cfg = Config{}
			v := reflect.ValueOf(&cfg).Elem()
			if sub != "" {
				v = v.FieldByName(sub)
			}
			f := v.Field(i)
			switch f.Kind() {
			case reflect.Slice:
				f.Set(reflect.MakeSlice(f.Type(), 1, 1))
			case reflect.String:
				f.SetString("x")
			case reflect.Int, reflect.Int64:
				f.SetInt(1)
			case reflect.Float64:
				f.SetFloat(1)
			default:
				t.Fatalf("%s.%s: kind %v; extend this test", sub, name, f.Kind())
			}
			if cfg.IsZero() {
				t.Errorf("IsZero ignores %s.%s", sub, name)
			}
		}
	}
	type wrapper struct {
		Queriers Config `yaml:"queriers,omitempty"`
	}
	if b, err := yaml.Marshal(wrapper{}); err != nil || strings.TrimSpace(string(b)) != "{}" {
		t.Errorf("an empty section marshals as %q, %v", b, err)
	}
}
