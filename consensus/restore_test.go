package consensus

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"credfed/certs"
	"credfed/credit"
	"credfed/internal/wait"
)

// restoreFixture is an "old" replica state kept as a closed database
// directory, and the snapshot of a "new" one that differs from it in
// every family: entries, watermarks, regions, catalog versions,
// revocations, suspensions and the applied index.
type restoreFixture struct {
	oldDir     string
	oldDump    map[string]string
	oldCached  cachedState
	snapshot   []byte
	newDump    map[string]string
	newCached  cachedState
	newApplied uint64
	pseudonyms []credit.Pseudonym
	oldLookups map[credit.Pseudonym][]IndexEntry
	newLookups map[credit.Pseudonym][]IndexEntry
}

const fixturePseudonyms = 40

// newRestoreFixture builds the fixture; with fromRestore the old state is
// itself the result of a restore (so it lives in generation 1, not 0).
func newRestoreFixture(t *testing.T, fromRestore bool) *restoreFixture {
	t.Helper()
	fx := &restoreFixture{oldDir: t.TempDir(), oldLookups: map[credit.Pseudonym][]IndexEntry{},
		newLookups: map[credit.Pseudonym][]IndexEntry{}}
	for i := 1; i <= fixturePseudonyms; i++ {
		fx.pseudonyms = append(fx.pseudonyms, pseudo(byte(i)))
	}

	// The old state: kecheng's entries for half the pseudonyms, one
	// revocation, one suspension.
	old := newTestFSM(t)
	initFederation(t, old)
	for i := 1; i <= fixturePseudonyms/2; i++ {
		old.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
			{Proposer: kecheng, Updates: []IndexUpdate{update(pseudo(byte(i)), kecheng.Region, i, uint64(i))}}}})
	}
	for _, c := range []struct {
		typ  CommandType
		body any
	}{
		{CmdRevoke, certs.Revocation{Serial: "11"}},
		{CmdSuspend, certs.Suspension{Identity: qujiang.String()}},
	} {
		if err := errOf(old.apply(t, c.typ, province, provOp, c.body)); err != nil {
			t.Fatal(err)
		}
	}

	// The new state: more entries, of both districts, other counts; a new
	// region, the next catalog, other revocations, the suspension lifted;
	// more entries applied.
	nw := newTestFSM(t)
	initFederation(t, nw)
	if err := errOf(nw.apply(t, CmdRegionPut, city, cityOp, Region{Path: "zhejiang/quzhou/longyou", Role: certs.District})); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= fixturePseudonyms; i++ {
		nw.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
			{Proposer: kecheng, Updates: []IndexUpdate{update(pseudo(byte(i)), kecheng.Region, 100+i, uint64(50+i))}},
			{Proposer: qujiang, Updates: []IndexUpdate{update(pseudo(byte(i)), qujiang.Region, 1, uint64(i))}}}})
	}
	next := credit.DefaultCatalog()
	next.Version++
	for _, c := range []struct {
		typ  CommandType
		body any
	}{
		{CmdCatalogPublish, CatalogPublish{Catalog: next}},
		{CmdRevoke, certs.Revocation{Serial: "22"}},
		{CmdRevoke, certs.Revocation{Serial: "23"}},
		{CmdSuspend, certs.Suspension{Identity: kecheng.String()}},
		{CmdReinstate, Reinstate{Identity: kecheng.String()}},
	} {
		if err := errOf(nw.apply(t, c.typ, province, provOp, c.body)); err != nil {
			t.Fatal(err)
		}
	}
	fx.snapshot = snapshotBytes(t, nw)
	fx.newDump, fx.newCached, fx.newApplied = dumpState(t, nw.db), cachedOf(nw.state), nw.state.Applied()
	for _, p := range fx.pseudonyms {
		fx.newLookups[p] = lookupOf(t, nw.state, p)
	}

	// The old state into its own directory, closed: restored from a
	// snapshot (generation 1), or written at the logical keys (generation
	// 0: a replica that never restored a snapshot, or one written before
	// generations existed).
	db := openTestDB(t, fx.oldDir)
	if fromRestore {
		if err := newTestFSMOn(t, db).Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, old)))); err != nil {
			t.Fatal(err)
		}
	} else if err := db.Update(func(txn *badger.Txn) error {
		for k, v := range dumpState(t, old.db) {
			if err := txn.Set([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	f := newTestFSMOn(t, db)
	if want := map[bool]uint64{false: 0, true: 1}[fromRestore]; f.state.gen.n != want {
		t.Fatalf("the old state is in generation %d, want %d", f.state.gen.n, want)
	}
	fx.oldDump, fx.oldCached = dumpState(t, db), cachedOf(f.state)
	for _, p := range fx.pseudonyms {
		fx.oldLookups[p] = lookupOf(t, f.state, p)
	}
	db.Close()
	if !reflect.DeepEqual(fx.oldDump, dumpState(t, old.db)) || len(fx.oldDump) == 0 {
		t.Fatal("the old state did not come across")
	}
	if fx.oldCached.Applied >= fx.newApplied {
		t.Fatalf("old applied %d, new %d: the new state must be newer", fx.oldCached.Applied, fx.newApplied)
	}
	return fx
}

// copyDir copies a closed database directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, filepath.Base(path)), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// checkOnly checks that db holds no generation but the live one.
func checkOnly(t *testing.T, db *badger.DB) {
	t.Helper()
	db.View(func(txn *badger.Txn) error {
		live, err := liveGeneration(txn)
		if err != nil {
			t.Fatal(err)
		}
		gens, zero := storedGenerations(txn)
		if (zero && live != 0) || len(gens) > 1 || (len(gens) == 1 && gens[0] != live) {
			t.Fatalf("live generation %d, stored %v, generation 0 present %v", live, gens, zero)
		}
		return nil
	})
}

// which says whether a state is the fixture's old one, its new one, or
// neither (a mix).
func (fx *restoreFixture) which(t *testing.T, db *badger.DB, st *State) string {
	t.Helper()
	dump, cached := dumpState(t, db), cachedOf(st)
	switch {
	case reflect.DeepEqual(dump, fx.oldDump) && reflect.DeepEqual(cached, fx.oldCached):
		return "old"
	case reflect.DeepEqual(dump, fx.newDump) && reflect.DeepEqual(cached, fx.newCached):
		return "new"
	}
	return "mixed"
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestFSM_RestoreInterruptedAtEachStep stops a restore at each of its
// steps (State.failpoint: every flush of the write batch, the sync of the
// new generation, the pointer's commit, its sync, the drop of the old
// generation), as a crash there would, closes and reopens the database,
// and checks that the state is exactly the old one (before the pointer's
// commit) or exactly the new one (from it on), never a mix; that no other
// generation is left; and that catchUpFromSnapshot then restores the
// snapshot if and only if the state is the old one.
func TestFSM_RestoreInterruptedAtEachStep(t *testing.T) {
	for _, from := range []string{"generation 0", "generation 1"} {
		t.Run(from, func(t *testing.T) {
			fx := newRestoreFixture(t, from == "generation 1")
			snaps, err := raft.NewFileSnapshotStoreWithLogger(t.TempDir(), 1, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			sink, err := snaps.Create(raft.SnapshotVersionMax, fx.newApplied, 1, raft.Configuration{}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			sink.Write(fx.snapshot)
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}

			// A run without interruption lists the steps.
			var steps []restoreStep
			{
				db := openTestDB(t, copyDir(t, fx.oldDir))
				f := newTestFSMOn(t, db)
				f.state.restoreChunk = 2048
				f.state.failpoint = func(s restoreStep) error { steps = append(steps, s); return nil }
				if err := f.Restore(io.NopCloser(bytes.NewReader(fx.snapshot))); err != nil {
					t.Fatal(err)
				}
				if got := fx.which(t, db, f.state); got != "new" {
					t.Fatalf("an uninterrupted restore left the %s state", got)
				}
				db.Close()
			}
			writes := 0
			for _, s := range steps {
				if s == stepWrite {
					writes++
				}
			}
			t.Logf("restore steps: %v", steps)
			if writes < 3 || !reflect.DeepEqual(steps[writes:], []restoreStep{stepSync, stepSwitch, stepSwitchSync, stepDrop}) {
				t.Fatalf("steps %v", steps)
			}

			errCrash := errors.New("crash")
			switched := false
			for k, step := range steps {
				switched = switched || step == stepSwitch
				want := map[bool]string{false: "old", true: "new"}[switched]
				dir := copyDir(t, fx.oldDir)
				db := openTestDB(t, dir)
				f := newTestFSMOn(t, db)
				f.state.restoreChunk = 2048
				calls := 0
				f.state.failpoint = func(restoreStep) error {
					if calls++; calls == k+1 {
						return errCrash
					}
					return nil
				}
				if err := f.Restore(io.NopCloser(bytes.NewReader(fx.snapshot))); !errors.Is(err, errCrash) {
					t.Fatalf("step %d (%s): restore returned %v", k, step, err)
				}
				db.Close()

				db = openTestDB(t, dir)
				g := newTestFSMOn(t, db)
				if got := fx.which(t, db, g.state); got != want {
					t.Fatalf("interrupted after step %d (%s): reopened with the %s state, want the %s one", k, step, got, want)
				}
				checkOnly(t, db)
				r := &Replica{state: g.state, fsm: g.FSM, log: discardLogger(), metrics: g.metrics}
				if err := r.catchUpFromSnapshot(snaps); err != nil {
					t.Fatalf("step %d (%s): catch up: %v", k, step, err)
				}
				restored := testutil.ToFloat64(g.metrics.restores)
				if (want == "old") != (restored == 1) {
					t.Fatalf("step %d (%s): %v restores from the snapshot store, with the %s state", k, step, restored, want)
				}
				if got := fx.which(t, db, g.state); got != "new" {
					t.Fatalf("step %d (%s): after catching up, the %s state", k, step, got)
				}
				checkOnly(t, db)
				db.Close()
			}
		})
	}
}

// encodeSnapshot builds a snapshot stream of pairs in format version 1
// (all in the clear) with the given trailer count (and a valid hash).
func encodeSnapshot(pairs [][2]string, count uint64) []byte {
	var b []byte
	b = append(b, snapshotMagicV1...)
	for _, p := range pairs {
		b = binary.AppendUvarint(b, uint64(len(p[0])))
		b = append(b, p[0]...)
		b = binary.AppendUvarint(b, uint64(len(p[1])))
		b = append(b, p[1]...)
	}
	b = binary.AppendUvarint(b, 0)
	b = binary.AppendUvarint(b, count)
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// TestFSM_RestoreCorruptSnapshotKeepsState: a snapshot refused for its
// checksum, a truncation, a wrong pair count, a bad header or a key
// outside the replicated state (one aimed at the generation pointer
// included) leaves the old state whole: on disk, in the caches, after a
// reopen, with no partial generation left behind.
func TestFSM_RestoreCorruptSnapshotKeepsState(t *testing.T) {
	fx := newRestoreFixture(t, false)
	var pairs [][2]string
	for k, v := range fx.newDump {
		pairs = append(pairs, [2]string{k, v})
	}
	// The same pairs in format version 1 (which restores too: below); the
	// stream the replica wrote is version 2, its index sealed.
	good := encodeSnapshot(pairs, uint64(len(pairs)))
	flip := func(b []byte, i int) []byte { c := append([]byte(nil), b...); c[i] ^= 0xff; return c }
	cases := map[string][]byte{
		"checksum at the end":   flip(fx.snapshot, len(fx.snapshot)-1),
		"a flipped byte inside": flip(fx.snapshot, len(fx.snapshot)/2),
		"truncated trailer":     fx.snapshot[:len(fx.snapshot)-10],
		"truncated pairs":       fx.snapshot[:len(fx.snapshot)/2],
		"wrong count":           encodeSnapshot(pairs, uint64(len(pairs)+1)),
		"bad header":            flip(fx.snapshot, 0),
		"key at the pointer":    encodeSnapshot(append(pairs, [2]string{string(keyLive), "\x00\x00\x00\x00\x00\x00\x00\x09"}), uint64(len(pairs)+1)),
		"key outside x/":        encodeSnapshot(append(pairs, [2]string{"y/1", "v"}), uint64(len(pairs)+1)),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			dir := copyDir(t, fx.oldDir)
			db := openTestDB(t, dir)
			f := newTestFSMOn(t, db)
			f.state.restoreChunk = 512 // several flushes before the end is read
			if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err == nil {
				t.Fatal("restored")
			}
			if got := fx.which(t, db, f.state); got != "old" {
				t.Fatalf("the %s state after a refused snapshot", got)
			}
			for _, p := range fx.pseudonyms {
				if got := lookupOf(t, f.state, p); !reflect.DeepEqual(got, fx.oldLookups[p]) {
					t.Fatalf("lookup %x: %+v, want %+v", p[:1], got, fx.oldLookups[p])
				}
			}
			checkOnly(t, db)
			db.Close()
			db = openTestDB(t, dir)
			defer db.Close()
			g := newTestFSMOn(t, db)
			if got := fx.which(t, db, g.state); got != "old" {
				t.Fatalf("the %s state after reopening", got)
			}
		})
	}
	// The well-formed stream of the same pairs restores.
	db := openTestDB(t, copyDir(t, fx.oldDir))
	defer db.Close()
	f := newTestFSMOn(t, db)
	if err := f.Restore(io.NopCloser(bytes.NewReader(good))); err != nil {
		t.Fatal(err)
	}
	if got := fx.which(t, db, f.state); got != "new" {
		t.Fatalf("the %s state after a good snapshot", got)
	}
}

// TestState_OpensStateWrittenBeforeGenerations: a state database written
// by a binary without generations (the logical keys, no pointer) opens as
// generation 0 (leftovers of an interrupted restore dropped), and its
// first restore moves to a new generation and removes every old key.
func TestState_OpensStateWrittenBeforeGenerations(t *testing.T) {
	dir := t.TempDir()
	db := openTestDB(t, dir)
	cat := credit.DefaultCatalog()
	ev, _ := encMode.Marshal(entryValue{Summary: credit.IndexSummary{Negative: 2}, Seq: 3, Index: 6})
	region, _ := encMode.Marshal(Region{Path: "zhejiang", Role: certs.Province, Voter: true})
	catalog, _ := encMode.Marshal(cat)
	legacy := map[string][]byte{
		string(keyApplied):                           binary.BigEndian.AppendUint64(nil, 7),
		string(regionKey("zhejiang")):                region,
		string(catalogKey(cat.Version)):              catalog,
		string(keyCatalogVersion):                    binary.BigEndian.AppendUint32(nil, uint32(cat.Version)),
		string(entryKey(pseudo(5), kecheng.Region)):  ev,
		string(watermarkKey(kecheng.Region)):         binary.BigEndian.AppendUint64(nil, 3),
		string(prefixRevoked) + "99":                 mustCBOR(t, certs.Revocation{Serial: "99"}),
		string(keyRevVersion):                        binary.BigEndian.AppendUint64(nil, 1),
		string(prefixSuspended) + qujiang.String():   mustCBOR(t, certs.Suspension{Identity: qujiang.String()}),
		string(entryKey(pseudo(6), qujiang.Region)):  ev,
		string(watermarkKey(qujiang.Region)):         binary.BigEndian.AppendUint64(nil, 3),
		string(regionKey("zhejiang/quzhou")):         mustCBOR(t, Region{Path: "zhejiang/quzhou", Role: certs.City}),
		string(regionKey("zhejiang/quzhou/kecheng")): mustCBOR(t, Region{Path: "zhejiang/quzhou/kecheng", Role: certs.District}),
		string(regionKey(qujiang.Region)):            mustCBOR(t, Region{Path: qujiang.Region, Role: certs.District}),
	}
	// Leftovers of an interrupted restore, for the open to drop: a partial
	// generation.
	stray := map[string][]byte{
		string(newGeneration(5).key(keyApplied)):                     binary.BigEndian.AppendUint64(nil, 99),
		string(newGeneration(5).key(regionKey("zhejiang/hangzhou"))): region,
	}
	if err := db.Update(func(txn *badger.Txn) error {
		for _, m := range []map[string][]byte{legacy, stray} {
			for k, v := range m {
				if err := txn.Set([]byte(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	f := newTestFSMOn(t, db)
	checkOnly(t, db)
	db.View(func(txn *badger.Txn) error {
		for k := range stray {
			if _, err := txn.Get([]byte(k)); !errors.Is(err, badger.ErrKeyNotFound) {
				t.Errorf("leftover %q not dropped at open (%v)", k, err)
			}
		}
		return nil
	})
	if f.state.next != 6 {
		t.Errorf("next generation %d after a leftover generation 5", f.state.next)
	}
	if f.state.gen.n != 0 || f.state.Applied() != 7 || len(f.state.Regions()) != 4 || f.state.Catalog() == nil {
		t.Fatalf("generation %d, applied %d, %d regions", f.state.gen.n, f.state.Applied(), len(f.state.Regions()))
	}
	if e := lookupOf(t, f.state, pseudo(5)); len(e) != 1 || e[0].Seq != 3 || e[0].Summary.Negative != 2 {
		t.Fatalf("legacy entry %+v", e)
	}
	if rs := f.state.Revocations().Snapshot(); len(rs.Revocations) != 1 || len(rs.Suspensions) != 1 {
		t.Fatalf("legacy revocations %+v", rs)
	}
	// Its snapshot (restored into another replica at the end).
	legacySnap := snapshotBytes(t, f)
	// Applied on, it stays generation 0.
	f.index = f.state.Applied()
	if err := errOf(f.apply(t, CmdRevoke, province, provOp, certs.Revocation{Serial: "100"})); err != nil {
		t.Fatal(err)
	}
	legacy[string(prefixRevoked)+"100"] = nil
	if err := db.View(func(txn *badger.Txn) error { _, err := txn.Get([]byte(string(prefixRevoked) + "100")); return err }); err != nil {
		t.Fatalf("an apply on generation 0 did not write its logical key: %v", err)
	}
	fx := newRestoreFixture(t, false)
	if err := f.Restore(io.NopCloser(bytes.NewReader(fx.snapshot))); err != nil {
		t.Fatal(err)
	}
	if f.state.gen.n != 6 || !reflect.DeepEqual(dumpState(t, db), fx.newDump) {
		t.Fatalf("after the restore: generation %d", f.state.gen.n)
	}
	checkOnly(t, db)
	db.View(func(txn *badger.Txn) error {
		for k := range legacy {
			if _, err := txn.Get([]byte(k)); !errors.Is(err, badger.ErrKeyNotFound) {
				t.Errorf("legacy key %q still there (%v)", k, err)
			}
		}
		return nil
	})
	db.Close()
	db = openTestDB(t, dir)
	defer db.Close()
	g := newTestFSMOn(t, db)
	if g.state.gen.n != 6 || !reflect.DeepEqual(cachedOf(g.state), fx.newCached) {
		t.Fatal("the restored state did not survive a reopen")
	}
	// And the legacy snapshot restores into a new replica.
	h := newTestFSM(t)
	if err := h.Restore(io.NopCloser(bytes.NewReader(legacySnap))); err != nil {
		t.Fatal(err)
	}
	if h.state.Applied() != 7 || len(lookupOf(t, h.state, pseudo(6))) != 1 {
		t.Fatal("the legacy snapshot did not restore")
	}
}

func mustCBOR(t *testing.T, v any) []byte {
	t.Helper()
	b, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestState_ReadsDuringRestoreSeeOldOrNew: readers look up a set of
// pseudonyms (and read the registry, catalog and revocations) in a loop
// while a restore runs; the restore waits at each of its steps until the
// readers have made progress there. Every read must be the complete old
// answer (with the old applied index) or the complete new one (with the
// new index), never a mix.
func TestState_ReadsDuringRestoreSeeOldOrNew(t *testing.T) {
	fx := newRestoreFixture(t, false)
	db := openTestDB(t, copyDir(t, fx.oldDir))
	defer db.Close()
	f := newTestFSMOn(t, db)
	st := f.state

	var reads, sawOld, sawNew atomic.Int64
	stop := make(chan struct{})
	errs := make(chan string, 16)
	report := func(msg string) {
		select {
		case errs <- msg:
		default:
		}
	}
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				p := fx.pseudonyms[(i*7+r)%len(fx.pseudonyms)]
				e, applied, err := st.Lookup(p)
				switch {
				case err != nil:
					report("lookup: " + err.Error())
				case applied == fx.oldCached.Applied && reflect.DeepEqual(e, fx.oldLookups[p]):
					sawOld.Add(1)
				case applied == fx.newApplied && reflect.DeepEqual(e, fx.newLookups[p]):
					sawNew.Add(1)
				default:
					report("a lookup that is neither the old answer nor the new one")
				}
				if regs := st.Regions(); !reflect.DeepEqual(regs, fx.oldCached.Regions) && !reflect.DeepEqual(regs, fx.newCached.Regions) {
					report("a registry that is neither the old one nor the new one")
				}
				if c := st.Catalog(); c == nil || (c.Version != fx.oldCached.Catalog.Version && c.Version != fx.newCached.Catalog.Version) {
					report("a catalog that is neither the old one nor the new one")
				}
				if rs := st.Revocations().Snapshot(); !reflect.DeepEqual(rs, fx.oldCached.Revocations) && !reflect.DeepEqual(rs, fx.newCached.Revocations) {
					report("revocations that are neither the old ones nor the new ones")
				}
				if n, err := st.EntryCount(); err != nil || (n != fixturePseudonyms/2 && n != 2*fixturePseudonyms) {
					report("an entry count that is neither the old one nor the new one")
				}
				reads.Add(1)
			}
		}()
	}
	st.restoreChunk = 512
	st.failpoint = func(restoreStep) error {
		from := reads.Load()
		wait.Until(t, 10*time.Second, "reads during the restore", func() bool { return reads.Load() >= from+20 })
		return nil
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(fx.snapshot))); err != nil {
		t.Fatal(err)
	}
	from := reads.Load()
	wait.Until(t, 10*time.Second, "reads after the restore", func() bool { return reads.Load() >= from+20 })
	close(stop)
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	if sawOld.Load() == 0 || sawNew.Load() == 0 {
		t.Fatalf("%d old and %d new answers: the reads did not overlap the restore", sawOld.Load(), sawNew.Load())
	}
	if got := fx.which(t, db, st); got != "new" {
		t.Fatalf("the %s state after the restore", got)
	}
}

// TestState_RestoreKeepsTheGenerationOfAnOpenRead: a snapshot pinned
// before a restore (a read of the old generation that outlives the
// switch) is persisted after the restore and is still the complete old
// state; the old generation is dropped only once the snapshot is
// released, at the next apply.
func TestState_RestoreKeepsTheGenerationOfAnOpenRead(t *testing.T) {
	fx := newRestoreFixture(t, false)
	db := openTestDB(t, copyDir(t, fx.oldDir))
	defer db.Close()
	f := newTestFSMOn(t, db)
	pinned, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var drops int
	f.state.failpoint = func(s restoreStep) error {
		if s == stepDrop {
			drops++
		}
		return nil
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(fx.snapshot))); err != nil {
		t.Fatal(err)
	}
	if got := fx.which(t, db, f.state); got != "new" {
		t.Fatalf("the %s state after the restore", got)
	}
	if drops != 0 || len(f.state.retired) != 1 {
		t.Fatalf("the old generation was dropped under an open read (%d drops, %d retired)", drops, len(f.state.retired))
	}
	sink := &memSink{}
	if err := pinned.Persist(sink); err != nil {
		t.Fatal(err)
	}
	c := newTestFSM(t)
	if err := c.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dumpState(t, c.db), fx.oldDump) {
		t.Fatal("the snapshot pinned before the restore is not the old state")
	}
	// Still held: an apply does not drop it.
	f.index = f.state.Applied()
	f.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{})
	if drops != 0 {
		t.Fatal("dropped while the snapshot is still held")
	}
	pinned.Release()
	f.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{})
	if drops != 1 || len(f.state.retired) != 0 {
		t.Fatalf("after the release: %d drops, %d retired", drops, len(f.state.retired))
	}
	checkOnly(t, db)
}
