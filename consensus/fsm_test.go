package consensus

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"credfed/certs"
	"credfed/credit"
)

const fed = "demo"

var (
	province   = certs.Identity{Federation: fed, Role: certs.Province, Region: "zhejiang"}
	city       = certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"}
	kecheng    = certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	qujiang    = certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/qujiang"}
	provOp     = certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang", Institution: "ops"}
	cityOp     = certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang/quzhou", Institution: "ops"}
	coordUser  = certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang", Institution: "office"}
	testRegion = []Region{
		{Path: "zhejiang", Name: "浙江省", Role: certs.Province, Voter: true},
		{Path: "zhejiang/quzhou", Name: "衢州市", Role: certs.City, Voter: true},
		{Path: "zhejiang/quzhou/kecheng", Name: "柯城区", Role: certs.District},
		{Path: "zhejiang/quzhou/qujiang", Name: "衢江区", Role: certs.District},
	}
)

func openTestDB(t testing.TB, dir string) *badger.DB {
	t.Helper()
	opts := badger.DefaultOptions(dir).WithLogger(nil).WithMemTableSize(8 << 20).WithBlockCacheSize(8 << 20).
		WithNumMemtables(2).WithNumLevelZeroTables(2).WithNumLevelZeroTablesStall(8).WithValueLogFileSize(64 << 20)
	db, err := badger.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

type testFSM struct {
	*FSM
	db    *badger.DB
	index uint64
}

func newTestFSM(t testing.TB) *testFSM {
	t.Helper()
	db := openTestDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	return newTestFSMOn(t, db)
}

// testPseudonymKey is the tests' federation pseudonym key, and
// testIndexKeys the coordinators' keyring derived from it.
var (
	testPseudonymKey = bytes.Repeat([]byte{0x5e}, 32)
	testIndexKeys    = func() *IndexKeys {
		k, err := IndexKeysFromPseudonymKey(testPseudonymKey)
		if err != nil {
			panic(err)
		}
		return k
	}()
)

// newTestFSMOn is a coordinator's FSM (it holds the index keys) on db.
func newTestFSMOn(t testing.TB, db *badger.DB) *testFSM {
	t.Helper()
	return newTestFSMWith(t, db, testIndexKeys)
}

// newDistrictFSM is the FSM of a node that keeps no index, on a database
// of its own.
func newDistrictFSM(t testing.TB) *testFSM {
	t.Helper()
	db := openTestDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	return newTestFSMWith(t, db, nil)
}

func newTestFSMWith(t testing.TB, db *badger.DB, keys *IndexKeys) *testFSM {
	t.Helper()
	st, err := NewState(db, certs.NewRevocationList(), keys)
	if err != nil {
		t.Fatal(err)
	}
	f := &FSM{state: st, federation: fed, log: slog.New(slog.NewTextHandler(io.Discard, nil)), metrics: newMetrics(nil)}
	return &testFSM{FSM: f, db: db, index: st.Applied()}
}

// apply proposes one command as the next log entry and returns its result.
func (f *testFSM) apply(t testing.TB, typ CommandType, proposer, actor certs.Identity, body any) any {
	t.Helper()
	data, err := EncodeCommand(typ, Envelope{Proposer: proposer, Actor: actor, At: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}, body)
	if err != nil {
		t.Fatal(err)
	}
	f.index++
	return f.Apply(&raft.Log{Index: f.index, Type: raft.LogCommand, Data: data})
}

func errOf(res any) error {
	if res == nil {
		return nil
	}
	return res.(error)
}

func initFederation(t testing.TB, f *testFSM) {
	t.Helper()
	if err := errOf(f.apply(t, CmdFederationInit, province, provOp, FederationInit{Regions: testRegion, Catalog: credit.DefaultCatalog()})); err != nil {
		t.Fatal(err)
	}
}

func pseudo(b byte) credit.Pseudonym {
	var p credit.Pseudonym
	for i := range p {
		p[i] = b
	}
	return p
}

func update(p credit.Pseudonym, district string, neg int, seq uint64) IndexUpdate {
	return IndexUpdate{Pseudonym: p, District: district, Summary: credit.IndexSummary{Negative: neg}, Seq: seq}
}

func TestFSM_FederationInit(t *testing.T) {
	f := newTestFSM(t)
	if err := errOf(f.apply(t, CmdFederationInit, kecheng, certs.Identity{}, FederationInit{Regions: testRegion, Catalog: credit.DefaultCatalog()})); !errors.Is(err, ErrForbidden) {
		t.Fatalf("init by a district: %v", err)
	}
	bad := append([]Region(nil), testRegion...)
	bad = append(bad, Region{Path: "zhejiang/hangzhou/xihu", Role: certs.District}) // parent missing
	if err := errOf(f.apply(t, CmdFederationInit, province, provOp, FederationInit{Regions: bad, Catalog: credit.DefaultCatalog()})); !errors.Is(err, ErrNotFound) {
		t.Fatalf("init with an orphan region: %v", err)
	}
	if n := len(f.state.Regions()); n != 0 {
		t.Fatalf("refused init left %d regions", n)
	}
	initFederation(t, f)
	if got := len(f.state.Regions()); got != len(testRegion) {
		t.Fatalf("%d regions", got)
	}
	if c := f.state.Catalog(); c == nil || c.Version != credit.DefaultCatalog().Version {
		t.Fatalf("catalog %v", c)
	}
	if err := errOf(f.apply(t, CmdFederationInit, province, provOp, FederationInit{Regions: testRegion, Catalog: credit.DefaultCatalog()})); !errors.Is(err, ErrConflict) {
		t.Fatalf("second init: %v", err)
	}
	if f.state.Applied() != f.index {
		t.Fatalf("applied %d, want %d", f.state.Applied(), f.index)
	}
}

func TestFSM_IndexAuthorization(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	p := pseudo(1)
	batch := IndexBatch{Groups: []IndexGroup{
		{Proposer: kecheng, Updates: []IndexUpdate{update(p, kecheng.Region, 2, 1)}},
		{Proposer: kecheng, Updates: []IndexUpdate{update(p, qujiang.Region, 5, 1)}}, // another district's entry
		{Proposer: city, Updates: []IndexUpdate{update(p, city.Region, 1, 1)}},       // not a district
		{Proposer: certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/longyou"},
			Updates: []IndexUpdate{update(p, "zhejiang/quzhou/longyou", 1, 1)}}, // unregistered
		{Proposer: qujiang, Updates: []IndexUpdate{update(p, qujiang.Region, 1, 0)}}, // no sequence
	}}
	res := f.apply(t, CmdIndexBatch, province, certs.Identity{}, batch).(IndexResult)
	want := []error{nil, ErrForbidden, ErrForbidden, ErrForbidden, ErrInvalid}
	for i, w := range want {
		if (w == nil) != (res.Errs[i] == nil) || (w != nil && !errors.Is(res.Errs[i], w)) {
			t.Errorf("group %d: got %v, want %v", i, res.Errs[i], w)
		}
	}
	entries, applied, err := f.state.Lookup(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].District != kecheng.Region || entries[0].Summary.Negative != 2 || applied != f.index {
		t.Fatalf("entries %+v applied %d", entries, applied)
	}
	if msg := res.Errs[1].Error(); strings.Contains(msg, p.String()) {
		t.Fatalf("refusal names the pseudonym: %s", msg)
	}
}

func TestFSM_IndexIdempotentAndOrdered(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	p := pseudo(2)
	put := func(neg int, seq uint64) {
		t.Helper()
		res := f.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
			{Proposer: kecheng, Updates: []IndexUpdate{update(p, kecheng.Region, neg, seq)}}}}).(IndexResult)
		if res.Errs[0] != nil {
			t.Fatal(res.Errs[0])
		}
	}
	get := func() IndexEntry {
		t.Helper()
		e, _, err := f.state.Lookup(p)
		if err != nil || len(e) != 1 {
			t.Fatalf("%v %v", e, err)
		}
		return e[0]
	}
	put(1, 5)
	first := get()
	put(1, 5) // retried batch
	if got := get(); got != first {
		t.Fatalf("retry changed the entry: %+v → %+v", first, got)
	}
	put(9, 3) // an older update arriving late
	if got := get(); got.Summary.Negative != 1 || got.Seq != 5 {
		t.Fatalf("older update applied: %+v", got)
	}
	put(0, 7) // the district no longer shows anything
	if got := get(); got.Holds() || got.Seq != 7 {
		t.Fatalf("empty update: %+v", got)
	}
}

