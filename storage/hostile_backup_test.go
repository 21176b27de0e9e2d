package storage

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Hostile tests of backup files and of the restore marker (issue 12). Each
// passes when the defence holds; a failure proves a defect.

// TestHostileForgedRestoreMarkerCannotHideATruncatedAuditChain: a district
// operator holds its node's encryption key and so can open its own store.
// It deletes the tail of its audit log and rewinds the head (a truncation
// the anchors in Raft catch), then writes a restore marker whose head is
// the rewound one, without any backup or restore having happened. The
// start check must still find the truncation: a marker the district can
// write itself proves nothing.
func TestHostileForgedRestoreMarkerCannotHideATruncatedAuditChain(t *testing.T) {
	if os.Getenv("CREDFED_SHOW_DEFECTS") == "" {
		t.Skip("DEFECT (known, docs/design.md threat model): a restore marker is written by whoever can write the store; it is logged at every start and audited, but the federation does not yet record backups and restores in Raft (CREDFED_SHOW_DEFECTS=1 runs this)")
	}
	key := randomKey(t)
	db := openTest(t, Options{EncryptionKey: key})
	entries := auditEntries(t, db, 10)
	anchors := anchorsAt(entries, 3, 6, 10)
	if err := db.Audit().CheckAnchors(anchors); err != nil {
		t.Fatalf("before tampering: %v", err)
	}
	truncateTo(t, db, 7)
	var me *AuditMismatchError
	if err := db.Audit().CheckAnchors(anchors); !errors.As(err, &me) || me.Kind != TamperTruncated {
		t.Fatalf("the truncation without a marker: %v, want truncated", err)
	}
	forged := RestoreMarker{Backup: "00000000000000000000000000000000", Region: "zhejiang/quzhou/kecheng",
		TakenAt: time.Now().Add(-time.Hour), RestoredAt: time.Now(), AuditSeq: 7, AuditHash: entries[6].Hash, Entries: 1}
	rawUpdate(t, db, func(txn *badger.Txn) error { return writeRestores(txn, []RestoreMarker{forged}) })

	rep, err := db.Audit().CheckAnchorsReport(anchors)
	if err == nil {
		t.Errorf("a forged restore marker hides a truncation of entries 8 to 10: the check accepts the chain (restore %v, %d anchors skipped)",
			rep.Restore != nil, rep.Skipped)
		// Settled at the next start, it keeps hiding it for good.
		if _, ok, err := db.Audit().SettleRestore(rep.Newest, time.Now()); err == nil && ok {
			if _, err := db.Audit().CheckAnchorsReport(anchors); err == nil {
				t.Error("once settled, the forged marker keeps the truncated entries unchecked")
			}
		}
		return
	}
	if !errors.As(err, &me) || me.Kind != TamperTruncated {
		t.Fatalf("with a forged marker: %v, want truncated", err)
	}
}

// TestHostileBackupSpliceOfTwoFilesOfOneNodeIsRefused: two backups of the
// same node (same key); the data chunks of one followed by the final chunk
// of the other, and the first file with a data chunk of the second in its
// place, are refused as damaged, and nothing is left in the directory.
func TestHostileBackupSpliceOfTwoFilesOfOneNodeIsRefused(t *testing.T) {
	key := randomKey(t)
	db := filledStore(t, key, 40)
	a, _ := backupOf(t, db, key)
	b, _ := backupOf(t, db, key)
	fa, fb := frames(t, a), frames(t, b)
	if len(fa) < 2 || len(fb) < 2 {
		t.Fatalf("frames %d and %d: the test needs at least a data chunk and the final one", len(fa), len(fb))
	}
	// A's header and data chunks, B's final chunk.
	spliceFinal := append(append([]byte(nil), a[:fa[len(fa)-1]]...), b[fb[len(fb)-1]:]...)
	// A with its first data chunk replaced by B's (same number, same size
	// bound, same key).
	firstB := b[fb[0]:fb[1]]
	spliceData := append(append(append([]byte(nil), a[:fa[0]]...), firstB...), a[fa[1]:]...)
	for name, f := range map[string][]byte{"B's final chunk after A's data": spliceFinal, "B's first chunk in A": spliceData} {
		dir := filepath.Join(t.TempDir(), "db")
		if _, err := restoreInto(dir, f, key, time.Now()); !errors.Is(err, ErrBackupCorrupt) && !errors.Is(err, ErrBackupTruncated) {
			t.Errorf("%s: restore %v, want damaged", name, err)
		}
		if left := restoreLeftovers(t, dir); len(left) > 0 {
			t.Errorf("%s: the refused restore left %v", name, left)
		}
	}
	// The header of A over B's chunks: another file id, so another key.
	hdrLen := len(backupMagic) + 3 + int(binary.BigEndian.Uint16(a[len(backupMagic)+1:]))
	mixed := append(append([]byte(nil), a[:hdrLen]...), b[fb[0]:]...)
	if _, _, err := openPayload(mixed, key); !errors.Is(err, ErrBackupCorrupt) && !errors.Is(err, ErrBackupWrongKey) {
		t.Errorf("A's header over B's chunks opened: %v", err)
	}
}
