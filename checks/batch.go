package checks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"credfed/api"
	"credfed/audit"
	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/keyring"
	"credfed/storage"
)

// BatchStore keeps batch jobs (storage.DB).
type BatchStore interface {
	CreateBatch(id string, state []byte, rows [][]byte) error
	BatchState(id string) ([]byte, error)
	BatchRows(id string, chunk int) ([]byte, error)
	PutBatchResults(id string, chunk int, results, state []byte) error
	PutBatchState(id string, state []byte) error
	BatchResults(id string, fn func(chunk int, results []byte) error) error
	Batches(fn func(id string, state []byte) error) error
	DeleteBatch(id string) error
}

const (
	// MaxBatchRows bounds the rows of one batch check.
	MaxBatchRows = 100_000
	// DefaultChunkRows is how many rows a batch checks at a time: their
	// audit entries are appended at once and their results kept with the
	// job's progress in one synced write, so that a restart resumes after
	// the last chunk kept.
	DefaultChunkRows = 2000
	// MaxJobs bounds the batch jobs a node keeps (finished ones are
	// dropped oldest first to make room); MaxPending those not finished.
	MaxJobs    = 32
	MaxPending = 8
	// MaxJobsPerRequester and MaxPendingPerRequester bound one
	// requester's share of them.
	MaxJobsPerRequester    = 8
	MaxPendingPerRequester = 2
	// JobRetention is how long a finished job and its results are kept:
	// the results hold the subjects' records as they were.
	JobRetention = 7 * 24 * time.Hour
	// JobKind is the kind of a batch check job.
	JobKind = "check.batch"
)

// Job statuses.
const (
	JobQueued  = "queued"
	JobRunning = "running"
	JobDone    = "done"
	JobFailed  = "failed"
)

// jobState is what a node keeps of a batch job besides its rows and
// results: no identifier, only counts and the stated fields.
type jobState struct {
	ID        string         `cbor:"1,keyasint"`
	Requester certs.Identity `cbor:"2,keyasint"`
	Scenario  string         `cbor:"3,keyasint"`
	Purpose   string         `cbor:"4,keyasint"`
	User      string         `cbor:"5,keyasint"`
	Rows      int            `cbor:"6,keyasint"`
	Chunks    int            `cbor:"7,keyasint"`
	Next      int            `cbor:"8,keyasint"` // the next chunk to check
	Done      int            `cbor:"9,keyasint"`
	Failed    int            `cbor:"10,keyasint"`
	Status    string         `cbor:"11,keyasint"`
	ChunkRows int            `cbor:"16,keyasint"`
	Created   time.Time      `cbor:"12,keyasint"`
	Started   time.Time      `cbor:"13,keyasint,omitzero"`
	Finished  time.Time      `cbor:"14,keyasint,omitzero"`
	Error     string         `cbor:"15,keyasint,omitempty"`
}

// jobEnc keeps a job's times to the nanosecond (the rate is computed from
// them).
var jobEnc, _ = cbor.EncOptions{Time: cbor.TimeRFC3339Nano}.EncMode()

// batchRunner checks batch jobs one at a time, in the order they came.
type batchRunner struct {
	s     *Service
	store BatchStore
	queue chan string // bounded by MaxPending

	mu sync.Mutex
	// progress of the running job since this node (re)started it: rows
	// and time, for the rate and the estimate of time left.
	running   string
	runRows   int
	runSince  time.Time
	stop      context.CancelFunc
	stopped   chan struct{}
	submitted sync.Mutex // serializes SubmitBatch's count and create
}

func newBatchRunner(s *Service) *batchRunner {
	return &batchRunner{s: s, store: s.cfg.Batches, queue: make(chan string, MaxPending)}
}

