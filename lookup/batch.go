package lookup

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"

	"credfed/credit"
	"credfed/exchange"
	"credfed/storage"
)

// OpBatch is served by districts: the lookups a coordinator has for one
// district at one moment, answered together — one exchange request, one
// read transaction, one audit append of an entry per lookup. A coordinator
// sends a lookup alone when nothing else is waiting for that district (no
// lookup waits for others to arrive), and in a batch of those that came
// while maxBatchesInFlight of its earlier requests to it (alone or
// batches) were in flight. Each lookup is decided and registered exactly
// as Op decides one. A district that does not serve OpBatch (not_found:
// an older node) is sent lookups alone for olderNodeFor.
const OpBatch = "lookup.batch"

// Bounds of a batch: lookups in one (MaxBatch), requests in flight to one
// district at a time, a lookup alone counting as one (maxBatchesInFlight),
// lookups waiting for one district (maxBatchQueue; beyond it a lookup's
// part of that district is unreachable), the encoded answers a district
// puts in one reply (maxBatchReply; an answer with records that would take
// the reply past it, never the first, it leaves unanswered and
// unregistered, marked Alone, for the coordinator to send alone; refusals
// always go in), and the request body a district accepts (maxBatchBody).
const (
	MaxBatch           = 32
	maxBatchesInFlight = 4
	maxBatchQueue      = 4096
	maxBatchReply      = 1 << 20
	maxBatchBody       = 1 << 20
)

// batchReplyBudget is maxBatchReply (a variable for tests: atomic, since
// a test sets it while handlers of the district it calls over loopback
// run, with nothing the race detector sees between them).
var batchReplyBudget atomic.Int64

func init() { batchReplyBudget.Store(maxBatchReply) }

// batchItem is one lookup of a batch: Op's request and the Meta it would
// travel with alone.
type batchItem struct {
	Request request       `cbor:"1,keyasint"`
	Meta    exchange.Meta `cbor:"2,keyasint"`
}

type batchRequest struct {
	Items []batchItem `cbor:"1,keyasint"`
}

// batchHead is batchRequest with its items left encoded, so that their
// count is checked before they are decoded: a body of many empty items
// (one byte each on the wire, 64 KiB for 65,536 of them) must not make the
// district allocate a batchItem for each first.
type batchHead struct {
	Items cbor.RawMessage `cbor:"1,keyasint"`
}

// decodeBatch decodes a batch's body (decode: exchange.Request.Decode),
// refusing one of more than MaxBatch items before decoding them.
func decodeBatch(decode func(any) error, in *batchRequest) error {
	var head batchHead
	if err := decode(&head); err != nil {
		return err
	}
	if len(head.Items) == 0 {
		return nil // no items (absent): refused by the caller's count check
	}
	if n, ok := cborArrayLen(head.Items); ok && n > MaxBatch {
		return exchange.Errorf(exchange.CodeBadRequest, "a batch holds 1 to %d lookups, not %d", MaxBatch, n)
	}
	return exchange.Unmarshal(head.Items, &in.Items)
}

// cborArrayLen returns the count in the head of the CBOR array at b, and
// false when b does not start with a definite-length array head.
func cborArrayLen(b []byte) (uint64, bool) {
	if len(b) == 0 || b[0]>>5 != 4 {
		return 0, false
	}
	ai := b[0] & 0x1f
	if ai < 24 {
		return uint64(ai), true
	}
	if ai > 27 {
		return 0, false // indefinite length (the decoder refuses it) or reserved
	}
	n := 1 << (ai - 24)
	if len(b) < 1+n {
		return 0, false
	}
	var v uint64
	for _, c := range b[1 : 1+n] {
		v = v<<8 | uint64(c)
	}
	return v, true
}

// batchResult is a district's answer to one lookup of a batch: its
// records, or the error Op would have answered (Code, Message), or Alone:
// not answered nor registered, to be sent alone (the reply was full).
type batchResult struct {
	Records []credit.Record `cbor:"1,keyasint,omitempty"`
	Code    exchange.Code   `cbor:"2,keyasint,omitempty"`
	Message string          `cbor:"3,keyasint,omitempty"`
	Alone   bool            `cbor:"4,keyasint,omitempty"`
}

