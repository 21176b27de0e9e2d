package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/consensus"
	"credfed/jobs"
	"credfed/storage"
)

// Anchoring (docs/design.md, "No answer before its audit entry is
// durable"): a node anchors the head of its audit chain in the Raft log
// every DefaultAnchorEntries entries or DefaultAnchorInterval, whichever
// comes first, when the head moved, and once more when it stops cleanly;
// at start it checks its chain against the anchors the federation holds
// and refuses to start if they do not match. The entries after the newest
// anchor are the window a truncation can hide in: at most Entries of them
// (and those appended in the moments it takes to anchor: the job looks at
// the head every second, is woken when Entries are reached, and anchors
// at most four times a second), none older than Interval (and that second),
// while the leader can be reached — without a leader the window grows
// until one is back; on a clean stop, only the entries written between
// the stop's anchor and the moment the node stops answering the exchange.
const (
	// AnchorJobName is the anchoring job's name in the job runner.
	AnchorJobName = "audit-anchor"
	// DefaultAnchorEntries and DefaultAnchorInterval are N and T.
	DefaultAnchorEntries  = 1000
	DefaultAnchorInterval = time.Minute
	// anchorPoll is the longest time between two looks at the head.
	anchorPoll = time.Second
	// minAnchorGap is the shortest time between two anchors.
	minAnchorGap = 250 * time.Millisecond
	// anchorTimeout bounds one anchor (the leader's answer and this
	// replica's apply).
	anchorTimeout = 10 * time.Second
)

// Chain is the node's audit log as the anchorer reads it
// (storage.AuditLog).
type Chain interface {
	// Head is the last entry's sequence number and hash.
	Head() (seq uint64, hash [32]byte)
	// CheckAnchorsReport returns, for the chain checked against anchors,
	// nil or a *storage.AuditMismatchError, and the restore that let
	// anchors past the chain go unchecked.
	CheckAnchorsReport(anchors []storage.AuditAnchor) (storage.AnchorReport, error)
	// SettleRestore settles the pending restore marker (the first start
	// after a restore), with the newest anchor then.
	SettleRestore(lostThrough uint64, at time.Time) (storage.RestoreMarker, bool, error)
}

// Anchors is where the heads go (the node's Raft replica).
type Anchors interface {
	// SubmitAnchor anchors this node's head through the leader and
	// returns once this replica holds the anchor (or it was refused:
	// consensus.ErrConflict for a head below the newest anchor).
	SubmitAnchor(ctx context.Context, seq uint64, hash [32]byte) error
	// AuditAnchors returns the anchors of node's log this replica holds,
	// oldest first.
	AuditAnchors(node string) ([]consensus.AuditAnchor, error)
	// ReadBarrier returns once this replica has applied everything the
	// leader had committed when it was called.
	ReadBarrier(ctx context.Context) error
	// Applied is the last log index this replica applied.
	Applied() uint64
}

// AnchorConfig configures an Anchorer. Zero values take the defaults.
type AnchorConfig struct {
	// Node is this node's region path.
	Node    string
	Chain   Chain
	Anchors Anchors
	// Entries (N, default 1000) and Interval (T, default 1 minute): the
	// head is anchored once N entries were appended since the last
	// anchor, or T has passed since it and the head moved.
	Entries    int
	Interval   time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Anchorer anchors a node's audit head in Raft and checks the chain
// against the anchors at start.
type Anchorer struct {
	cfg  AnchorConfig
	log  *slog.Logger
	wake atomic.Pointer[func()]

	mu       sync.Mutex // serializes anchoring; guards last and lastAt
	last     atomic.Uint64
	lastHash [32]byte
	lastAt   time.Time
	// floor is set by Check when the chain was accepted because of a
	// restore: the newest anchor, of entries the restore lost. A head at
	// or below it is not anchored (the federation would refuse it as a
	// rewound log); the job waits until the chain passes it.
	floor atomic.Uint64
	// restored is the restore Check accepted the chain because of (nil:
	// none), and settled whether that check settled it.
	restored *storage.RestoreMarker
	settled  bool

	anchored *prometheus.CounterVec
}

// NewAnchorer returns an anchorer; Check it before the node serves, then
// Start it on the node's job runner, and Stop it before Raft closes.
func NewAnchorer(cfg AnchorConfig) *Anchorer {
	if cfg.Entries <= 0 {
		cfg.Entries = DefaultAnchorEntries
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultAnchorInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Anchorer{cfg: cfg, log: cfg.Logger.With("component", "audit-anchor"),
		anchored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_audit_anchors_total", Help: "Heads of this node's audit log anchored in Raft, by outcome (anchored, failed, refused).",
		}, []string{"outcome"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(a.anchored, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "credfed_audit_unanchored_entries", Help: "Audit entries after the newest anchor of this node's head: the window a truncation could hide in.",
		}, func() float64 {
			seq, _ := cfg.Chain.Head()
			if last := a.last.Load(); seq > last {
				return float64(seq - last)
			}
			return 0
		}))
	}
	return a
}

