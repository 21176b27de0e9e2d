package consensus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/certs"
	"credfed/exchange"
)

// hashOf is a stand-in for an audit entry's hash.
func hashOf(node string, seq uint64) [32]byte {
	return sha256.Sum256([]byte(fmt.Sprintf("%s/%d", node, seq)))
}

func anchorOf(node string, seq uint64) AuditAnchor {
	return AuditAnchor{Node: node, Seq: seq, Hash: hashOf(node, seq)}
}

func anchorsOf(t *testing.T, s *State, node string) []AuditAnchor {
	t.Helper()
	a, err := s.AuditAnchors(node)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestFSM_AuditAnchor: a registered node anchors its own region's chain
// only, forward only; the state keeps the newest anchor of each node and
// those within its budget, stamped with the leader's clock; a refused
// anchor changes nothing.
func TestFSM_AuditAnchor(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	stranger := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/longyou"}
	otherFed := certs.Identity{Federation: "other", Role: certs.District, Region: kecheng.Region}
	asCity := certs.Identity{Federation: fed, Role: certs.City, Region: kecheng.Region}
	if err := errOf(f.apply(t, CmdAuditAnchor, kecheng, certs.Identity{}, anchorOf(kecheng.Region, 10))); err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name     string
		proposer certs.Identity
		body     AuditAnchor
		reason   error
	}{
		{"a district anchoring another district's log", kecheng, anchorOf(qujiang.Region, 20), ErrForbidden},
		{"a district anchoring its city's log", kecheng, anchorOf(city.Region, 20), ErrForbidden},
		{"a coordinator anchoring a district's log", province, anchorOf(kecheng.Region, 20), ErrForbidden},
		{"an unregistered region", stranger, anchorOf(stranger.Region, 1), ErrForbidden},
		{"a certificate of another federation", otherFed, anchorOf(kecheng.Region, 20), ErrForbidden},
		{"the district's region under another role", asCity, anchorOf(kecheng.Region, 20), ErrForbidden},
		{"an operator", provOp, anchorOf(provOp.Region, 20), ErrForbidden},
		{"no sequence number", kecheng, AuditAnchor{Node: kecheng.Region, Hash: hashOf("x", 1)}, ErrInvalid},
		{"no hash", kecheng, AuditAnchor{Node: kecheng.Region, Seq: 20}, ErrInvalid},
		{"a head below the newest anchor (a rewound log)", kecheng, anchorOf(kecheng.Region, 9), ErrConflict},
		{"the newest anchor's seq with another hash", kecheng, AuditAnchor{Node: kecheng.Region, Seq: 10, Hash: hashOf("x", 10)}, ErrConflict},
	}
	for _, r := range refusals {
		before := dumpState(t, f.db)
		err := errOf(f.apply(t, CmdAuditAnchor, r.proposer, certs.Identity{}, r.body))
		var re *RefusedError
		if !errors.Is(err, r.reason) || !errors.As(err, &re) {
			t.Errorf("%s: %v, want %v", r.name, err, r.reason)
		}
		after := dumpState(t, f.db)
		delete(before, string(keyApplied))
		delete(after, string(keyApplied))
		if !reflect.DeepEqual(before, after) {
			t.Errorf("%s: the refused anchor changed the state", r.name)
		}
	}
	// The same anchor again (a retry after an unknown outcome) is taken
	// and changes nothing.
	if err := errOf(f.apply(t, CmdAuditAnchor, kecheng, certs.Identity{}, anchorOf(kecheng.Region, 10))); err != nil {
		t.Fatalf("the anchor retried: %v", err)
	}
	got := anchorsOf(t, f.state, kecheng.Region)
	if len(got) != 1 || got[0].Seq != 10 || got[0].Hash != hashOf(kecheng.Region, 10) ||
		!got[0].At.Equal(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("anchors %+v", got)
	}
	// Coordinators anchor their own logs too; a body's time is the
	// leader's.
	body := anchorOf(city.Region, 5)
	body.At = time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := errOf(f.apply(t, CmdAuditAnchor, city, certs.Identity{}, body)); err != nil {
		t.Fatal(err)
	}
	if got := anchorsOf(t, f.state, city.Region); len(got) != 1 || got[0].At.Year() != 2026 {
		t.Fatalf("the city's anchors %+v", got)
	}
	// At one instant the budget keeps anchorBudgetBurst anchors (seq 10
	// used one); every forward anchor beyond it is taken, each in the place
	// of the one before, so the newest is always there.
	for i := 1; i <= MaxAuditAnchors+5; i++ {
		if err := errOf(f.apply(t, CmdAuditAnchor, kecheng, certs.Identity{}, anchorOf(kecheng.Region, uint64(10+i)))); err != nil {
			t.Fatal(err)
		}
	}
	got = anchorsOf(t, f.state, kecheng.Region)
	if len(got) != anchorBudgetBurst+1 || got[0].Seq != 10 || got[anchorBudgetBurst-1].Seq != 10+anchorBudgetBurst-1 ||
		got[len(got)-1].Seq != uint64(10+MaxAuditAnchors+5) {
		t.Fatalf("%d anchors, %d to %d", len(got), got[0].Seq, got[len(got)-1].Seq)
	}
	if len(anchorsOf(t, f.state, qujiang.Region)) != 0 || len(anchorsOf(t, f.state, city.Region)) != 1 {
		t.Fatal("another node's anchors changed")
	}
	// Removing the region removes its anchors; the other nodes' stay.
	if err := errOf(f.apply(t, CmdRegionRemove, province, provOp, RegionRemove{Path: kecheng.Region})); err != nil {
		t.Fatal(err)
	}
	if got := anchorsOf(t, f.state, kecheng.Region); len(got) != 0 {
		t.Fatalf("a removed region keeps %d anchors", len(got))
	}
	if len(anchorsOf(t, f.state, city.Region)) != 1 {
		t.Fatal("the city's anchors went with the district")
	}
}

