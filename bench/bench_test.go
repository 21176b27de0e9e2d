package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"credfed/credit"
)

// TestScheduleInterleaves: every round measures every phase, credfed
// first and then each of its baselines, before the next round starts;
// without PostgreSQL only credfed.
func TestScheduleInterleaves(t *testing.T) {
	got := Schedule(3, true)
	var want []Step
	for r := 1; r <= 3; r++ {
		want = append(want,
			Step{r, LookupC1, Credfed}, Step{r, LookupC1, Front}, Step{r, LookupC1, Direct},
			Step{r, LookupC64, Credfed}, Step{r, LookupC64, Front}, Step{r, LookupC64, Direct},
			Step{r, Intake, Credfed}, Step{r, Intake, Copy}, Step{r, Intake, Insert})
	}
	if len(got) != len(want) {
		t.Fatalf("Schedule(3, true) has %d steps, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("step %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	alone := Schedule(2, false)
	if len(alone) != 6 {
		t.Fatalf("Schedule(2, false) = %v, want 6 credfed steps", alone)
	}
	for _, s := range alone {
		if s.Side != Credfed {
			t.Errorf("without a baseline the schedule measures %s", s.Side)
		}
	}
}

// TestRatioAboveOneMeansCredfedBetter: rates are credfed ÷ baseline,
// costs baseline ÷ credfed; a missing or zero value gives no ratio.
func TestRatioAboveOneMeansCredfedBetter(t *testing.T) {
	for _, tc := range []struct {
		credfed, baseline float64
		higher            bool
		want              float64
	}{
		{2000, 1000, true, 2},      // twice the lookups per second
		{500, 1000, true, 0.5},     // half of them
		{10, 20, false, 2},         // half the latency
		{40, 20, false, 0.5},       // twice the CPU per lookup
		{0, 20, false, math.NaN()}, // nothing measured
		{math.NaN(), 20, true, math.NaN()},
	} {
		got := ratio(tc.credfed, tc.baseline, tc.higher)
		if math.IsNaN(tc.want) != math.IsNaN(got) || !math.IsNaN(got) && math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("ratio(%v, %v, higher %v) = %v, want %v", tc.credfed, tc.baseline, tc.higher, got, tc.want)
		}
	}
	// A figure's ratio is the median of its rounds' ratios, its values the
	// medians of each side's rounds.
	f := newFigure(figureSpec{name: "lookup_c64", unit: "lookups/s", higherIsBetter: true},
		[]float64{100, 300, 200, math.NaN()}, []float64{200, 200, 100, 100})
	if f.Value != 200 || f.BaselineValue == nil || *f.BaselineValue != 150 || f.Ratio == nil || *f.Ratio != 1.5 || f.Rounds != 3 {
		t.Errorf("figure = value %v baseline %v ratio %v rounds %d; want 200, 150, 1.5 (median of 0.5, 1.5, 2), 3",
			f.Value, deref(f.BaselineValue), deref(f.Ratio), f.Rounds)
	}
	lat := newFigure(figureSpec{name: "lookup_c1_p99", unit: "ms"}, []float64{5, 5}, []float64{10, 20})
	if lat.Ratio == nil || *lat.Ratio != 3 {
		t.Errorf("latency ratio = %v, want 3 (median of 10/5 and 20/5)", deref(lat.Ratio))
	}
	none := newFigure(figureSpec{name: "intake", unit: "records/s", higherIsBetter: true}, []float64{10}, nil)
	if none.BaselineValue != nil || none.Ratio != nil {
		t.Errorf("a figure without a baseline has baseline %v ratio %v", deref(none.BaselineValue), deref(none.Ratio))
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestResultJSONShape: the JSON `credfed bench --json` prints has the
// machine, the topology and figures with every field the issue names;
// a figure without a baseline has null baseline_value and ratio, and an
// unmeasured value is 0 with a note, never NaN (which JSON cannot hold).
func TestResultJSONShape(t *testing.T) {
	r := Result{Machine: machine(), Topology: Topology{Mode: "processes", Nodes: 7, Districts: 4, Summary: "s", Data: "d"},
		Figures: []Figure{
			newFigure(figureSpec{"lookup_c1", "lookups/s", "PostgreSQL + front", "data", "synced", true, "PG+front"}, []float64{300}, []float64{600}),
			newFigure(figureSpec{"index_lag", "s", "", "data", "synced", false, ""}, []float64{math.NaN()}, nil),
		}}
	data, err := r.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"machine", "topology", "figures"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("JSON has no %q: %s", k, data)
		}
	}
	var m struct {
		CPUs int `json:"cpus"`
	}
	if err := json.Unmarshal(doc["machine"], &m); err != nil || m.CPUs < 1 {
		t.Errorf("machine = %s (%v)", doc["machine"], err)
	}
	var figs []map[string]any
	if err := json.Unmarshal(doc["figures"], &figs); err != nil || len(figs) != 2 {
		t.Fatalf("figures = %s (%v)", doc["figures"], err)
	}
	for _, f := range figs {
		for _, k := range []string{"name", "value", "unit", "baseline", "baseline_value", "ratio", "data_size", "durability", "rounds"} {
			if _, ok := f[k]; !ok {
				t.Errorf("figure %v has no %q", f["name"], k)
			}
		}
	}
	if figs[0]["ratio"] != 0.5 || figs[0]["baseline_value"] != 600.0 || figs[0]["value"] != 300.0 || figs[0]["rounds"] != 1.0 {
		t.Errorf("lookup_c1 = %v", figs[0])
	}
	if figs[1]["ratio"] != nil || figs[1]["baseline_value"] != nil || figs[1]["value"] != 0.0 || figs[1]["note"] == nil {
		t.Errorf("an unmeasured figure without baseline = %v", figs[1])
	}
	header, rows, notes := r.Rows()
	if len(header) != 5 || len(rows) != 2 || rows[0][3] != "0.50×" || !strings.Contains(rows[0][2], "600 lookups/s PG+front") ||
		rows[1][2] != "—" || len(notes) != 1 || !strings.HasPrefix(notes[0], "[1] index_lag: ") {
		t.Errorf("table: %v %v %v", header, rows, notes)
	}
}

func TestFormatNumber(t *testing.T) {
	for v, want := range map[float64]string{1234567: "1,234,567", 1000: "1,000", 999.6: "1,000", 150: "150", 21.34: "21.3", 1.234: "1.23", -4500: "-4,500"} {
		if got := formatNumber(v); got != want {
			t.Errorf("formatNumber(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 1000; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(lat, 0.99); got != 990 {
		t.Errorf("p99 of 1..1000 ms = %v, want 990", got)
	}
	if got := percentile([]time.Duration{7 * time.Millisecond}, 0.99); got != 7 {
		t.Errorf("p99 of one sample = %v", got)
	}
	if !math.IsNaN(percentile(nil, 0.99)) {
		t.Error("p99 of nothing is not NaN")
	}
}

func TestSumMetric(t *testing.T) {
	page := `# HELP credfed_consensus_index_updates_applied_total Index updates applied.
# TYPE credfed_consensus_index_updates_applied_total counter
credfed_consensus_index_updates_applied_total 1200
credfed_consensus_index_updates_applied_total_other 5
credfed_lookups_total{decision="allowed"} 10
credfed_lookups_total{decision="refused",x="a}b"} 2.5
`
	if v, err := sumMetric(strings.NewReader(page), "credfed_consensus_index_updates_applied_total"); err != nil || v != 1200 {
		t.Errorf("counter = %v, %v; want 1200", v, err)
	}
	if v, err := sumMetric(strings.NewReader(page), "credfed_lookups_total"); err != nil || v != 12.5 {
		t.Errorf("labelled counter = %v, %v; want 12.5", v, err)
	}
	if v, err := sumMetricWith(strings.NewReader(page), "credfed_lookups_total", `decision="refused"`); err != nil || v != 2.5 {
		t.Errorf("the refused lookups = %v, %v; want 2.5", v, err)
	}
	if _, err := sumMetricWith(strings.NewReader(page), "credfed_lookups_total", `decision="refuse"`); err == nil {
		t.Error("a label value's prefix matched")
	}
	if _, err := sumMetric(strings.NewReader(page), "credfed_missing"); err == nil {
		t.Error("a missing metric is no error")
	}
}

// TestStageNote: the publishing stages' mean time per pass between two
// pages, only for the stages that ran.
func TestStageNote(t *testing.T) {
	before := `credfed_publish_stage_seconds_sum{stage="read"} 1
credfed_publish_stage_seconds_count{stage="read"} 10
credfed_publish_stage_seconds_bucket{stage="read",le="0.1"} 10
`
	after := `credfed_publish_stage_seconds_sum{stage="read"} 1.5
credfed_publish_stage_seconds_count{stage="read"} 20
credfed_publish_stage_seconds_sum{stage="index"} 2
credfed_publish_stage_seconds_count{stage="index"} 10
credfed_publish_stage_seconds_sum{stage="ack"} 0
credfed_publish_stage_seconds_count{stage="ack"} 0
`
	if got, want := stageNote(before, after), "10 publishing passes, each (mean) read 50.0 ms, index 200.0 ms"; got != want {
		t.Fatalf("note %q, want %q", got, want)
	}
	if got := stageNote(after, after); got != "" {
		t.Fatalf("no pass between: %q", got)
	}
}

func TestParseStat(t *testing.T) {
	line := "4242 (postgres: bench (x)) S 4200 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 12345 1000 100 18446744073709551615\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.comm != "postgres: bench (x)" || st.ppid != 4200 || st.user != 2500*time.Millisecond || st.system != 500*time.Millisecond ||
		st.reaped != 100*time.Millisecond || st.startTicks != 12345 {
		t.Errorf("parseStat = %+v", st)
	}
	if _, err := parseStat([]byte("4242 no parens")); err == nil {
		t.Error("a malformed line parsed")
	}
	all := map[int]procStat{1: {ppid: 0}, 10: {ppid: 1}, 11: {ppid: 10}, 12: {ppid: 10}, 20: {ppid: 1}, 30: {ppid: 99}}
	d := descendants(all, 10)
	if len(d) != 2 || !(d[0] == 11 && d[1] == 12 || d[0] == 12 && d[1] == 11) {
		t.Errorf("descendants of 10 = %v, want 11 and 12", d)
	}
}

// TestParseCPULine: /proc/stat's aggregate line gives its busy ticks,
// every column but idle and iowait up to steal (guest is already in user);
// a line of another CPU, a short one or a bad number is refused.
func TestParseCPULine(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	busy, err := parseCPULine("cpu  100 2 30 5000 40 5 6 7 90 1")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(100 + 2 + 30 + 5 + 6 + 7); busy != want {
		t.Errorf("busy %d, want %d", busy, want)
	}
	if busy, err := parseCPULine("cpu 1 2 3 4"); err == nil {
		t.Errorf("a short line parsed: %d", busy)
	}
	for _, bad := range []string{"cpu0 1 2 3 4 5 6 7 8", "cpu 1 2 x 4 5 6 7 8", "cpu 1 -2 3 4 5 6 7 8", "intr 1 2 3 4 5"} {
		if _, err := parseCPULine(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// This machine's: busy ticks since boot, which only grow.
	a, err := machineTicks()
	if err != nil {
		t.Skipf("no /proc/stat here (not Linux?): %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b := a; b <= a; {
		if time.Now().After(deadline) {
			t.Fatalf("busy ticks stayed at %d for 5 s of spinning", a)
		}
		for i := 0; i < 1_000_000; i++ { // busy, so that a tick passes
			_ = i * i
		}
		if b, err = machineTicks(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConfigBounds: settings out of bounds are refused by name (a typed
// error); the defaults of the quick and the full run are valid.
func TestConfigBounds(t *testing.T) {
	for _, c := range []Config{{Quick: true, Executable: "credfed"}, {Executable: "credfed"}, {InProcess: true}} {
		if err := c.WithDefaults().Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	for field, c := range map[string]Config{
		"districts":      {Districts: 13, Executable: "x"},
		"subjects":       {Subjects: 5, Executable: "x"},
		"rounds":         {Rounds: 21, Executable: "x"},
		"duration":       {LookupDuration: time.Millisecond, Executable: "x"},
		"intake":         {Intake: 999, Executable: "x"},
		"intake-clients": {IntakeClients: 65, Executable: "x"},
		"executable":     {},
		"profile":        {InProcess: true, ProfileDir: "/tmp/p"},
	} {
		err := c.WithDefaults().Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != field || !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want a *ConfigError naming it", field, err)
		}
	}
}

// TestDataset: every subject is a valid test identifier, record ids are
// unique in their district and count up, the rows are numbered 0 to
// Records-1 once each across the districts (the numbering Rows computes
// without making the other districts' rows), the subjects the lookups
// ask for have a record in two different districts, and Rows hands out
// chunks of at most its size and stops at fn's error.
func TestDataset(t *testing.T) {
	m, err := newRowMaker(credit.DefaultCatalog(), "market-supervision", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	districts := []string{"z/a/1", "z/a/2", "z/b/1", "z/b/2"}
	d := newDataset(m, districts, 1000)
	if d.Subjects != 1000 || len(d.Dual) != 200 || d.Records != 1200 {
		t.Fatalf("dataset: %d subjects, %d dual, %d records", d.Subjects, len(d.Dual), d.Records)
	}
	where := map[string]map[string]bool{}
	numbers := map[string]bool{}
	first := map[string]Row{}
	total := 0
	for _, dist := range districts {
		k := 0
		err := d.Rows(dist, 64, func(rows []Row) error {
			if len(rows) == 0 || len(rows) > 64 {
				t.Fatalf("a chunk of %d rows", len(rows))
			}
			for _, r := range rows {
				if k == 0 {
					first[dist] = r
				}
				if want := fmt.Sprintf("BENCH-%08d", k); r.ID != want {
					t.Fatalf("id %s in %s, want %s", r.ID, dist, want)
				}
				k++
				if r.District != dist || r.DisplayUntil <= credit.TodayAt(time.Now()) {
					t.Fatalf("row %+v in %s", r, dist)
				}
				if _, err := credit.ParseSubject(r.Subject, credit.ParseOptions{TestOnly: true}); err != nil {
					t.Fatalf("subject of %s: %v", r.ID, err)
				}
				if numbers[r.DecisionNumber] {
					t.Fatalf("row number %s twice", r.DecisionNumber)
				}
				numbers[r.DecisionNumber] = true
				if where[r.Subject] == nil {
					where[r.Subject] = map[string]bool{}
				}
				where[r.Subject][dist] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		total += k
	}
	if total != d.Records {
		t.Fatalf("%d rows over the districts, want %d", total, d.Records)
	}
	year := credit.TodayAt(time.Now()).AddDays(-4).Time().Year()
	for n := range d.Records {
		if !numbers[fmt.Sprintf("基准罚〔%d〕%d号", year, n)] {
			t.Fatalf("no row numbered %d", n)
		}
	}
	for _, s := range d.Dual {
		if len(where[s]) != 2 {
			t.Errorf("a dual subject is in %d districts", len(where[s]))
		}
	}
	if len(where) != 1000 {
		t.Errorf("%d distinct subjects, want 1000", len(where))
	}
	stop := errors.New("enough")
	calls := 0
	if err := d.Rows("z/a/1", 10, func([]Row) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("Rows after fn's error: %v, %d calls", err, calls)
	}
	if err := d.Rows("z/c/9", 10, func([]Row) error { return nil }); err == nil {
		t.Error("Rows of a district not in the data set")
	}
	in := intakeRows(m, "z/a/1", 1000, 10, "IN")
	if in[0].Subject == first["z/a/1"].Subject || in[0].Subject != person(1000) {
		t.Error("intake subjects are not new ones")
	}
	batches, err := ndjsonBatches(in, 4)
	if err != nil || len(batches) != 3 || strings.Count(string(batches[2]), "\n") != 2 {
		t.Errorf("ndjson batches: %d (%v)", len(batches), err)
	}
}

// TestParallelStream: every chunk is done once; a worker's error is
// returned and stops the producer, which never runs more than the
// workers plus one ahead.
func TestParallelStream(t *testing.T) {
	var done atomic.Int64
	produce := func(n int, emitted *int) func(emit func([]Row) error) error {
		return func(emit func([]Row) error) error {
			for i := range n {
				if err := emit(make([]Row, i%3+1)); err != nil {
					return err
				}
				*emitted++
			}
			return nil
		}
	}
	emitted := 0
	err := parallelStream(context.Background(), produce(100, &emitted), 4, func(_ context.Context, rows []Row) error {
		done.Add(int64(len(rows)))
		return nil
	})
	if err != nil || emitted != 100 || done.Load() != 199 { // 34 chunks of 1, 33 of 2, 33 of 3
		t.Fatalf("err %v, %d emitted, %d rows done", err, emitted, done.Load())
	}
	boom := errors.New("boom")
	emitted = 0
	var calls atomic.Int64
	err = parallelStream(context.Background(), produce(1000, &emitted), 2, func(context.Context, []Row) error {
		calls.Add(1)
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("a worker's error: %v", err)
	}
	if emitted > 10 {
		t.Fatalf("the producer went on for %d chunks after the first error", emitted)
	}
}

func TestSpreadNamesNoisyFigures(t *testing.T) {
	r := Result{Figures: []Figure{
		{Name: "steady", Values: []float64{100, 110}, BaselineValues: []float64{50, 52}},
		{Name: "noisy", Values: []float64{100, 101}, BaselineValues: []float64{40, 90}},
		{Name: "single", Values: []float64{1}},
	}}
	got := r.Spread()
	if !strings.Contains(got, "noisy (2.2×)") || strings.Contains(got, "steady") || strings.Contains(got, "single") {
		t.Fatalf("spread: %q", got)
	}
	if (Result{Figures: r.Figures[:1]}).Spread() != "" {
		t.Fatal("a steady run warned")
	}
}
