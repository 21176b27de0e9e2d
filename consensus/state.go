package consensus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/certs"
	"credfed/credit"
)

// The replicated state lives in the node's Badger database under the x/
// family (see storage/doc.go), so an index replica is bounded by disk, not
// RAM. Its keys are written here as logical keys, the layout of one
// complete copy of the state:
//
//	x/e/<pseudonym:16><district>   → entryValue (CBOR)
//	x/r/<region path>              → Region (CBOR)
//	x/c/<version:be32>             → credit.Catalog (CBOR), every version kept
//	x/v/s/<serial, decimal>        → certs.Revocation (CBOR)
//	x/v/i/<identity URI>           → certs.Suspension (CBOR)
//	x/w/<district>                 → the highest Seq applied for the district (be64)
//	x/a/<node>\x00<seq:be64>       → AuditAnchor (CBOR), a node's last anchors (anchor.go)
//	x/k/…, x/K/<version:be32>      → key versions, rotation progress, sealed pseudonym keys (keys.go)
//	x/m/applied                    → last applied log index (be64)
//	x/m/catalog                    → current catalog version (be32)
//	x/m/revocations                → revocation list version (be64)
//
// On disk each copy is a generation (generation.go): generation 0 stores
// the logical keys as they are (the layout before generations, and a new
// replica's until its first snapshot restore); generation n ≥ 1 stores
// x/<rest> as x/_/g/<n:be64>/<rest>. The pointer x/_/live names the live
// generation (absent: 0). A restore builds the next generation beside the
// live one and switches the pointer once it is complete and synced.
//
// Only the FSM writes these keys, from Apply and Restore. The registry,
// catalog and revocation list are small and also cached in memory; the
// index is read from Badger.
//
// The index (x/e/ and x/w/) is kept only by a node that holds the index
// keys (a coordinator: seal.go). A node without them (a district) keeps
// the registry, the catalog and the revocations, and nothing of the
// index: it skips index batches, restores snapshots without their index
// section, and drops any index it kept before (an older binary's state)
// when it opens the state. It keeps no watermark either: the watermark
// only spares the FSM a read of the entries it writes, and a district's
// publisher numbers its updates from its own outbox (storage), never from
// the replicated state.
var (
	prefixState       = []byte("x/")
	prefixEntry       = []byte("x/e/")
	prefixRegion      = []byte("x/r/")
	prefixCatalog     = []byte("x/c/")
	prefixRevocation  = []byte("x/v/")
	prefixRevoked     = []byte("x/v/s/")
	prefixSuspended   = []byte("x/v/i/")
	prefixWatermark   = []byte("x/w/")
	prefixMeta        = []byte("x/m/")
	keyApplied        = []byte("x/m/applied")
	keyCatalogVersion = []byte("x/m/catalog")
	keyRevVersion     = []byte("x/m/revocations")
)

// indexFamilies are the key families of the index, which only a node
// holding the index keys keeps, and which a snapshot seals: the entries,
// the watermarks, and the sealed pseudonym key versions (keys.go).
var indexFamilies = [][]byte{prefixEntry, prefixWatermark, prefixKeySealed}

// isIndexKey reports whether a logical key belongs to the index.
func isIndexKey(k []byte) bool {
	return bytes.HasPrefix(k, prefixEntry) || bytes.HasPrefix(k, prefixWatermark) || bytes.HasPrefix(k, prefixKeySealed)
}

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
//
// Every read resolves the live generation once (acquire) and reads within
// it, so a read that overlaps a snapshot restore sees the old state or the
// new one, never a mix; a replaced generation is dropped only once the
// reads that resolved to it have finished.
type State struct {
	db   *badger.DB
	revs *certs.RevocationList
	// keys seal and open the index; nil on a node that keeps no index.
	keys *IndexKeys

	// mu guards the live generation and the caches, which a restore
	// switches together.
	mu      sync.RWMutex
	gen     *generation
	regions map[string]Region
	catalog *credit.Catalog

	applied *appliedIndex

	// count caches the number of index entries (IndexEntries).
	count entryCount

	// keyState caches the key versions (keys.go, FSM.reloadKeys).
	keyState atomic.Pointer[keyCache]

	// Only the FSM's goroutine (Apply, Restore) uses these.
	retired []*generation // replaced, not yet dropped
	next    uint64        // the number of the next generation to build

	// failpoint, set by tests, is called after each step of a restore
	// (restoreStep); an error stops the restore there, without cleaning
	// up, as a crash would. restoreChunk, if set, replaces
	// restoreChunkBytes.
	failpoint    func(restoreStep) error
	restoreChunk int
}