// TestFSM_SnapshotRestore_AuditAnchor: anchors are in the clear section
// of a snapshot: a coordinator and a district restoring it hold them,
// and ReadAuditAnchors reads them from the restored generation without a
// replica.
func TestFSM_SnapshotRestore_AuditAnchor(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	for seq := uint64(1); seq <= 3; seq++ {
		for _, p := range []certs.Identity{kecheng, qujiang, city} {
			if err := errOf(a.apply(t, CmdAuditAnchor, p, certs.Identity{}, anchorOf(p.Region, 100*seq))); err != nil {
				t.Fatal(err)
			}
		}
	}
	b := restoredCopy(t, a)
	for _, node := range []string{kecheng.Region, qujiang.Region, city.Region} {
		want := anchorsOf(t, a.state, node)
		if len(want) != 3 || want[2].Seq != 300 || want[2].Hash != hashOf(node, 300) {
			t.Fatalf("anchors of %s before the snapshot: %+v", node, want)
		}
		if got := anchorsOf(t, b.state, node); !reflect.DeepEqual(got, want) {
			t.Fatalf("restored anchors of %s: %+v, want %+v", node, got, want)
		}
		if got, applied, err := ReadAuditAnchors(b.db, node); err != nil || !reflect.DeepEqual(got, want) || applied != b.state.Applied() {
			t.Fatalf("ReadAuditAnchors of the restored state: %+v at %d (%v), want %+v at %d", got, applied, err, want, b.state.Applied())
		}
	}
	if b.state.gen.n == 0 {
		t.Fatal("the copy restored into generation 0: ReadAuditAnchors was not tested on a later generation")
	}
	// The restored anchors authorize as the originals: no rewinding.
	if err := errOf(b.apply(t, CmdAuditAnchor, kecheng, certs.Identity{}, anchorOf(kecheng.Region, 250))); !errors.Is(err, ErrConflict) {
		t.Fatalf("a rewound head on the restored copy: %v", err)
	}
	// A replica with anchors of its own (in generation 0) drops them with
	// the generation the restore replaces.
	js := certs.Identity{Federation: fed, Role: certs.Province, Region: "jiangsu"}
	o := newTestFSM(t)
	if err := errOf(o.apply(t, CmdFederationInit, js, certs.Identity{}, FederationInit{Regions: []Region{{Path: "jiangsu", Role: certs.Province, Voter: true}},
		Catalog: a.state.Catalog()})); err != nil {
		t.Fatal(err)
	}
	if err := errOf(o.apply(t, CmdAuditAnchor, js, certs.Identity{}, anchorOf(js.Region, 9))); err != nil {
		t.Fatal(err)
	}
	if err := o.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
		t.Fatal(err)
	}
	if got := anchorsOf(t, o.state, js.Region); len(got) != 0 {
		t.Fatalf("the replaced state's anchors are live after the restore: %+v", got)
	}
	err := o.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixAnchor})
		defer it.Close()
		if it.Rewind(); it.Valid() {
			return fmt.Errorf("generation 0 keeps anchor key %q after the restore", it.Item().Key()[:4])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A district (no index keys) keeps them from a coordinator's snapshot.
	d := newDistrictFSM(t)
	if err := d.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
		t.Fatal(err)
	}
	if got, want := anchorsOf(t, d.state, kecheng.Region), anchorsOf(t, a.state, kecheng.Region); !reflect.DeepEqual(got, want) {
		t.Fatalf("the district's restored anchors: %+v, want %+v", got, want)
	}
}