// Start resumes the batch jobs a restart interrupted and starts the
// worker; Stop stops it between chunks.
func (s *Service) Start() error {
	b := s.batch
	if b == nil {
		return nil
	}
	var resume []jobState
	var expired []string
	err := b.store.Batches(func(id string, raw []byte) error {
		var st jobState
		if err := cbor.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("checks: batch job state: %w", err)
		}
		switch {
		case st.Status == JobQueued || st.Status == JobRunning:
			resume = append(resume, st)
		case s.cfg.Now().Sub(st.Finished) > JobRetention:
			expired = append(expired, st.ID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range expired {
		if err := b.store.DeleteBatch(id); err != nil {
			return fmt.Errorf("checks: dropping an expired batch job: %w", err)
		}
	}
	sortJobs(resume)
	for _, st := range resume {
		select {
		case b.queue <- st.ID:
		default:
			return fmt.Errorf("checks: %d unfinished batch jobs, more than %d", len(resume), MaxPending)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.stop, b.stopped = cancel, make(chan struct{})
	go b.work(ctx)
	return nil
}

// Stop stops the batch worker after the chunk it is checking.
func (s *Service) Stop() {
	if b := s.batch; b != nil && b.stop != nil {
		b.stop()
		<-b.stopped
	}
}

func sortJobs(js []jobState) {
	for i := 1; i < len(js); i++ {
		for j := i; j > 0 && js[j].Created.Before(js[j-1].Created); j-- {
			js[j], js[j-1] = js[j-1], js[j]
		}
	}
}

// SubmitBatch checks the batch's common fields, admits its rows against the
// querier's quota, keeps the rows and queues the job. Rows are checked one
// by one when the job runs: a bad row is a failed row of the results, not
// a refusal of the batch.
func (s *Service) SubmitBatch(ctx context.Context, caller certs.Identity, in api.BatchCheckRequest) (api.Job, error) {
	entry := audit.By(caller, JobKind)
	cat := s.cfg.Catalog()
	entry.Purpose, entry.User, _, _ = statedOf(cat, api.CheckRequest{Purpose: in.Purpose, User: in.User})
	entry.Count = len(in.Rows)
	b := s.batch
	switch {
	case b == nil || s.ring() == nil:
		return api.Job{}, s.refuse(&entry, fault.New(fault.Forbidden, "batch checks are run by coordinator nodes (province, city); this is a %s node", s.cfg.Self.Role))
	case caller.Role != certs.Coordinator:
		return api.Job{}, s.refuse(&entry, fault.New(fault.Forbidden, "batch checks are made by coordinators, not by a %s certificate", caller.Role))
	case !certs.InRegion(caller.Region, s.cfg.Self.Region):
		return api.Job{}, s.refuse(&entry, fault.New(fault.Forbidden, "a coordinator of %s checks through its own node", caller.Region))
	case cat == nil:
		return api.Job{}, fault.New(fault.Unavailable, "this node has not received the federation's catalog yet")
	case len(in.Rows) == 0:
		return api.Job{}, s.refuse(&entry, fault.Field(fault.BadRequest, "rows", "required: at least one row"))
	case len(in.Rows) > MaxBatchRows:
		return api.Job{}, s.refuse(&entry, fault.Field(fault.BadRequest, "rows", "at most %d rows per batch, got %d", MaxBatchRows, len(in.Rows)))
	}
	pl, e := planFor(cat, caller, in.Scenario, in.Purpose, in.User)
	if e != nil {
		return api.Job{}, s.refuse(&entry, e)
	}
	entry.Purpose = pl.purpose.Code
	b.submitted.Lock()
	defer b.submitted.Unlock()
	var kept []jobState
	pending, mine := 0, 0
	err := b.store.Batches(func(id string, raw []byte) error {
		var st jobState
		if err := cbor.Unmarshal(raw, &st); err != nil {
			return err
		}
		if st.Status == JobQueued || st.Status == JobRunning {
			pending++
			if st.Requester.String() == caller.String() {
				mine++
			}
		}
		kept = append(kept, st)
		return nil
	})
	if err != nil {
		return api.Job{}, fault.Wrap(fault.Unavailable, err, "the batch jobs cannot be read")
	}
	if mine >= MaxPendingPerRequester {
		return api.Job{}, s.refuse(&entry, fault.New(fault.TooManyRequests, "you have %d batch jobs waiting or running here; send this one when one has finished", mine))
	}
	if pending >= MaxPending {
		return api.Job{}, s.refuse(&entry, fault.New(fault.TooManyRequests, "this node has %d batch jobs waiting or running; send this one when one has finished", pending))
	}
	if s.cfg.Quotas != nil {
		if err := s.cfg.Quotas.Admit(institutionOf(caller), pl.purpose.Code, len(in.Rows)); err != nil {
			return api.Job{}, s.refuse(&entry, err)
		}
	}
	// Room for the new job: the oldest finished ones go, and every one
	// finished more than JobRetention ago.
	// A requester's own oldest finished jobs go first (it keeps at most
	// MaxJobsPerRequester), so that one requester's many batches do not
	// push out the others' results.
	sortJobs(kept)
	now := s.cfg.Now()
	own := 0
	for _, st := range kept {
		if st.Requester.String() == caller.String() {
			own++
		}
	}
	left := kept[:0]
	for _, st := range kept {
		finished := st.Status == JobDone || st.Status == JobFailed
		drop := finished && now.Sub(st.Finished) > JobRetention
		if finished && st.Requester.String() == caller.String() && own >= MaxJobsPerRequester {
			drop, own = true, own-1
		}
		if drop {
			if err := b.store.DeleteBatch(st.ID); err != nil {
				return api.Job{}, fault.Wrap(fault.Unavailable, err, "an old batch job could not be dropped")
			}
			continue
		}
		left = append(left, st)
	}
	for i, st := range left {
		if (st.Status == JobDone || st.Status == JobFailed) && len(left)-i >= MaxJobs {
			if err := b.store.DeleteBatch(st.ID); err != nil {
				return api.Job{}, fault.Wrap(fault.Unavailable, err, "an old batch job could not be dropped")
			}
		}
	}
	st := jobState{ID: exchange.NewID("job"), Requester: caller, Scenario: pl.scenario.Code, Purpose: pl.purpose.Code, User: in.User,
		Rows: len(in.Rows), Status: JobQueued, Created: s.cfg.Now().UTC()}
	var chunks [][]byte
	st.ChunkRows = s.cfg.ChunkRows
	for i := 0; i < len(in.Rows); i += st.ChunkRows {
		c, err := cbor.Marshal(in.Rows[i:min(i+st.ChunkRows, len(in.Rows))])
		if err != nil {
			return api.Job{}, fault.Wrap(fault.Internal, err, "the rows could not be encoded")
		}
		chunks = append(chunks, c)
	}
	st.Chunks = len(chunks)
	raw, _ := jobEnc.Marshal(st)
	if err := b.store.CreateBatch(st.ID, raw, chunks); err != nil {
		return api.Job{}, fault.Wrap(fault.Unavailable, err, "the batch could not be kept")
	}
	entry.LookupID, entry.Decision = "", storage.DecisionAllowed
	entry.Reference = st.ID
	if err := s.cfg.Audit.Record(entry); err != nil {
		_ = b.store.DeleteBatch(st.ID)
		return api.Job{}, err
	}
	select {
	case b.queue <- st.ID:
	default: // cannot happen: pending < MaxPending under submitted
	}
	return b.view(st), nil
}

// Job returns a batch job's progress, to the coordinator that submitted it
// or an operator.
func (s *Service) Job(ctx context.Context, caller certs.Identity, id string) (api.Job, error) {
	st, err := s.jobFor(caller, id, true)
	if err != nil {
		return api.Job{}, err
	}
	return s.batch.view(st), nil
}

// JobResults writes a job's results as NDJSON, so far, to the coordinator
// that submitted it (they hold the subjects' records).
func (s *Service) JobResults(ctx context.Context, caller certs.Identity, id string, w io.Writer) error {
	if _, err := s.jobFor(caller, id, false); err != nil {
		return err
	}
	return s.batch.store.BatchResults(id, func(_ int, b []byte) error {
		_, err := w.Write(b)
		return err
	})
}

func (s *Service) jobFor(caller certs.Identity, id string, operator bool) (jobState, error) {
	b := s.batch
	if b == nil {
		return jobState{}, fault.New(fault.NotFound, "this node runs no batch jobs")
	}
	if !exchange.ValidID("job", id) {
		return jobState{}, fault.Field(fault.NotFound, "id", "no such job")
	}
	raw, err := b.store.BatchState(id)
	if errors.Is(err, storage.ErrNotFound) {
		return jobState{}, fault.Field(fault.NotFound, "id", "no such job")
	}
	if err != nil {
		return jobState{}, fault.Wrap(fault.Unavailable, err, "the job cannot be read")
	}
	var st jobState
	if err := cbor.Unmarshal(raw, &st); err != nil {
		return jobState{}, fault.Wrap(fault.Internal, err, "the job's state is unreadable")
	}
	reviewer := operator && caller.Role == certs.Operator && caller.Federation == s.cfg.Self.Federation && certs.InRegion(s.cfg.Self.Region, caller.Region)
	if st.Requester.String() != caller.String() && !reviewer {
		// Not "forbidden": whose jobs exist is not for others to learn.
		return jobState{}, fault.Field(fault.NotFound, "id", "no such job")
	}
	return st, nil
}

// view is a job as GET /v1/jobs/{id} shows it.
func (b *batchRunner) view(st jobState) api.Job {
	j := api.Job{ID: st.ID, Kind: JobKind, Status: st.Status, Rows: st.Rows, Done: st.Done, Failed: st.Failed,
		Created: st.Created, Error: st.Error, Scenario: st.Scenario, Purpose: st.Purpose, Results: "/v1/jobs/" + st.ID + "/results"}
	if !st.Started.IsZero() {
		t := st.Started
		j.Started = &t
	}
	if !st.Finished.IsZero() {
		t := st.Finished
		j.Finished = &t
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running == st.ID && st.Status == JobRunning {
		if el := time.Since(b.runSince).Seconds(); el > 0 && b.runRows > 0 {
			j.Rate = float64(b.runRows) / el
			eta := float64(st.Rows-st.Done) / j.Rate
			j.ETASeconds = &eta
		}
	} else if st.Status == JobDone && !st.Started.IsZero() {
		if el := st.Finished.Sub(st.Started).Seconds(); el > 0 {
			j.Rate = float64(st.Rows) / el
		}
	}
	return j
}

// work checks the queued jobs until ctx ends.
func (b *batchRunner) work(ctx context.Context) {
	defer close(b.stopped)
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-b.queue:
			if err := b.run(ctx, id); err != nil && ctx.Err() == nil {
				b.s.log.Error("batch check job failed", "job", id, "error_type", fmt.Sprintf("%T", err))
			}
		}
	}
}

// run checks a job's chunks from where it stands.
func (b *batchRunner) run(ctx context.Context, id string) error {
	raw, err := b.store.BatchState(id)
	if err != nil {
		return err
	}
	var st jobState
	if err := cbor.Unmarshal(raw, &st); err != nil {
		return err
	}
	if st.Status != JobQueued && st.Status != JobRunning {
		return nil
	}
	now := b.s.cfg.Now().UTC()
	if st.Started.IsZero() {
		st.Started = now
	}
	st.Status = JobRunning
	if err := b.put(st); err != nil {
		return err
	}
	b.mu.Lock()
	b.running, b.runRows, b.runSince = id, 0, time.Now()
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.running = ""
		b.mu.Unlock()
	}()
	fail := func(msg string) error {
		st.Status, st.Error, st.Finished = JobFailed, msg, b.s.cfg.Now().UTC()
		return b.put(st)
	}
	cat := b.s.cfg.Catalog()
	if cat == nil {
		return fail("the node has no catalog")
	}
	pl, e := planFor(cat, st.Requester, st.Scenario, st.Purpose, st.User)
	if e != nil {
		return fail("the catalog no longer admits the batch: " + e.Message)
	}
	// Two chunks at a time: while one is registered and kept, the next is
	// prepared and asked of the districts.
	prepare := func(chunk int) <-chan *checkedChunk {
		out := make(chan *checkedChunk, 1)
		go func() {
			c := &checkedChunk{}
			raw, err := b.store.BatchRows(id, chunk)
			switch {
			case err != nil:
				c.fail = "the rows of the batch cannot be read"
			case cbor.Unmarshal(raw, &c.rows) != nil:
				c.fail = "the rows of the batch are unreadable"
			default:
				b.s.prepareChunk(ctx, st, pl, chunk*st.ChunkRows, c)
			}
			out <- c
		}()
		return out
	}
	var next <-chan *checkedChunk
	if st.Next < st.Chunks {
		next = prepare(st.Next)
	}
	for st.Next < st.Chunks {
		c := <-next
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.fail != "" {
			return fail(c.fail)
		}
		if st.Next+1 < st.Chunks {
			next = prepare(st.Next + 1)
		}
		var results []byte
		var err error
		for attempt := 0; ; attempt++ {
			results, err = b.s.commitChunk(st, c)
			if err == nil || ctx.Err() != nil || attempt == 4 {
				break
			}
			// The audit log refused: wait and try the chunk again.
			t := time.NewTimer(time.Duration(attempt+1) * time.Second)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fail("the rows could not be registered in the audit log")
		}
		st.Next++
		st.Done += len(c.rows)
		st.Failed += c.failed
		if st.Next == st.Chunks {
			st.Status, st.Finished = JobDone, b.s.cfg.Now().UTC()
		}
		enc, _ := jobEnc.Marshal(st)
		if err := b.store.PutBatchResults(id, st.Next-1, results, enc); err != nil {
			return err
		}
		b.mu.Lock()
		b.runRows += len(c.rows)
		b.mu.Unlock()
	}
	return nil
}

func (b *batchRunner) put(st jobState) error {
	raw, err := jobEnc.Marshal(st)
	if err != nil {
		return err
	}
	return b.store.PutBatchState(st.ID, raw)
}

// checkedChunk is one chunk of a job on its way: its rows, and once
// prepared their results and audit entries.
type checkedChunk struct {
	rows    []api.BatchRow
	fail    string // the chunk cannot be checked at all
	results []api.BatchResult
	entries []storage.AuditEntry
	notes   []storage.AuditEntry
	failed  int
}

// prepareChunk checks one chunk of a job's rows: the rows grouped per
// district so that each gets few large requests, every row answered or
// refused. Nothing is registered yet (commitChunk).
func (s *Service) prepareChunk(ctx context.Context, st jobState, pl plan, first int, c *checkedChunk) {
	rows := c.rows
	key := s.ring()
	today := credit.TodayAt(s.cfg.Now())
	results := make([]api.BatchResult, len(rows))
	entries := make([]storage.AuditEntry, len(rows))
	pend := make([]*pending, len(rows))
	var asked []*pending
	failed := 0
	base := audit.By(st.Requester, "check")
	base.Purpose, base.User = pl.purpose.Code, st.User
	for i, row := range rows {
		e := base
		e.LookupID = exchange.NewID("lk")
		_, _, e.Reference, e.Authorization = statedOf(pl.cat, api.CheckRequest{Reference: row.Reference, Authorization: row.Authorization})
		results[i] = api.BatchResult{Row: first + i, Reference: e.Reference}
		fe := pl.checkRow(row.Reference, row.Authorization)
		var sub credit.Subject
		if fe == nil {
			sub, fe = s.parse(row.Subject)
		}
		if fe != nil {
			e.Decision, e.Reason = storage.DecisionDenied, string(fe.Kind)
			if sub.ID != "" {
				e.Subject = key.Pseudonym(sub.ID).String()
			}
			results[i].Status, results[i].Error = "error", &api.Error{Code: string(fe.Kind), Field: fe.Field, Message: fe.Message}
			entries[i] = e
			failed++
			continue
		}
		p := key.Pseudonym(sub.ID)
		e.Subject = p.String()
		results[i].Subject = sub.Masked()
		live, idx, _, err := keyring.Read(ctx, s.cfg.Index.Lookup, key, sub.ID, false)
		if err != nil {
			f := fault.As(indexFault(err))
			msg := "the index could not be read"
			if f != nil {
				msg = f.Message
			}
			e.Decision, e.Reason = storage.DecisionDenied, string(fault.Unavailable)
			results[i].Status, results[i].Error = "error", &api.Error{Code: string(fault.Unavailable), Message: msg}
			entries[i] = e
			failed++
			continue
		}
		r := &pending{query: subjectQuery{Subject: sub.ID, Pseudonym: p, Reference: row.Reference, Authorization: row.Authorization, CheckID: e.LookupID,
			Pseudonyms: live}}
		r.route(idx, s.cfg.Index, s.cfg.Self.Federation)
		pend[i] = r
		asked = append(asked, r)
		entries[i] = e
	}
	cctx, cancel := context.WithTimeout(ctx, 4*s.cfg.Timeout)
	s.ask(cctx, st.Requester, pl, st.User, asked)
	cancel()
	for i, r := range pend {
		if r == nil {
			continue
		}
		ans := r.assemble(pl, today)
		ans.CheckID, ans.Reference, ans.SubjectPseudonym = entries[i].LookupID, rows[i].Reference, r.query.Pseudonym.String()
		ans.Index = api.LookupIndex{Consistency: "local"}
		results[i].Status, results[i].Check = "ok", &ans
		entries[i].Decision, entries[i].Records = storage.DecisionAllowed, r.refs()
		c.notes = append(c.notes, r.notes(entries[i])...)
	}
	c.results, c.entries, c.failed = results, entries, failed
}

// commitChunk registers a prepared chunk: every row audited like a single
// check (all of the chunk's entries in one append), then noted for the
// querier's flags. It returns the chunk's NDJSON results.
func (s *Service) commitChunk(st jobState, c *checkedChunk) ([]byte, error) {
	entries := c.entries
	all := append(entries[1:len(entries):len(entries)], c.notes...)
	if err := s.cfg.Audit.Record(entries[0], all...); err != nil {
		return nil, err
	}
	for i := range c.rows {
		status := "ok"
		if c.results[i].Status != "ok" {
			status = "error"
		}
		s.rows.WithLabelValues(status).Inc()
		if s.cfg.Quotas != nil && entries[i].Decision == storage.DecisionAllowed {
			s.cfg.Quotas.Observe(institutionOf(st.Requester), st.Purpose, entries[i].Subject, c.rows[i].Reference, st.Rows)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for i := range c.results {
		if err := enc.Encode(c.results[i]); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}
