package consensus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/prometheus/client_golang/prometheus"

	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
)

// Config configures a Replica. Zero values of optional fields take the
// defaults documented on each.
type Config struct {
	// Self is this node's identity (a node role); its region path is the
	// Raft server ID.
	Self certs.Identity
	// Advertise is the exchange address (host:port) other nodes reach this
	// node at; it is the Raft server address.
	Advertise string
	// Dir holds the Raft log (raft-wal) and snapshots.
	Dir string
	// DB is the node's Badger database, which holds the replicated state.
	DB *badger.DB
	// Endpoint is the node's exchange endpoint: Raft's transport and the
	// forwarding of writes to the leader.
	Endpoint *exchange.Endpoint
	// Revocations is the node's live revocation list, kept equal to the
	// replicated one.
	Revocations *certs.RevocationList
	// Voter says whether this node may vote (coordinators).
	Voter      bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// Raft tuning; zero means hashicorp/raft's default.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64
	SnapshotInterval   time.Duration
	// LogSegmentSize is the size of raft-wal's segment files (default
	// 64 MiB). The log is truncated by whole segments: an entry of the
	// current segment stays readable after a snapshot covers it.
	LogSegmentSize int
	// MaxBatchUpdates bounds the index updates of one log entry (default
	// 4096); MaxInFlight the index batches proposed and not yet applied
	// (default 4).
	MaxBatchUpdates int
	MaxInFlight     int

	// EncryptionKey is the node's key for data at rest (the key of
	// encryption_key_file, which encrypts the records and state
	// databases): the Raft log's entries and the snapshot files are
	// encrypted with keys derived from it (atrest.go). Nil keeps them in
	// the clear, as before.
	EncryptionKey []byte
	// IndexKeys seal and open the index (seal.go): required on a
	// coordinator (province, city), refused on a district, which keeps no
	// index.
	IndexKeys *IndexKeys

	// unsealedIndex makes the leader propose index batches in the clear
	// (CmdIndexBatch), as before the index was sealed: benchmarks only,
	// the baseline of the sealed index's cost.
	unsealedIndex bool
}

// Replica is this node's part in the federation's Raft cluster: the
// replicated state, the Raft instance, and the services around them (write
// forwarding, index batching, strong reads, membership reconciliation on
// the leader).
type Replica struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	state   *State
	fsm     *FSM
	raft    *raft.Raft
	wal     *raftwal.WAL
	walMeta *metadb.BoltMetaDB
	// logs is the log store raft uses: a cache of the recent entries over
	// the (encrypting) log over raft-wal.
	logs   raft.LogStore
	trans  *raft.NetworkTransport
	stream *streamLayer
	policy *raftLogPolicy // raft's log levels (raftlog.go)

	batcher *batcher

	// leaderReady is closed once this node, as leader, has applied a
	// barrier of its term: only then is its commit index good for reads.
	mu          sync.Mutex
	leaderReady chan struct{}
	changed     chan struct{} // registry changed: reconcile now

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
	// The announcement that this node is up (presence.go), which Close
	// ends before announcing its stop.
	cancelUp            context.CancelFunc
	upDone              chan struct{}
	stopAnnounceTimeout time.Duration
}