// TestCluster_AuditAnchorFromEveryRole: a district, a follower
// coordinator and the leader anchor their own logs through
// SubmitAnchor, each holding its anchor in its own replica when the call
// returns; the anchor the operation records is always the caller's, whatever
// it asks; a rewound head is refused back to the district; an oversized
// body never reaches the leader's log.
func TestCluster_AuditAnchorFromEveryRole(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	leader := c.waitLeader()
	var follower *testNode
	for _, n := range c.coordinators() {
		if n != leader {
			follower = n
			break
		}
	}
	kecheng, xihu := c.nodes["zhejiang/quzhou/kecheng"], c.nodes["zhejiang/hangzhou/xihu"]
	for _, n := range []*testNode{kecheng, follower, leader} {
		node := n.id.Region
		err := whileLeaderless(t, func(ctx context.Context) error { return n.rep.SubmitAnchor(ctx, 42, hashOf(node, 42)) })
		if err != nil {
			t.Fatalf("%s: %v", node, err)
		}
		got := anchorsOf(t, n.rep.State(), node)
		if len(got) != 1 || got[0].Node != node || got[0].Seq != 42 || got[0].Hash != hashOf(node, 42) {
			t.Fatalf("%s holds %+v right after anchoring", node, got)
		}
	}
	// kecheng asks the leader directly for an anchor: it is kecheng's,
	// never xihu's, since the operation takes the node from the caller.
	var reply anchorReply
	err := kecheng.ep.Call(ctxT(t, 10*time.Second), exchange.Peer{Addr: leader.addr}, opAnchor, exchange.Meta{},
		anchorRequest{Seq: 50, Hash: hashOf(xihu.id.Region, 50)}, &reply)
	if err != nil || reply.Refused != nil || reply.Index == 0 {
		t.Fatalf("a direct anchor: %v %+v", err, reply)
	}
	c.waitFor("the direct anchor at the leader", func() bool {
		a := anchorsOf(t, leader.rep.State(), kecheng.id.Region)
		return len(a) == 2 && a[1].Seq == 50
	})
	if a := anchorsOf(t, leader.rep.State(), xihu.id.Region); len(a) != 0 {
		t.Fatalf("xihu has anchors it never made: %+v", a)
	}
	// A rewound head is refused, to the district, with the reason.
	err = whileLeaderless(t, func(ctx context.Context) error { return kecheng.rep.SubmitAnchor(ctx, 7, hashOf(kecheng.id.Region, 7)) })
	var re *RefusedError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &re) {
		t.Fatalf("a rewound head: %v", err)
	}
	from, _ := leader.rep.logs.LastIndex()
	big := struct {
		Seq  uint64 `cbor:"1,keyasint"`
		Hash []byte `cbor:"2,keyasint"`
	}{60, bytes.Repeat([]byte{'q'}, 4*maxAnchorBody)}
	if err := xihu.ep.Call(ctxT(t, 10*time.Second), exchange.Peer{Addr: leader.addr}, opAnchor, exchange.Meta{}, big, &reply); !errors.Is(err, exchange.ErrBadRequest) {
		t.Fatalf("an oversized anchor body: %v %+v", err, reply)
	}
	if logHolds(t, leader, from+1, bytes.Repeat([]byte{'q'}, 64)) {
		t.Fatal("the oversized anchor is in the log")
	}
}

// anchorAt applies p's anchor of seq as the next log entry, proposed by
// a leader whose clock reads at.
func (f *testFSM) anchorAt(t testing.TB, p certs.Identity, seq uint64, at time.Time) error {
	t.Helper()
	data, err := EncodeCommand(CmdAuditAnchor, Envelope{Proposer: p, At: at}, anchorOf(p.Region, seq))
	if err != nil {
		t.Fatal(err)
	}
	return errOf(f.applyRaw(data))
}

// holds reports whether anchors hold seq.
func holds(anchors []AuditAnchor, seq uint64) bool {
	for _, a := range anchors {
		if a.Seq == seq {
			return true
		}
	}
	return false
}

