package consensus

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/internal/wait"
	"credfed/storage"
)

// testCluster is a federation in one process: real Raft, real Badger in
// t.TempDir(), the real exchange (QUIC + mTLS) on 127.0.0.1.
type testCluster struct {
	t     *testing.T
	ca    *certs.CA
	nodes map[string]*testNode
	opts  clusterOptions
}

type clusterOptions struct {
	snapshotThreshold uint64
	trailingLogs      uint64
	segmentSize       int
	// logs, if set, receives every node's records (each with the
	// attribute node), at every level.
	logs *recordLog
	// nonVoterCity adds a city that is not a voter (zhejiang/ningbo): a
	// non-voter that holds the index keys, so strong lookups through a
	// non-voter read entries.
	nonVoterCity bool
	// commitTimeout replaces the tests' 5 ms Raft commit timeout.
	commitTimeout time.Duration
	// encrypt gives every node an encryption key for its Raft log and
	// snapshots.
	encrypt bool
	// unsealed makes leaders propose index batches in the clear, as
	// before the index was sealed (what the privacy tests must catch).
	unsealed bool
}

type testNode struct {
	id    certs.Identity
	dir   string
	addr  string
	voter bool
	cert  *certs.Issued
	// encKey is the node's encryption key at rest, nil for none.
	encKey []byte
	// reg is the registry of the node's replica's metrics.
	reg   *prometheus.Registry
	revs  *certs.RevocationList
	state *storage.StateDB
	db    *badger.DB
	ep    *exchange.Endpoint
	rep   *Replica
	up    bool
}

var clusterRegions = []struct {
	path string
	role certs.Role
}{
	{"zhejiang", certs.Province},
	{"zhejiang/quzhou", certs.City},
	{"zhejiang/hangzhou", certs.City},
	{"zhejiang/quzhou/kecheng", certs.District},
	{"zhejiang/hangzhou/xihu", certs.District},
}

func newCluster(t *testing.T, opts clusterOptions) *testCluster {
	t.Helper()
	ca, err := certs.NewCA(fed, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, ca: ca, nodes: map[string]*testNode{}, opts: opts}
	for _, r := range c.regions() {
		c.addNode(r.path, r.role)
	}
	var regions []Region
	for _, r := range c.regions() {
		n := c.nodes[r.path]
		regions = append(regions, Region{Path: r.path, Role: r.role, Exchange: n.addr, Voter: n.voter})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.nodes["zhejiang"].rep.Bootstrap(ctx, regions, credit.DefaultCatalog()); err != nil {
		t.Fatal(err)
	}
	// Every replica has the registry and knows the leader.
	c.waitFor("every node knows the leader and the registry", func() bool {
		for _, n := range c.nodes {
			if _, addr := n.rep.Leader(); addr == "" || len(n.rep.State().Regions()) != len(c.regions()) {
				return false
			}
		}
		return true
	})
	t.Cleanup(c.stopAll)
	return c
}

// nonVoterCity is the city of clusterOptions.nonVoterCity.
const nonVoterCity = "zhejiang/ningbo"

// regions are the cluster's regions: clusterRegions, and the non-voter
// city if asked for.
func (c *testCluster) regions() []struct {
	path string
	role certs.Role
} {
	out := append([]struct {
		path string
		role certs.Role
	}(nil), clusterRegions...)
	if c.opts.nonVoterCity {
		out = append(out, struct {
			path string
			role certs.Role
		}{nonVoterCity, certs.City})
	}
	return out
}

// coordinators are the nodes that hold the index keys (and so the index).
func (c *testCluster) coordinators() []*testNode {
	var out []*testNode
	for _, n := range c.nodes {
		if n.id.Role.IsCoordinatorNode() {
			out = append(out, n)
		}
	}
	return out
}

// addNode creates a node's certificate, directory and starts it.
func (c *testCluster) addNode(path string, role certs.Role) *testNode {
	c.t.Helper()
	id := certs.Identity{Federation: fed, Role: role, Region: path}
	cert, err := c.ca.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		c.t.Fatal(err)
	}
	n := &testNode{id: id, dir: c.t.TempDir(), cert: cert, voter: role.IsCoordinatorNode() && path != nonVoterCity, addr: "127.0.0.1:0"}
	if c.opts.encrypt {
		n.encKey = bytes.Repeat([]byte{byte(len(c.nodes) + 1)}, 32)
	}
	c.nodes[path] = n
	c.start(n)
	return n
}

// start (re)starts a node from its directory, on its previous port if it
// had one.
func (c *testCluster) start(n *testNode) {
	c.t.Helper()
	if err := c.tryStart(n); err != nil {
		c.t.Fatal(err)
	}
}