// ErrAnchorMismatch is matched (errors.Is) by the start check's refusal;
// errors.As finds the *storage.AuditMismatchError with the first bad
// entry and the kind of tampering.
var ErrAnchorMismatch = errors.New("audit: the audit log does not match its anchors in Raft")

// Check checks the node's chain against its anchors, once the replica has
// caught up with the leader (ReadBarrier within ctx); if it cannot, against
// the anchors it holds, saying so in the log. A chain that does not match
// is refused with an error wrapping ErrAnchorMismatch and the
// *storage.AuditMismatchError.
//
// After a restore (storage.Restore) the chain may end before the newest
// anchors: the entries after the backup were lost. Check accepts that only
// as storage.AuditLog.CheckAnchorsReport does — on the store's restore
// marker — and says so in the log at every start it matters. The first
// start after a restore must reach the leader (ErrRestoreNeedsLeader
// otherwise): it settles the marker with the newest anchor the federation
// holds, which later starts rely on.
func (a *Anchorer) Check(ctx context.Context) error {
	caughtUp := a.catchUp(ctx)
	anchors, err := a.cfg.Anchors.AuditAnchors(a.cfg.Node)
	if err != nil {
		return fmt.Errorf("audit: read the anchors of %s: %w", a.cfg.Node, err)
	}
	rep, err := a.cfg.Chain.CheckAnchorsReport(toStorage(anchors))
	if err != nil {
		var me *storage.AuditMismatchError
		if !errors.As(err, &me) {
			return fmt.Errorf("audit: check the audit log against its anchors: %w", err)
		}
		a.log.Error("the audit log does not match its anchors in Raft; refusing to start",
			"first_bad_entry", me.Seq, "kind", string(me.Kind), "anchors", len(anchors), "caught_up", caughtUp)
		return &mismatch{node: a.cfg.Node, err: me}
	}
	seq, _ := a.cfg.Chain.Head()
	if rep.Restore != nil {
		if err := a.acceptRestore(rep, seq, caughtUp); err != nil {
			return err
		}
	}
	attrs := []any{"head", seq, "anchors", len(anchors)}
	if len(anchors) > 0 {
		newest := anchors[len(anchors)-1]
		a.mu.Lock()
		a.last.Store(newest.Seq)
		a.lastHash, a.lastAt = newest.Hash, newest.At
		a.mu.Unlock()
		attrs = append(attrs, "newest_anchor", newest.Seq)
	}
	if caughtUp {
		a.log.Info("audit log checked against its anchors in Raft", attrs...)
	} else {
		a.log.Warn("audit log checked against the anchors this replica holds: it could not catch up with the Raft leader in time, so anchors made since it last applied the log were not checked", attrs...)
	}
	return nil
}

// ErrRestoreNeedsLeader: the first start after a restore could not reach
// the Raft leader, so it cannot learn which anchors are of the entries the
// restore lost. The node refuses to start; start it again once the
// federation's leader is reachable.
var ErrRestoreNeedsLeader = errors.New("audit: the first start after a restore must reach the Raft leader to check the restored audit log against the federation's anchors; start the node again once the leader is reachable")

