package audit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"credfed/consensus"
	"credfed/internal/wait"
	"credfed/jobs"
	"credfed/storage"
)

// ledger stands in for the replica: it keeps the anchors it is handed,
// refuses a head below the newest as the FSM does, and can be without a
// leader.
type ledger struct {
	mu         sync.Mutex
	node       string
	anchors    []consensus.AuditAnchor
	leaderless bool
	applied    uint64
}

func (l *ledger) SubmitAnchor(ctx context.Context, seq uint64, hash [32]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leaderless {
		return consensus.ErrNoLeader
	}
	if n := len(l.anchors); n > 0 && seq < l.anchors[n-1].Seq {
		return &consensus.RefusedError{Reason: consensus.ErrConflict, Message: "rewound"}
	}
	l.anchors = append(l.anchors, consensus.AuditAnchor{Node: l.node, Seq: seq, Hash: hash, At: time.Now().UTC()})
	l.applied++
	return nil
}

func (l *ledger) AuditAnchors(node string) ([]consensus.AuditAnchor, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if node != l.node {
		return nil, nil
	}
	return append([]consensus.AuditAnchor(nil), l.anchors...), nil
}

func (l *ledger) ReadBarrier(ctx context.Context) error {
	l.mu.Lock()
	leaderless := l.leaderless
	l.mu.Unlock()
	if leaderless {
		<-ctx.Done()
		return consensus.ErrNoLeader
	}
	return nil
}

func (l *ledger) Applied() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.applied
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.anchors)
}

func openLog(t *testing.T) *storage.DB {
	t.Helper()
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func appendEntries(t *testing.T, l Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := l.Append(storage.AuditEntry{Operation: "lookup.answer", Decision: storage.DecisionAllowed}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAnchorerAnchorsEveryNEntriesOrT: the head is due after Entries
// entries at once, or after Interval once it moved, never when it did not
// move; the job, woken by the appends, anchors it; Stop anchors what is
// left.
func TestAnchorerAnchorsEveryNEntriesOrT(t *testing.T) {
	db := openLog(t)
	led := &ledger{node: "zhejiang/quzhou/kecheng"}
	a := NewAnchorer(AnchorConfig{Node: led.node, Chain: db.Audit(), Anchors: led, Entries: 5, Interval: time.Hour})
	if err := a.Check(ctxOf(t)); err != nil {
		t.Fatal(err)
	}
	log := a.Watch(db.Audit())
	now := time.Now()
	if a.due(now) {
		t.Fatal("an empty log is due")
	}
	appendEntries(t, log, 1)
	if !a.due(now) {
		t.Fatal("a log never anchored is not due") // its last anchor is at the zero time
	}
	if _, err := a.anchor(ctxOf(t)); err != nil || led.count() != 1 {
		t.Fatalf("anchor: %v, %d anchors", err, led.count())
	}
	if a.due(time.Now().Add(2 * time.Hour)) {
		t.Fatal("a head that did not move is due")
	}
	appendEntries(t, log, 1)
	if a.due(time.Now().Add(59*time.Minute)) || !a.due(time.Now().Add(61*time.Minute)) {
		t.Fatal("one entry is not due before the interval, or is after it")
	}
	r := jobs.NewRunner(nil, nil, nil)
	t.Cleanup(r.Stop)
	if err := a.Start(r); err != nil {
		t.Fatal(err)
	}
	appendEntries(t, log, 4) // 5 since the anchor: the job is woken
	wait.Until(t, 10*time.Second, "the job to anchor the 5th entry", func() bool { return led.count() == 2 })
	if got, _ := led.AuditAnchors(led.node); got[1].Seq != 6 {
		t.Fatalf("anchored %d, want 6", got[1].Seq)
	}
	r.Stop()
	appendEntries(t, log, 2)
	if err := a.Stop(ctxOf(t)); err != nil || led.count() != 3 {
		t.Fatalf("stop: %v, %d anchors", err, led.count())
	}
	if err := a.Stop(ctxOf(t)); err != nil || led.count() != 3 {
		t.Fatalf("a second stop with the head unmoved: %v, %d anchors", err, led.count())
	}
}

// TestAnchorerCheckRefusesARewoundLog: a log rewound below its anchors is
// refused with the first bad entry, the kind and the node's region in
// the message; without a leader the check uses the anchors it holds;
// Stop gives up soon without a leader.
func TestAnchorerCheckRefusesARewoundLog(t *testing.T) {
	dir := t.TempDir()
	db, err := storage.Open(storage.Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	led := &ledger{node: "zhejiang/quzhou/kecheng"}
	a := NewAnchorer(AnchorConfig{Node: led.node, Chain: db.Audit(), Anchors: led})
	appendEntries(t, a.Watch(db.Audit()), 3)
	if err := a.Stop(ctxOf(t)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// The same node started on an empty log: its anchors say entry 3.
	fresh := openLog(t)
	b := NewAnchorer(AnchorConfig{Node: led.node, Chain: fresh.Audit(), Anchors: led})
	err = b.Check(ctxOf(t))
	var me *storage.AuditMismatchError
	if !errors.Is(err, ErrAnchorMismatch) || !errors.As(err, &me) || me.Kind != storage.TamperTruncated || me.Seq != 1 {
		t.Fatalf("check of an emptied log: %v", err)
	}
	for _, want := range []string{led.node, "(truncated): first bad entry 1", "refuses to start"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
	// Without a leader: checked against what the replica holds, within
	// the deadline.
	led.leaderless = true
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := b.Check(ctx); !errors.Is(err, ErrAnchorMismatch) {
		t.Fatalf("check without a leader: %v", err)
	}
	appendEntries(t, b.Watch(fresh.Audit()), 5)
	start := time.Now()
	if err := b.Stop(ctxOf(t)); !errors.Is(err, consensus.ErrNoLeader) || time.Since(start) > 5*time.Second {
		t.Fatalf("stop without a leader: %v after %v", err, time.Since(start))
	}
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