func TestFSM_OperatorCommands(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	xihu := Region{Path: "zhejiang/quzhou/longyou", Name: "龙游县", Role: certs.District, Exchange: "127.0.0.1:7000"}
	cases := []struct {
		name     string
		proposer certs.Identity
		actor    certs.Identity
		want     error
	}{
		{"district relays", kecheng, provOp, ErrForbidden},
		{"no actor", city, certs.Identity{}, ErrForbidden},
		{"coordinator user", city, coordUser, ErrForbidden},
		{"city vouching for a province operator", city, provOp, ErrForbidden},
		{"operator of another city", city, certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang/hangzhou", Institution: "ops"}, ErrForbidden},
		{"other federation", city, certs.Identity{Federation: "other", Role: certs.Operator, Region: "zhejiang/quzhou", Institution: "ops"}, ErrForbidden},
	}
	for _, c := range cases {
		if err := errOf(f.apply(t, CmdRegionPut, c.proposer, c.actor, xihu)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if _, ok := f.state.Region(xihu.Path); ok {
		t.Fatal("refused region put changed the registry")
	}
	if err := errOf(f.apply(t, CmdRegionPut, city, cityOp, xihu)); err != nil {
		t.Fatal(err)
	}
	if r, ok := f.state.Region(xihu.Path); !ok || r.Exchange != "127.0.0.1:7000" || r.Since.IsZero() {
		t.Fatalf("region %+v", r)
	}
	// A city operator may not change the catalog or revoke by serial.
	next := credit.DefaultCatalog()
	next.Version++
	if err := errOf(f.apply(t, CmdCatalogPublish, city, cityOp, CatalogPublish{Catalog: next})); !errors.Is(err, ErrForbidden) {
		t.Fatalf("city operator publishes catalog: %v", err)
	}
	if err := errOf(f.apply(t, CmdCatalogPublish, province, provOp, CatalogPublish{Catalog: credit.DefaultCatalog()})); !errors.Is(err, ErrConflict) {
		t.Fatalf("same catalog version again: %v", err)
	}
	if err := errOf(f.apply(t, CmdCatalogPublish, province, provOp, CatalogPublish{Catalog: next})); err != nil {
		t.Fatal(err)
	}
	if f.state.Catalog().Version != next.Version {
		t.Fatal("catalog not published")
	}
	if old, err := f.state.CatalogVersion(next.Version - 1); err != nil || old.Version != next.Version-1 {
		t.Fatalf("old catalog version: %v", err)
	}
	if err := errOf(f.apply(t, CmdRevoke, city, cityOp, certs.Revocation{Serial: "42"})); !errors.Is(err, ErrForbidden) {
		t.Fatalf("city operator revokes: %v", err)
	}
	if err := errOf(f.apply(t, CmdRevoke, province, provOp, certs.Revocation{Serial: "0x2a", Reason: "key lost"})); err != nil {
		t.Fatal(err)
	}
	snap := f.state.Revocations().Snapshot()
	if len(snap.Revocations) != 1 || snap.Revocations[0].Serial != "42" {
		t.Fatalf("live revocation list %+v", snap)
	}
	if err := errOf(f.apply(t, CmdSuspend, city, cityOp, certs.Suspension{Identity: kecheng.String()})); err != nil {
		t.Fatal(err)
	}
	if err := errOf(f.apply(t, CmdSuspend, city, cityOp, certs.Suspension{Identity: "spiffe://demo/district/zhejiang/hangzhou/xihu"})); !errors.Is(err, ErrForbidden) {
		t.Fatalf("suspension outside the operator's region: %v", err)
	}
	if len(f.state.Revocations().Snapshot().Suspensions) != 1 {
		t.Fatal("suspension not live")
	}
	if err := errOf(f.apply(t, CmdReinstate, city, cityOp, Reinstate{Identity: kecheng.String()})); err != nil {
		t.Fatal(err)
	}
	if err := errOf(f.apply(t, CmdRegionRemove, city, cityOp, RegionRemove{Path: "zhejiang"})); !errors.Is(err, ErrForbidden) {
		t.Fatalf("city operator removing the province: %v", err)
	}
}

func TestFSM_RegionRemove(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	if err := errOf(f.apply(t, CmdRegionRemove, province, provOp, RegionRemove{Path: "zhejiang/quzhou"})); !errors.Is(err, ErrConflict) {
		t.Fatalf("removing a city with districts: %v", err)
	}
	if err := errOf(f.apply(t, CmdRegionRemove, province, provOp, RegionRemove{Path: "zhejiang/quzhou/qujiang"})); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.state.Region("zhejiang/quzhou/qujiang"); ok {
		t.Fatal("region still there")
	}
	// The removed district can no longer write the index.
	res := f.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
		{Proposer: qujiang, Updates: []IndexUpdate{update(pseudo(3), qujiang.Region, 1, 1)}}}}).(IndexResult)
	if !errors.Is(res.Errs[0], ErrForbidden) {
		t.Fatalf("removed district wrote: %v", res.Errs[0])
	}
	if err := errOf(f.apply(t, CmdRegionRemove, province, provOp, RegionRemove{Path: "zhejiang/quzhou/qujiang"})); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
}