// TestFSM_AuditAnchorRetentionUnderFlood: a district anchors once a
// minute, stops (its last anchor is the evidence of a rewrite), then
// floods 10,000 forward anchors four a second, as many as
// consensus.anchor lets through. None is refused, the state stays
// bounded, and the stop's anchor is there for its hour; then the first of
// its hour for 7 days and the first of its day for 400 days, each gone
// just after.
func TestFSM_AuditAnchorRetentionUnderFlood(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var seq uint64
	at := map[uint64]time.Time{}
	anchor := func(when time.Time) uint64 {
		t.Helper()
		seq++
		if err := f.anchorAt(t, kecheng, seq, when); err != nil {
			t.Fatalf("anchor %d at %s: %v", seq, when, err)
		}
		at[seq] = when
		return seq
	}
	// bounded checks the count, and that no more than the budget allows
	// is kept for the last hour (besides the newest).
	bounded := func() []AuditAnchor {
		t.Helper()
		got := anchorsOf(t, f.state, kecheng.Region)
		newest := got[len(got)-1].At
		recent := 0
		for _, a := range got[:len(got)-1] {
			if newest.Sub(a.At) < anchorRecent {
				recent++
			}
		}
		if len(got) > MaxAuditAnchors || recent > anchorBudgetBurst+int(anchorRecent/anchorBudgetEvery) {
			t.Fatalf("%d anchors kept, %d of them within the hour", len(got), recent)
		}
		return got
	}
	// Honest: one a minute, 00:00 to 02:30.
	var dayFirst, hourOne, hourFirst, inHour, stop uint64
	for i := 0; i <= 150; i++ {
		s := anchor(t0.Add(time.Duration(i) * time.Minute))
		switch i {
		case 0:
			dayFirst = s
		case 60:
			hourOne = s
		case 120:
			hourFirst = s
		case 140:
			inHour = s
		case 150:
			stop = s
		}
	}
	// The flood: 10,000 anchors 250 ms apart.
	for i := 1; i <= 10000; i++ {
		anchor(at[stop].Add(time.Duration(i) * 250 * time.Millisecond))
		if i%500 == 0 {
			if got := bounded(); !holds(got, stop) || !holds(got, inHour) {
				t.Fatalf("after %d flooding anchors the stop's anchor or one of its hour is gone (%d kept)", i, len(got))
			}
		}
	}
	got := bounded()
	after := 0
	for _, a := range got {
		if a.Seq > stop {
			after++
		}
	}
	if max := anchorBudgetBurst + int(2500*time.Second/anchorBudgetEvery) + 2; after > max {
		t.Fatalf("the flood keeps %d anchors, more than the budget's %d", after, max)
	}
	// A restored replica carries the retained set and the budget: the next
	// anchors leave both with the same anchors.
	b := restoredCopy(t, f)
	for i := 1; i <= 3; i++ {
		when := at[seq].Add(time.Second)
		if err := b.anchorAt(t, kecheng, seq+1, when); err != nil {
			t.Fatal(err)
		}
		anchor(when)
	}
	if g, w := anchorsOf(t, b.state, kecheng.Region), anchorsOf(t, f.state, kecheng.Region); !reflect.DeepEqual(g, w) {
		t.Fatalf("the restored replica keeps %d anchors after the same three, the original %d", len(g), len(w))
	}
	// The hour is the stop's: a minute before it ends it is there, a
	// minute after it the first anchor of its hour stands for it.
	anchor(at[stop].Add(anchorRecent - time.Minute))
	if got := bounded(); !holds(got, stop) || holds(got, inHour) {
		t.Fatalf("a minute before the stop's hour ends: stop %v, an anchor 10 minutes older (past its hour) %v", holds(got, stop), holds(got, inHour))
	}
	anchor(at[stop].Add(anchorRecent + time.Minute))
	if got := bounded(); holds(got, stop) || holds(got, inHour) || !holds(got, hourFirst) || !holds(got, hourOne) || !holds(got, dayFirst) {
		t.Fatalf("an hour after the stop: stop %v, in its hour %v, first of its hour %v, of 01:00 %v, of the day %v",
			holds(got, stop), holds(got, inHour), holds(got, hourFirst), holds(got, hourOne), holds(got, dayFirst))
	}
	// Every 6 hours for 7 days: the first of each hour stays.
	for when := at[seq].Add(6 * time.Hour); when.Before(at[hourFirst].Add(anchorHourly - time.Minute)); when = when.Add(6 * time.Hour) {
		anchor(when)
		if got := bounded(); !holds(got, hourFirst) || !holds(got, hourOne) {
			t.Fatalf("the first anchor of an hour is gone at %s", when)
		}
	}
	anchor(at[hourFirst].Add(anchorHourly - time.Minute))
	if !holds(bounded(), hourFirst) {
		t.Fatal("the first anchor of the stop's hour is gone within 7 days")
	}
	anchor(at[hourFirst].Add(anchorHourly + time.Minute))
	if got := bounded(); holds(got, hourFirst) || holds(got, hourOne) || !holds(got, dayFirst) {
		t.Fatalf("7 days on: first of the stop's hour %v, of 01:00 %v, of the day %v", holds(got, hourFirst), holds(got, hourOne), holds(got, dayFirst))
	}
	// Once a day for 400 days: the first of the day stays, then goes.
	for when := at[seq].Add(24 * time.Hour); when.Before(at[dayFirst].Add(anchorDaily - time.Minute)); when = when.Add(24 * time.Hour) {
		anchor(when)
		if !holds(bounded(), dayFirst) {
			t.Fatalf("the first anchor of the day is gone at %s", when)
		}
	}
	anchor(at[dayFirst].Add(anchorDaily - time.Minute))
	if !holds(bounded(), dayFirst) {
		t.Fatal("the first anchor of the day is gone within 400 days")
	}
	anchor(at[dayFirst].Add(anchorDaily + time.Minute))
	if holds(bounded(), dayFirst) {
		t.Fatal("the first anchor of the day outlives 400 days")
	}
}