// NewState loads the replicated state kept in db. revs is the node's live
// revocation list, which the state keeps equal to the replicated one.
// keys are the index keys of a coordinator, nil on a node that keeps no
// index (a district), whose index, if an older binary left one, is
// dropped here. Generations other than the live one (left by a restore
// that a crash interrupted, or not yet dropped when the node stopped) are
// dropped. State written before generations existed opens as generation
// 0.
func NewState(db *badger.DB, revs *certs.RevocationList, keys *IndexKeys) (*State, error) {
	if keys != nil {
		keys = keys.clone() // its own: the FSM moves it as it applies the log (keys.go)
	}
	s := &State{db: db, revs: revs, keys: keys, applied: newAppliedIndex()}
	var live uint64
	var stored []uint64
	var zero bool
	err := db.View(func(txn *badger.Txn) error {
		var err error
		if live, err = liveGeneration(txn); err != nil {
			return err
		}
		stored, zero = storedGenerations(txn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("consensus: load state: %w", err)
	}
	s.gen, s.next = newGeneration(live), live+1
	var stale [][]byte
	if zero && live != 0 {
		stale = append(stale, newGeneration(0).prefixes()...)
	}
	for _, n := range stored {
		if n != live {
			stale = append(stale, newGeneration(n).prefixes()...)
		}
		s.next = max(s.next, n+1)
	}
	if keys == nil {
		var held [][]byte
		err := db.View(func(txn *badger.Txn) error {
			for _, f := range indexFamilies {
				it := txn.NewIterator(badger.IteratorOptions{Prefix: s.gen.key(f)})
				if it.Rewind(); it.Valid() {
					held = append(held, s.gen.key(f))
				}
				it.Close()
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("consensus: load state: %w", err)
		}
		stale = append(stale, held...)
	}
	if len(stale) > 0 {
		if err := db.DropPrefix(stale...); err != nil {
			return nil, fmt.Errorf("consensus: drop stale state generations: %w", err)
		}
	}
	if err := s.reload(reloadAll); err != nil {
		return nil, err
	}
	return s, nil
}

// stateCaches are the in-memory copies of one generation's small parts.
type stateCaches struct {
	regions map[string]Region
	catalog *credit.Catalog
	revs    certs.RevocationSnapshot
	applied uint64
	entries int // index entries, when known (a restore counts them)
}

// loadCaches reads what of g's registry, catalog and revocations what
// names, and its applied index.
func loadCaches(txn *badger.Txn, g *generation, what effect) (stateCaches, error) {
	var c stateCaches
	var err error
	if c.applied, err = getUint(txn, g.key(keyApplied)); err != nil {
		return c, err
	}
	if what&reloadRegistry != 0 {
		c.regions = map[string]Region{}
		if err := scan(txn, g.key(prefixRegion), func(_, v []byte) error {
			var r Region
			if err := decMode.Unmarshal(v, &r); err != nil {
				return err
			}
			c.regions[r.Path] = r
			return nil
		}); err != nil {
			return c, err
		}
	}
	if what&reloadCatalog != 0 {
		if c.catalog, err = readCatalog(txn, g); err != nil {
			return c, err
		}
	}
	if what&reloadRevocations != 0 {
		if c.revs, err = readRevocations(txn, g); err != nil {
			return c, err
		}
	}
	return c, nil
}

// reload refreshes the caches that what names from the live generation
// (on the FSM's goroutine, after a commit).
func (s *State) reload(what effect) error {
	var c stateCaches
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		c, err = loadCaches(txn, s.gen, what)
		return err
	})
	if err != nil {
		return fmt.Errorf("consensus: load state: %w", err)
	}
	s.mu.Lock()
	if what&reloadRegistry != 0 {
		s.regions = c.regions
	}
	if what&reloadCatalog != 0 {
		s.catalog = c.catalog
	}
	s.mu.Unlock()
	if what&reloadRevocations != 0 && s.revs != nil {
		s.revs.Replace(c.revs)
	}
	s.applied.set(c.applied)
	return nil
}

// install makes g, complete on disk and with the pointer naming it, the
// live generation, with its caches, and retires the one it replaces.
func (s *State) install(g *generation, c stateCaches) {
	s.mu.Lock()
	old := s.gen
	s.gen, s.regions, s.catalog = g, c.regions, c.catalog
	s.applied.set(c.applied)
	s.mu.Unlock()
	if s.revs != nil {
		s.revs.Replace(c.revs)
	}
	s.retired = append(s.retired, old)
	s.count.set(c.entries, c.applied, true)
}

// acquire resolves the live generation for a read, with the applied index
// it reflects; the caller reads only within it and releases it.
func (s *State) acquire() (*generation, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.gen.readers.Add(1)
	return s.gen, s.applied.get()
}

// dropRetired drops the replaced generations that no read holds any more
// (on the FSM's goroutine: DropPrefix blocks writes while it runs). A
// replaced generation cannot gain readers, since acquire only hands out
// the live one.
func (s *State) dropRetired() error {
	var errs []error
	kept := s.retired[:0]
	for _, g := range s.retired {
		if g.readers.Load() > 0 {
			kept = append(kept, g)
			continue
		}
		if err := s.db.DropPrefix(g.prefixes()...); err != nil {
			kept = append(kept, g)
			errs = append(errs, fmt.Errorf("consensus: drop state generation %d: %w", g.n, err))
			continue
		}
		if err := s.step(stepDrop); err != nil {
			errs = append(errs, err)
		}
	}
	clear(s.retired[len(kept):])
	s.retired = kept
	return errors.Join(errs...)
}

func readCatalog(txn *badger.Txn, g *generation) (*credit.Catalog, error) {
	v, err := getUint(txn, g.key(keyCatalogVersion))
	if err != nil || v == 0 {
		return nil, err
	}
	item, err := txn.Get(g.key(catalogKey(int(v))))
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

func readRevocations(txn *badger.Txn, g *generation) (certs.RevocationSnapshot, error) {
	var snap certs.RevocationSnapshot
	var err error
	if snap.Version, err = getUint(txn, g.key(keyRevVersion)); err != nil {
		return snap, err
	}
	if err := scan(txn, g.key(prefixRevoked), func(_, v []byte) error {
		var r certs.Revocation
		if err := decMode.Unmarshal(v, &r); err != nil {
			return err
		}
		snap.Revocations = append(snap.Revocations, r)
		return nil
	}); err != nil {
		return snap, err
	}
	err = scan(txn, g.key(prefixSuspended), func(_, v []byte) error {
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
//
// A node without the index keys holds no index: it answers ErrNoIndex.
func (s *State) Lookup(p credit.Pseudonym) ([]IndexEntry, uint64, error) {
	if s.keys == nil {
		return nil, 0, ErrNoIndex
	}
	g, applied := s.acquire()
	defer g.release()
	var out []IndexEntry
	pfx := g.key(entryPrefix(p))
	err := s.db.View(func(txn *badger.Txn) error {
		return scan(txn, pfx, func(k, v []byte) error {
			var ev entryValue
			if err := decMode.Unmarshal(v, &ev); err != nil {
				return err
			}
			district := string(k[len(pfx):])
			// A removed district's entries are withdrawn: not read, nor
			// those an earlier region of the same path wrote.
			s.mu.RLock()
			reg, ok := s.regions[district]
			s.mu.RUnlock()
			if !ok || reg.Role != certs.District || ev.Index < reg.Registered {
				return nil
			}
			out = append(out, IndexEntry{District: district, Summary: ev.Summary, Seq: ev.Seq, Index: ev.Index})
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
	g, _ := s.acquire()
	defer g.release()
	var c credit.Catalog
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(g.key(catalogKey(v)))
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
// benchmarks and statistics, not hot paths: IndexEntries is the cheap
// one).
func (s *State) EntryCount() (int, error) {
	g, _ := s.acquire()
	defer g.release()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: g.key(prefixEntry)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n, err
}

// HoldsIndex reports whether this replica keeps the index (it holds the
// index keys: a coordinator).
func (s *State) HoldsIndex() bool { return s.keys != nil }

// entryCountMaxAge is how old the cached count of index entries may be
// once the state has changed since it was taken.
const entryCountMaxAge = 5 * time.Minute

// entryCount is the cached count of index entries.
type entryCount struct {
	scan sync.Mutex // held by the one scan running

	mu      sync.Mutex // guards the fields below
	n       int
	applied uint64    // the applied index it reflects
	at      time.Time // when it was taken
	valid   bool
}

// fresh returns the cached count if it may still be served for a state at
// applied.
func (c *entryCount) fresh(applied uint64) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.valid && (c.applied == applied || time.Since(c.at) < entryCountMaxAge)
}

// set records a count taken at applied, unless a count of a later state is
// cached (force: a restore, which replaces the state, records its count
// whatever was cached).
func (c *entryCount) set(n int, applied uint64, force bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !force && c.valid && c.applied > applied {
		return
	}
	c.n, c.applied, c.at, c.valid = n, applied, time.Now(), true
}

// IndexEntries returns how many index entries this replica's state holds
// (0 on a node that keeps no index), for the metric credfed_index_entries.
// The FSM writes most entries without reading them first (the watermark:
// fsm.go), so it cannot tell a new entry from a changed one and keep an
// exact counter, and a key-only scan of the index runs at about 2 million
// keys a second here (BenchmarkIndexEntries), seconds for a large index.
// So the count is the one taken by the last snapshot (which reads every
// entry anyway) or restore, or by a scan: at the first call, and when the
// state has changed and the count is more than 5 minutes old. It is exact
// as of its applied index, and lags the live state by at most 5 minutes
// (less where snapshots come often). Concurrent callers share one scan,
// and a scan blocks neither the FSM nor snapshots.
func (s *State) IndexEntries() int {
	c := &s.count
	if n, ok := c.fresh(s.Applied()); ok {
		return n
	}
	c.scan.Lock()
	defer c.scan.Unlock()
	applied := s.Applied()
	if n, ok := c.fresh(applied); ok {
		return n // counted by the caller before us
	}
	n, err := s.EntryCount()
	if err != nil {
		n, _ = c.fresh(applied)
		return n
	}
	c.set(n, applied, false)
	return n
}

// noteEntryCount records a count of index entries a snapshot took of
// generation g at applied, unless g is no longer the live generation (a
// restore replaced it meanwhile) or a newer count is cached.
func (s *State) noteEntryCount(n int, applied uint64, g *generation) {
	s.mu.RLock()
	live := s.gen == g
	s.mu.RUnlock()
	if live {
		s.count.set(n, applied, false)
	}
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
	// No prefetching: Badger starts a goroutine for each value it
	// prefetches, and the state's values are small, in the LSM tree, where
	// reading one is a copy. A lookup's scan of one pseudonym's entries
	// paid a goroutine for each.
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
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
