package consensus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"reflect"
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
// only, forward only; the state keeps the last MaxAuditAnchors of each
// node, stamped with the leader's clock; a refused anchor changes
// nothing.
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
	// The last MaxAuditAnchors are kept, oldest dropped first.
	for i := 1; i <= MaxAuditAnchors+5; i++ {
		if err := errOf(f.apply(t, CmdAuditAnchor, kecheng, certs.Identity{}, anchorOf(kecheng.Region, uint64(10+i)))); err != nil {
			t.Fatal(err)
		}
	}
	got = anchorsOf(t, f.state, kecheng.Region)
	if len(got) != MaxAuditAnchors || got[0].Seq != 16 || got[len(got)-1].Seq != uint64(10+MaxAuditAnchors+5) {
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
