// Package publish drains a district's outbox into the replicated index: it
// recomputes each pending subject's summary from the records as they are
// now, has a coordinator pseudonymize the subject, forwards the updates to
// the Raft leader and acknowledges them only once applied.
package publish

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/consensus"
	"credfed/credit"
	"credfed/jobs"
	"credfed/storage"
)

// Errors a drain reports (the job runner logs them, the status shows them).
var (
	// ErrNoCatalog: the federation's catalog has not reached this district
	// yet, so no summary can be computed.
	ErrNoCatalog = errors.New("publish: the federation's catalog has not reached this district yet")
	// ErrUnreadableSubjects: subjects stay in the outbox because their
	// records cannot be read (a damaged store); the others were published.
	ErrUnreadableSubjects = errors.New("publish: outbox subjects whose records cannot be read")
)

// Outbox is what the publisher drains (storage.DB implements it).
type Outbox interface {
	PendingSubjectsAfter(after uint64, limit int) ([]storage.OutboxItem, error)
	AckOutbox(items []storage.OutboxItem) error
	OutboxLen() (int, error)
	// OutboxVersion changes whenever a write may have marked a subject.
	OutboxVersion() uint64
	// SummaryFieldsBySubjects reads the summary fields of each subject's
	// records (credit.Record.SummaryFields: all a summary needs); errs[i]
	// is subject i's error (it stays marked), err a failure of the whole
	// read.
	SummaryFieldsBySubjects(subjects []string) (recs [][]credit.Record, errs []error, err error)
}

// Index is where the updates go (the node's Raft replica).
type Index interface {
	// SubmitIndex hands this district's updates to the leader and returns
	// once they are applied or refused.
	SubmitIndex(ctx context.Context, updates []consensus.IndexUpdate) error
	// Catalog is the replicated catalog, nil before it has arrived.
	Catalog() *credit.Catalog
}

// Resolver returns the pseudonyms of canonical identifiers, in order.
type Resolver func(ctx context.Context, subjects []string) ([]credit.Pseudonym, error)

// Versions is a key rotation as a district publishes through it
// (consensus/keys.go): the key version it publishes under, and the older
// version whose pseudonyms it withdraws from the index as it republishes
// (0: none; the rotation is complete here).
type Versions interface {
	Publishing() (current, withdraw uint32)
}

// Rotation is what the publisher needs to publish across key versions.
type Rotation struct {
	Versions Versions
	// ResolveAt returns the pseudonyms under one version, or an error if
	// the coordinator answered under another (pseudonym.Resolver).
	ResolveAt func(ctx context.Context, subjects []string, v uint32) ([]credit.Pseudonym, error)
	// CachedAt returns the pseudonyms cached under one version (the old
	// ones, to withdraw: storage.DB.PseudonymsAt).
	CachedAt func(v uint32, subjects []string) (map[string]credit.Pseudonym, error)
}

// Config configures a Publisher.
type Config struct {
	// District is this district's region path.
	District string
	Outbox   Outbox
	Index    Index
	Resolve  Resolver
	// Rotation, if set, publishes under the current key version and, in
	// the same group, withdraws the subject's entry under the older one
	// while a rotation is under way here; Resolve is then not used.
	Rotation *Rotation
	// Now dates the summaries (which records are displayed today); nil is
	// time.Now.
	Now func() time.Time
	// Batch is how many outbox entries one pass reads, so at most that
	// many subjects it publishes (a subject with entries of two commits is
	// published once); default DefaultBatch, at most half of
	// consensus.MaxForwardUpdates.
	Batch int
	// AttemptTimeout bounds one forward to the leader, and separately the
	// pseudonyms a pass needs, not the whole drain: a dead leader costs
	// one attempt, after which the next goes to the new leader (default
	// 5 s).
	AttemptTimeout time.Duration
	Registerer     prometheus.Registerer
}

