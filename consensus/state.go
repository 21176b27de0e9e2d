package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/dgraph-io/badger/v4"

	"credfed/certs"
	"credfed/credit"
)

// The replicated state lives in the node's Badger database under the x/
// family (see storage/doc.go), so an index replica is bounded by disk, not
// RAM:
//
//	x/e/<pseudonym:16><district>   → entryValue (CBOR)
//	x/r/<region path>              → Region (CBOR)
//	x/c/<version:be32>             → credit.Catalog (CBOR), every version kept
//	x/v/s/<serial, decimal>        → certs.Revocation (CBOR)
//	x/v/i/<identity URI>           → certs.Suspension (CBOR)
//	x/w/<district>                 → the highest Seq applied for the district (be64)
//	x/m/applied                    → last applied log index (be64)
//	x/m/catalog                    → current catalog version (be32)
//	x/m/revocations                → revocation list version (be64)
//
// Only the FSM writes these keys, from Apply and Restore. The registry,
// catalog and revocation list are small and also cached in memory; the
// index is read from Badger.
var (
	prefixState       = []byte("x/")
	prefixEntry       = []byte("x/e/")
	prefixRegion      = []byte("x/r/")
	prefixCatalog     = []byte("x/c/")
	prefixRevoked     = []byte("x/v/s/")
	prefixSuspended   = []byte("x/v/i/")
	prefixWatermark   = []byte("x/w/")
	keyApplied        = []byte("x/m/applied")
	keyCatalogVersion = []byte("x/m/catalog")
	keyRevVersion     = []byte("x/m/revocations")
)

func entryKey(p credit.Pseudonym, district string) []byte {
	k := make([]byte, 0, len(prefixEntry)+len(p)+len(district))
	k = append(k, prefixEntry...)
	k = append(k, p[:]...)
	return append(k, district...)
}

func entryPrefix(p credit.Pseudonym) []byte {
	return append(append([]byte(nil), prefixEntry...), p[:]...)
}

func watermarkKey(district string) []byte {
	return append(append([]byte(nil), prefixWatermark...), district...)
}

func regionKey(path string) []byte { return append(append([]byte(nil), prefixRegion...), path...) }

func catalogKey(v int) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), prefixCatalog...), uint32(v))
}

// entryValue is what the index keeps per (pseudonym, district), as a CBOR
// array [summary, seq, index].
type entryValue struct {
	_       struct{}            `cbor:",toarray"`
	Summary credit.IndexSummary `cbor:"1,keyasint"`
	Seq     uint64              `cbor:"2,keyasint"`
	Index   uint64              `cbor:"3,keyasint"` // log index that wrote it
}

// IndexEntry is one district's entry for a subject, as reads return it.
type IndexEntry struct {
	District string              `json:"district"`
	Summary  credit.IndexSummary `json:"summary"`
	Seq      uint64              `json:"seq"`
	Index    uint64              `json:"index"`
}

// Holds reports whether the entry says the district shows anything.
func (e IndexEntry) Holds() bool {
	return !e.Summary.Empty() || e.Summary.HasDisputed
}

// State is the replicated state of one replica: the index, the registry,
// the catalog and the revocation list. Reads are safe from any goroutine;
// writes come only from the FSM.
type State struct {
	db   *badger.DB
	revs *certs.RevocationList

	mu      sync.RWMutex
	regions map[string]Region
	catalog *credit.Catalog

	applied *appliedIndex
}

// NewState loads the replicated state kept in db. revs is the node's live
// revocation list, which the state keeps equal to the replicated one.
func NewState(db *badger.DB, revs *certs.RevocationList) (*State, error) {
	s := &State{db: db, revs: revs, applied: newAppliedIndex()}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// reload rebuilds the in-memory caches from Badger.
func (s *State) reload() error {
	regions := map[string]Region{}
	var catalog *credit.Catalog
	var snap certs.RevocationSnapshot
	var applied uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if applied, err = getUint(txn, keyApplied); err != nil {
			return err
		}
		if err := scan(txn, prefixRegion, func(_, v []byte) error {
			var r Region
			if err := decMode.Unmarshal(v, &r); err != nil {
				return err
			}
			regions[r.Path] = r
			return nil
		}); err != nil {
			return err
		}
		if catalog, err = readCatalog(txn); err != nil {
			return err
		}
		snap, err = readRevocations(txn)
		return err
	})
	if err != nil {
		return fmt.Errorf("consensus: load state: %w", err)
	}
	s.mu.Lock()
	s.regions, s.catalog = regions, catalog
	s.mu.Unlock()
	if s.revs != nil {
		s.revs.Replace(snap)
	}
	s.applied.set(applied)
	return nil
}