// acceptRestore settles a pending restore and logs why the chain was
// accepted.
func (a *Anchorer) acceptRestore(rep storage.AnchorReport, head uint64, caughtUp bool) error {
	m := *rep.Restore
	if rep.Pending {
		if !caughtUp {
			a.log.Error("this store was restored from a backup, and the start could not reach the Raft leader to check it; refusing to start",
				"backup_taken", m.TakenAt.UTC().Format(time.RFC3339))
			return ErrRestoreNeedsLeader
		}
		settled, ok, err := a.cfg.Chain.SettleRestore(rep.Newest, time.Now())
		if err != nil {
			return fmt.Errorf("audit: settle the restore: %w", err)
		}
		if ok {
			m = settled
			a.settled = true
		}
	}
	a.restored = &m
	if m.LostThrough > head {
		a.floor.Store(m.LostThrough)
	}
	attrs := []any{"backup_taken", m.TakenAt.UTC().Format(time.RFC3339), "restored", m.RestoredAt.UTC().Format(time.RFC3339),
		"backup_head", m.AuditSeq, "head", head, "lost_anchors", rep.Skipped}
	taken := m.TakenAt.UTC().Format(time.RFC3339)
	switch {
	case rep.Skipped > 0 && head <= m.LostThrough:
		attrs = append(attrs, "lost_through", m.LostThrough)
		a.log.Warn(fmt.Sprintf("the audit log ends before its anchors in Raft: accepted because this store was restored from the backup of %s: "+
			"entries %d to %d were lost with the restore, and their anchors are not checked; the head is anchored again once the log passes entry %d",
			taken, m.AuditSeq+1, m.LostThrough, m.LostThrough), attrs...)
	case rep.Skipped > 0:
		attrs = append(attrs, "lost_through", m.LostThrough)
		a.log.Info(fmt.Sprintf("this store was restored from the backup of %s: the anchors in Raft of entries %d to %d, lost with the restore, are not checked",
			taken, m.AuditSeq+1, m.LostThrough), attrs...)
	case rep.Pending:
		a.log.Info(fmt.Sprintf("this store was restored from the backup of %s; its audit log reaches every anchor in Raft", taken), attrs...)
	}
	return nil
}

// Restored returns the restore the start check accepted the chain because
// of, and whether that check settled it (the first start after the
// restore): the node then records the restore in its audit log.
func (a *Anchorer) Restored() (storage.RestoreMarker, bool, bool) {
	if a.restored == nil {
		return storage.RestoreMarker{}, false, false
	}
	return *a.restored, a.settled, true
}