// Publisher publishes a district's outbox. An acknowledged record is in
// the outbox in the same synced write as the record, and leaves it only
// once its subject's entry is applied, so it reaches the index whatever
// happens in between: no leader, a leader change, a restart.
type Publisher struct {
	cfg        Config
	pending    prometheus.Gauge
	unreadable prometheus.Counter
	// stage is how long each stage of a pass took: read (the outbox and
	// the summary fields), pseudonyms, index (the Raft commit) and ack.
	stage *prometheus.HistogramVec

	// mu serializes drains. emptyAt is the outbox version at the start of
	// the last drain that left the outbox empty: while the version has not
	// moved, nothing was marked since, and a drain reads nothing (a scan
	// of an empty outbox still walks the tombstones of the markers it
	// removed, which cost a district a sixth of its CPU once a second).
	mu         sync.Mutex
	emptyKnown bool
	emptyAt    uint64
}

// New returns a publisher; run it with the job runner (Job) and drain it
// once more at shutdown (Drain).
func New(cfg Config) *Publisher {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	// Half the forward's bound: during a key rotation each subject also
	// withdraws its entry under the older version.
	cfg.Batch = min(cfg.Batch, consensus.MaxForwardUpdates/2)
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 5 * time.Second
	}
	p := &Publisher{cfg: cfg,
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credfed_outbox_pending", Help: "Changes of subjects this district has not yet published to the index (an outbox entry a subject for each commit that changed it).",
		}),
		unreadable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_outbox_unreadable_total", Help: "Times the publisher left an outbox subject marked because its records could not be read (a damaged store).",
		}),
		stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "credfed_publish_stage_seconds", Help: "Duration of each stage of a publishing pass that completed it: read (outbox and summary fields), pseudonyms, index (Raft commit), ack.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"stage"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(p.pending, p.unreadable, p.stage)
	}
	return p
}

// JobName is the publisher's name in the job runner.
const JobName = "publish"

// DefaultBatch is the outbox entries of one pass (at most as many
// subjects): each pass waits for a round
// trip to a coordinator (pseudonyms) and a Raft commit, so fewer, larger
// passes publish a backlog faster (docs/BENCHMARKS.md). At most half of
// consensus.MaxForwardUpdates, since during a key rotation each subject
// also withdraws its entry under the older version.
const DefaultBatch = 2000

// Job is the publisher as a background job: a drain every second and
// whenever the runner is woken (a record was written), retried after 50 ms
// to 5 s on failure. A drain may take long (a backlog after an outage):
// each forward has its own deadline (AttemptTimeout), the drain only a
// generous one. Failures are logged once they last 30 s: a district that
// starts before the federation has a leader waits in silence only that
// long.
func (p *Publisher) Job() jobs.Job {
	return jobs.Job{Name: JobName, Interval: time.Second, Timeout: time.Hour,
		RetryMin: 50 * time.Millisecond, RetryMax: 5 * time.Second, Patience: 30 * time.Second,
		Run: func(ctx context.Context, pr *jobs.Progress) error {
			n, err := p.drain(ctx)
			pr.Set("published", int64(n))
			return err
		}}
}

// Drain publishes until the outbox is empty or an error stops it. A
// subject whose records cannot be read stays marked and does not hold the
// others back: Drain goes on past it and, once the rest is out, reports it
// (ErrUnreadableSubjects).
func (p *Publisher) Drain(ctx context.Context) error {
	_, err := p.drain(ctx)
	return err
}

