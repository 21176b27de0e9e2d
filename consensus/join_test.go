package consensus

import (
	"crypto/sha256"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"credfed/certs"
)

var joinAt = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC) // testFSM.apply's clock

// applyAt is apply with the leader's clock at at.
func (f *testFSM) applyAt(t testing.TB, at time.Time, typ CommandType, proposer, actor certs.Identity, body any) any {
	t.Helper()
	data, err := EncodeCommand(typ, Envelope{Proposer: proposer, Actor: actor, At: at}, body)
	if err != nil {
		t.Fatal(err)
	}
	f.index++
	return f.Apply(&raft.Log{Index: f.index, Type: raft.LogCommand, Data: data})
}

var kaihua = certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kaihua"}

func addKaihua(t *testing.T, f *testFSM, secret string) [32]byte {
	t.Helper()
	h := sha256.Sum256([]byte(secret))
	if err := errOf(f.apply(t, CmdRegionAdd, city, cityOp, RegionAdd{Region: Region{Path: kaihua.Region, Name: "开化县", Role: certs.District, Voter: true, Exchange: "1.2.3.4:5"},
		TokenHash: h, Life: time.Hour})); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestFSM_SnapshotRestore_RegionAdd(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	addKaihua(t, a, "s1")
	b := restoredCopy(t, a)
	r, ok := b.state.Region(kaihua.Region)
	if !ok || r.Exchange != "" || r.Voter || r.Registered == 0 || r.Name != "开化县" {
		t.Fatalf("restored added region %+v (an added region has no address and no vote until it joins)", r)
	}
	got, ok, err := b.state.JoinToken(kaihua.Region)
	want, _, _ := a.state.JoinToken(kaihua.Region)
	if err != nil || !ok || !reflect.DeepEqual(got, want) || !got.Expires.Equal(joinAt.Add(time.Hour)) || got.By != cityOp.String() {
		t.Fatalf("restored token %+v, want %+v (%v)", got, want, err)
	}
}

func TestFSM_SnapshotRestore_Join(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	h := addKaihua(t, a, "s1")
	if err := errOf(a.apply(t, CmdJoin, city, kaihua, Join{Region: kaihua.Region, TokenHash: h, Exchange: "127.0.0.1:7009", API: "https://127.0.0.1:8009"})); err != nil {
		t.Fatal(err)
	}
	b := restoredCopy(t, a)
	r, _ := b.state.Region(kaihua.Region)
	tok, _, _ := b.state.JoinToken(kaihua.Region)
	if r.Exchange != "127.0.0.1:7009" || r.API != "https://127.0.0.1:8009" || tok.Used.IsZero() || tok.UsedVia != city.String() {
		t.Fatalf("restored joined region %+v, token %+v", r, tok)
	}
}

func TestJoinTokenWorksOnceBeforeItExpiresAtACoordinatorAbove(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	old := addKaihua(t, f, "s1")
	// Adding again before the join voids the first token.
	h := addKaihua(t, f, "s2")
	join := Join{Region: kaihua.Region, TokenHash: old, Exchange: "127.0.0.1:7009"}
	if err := errOf(f.apply(t, CmdJoin, city, kaihua, join)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("the voided token: %v, want forbidden", err)
	}
	join.TokenHash = h
	// Served by a node that is not above the region: the district itself,
	// a district, an unregistered city.
	for _, p := range []certs.Identity{kaihua, kecheng, {Federation: fed, Role: certs.City, Region: "zhejiang/hangzhou"}} {
		if err := errOf(f.apply(t, CmdJoin, p, kaihua, join)); !errors.Is(err, ErrForbidden) {
			t.Fatalf("join served by %s: %v, want forbidden", p, err)
		}
	}
	// Expired.
	if err := errOf(f.applyAt(t, joinAt.Add(time.Hour), CmdJoin, city, kaihua, join)); !errors.Is(err, ErrExpired) {
		t.Fatalf("an expired token: %v, want expired", err)
	}
	// No exchange address.
	if err := errOf(f.apply(t, CmdJoin, province, kaihua, Join{Region: kaihua.Region, TokenHash: h})); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a join without an address: %v", err)
	}
	if r, _ := f.state.Region(kaihua.Region); r.Exchange != "" {
		t.Fatal("a refused join set the address")
	}
	// The province (above, through the city) serves it; then it is used.
	if err := errOf(f.apply(t, CmdJoin, province, kaihua, join)); err != nil {
		t.Fatal(err)
	}
	if err := errOf(f.apply(t, CmdJoin, city, kaihua, join)); !errors.Is(err, ErrConflict) {
		t.Fatalf("a used token: %v, want conflict", err)
	}
	// A joined region is not added again until removed.
	if err := errOf(f.apply(t, CmdRegionAdd, city, cityOp, RegionAdd{Region: Region{Path: kaihua.Region, Role: certs.District},
		TokenHash: h, Life: time.Hour})); !errors.Is(err, ErrConflict) {
		t.Fatalf("adding a joined region: %v, want conflict", err)
	}
	// Bad lives and operators of other regions are refused.
	for _, life := range []time.Duration{0, -time.Second, MaxJoinTokenLife + time.Second} {
		if err := errOf(f.apply(t, CmdRegionAdd, city, cityOp, RegionAdd{Region: Region{Path: "zhejiang/quzhou/x", Role: certs.District},
			TokenHash: h, Life: life})); !errors.Is(err, ErrInvalid) {
			t.Fatalf("life %v: %v", life, err)
		}
	}
	hzOp := certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang/hangzhou", Institution: "ops"}
	if err := errOf(f.apply(t, CmdRegionAdd, city, hzOp, RegionAdd{Region: Region{Path: "zhejiang/quzhou/y", Role: certs.District},
		TokenHash: h, Life: time.Hour})); !errors.Is(err, ErrForbidden) {
		t.Fatalf("an operator of another city: %v", err)
	}
}