// TestFSM_AuditAnchorCap: a node that fills every tier — a day's anchor
// for 400 days, an hour's for 7 days, then its whole budget within an
// hour — keeps MaxAuditAnchors: every anchor of the hour and of the 7
// days stays, and the oldest days go first.
func TestFSM_AuditAnchorCap(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var seq uint64
	var daily []uint64
	for d := 0; d < 400; d++ {
		seq++
		daily = append(daily, seq)
		if err := f.anchorAt(t, kecheng, seq, t0.Add(time.Duration(d)*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	start := t0.Add(400 * 24 * time.Hour)
	var hourly []uint64
	for h := 0; h < 24*7; h++ {
		seq++
		hourly = append(hourly, seq)
		if err := f.anchorAt(t, kecheng, seq, start.Add(time.Duration(h)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	// The last hour: the whole burst at once, one every 30 s, then a
	// hundred more beyond the budget in a second, each taking the place of
	// the one before.
	hour := start.Add(7 * 24 * time.Hour)
	var budgeted []uint64
	for i := 0; i < anchorBudgetBurst; i++ {
		seq++
		budgeted = append(budgeted, seq)
		if err := f.anchorAt(t, kecheng, seq, hour.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	for when := hour.Add(anchorBudgetEvery); when.Before(hour.Add(anchorRecent - anchorBudgetEvery)); when = when.Add(anchorBudgetEvery) {
		seq++
		budgeted = append(budgeted, seq)
		if err := f.anchorAt(t, kecheng, seq, when); err != nil {
			t.Fatal(err)
		}
	}
	end := hour.Add(anchorRecent - anchorBudgetEvery)
	for i := 0; i < 100; i++ {
		seq++
		if err := f.anchorAt(t, kecheng, seq, end.Add(time.Duration(i)*10*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	got := anchorsOf(t, f.state, kecheng.Region)
	if len(got) != MaxAuditAnchors || got[len(got)-1].Seq != seq || holds(got, seq-1) {
		t.Fatalf("%d anchors kept, the newest %d, the one before it kept %v (want %d, %d, false)",
			len(got), got[len(got)-1].Seq, holds(got, seq-1), MaxAuditAnchors, seq)
	}
	for _, s := range append(slices.Clone(budgeted), hourly...) {
		if !holds(got, s) {
			t.Fatalf("anchor %d of the hour or of the 7 days went for the cap", s)
		}
	}
	// The days kept are the newest ones, contiguous to the week: the cap
	// (and the 400 days) took the oldest.
	keptDays := 0
	for _, s := range daily {
		if holds(got, s) {
			keptDays++
		}
	}
	if keptDays < MaxAuditAnchors-2-len(budgeted)-len(hourly) || keptDays >= 400-7 {
		t.Fatalf("the cap leaves %d days", keptDays)
	}
	for i, s := range daily {
		if holds(got, s) != (i >= len(daily)-keptDays) {
			t.Fatalf("day %d of %d: kept %v, want the newest %d days", i, len(daily), holds(got, s), keptDays)
		}
	}
}