// Open starts the replica. The node must not serve reads of the index
// before Open returns.
func Open(cfg Config) (*Replica, error) {
	if err := cfg.Self.Validate(); err != nil || !cfg.Self.Role.IsNode() {
		return nil, fmt.Errorf("consensus: Self must be a node identity: %v", err)
	}
	if cfg.DB == nil || cfg.Endpoint == nil || cfg.Dir == "" || cfg.Advertise == "" {
		return nil, errors.New("consensus: Config needs DB, Endpoint, Dir and Advertise")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Revocations == nil {
		cfg.Revocations = certs.NewRevocationList()
	}
	if cfg.MaxBatchUpdates <= 0 {
		cfg.MaxBatchUpdates = 4096
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 4
	}
	switch {
	case cfg.Self.Role.IsCoordinatorNode() && cfg.IndexKeys == nil:
		return nil, fmt.Errorf("consensus: a %s node needs the index keys (Config.IndexKeys)", cfg.Self.Role)
	case !cfg.Self.Role.IsCoordinatorNode() && cfg.IndexKeys != nil:
		return nil, fmt.Errorf("consensus: a %s node must not hold the index keys: only coordinators do", cfg.Self.Role)
	}
	log := cfg.Logger.With("component", "consensus")
	r := &Replica{cfg: cfg, log: log, metrics: newMetrics(cfg.Registerer), done: make(chan struct{}),
		changed: make(chan struct{}, 1)}
	st, err := NewState(cfg.DB, cfg.Revocations, cfg.IndexKeys)
	if err != nil {
		return nil, err
	}
	r.state = st
	r.fsm = &FSM{state: st, federation: cfg.Self.Federation, log: log, metrics: r.metrics, onApplied: r.onApplied}
	if err := r.fsm.reloadKeys(); err != nil {
		return nil, err
	}
	r.metrics.registerState(cfg.Registerer, st)

	if err := os.MkdirAll(filepath.Join(cfg.Dir, "wal"), 0o700); err != nil {
		return nil, fmt.Errorf("consensus: %w", err)
	}
	r.policy = newRaftLogPolicy()
	hlog := newHCLogger(log, "raft", hclog.Warn, r.policy)
	// raft-wal's Close leaves its metadata database open (and locked): we
	// own it and close it after the log.
	r.walMeta = &metadb.BoltMetaDB{}
	walOpts := options(raftwal.WithMetaStore(r.walMeta), raftwal.WithLogger(newHCLogger(log, "raft-wal", hclog.Warn, r.policy)))
	if cfg.LogSegmentSize > 0 {
		walOpts = append(walOpts, raftwal.WithSegmentSize(cfg.LogSegmentSize))
	}
	wal, err := raftwal.Open(filepath.Join(cfg.Dir, "wal"), walOpts...)
	if err != nil {
		r.walMeta.Close()
		return nil, fmt.Errorf("consensus: open raft log: %w", err)
	}
	r.wal = wal
	elog, err := newEncryptedLog(wal, cfg.EncryptionKey)
	if err != nil {
		r.closeLog()
		return nil, err
	}
	// Recent entries stay in memory: the leader reads them to replicate
	// them (once per follower) and strong reads look at the last ones
	// (readTarget), which would otherwise decrypt them each time.
	if r.logs, err = raft.NewLogCache(logCacheEntries, elog); err != nil {
		r.closeLog()
		return nil, err
	}
	files, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog)
	if err != nil {
		r.closeLog()
		return nil, fmt.Errorf("consensus: snapshot store: %w", err)
	}
	enc, err := newEncryptedSnapshots(files, cfg.EncryptionKey)
	if err != nil {
		r.closeLog()
		return nil, err
	}
	var snaps raft.SnapshotStore = enc
	if cfg.IndexKeys == nil {
		// A node that keeps no index keeps no snapshot's index section
		// either, not even a leader's sealed one (keyless.go).
		snaps = keylessSnapshots{enc}
	}
	if err := r.catchUpFromSnapshot(snaps); err != nil {
		r.closeLog()
		return nil, err
	}
	r.stream = newStreamLayer(cfg.Endpoint, cfg.Advertise, r.policy)
	r.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  r.stream,
		MaxPool: 4,
		Timeout: 10 * time.Second,
		Logger:  hlog,
	})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Self.Region)
	rc.Logger = hlog
	rc.BatchApplyCh = true
	rc.NoSnapshotRestoreOnStart = true // the state is on disk; see catchUpFromSnapshot
	rc.NoLegacyTelemetry = true
	override(&rc.HeartbeatTimeout, cfg.HeartbeatTimeout)
	override(&rc.ElectionTimeout, cfg.ElectionTimeout)
	override(&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout)
	override(&rc.CommitTimeout, cfg.CommitTimeout)
	override(&rc.SnapshotInterval, cfg.SnapshotInterval)
	override(&rc.SnapshotThreshold, cfg.SnapshotThreshold)
	override(&rc.TrailingLogs, cfg.TrailingLogs)
	ra, err := raft.NewRaft(rc, r.fsm, r.logs, wal, snaps, r.trans)
	if err != nil {
		r.trans.Close()
		r.closeLog()
		return nil, fmt.Errorf("consensus: start raft: %w", err)
	}
	r.raft = ra
	r.batcher = newBatcher(r)
	r.registerHandlers()
	r.wg.Add(2)
	go r.leaderLoop()
	go r.batcher.run()
	// A stop is announced within a heartbeat timeout, at least a second:
	// long enough for voters that answer, short for a Close.
	r.announceUp(max(rc.HeartbeatTimeout, time.Second))
	return r, nil
}