// TestRemovedDistrictsEntriesAreNotRead: a removed district's index
// entries are not read, nor read again when a new region of the same path
// is registered; what the new one writes is.
func TestRemovedDistrictsEntriesAreNotRead(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	write := func(seq uint64) {
		t.Helper()
		res := f.applySealed(t, testIndexKeys, IndexBatch{Groups: []IndexGroup{{Proposer: qujiang, Updates: []IndexUpdate{update(pseudo(9), qujiang.Region, 1, seq)}}}})
		if r, ok := res.(IndexResult); !ok || r.Errs[0] != nil {
			t.Fatalf("index write: %+v", res)
		}
	}
	write(1)
	if n := len(lookupOf(t, f.state, pseudo(9))); n != 1 {
		t.Fatalf("%d entries before the removal", n)
	}
	if err := errOf(f.apply(t, CmdRegionRemove, province, provOp, RegionRemove{Path: qujiang.Region})); err != nil {
		t.Fatal(err)
	}
	if n := len(lookupOf(t, f.state, pseudo(9))); n != 0 {
		t.Fatalf("%d entries of a removed district read", n)
	}
	if err := errOf(f.apply(t, CmdRegionPut, province, provOp, Region{Path: qujiang.Region, Role: certs.District, Exchange: "127.0.0.1:1"})); err != nil {
		t.Fatal(err)
	}
	if n := len(lookupOf(t, f.state, pseudo(9))); n != 0 {
		t.Fatalf("the old district's entry came back with a new region of its path (%d)", n)
	}
	write(2)
	if e := lookupOf(t, f.state, pseudo(9)); len(e) != 1 || e[0].Seq != 2 {
		t.Fatalf("the new district's entry: %+v", e)
	}
}

// TestRemovalSuspendsOnlyTheCertificatesIssuedUntilThen: region remove
// suspends, in the same entry, every certificate of the region's node
// issued until then; one issued later (a region added again) is not.
func TestRemovalSuspendsOnlyTheCertificatesIssuedUntilThen(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	ca, err := certs.NewCA(fed, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := joinAt
	old, err := ca.Issue(certs.IssueRequest{Identity: qujiang, NotBefore: at.Add(-time.Hour - certs.ClockSkew)})
	if err != nil {
		t.Fatal(err)
	}
	later, err := ca.Issue(certs.IssueRequest{Identity: qujiang, NotBefore: at.Add(time.Minute - certs.ClockSkew)})
	if err != nil {
		t.Fatal(err)
	}
	if err := errOf(f.applyAt(t, at, CmdRegionRemove, province, provOp, RegionRemove{Path: qujiang.Region, SuspendNode: true})); err != nil {
		t.Fatal(err)
	}
	revs := f.state.Revocations()
	if err := revs.Check(old.Cert, qujiang); !errors.Is(err, certs.ErrSuspended) {
		t.Fatalf("a certificate issued before the removal: %v, want suspended", err)
	}
	if err := revs.Check(later.Cert, qujiang); err != nil {
		t.Fatalf("a certificate issued after the removal: %v", err)
	}
	if _, ok := f.state.Region(qujiang.Region); ok {
		t.Fatal("the region is still registered")
	}
	// An operator's own suspension of the identity covers every
	// certificate, and a removal does not narrow it.
	if err := errOf(f.apply(t, CmdSuspend, province, provOp, certs.Suspension{Identity: kecheng.String(), Reason: "x", IssuedBefore: at})); err != nil {
		t.Fatal(err)
	}
	kLater, _ := ca.Issue(certs.IssueRequest{Identity: kecheng, NotBefore: at.Add(time.Hour)})
	if err := errOf(f.applyAt(t, at, CmdRegionRemove, province, provOp, RegionRemove{Path: kecheng.Region, SuspendNode: true})); err != nil {
		t.Fatal(err)
	}
	if err := revs.Check(kLater.Cert, kecheng); !errors.Is(err, certs.ErrSuspended) {
		t.Fatalf("an operator's suspension narrowed: %v", err)
	}
}
