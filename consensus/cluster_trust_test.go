package consensus

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"credfed/certs"
	"credfed/credit"
)

// Cluster tests of issue 9's holes: the index sealed from districts, the
// Raft files encrypted at rest, strong reads after an election.

// raftFindings are the needles found in a stopped node's Raft directory.
type raftFindings struct {
	entries, commands, sealed, plainIndex int      // log entries read, commands, sealed and plain index batches
	snapshots                             int      // snapshot files read
	found                                 []string // where a needle was found
}

// scanRaftDir decodes a stopped node's raft-wal log entry by entry (as
// systemtest/privacy_test.go does) and reads every snapshot file, and
// reports where any needle appears. A snapshot file that is a snapshot
// stream (not encrypted at rest) is also parsed as a node without the
// index keys would: its clear section must hold no index key.
func scanRaftDir(t *testing.T, dir string, needles map[string][]byte) raftFindings {
	t.Helper()
	var f raftFindings
	look := func(where string, b []byte) {
		for name, n := range needles {
			if bytes.Contains(b, n) {
				f.found = append(f.found, name+" in "+where)
			}
		}
	}
	meta := &metadb.BoltMetaDB{}
	wal, err := raftwal.Open(filepath.Join(dir, "wal"), raftwal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := wal.FirstIndex()
	last, _ := wal.LastIndex()
	for i := first; i <= last && last > 0; i++ {
		var l raft.Log
		if err := wal.GetLog(i, &l); err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
		f.entries++
		look("log entry data", l.Data)
		look("log entry extensions", l.Extensions)
		if l.Type == raft.LogCommand && len(l.Data) > 0 {
			f.commands++
			switch CommandType(l.Data[0]) {
			case CmdSealedIndexBatch:
				f.sealed++
			case CmdIndexBatch:
				f.plainIndex++
			}
		}
	}
	wal.Close()
	meta.Close()
	for _, path := range filesUnder(t, filepath.Join(dir, "snapshots")) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(path) != "state.bin" {
			continue // meta.json: raft's configuration (server ids, addresses)
		}
		f.snapshots++
		look("snapshot "+filepath.Base(filepath.Dir(path)), b)
		if bytes.HasPrefix(b, []byte("credfed-state/")) {
			if _, err := readSnapshot(bytes.NewReader(b), nil, func(k, v []byte) error {
				if isIndexKey(k) {
					f.found = append(f.found, "an index key in the clear section of a snapshot")
				}
				return nil
			}); err != nil {
				t.Fatalf("snapshot %s: %v", path, err)
			}
		}
	}
	return f
}

