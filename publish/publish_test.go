package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"credfed/consensus"
	"credfed/credit"
	"credfed/internal/testlog"
	"credfed/internal/wait"
	"credfed/jobs"
	"credfed/storage"
)

// index is a test double of the Raft replica: a catalog that may be
// missing, and a submit that may fail.
type index struct {
	mu      sync.Mutex
	cat     *credit.Catalog
	fail    error
	applied []consensus.IndexUpdate
}

func (x *index) SubmitIndex(ctx context.Context, u []consensus.IndexUpdate) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.fail != nil {
		return x.fail
	}
	x.applied = append(x.applied, u...)
	return nil
}

func (x *index) Catalog() *credit.Catalog {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.cat
}

func (x *index) set(cat *credit.Catalog, fail error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.cat, x.fail = cat, fail
}

func resolve(ctx context.Context, subjects []string) ([]credit.Pseudonym, error) {
	out := make([]credit.Pseudonym, len(subjects))
	for i := range subjects {
		out[i][0] = byte(i + 1)
	}
	return out, nil
}

// district is a real records store holding one accepted record.
func district(t *testing.T) *storage.DB {
	t.Helper()
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	today := credit.TodayAt(time.Now())
	rec, err := credit.DefaultCatalog().Accept(credit.Record{ID: "P-1", Subject: credit.SyntheticPerson(1, credit.NewDate(1980, 1, 1)),
		CatalogItem: "FOOD-DRUG-PENALTY", DecisionNumber: "X〔2026〕1", OccurredOn: today - 9, DecidedOn: today - 2,
		Summary: "s", Department: "market-supervision", District: "zhejiang/quzhou/kecheng"}, time.Now(), credit.ParseOptions{TestMode: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.SubmitRecords([]credit.Record{rec}); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestStalledPublisherSaysWhy: a district whose publisher cannot publish
// — no catalog yet, then a leader that cannot be reached — used to wait in
// silence (both were taken for "no leader" and logged at no level). Each
// cause is now the job's error, in its status and, once it has lasted the
// job's patience, in a warning that names it; once the cause is gone the
// outbox drains.
func TestStalledPublisherSaysWhy(t *testing.T) {
	db := district(t)
	x := &index{}
	p := New(Config{District: "zhejiang/quzhou/kecheng", Outbox: db, Index: x, Resolve: resolve})
	if err := p.Drain(context.Background()); !errors.Is(err, ErrNoCatalog) {
		t.Fatalf("drain without a catalog: %v", err)
	}

	log, out := testlog.Logger(slog.LevelWarn)
	r := jobs.NewRunner(nil, log, nil)
	defer r.Stop()
	job := p.Job()
	job.Patience, job.RetryMin, job.RetryMax = 0, time.Millisecond, 5*time.Millisecond
	if err := r.Start(job); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 5*time.Second, "a warning naming the missing catalog", func() bool {
		return strings.Contains(out.String(), "background job failing") && strings.Contains(out.String(), "catalog has not reached")
	})
	status := func() jobs.Status { return r.Status()[0] }
	if st := status(); st.Failures == 0 || !strings.Contains(st.LastError, "catalog") {
		t.Fatalf("status %+v", st)
	}

	// The catalog arrives; the leader is unreachable (the exchange's
	// "unavailable", which consensus reports as an unknown outcome).
	unreachable := fmt.Errorf("%w: unavailable: dial 127.0.0.1:7443: no answer", consensus.ErrOutcomeUnknown)
	x.set(credit.DefaultCatalog(), unreachable)
	wait.Until(t, 5*time.Second, "the status to name the unreachable leader", func() bool {
		return strings.Contains(status().LastError, "outcome unknown")
	})
	if n, err := db.OutboxLen(); err != nil || n != 1 {
		t.Fatalf("outbox %d (%v) while the leader is unreachable, want 1", n, err)
	}

	x.set(credit.DefaultCatalog(), nil)
	wait.Until(t, 5*time.Second, "the outbox to drain", func() bool {
		n, err := db.OutboxLen()
		return err == nil && n == 0
	})
	wait.Until(t, 5*time.Second, "the job to recover", func() bool { return status().Failures == 0 })
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.applied) != 1 || x.applied[0].District != "zhejiang/quzhou/kecheng" || x.applied[0].Summary.Negative != 1 {
		t.Fatalf("published %+v", x.applied)
	}
}

// deadLeader blocks the first forward until its deadline (a leader that
// died with the connection open), then takes the rest; it notes the
// deadline each forward had.
type deadLeader struct {
	index
	calls     int
	deadlines []time.Duration // per call: deadline minus the call's start
}

func (d *deadLeader) SubmitIndex(ctx context.Context, u []consensus.IndexUpdate) error {
	d.mu.Lock()
	d.calls++
	first := d.calls == 1
	if dl, ok := ctx.Deadline(); ok {
		d.deadlines = append(d.deadlines, time.Until(dl))
	} else {
		d.deadlines = append(d.deadlines, -1)
	}
	d.mu.Unlock()
	if first {
		<-ctx.Done()
		return ctx.Err()
	}
	return d.index.SubmitIndex(ctx, u)
}

// TestForwardDeadlineIsPerAttempt: a dead leader costs one attempt, not
// the drain: each forward has its own deadline (AttemptTimeout), the next
// attempt goes on, and a backlog published in many forwards is not cut by
// a deadline of the whole drain.
func TestForwardDeadlineIsPerAttempt(t *testing.T) {
	db := district(t)
	today := credit.TodayAt(time.Now())
	for i := 2; i <= 6; i++ {
		rec, err := credit.DefaultCatalog().Accept(credit.Record{ID: fmt.Sprintf("P-%d", i), Subject: credit.SyntheticPerson(i, credit.NewDate(1980, 1, 1)),
			CatalogItem: "FOOD-DRUG-PENALTY", DecisionNumber: "X〔2026〕1", OccurredOn: today - 9, DecidedOn: today - 2,
			Summary: "s", Department: "market-supervision", District: "zhejiang/quzhou/kecheng"}, time.Now(), credit.ParseOptions{TestMode: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.SubmitRecords([]credit.Record{rec}); err != nil {
			t.Fatal(err)
		}
	}
	x := &deadLeader{index: index{cat: credit.DefaultCatalog()}}
	const attempt = 200 * time.Millisecond
	p := New(Config{District: "zhejiang/quzhou/kecheng", Outbox: db, Index: x, Resolve: resolve, Batch: 1, AttemptTimeout: attempt})
	r := jobs.NewRunner(nil, nil, nil)
	defer r.Stop()
	job := p.Job()
	job.RetryMin = time.Millisecond
	if job.Timeout < time.Minute {
		t.Fatalf("the drain's own deadline is %v: a backlog would be cut", job.Timeout)
	}
	if err := r.Start(job); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the outbox to drain past the dead leader", func() bool {
		n, err := db.OutboxLen()
		return err == nil && n == 0
	})
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.calls < 7 { // the dead attempt, then one per subject
		t.Fatalf("%d forwards", x.calls)
	}
	for i, d := range x.deadlines {
		if d <= 0 || d > attempt {
			t.Fatalf("forward %d had %v left of its deadline, want a deadline of at most %v of its own", i, d, attempt)
		}
	}
	if len(x.applied) != 6 {
		t.Fatalf("published %d updates, want 6", len(x.applied))
	}
}

// countingOutbox counts the scans of the outbox.
type countingOutbox struct {
	*storage.DB
	mu    sync.Mutex
	scans int
}

func (c *countingOutbox) PendingSubjectsAfter(after uint64, limit int) ([]storage.OutboxItem, error) {
	c.mu.Lock()
	c.scans++
	c.mu.Unlock()
	return c.DB.PendingSubjectsAfter(after, limit)
}

// TestEmptyOutboxIsNotScannedUntilAWrite: once a drain has emptied the
// outbox, the next drains read nothing until a record is written; the
// first drain after a write publishes it.
func TestEmptyOutboxIsNotScannedUntilAWrite(t *testing.T) {
	db := district(t)
	c := &countingOutbox{DB: db}
	x := &index{cat: credit.DefaultCatalog()}
	p := New(Config{District: "zhejiang/quzhou/kecheng", Outbox: c, Index: x, Resolve: resolve})
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(x.applied) != 1 {
		t.Fatalf("first drain published %d", len(x.applied))
	}
	scans := c.scans
	for range 5 {
		if err := p.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if c.scans != scans {
		t.Fatalf("%d scans of an outbox known empty", c.scans-scans)
	}
	today := credit.TodayAt(time.Now())
	rec, err := credit.DefaultCatalog().Accept(credit.Record{ID: "P-2", Subject: credit.SyntheticPerson(2, credit.NewDate(1981, 1, 1)),
		CatalogItem: "FOOD-DRUG-PENALTY", DecisionNumber: "X〔2026〕2", OccurredOn: today - 9, DecidedOn: today - 2,
		Summary: "s", Department: "market-supervision", District: "zhejiang/quzhou/kecheng"}, time.Now(), credit.ParseOptions{TestMode: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.SubmitRecords([]credit.Record{rec}); err != nil {
		t.Fatal(err)
	}
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(x.applied) != 2 || c.scans == scans {
		t.Fatalf("after a write: %d published, %d scans", len(x.applied), c.scans-scans)
	}
}

// TestStagesAreTimed: a drain that publishes times each stage of its
// pass, under the stage's name alone.
func TestStagesAreTimed(t *testing.T) {
	db := district(t)
	x := &index{cat: credit.DefaultCatalog()}
	reg := prometheus.NewRegistry()
	p := New(Config{District: "zhejiang/quzhou/kecheng", Outbox: db, Index: x, Resolve: resolve, Registerer: reg})
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, stage := range []string{"read", "pseudonyms", "index", "ack"} {
		h, err := p.stage.GetMetricWithLabelValues(stage)
		if err != nil {
			t.Fatal(err)
		}
		var m dto.Metric
		if err := h.(prometheus.Histogram).Write(&m); err != nil {
			t.Fatal(err)
		}
		if m.GetHistogram().GetSampleCount() == 0 {
			t.Errorf("stage %s: no observation after a drain that published", stage)
		}
	}
	if n := testutil.CollectAndCount(p.stage); n != 4 {
		t.Fatalf("%d stage series, want 4", n)
	}
}

// failingAcks fails every acknowledgement from the n-th on.
type failingAcks struct {
	*storage.DB
	mu    sync.Mutex
	calls int
	from  int
}

var errAck = errors.New("ack failed")

func (f *failingAcks) AckOutbox(items []storage.OutboxItem) error {
	f.mu.Lock()
	f.calls++
	fail := f.calls >= f.from
	f.mu.Unlock()
	if fail {
		return errAck
	}
	return f.DB.AckOutbox(items)
}

// submitSubjects writes one record each of n more subjects.
func submitSubjects(t *testing.T, db *storage.DB, first, n int) {
	t.Helper()
	today := credit.TodayAt(time.Now())
	var recs []credit.Record
	for i := first; i < first+n; i++ {
		rec, err := credit.DefaultCatalog().Accept(credit.Record{ID: fmt.Sprintf("M-%d", i), Subject: credit.SyntheticPerson(100+i, credit.NewDate(1980, 1, 1)),
			CatalogItem: "FOOD-DRUG-PENALTY", DecisionNumber: fmt.Sprintf("X〔2026〕%d", 100+i), OccurredOn: today - 9, DecidedOn: today - 2,
			Summary: "s", Department: "market-supervision", District: "zhejiang/quzhou/kecheng"}, time.Now(), credit.ParseOptions{TestMode: true})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	if _, err := db.SubmitRecords(recs); err != nil {
		t.Fatal(err)
	}
}

// TestPipelinedDrain: a backlog of many passes is published whole, each
// subject once, in the order the outbox holds them, and the outbox is
// empty after; an acknowledgement that fails stops the drain with its
// error, the subjects of that pass and after it stay marked, and the
// next drain publishes them.
func TestPipelinedDrain(t *testing.T) {
	db := district(t)
	submitSubjects(t, db, 0, 40)
	want, err := db.PendingSubjects(0)
	if err != nil || len(want) != 41 {
		t.Fatalf("%d pending, %v", len(want), err)
	}
	x := &index{cat: credit.DefaultCatalog()}
	p := New(Config{District: "zhejiang/quzhou/kecheng", Outbox: db, Index: x, Resolve: resolve, Batch: 3})
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(x.applied) != len(want) {
		t.Fatalf("%d updates for %d subjects", len(x.applied), len(want))
	}
	for i, u := range x.applied {
		if u.Seq != want[i].Seq {
			t.Fatalf("update %d has seq %d, the outbox's %d-th subject %d", i, u.Seq, i, want[i].Seq)
		}
	}
	if n, _ := db.OutboxLen(); n != 0 {
		t.Fatalf("%d left marked", n)
	}

	submitSubjects(t, db, 40, 30)
	f := &failingAcks{DB: db, from: 3}
	x2 := &index{cat: credit.DefaultCatalog()}
	p2 := New(Config{District: "zhejiang/quzhou/kecheng", Outbox: f, Index: x2, Resolve: resolve, Batch: 3})
	if err := p2.Drain(context.Background()); !errors.Is(err, errAck) {
		t.Fatalf("a failed acknowledgement: drain answered %v", err)
	}
	left, _ := db.OutboxLen()
	if left != 30-2*3 {
		t.Fatalf("%d left marked after 2 acknowledged passes of 3, want %d", left, 30-2*3)
	}
	f.from = 1 << 30
	if err := p2.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := db.OutboxLen(); n != 0 {
		t.Fatalf("%d left marked after the next drain", n)
	}
}

// TestCancelMidDrain: the caller cancels while the pseudonyms of a later
// pass hang; the drain returns the cancellation, the passes already
// committed are acknowledged, no stage goroutine is left, and the next
// drain publishes the rest (review).
func TestCancelMidDrain(t *testing.T) {
	db := district(t)
	submitSubjects(t, db, 0, 20)
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	hang := func(ctx context.Context, subjects []string) ([]credit.Pseudonym, error) {
		calls++
		if calls >= 3 {
			cancel()
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return resolve(ctx, subjects)
	}
	x := &index{cat: credit.DefaultCatalog()}
	p := New(Config{District: "zhejiang/quzhou/kecheng", Outbox: db, Index: x, Resolve: hang, Batch: 3})
	n, err := p.drain(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("drain: %d, %v", n, err)
	}
	if left, _ := db.OutboxLen(); n != 6 || left != 21-6 || len(x.applied) != 6 {
		t.Fatalf("published %d, applied %d, left %d", n, len(x.applied), left)
	}
	wait.Until(t, 5*time.Second, "the drain's goroutines to end", func() bool { return runtime.NumGoroutine() <= base })
	p.cfg.Resolve = resolve
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left, _ := db.OutboxLen(); left != 0 {
		t.Fatalf("%d left", left)
	}
}

// markedTwice is a district store with 4 subjects pending, the one of
// record M-1 under two entries (its submission, then a correction in a
// commit of its own), and the 5 entries in order.
func markedTwice(t *testing.T) (*storage.DB, []storage.OutboxItem) {
	t.Helper()
	db := district(t)
	submitSubjects(t, db, 0, 3)
	rec, err := db.Record("market-supervision", "M-1")
	if err != nil {
		t.Fatal(err)
	}
	rec.Version, rec.Summary = 2, "corrected"
	if err := db.UpdateRecord(rec); err != nil {
		t.Fatal(err)
	}
	entries, err := db.PendingSubjects(0)
	if err != nil || len(entries) != 5 || entries[4].Subject != entries[2].Subject {
		t.Fatalf("entries %+v, %v; want 5, the subject of M-1 twice", entries, err)
	}
	return db, entries
}

// TestSubjectMarkedTwiceIsPublishedOnce: a subject changed by two commits
// before a drain has two outbox entries; a pass that reads both publishes
// it once, under the later number, and acknowledges both.
func TestSubjectMarkedTwiceIsPublishedOnce(t *testing.T) {
	db, entries := markedTwice(t)
	x := &index{cat: credit.DefaultCatalog()}
	p := New(Config{District: "zhejiang/quzhou/kecheng", Outbox: db, Index: x, Resolve: resolve})
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(x.applied) != 4 {
		t.Fatalf("%d updates for 4 subjects", len(x.applied))
	}
	for _, u := range x.applied {
		if u.Seq == entries[2].Seq {
			t.Fatalf("the subject changed twice was published under its older number %d", u.Seq)
		}
	}
	if n, _ := db.OutboxLen(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}