// catchUpFromSnapshot restores the newest snapshot into the state if the
// state on disk is older (a state directory lost or restored from backup):
// Raft itself does not restore on start (NoSnapshotRestoreOnStart), since
// the state normally survives restarts and replaying the log after it is
// enough.
func (r *Replica) catchUpFromSnapshot(snaps raft.SnapshotStore) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	meta := list[0]
	if meta.Index <= r.state.Applied() {
		return nil
	}
	_, rc, err := snaps.Open(meta.ID)
	if err != nil {
		return fmt.Errorf("consensus: open snapshot %s: %w", meta.ID, err)
	}
	r.log.Warn("state is behind the newest snapshot; restoring it", "state_index", r.state.Applied(), "snapshot_index", meta.Index)
	return r.fsm.Restore(rc)
}

// State returns the replicated state (local reads).
func (r *Replica) State() *State { return r.state }

// IsLeader reports whether this node leads.
func (r *Replica) IsLeader() bool { return r.raft.State() == raft.Leader }

// Leader returns the leader's region path and address, empty if unknown.
func (r *Replica) Leader() (region, addr string) {
	a, id := r.raft.LeaderWithID()
	return string(id), string(a)
}

// WaitForLeader waits until the cluster has a leader this node knows.
func (r *Replica) WaitForLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if _, addr := r.Leader(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrNoLeader, ctx.Err())
		case <-r.done:
			return ErrClosed
		case <-t.C:
		}
	}
}

// Bootstrap starts a new federation with this node (a province) as its
// only voter, then registers the regions and the first catalog. On a
// restart (Raft state on disk) it does nothing: the other voters may not
// be up yet, and the cluster elects a leader once they are. The exception
// is a bootstrap that stopped before the registry was applied (a crash,
// or no leader in time): this node is then still the only voter, and the
// restart finishes it.
func (r *Replica) Bootstrap(ctx context.Context, regions []Region, catalog *credit.Catalog) error {
	if r.cfg.Self.Role != certs.Province {
		return fmt.Errorf("%w: only a province node starts a federation", ErrForbidden)
	}
	// BootstrapCluster refuses (ErrCantBootstrap) when this node already
	// has Raft state: a restart.
	f := r.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter, ID: raft.ServerID(r.cfg.Self.Region), Address: raft.ServerAddress(r.cfg.Advertise),
	}}})
	if err := f.Error(); errors.Is(err, raft.ErrCantBootstrap) {
		if !r.onlyVoter() {
			return nil // the federation exists and elects without us waiting here
		}
	} else if err != nil {
		return fmt.Errorf("consensus: bootstrap: %w", err)
	}
	if err := r.WaitForLeader(ctx); err != nil {
		return err
	}
	// Every committed entry applied (on a restart, the registry may be in
	// the log and not yet in the state).
	if err := r.await(r.raft.Barrier(0)); err != nil {
		return raftError(err)
	}
	if len(r.state.Regions()) > 0 {
		return nil
	}
	_, err := r.Apply(ctx, CmdFederationInit, certs.Identity{}, FederationInit{Regions: regions, Catalog: catalog})
	return err
}

