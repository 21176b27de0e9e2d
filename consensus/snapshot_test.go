package consensus

import (
	"bytes"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/certs"
	"credfed/credit"
)

// dumpState returns the live generation of the state in db, by logical
// key (the values as strings).
func dumpState(t testing.TB, db *badger.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(func(txn *badger.Txn) error {
		live, err := liveGeneration(txn)
		if err != nil {
			return err
		}
		g := newGeneration(live)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: g.root, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if g.n == 0 && bytes.HasPrefix(k, prefixReserved) {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(g.logical(k))] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cachedState is what a replica serves from memory, plus its applied
// index.
type cachedState struct {
	Applied     uint64
	Regions     []Region
	Catalog     *credit.Catalog
	Revocations certs.RevocationSnapshot
}

func cachedOf(s *State) cachedState {
	return cachedState{Applied: s.Applied(), Regions: s.Regions(), Catalog: s.Catalog(), Revocations: s.Revocations().Snapshot()}
}

// snapshotBytes persists a snapshot of f.
func snapshotBytes(t testing.TB, f *testFSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// restoredCopy snapshots a and restores the snapshot into a fresh replica
// that held state of its own (which the restore must discard), checks
// that the whole replicated state came across, and returns the copy.
func restoredCopy(t *testing.T, a *testFSM) *testFSM {
	t.Helper()
	data := snapshotBytes(t, a)
	b := newTestFSM(t)
	other := []Region{{Path: "jiangsu", Role: certs.Province, Voter: true}, {Path: "jiangsu/nanjing", Role: certs.City}}
	js := certs.Identity{Federation: fed, Role: certs.Province, Region: "jiangsu"}
	if err := errOf(b.apply(t, CmdFederationInit, js, certs.Identity{}, FederationInit{Regions: other, Catalog: credit.DefaultCatalog()})); err != nil {
		t.Fatal(err)
	}
	if err := b.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	b.index = b.state.Applied() // the next entry follows the snapshot
	if got, want := dumpState(t, b.db), dumpState(t, a.db); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored state differs: %d keys, want %d", len(got), len(want))
	}
	if got, want := cachedOf(b.state), cachedOf(a.state); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored caches differ:\n%+v\nwant\n%+v", got, want)
	}
	return b
}

// stateUint reads a be64/be32 logical key of f's live generation.
func stateUint(t testing.TB, f *testFSM, key []byte) uint64 {
	t.Helper()
	var v uint64
	err := f.db.View(func(txn *badger.Txn) error {
		var err error
		v, err = getUint(txn, f.state.gen.key(key))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func lookupOf(t testing.TB, s *State, p credit.Pseudonym) []IndexEntry {
	t.Helper()
	e, _, err := s.Lookup(p)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestFSM_SnapshotRestore_IndexBatch(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	res := a.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
		{Proposer: kecheng, Updates: []IndexUpdate{update(pseudo(1), kecheng.Region, 3, 7), update(pseudo(2), kecheng.Region, 0, 9)}},
		{Proposer: qujiang, Updates: []IndexUpdate{update(pseudo(1), qujiang.Region, 1, 4)}},
		{Proposer: kecheng, Updates: []IndexUpdate{update(pseudo(3), qujiang.Region, 5, 1)}}, // refused
	}}).(IndexResult)
	if res.Errs[0] != nil || res.Errs[1] != nil || res.Errs[2] == nil {
		t.Fatalf("batch results %v", res.Errs)
	}
	b := restoredCopy(t, a)
	for _, p := range []credit.Pseudonym{pseudo(1), pseudo(2), pseudo(3)} {
		if got, want := lookupOf(t, b.state, p), lookupOf(t, a.state, p); !reflect.DeepEqual(got, want) {
			t.Fatalf("%x: %+v, want %+v", p[:1], got, want)
		}
	}
	e := lookupOf(t, b.state, pseudo(1))
	if len(e) != 2 || e[0].District != kecheng.Region || e[0].Summary.Negative != 3 || e[0].Seq != 7 || e[0].Index != a.index ||
		e[1].District != qujiang.Region || e[1].Seq != 4 {
		t.Fatalf("restored entries %+v", e)
	}
	if e := lookupOf(t, b.state, pseudo(2)); len(e) != 1 || e[0].Holds() {
		t.Fatalf("an entry that holds nothing: %+v", e)
	}
	if len(lookupOf(t, b.state, pseudo(3))) != 0 {
		t.Fatal("the refused group's entry was restored")
	}
	for d, want := range map[string]uint64{kecheng.Region: 9, qujiang.Region: 4} {
		if got := stateUint(t, b, watermarkKey(d)); got != want {
			t.Fatalf("watermark of %s: %d, want %d", d, got, want)
		}
	}
	if n, err := b.state.EntryCount(); err != nil || n != 3 {
		t.Fatalf("%d entries (%v)", n, err)
	}
}

func TestFSM_SnapshotRestore_RegionPut(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	r := Region{Path: "zhejiang/quzhou/longyou", Name: "龙游县", Role: certs.District, Code: "330825",
		Exchange: "127.0.0.1:7001", API: "https://127.0.0.1:8443", Voter: true}
	if err := errOf(a.apply(t, CmdRegionPut, province, provOp, r)); err != nil {
		t.Fatal(err)
	}
	b := restoredCopy(t, a)
	got, ok := b.state.Region(r.Path)
	want, _ := a.state.Region(r.Path)
	if !ok || !reflect.DeepEqual(got, want) || got.Since.IsZero() || got.Exchange != r.Exchange || got.Code != r.Code || !got.Voter {
		t.Fatalf("restored region %+v, want %+v", got, want)
	}
	if len(b.state.Regions()) != len(testRegion)+1 {
		t.Fatalf("%d regions", len(b.state.Regions()))
	}
}

func TestFSM_SnapshotRestore_RegionRemove(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	if err := errOf(a.apply(t, CmdRegionRemove, province, provOp, RegionRemove{Path: qujiang.Region})); err != nil {
		t.Fatal(err)
	}
	b := restoredCopy(t, a)
	if _, ok := b.state.Region(qujiang.Region); ok {
		t.Fatal("the removed region came back")
	}
	if len(b.state.Regions()) != len(testRegion)-1 {
		t.Fatalf("%d regions", len(b.state.Regions()))
	}
	// The restored registry authorizes as the original does.
	res := b.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
		{Proposer: qujiang, Updates: []IndexUpdate{update(pseudo(1), qujiang.Region, 1, 1)}}}}).(IndexResult)
	if res.Errs[0] == nil {
		t.Fatal("the removed district writes on the restored replica")
	}
}