func TestFSM_UnknownCommand(t *testing.T) {
	f := newTestFSM(t)
	if res := f.apply(t, IgnoreUnknown|99, province, certs.Identity{}, struct{}{}); res != nil {
		t.Fatalf("ignorable unknown command: %v", res)
	}
	if f.state.Applied() != f.index {
		t.Fatal("ignorable command not counted as applied")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("unknown command without the ignore bit did not stop the FSM")
		}
	}()
	f.apply(t, 99, province, certs.Identity{}, struct{}{})
}

func TestFSM_SkipsEntriesAppliedBeforeRestart(t *testing.T) {
	dir := t.TempDir()
	db := openTestDB(t, dir)
	f := newTestFSMOn(t, db)
	initFederation(t, f)
	p := pseudo(4)
	f.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
		{Proposer: kecheng, Updates: []IndexUpdate{update(p, kecheng.Region, 1, 1)}}}})
	last := f.index
	db.Close()

	db = openTestDB(t, dir)
	defer db.Close()
	g := newTestFSMOn(t, db)
	if g.state.Applied() != last || g.state.Catalog() == nil || len(g.state.Regions()) != len(testRegion) {
		t.Fatalf("reopened state: applied %d", g.state.Applied())
	}
	// Raft replays an entry at or below the applied index: it must be a no-op
	// even when it would now be refused.
	data, _ := EncodeCommand(CmdFederationInit, Envelope{Proposer: province, Actor: provOp}, FederationInit{Regions: testRegion, Catalog: credit.DefaultCatalog()})
	if res := g.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}); res != nil {
		t.Fatalf("replayed entry applied again: %v", res)
	}
}

