package lookup

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"credfed/credit"
	"credfed/exchange"
	"credfed/internal/wait"
)

// TestBatchCountCheckedBeforeItemsAreDecoded: a hostile coordinator's
// batch of 65,536 empty items is 64 KiB on the wire (the limit of a lookup
// alone), and decoding it whole would allocate a batchItem for each (some
// 14 MiB, every request): the count is refused before the items are
// decoded, and nothing is registered.
func TestBatchCountCheckedBeforeItemsAreDecoded(t *testing.T) {
	f := newDistrict(t, nil)
	body, err := exchange.Marshal(map[int][]struct{}{1: make([]struct{}, 65536)})
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > 70<<10 {
		t.Fatalf("the hostile body is %d bytes, the test wants it small", len(body))
	}
	// Warm the connection up so that its handshake is not measured.
	if err := f.city.Call(context.Background(), f.peer(), OpBatch, exchange.Meta{}, cbor.RawMessage(body[:0:0]), nil); err == nil {
		t.Fatal("an empty body was accepted")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const calls = 4
	for range calls {
		err = f.city.Call(context.Background(), f.peer(), OpBatch, exchange.Meta{}, cbor.RawMessage(body), nil)
		if !errors.Is(err, exchange.ErrBadRequest) || !strings.Contains(err.Error(), "not 65536") {
			t.Fatalf("a batch of 65536 empty items: %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	// Both endpoints run in this process: what is allocated per call is
	// the client's frame, the server's and the handler's decoding.
	per := (after.TotalAlloc - before.TotalAlloc) / calls
	t.Logf("%d bytes per call", per)
	if per > 2<<20 {
		t.Fatalf("a %d-byte batch of 65536 empty items allocated %d bytes per call", len(body), per)
	}
	if got := f.entries(t); len(got) != 0 {
		t.Fatalf("a refused batch registered %d entries", len(got))
	}
}

// TestBatchItemMetaIsBoundedAsTheEnvelopes: a batch item's meta travels in
// the body, where the envelope's bound (each field at most 4096 bytes)
// does not reach. A lookup alone with such a meta is refused before it is
// decided, registering nothing; in a batch it is refused the same way,
// and the other lookups are answered.
func TestBatchItemMetaIsBoundedAsTheEnvelopes(t *testing.T) {
	a := credit.SyntheticPerson(91, credit.NewDate(1980, 1, 1))
	f := newDistrict(t, nil, a)
	meta := exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"}
	huge := meta
	huge.User = strings.Repeat("u", 5000)
	hugePurpose := meta
	hugePurpose.Purpose = strings.Repeat("P", 5000)
	req := request{Subject: a, Pseudonym: f.key.Pseudonym(a), Requester: f.user}
	var alone reply
	if err := f.city.Call(context.Background(), f.peer(), Op, huge, req, &alone); !errors.Is(err, exchange.ErrBadRequest) {
		t.Fatalf("a lookup alone with a 5000-byte user: %v", err)
	}
	var rep batchReply
	items := []batchItem{{Request: req, Meta: huge}, {Request: req, Meta: meta}, {Request: req, Meta: hugePurpose}}
	if err := f.city.Call(context.Background(), f.peer(), OpBatch, exchange.Meta{}, batchRequest{Items: items}, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Items) != 3 || rep.Items[0].Code != exchange.CodeBadRequest || rep.Items[2].Code != exchange.CodeBadRequest ||
		rep.Items[1].Code != "" || len(rep.Items[1].Records) != 1 {
		t.Fatalf("answers: %+v", rep.Items)
	}
	if got := f.entries(t); len(got) != 1 || got[0].Decision != "allowed" {
		t.Fatalf("entries %+v: only the lookup within the bounds is registered", got)
	}
}

// TestBatchResolvesEachSubjectOnce: a batch naming one subject 32 times
// asks for its pseudonyms once (a pseudonym not cached is asked of a
// coordinator, whose custody counts every identifier against the
// district), and every lookup is registered under it.
func TestBatchResolvesEachSubjectOnce(t *testing.T) {
	a := credit.SyntheticPerson(92, credit.NewDate(1980, 1, 1))
	b := credit.SyntheticPerson(93, credit.NewDate(1980, 1, 1))
	f := newDistrict(t, nil, a, b)
	meta := exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"}
	items := make([]batchItem, MaxBatch)
	for i := range items {
		s := a
		if i == 7 {
			s = b
		}
		items[i] = batchItem{Request: request{Subject: s, Pseudonym: f.key.Pseudonym(s), Requester: f.user}, Meta: meta}
	}
	var rep batchReply
	if err := f.city.Call(context.Background(), f.peer(), OpBatch, exchange.Meta{}, batchRequest{Items: items}, &rep); err != nil {
		t.Fatal(err)
	}
	if n := f.ownAllIDs.Load(); n != 2 {
		t.Fatalf("the batch asked for %d subjects' pseudonyms, want its 2 subjects", n)
	}
	got := f.entries(t)
	if len(got) != MaxBatch {
		t.Fatalf("%d entries for %d lookups", len(got), MaxBatch)
	}
	for i, e := range got {
		if e.Subject != f.key.Pseudonym(items[i].Request.Subject).String() || len(rep.Items[i].Records) != 1 ||
			rep.Items[i].Records[0].Subject != items[i].Request.Subject {
			t.Fatalf("lookup %d: entry %+v, answer %+v", i, e, rep.Items[i])
		}
	}
}

// TestOlderDistrictStaysAloneBetweenBursts: a district that answers
// lookup.batch with not_found (an older node) is asked alone for a minute,
// not again at every burst once its queue went idle between them (each
// such batch costs the lookups in it a round trip).
func TestOlderDistrictStaysAloneBetweenBursts(t *testing.T) {
	g := newGated(t, nil)
	var tried atomic.Int32
	g.ep.Handle(OpBatch, func(ctx context.Context, req *exchange.Request) (any, error) {
		tried.Add(1)
		return nil, exchange.Errorf(exchange.CodeNotFound, "unknown operation")
	})
	svc := coordinator(t, g, 10*time.Second)
	for round := range 2 {
		first, firstDone, later, laterDone := queueBehindGate(t, svc, g, 6)
		close(g.gate)
		checkOwn(t, "first", first, recv(t, firstDone))
		checkOwn(t, "later", later, recv(t, laterDone))
		wait.Until(t, 5*time.Second, "nothing in flight", func() bool {
			svc.batch.mu.Lock()
			defer svc.batch.mu.Unlock()
			for _, q := range svc.batch.queues {
				if q.inflight > 0 || len(q.waiting) > 0 {
					return false
				}
			}
			return true
		})
		if round == 0 {
			if n := tried.Load(); n < 1 {
				t.Fatalf("round 0: %d batches tried, the test needs the fallback", n)
			}
			g.gate = make(chan struct{})
			g.alone.Store(0)
		}
	}
	if n := tried.Load(); n != 1 {
		t.Fatalf("%d batches tried of a district that answered not_found: the minute alone did not last past an idle queue", n)
	}
}

// TestCoordinatorBoundsWhatADistrictSendsBackAlone: a hostile district
// that answers every lookup of every batch with alone makes the
// coordinator ask each of them once more, alone, and no more (it cannot
// make a lookup go round in batches).
func TestCoordinatorBoundsWhatADistrictSendsBackAlone(t *testing.T) {
	g := newGated(t, func(in batchRequest) batchReply {
		out := batchReply{Items: make([]batchResult, len(in.Items))}
		for i := range out.Items {
			out.Items[i].Alone = true
		}
		return out
	})
	svc := coordinator(t, g, 10*time.Second)
	first, firstDone, later, laterDone := queueBehindGate(t, svc, g, 40)
	close(g.gate)
	checkOwn(t, "first", first, recv(t, firstDone))
	checkOwn(t, "later", later, recv(t, laterDone))
	total := 0
	for _, n := range g.sizes() {
		total += n
	}
	if total != 40 || g.alone.Load() != maxBatchesInFlight+40 {
		t.Fatalf("batches %v, %d alone: each of the 40 queued lookups should be batched once and sent alone once", g.sizes(), g.alone.Load())
	}
}
