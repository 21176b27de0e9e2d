package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"credfed/credit"
	"credfed/storage"
)

// Outbox is what a district's publisher reads: the subjects whose index
// entries changed (storage.DB implements it).
type Outbox interface {
	PendingSubjectsAfter(after uint64, limit int) ([]storage.OutboxItem, error)
	AckOutbox(items []storage.OutboxItem) error
	OutboxLen() (int, error)
	RecordsBySubject(subject string) ([]credit.Record, error)
}

// PseudonymResolver returns the pseudonyms of canonical identifiers, in
// order (the node caches them in front of Replica.Pseudonymize).
type PseudonymResolver func(ctx context.Context, subjects []string) ([]credit.Pseudonym, error)

// Publisher drains a district's outbox into the replicated index: it reads
// the pending subjects, recomputes each one's summary from the records as
// they are now, forwards the updates to the leader and acknowledges them
// only once applied. A record acknowledged to its submitter is in the
// outbox in the same synced write, so it reaches the index whatever
// happens in between: no leader, a leader change, a restart.
type Publisher struct {
	r       *Replica
	src     Outbox
	resolve PseudonymResolver
	log     *slog.Logger
	now     func() time.Time
	batch   int

	wake chan struct{}
	done chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	lastErr error
}

// StartPublisher starts draining src (a district node only).
func (r *Replica) StartPublisher(src Outbox, resolve PseudonymResolver) *Publisher {
	now := r.cfg.Now
	if now == nil {
		now = time.Now
	}
	p := &Publisher{r: r, src: src, resolve: resolve, log: r.log.With("component", "publisher"),
		now: now, batch: 1000, wake: make(chan struct{}, 1), done: make(chan struct{})}
	p.wg.Add(1)
	go p.run()
	return p
}

// Notify tells the publisher that the outbox has new entries.
func (p *Publisher) Notify() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Stop stops the publisher (pending entries stay in the outbox).
func (p *Publisher) Stop() {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
}

// LastError is the error of the last failed pass, nil after a good one.
func (p *Publisher) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

func (p *Publisher) run() {
	defer p.wg.Done()
	backoff := 50 * time.Millisecond
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		go func() {
			select {
			case <-p.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := p.Drain(ctx)
		cancel()
		p.mu.Lock()
		p.lastErr = err
		p.mu.Unlock()
		wait := time.Duration(0)
		if err != nil {
			if !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrOutcomeUnknown) && !errors.Is(err, context.Canceled) {
				p.log.Warn("outbox not drained; will retry", "error", err, "retry_in", backoff)
			}
			wait = backoff
			backoff = min(backoff*2, 5*time.Second)
		} else {
			backoff = 50 * time.Millisecond
		}
		if wait > 0 {
			select {
			case <-p.done:
				return
			case <-time.After(wait):
			}
			continue
		}
		select {
		case <-p.done:
			return
		case <-p.wake:
		case <-tick.C:
		}
	}
}

// Drain publishes until the outbox is empty or an error stops it. A
// subject whose records cannot be read (a damaged store) stays marked and
// does not hold the others back: Drain goes on past it and, once the rest
// is out, reports it as an ErrUnreadableSubjects error (counted in
// credfed_consensus_outbox_unreadable_total; the publisher retries it).
func (p *Publisher) Drain(ctx context.Context) error {
	var after uint64
	skipped := 0
	var firstSkip error
	for {
		n, last, skip, err := p.pass(ctx, after)
		if n, lenErr := p.src.OutboxLen(); lenErr == nil {
			p.r.metrics.outboxLag.Set(float64(n))
		}
		if skip.count > 0 {
			skipped += skip.count
			p.r.metrics.outboxUnreadable.Add(float64(skip.count))
			if firstSkip == nil {
				firstSkip = skip.err
			}
		}
		if err != nil {
			return err
		}
		if n == 0 {
			if skipped > 0 {
				return fmt.Errorf("%w: %d subjects left marked: %w", ErrUnreadableSubjects, skipped, firstSkip)
			}
			return nil
		}
		after = last
	}
}

// skips counts the subjects a pass left marked because their records could
// not be read, and the first such error.
type skips struct {
	count int
	err   error
}

// pass publishes one batch of the subjects marked after the sequence
// number after, and returns how many it read, the last sequence number
// read and the subjects it had to leave marked.
func (p *Publisher) pass(ctx context.Context, after uint64) (int, uint64, skips, error) {
	var skip skips
	items, err := p.src.PendingSubjectsAfter(after, p.batch)
	if err != nil || len(items) == 0 {
		return 0, after, skip, err
	}
	last := items[len(items)-1].Seq
	cat := p.r.state.Catalog()
	if cat == nil {
		return 0, after, skip, ErrNoLeader // the catalog has not replicated here yet
	}
	var readable []storage.OutboxItem
	var records [][]credit.Record
	for _, it := range items {
		recs, err := p.src.RecordsBySubject(it.Subject)
		if err != nil {
			skip.count++
			if skip.err == nil {
				skip.err = err
			}
			continue
		}
		readable = append(readable, it)
		records = append(records, recs)
	}
	if len(readable) == 0 {
		return len(items), last, skip, nil
	}
	subjects := make([]string, len(readable))
	for i, it := range readable {
		subjects[i] = it.Subject
	}
	pseudonyms, err := p.resolve(ctx, subjects)
	if err != nil {
		return 0, after, skip, err
	}
	today := credit.TodayAt(p.now())
	district := p.r.cfg.Self.Region
	updates := make([]IndexUpdate, len(readable))
	for i, it := range readable {
		updates[i] = IndexUpdate{Pseudonym: pseudonyms[i], District: district,
			Summary: credit.Summarize(records[i], cat, today), Seq: it.Seq}
	}
	if err := p.r.SubmitIndex(ctx, updates); err != nil {
		return 0, after, skip, err
	}
	return len(items), last, skip, p.src.AckOutbox(readable)
}
