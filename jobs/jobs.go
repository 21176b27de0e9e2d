// Package jobs runs a node's background jobs — the district's publisher
// and sweep today — with one runner: each job on its own goroutine, at its
// interval or when woken, bounded by a timeout, backing off after failures,
// with metrics, a status the API shows, and progress saved so that it
// survives a restart.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Job is one background job.
type Job struct {
	// Name names the job in logs, metrics and the status (a short word:
	// "publish", "sweep").
	Name string
	// Interval is the time between the end of a run and the start of the
	// next one.
	Interval time.Duration
	// Timeout bounds one run (default Interval).
	Timeout time.Duration
	// RetryMin and RetryMax bound the backoff after a failed run: the wait
	// doubles from RetryMin up to RetryMax (defaults: Interval, no
	// backoff). A wake does not cut a backoff short.
	RetryMin, RetryMax time.Duration
	// Patience is how long failures may last before they are logged as a
	// warning: expected hiccups (no Raft leader while the federation
	// starts) stay at debug level unless they persist. The status and the
	// metrics show every failure at once. Zero logs every first failure.
	Patience time.Duration
	// Run does one run. It reports what it did through p; ctx ends at the
	// timeout or when the runner stops.
	Run func(ctx context.Context, p *Progress) error
}

// Store keeps each job's saved state (storage.DB implements it).
type Store interface {
	JobState(name string) ([]byte, error)
	PutJobState(name string, state []byte) error
}

// Status is a job's state as the API shows it.
type Status struct {
	Name string `json:"name"`
	// Running is true while a run is under way.
	Running bool `json:"running"`
	// Runs counts the runs since the job was first started (kept across
	// restarts).
	Runs int64 `json:"runs"`
	// Failures counts the runs that failed in a row (0 after a good run).
	Failures    int64     `json:"failures"`
	LastRun     time.Time `json:"last_run"`
	LastSuccess time.Time `json:"last_success"`
	// LastError is the last failed run's error, "" after a good run. Jobs
	// build their errors without personal data.
	LastError string `json:"last_error,omitempty"`
	// Progress holds the counts the job reported (Progress.Set), for the
	// run under way or the last one.
	Progress map[string]int64 `json:"progress,omitempty"`
	// Cursor is where the job asked to resume (Progress.Checkpoint).
	Cursor []byte `json:"cursor,omitempty"`
}

// State names the status: running, failing or idle.
func (s Status) State() string {
	switch {
	case s.Running:
		return "running"
	case s.Failures > 0:
		return "failing"
	}
	return "idle"
}

// Progress is a run's view of its job's status.
type Progress struct {
	j *job
}

// Set records a count of the run under way (shown in the status).
func (p *Progress) Set(name string, v int64) {
	p.j.mu.Lock()
	defer p.j.mu.Unlock()
	if p.j.st.Progress == nil {
		p.j.st.Progress = map[string]int64{}
	}
	p.j.st.Progress[name] = v
}

// Add adds to a count of the run under way.
func (p *Progress) Add(name string, d int64) {
	p.j.mu.Lock()
	defer p.j.mu.Unlock()
	if p.j.st.Progress == nil {
		p.j.st.Progress = map[string]int64{}
	}
	p.j.st.Progress[name] += d
}

// Cursor returns where the job last checkpointed (nil if never, or after a
// run that ended with Done).
func (p *Progress) Cursor() []byte {
	p.j.mu.Lock()
	defer p.j.mu.Unlock()
	return slices.Clone(p.j.st.Cursor)
}

// Checkpoint saves cursor and the counts durably, so that a run cut short
// by a crash or a stop resumes from there (the next run's Cursor).
func (p *Progress) Checkpoint(cursor []byte) error {
	p.j.mu.Lock()
	p.j.st.Cursor = slices.Clone(cursor)
	p.j.mu.Unlock()
	return p.j.save()
}

// Done clears the cursor: the next run starts from the beginning.
func (p *Progress) Done() {
	p.j.mu.Lock()
	defer p.j.mu.Unlock()
	p.j.st.Cursor = nil
}

// Runner runs jobs until Stop.
type Runner struct {
	store   Store
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	jobs    map[string]*job
	order   []string
	life    context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	stopped bool
}

type job struct {
	spec Job
	r    *Runner
	wake chan struct{}
	// runMu serializes runs (the loop's and RunNow's).
	runMu sync.Mutex

	mu           sync.Mutex
	st           Status
	failingSince time.Time
	warned       bool
	savedAt      time.Time
}

// NewRunner returns a runner; store may be nil (nothing is saved),
// registerer too (no metrics).
func NewRunner(store Store, log *slog.Logger, reg prometheus.Registerer) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	life, stop := context.WithCancel(context.Background())
	return &Runner{store: store, log: log, metrics: newMetrics(reg), jobs: map[string]*job{}, life: life, stop: stop}
}

