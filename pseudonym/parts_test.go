package pseudonym

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/storage"
)

// Review of the parallel parts of Resolver.resolve (e26acd8).

// handedOut sums the pseudonyms the coordinator handed out (allowed
// entries) and counts the refused requests.
func handedOut(entries []storage.AuditEntry) (handed, denied int) {
	for _, e := range entries {
		if e.Decision == storage.DecisionAllowed {
			handed += e.Count
		} else {
			denied++
		}
	}
	return handed, denied
}

// TestResolveThrowsAwayNoPseudonymItWasHanded: one part refused (a
// refusal "the same everywhere") must not cost the district pseudonyms
// handed out for the other parts that it then throws away: either the
// other parts are not asked once the resolve has failed, or what they
// answered is kept (cached).
func TestResolveThrowsAwayNoPseudonymItWasHanded(t *testing.T) {
	s := newSetup(t, nil)
	ids := synthIDs(1, 2*MaxBatch)
	ids[3] = "110105194912310021" // bad check character: part 0 is refused
	if _, err := s.resolver.Resolve(ctxT(t), ids); !errors.Is(err, ErrRefused) {
		t.Fatalf("a resolve with an invalid identifier in its first part: %v", err)
	}
	handed, _ := handedOut(s.audited(t))
	kept, _ := s.cache.Pseudonyms(ids)
	if handed > len(kept) {
		t.Fatalf("the coordinator handed out %d pseudonyms (audited, counted against the district's rate and noted for the custody check) "+
			"for a resolve that failed; the district kept %d of them", handed, len(kept))
	}
}

// TestResolvePastTheBurstGetsThere: a district whose burst at its city is
// one full request (a DistrictRate of 100/s or less: bursts of
// max(10 s, MaxBatch)) resolves a publisher's pass of 2,000 subjects once
// the burst has refilled, however many times it tries: the part answered
// is not asked again.
func TestResolvePastTheBurstGetsThere(t *testing.T) {
	var ticks atomic.Int64
	t0 := time.Now()
	s := newSetup(t, func(c *CustodyConfig) {
		c.DistrictRate = 100 // burst: 1,000
		c.Now = func() time.Time { return t0.Add(time.Duration(ticks.Load())) }
	})
	ids := synthIDs(1, 2*MaxBatch)
	var err error
	attempts := 0
	for attempts < 5 {
		attempts++
		if _, err = s.resolver.Resolve(ctxT(t), ids); err == nil {
			break
		}
		if !errors.Is(err, ErrRateLimited) {
			t.Fatal(err)
		}
		ticks.Add(int64(20 * time.Second)) // the burst is full again
	}
	handed, denied := handedOut(s.audited(t))
	if err != nil {
		t.Fatalf("%d attempts, each after a full refill of the burst, all refused (%v): the coordinator handed out %d pseudonyms, refused %d requests",
			attempts, err, handed, denied)
	}
}

// TestResolveInPartsKeepsOrderAroundCacheHits: missing identifiers spread
// among cached ones and repeated, over three parts: each pseudonym in its
// identifier's place.
func TestResolveInPartsKeepsOrderAroundCacheHits(t *testing.T) {
	s := newSetup(t, nil)
	ids := synthIDs(1, 3000)
	pre := map[string]credit.Pseudonym{}
	for i := 0; i < len(ids); i += 3 {
		pre[ids[i]] = s.key.Pseudonym(ids[i])
	}
	if err := s.cache.PutPseudonyms(pre); err != nil {
		t.Fatal(err)
	}
	subjects := append(append([]string{}, ids...), ids[:700]...) // repeated: 2,000 + 467 missing, three parts
	got, err := s.resolver.Resolve(ctxT(t), subjects)
	if err != nil || len(got) != len(subjects) {
		t.Fatalf("%d, %v", len(got), err)
	}
	for i, id := range subjects {
		if got[i] != s.key.Pseudonym(id) {
			t.Fatalf("pseudonym %d is not its identifier's", i)
		}
	}
	if n := len(s.audited(t)); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
}

// TestResolveInPartsCanceledMidway: a coordinator that holds its answers;
// the context ends while four parts are in flight and two wait for a slot:
// Resolve returns (no deadlock on the slots), says no coordinator answered,
// and the parts not yet sent never reach the coordinator.
func TestResolveInPartsCanceledMidway(t *testing.T) {
	s := newSetup(t, nil)
	cityID := certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/hangzhou"}
	slow := endpoint(t, s.ca, cityID)
	arrived := make(chan struct{}, 16)
	release := make(chan struct{})
	var calls atomic.Int32
	slow.Handle(Op, func(ctx context.Context, req *exchange.Request) (any, error) {
		calls.Add(1)
		arrived <- struct{}{}
		select {
		case <-ctx.Done():
		case <-release:
		}
		return nil, exchange.Errorf(exchange.CodeUnavailable, "held")
	})
	defer close(release)
	districtID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/hangzhou/xihu"}
	reg := registry{{Path: cityID.Region, Role: certs.City, Exchange: slow.Addr().String()}, {Path: districtID.Region, Role: certs.District}}
	r := NewResolver(ResolverConfig{Self: districtID, Endpoint: endpoint(t, s.ca, districtID), Registry: reg})
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		_, err := r.Resolve(ctx, synthIDs(1, 5*MaxBatch+1))
		done <- err
	}()
	for range maxAsking {
		select {
		case <-arrived:
		case err := <-done:
			t.Fatalf("returned before %d parts were in flight: %v", maxAsking, err)
		case <-time.After(10 * time.Second):
			t.Fatal("the parts never reached the coordinator")
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNoCoordinator) {
			t.Fatalf("canceled: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Resolve did not return after its context ended")
	}
	if n := calls.Load(); n != maxAsking {
		t.Fatalf("%d requests reached the coordinator, want %d", n, maxAsking)
	}
}