// onlyVoter reports whether Raft's configuration holds this node alone, as
// BootstrapCluster left it: the registry, once applied, brings the other
// coordinators in as voters.
func (r *Replica) onlyVoter() bool {
	f := r.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	servers := f.Configuration().Servers
	return len(servers) == 1 && servers[0].ID == raft.ServerID(r.cfg.Self.Region)
}

// Apply proposes an operator command (or a federation init) and returns
// its result once applied. On a follower it is forwarded to the leader,
// which stamps this node as proposer; actor is the user this node vouches
// for.
func (r *Replica) Apply(ctx context.Context, t CommandType, actor certs.Identity, body any) (any, error) {
	if r.IsLeader() {
		return r.propose(ctx, t, r.cfg.Self, actor, body)
	}
	raw, err := exchange.Marshal(body)
	if err != nil {
		return nil, err
	}
	var reply applyReply
	err = r.callLeader(ctx, opApply, applyRequest{Type: t, Actor: actor, Body: raw}, &reply)
	if err != nil {
		return nil, err
	}
	return nil, leaderOutcome(reply.Refused, reply.Unknown, reply.NotLeader)
}

// propose hands a command to Raft on the leader and waits for its result.
// A command the FSM would refuse now is refused before it is proposed
// (precheck).
func (r *Replica) propose(ctx context.Context, t CommandType, proposer, actor certs.Identity, body any) (any, error) {
	data, err := EncodeCommand(t, Envelope{Proposer: proposer, Actor: actor, At: time.Now().UTC()}, body)
	if err != nil {
		return nil, err
	}
	cmd, err := DecodeCommand(data)
	if err != nil {
		return nil, err
	}
	if err := r.precheck(ctx, cmd); err != nil {
		return nil, err
	}
	f := r.raft.Apply(data, timeoutOf(ctx, 10*time.Second))
	if err := r.await(f); err != nil {
		return nil, raftError(err)
	}
	res := f.Response()
	if e, ok := res.(error); ok && e != nil {
		return nil, e
	}
	return res, nil
}

// precheck refuses, on the leader, a command that its FSM would refuse if
// it were applied now (FSM.check), so that a refused command never enters
// the log. It first waits until this leader has applied everything
// committed before its term (leaderReady): an older state could refuse a
// command that the entries not applied yet make valid.
func (r *Replica) precheck(ctx context.Context, c Command) error {
	// Raft reports leadership before leaderLoop has made leaderReady: a
	// command proposed right after winning (Bootstrap's init) waits for it.
	var ready chan struct{}
	for {
		r.mu.Lock()
		ready = r.leaderReady
		r.mu.Unlock()
		if ready != nil {
			break
		}
		if !r.IsLeader() {
			return fmt.Errorf("%w: this node is not the leader", ErrNoLeader)
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("%w: leader not ready: %v", ErrNoLeader, ctx.Err())
		case <-r.done:
			return ErrClosed
		}
	}
	select {
	case <-ready:
	case <-ctx.Done():
		return fmt.Errorf("%w: leader not ready: %v", ErrNoLeader, ctx.Err())
	case <-r.done:
		return ErrClosed
	}
	return r.fsm.check(c)
}

// await waits for a raft future, or until the replica closes, whichever
// comes first. hashicorp/raft (v1.8) leaves an Apply or configuration
// change future unanswered for good if it shuts down while the entry sits
// in the FSM's queue (runFSM returns without draining fsmMutateCh, and those
// futures have no ShutdownCh), and a loop of ours blocked on one hung Close
// (seen once in the cluster tests under heavy load). On close await answers
// raft.ErrRaftShutdown, which raftError maps to "outcome unknown, closed";
// the goroutine left behind ends if raft ever answers.
func (r *Replica) await(f raft.Future) error {
	res := make(chan error, 1)
	go func() { res <- f.Error() }()
	select {
	case err := <-res:
		return err
	case <-r.done:
		select {
		case err := <-res: // answered after all
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}

// raftError maps hashicorp/raft's errors onto ours.
func raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrNoLeader, err)
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		// The future may belong to a command already in the log.
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrClosed)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %v", ErrNoLeader, err)
	}
	return fmt.Errorf("consensus: %w", err)
}