// TestFSM_SnapshotRestore covers every kind of replicated state: index
// entries, regions, catalog versions, revocations and suspensions.
func TestFSM_SnapshotRestore(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	for i := 1; i <= 50; i++ {
		a.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
			{Proposer: kecheng, Updates: []IndexUpdate{update(pseudo(byte(i)), kecheng.Region, i, uint64(i))}},
			{Proposer: qujiang, Updates: []IndexUpdate{update(pseudo(byte(i)), qujiang.Region, 1, uint64(i))}}}})
	}
	next := credit.DefaultCatalog()
	next.Version++
	for _, c := range []struct {
		typ  CommandType
		body any
	}{
		{CmdCatalogPublish, CatalogPublish{Catalog: next}},
		{CmdRevoke, certs.Revocation{Serial: "77"}},
		{CmdSuspend, certs.Suspension{Identity: qujiang.String()}},
	} {
		if err := errOf(a.apply(t, c.typ, province, provOp, c.body)); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after the snapshot is pinned are not in it.
	a.apply(t, CmdRevoke, province, provOp, certs.Revocation{Serial: "78"})
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	b := newTestFSM(t)
	b.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{}) // state that the restore must discard
	if err := b.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if b.state.Applied() != a.index-1 {
		t.Fatalf("restored applied index %d, want %d", b.state.Applied(), a.index-1)
	}
	for i := 1; i <= 50; i++ {
		ea, _, _ := a.state.Lookup(pseudo(byte(i)))
		eb, _, _ := b.state.Lookup(pseudo(byte(i)))
		if len(ea) != 2 || len(eb) != 2 || ea[0] != eb[0] || ea[1] != eb[1] {
			t.Fatalf("entry %d: %+v vs %+v", i, ea, eb)
		}
	}
	if len(b.state.Regions()) != len(testRegion) || b.state.Catalog().Version != next.Version {
		t.Fatal("registry or catalog not restored")
	}
	if _, err := b.state.CatalogVersion(next.Version - 1); err != nil {
		t.Fatalf("older catalog version lost: %v", err)
	}
	rs := b.state.Revocations().Snapshot()
	if len(rs.Revocations) != 1 || rs.Revocations[0].Serial != "77" || len(rs.Suspensions) != 1 {
		t.Fatalf("revocations %+v", rs)
	}

	// A damaged stream is refused.
	damaged := append([]byte(nil), sink.Bytes()...)
	damaged[len(damaged)/2] ^= 0xff
	c := newTestFSM(t)
	if err := c.Restore(io.NopCloser(bytes.NewReader(damaged))); err == nil {
		t.Fatal("damaged snapshot restored")
	}
	if err := c.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()[:len(sink.Bytes())-10]))); err == nil {
		t.Fatal("truncated snapshot restored")
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

// TestFSM_IndexWatermark covers the district watermark: updates above it
// are written without reading their entry, updates at or below it are
// compared, and no order of arrival lets an older update win.
func TestFSM_IndexWatermark(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	a, b := pseudo(0xa), pseudo(0xb)
	group := func(ups ...IndexUpdate) {
		t.Helper()
		res := f.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: ups}}}).(IndexResult)
		if res.Errs[0] != nil {
			t.Fatal(res.Errs[0])
		}
	}
	seqOf := func(p credit.Pseudonym) uint64 {
		t.Helper()
		e, _, _ := f.state.Lookup(p)
		if len(e) != 1 {
			return 0
		}
		return e[0].Seq
	}
	// Within one group: a's newer update, then a's older one, then b's
	// (new key, but below the watermark the first update raised).
	group(update(a, kecheng.Region, 2, 10), update(a, kecheng.Region, 1, 8), update(b, kecheng.Region, 1, 9))
	if seqOf(a) != 10 || seqOf(b) != 9 {
		t.Fatalf("after the first group: a %d, b %d", seqOf(a), seqOf(b))
	}
	var wm uint64
	f.db.View(func(txn *badger.Txn) error { wm, _ = getUint(txn, watermarkKey(kecheng.Region)); return nil })
	if wm != 10 {
		t.Fatalf("watermark %d, want 10", wm)
	}
	// Across groups: late, older updates of both keys change nothing; a
	// newer one of b does.
	group(update(a, kecheng.Region, 7, 4), update(b, kecheng.Region, 7, 5))
	group(update(b, kecheng.Region, 3, 11))
	if seqOf(a) != 10 || seqOf(b) != 11 {
		t.Fatalf("after late updates: a %d, b %d", seqOf(a), seqOf(b))
	}
	// Another district's watermark is its own.
	group2 := f.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
		{Proposer: qujiang, Updates: []IndexUpdate{update(a, qujiang.Region, 1, 1)}}}}).(IndexResult)
	if group2.Errs[0] != nil {
		t.Fatal(group2.Errs[0])
	}
	if e, _, _ := f.state.Lookup(a); len(e) != 2 {
		t.Fatalf("qujiang's first update was dropped: %+v", e)
	}
}