func readCatalog(txn *badger.Txn) (*credit.Catalog, error) {
	v, err := getUint(txn, keyCatalogVersion)
	if err != nil || v == 0 {
		return nil, err
	}
	item, err := txn.Get(catalogKey(int(v)))
	if err != nil {
		return nil, err
	}
	var c credit.Catalog
	if err := item.Value(func(b []byte) error { return decMode.Unmarshal(b, &c) }); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func readRevocations(txn *badger.Txn) (certs.RevocationSnapshot, error) {
	var snap certs.RevocationSnapshot
	var err error
	if snap.Version, err = getUint(txn, keyRevVersion); err != nil {
		return snap, err
	}
	if err := scan(txn, prefixRevoked, func(_, v []byte) error {
		var r certs.Revocation
		if err := decMode.Unmarshal(v, &r); err != nil {
			return err
		}
		snap.Revocations = append(snap.Revocations, r)
		return nil
	}); err != nil {
		return snap, err
	}
	err = scan(txn, prefixSuspended, func(_, v []byte) error {
		var x certs.Suspension
		if err := decMode.Unmarshal(v, &x); err != nil {
			return err
		}
		snap.Suspensions = append(snap.Suspensions, x)
		return nil
	})
	return snap, err
}

// Applied returns the index of the last log entry applied to this replica.
func (s *State) Applied() uint64 { return s.applied.get() }

// Lookup returns every district's entry for a pseudonym, in district order,
// including entries that no longer hold anything (see IndexEntry.Holds), and
// the applied index the read reflects.
func (s *State) Lookup(p credit.Pseudonym) ([]IndexEntry, uint64, error) {
	applied := s.applied.get()
	var out []IndexEntry
	pfx := entryPrefix(p)
	err := s.db.View(func(txn *badger.Txn) error {
		return scan(txn, pfx, func(k, v []byte) error {
			var ev entryValue
			if err := decMode.Unmarshal(v, &ev); err != nil {
				return err
			}
			out = append(out, IndexEntry{District: string(k[len(pfx):]), Summary: ev.Summary, Seq: ev.Seq, Index: ev.Index})
			return nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("consensus: lookup: %w", err)
	}
	return out, applied, nil
}

// Regions returns the registry, sorted by path.
func (s *State) Regions() []Region {
	s.mu.RLock()
	out := make([]Region, 0, len(s.regions))
	for _, r := range s.regions {
		out = append(out, r)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// Region returns one region of the registry.
func (s *State) Region(path string) (Region, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.regions[path]
	return r, ok
}

// Catalog returns the current catalog, nil before the federation is
// initialized. The catalog is shared: do not modify it.
func (s *State) Catalog() *credit.Catalog {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.catalog
}

// CatalogVersion returns one published version of the catalog.
func (s *State) CatalogVersion(v int) (*credit.Catalog, error) {
	var c credit.Catalog
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(catalogKey(v))
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error { return decMode.Unmarshal(b, &c) })
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: catalog version %d", ErrNotFound, v)
	}
	if err != nil {
		return nil, fmt.Errorf("consensus: catalog %d: %w", v, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("consensus: catalog %d: %w", v, err)
	}
	return &c, nil
}

// Revocations returns the replicated revocation list.
func (s *State) Revocations() *certs.RevocationList { return s.revs }

// EntryCount counts the index entries (a full scan of keys; for tests,
// benchmarks and statistics, not hot paths).
func (s *State) EntryCount() (int, error) {
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixEntry})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n, err
}

func getUint(txn *badger.Txn, key []byte) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var v uint64
	err = item.Value(func(b []byte) error {
		switch len(b) {
		case 8:
			v = binary.BigEndian.Uint64(b)
		case 4:
			v = uint64(binary.BigEndian.Uint32(b))
		default:
			return fmt.Errorf("%s holds %d bytes", key, len(b))
		}
		return nil
	})
	return v, err
}

// scan calls fn for every key-value under prefix (key and value valid only
// during the call).
func scan(txn *badger.Txn, prefix []byte, fn func(k, v []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if err := item.Value(func(v []byte) error { return fn(item.Key(), v) }); err != nil {
			return err
		}
	}
	return nil
}

// appliedIndex is the replica's applied log index with a way to wait for
// it to reach a value (strong reads).
type appliedIndex struct {
	mu      sync.Mutex
	v       uint64
	waiters map[chan struct{}]uint64
}

func newAppliedIndex() *appliedIndex { return &appliedIndex{waiters: map[chan struct{}]uint64{}} }

func (a *appliedIndex) get() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.v
}

func (a *appliedIndex) set(v uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.v = v
	for ch, want := range a.waiters {
		if v >= want {
			close(ch)
			delete(a.waiters, ch)
		}
	}
}

// wait returns a channel closed once the applied index reaches want, and a
// function to stop waiting.
func (a *appliedIndex) wait(want uint64) (<-chan struct{}, func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch := make(chan struct{})
	if a.v >= want {
		close(ch)
		return ch, func() {}
	}
	a.waiters[ch] = want
	return ch, func() {
		a.mu.Lock()
		delete(a.waiters, ch)
		a.mu.Unlock()
	}
}