func timeoutOf(ctx context.Context, max time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < max {
			if d <= 0 {
				return time.Millisecond
			}
			return d
		}
	}
	return max
}

// SubmitIndex hands this district's index updates to the leader and
// returns once they are applied (or refused).
func (r *Replica) SubmitIndex(ctx context.Context, updates []IndexUpdate) error {
	if len(updates) == 0 {
		return nil
	}
	if r.IsLeader() {
		return r.batcher.submit(ctx, r.cfg.Self, updates)
	}
	var reply indexReply
	if err := r.callLeader(ctx, opIndex, indexRequest{Updates: updates}, &reply); err != nil {
		return err
	}
	return leaderOutcome(reply.Refused, reply.Unknown, reply.NotLeader)
}

// Lookup reads a pseudonym's index entries. With strong set, the read is
// linearizable (ReadIndex through the leader); otherwise it is the local
// replica's view, whose applied index is returned so callers know its
// staleness.
//
// A node that keeps no index (a district) answers ErrNoIndex.
func (r *Replica) Lookup(ctx context.Context, p credit.Pseudonym, strong bool) ([]IndexEntry, uint64, error) {
	if !r.state.HoldsIndex() {
		return nil, 0, ErrNoIndex
	}
	if strong {
		if err := r.ReadBarrier(ctx); err != nil {
			return nil, 0, err
		}
	}
	return r.state.Lookup(p)
}

// ReadBarrier returns once this replica has applied everything committed
// when it was called: the leader's commit index, confirmed by a quorum
// (VerifyLeader), never a lease, and reduced to the last entry at or below
// it that the FSM sees (readTarget).
func (r *Replica) ReadBarrier(ctx context.Context) error {
	var index uint64
	if r.IsLeader() {
		var err error
		if index, err = r.leaderReadIndex(ctx); err != nil {
			return err
		}
	} else {
		var reply readIndexReply
		if err := r.callLeader(ctx, opReadIndex, struct{}{}, &reply); err != nil {
			return err
		}
		if reply.NotLeader {
			return fmt.Errorf("%w: the node asked is not the leader any more", ErrNoLeader)
		}
		index = reply.Index
	}
	return r.waitApplied(ctx, index)
}

// leaderReadIndex is the leader's half of a strong read.
func (r *Replica) leaderReadIndex(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	ready := r.leaderReady
	r.mu.Unlock()
	if ready == nil {
		return 0, fmt.Errorf("%w: this node is not the leader", ErrNoLeader)
	}
	select {
	case <-ready:
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: leader not ready: %v", ErrStale, ctx.Err())
	}
	index := r.raft.CommitIndex()
	if err := r.await(r.raft.VerifyLeader()); err != nil {
		return 0, raftError(err)
	}
	return r.readTarget(index), nil
}

// readTarget returns the index a strong read waits for, given the commit
// index recorded at its arrival: the last entry at or below it that the
// FSM sees. Raft hands the FSM commands and configuration changes only;
// its own entries — the no-op a new leader appends, the barrier it then
// commits (confirmLeadership), any later barrier — never reach it, so the
// FSM's applied index, which strong reads wait on, never reaches them
// either: on an idle federation a strong read right after an election
// waited for the commit index of the new leader's barrier until the next
// write. Entries the FSM does not see change no state, so once every entry
// up to the last one it sees is applied, the state is the state at the
// commit index: the read is as linearizable as before, and completes.
// Raft's own AppliedIndex would not do: it counts entries handed to the
// FSM, not applied by it.
//
// The last entries are in the log cache, so this costs a lookup or two;
// an entry below the start of the log (compacted into a snapshot) is
// covered by this leader's applied state, whose applied index — an entry
// the FSM saw, at least as recent — is the target then.
func (r *Replica) readTarget(commit uint64) uint64 {
	for i := commit; i > 0; i-- {
		var l raft.Log
		if err := r.logs.GetLog(i, &l); errors.Is(err, raft.ErrLogNotFound) {
			return r.state.Applied()
		} else if err != nil {
			// Cannot tell: wait for the commit index itself, as before.
			r.log.Warn("strong read: cannot read the log at the commit index", "index", i, "error", err)
			return commit
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return i
		}
	}
	return 0
}