// batchReply holds one result per item, in the items' order.
type batchReply struct {
	Items []batchResult `cbor:"1,keyasint"`
}

// batchReplyOut is batchReply as a district sends it: each result encoded
// once, when it was measured against maxBatchReply.
type batchReplyOut struct {
	Items []cbor.RawMessage `cbor:"1,keyasint"`
}

// answerBatch is a district's side of OpBatch.
func (s *Service) answerBatch(ctx context.Context, req *exchange.Request) (any, error) {
	var in batchRequest
	if err := decodeBatch(req.Decode, &in); err != nil {
		return nil, err
	}
	if len(in.Items) == 0 || len(in.Items) > MaxBatch {
		return nil, exchange.Errorf(exchange.CodeBadRequest, "a batch holds 1 to %d lookups, not %d", MaxBatch, len(in.Items))
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "catalog not replicated yet")
	}
	now := s.cfg.Now()
	// Each item's subject, parsed, as an index into distinct (-1: its
	// meta or its identifier is refused): a subject named by several
	// lookups of the batch is read and resolved once.
	subjects := make([]string, len(in.Items))
	serrs := make([]error, len(in.Items))
	merrs := make([]error, len(in.Items))
	at := make([]int, len(in.Items))
	var distinct []string
	seen := map[string]int{}
	for i, it := range in.Items {
		at[i] = -1
		// Alone, a meta beyond the envelope's bounds is refused before
		// the lookup is decided or registered: so is it here, and its
		// subject is neither read nor resolved.
		if merrs[i] = it.Meta.Check(); merrs[i] != nil {
			continue
		}
		if subjects[i], serrs[i] = s.parseSubject(it.Request.Subject, now); serrs[i] != nil {
			continue
		}
		k, ok := seen[subjects[i]]
		if !ok {
			k = len(distinct)
			seen[subjects[i]] = k
			distinct = append(distinct, subjects[i])
		}
		at[i] = k
	}
	var (
		recs [][]credit.Record
		rerr []error
		err  error
	)
	if len(distinct) > 0 {
		recs, rerr, err = s.cfg.Records.RecordsBySubjects(distinct)
	}
	owns := s.ownAll(ctx, distinct, recs, rerr, err)
	out := batchReplyOut{Items: make([]cbor.RawMessage, len(in.Items))}
	decided := make([]decision, len(in.Items))
	var entries []storage.AuditEntry
	size := 0
	for i, it := range in.Items {
		var d decision
		switch k := at[i]; {
		case merrs[i] != nil:
			d = decision{err: exchange.Errorf(exchange.CodeBadRequest, "%v", merrs[i])}
		case k < 0:
			d = s.decide(ctx, req.Caller, cat, it.Request, it.Meta, now, subjects[i], serrs[i], nil, nil, nil)
		default:
			re := err
			var r []credit.Record
			if re == nil {
				r, re = recs[k], rerr[k]
			}
			var own []credit.Pseudonym
			if owns != nil {
				own = owns[k]
			}
			d = s.decide(ctx, req.Caller, cat, it.Request, it.Meta, now, subjects[i], nil, r, re, own)
		}
		res := batchResult{Records: d.out.Records}
		if d.err != nil {
			res = batchResult{Code: d.err.Code, Message: d.err.Message}
		}
		b, merr := exchange.Marshal(res)
		if merr != nil {
			return nil, exchange.Errorf(exchange.CodeInternal, "encoding an answer failed")
		}
		if d.err == nil && size > 0 && int64(size+len(b)) > batchReplyBudget.Load() {
			d = decision{}
			if b, merr = exchange.Marshal(batchResult{Alone: true}); merr != nil {
				return nil, exchange.Errorf(exchange.CodeInternal, "encoding an answer failed")
			}
		}
		size += len(b)
		out.Items[i], decided[i] = b, d
		if d.entry.Operation != "" {
			entries = append(entries, d.entry)
		}
	}
	if len(entries) > 0 {
		// One append: every lookup of the batch is registered, or none is
		// and none is answered.
		if err := s.cfg.Audit.Record(entries[0], entries[1:]...); err != nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
		}
	}
	for _, d := range decided {
		if d.entry.Operation != "" {
			s.countAnswer(d)
		}
	}
	return out, nil
}