func TestFSM_SnapshotRestore_CatalogPublish(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	next := credit.DefaultCatalog()
	next.Version++
	if err := errOf(a.apply(t, CmdCatalogPublish, province, provOp, CatalogPublish{Catalog: next})); err != nil {
		t.Fatal(err)
	}
	b := restoredCopy(t, a)
	if c := b.state.Catalog(); c == nil || c.Version != next.Version || !reflect.DeepEqual(c, a.state.Catalog()) {
		t.Fatalf("restored catalog %+v", c)
	}
	for v := 1; v <= next.Version; v++ {
		got, err := b.state.CatalogVersion(v)
		want, _ := a.state.CatalogVersion(v)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("catalog version %d: %v", v, err)
		}
	}
	if got := stateUint(t, b, keyCatalogVersion); got != uint64(next.Version) {
		t.Fatalf("catalog version key %d", got)
	}
}

func TestFSM_SnapshotRestore_Revoke(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	if err := errOf(a.apply(t, CmdRevoke, province, provOp, certs.Revocation{Serial: "0x2a", Reason: "key lost"})); err != nil {
		t.Fatal(err)
	}
	b := restoredCopy(t, a)
	rs := b.state.Revocations().Snapshot()
	if len(rs.Revocations) != 1 || rs.Revocations[0].Serial != "42" || rs.Revocations[0].Reason != "key lost" ||
		!rs.Revocations[0].At.Equal(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)) || rs.Version != 1 {
		t.Fatalf("restored revocations %+v", rs)
	}
}

func TestFSM_SnapshotRestore_Suspend(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	if err := errOf(a.apply(t, CmdSuspend, city, cityOp, certs.Suspension{Identity: kecheng.String(), Reason: "audit"})); err != nil {
		t.Fatal(err)
	}
	b := restoredCopy(t, a)
	rs := b.state.Revocations().Snapshot()
	if len(rs.Suspensions) != 1 || rs.Suspensions[0].Identity != kecheng.String() || rs.Suspensions[0].Reason != "audit" || rs.Version != 1 {
		t.Fatalf("restored suspensions %+v", rs)
	}
}