func (r *Replica) waitApplied(ctx context.Context, index uint64) error {
	ch, stop := r.state.applied.wait(index)
	defer stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: applied %d, need %d", ErrStale, r.state.Applied(), index)
	case <-r.done:
		return ErrClosed
	}
}

// callLeader sends a request to the current leader over the exchange.
func (r *Replica) callLeader(ctx context.Context, op string, req, resp any) error {
	region, addr := r.Leader()
	if addr == "" {
		r.metrics.forwarded.WithLabelValues(op, "no_leader").Inc()
		return ErrNoLeader
	}
	peer := exchange.Peer{Name: region, Addr: addr}
	if reg, ok := r.state.Region(region); ok {
		id := reg.Identity(r.cfg.Self.Federation)
		peer.Identity = &id
	}
	err := r.cfg.Endpoint.Call(ctx, peer, op, exchange.Meta{}, req, resp)
	r.metrics.forwarded.WithLabelValues(op, string(exchange.StatusOf(err))).Inc()
	if err != nil {
		return fromWire(err)
	}
	return nil
}

// onApplied runs after each applied batch and restore (on the FSM
// goroutine) with the effects of the commands applied (commands.go).
func (r *Replica) onApplied(effects effect) {
	if effects&registryChanged != 0 {
		select {
		case r.changed <- struct{}{}:
		default:
		}
	}
}

// Raft returns raft's own statistics (for GET /v1/federation).
func (r *Replica) Stats() map[string]string { return r.raft.Stats() }

// Servers returns Raft's current configuration.
func (r *Replica) Servers() ([]raft.Server, error) {
	f := r.raft.GetConfiguration()
	if err := r.await(f); err != nil {
		return nil, raftError(err)
	}
	return f.Configuration().Servers, nil
}

// Close leaves the cluster's activity (not its membership): it stops the
// loops, shuts Raft down and closes the log. The Badger database and the
// endpoint belong to the caller.
func (r *Replica) Close() error {
	var err error
	r.closeOnce.Do(func() {
		// Tell the voters first, while this node still answers them, so
		// that they log its going away as what it is (presence.go).
		r.announceStop()
		r.policy.closing.Store(true)
		close(r.done)
		r.stream.stop() // abort dials to peers that are gone
		if e := r.raft.Shutdown().Error(); e != nil {
			err = e
		}
		r.wg.Wait()
		if e := r.trans.Close(); e != nil && err == nil {
			err = e
		}
		// Raft answers heartbeats on the transport's conn handlers, which
		// outlive Shutdown and write the term to the log's stable store:
		// close the log only once they have returned.
		if !r.stream.closeInbound(5 * time.Second) {
			r.log.Warn("raft conn handlers still running at close")
		}
		if e := r.closeLog(); e != nil && err == nil {
			err = e
		}
	})
	return err
}

func (r *Replica) closeLog() error {
	err := r.wal.Close()
	if e := r.walMeta.Close(); e != nil && err == nil {
		err = e
	}
	return err
}

// logCacheEntries is how many recent log entries the log cache keeps in
// memory: at most ~15 MiB of full index batches (4,096 updates, ~200 KiB
// each).
const logCacheEntries = 64

// options returns its arguments as a slice of their (possibly unexported)
// type, so that optional ones can be appended.
func options[O any](opts ...O) []O { return opts }

// override sets *dst to v unless v is zero (keep raft's default).
func override[T time.Duration | uint64](dst *T, v T) {
	if v > 0 {
		*dst = v
	}
}
