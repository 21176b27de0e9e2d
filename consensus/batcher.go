package consensus

import (
	"context"
	"fmt"
	"time"

	"credfed/certs"
)

// batcher coalesces the index updates that districts forward to the leader
// into few log entries: one proposer goroutine takes what is waiting (up
// to MaxBatchUpdates updates) and proposes it as one CmdIndexBatch, with
// up to MaxInFlight entries proposed and not yet applied. Under light
// load an update is proposed at once; under heavy load the requests that
// arrive while entries are in flight make the next entry bigger, so the
// number of disk syncs per update falls as load rises (group commit).
//
// The queue is bounded: submit waits for room until its context ends.
type batcher struct {
	r        *Replica
	in       chan *indexReq
	slots    chan struct{}
	maxBatch int
}

type indexReq struct {
	proposer certs.Identity
	updates  []IndexUpdate
	done     chan error
}

func newBatcher(r *Replica) *batcher {
	return &batcher{
		r:        r,
		in:       make(chan *indexReq, 1024),
		slots:    make(chan struct{}, r.cfg.MaxInFlight),
		maxBatch: r.cfg.MaxBatchUpdates,
	}
}

// submit queues the updates of one proposer and waits for their result.
func (b *batcher) submit(ctx context.Context, proposer certs.Identity, updates []IndexUpdate) error {
	if !b.r.IsLeader() {
		return ErrNoLeader
	}
	if b.r.state.keys == nil {
		// A leader without the index key (a district made a voter) cannot
		// seal: it hands leadership over (leader.go), and the district
		// forwards to the next leader.
		return fmt.Errorf("%w: this leader does not hold the index key", ErrNoLeader)
	}
	req := &indexReq{proposer: proposer, updates: updates, done: make(chan error, 1)}
	select {
	case b.in <- req:
	case <-ctx.Done():
		return fmt.Errorf("consensus: index queue full: %w", ctx.Err())
	case <-b.r.done:
		return ErrClosed
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		// The batch may still be applied; the caller retries, which is
		// harmless (entries carry sequence numbers).
		return fmt.Errorf("consensus: index submit: %w", ctx.Err())
	}
}

// run is the proposer loop.
func (b *batcher) run() {
	defer b.r.wg.Done()
	for {
		var first *indexReq
		select {
		case first = <-b.in:
		case <-b.r.done:
			b.failQueued()
			return
		}
		select {
		case b.slots <- struct{}{}:
		case <-b.r.done:
			first.done <- ErrClosed
			b.failQueued()
			return
		}
		reqs := []*indexReq{first}
		n := len(first.updates)
	gather:
		for n < b.maxBatch {
			select {
			case req := <-b.in:
				reqs = append(reqs, req)
				n += len(req.updates)
			default:
				break gather
			}
		}
		b.propose(reqs, n)
	}
}

// propose hands one batch to Raft; a goroutine waits for its result and
// frees the slot.
func (b *batcher) propose(reqs []*indexReq, n int) {
	batch := IndexBatch{Groups: make([]IndexGroup, len(reqs))}
	for i, req := range reqs {
		batch.Groups[i] = IndexGroup{Proposer: req.proposer, Updates: req.updates}
	}
	data, err := b.encode(batch)
	if err != nil {
		b.finish(reqs, nil, err)
		return
	}
	b.r.metrics.batchUpdates.Observe(float64(n))
	f := b.r.raft.Apply(data, 10*time.Second)
	go func() {
		defer func() { <-b.slots }()
		if err := b.r.await(f); err != nil {
			b.finish(reqs, nil, raftError(err))
			return
		}
		res, _ := f.Response().(IndexResult)
		b.finish(reqs, res.Errs, nil)
	}()
}

// encode builds the log entry of a batch: sealed with the current index
// key (seal.go), so that only coordinators can read it.
func (b *batcher) encode(batch IndexBatch) ([]byte, error) {
	env := Envelope{Proposer: b.r.cfg.Self, At: time.Now().UTC()}
	if b.r.cfg.unsealedIndex {
		return EncodeCommand(CmdIndexBatch, env, batch)
	}
	sealed, err := b.r.state.keys.sealBatch(batch, b.r.cfg.Self.Federation)
	if err != nil {
		return nil, err
	}
	return EncodeCommand(CmdSealedIndexBatch, env, sealed)
}

func (b *batcher) finish(reqs []*indexReq, errs []error, err error) {
	for i, req := range reqs {
		e := err
		if e == nil && i < len(errs) {
			e = errs[i]
		}
		req.done <- e
	}
}

func (b *batcher) failQueued() {
	for {
		select {
		case req := <-b.in:
			req.done <- ErrClosed
		default:
			return
		}
	}
}