// catchUp brings the replica up to the leader's commit index, trying
// again while no leader is known (a node that just opened its replica
// learns the leader from its first heartbeat), until ctx ends. A node
// with nothing at all yet — an empty audit log and a replica that applied
// nothing: a new node, or the province founding the federation — has
// nothing to check and does not wait.
func (a *Anchorer) catchUp(ctx context.Context) bool {
	if seq, _ := a.cfg.Chain.Head(); seq == 0 && a.cfg.Anchors.Applied() == 0 {
		return true
	}
	for {
		err := a.cfg.Anchors.ReadBarrier(ctx)
		if err == nil {
			return true
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// mismatch is the start check's refusal.
type mismatch struct {
	node string
	err  *storage.AuditMismatchError
}

func (m *mismatch) Error() string {
	return fmt.Sprintf("the audit log of %s does not match its anchors in Raft (%s): first bad entry %d: %s. "+
		"The node refuses to start on an audit log that was rewritten; keep its data directory as evidence "+
		"(`credfed audit verify --config FILE` shows the same finding offline)", m.node, m.err.Kind, m.err.Seq, m.err.Problem)
}

func (m *mismatch) Unwrap() []error { return []error{ErrAnchorMismatch, m.err} }

func toStorage(anchors []consensus.AuditAnchor) []storage.AuditAnchor {
	out := make([]storage.AuditAnchor, len(anchors))
	for i, a := range anchors {
		out[i] = storage.AuditAnchor{Seq: a.Seq, Hash: a.Hash, At: a.At}
	}
	return out
}

// Watch returns l, which wakes the anchoring job once an append brings
// Entries entries since the last anchor (the job also looks every second).
func (a *Anchorer) Watch(l Log) Log { return watched{l, a} }

type watched struct {
	Log
	a *Anchorer
}

func (w watched) Append(entries ...storage.AuditEntry) ([]storage.AuditEntry, error) {
	return w.appended(appendTo(w.Log, false, entries))
}

func (w watched) AppendDeferred(entries ...storage.AuditEntry) ([]storage.AuditEntry, error) {
	return w.appended(appendTo(w.Log, true, entries))
}

// appended wakes the anchoring job when an append reached its count.
func (w watched) appended(out []storage.AuditEntry, err error) ([]storage.AuditEntry, error) {
	if err == nil && len(out) > 0 && out[len(out)-1].Seq >= w.a.last.Load()+uint64(w.a.cfg.Entries) {
		if wake := w.a.wake.Load(); wake != nil {
			(*wake)()
		}
	}
	return out, err
}

// Start runs the anchoring job on r.
func (a *Anchorer) Start(r *jobs.Runner) error {
	wake := func() { r.Wake(AnchorJobName) }
	a.wake.Store(&wake)
	return r.Start(a.job())
}

func (a *Anchorer) job() jobs.Job {
	poll := min(a.cfg.Interval, anchorPoll)
	return jobs.Job{Name: AnchorJobName, Interval: poll, Timeout: anchorTimeout,
		RetryMin: poll, RetryMax: 30 * time.Second, Patience: 30 * time.Second,
		Run: func(ctx context.Context, p *jobs.Progress) error {
			if !a.due(time.Now()) {
				return nil
			}
			seq, err := a.anchor(ctx)
			if err == nil {
				p.Set("anchored_seq", int64(seq))
			}
			return err
		}}
}

// due reports whether the head should be anchored now: it moved, and
// Entries entries were appended or Interval passed since the last anchor,
// which is at least minAnchorGap old (consensus.anchor takes four a
// second from a node).
func (a *Anchorer) due(now time.Time) bool {
	seq, _ := a.cfg.Chain.Head()
	last := a.last.Load()
	if seq == 0 || seq == last || seq <= a.floor.Load() {
		return false
	}
	a.mu.Lock()
	since := now.Sub(a.lastAt)
	a.mu.Unlock()
	switch {
	case since < minAnchorGap:
		return false
	case seq >= last+uint64(a.cfg.Entries):
		return true
	}
	return since >= a.cfg.Interval
}

// anchor anchors the head if it moved since the last anchor and returns
// the seq anchored (0 if nothing was to anchor).
func (a *Anchorer) anchor(ctx context.Context) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	seq, hash := a.cfg.Chain.Head()
	last := a.last.Load()
	switch {
	case seq == 0 || (seq == last && hash == a.lastHash):
		return 0, nil
	case seq <= a.floor.Load():
		// After a restore: entries up to the floor were anchored by the
		// lost log; this one's are anchored once it passes them.
		return 0, nil
	case seq < last:
		a.anchored.WithLabelValues("refused").Inc()
		a.log.Error("the audit head is below its newest anchor: the log was rewound while the node ran", "head", seq, "newest_anchor", last)
		return 0, fmt.Errorf("audit: the head (entry %d) is below the newest anchor (entry %d)", seq, last)
	}
	ctx, cancel := context.WithTimeout(ctx, anchorTimeout)
	defer cancel()
	if err := a.cfg.Anchors.SubmitAnchor(ctx, seq, hash); err != nil {
		if errors.Is(err, consensus.ErrConflict) {
			a.anchored.WithLabelValues("refused").Inc()
			a.log.Error("the federation refused this node's audit head: it holds a later or different anchor, so the log was rewound or replaced",
				"head", seq, "error", err)
		} else {
			a.anchored.WithLabelValues("failed").Inc()
		}
		return 0, fmt.Errorf("audit: anchor the head (entry %d): %w", seq, err)
	}
	a.anchored.WithLabelValues("anchored").Inc()
	a.last.Store(seq)
	a.lastHash, a.lastAt = hash, time.Now()
	return seq, nil
}

// Stop anchors the head once more (if it moved) before the node closes
// Raft, retrying while the outcome is unknown, and for a second while
// there is no leader (an election; a federation whose other voters
// stopped first has none to give), until ctx ends. Entries written after
// it (a lookup the exchange still answers) are in the next start's
// window.
func (a *Anchorer) Stop(ctx context.Context) error {
	var noLeaderSince time.Time
	for {
		seq, err := a.anchor(ctx)
		if err == nil {
			if seq > 0 {
				a.log.Info("audit head anchored at stop", "head", seq)
			}
			return nil
		}
		switch {
		case errors.Is(err, consensus.ErrOutcomeUnknown), errors.Is(err, consensus.ErrStale):
		case errors.Is(err, consensus.ErrNoLeader):
			if noLeaderSince.IsZero() {
				noLeaderSince = time.Now()
			} else if time.Since(noLeaderSince) > stopNoLeaderGrace {
				return err
			}
		default:
			return err
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// stopNoLeaderGrace is how long Stop waits for a leader.
const stopNoLeaderGrace = time.Second