// Start loads the job's saved status and starts it: its first run begins
// at once.
func (r *Runner) Start(spec Job) error {
	if spec.Name == "" || spec.Run == nil || spec.Interval <= 0 {
		return errors.New("jobs: a job needs a name, a run function and an interval")
	}
	if spec.Timeout <= 0 {
		spec.Timeout = spec.Interval
	}
	if spec.RetryMin <= 0 {
		spec.RetryMin = spec.Interval
	}
	if spec.RetryMax < spec.RetryMin {
		spec.RetryMax = spec.RetryMin
	}
	j := &job{spec: spec, r: r, wake: make(chan struct{}, 1), st: Status{Name: spec.Name}}
	if r.store != nil {
		data, err := r.store.JobState(spec.Name)
		if err != nil {
			return fmt.Errorf("jobs: %s: load status: %w", spec.Name, err)
		}
		if data != nil {
			var st Status
			if err := json.Unmarshal(data, &st); err != nil {
				r.log.Warn("a job's saved status is unreadable; it starts afresh", "job", spec.Name)
			} else {
				st.Name, st.Running = spec.Name, false
				j.st = st
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return errors.New("jobs: the runner is stopped")
	}
	if _, dup := r.jobs[spec.Name]; dup {
		return fmt.Errorf("jobs: %s is started already", spec.Name)
	}
	r.jobs[spec.Name] = j
	r.order = append(r.order, spec.Name)
	r.wg.Add(1)
	go j.loop()
	return nil
}

// Wake asks the job for a run now, unless one is under way or it is
// backing off after a failure (the run it asks for then comes at the end).
func (r *Runner) Wake(name string) {
	r.mu.Lock()
	j := r.jobs[name]
	r.mu.Unlock()
	if j == nil {
		return
	}
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// RunNow runs the job once on the caller's goroutine, after any run under
// way, and returns its error (tests, operators' commands).
func (r *Runner) RunNow(ctx context.Context, name string) error {
	r.mu.Lock()
	j := r.jobs[name]
	r.mu.Unlock()
	if j == nil {
		return fmt.Errorf("jobs: no job %q", name)
	}
	return j.run(ctx)
}

// Status returns every job's status, in start order.
func (r *Runner) Status() []Status {
	r.mu.Lock()
	names := slices.Clone(r.order)
	jobs := maps.Clone(r.jobs)
	r.mu.Unlock()
	out := make([]Status, 0, len(names))
	for _, n := range names {
		out = append(out, jobs[n].status())
	}
	return out
}

// Stop cancels the runs under way, waits for every job to end and saves
// their status.
func (r *Runner) Stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	r.mu.Unlock()
	r.stop()
	r.wg.Wait()
	for _, j := range r.jobs {
		if err := j.save(); err != nil {
			r.log.Warn("saving a job's status at stop failed", "job", j.spec.Name, "error", err)
		}
	}
}

func (j *job) status() Status {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := j.st
	st.Progress = maps.Clone(j.st.Progress)
	st.Cursor = slices.Clone(j.st.Cursor)
	return st
}

func (j *job) loop() {
	defer j.r.wg.Done()
	backoff := j.spec.RetryMin
	for {
		err := j.run(j.r.life)
		wait := j.spec.Interval
		if err != nil && j.r.life.Err() == nil {
			wait = backoff
			backoff = min(2*backoff, j.spec.RetryMax)
		} else {
			backoff = j.spec.RetryMin
		}
		t := time.NewTimer(wait)
		wake := j.wake
		if err != nil {
			wake = nil // a wake does not cut the backoff short
		}
		select {
		case <-j.r.life.Done():
			t.Stop()
			return
		case <-t.C:
		case <-wake:
			t.Stop()
		}
	}
}

// run does one run and records its outcome.
func (j *job) run(parent context.Context) error {
	j.runMu.Lock()
	defer j.runMu.Unlock()
	if err := parent.Err(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(parent, j.spec.Timeout)
	defer cancel()
	j.mu.Lock()
	j.st.Running = true
	j.st.Progress = nil
	j.mu.Unlock()
	m := j.r.metrics
	m.running(j.spec.Name, 1)
	start := time.Now()
	err := j.spec.Run(ctx, &Progress{j: j})
	end := time.Now()
	m.running(j.spec.Name, 0)
	m.observe(j.spec.Name, end.Sub(start), err)
	if err != nil && parent.Err() != nil {
		// Stopped midway: not a failure of the job.
		j.mu.Lock()
		j.st.Running = false
		j.mu.Unlock()
		return err
	}
	j.mu.Lock()
	j.st.Running = false
	j.st.Runs++
	j.st.LastRun = end.UTC()
	wasFailing := j.st.Failures > 0
	var logWarn, logRecovered bool
	failures := j.st.Failures
	if err != nil {
		if j.st.Failures == 0 {
			j.failingSince = end
			j.warned = false
		}
		j.st.Failures++
		j.st.LastError = err.Error()
		if !j.warned && end.Sub(j.failingSince) >= j.spec.Patience {
			j.warned, logWarn = true, true
		}
	} else {
		logRecovered = wasFailing && j.warned
		j.st.Failures, j.st.LastError, j.warned = 0, "", false
		j.st.LastSuccess = end.UTC()
	}
	failingFor := end.Sub(j.failingSince)
	changed := wasFailing != (j.st.Failures > 0)
	save := changed || end.Sub(j.savedAt) >= time.Minute
	m.failures(j.spec.Name, j.st.Failures)
	if err == nil {
		m.success(j.spec.Name, end)
	}
	j.mu.Unlock()
	switch {
	case logWarn:
		j.r.log.Warn("background job failing; it will be retried", "job", j.spec.Name,
			"failures", failures+1, "failing_for", failingFor.Round(time.Millisecond), "error", err)
	case err != nil:
		j.r.log.Debug("background job failed", "job", j.spec.Name, "error", err)
	case logRecovered:
		j.r.log.Info("background job recovered", "job", j.spec.Name, "after_failures", failures)
	}
	if save {
		if serr := j.save(); serr != nil {
			j.r.log.Warn("saving a job's status failed", "job", j.spec.Name, "error", serr)
		}
	}
	return err
}

func (j *job) save() error {
	if j.r.store == nil {
		return nil
	}
	j.mu.Lock()
	st := j.st
	st.Running = false
	data, err := json.Marshal(st)
	j.savedAt = time.Now()
	j.mu.Unlock()
	if err != nil {
		return err
	}
	return j.r.store.PutJobState(j.spec.Name, data)
}