// TestCluster_DistrictHoldsNoIndex: districts forward index updates as
// before; the leader seals each batch, so a district's Raft log, its
// snapshots (its own, and the coordinator's snapshot a late district
// installs) and its state hold no pseudonym the test wrote, no index key
// and no index entry, while the coordinators' lookups find every entry.
// With the leader proposing batches in the clear (the format before the
// seal), the same scan finds the pseudonyms in the districts' logs.
func TestCluster_DistrictHoldsNoIndex(t *testing.T) {
	for _, sealed := range []bool{true, false} {
		name := map[bool]string{true: "sealed", false: "unsealed (before the fix)"}[sealed]
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, clusterOptions{snapshotThreshold: 16, trailingLogs: 8, segmentSize: 4 << 10, unsealed: !sealed})
			districts := []*testNode{c.nodes["zhejiang/quzhou/kecheng"], c.nodes["zhejiang/hangzhou/xihu"]}
			ps := randomPseudonyms(40)
			for i, p := range ps {
				d := districts[i%2]
				u := IndexUpdate{Pseudonym: p, District: d.id.Region, Seq: uint64(i + 1),
					Summary: credit.IndexSummary{Negative: 2, Serious: 1, OnDishonestyList: true}}
				if err := submit(t, d, []IndexUpdate{u}); err != nil {
					t.Fatal(err)
				}
			}
			c.waitFor("a snapshot on the leader", func() bool {
				l := c.leader()
				return l != nil && l.rep.Stats()["last_snapshot_index"] != "0"
			})
			// A late district catches up from the coordinator's snapshot.
			late := c.addNode("zhejiang/quzhou/qujiang", certs.District)
			op := certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang", Institution: "ops"}
			if _, err := apply(t, c.nodes["zhejiang"], CmdRegionPut, op, Region{Path: late.id.Region, Role: certs.District, Exchange: late.addr}); err != nil {
				t.Fatal(err)
			}
			districts = append(districts, late)
			for _, d := range districts {
				c.waitCaughtUp(d)
			}
			for _, d := range districts {
				c.waitFor("a snapshot on "+d.id.Region, func() bool { return d.rep.Stats()["last_snapshot_index"] != "0" })
			}
			// Every node reports the entries it holds: none on a district;
			// on a coordinator the count of the last snapshot, or of a scan
			// once that is old.
			for _, n := range c.nodes {
				got := gauge(t, n, "credfed_index_entries")
				if !n.id.Role.IsCoordinatorNode() {
					if got != 0 {
						t.Fatalf("credfed_index_entries on district %s: %v", n.id.Region, got)
					}
					continue
				}
				if got <= 0 || got > float64(len(ps)) {
					t.Fatalf("credfed_index_entries on %s: %v", n.id.Region, got)
				}
				c := &n.rep.State().count
				c.mu.Lock()
				c.applied, c.at = 0, time.Now().Add(-entryCountMaxAge) // as if taken long ago
				c.mu.Unlock()
				if got := gauge(t, n, "credfed_index_entries"); got != float64(len(ps)) {
					t.Fatalf("credfed_index_entries on %s, counted again: %v, want %d", n.id.Region, got, len(ps))
				}
			}
			// The coordinators hold every entry and answer strong lookups.
			for _, n := range c.coordinators() {
				for i, p := range ps {
					e, err := strongLookup(t, n, p)
					if err != nil || len(e) != 1 || e[0].District != districts[i%2].id.Region || e[0].Summary.Serious != 1 {
						t.Fatalf("%s: strong lookup of pseudonym %d: %+v, %v", n.id.Region, i, e, err)
					}
				}
			}
			indexKey, _ := DeriveIndexKey(testPseudonymKey)
			needles := map[string][]byte{"the index key": indexKey, "the pseudonym key": testPseudonymKey}
			for i, p := range ps {
				needles["pseudonym "+string(rune('A'+i%26))+string(rune('0'+i/26))] = append([]byte(nil), p[:]...)
			}
			summary, _ := encMode.Marshal(credit.IndexSummary{Negative: 2, Serious: 1, OnDishonestyList: true})
			needles["an index summary"] = summary
			for _, d := range districts {
				if n, err := d.rep.State().EntryCount(); err != nil || n != 0 {
					t.Fatalf("%s holds %d index entries (%v)", d.id.Region, n, err)
				}
				for k, v := range dumpState(t, d.db) {
					if isIndexKey([]byte(k)) {
						t.Fatalf("%s's state holds an index key", d.id.Region)
					}
					for name, n := range needles {
						if strings.Contains(k, string(n)) || strings.Contains(v, string(n)) {
							t.Fatalf("%s's state holds %s", d.id.Region, name)
						}
					}
				}
			}
			for _, d := range districts {
				c.stop(d)
				f := scanRaftDir(t, filepath.Join(d.dir, "raft"), needles)
				t.Logf("%s: %d entries, %d commands (%d sealed index batches, %d in the clear), %d snapshot files",
					d.id.Region, f.entries, f.commands, f.sealed, f.plainIndex, f.snapshots)
				if f.snapshots == 0 {
					t.Fatalf("%s: no snapshot file: the scan looked at none", d.id.Region)
				}
				if !sealed {
					if d != late && len(f.found) == 0 {
						t.Fatalf("%s: unsealed batches, and the scan found nothing: it proves nothing", d.id.Region)
					}
					continue
				}
				if d != late && f.sealed == 0 {
					t.Fatalf("%s: no sealed batch in the log: the scan looked at nothing", d.id.Region)
				}
				if f.plainIndex != 0 || len(f.found) != 0 {
					t.Fatalf("%s: %d index batches in the clear; found %v", d.id.Region, f.plainIndex, f.found)
				}
			}
		})
	}
}