func TestFSM_SnapshotRestore_Reinstate(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	for _, c := range []struct {
		typ  CommandType
		body any
	}{
		{CmdSuspend, certs.Suspension{Identity: kecheng.String()}},
		{CmdSuspend, certs.Suspension{Identity: qujiang.String()}},
		{CmdReinstate, Reinstate{Identity: kecheng.String()}},
	} {
		if err := errOf(a.apply(t, c.typ, city, cityOp, c.body)); err != nil {
			t.Fatal(err)
		}
	}
	b := restoredCopy(t, a)
	rs := b.state.Revocations().Snapshot()
	if len(rs.Suspensions) != 1 || rs.Suspensions[0].Identity != qujiang.String() || rs.Version != 3 {
		t.Fatalf("restored suspensions %+v", rs)
	}
	// Reinstating again changes nothing on the copy, as on the original
	// (safe to repeat): kecheng is no longer suspended there.
	if err := errOf(b.apply(t, CmdReinstate, city, cityOp, Reinstate{Identity: kecheng.String()})); err != nil {
		t.Fatal(err)
	}
	if rs := b.state.Revocations().Snapshot(); rs.Version != 3 || len(rs.Suspensions) != 1 {
		t.Fatalf("a repeated reinstatement changed the copy: %+v", rs)
	}
}

func TestFSM_SnapshotRestore_FederationInit(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	b := restoredCopy(t, a)
	if got := b.state.Regions(); len(got) != len(testRegion) {
		t.Fatalf("%d regions", len(got))
	}
	for _, r := range testRegion {
		got, ok := b.state.Region(r.Path)
		if !ok || got.Name != r.Name || got.Role != r.Role || got.Since.IsZero() {
			t.Fatalf("region %s: %+v", r.Path, got)
		}
	}
	if c := b.state.Catalog(); c == nil || c.Version != credit.DefaultCatalog().Version {
		t.Fatalf("catalog %v", c)
	}
	if b.state.Applied() != a.index {
		t.Fatalf("applied %d, want %d", b.state.Applied(), a.index)
	}
	// The copy refuses a second init, as the original does.
	if err := errOf(b.apply(t, CmdFederationInit, province, provOp, FederationInit{Regions: testRegion, Catalog: credit.DefaultCatalog()})); err == nil {
		t.Fatal("the restored federation was initialized twice")
	}
}

// snapshotContent is what a snapshot holds, by logical key, the sealed
// index opened with the test keys.
func snapshotContent(t testing.TB, data []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	if _, err := readSnapshot(bytes.NewReader(data), testIndexKeys, func(k, v []byte) error {
		out[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFSM_SnapshotIsLogical: a snapshot holds logical keys, whatever
// generation it was taken from, so snapshots of a replica before and
// after a restore hold the same pairs (not the same bytes: the index
// section is sealed with fresh nonces each time).
func TestFSM_SnapshotIsLogical(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	a.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
		{Proposer: kecheng, Updates: []IndexUpdate{update(pseudo(1), kecheng.Region, 3, 7)}}}})
	first := snapshotBytes(t, a)
	want := snapshotContent(t, first)
	if !reflect.DeepEqual(want, dumpState(t, a.db)) {
		t.Fatal("the snapshot does not hold the state")
	}
	b := newTestFSM(t)
	for i := 1; i <= 2; i++ {
		if err := b.Restore(io.NopCloser(bytes.NewReader(first))); err != nil {
			t.Fatal(err)
		}
		if b.state.gen.n != uint64(i) {
			t.Fatalf("restore %d went to generation %d", i, b.state.gen.n)
		}
		again := snapshotBytes(t, b)
		if got := snapshotContent(t, again); !reflect.DeepEqual(got, want) {
			t.Fatalf("snapshot of generation %d differs from the original (%d vs %d pairs)", i, len(got), len(want))
		}
		if len(again) != len(first) {
			t.Fatalf("snapshot of generation %d is %d bytes, the original %d", i, len(again), len(first))
		}
	}
	if !bytes.HasPrefix(first, []byte(snapshotMagic)) || bytes.Contains(first, prefixReserved) {
		t.Fatal("snapshot holds bookkeeping keys")
	}
}