// ownAll resolves together the district's pseudonyms of the distinct
// subjects of a batch it holds records of (OwnAll), indexed like
// subjects; nil when there is no OwnAll or it failed, and then each is
// resolved alone (decide), so that one subject a coordinator must be
// asked about cannot fail the others. Each subject is asked once: one not
// cached is asked of a coordinator, whose custody counts every identifier
// asked against the district.
func (s *Service) ownAll(ctx context.Context, subjects []string, recs [][]credit.Record, rerr []error, err error) [][]credit.Pseudonym {
	if s.cfg.OwnAll == nil || err != nil {
		return nil
	}
	var holding []string
	var at []int
	for i, subject := range subjects {
		if rerr[i] == nil && len(recs[i]) > 0 {
			holding = append(holding, subject)
			at = append(at, i)
		}
	}
	if len(holding) == 0 {
		return nil
	}
	got, oerr := s.cfg.OwnAll(ctx, holding)
	if oerr != nil || len(got) != len(holding) {
		return nil
	}
	out := make([][]credit.Pseudonym, len(subjects))
	for k, i := range at {
		out[i] = got[k]
	}
	return out
}

// pending is one lookup's part for one district, waiting for its batch.
type pending struct {
	ctx  context.Context
	item batchItem
	res  exchange.Result
	done chan struct{}
}

// batcher sends a coordinator's lookups to the districts in batches.
type batcher struct {
	s      *Service
	mu     sync.Mutex
	queues map[string]*districtQueue // by peer; a queue is dropped when idle
	// older holds the districts (by queue key) that answered that they do
	// not serve OpBatch (older nodes), and until when lookups go to them
	// alone: kept apart from the queues, which are dropped when idle.
	older map[string]time.Time
}

// olderNodeFor is how long a district that does not serve OpBatch is sent
// lookups alone before a batch is tried again.
const olderNodeFor = time.Minute

// districtQueue is the lookups waiting for one district and the batches in
// flight to it.
type districtQueue struct {
	key      string
	peer     exchange.Peer
	waiting  []*pending
	inflight int
}

func newBatcher(s *Service) *batcher {
	return &batcher{s: s, queues: map[string]*districtQueue{}, older: map[string]time.Time{}}
}

func queueKey(p exchange.Peer) string {
	id := ""
	if p.Identity != nil {
		id = p.Identity.String()
	}
	return p.Name + "\x00" + p.Addr + "\x00" + id
}

// fanOut asks every peer about the same lookup (req, meta), each through
// that peer's queue (alone or in a batch), and returns one result per peer
// in the order of peers (as exchange.FanOut does, with Resp a *reply). It
// returns at ctx's deadline at the latest.
func (b *batcher) fanOut(ctx context.Context, peers []exchange.Peer, meta exchange.Meta, req request) []exchange.Result {
	results := make([]exchange.Result, len(peers))
	parts := make([]*pending, len(peers))
	for i, p := range peers {
		parts[i] = &pending{ctx: ctx, item: batchItem{Request: req, Meta: meta}, done: make(chan struct{}), res: exchange.Result{Peer: p}}
		b.enqueue(p, parts[i])
	}
	for i, p := range parts {
		select {
		case <-p.done:
		case <-ctx.Done():
		}
		select {
		case <-p.done: // answered, even if just as ctx ended
			results[i] = p.res
		default:
			err := ctxError(peers[i], ctx.Err())
			results[i] = exchange.Result{Peer: peers[i], Status: exchange.StatusOf(err), Err: err}
		}
	}
	return results
}

func ctxError(p exchange.Peer, err error) error {
	if err == context.Canceled {
		return exchange.Errorf(exchange.CodeCanceled, "the lookup was canceled before %s answered", p.Name)
	}
	return exchange.Errorf(exchange.CodeDeadlineExceeded, "%s did not answer before the lookup's deadline", p.Name)
}

func (b *batcher) enqueue(p exchange.Peer, part *pending) {
	key := queueKey(p)
	b.mu.Lock()
	q := b.queues[key]
	if q == nil {
		q = &districtQueue{key: key, peer: p}
		b.queues[key] = q
	}
	if len(q.waiting) >= maxBatchQueue {
		b.mu.Unlock()
		part.finish(nil, exchange.Errorf(exchange.CodeUnavailable, "%d lookups are already waiting for %s", maxBatchQueue, p.Name))
		return
	}
	q.waiting = append(q.waiting, part)
	next := b.takeLocked(q)
	b.mu.Unlock()
	if next != nil {
		go b.send(q, next)
	}
}

