package jobs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"credfed/internal/testlog"
	"credfed/internal/wait"
)

// memStore is a Store in memory.
type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memStore) JobState(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.m[name]), nil
}

func (s *memStore) PutJobState(name string, state []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[name] = bytes.Clone(state)
	return nil
}

func statusOf(t *testing.T, r *Runner, name string) Status {
	t.Helper()
	for _, s := range r.Status() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no job %s", name)
	return Status{}
}

func TestRunsAtStartAndWhenWoken(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := NewRunner(nil, nil, reg)
	defer r.Stop()
	var runs atomic.Int64
	err := r.Start(Job{Name: "tick", Interval: time.Hour, Run: func(ctx context.Context, p *Progress) error {
		p.Add("items", 2)
		runs.Add(1)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 5*time.Second, "the first run", func() bool { return statusOf(t, r, "tick").Runs == 1 })
	r.Wake("tick")
	wait.Until(t, 5*time.Second, "the woken run", func() bool { return statusOf(t, r, "tick").Runs == 2 })
	st := statusOf(t, r, "tick")
	if st.State() != "idle" || st.Progress["items"] != 2 || st.LastSuccess.IsZero() || runs.Load() != 2 {
		t.Fatalf("status %+v after %d runs", st, runs.Load())
	}
	if got := testutil.ToFloat64(r.metrics.runs.WithLabelValues("tick", "ok")); got != 2 {
		t.Fatalf("credfed_job_runs_total{result=ok} = %v", got)
	}
	if err := r.Start(Job{Name: "tick", Interval: time.Hour, Run: func(context.Context, *Progress) error { return nil }}); err == nil {
		t.Fatal("a second job of the same name was started")
	}
}

func TestFailuresBackOffAreLoggedAfterPatienceAndRecover(t *testing.T) {
	log, logs := testlog.Logger(slog.LevelInfo)
	r := NewRunner(nil, log, nil)
	defer r.Stop()
	var fail atomic.Bool
	fail.Store(true)
	var runs atomic.Int64
	err := r.Start(Job{Name: "flaky", Interval: time.Hour, RetryMin: time.Millisecond, RetryMax: 4 * time.Millisecond,
		Patience: 20 * time.Millisecond,
		Run: func(ctx context.Context, p *Progress) error {
			runs.Add(1)
			if fail.Load() {
				return errors.New("no leader known")
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	// The first failures are within the patience: nothing at warning level.
	wait.Until(t, 5*time.Second, "a failing status", func() bool { return statusOf(t, r, "flaky").Failures >= 1 })
	st := statusOf(t, r, "flaky")
	if st.State() != "failing" && st.State() != "running" || st.LastError != "no leader known" {
		t.Fatalf("status %+v", st)
	}
	// Failures retried with backoff (not the hour's interval) until the
	// patience is spent: then one warning.
	wait.Until(t, 5*time.Second, "the warning", func() bool { return strings.Contains(logs.String(), "background job failing") })
	if n := strings.Count(logs.String(), "background job failing"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs.String())
	}
	before := runs.Load()
	wait.Until(t, 5*time.Second, "more retries", func() bool { return runs.Load() > before+2 })
	if n := strings.Count(logs.String(), "background job failing"); n != 1 {
		t.Fatalf("the warning repeats for the same failing spell (%d)", n)
	}
	fail.Store(false)
	wait.Until(t, 5*time.Second, "the recovery", func() bool { return statusOf(t, r, "flaky").Failures == 0 })
	wait.Until(t, 5*time.Second, "the recovery's log line", func() bool { return strings.Contains(logs.String(), "background job recovered") })
	if st := statusOf(t, r, "flaky"); st.LastError != "" || st.State() == "failing" {
		t.Fatalf("status after recovery %+v", st)
	}
}

func TestStatusAndCursorSurviveARestart(t *testing.T) {
	store := &memStore{}
	r := NewRunner(store, nil, nil)
	started := make(chan struct{})
	err := r.Start(Job{Name: "batch", Interval: time.Hour, Run: func(ctx context.Context, p *Progress) error {
		if c := p.Cursor(); c != nil {
			return errors.New("the first run sees a cursor")
		}
		p.Set("rows", 500)
		if err := p.Checkpoint([]byte("row-500")); err != nil {
			return err
		}
		close(started)
		<-ctx.Done() // cut short by the stop, as a crash would
		return ctx.Err()
	}})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	r.Stop()
	if st := statusOf(t, r, "batch"); st.Runs != 0 || st.Failures != 0 {
		t.Fatalf("a run cut short by the stop counted: %+v", st)
	}

	r2 := NewRunner(store, nil, nil)
	defer r2.Stop()
	resumed := make(chan string, 1)
	err = r2.Start(Job{Name: "batch", Interval: time.Hour, Run: func(ctx context.Context, p *Progress) error {
		resumed <- string(p.Cursor())
		p.Done()
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-resumed:
		if c != "row-500" {
			t.Fatalf("resumed at %q, want row-500", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the restarted job did not run")
	}
	wait.Until(t, 5*time.Second, "the run to end", func() bool { return statusOf(t, r2, "batch").Runs == 1 })
	if st := statusOf(t, r2, "batch"); st.Cursor != nil {
		t.Fatalf("cursor %q after Done", st.Cursor)
	}
}

func TestRunNowReturnsTheRunsError(t *testing.T) {
	r := NewRunner(nil, nil, nil)
	defer r.Stop()
	want := errors.New("store damaged")
	var calls atomic.Int64
	if err := r.Start(Job{Name: "sweep", Interval: time.Hour, Run: func(ctx context.Context, p *Progress) error {
		if calls.Add(1) == 1 {
			return nil
		}
		return want
	}}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 5*time.Second, "the first run", func() bool { return statusOf(t, r, "sweep").Runs == 1 })
	if err := r.RunNow(context.Background(), "sweep"); !errors.Is(err, want) {
		t.Fatalf("RunNow: %v", err)
	}
	if err := r.RunNow(context.Background(), "nope"); err == nil {
		t.Fatal("RunNow of an unknown job succeeded")
	}
}