// TestCluster_RaftFilesEncryptedAtRest: with an encryption key, no byte of
// any node's log entries or snapshot files holds a plaintext the test
// put in a command body (a region path, a revocation reason); without
// one, the same scan finds them. A snapshot file with a flipped byte
// (raft's CRC fixed up) is refused when the node restores from it.
func TestCluster_RaftFilesEncryptedAtRest(t *testing.T) {
	for _, encrypt := range []bool{true, false} {
		t.Run(map[bool]string{true: "encrypted", false: "plain (before the fix)"}[encrypt], func(t *testing.T) {
			c := newCluster(t, clusterOptions{snapshotThreshold: 16, trailingLogs: 8, segmentSize: 4 << 10, encrypt: encrypt})
			op := certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang", Institution: "ops"}
			const region, reason = "zhejiang/quzhou/needle-region", "a revocation reason the test looks for"
			if _, err := apply(t, c.nodes["zhejiang"], CmdRegionPut, op, Region{Path: region, Role: certs.District, Name: "针区"}); err != nil {
				t.Fatal(err)
			}
			if _, err := apply(t, c.nodes["zhejiang"], CmdRevoke, op, certs.Revocation{Serial: "31337", Reason: reason}); err != nil {
				t.Fatal(err)
			}
			kecheng := c.nodes["zhejiang/quzhou/kecheng"]
			for i := 1; i <= 40; i++ {
				if err := submit(t, kecheng, []IndexUpdate{update(pseudo(byte(i)), kecheng.id.Region, 1, uint64(i))}); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range c.nodes {
				c.waitCaughtUp(n)
				c.waitFor("a snapshot on "+n.id.Region, func() bool { return n.rep.Stats()["last_snapshot_index"] != "0" })
			}
			c.stopAll()
			needles := map[string][]byte{"the region path": []byte(region), "the reason": []byte(reason)}
			for _, n := range c.nodes {
				f := scanRaftDir(t, filepath.Join(n.dir, "raft"), needles)
				if f.entries == 0 || f.snapshots == 0 {
					t.Fatalf("%s: %d entries, %d snapshots: the scan looked at nothing", n.id.Region, f.entries, f.snapshots)
				}
				if encrypt && len(f.found) > 0 {
					t.Fatalf("%s: found %v", n.id.Region, f.found)
				}
				if !encrypt && len(f.found) == 0 {
					t.Fatalf("%s: plain files, and the scan found nothing: it proves nothing", n.id.Region)
				}
			}
			if !encrypt {
				return
			}
			// A node whose state is lost restores its newest snapshot at
			// start: with a byte of it flipped, it refuses to.
			n := c.nodes["zhejiang/hangzhou"]
			snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(n.dir, "raft"), 2, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			list, _ := snaps.List()
			id := list[0].ID
			raw, _ := os.ReadFile(snapshotFile(filepath.Join(n.dir, "raft"), id))
			bad := append([]byte(nil), raw...)
			bad[len(bad)/2] ^= 0x04
			rewriteSnapshotFile(t, filepath.Join(n.dir, "raft"), id, bad)
			if err := os.RemoveAll(filepath.Join(n.dir, "state")); err != nil {
				t.Fatal(err)
			}
			if err := c.tryStart(n); err == nil || !strings.Contains(err.Error(), "tampered") {
				t.Fatalf("a node restoring a tampered snapshot: %v", err)
			}
			rewriteSnapshotFile(t, filepath.Join(n.dir, "raft"), id, raw)
			if err := os.RemoveAll(filepath.Join(n.dir, "state")); err != nil {
				t.Fatal(err)
			}
			if err := c.tryStart(n); err != nil {
				t.Fatalf("the good snapshot back: %v", err)
			}
			if len(entriesOn(n, pseudo(1))) != 1 || n.rep.State().Catalog() == nil {
				t.Fatal("the node did not restore its snapshot")
			}
		})
	}
}

// TestCluster_StrongReadsAfterElectionOnIdleCluster: kill the leader of
// an idle cluster, wait for a new one, write nothing, and read strongly on
// the new leader, on a voter following it, on a non-voter holding the
// index and on a district (its read barrier): each completes within its
// deadline and sees the last write. Before, the new leader's no-op and
// barrier, which the FSM never sees, held every strong read until the
// next write.
func TestCluster_StrongReadsAfterElectionOnIdleCluster(t *testing.T) {
	strongReadsAfterElection(t, clusterOptions{nonVoterCity: true})
}

// TestCluster_StrongReadsAfterElectionOnIdleClusterSlowCommit is the same
// with the longest commit timeout a node accepts (raft.commit_timeout 1s):
// the new leader's first entries reach the followers only that late on an
// idle cluster, and a strong read must still answer within its 5 s.
func TestCluster_StrongReadsAfterElectionOnIdleClusterSlowCommit(t *testing.T) {
	strongReadsAfterElection(t, clusterOptions{nonVoterCity: true, commitTimeout: time.Second})
}

func strongReadsAfterElection(t *testing.T, opts clusterOptions) {
	c := newCluster(t, opts)
	kecheng := c.nodes["zhejiang/quzhou/kecheng"]
	p := randomPseudonyms(1)[0]
	if err := submit(t, kecheng, []IndexUpdate{update(p, kecheng.id.Region, 4, 1)}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		c.waitCaughtUp(n)
	}
	old := c.waitLeader()
	c.stop(old)
	var leader *testNode
	c.waitFor("a new leader that every node knows", func() bool {
		leader = c.leader()
		if leader == nil || leader == old {
			return false
		}
		for _, n := range c.nodes {
			if region, _ := n.rep.Leader(); n.up && region != leader.id.Region {
				return false
			}
		}
		return true
	})
	var follower *testNode
	for _, n := range c.nodes {
		if n.up && n.voter && n != leader {
			follower = n
		}
	}
	for _, n := range []*testNode{leader, follower, c.nodes[nonVoterCity], kecheng} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		if n.id.Role.IsCoordinatorNode() {
			e, _, err := n.rep.Lookup(ctx, p, true)
			if err != nil || len(e) != 1 || e[0].Summary.Negative != 4 {
				t.Fatalf("strong lookup on %s after the election: %+v, %v (after %v)", n.id.Region, e, err, time.Since(start))
			}
		} else if err := n.rep.ReadBarrier(ctx); err != nil {
			t.Fatalf("strong read barrier on %s after the election: %v (after %v)", n.id.Region, err, time.Since(start))
		}
		cancel()
		t.Logf("strong read on %s: %v", n.id.Region, time.Since(start).Round(time.Millisecond))
	}
}