// flipKeys answers its first call under version 1, the others under 2: a
// key switch at the coordinator between the parts of one resolve.
type flipKeys struct {
	calls  atomic.Int32
	k1, k2 credit.PseudonymKey
}

func (k *flipKeys) CurrentPseudonymKey() (uint32, credit.PseudonymKey) {
	if k.calls.Add(1) == 1 {
		return 1, k.k1
	}
	return 2, k.k2
}

// TestResolveAtAcrossAKeySwitchBetweenParts: one part answered under the
// version asked, the other under the next: ResolveAt refuses
// (ErrOtherVersion), each part is cached under its own version with its
// own key's pseudonyms, and the district at the next version gets all its
// pseudonyms right.
func TestResolveAtAcrossAKeySwitchBetweenParts(t *testing.T) {
	k2 := credit.PseudonymKey(bytes.Repeat([]byte{0x22}, 32))
	var ring *flipKeys
	s := newSetup(t, func(c *CustodyConfig) {
		ring = &flipKeys{k1: c.Key, k2: k2}
		c.Keys = ring
	})
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	districtID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	r := NewResolver(ResolverConfig{Self: districtID, Endpoint: s.district, Cache: db, Registry: s.reg})
	ids := synthIDs(1, 2*MaxBatch)
	if _, err := r.ResolveAt(ctxT(t), ids, 1); !errors.Is(err, ErrOtherVersion) {
		t.Fatalf("a switch between the parts: %v", err)
	}
	at1, _ := db.PseudonymsAt(1, ids)
	at2, _ := db.PseudonymsAt(2, ids)
	if len(at1) != MaxBatch || len(at2) != MaxBatch {
		t.Fatalf("cached %d under 1, %d under 2", len(at1), len(at2))
	}
	for id, p := range at1 {
		if p != s.key.Pseudonym(id) {
			t.Fatal("a version-2 pseudonym cached under version 1")
		}
	}
	for id, p := range at2 {
		if p != k2.Pseudonym(id) {
			t.Fatal("a version-1 pseudonym cached under version 2")
		}
	}
	got, err := r.ResolveAt(ctxT(t), ids, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if got[i] != k2.Pseudonym(id) {
			t.Fatalf("pseudonym %d under version 2 is not its identifier's", i)
		}
	}
}

// TestResolveInPartsWithAShortAnswer: a hostile city answers one part with
// one pseudonym too few (and one under another version): no panic, the
// resolve fails as if no coordinator answered, and nothing is cached.
func TestResolveInPartsWithAShortAnswer(t *testing.T) {
	s := newSetup(t, nil)
	cityID := certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/hangzhou"}
	hostile := endpoint(t, s.ca, cityID)
	hostile.Handle(Op, func(ctx context.Context, req *exchange.Request) (any, error) {
		var in request
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		out := make([]credit.Pseudonym, len(in.IDs))
		for i, id := range in.IDs {
			out[i] = s.key.Pseudonym(id)
		}
		if len(in.IDs) < MaxBatch {
			return reply{Pseudonyms: out[1:]}, nil // one too few
		}
		return reply{Pseudonyms: out, Version: 7}, nil
	})
	districtID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/hangzhou/xihu"}
	reg := registry{{Path: cityID.Region, Role: certs.City, Exchange: hostile.Addr().String()}, {Path: districtID.Region, Role: certs.District}}
	cache := &memCache{}
	r := NewResolver(ResolverConfig{Self: districtID, Endpoint: endpoint(t, s.ca, districtID), Registry: reg, Cache: cache})
	ids := synthIDs(1, MaxBatch+500)
	for _, at := range []bool{false, true} {
		var err error
		if at {
			_, err = r.ResolveAt(ctxT(t), ids, 1)
		} else {
			_, err = r.Resolve(ctxT(t), ids)
		}
		if !errors.Is(err, ErrNoCoordinator) || !bytes.Contains([]byte(err.Error()), []byte("answered 499 pseudonyms for 500 identifiers")) {
			t.Fatalf("a short answer: %v", err)
		}
		if kept, _ := cache.Pseudonyms(ids); len(kept) != 0 {
			t.Fatalf("%d pseudonyms cached from a failed resolve", len(kept))
		}
	}
}

// TestPartsFailingOverTogetherKeepTheFallbackRate: with the city down,
// both parts of a pass go to the province at once: the province's
// fallback burst (a tenth of the rate, ten seconds) still bounds what the
// district gets, and the resolve says it is rate-limited.
func TestPartsFailingOverTogetherKeepTheFallbackRate(t *testing.T) {
	tr := newTree(t, 1000) // the province: 100/s, a burst of 1,000
	r := NewResolver(ResolverConfig{Self: tr.districtID, Endpoint: tr.district, Registry: tr.reg})
	tr.quzhou.ep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // the closed city's dial may wait out its timeout
	defer cancel()
	if _, err := r.Resolve(ctx, synthIDs(1, 2*MaxBatch)); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("two parts at the province's fallback burst: %v", err)
	}
	p := tr.province.audited(t)
	handed, denied := handedOut(p)
	if len(p) != 2 || handed != MaxBatch || denied != 1 {
		t.Fatalf("the province: %d requests, %d pseudonyms handed out, %d refused", len(p), handed, denied)
	}
}