func (p *Publisher) drain(ctx context.Context) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	version := p.cfg.Outbox.OutboxVersion()
	if p.emptyKnown && version == p.emptyAt {
		return 0, nil
	}
	p.emptyKnown = false
	// Four stages, each on a goroutine of its own with at most one pass
	// waiting between two (so at most seven passes in flight): reading
	// (the outbox and the summary fields, this node's CPU),
	// pseudonymizing (a round trip to a coordinator), the Raft commit and
	// the acknowledgement (a synced write). A backlog is published about
	// as fast as the slowest stage, not as the sum of them
	// (docs/BENCHMARKS.md). Passes reach the index and are acknowledged in
	// the order they were read. A pass that fails a stage ends the drain;
	// the passes read after it are read again by the next.
	ctx, cancel := context.WithCancel(ctx)
	reads := make(chan pass, 1)
	passes := make(chan pass, 1)
	go func() {
		defer close(reads)
		var after uint64
		for {
			ps := p.read(after)
			select {
			case reads <- ps:
			case <-ctx.Done():
				return
			}
			if ps.err != nil || ps.n == 0 {
				return
			}
			after = ps.last
		}
	}()
	go func() {
		defer close(passes)
		for ps := range reads {
			if ps.err == nil && len(ps.readable) > 0 {
				p.pseudonymize(ctx, &ps)
			}
			select {
			case passes <- ps:
			case <-ctx.Done():
				return
			}
		}
	}()
	acks := make(chan pass, 1)
	ackDone := make(chan struct{})
	var ackErr error
	published := 0
	go func() {
		defer close(ackDone)
		for ps := range acks {
			if ackErr != nil {
				continue
			}
			if err := p.ack(ps); err != nil {
				ackErr = err
				cancel() // the stages before stop: their passes would not be acknowledged either
				continue
			}
			published += len(ps.readable) // subjects; a subject's entries of two commits publish it once
			p.countPending()
		}
	}()
	acked := false
	finish := func() (int, error) {
		if !acked {
			acked = true
			close(acks)
			<-ackDone
		}
		return published, ackErr
	}
	defer func() {
		finish()
		cancel()
		for range passes { // let the stages before stop
		}
	}()
	skipped := 0
	var firstSkip error
	for ps := range passes {
		err := ps.err
		if err == nil && len(ps.readable) > 0 {
			err = p.submit(ctx, ps)
		}
		if ps.skip.count > 0 {
			skipped += ps.skip.count
			p.unreadable.Add(float64(ps.skip.count))
			if firstSkip == nil {
				firstSkip = ps.skip.err
			}
		}
		if err != nil {
			n, aerr := finish()
			p.countPending()
			if aerr != nil {
				return n, aerr
			}
			return n, err
		}
		if ps.n == 0 {
			n, aerr := finish()
			p.countPending()
			if aerr != nil {
				return n, aerr
			}
			if skipped > 0 {
				return n, fmt.Errorf("%w: %d subjects left marked: %w", ErrUnreadableSubjects, skipped, firstSkip)
			}
			p.emptyKnown, p.emptyAt = true, version
			return n, nil
		}
		acks <- ps
	}
	n, aerr := finish()
	if aerr != nil {
		return n, aerr
	}
	return n, ctx.Err()
}

// countPending sets the pending gauge from the outbox's count.
func (p *Publisher) countPending() {
	if l, err := p.cfg.Outbox.OutboxLen(); err == nil {
		p.pending.Set(float64(l))
	}
}

// pass is one batch of the outbox, read and ready to commit: the entries
// marked after the sequence number after, how many were read (n), the last
// sequence number read, the subjects left marked because their records
// could not be read, and the updates of the others.
type pass struct {
	after, last uint64
	n           int
	skip        skips
	readable    []storage.OutboxItem // one a subject: the latest of its entries
	acks        []storage.OutboxItem // every entry of the readable subjects
	records     [][]credit.Record    // the readable subjects' summary fields, until pseudonymize
	cat         *credit.Catalog
	updates     []consensus.IndexUpdate
	err         error
}

// skips counts the subjects a pass left marked because their records could
// not be read, and the first such error.
type skips struct {
	count int
	err   error
}

// read reads one batch of the subjects marked after the sequence number
// after and their records' summary fields.
func (p *Publisher) read(after uint64) pass {
	ps := pass{after: after, last: after}
	start := time.Now()
	items, err := p.cfg.Outbox.PendingSubjectsAfter(after, p.cfg.Batch)
	if err != nil || len(items) == 0 {
		ps.err = err
		return ps
	}
	ps.last = items[len(items)-1].Seq
	cat := p.cfg.Index.Catalog()
	if cat == nil {
		ps.err = ErrNoCatalog
		return ps
	}
	var records [][]credit.Record
	// A subject changed by two commits since it was last published has two
	// entries: it is read and published once, under the later number,
	// and both entries are acknowledged.
	last := make(map[string]int, len(items))
	for i, it := range items {
		last[it.Subject] = i
	}
	var all []string
	for i, it := range items {
		if last[it.Subject] == i {
			all = append(all, it.Subject)
		}
	}
	recs, errs, err := p.cfg.Outbox.SummaryFieldsBySubjects(all)
	if err != nil {
		ps.err = err
		return ps
	}
	ps.n = len(items)
	var failed map[string]bool // few, if any: a damaged store
	for i, subject := range all {
		if errs[i] != nil {
			if failed == nil {
				failed = map[string]bool{}
			}
			ps.skip.count++
			if ps.skip.err == nil {
				ps.skip.err = errs[i]
			}
			failed[subject] = true
			continue
		}
		ps.readable = append(ps.readable, items[last[subject]])
		records = append(records, recs[i])
	}
	for _, it := range items {
		if !failed[it.Subject] {
			ps.acks = append(ps.acks, it)
		}
	}
	p.observe("read", start)
	ps.records = records
	ps.cat = cat
	return ps
}

