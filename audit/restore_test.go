package audit

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"credfed/internal/testlog"
	"credfed/storage"
)

// restoredLog is a store restored from a backup of a log of 4 entries,
// and a ledger holding the anchors of the log it was taken from, which
// went on to entry 9.
func restoredLog(t *testing.T) (*storage.DB, *ledger) {
	t.Helper()
	key := bytes.Repeat([]byte{7}, 32)
	const node = "zhejiang/quzhou/kecheng"
	old, err := storage.Open(storage.Options{Dir: t.TempDir(), EncryptionKey: key, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	led := &ledger{node: node}
	a := NewAnchorer(AnchorConfig{Node: node, Chain: old.Audit(), Anchors: led})
	appendEntries(t, a.Watch(old.Audit()), 4)
	if err := a.Stop(ctxOf(t)); err != nil {
		t.Fatal(err)
	}
	var file bytes.Buffer
	if _, err := old.WriteBackup(context.Background(), &file, storage.BackupOptions{Key: key, Federation: "demo", Region: node}); err != nil {
		t.Fatal(err)
	}
	appendEntries(t, old.Audit(), 5)
	if err := a.Stop(ctxOf(t)); err != nil { // anchors entry 9
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "db")
	if _, err := storage.Restore(storage.RestoreOptions{From: &file, Dir: dir, Key: key, Federation: "demo", Region: node}); err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(storage.Options{Dir: dir, EncryptionKey: key, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, led
}

// TestAnchorerAcceptsARestoredLogAndWaitsToAnchorPastTheLostEntries: the
// restored log ends at entry 4, the federation's newest anchor is entry
// 9. The start check accepts it because of the restore, says so, and
// settles the marker; the head is not anchored (the federation would take
// it for a rewound log) until the log passes entry 9, then it is.
func TestAnchorerAcceptsARestoredLogAndWaitsToAnchorPastTheLostEntries(t *testing.T) {
	db, led := restoredLog(t)
	logger, logs := testlog.Logger(slog.LevelInfo)
	a := NewAnchorer(AnchorConfig{Node: led.node, Chain: db.Audit(), Anchors: led, Logger: logger})
	if err := a.Check(ctxOf(t)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"accepted because this store was restored from the backup of", "entries 5 to 9 were lost with the restore"} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("the log does not say %q:\n%s", want, logs)
		}
	}
	m, settled, ok := a.Restored()
	if !ok || !settled || m.LostThrough != 9 || m.AuditSeq != 4 {
		t.Fatalf("Restored() = %+v %v %v", m, settled, ok)
	}
	anchored := led.count()
	appendEntries(t, a.Watch(db.Audit()), 5) // head 9: not past the lost entries
	if seq, err := a.anchor(ctxOf(t)); err != nil || seq != 0 || a.due(time.Now().Add(time.Hour)) || led.count() != anchored {
		t.Fatalf("head 9 after the restore: anchored %d (%v), %d anchors", seq, err, led.count())
	}
	if err := a.Stop(ctxOf(t)); err != nil {
		t.Fatalf("stop at head 9: %v", err)
	}
	appendEntries(t, a.Watch(db.Audit()), 1)
	if seq, err := a.anchor(ctxOf(t)); err != nil || seq != 10 {
		t.Fatalf("head 10: anchored %d, %v", seq, err)
	}
	// A later start: the marker is settled, the lost anchors are skipped
	// and the new one is checked.
	b := NewAnchorer(AnchorConfig{Node: led.node, Chain: db.Audit(), Anchors: led})
	if err := b.Check(ctxOf(t)); err != nil {
		t.Fatalf("a later start: %v", err)
	}
	if _, settled, ok := b.Restored(); !ok || settled {
		t.Fatalf("a later start settled again (%v) or saw no restore (%v)", settled, ok)
	}
}

// TestAnchorerRefusesTheFirstStartAfterARestoreWithoutALeader: without
// the leader the start cannot tell which anchors the restore lost.
func TestAnchorerRefusesTheFirstStartAfterARestoreWithoutALeader(t *testing.T) {
	db, led := restoredLog(t)
	led.leaderless = true
	a := NewAnchorer(AnchorConfig{Node: led.node, Chain: db.Audit(), Anchors: led})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := a.Check(ctx); !errors.Is(err, ErrRestoreNeedsLeader) {
		t.Fatalf("first start after a restore without a leader: %v", err)
	}
	if ms, err := db.Restores(); err != nil || len(ms) != 1 || ms[0].Settled() {
		t.Fatalf("the marker after a refused start: %+v, %v", ms, err)
	}
}