// tryStart is start, returning the replica's failure to open (the node's
// database and endpoint closed again).
func (c *testCluster) tryStart(n *testNode) error {
	c.t.Helper()
	n.revs = certs.NewRevocationList()
	st, err := storage.OpenState(storage.Options{Dir: filepath.Join(n.dir, "state")})
	if err != nil {
		c.t.Fatal(err)
	}
	n.state = st
	n.db = st.Badger()
	var handler slog.Handler = slog.NewTextHandler(io.Discard, nil)
	if os.Getenv("CREDFED_TEST_LOG") != "" {
		handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	if c.opts.logs != nil {
		handler = c.opts.logs.handler(handler)
	}
	logger := slog.New(handler).With("node", n.id.Region)
	var ep *exchange.Endpoint
	// The port of the previous incarnation may take a moment to free.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wait.For(ctx, 20*time.Millisecond, func() bool {
		ep, err = exchange.New(exchange.Config{
			Certificate: n.cert.TLSCertificate(),
			Verifier:    certs.NewVerifier(c.ca.Cert, fed, n.revs),
			Addr:        n.addr,
			Logger:      logger,
			Registerer:  prometheus.NewRegistry(),
		})
		return err == nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
	n.ep = ep
	n.addr = ep.Addr().String()
	n.reg = prometheus.NewRegistry()
	cfg := Config{
		Self: n.id, Advertise: n.addr, Dir: filepath.Join(n.dir, "raft"), DB: n.db, Endpoint: ep,
		Revocations: n.revs, Voter: n.voter, Logger: logger,
		Registerer:       n.reg,
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		SnapshotThreshold: c.opts.snapshotThreshold, TrailingLogs: c.opts.trailingLogs,
		SnapshotInterval: 200 * time.Millisecond, LogSegmentSize: c.opts.segmentSize,
		EncryptionKey: n.encKey,
	}
	if c.opts.commitTimeout > 0 {
		cfg.CommitTimeout = c.opts.commitTimeout
	}
	if n.id.Role.IsCoordinatorNode() {
		cfg.IndexKeys = testIndexKeys
		cfg.unsealedIndex = c.opts.unsealed
	}
	rep, err := Open(cfg)
	if err != nil {
		ep.Close()
		n.state.Close()
		return err
	}
	n.rep = rep
	n.up = true
	return nil
}

// stop shuts a node down as a crash would leave it: Raft, the endpoint and
// the database closed, the directory kept.
func (c *testCluster) stop(n *testNode) {
	if !n.up {
		return
	}
	n.up = false
	n.rep.Close()
	n.ep.Close()
	n.state.Close()
}

func (c *testCluster) stopAll() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); c.stop(n) }()
	}
	wg.Wait()
}

func (c *testCluster) leader() *testNode {
	for _, n := range c.nodes {
		if n.up && n.rep.IsLeader() {
			return n
		}
	}
	return nil
}

func (c *testCluster) waitLeader() *testNode {
	c.t.Helper()
	var l *testNode
	c.waitFor("a leader", func() bool { l = c.leader(); return l != nil })
	return l
}

// waitFor polls cond until it holds or 20 s pass.
func (c *testCluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	wait.Until(c.t, 20*time.Second, what, cond)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// submit forwards updates from a district and retries while there is no
// leader (the way the publisher does).
func submit(t *testing.T, n *testNode, updates []IndexUpdate) error {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	var err error
	wait.For(ctx, 20*time.Millisecond, func() bool {
		err = n.rep.SubmitIndex(ctx, updates)
		var re *RefusedError
		return err == nil || errors.As(err, &re) || ctx.Err() != nil
	})
	return err
}

// transient reports whether err only says that there was no leader at the
// moment (an election under load): the call may be repeated.
func transient(err error) bool {
	return errors.Is(err, ErrNoLeader) || errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrStale) ||
		errors.Is(err, context.DeadlineExceeded)
}

// whileLeaderless repeats call (each with 5 s) until its error is not
// transient or 20 s pass, and returns its last error.
func whileLeaderless(t *testing.T, call func(ctx context.Context) error) error {
	t.Helper()
	ctx := ctxT(t, 20*time.Second)
	var err error
	wait.For(ctx, 20*time.Millisecond, func() bool {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err = call(callCtx)
		return !transient(err) || ctx.Err() != nil
	})
	return err
}

// apply applies a command through n, repeating it while the cluster has no
// leader (a loaded machine can stall a leader past its lease). Commands
// used with it must be idempotent.
func apply(t *testing.T, n *testNode, typ CommandType, actor certs.Identity, body any) (any, error) {
	t.Helper()
	var res any
	err := whileLeaderless(t, func(ctx context.Context) (err error) {
		res, err = n.rep.Apply(ctx, typ, actor, body)
		return err
	})
	return res, err
}