// pseudonymize computes the summaries and pseudonyms of a pass's readable
// subjects: its updates, or its error (and n = 0: nothing of the pass is
// published or acknowledged).
func (p *Publisher) pseudonymize(ctx context.Context, ps *pass) {
	start := time.Now()
	subjects := make([]string, len(ps.readable))
	for i, it := range ps.readable {
		subjects[i] = it.Subject
	}
	actx, cancel := context.WithTimeout(ctx, p.cfg.AttemptTimeout)
	defer cancel()
	pseudonyms, old, err := p.pseudonyms(actx, subjects)
	if err != nil {
		ps.n, ps.err = 0, fmt.Errorf("publish: pseudonyms of %d subjects: %w", len(subjects), err)
		return
	}
	p.observe("pseudonyms", start)
	today := credit.TodayAt(p.cfg.Now())
	ps.updates = make([]consensus.IndexUpdate, len(ps.readable), len(ps.readable)+len(old))
	for i, it := range ps.readable {
		ps.updates[i] = consensus.IndexUpdate{Pseudonym: pseudonyms[i], District: p.cfg.District,
			Summary: credit.Summarize(ps.records[i], ps.cat, today), Seq: it.Seq}
		// The entry under the older key version goes in the same group:
		// the index holds the subject under one pseudonym or the other,
		// never neither (keyring.Entries reads both).
		if o, ok := old[it.Subject]; ok && o != pseudonyms[i] {
			ps.updates = append(ps.updates, consensus.IndexUpdate{Pseudonym: o, District: p.cfg.District,
				Summary: credit.IndexSummary{Withdrawn: true}, Seq: it.Seq})
		}
	}
	ps.records = nil
}

// submit hands a pass's updates to the leader and waits until they are
// applied.
func (p *Publisher) submit(ctx context.Context, ps pass) error {
	actx, cancel := context.WithTimeout(ctx, p.cfg.AttemptTimeout)
	defer cancel()
	start := time.Now()
	if err := p.cfg.Index.SubmitIndex(actx, ps.updates); err != nil {
		return fmt.Errorf("publish: %d index updates: %w", len(ps.updates), err)
	}
	p.observe("index", start)
	return nil
}

// ack removes the outbox entries of a pass whose updates were applied.
func (p *Publisher) ack(ps pass) error {
	start := time.Now()
	err := p.cfg.Outbox.AckOutbox(ps.acks)
	if err == nil { // as the other stages: observed when it completed
		p.observe("ack", start)
	}
	return err
}

// observe notes how long a stage took since start.
func (p *Publisher) observe(stage string, start time.Time) {
	p.stage.WithLabelValues(stage).Observe(time.Since(start).Seconds())
}

// pseudonyms returns the subjects' pseudonyms under the version the
// district publishes under, and their cached ones under the version it
// withdraws (none outside a rotation).
func (p *Publisher) pseudonyms(ctx context.Context, subjects []string) ([]credit.Pseudonym, map[string]credit.Pseudonym, error) {
	r := p.cfg.Rotation
	if r == nil {
		ps, err := p.cfg.Resolve(ctx, subjects)
		return ps, nil, err
	}
	cur, withdraw := r.Versions.Publishing()
	ps, err := r.ResolveAt(ctx, subjects, cur)
	if err != nil || withdraw == 0 || withdraw == cur {
		return ps, nil, err
	}
	old, err := r.CachedAt(withdraw, subjects)
	if err != nil {
		return nil, nil, err
	}
	return ps, old, nil
}