// takeLocked takes the next batch of q if one may be sent now.
func (b *batcher) takeLocked(q *districtQueue) []*pending {
	if len(q.waiting) == 0 || q.inflight >= maxBatchesInFlight {
		// An idle queue is dropped (what it must remember of an older
		// district is in b.older).
		if len(q.waiting) == 0 && q.inflight == 0 && b.queues[q.key] == q {
			delete(b.queues, q.key)
		}
		return nil
	}
	n := min(len(q.waiting), MaxBatch)
	next := make([]*pending, n)
	copy(next, q.waiting)
	q.waiting = append(q.waiting[:0], q.waiting[n:]...)
	q.inflight++
	return next
}

func (p *pending) finish(resp *reply, err error) {
	p.res.Status, p.res.Err = exchange.StatusOf(err), err
	if err == nil {
		p.res.Resp = resp
	}
	close(p.done)
}

// send sends batches to q's district until nothing waits for it (or
// others of its batches in flight take over).
func (b *batcher) send(q *districtQueue, batch []*pending) {
	for batch != nil {
		b.sendOne(q, batch)
		b.mu.Lock()
		q.inflight--
		batch = b.takeLocked(q)
		b.mu.Unlock()
	}
}

func (b *batcher) sendOne(q *districtQueue, batch []*pending) {
	// Parts whose lookup has ended are not sent.
	live := batch[:0]
	var deadline time.Time
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.finish(nil, ctxError(q.peer, err))
			continue
		}
		if d, ok := p.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	b.mu.Lock()
	alone := time.Now().Before(b.older[q.key])
	b.mu.Unlock()
	if alone || len(live) == 1 {
		b.sendAlone(q.peer, live)
		return
	}
	if deadline.IsZero() {
		deadline = time.Now().Add(b.s.cfg.Timeout)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	b.s.batches.Observe(float64(len(live)))
	req := batchRequest{Items: make([]batchItem, len(live))}
	for i, p := range live {
		req.Items[i] = p.item
	}
	var rep batchReply
	err := b.s.cfg.Endpoint.Call(ctx, q.peer, OpBatch, exchange.Meta{}, req, &rep)
	if exchange.CodeOf(err) == exchange.CodeNotFound {
		// A node that does not serve OpBatch (yet): ask it one lookup at
		// a time for a while.
		now := time.Now()
		b.mu.Lock()
		for k, until := range b.older {
			if !now.Before(until) {
				delete(b.older, k)
			}
		}
		b.older[q.key] = now.Add(olderNodeFor)
		b.mu.Unlock()
		b.sendAlone(q.peer, live)
		return
	}
	if err == nil && len(rep.Items) != len(live) {
		err = exchange.Errorf(exchange.CodeInternal, "%s answered a batch of %d lookups with %d answers", q.peer.Name, len(live), len(rep.Items))
	}
	if err != nil {
		for _, p := range live {
			p.finish(nil, err)
		}
		return
	}
	var again []*pending
	for i, p := range live {
		r := rep.Items[i]
		switch {
		case r.Alone:
			again = append(again, p)
		case r.Code != "":
			p.finish(nil, &exchange.Error{Code: r.Code, Message: r.Message})
		default:
			recs := r.Records
			if recs == nil {
				recs = []credit.Record{}
			}
			p.finish(&reply{Records: recs}, nil)
		}
	}
	b.sendAlone(q.peer, again)
}

// sendAlone asks for each part in a request of its own (Op), in parallel.
func (b *batcher) sendAlone(peer exchange.Peer, parts []*pending) {
	if len(parts) == 1 {
		b.callAlone(peer, parts[0])
		return
	}
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.callAlone(peer, p)
		}()
	}
	wg.Wait()
}

func (b *batcher) callAlone(peer exchange.Peer, p *pending) {
	b.s.batches.Observe(1)
	var rep reply
	err := b.s.cfg.Endpoint.Call(p.ctx, peer, Op, p.item.Meta, p.item.Request, &rep)
	p.finish(&rep, err)
}