// strongLookup is a strong read through n, repeated while there is no
// leader.
func strongLookup(t *testing.T, n *testNode, p credit.Pseudonym) ([]IndexEntry, error) {
	t.Helper()
	var e []IndexEntry
	err := whileLeaderless(t, func(ctx context.Context) (err error) {
		e, _, err = n.rep.Lookup(ctx, p, true)
		return err
	})
	return e, err
}

// waitCaughtUp waits until n has applied what the leader had applied when
// it was called (districts keep no entries to look for).
func (c *testCluster) waitCaughtUp(n *testNode) {
	c.t.Helper()
	target := c.waitLeader().rep.State().Applied()
	c.waitFor(n.id.Region+" to catch up", func() bool { return n.rep.State().Applied() >= target })
}

// gauge reads a gauge of n's replica by name (-1 if there is none).
func gauge(t *testing.T, n *testNode, name string) float64 {
	t.Helper()
	families, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

func entriesOn(n *testNode, p credit.Pseudonym) []IndexEntry {
	e, _, err := n.rep.State().Lookup(p)
	if err != nil {
		return nil
	}
	return e
}

func TestCluster_ReplicatesToEveryReplica(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	kecheng := c.nodes["zhejiang/quzhou/kecheng"]
	xihu := c.nodes["zhejiang/hangzhou/xihu"]
	var wg sync.WaitGroup
	for _, d := range []*testNode{kecheng, xihu} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= 20; i++ {
				if err := submit(t, d, []IndexUpdate{update(pseudo(byte(i)), d.id.Region, i, uint64(i))}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Coordinators hold the entries; districts apply the same log and keep
	// none of them (the batches are sealed).
	for _, n := range c.coordinators() {
		c.waitFor("entries on "+n.id.Region, func() bool {
			for i := 1; i <= 20; i++ {
				if len(entriesOn(n, pseudo(byte(i)))) != 2 {
					return false
				}
			}
			return true
		})
	}
	last := c.waitLeader().rep.State().Applied()
	for _, d := range []*testNode{kecheng, xihu} {
		c.waitFor("the log applied on "+d.id.Region, func() bool { return d.rep.State().Applied() >= last })
		if n, err := d.rep.State().EntryCount(); err != nil || n != 0 {
			t.Fatalf("district %s holds %d index entries (%v)", d.id.Region, n, err)
		}
	}
	// Districts are non-voters, coordinators voters.
	servers, err := c.waitLeader().rep.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != len(clusterRegions) {
		t.Fatalf("%d servers in the configuration", len(servers))
	}
	for _, s := range servers {
		if want := c.nodes[string(s.ID)].voter; (s.Suffrage.String() == "Voter") != want {
			t.Errorf("server %s suffrage %s", s.ID, s.Suffrage)
		}
	}
}

func TestCluster_Authorization(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	kecheng := c.nodes["zhejiang/quzhou/kecheng"]
	err := submit(t, kecheng, []IndexUpdate{update(pseudo(9), "zhejiang/hangzhou/xihu", 1, 1)})
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("district writing another district's entry: %v", err)
	}
	// A district relaying an operator's region change is refused by the FSM.
	_, err = apply(t, kecheng, CmdRegionPut,
		certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang/quzhou/kecheng", Institution: "ops"},
		Region{Path: "zhejiang/quzhou/kecheng", Role: certs.District, Voter: true})
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("district relaying a region change: %v", err)
	}
	// A coordinator may not write index entries at all: the exchange refuses
	// the forward, or, when the city itself leads, the FSM refuses the batch.
	// Every coordinator tries, so both paths run whichever of them leads.
	for _, path := range []string{"zhejiang", "zhejiang/hangzhou", "zhejiang/quzhou"} {
		err = submit(t, c.nodes[path], []IndexUpdate{update(pseudo(9), path, 1, 1)})
		if !errors.Is(err, ErrForbidden) {
			t.Fatalf("coordinator %s writing index entries: %v", path, err)
		}
	}
	city := c.nodes["zhejiang/quzhou"]
	for _, n := range c.nodes {
		if e := entriesOn(n, pseudo(9)); len(e) != 0 {
			t.Fatalf("refused writes changed %s: %+v", n.id.Region, e)
		}
	}
	// The relayed operator command from a city is accepted.
	_, err = apply(t, city, CmdRegionPut,
		certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang/quzhou", Institution: "ops"},
		Region{Path: "zhejiang/quzhou/qujiang", Role: certs.District})
	if err != nil {
		t.Fatal(err)
	}
	c.waitFor("the new region everywhere", func() bool {
		for _, n := range c.nodes {
			if _, ok := n.rep.State().Region("zhejiang/quzhou/qujiang"); !ok {
				return false
			}
		}
		return true
	})
}

func TestCluster_FailoverKeepsAcknowledgedWrites(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	kecheng := c.nodes["zhejiang/quzhou/kecheng"]
	acked := 0
	for i := 1; i <= 30; i++ {
		if err := submit(t, kecheng, []IndexUpdate{update(pseudo(byte(i)), kecheng.id.Region, 1, uint64(i))}); err != nil {
			t.Fatal(err)
		}
		acked = i
		if i == 10 {
			old := c.waitLeader()
			c.stop(old)
			c.waitFor("a new leader", func() bool { l := c.leader(); return l != nil && l != old })
			defer func() {
				// The old leader restarts from its disk and catches up.
				c.start(old)
				c.waitFor("the old leader to catch up", func() bool {
					return len(entriesOn(old, pseudo(byte(acked)))) == 1
				})
			}()
		}
	}
	for _, n := range c.coordinators() {
		if !n.up {
			continue
		}
		c.waitFor("every acknowledged write on "+n.id.Region, func() bool {
			for i := 1; i <= acked; i++ {
				if len(entriesOn(n, pseudo(byte(i)))) != 1 {
					return false
				}
			}
			return true
		})
	}
}

func TestCluster_StrongReadOnFollower(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	kecheng := c.nodes["zhejiang/quzhou/kecheng"]
	if err := submit(t, kecheng, []IndexUpdate{update(pseudo(1), kecheng.id.Region, 3, 1)}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		if !n.id.Role.IsCoordinatorNode() {
			// A district keeps no index: it refuses the lookup, and its
			// strong read barrier still works.
			if _, _, err := n.rep.Lookup(ctxT(t, 5*time.Second), pseudo(1), true); !errors.Is(err, ErrNoIndex) {
				t.Fatalf("%s: a lookup on a district: %v", n.id.Region, err)
			}
			if err := whileLeaderless(t, n.rep.ReadBarrier); err != nil {
				t.Fatalf("%s: read barrier: %v", n.id.Region, err)
			}
			continue
		}
		// Right after the write, a strong read on any coordinator sees it.
		e, err := strongLookup(t, n, pseudo(1))
		if err != nil {
			t.Fatalf("%s: %v", n.id.Region, err)
		}
		if len(e) != 1 || e[0].Summary.Negative != 3 {
			t.Fatalf("%s: strong read %+v", n.id.Region, e)
		}
	}
}

func TestCluster_RemovedNodeStopsReceiving(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	xihu := c.nodes["zhejiang/hangzhou/xihu"]
	kecheng := c.nodes["zhejiang/quzhou/kecheng"]
	op := certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang", Institution: "ops"}
	province := c.nodes["zhejiang"]
	// Repeated after an election, the removal may find xihu already gone.
	if _, err := apply(t, province, CmdRegionRemove, op, RegionRemove{Path: xihu.id.Region}); err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	// removedAt is the leader's last log index once xihu is out of a
	// committed configuration (the barrier commits everything before it):
	// xihu may still be applying entries up to it (it was catching up while
	// the removal committed), but never one after it.
	var removedAt uint64
	c.waitFor("xihu out of the configuration", func() bool {
		l := c.leader()
		if l == nil {
			return false
		}
		f := l.rep.raft.GetConfiguration()
		if f.Error() != nil {
			return false
		}
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == xihu.id.Region {
				return false
			}
		}
		if l.rep.raft.Barrier(5*time.Second).Error() != nil {
			return false
		}
		removedAt = l.rep.raft.LastIndex()
		return true
	})
	if err := submit(t, kecheng, []IndexUpdate{update(pseudo(7), kecheng.id.Region, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the write on the leader", func() bool { l := c.leader(); return l != nil && len(entriesOn(l, pseudo(7))) == 1 })
	// Give replication every chance to (wrongly) reach xihu: wait until the
	// leader has sent this entry to everyone it replicates to.
	var last uint64
	c.waitFor("a read barrier on the leader", func() bool {
		l := c.leader()
		if l == nil || l.rep.ReadBarrier(ctxT(t, 5*time.Second)) != nil {
			return false
		}
		last = l.rep.raft.LastIndex()
		return true
	})
	if n := last; n <= removedAt {
		t.Fatalf("the write did not go into the log after the removal: last index %d, removed at %d", n, removedAt)
	}
	if xihu.rep.State().Applied() > removedAt {
		t.Fatalf("removed node still receives: applied %d, removed at %d", xihu.rep.State().Applied(), removedAt)
	}
}

// TestCluster_LateNonVoterCatchesUpBySnapshot: a district and a non-voter
// city registered after the leader compacted its log catch up by
// snapshot (the leader's InstallSnapshot). The city, which holds the
// index keys, opens the snapshot's sealed index section and holds every
// entry; the district restores the registry, the catalog and the
// revocations and keeps no entry.
func TestCluster_LateNonVoterCatchesUpBySnapshot(t *testing.T) {
	c := newCluster(t, clusterOptions{snapshotThreshold: 16, trailingLogs: 8, segmentSize: 4 << 10})
	kecheng := c.nodes["zhejiang/quzhou/kecheng"]
	op := certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang", Institution: "ops"}
	if _, err := apply(t, c.nodes["zhejiang"], CmdRevoke, op, certs.Revocation{Serial: "4242", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 60; i++ {
		if err := submit(t, kecheng, []IndexUpdate{update(pseudo(byte(i)), kecheng.id.Region, 1, uint64(i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the leader has compacted its log past the start.
	c.waitFor("a snapshot on the leader", func() bool {
		l := c.leader()
		return l != nil && l.rep.Stats()["last_snapshot_index"] != "0"
	})
	late := c.addNode("zhejiang/quzhou/qujiang", certs.District)
	lateCity := c.addNode("zhejiang/wenzhou", certs.City)
	for _, r := range []Region{
		{Path: late.id.Region, Role: certs.District, Exchange: late.addr},
		{Path: lateCity.id.Region, Role: certs.City, Exchange: lateCity.addr},
	} {
		if _, err := apply(t, c.nodes["zhejiang"], CmdRegionPut, op, r); err != nil {
			t.Fatal(err)
		}
	}
	// They get there by a snapshot: the leader's log no longer starts at
	// 1. The FSM's count of restores is what tells (raft's own stats lag
	// the restore), and it is counted once the restore is done, a moment
	// after the entries become visible: both are waited for.
	c.waitFor("the late city to hold every entry, restored from a snapshot", func() bool {
		if testutil.ToFloat64(lateCity.rep.metrics.restores) < 1 {
			return false
		}
		for i := 1; i <= 60; i++ {
			if len(entriesOn(lateCity, pseudo(byte(i)))) != 1 {
				return false
			}
		}
		return true
	})
	lastWrite := c.waitLeader().rep.State().Applied()
	c.waitFor("the late district to restore a snapshot and apply the log", func() bool {
		return testutil.ToFloat64(late.rep.metrics.restores) >= 1 && late.rep.State().Applied() >= lastWrite
	})
	st := late.rep.State()
	if len(st.Regions()) != len(clusterRegions)+2 || st.Catalog() == nil {
		t.Fatalf("the late district has %d regions, catalog %v", len(st.Regions()), st.Catalog())
	}
	if rs := st.Revocations().Snapshot(); len(rs.Revocations) != 1 || rs.Revocations[0].Serial != "4242" {
		t.Fatalf("the late district's revocations: %+v", rs)
	}
	if n, err := st.EntryCount(); err != nil || n != 0 || st.IndexEntries() != 0 {
		t.Fatalf("the late district holds %d index entries (%v)", n, err)
	}
	for k := range dumpState(t, late.db) {
		if isIndexKey([]byte(k)) {
			t.Fatalf("the late district's state holds an index key %q", k[:4])
		}
	}
}

// TestCluster_PromoteAndDemote changes a district's voter flag in the
// registry and waits for the leader to follow it in Raft's configuration.
func TestCluster_PromoteAndDemote(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	xihu := c.nodes["zhejiang/hangzhou/xihu"]
	op := certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang", Institution: "ops"}
	suffrage := func() string {
		l := c.leader()
		if l == nil {
			return ""
		}
		servers, err := l.rep.Servers()
		if err != nil {
			return ""
		}
		for _, s := range servers {
			if string(s.ID) == xihu.id.Region {
				return s.Suffrage.String()
			}
		}
		return "absent"
	}
	for _, voter := range []bool{true, false} {
		if _, err := apply(t, c.nodes["zhejiang"], CmdRegionPut, op,
			Region{Path: xihu.id.Region, Role: certs.District, Exchange: xihu.addr, Voter: voter}); err != nil {
			t.Fatal(err)
		}
		want := map[bool]string{true: "Voter", false: "Nonvoter"}[voter]
		c.waitFor("xihu to be a "+want, func() bool { return suffrage() == want })
	}
}
