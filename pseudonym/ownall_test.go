package pseudonym

import (
	"bytes"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"credfed/certs"
	"credfed/credit"
	"credfed/storage"
)

// countingCache is a district's store that counts its reads, and what is
// put into it.
type countingCache struct {
	VersionedCache
	batch    VersionsReader // nil: the cache hides PseudonymVersionsOf
	at       atomic.Int32
	versions atomic.Int32
	read     atomic.Int32
	mu       sync.Mutex
	put      map[uint32][]string
}

func (c *countingCache) PseudonymsAt(v uint32, subjects []string) (map[string]credit.Pseudonym, error) {
	c.at.Add(1)
	return c.VersionedCache.PseudonymsAt(v, subjects)
}

func (c *countingCache) PseudonymVersions(subject string) (map[uint32]credit.Pseudonym, error) {
	c.versions.Add(1)
	return c.VersionedCache.PseudonymVersions(subject)
}

func (c *countingCache) PutPseudonymsAt(v uint32, ps map[string]credit.Pseudonym) error {
	c.mu.Lock()
	for s := range ps {
		c.put[v] = append(c.put[v], s)
	}
	c.mu.Unlock()
	return c.VersionedCache.PutPseudonymsAt(v, ps)
}

// withBatch exposes PseudonymVersionsOf (a VersionsReader).
type withBatch struct{ *countingCache }

func (c withBatch) PseudonymVersionsOf(subjects []string) ([]map[uint32]credit.Pseudonym, error) {
	c.read.Add(1)
	return c.batch.PseudonymVersionsOf(subjects)
}

// TestOwnAllReadsEachSubjectOnce: after a key switch, a district's own
// pseudonyms of three subjects (one cached under both versions, one under
// the old only, one not at all) come from one read of the store, and only
// the two without a current pseudonym are asked of the coordinator. A
// store without PseudonymVersionsOf answers the same.
func TestOwnAllReadsEachSubjectOnce(t *testing.T) {
	k2 := credit.PseudonymKey(bytes.Repeat([]byte{0x33}, 32))
	var ring *keys
	s := newSetup(t, func(c *CustodyConfig) {
		ring = &keys{v: 1, key: map[uint32]credit.PseudonymKey{1: c.Key, 2: k2}}
		c.Keys = ring
	})
	districtID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	a := credit.SyntheticPerson(11, credit.NewDate(1990, 1, 1))
	b := credit.SyntheticPerson(12, credit.NewDate(1991, 2, 2))
	c := credit.SyntheticPerson(13, credit.NewDate(1992, 3, 3))
	want := [][]credit.Pseudonym{
		{k2.Pseudonym(a), s.key.Pseudonym(a)},
		{k2.Pseudonym(b), s.key.Pseudonym(b)},
		{k2.Pseudonym(c)},
	}
	for _, batch := range []bool{true, false} {
		db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		cc := &countingCache{VersionedCache: db, put: map[uint32][]string{}}
		var cache Cache = cc
		if batch {
			cc.batch = db
			cache = withBatch{cc}
		}
		var at atomic.Uint32
		at.Store(1)
		ring.switchTo(1)
		r := NewResolver(ResolverConfig{Self: districtID, Endpoint: s.district, Cache: cache, Registry: s.reg, Version: at.Load})
		if _, err := r.ResolveAt(ctxT(t), []string{a, b}, 1); err != nil {
			t.Fatal(err)
		}
		ring.switchTo(2)
		at.Store(2)
		if _, err := r.ResolveAt(ctxT(t), []string{a}, 2); err != nil {
			t.Fatal(err)
		}
		cc.at.Store(0)
		cc.versions.Store(0)
		cc.mu.Lock()
		cc.put = map[uint32][]string{}
		cc.mu.Unlock()

		got, err := r.OwnAll(ctxT(t), []string{a, b, c})
		if err != nil {
			t.Fatalf("batch %v: %v", batch, err)
		}
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("batch %v: own pseudonyms %v, want %v", batch, got, want)
		}
		cc.mu.Lock()
		asked := slices.Sorted(slices.Values(cc.put[2]))
		cc.mu.Unlock()
		if len(asked) != 2 || !slices.Contains(asked, b) || !slices.Contains(asked, c) {
			t.Fatalf("batch %v: %d subjects asked of the coordinator and cached, want the two without a current pseudonym", batch, len(asked))
		}
		if batch {
			if cc.read.Load() != 1 || cc.versions.Load() != 0 {
				t.Fatalf("%d reads of every version and %d of one subject's, want 1 and 0", cc.read.Load(), cc.versions.Load())
			}
			if cc.at.Load() != 1 { // the Resolve of the two not cached under version 2
				t.Fatalf("%d reads by version, want the one of the two resolved", cc.at.Load())
			}
		} else if cc.versions.Load() != 3 {
			t.Fatalf("without a VersionsReader: %d reads of a subject's versions, want 3", cc.versions.Load())
		}
	}
}
