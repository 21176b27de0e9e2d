package systemtest

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/api"
	"credfed/credit"
	"credfed/internal/testlog"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// TestBackupWhileServingAndRestoreIntoAFreshDirectory: a district's
// operator takes a backup while the district serves; records and versions
// are added after it; the district stops and is restored from the backup
// into a fresh data directory (no Raft log, no replicated state) and
// started. It catches up through Raft; it starts although its audit chain
// ends before its last anchor in Raft, and says it accepted that because
// of the restore; every record, version and audit entry of the backup is
// there byte for byte, and the chain verifies. What was recorded after the
// backup is lost from the district, as designed: the subjects it holds
// are republished (their index entries count what it has again), a
// subject it first recorded after the backup keeps its index entry, whose
// lookups the district answers with no records (a phantom answer), until
// the department resubmits the lost record. Attacks: another district's
// backup and a tampered file are refused and leave the store directory
// absent; a restore into a store that is there is refused.
func TestBackupWhileServingAndRestoreIntoAFreshDirectory(t *testing.T) {
	logger, logs := testlog.Logger(slog.LevelInfo)
	f := startFed(t, localfed.Spec{Districts: 2, Encrypt: true}, node.Options{Logger: logger})
	d, other := f.Districts()[0], f.Districts()[1]
	city := cityOf(t, f, d)
	dept := department(t, f, d)
	coord := clientOf(t, f, city, f.Layout.Coordinators[city])
	op := issueUser(t, f, "operator", regionOf(f, d), "operations")

	a := credit.SyntheticPerson(8101, credit.NewDate(1980, 1, 2))
	b := credit.SyntheticPerson(8102, credit.NewDate(1981, 2, 3))
	c := credit.SyntheticPerson(8103, credit.NewDate(1982, 3, 4))
	submit(t, f, d, record("BK-1", a, "FOOD-DRUG-PENALTY", "before the backup"), record("BK-2", b, "FOOD-DRUG-PENALTY", "before the backup"))
	corrected := "corrected before the backup"
	if _, err := dept.Correct(ctxT(t, 30*time.Second), "BK-1", api.Correction{Summary: &corrected, Reason: "typo"}); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, f, a, 1)
	waitIndexed(t, f, b, 1)
	lookup := func(subject, ref string) *api.LookupAnswer {
		t.Helper()
		ans, err := lookupUntil(t, coord, api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "审查员", Reference: ref})
		if err != nil {
			t.Fatal(err)
		}
		return ans
	}
	lookup(a, "许可〔2026〕801号")

	// Who may take it: an operator of the district's own region only.
	for who, files := range map[string]localfed.ClientFiles{"the province's operator": f.Layout.Operator, "a department": f.Layout.Departments[d]} {
		if _, err := clientOf(t, f, d, files).Backup(ctxT(t, 30*time.Second), &bytes.Buffer{}); api.Code(err) != api.CodeForbidden {
			t.Fatalf("a backup of %s by %s: %v", d, who, err)
		}
	}

	records := recordKVs(t, f.Node(d).Store())
	backup := filepath.Join(t.TempDir(), d+".credfed-backup")
	out, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	info, err := clientOf(t, f, d, op).Backup(ctxT(t, time.Minute), out)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(backup)
	if info.Region != regionOf(f, d) || info.Records != 2 || info.AuditHead == 0 || info.Entries == 0 || info.Bytes != st.Size() {
		t.Fatalf("backup %+v, file of %d bytes", info, st.Size())
	}
	if !auditHas(t, f.Node(d).Store(), func(e storage.AuditEntry) bool {
		return e.Operation == "backup" && e.Caller == op.Identity && e.Decision == storage.DecisionAllowed && e.Reference == "backup "+info.ID
	}) {
		t.Fatal("the backup is not in the district's audit log")
	}
	if bytes.Contains(mustRead(t, backup), []byte(a)) || bytes.Contains(mustRead(t, backup), []byte("before the backup")) {
		t.Fatal("the backup file holds an identifier or record content in the clear")
	}
	// Another district's backup, for the attack below.
	otherBackup := filepath.Join(t.TempDir(), other+".credfed-backup")
	takeBackup(t, clientOf(t, f, other, issueUser(t, f, "operator", regionOf(f, other), "operations")), otherBackup)

	// After the backup: a record of a subject the backup holds, a record
	// of a new subject, a correction.
	submit(t, f, d, record("BK-3", a, "FOOD-DRUG-PENALTY", "after the backup"), record("BK-4", c, "FOOD-DRUG-PENALTY", "after the backup"))
	later := "corrected after the backup"
	if _, err := dept.Correct(ctxT(t, 30*time.Second), "BK-2", api.Correction{Summary: &later, Reason: "typo"}); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, f, c, 1)
	lookup(c, "许可〔2026〕802号")

	// The district stops (its clean stop anchors its head, past the
	// backup's); its data directory is lost.
	if err := f.StopNode(ctxT(t, 30*time.Second), d); err != nil {
		t.Fatal(err)
	}
	if v := verifyOffline(t, f, d); v.Mismatch != nil || len(v.Anchors) == 0 || v.Anchors[len(v.Anchors)-1].Seq <= info.AuditHead {
		t.Fatalf("before the loss: head %d, anchors %+v, backup head %d", v.Head, v.Anchors, info.AuditHead)
	}
	oldChain := chainEntries(t, f, d, info.AuditHead)
	cfg := nodeConfig(t, f, d)
	if err := os.Rename(cfg.DataDir, cfg.DataDir+".lost"); err != nil {
		t.Fatal(err)
	}
	storeDir := filepath.Join(cfg.DataDir, "db")
	refused := func(what, file string, want error) {
		t.Helper()
		if _, err := node.Restore(cfg, file, node.RestoreOptions{}); !errors.Is(err, want) {
			t.Fatalf("restore of %s: %v, want %v", what, err, want)
		}
		if _, err := os.Stat(storeDir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("restore of %s left the store directory (%v)", what, err)
		}
		if left, _ := filepath.Glob(filepath.Join(cfg.DataDir, ".db.restore-*")); len(left) > 0 {
			t.Fatalf("restore of %s left %v", what, left)
		}
	}
	refused("another district's backup", otherBackup, storage.ErrBackupWrongKey)
	data := mustRead(t, backup)
	data[len(data)/2] ^= 0x40
	tampered := filepath.Join(t.TempDir(), "tampered")
	if err := os.WriteFile(tampered, data, 0o600); err != nil {
		t.Fatal(err)
	}
	refused("a tampered backup", tampered, storage.ErrBackupCorrupt)

	sum, err := node.Restore(cfg, backup, node.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Marker.Subjects != 2 || sum.Marker.AuditSeq != info.AuditHead || sum.Marker.Backup != info.ID {
		t.Fatalf("restore: %+v", sum.Marker)
	}
	if _, err := node.Restore(cfg, backup, node.RestoreOptions{}); !errors.Is(err, storage.ErrRestoreNotEmpty) {
		t.Fatalf("a restore over the restored store: %v", err)
	}

	if err := f.StartNode(d); err != nil {
		t.Fatalf("the restored district does not start: %v", err)
	}
	takenOn := sum.Header.TakenAt.UTC().Format(time.RFC3339)
	if want := "accepted because this store was restored from the backup of " + takenOn; !strings.Contains(logs.String(), want) {
		t.Fatalf("the restored district's log does not say %q", want)
	}
	if err := f.WaitReady(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	n := f.Node(d)
	// Every record and version of the backup, byte for byte, and nothing
	// of after it.
	if got := recordKVs(t, n.Store()); !equalKVs(got, records) {
		t.Fatalf("records and versions after the restore: %d keys, the backup had %d", len(got), len(records))
	}
	if err := n.Store().Audit().Verify(); err != nil {
		t.Fatal(err)
	}
	for i, e := range chainEntries(t, f, d, info.AuditHead) {
		if !bytes.Equal(e, oldChain[i]) {
			t.Fatalf("audit entry %d differs from the one backed up", i+1)
		}
	}
	if !auditHas(t, n.Store(), func(e storage.AuditEntry) bool {
		return e.Operation == "restore" && e.Seq == info.AuditHead+1 && e.Reference == "backup "+info.ID+" of "+takenOn
	}) {
		t.Fatal("the restore is not in the audit log right after the backup's head")
	}
	if _, err := dept.Record(ctxT(t, 30*time.Second), "BK-3"); api.Code(err) != api.CodeNotFound {
		t.Fatalf("a record submitted after the backup: %v", err)
	}

	// The subjects held are republished, numbered above the restore, so
	// that the index takes them over the lost changes' entries: a's entry
	// counts one record again.
	wait.Until(t, 30*time.Second, "a's index entry republished after the restore", func() bool {
		entries, err := entriesAt(t, f, f.Province(), a)
		for _, e := range entries {
			if err == nil && e.District == regionOf(f, d) && e.Seq > uint64(sum.Marker.RestoredAt.UnixNano()) {
				return e.Summary.Records() == 1
			}
		}
		return false
	})
	if ans := lookup(a, "许可〔2026〕803号"); len(ans.Districts) != 1 || len(ans.Districts[0].Records) != 1 ||
		ans.Districts[0].Records[0].Summary != corrected {
		t.Fatalf("a after the restore: %+v", ans.Districts)
	}
	// c was first recorded after the backup: its entry stays, and the
	// district answers it with no records, until BK-4 is resubmitted.
	if ans := lookup(c, "许可〔2026〕804号"); len(ans.Districts) != 1 || ans.Districts[0].Status != "ok" || len(ans.Districts[0].Records) != 0 {
		t.Fatalf("c after the restore (a phantom answer expected): %+v", ans.Districts)
	}
	submit(t, f, d, record("BK-4", c, "FOOD-DRUG-PENALTY", "after the backup"))
	wait.Until(t, 30*time.Second, "c's lost record found again once resubmitted", func() bool {
		ans := lookup(c, "许可〔2026〕805号")
		return len(ans.Districts) == 1 && len(ans.Districts[0].Records) == 1
	})

	// The audit verify path, the node stopped: the chain matches its
	// anchors, those of the lost entries excepted because of the restore;
	// and the node starts again.
	if err := f.StopNode(ctxT(t, 30*time.Second), d); err != nil {
		t.Fatal(err)
	}
	v := verifyOffline(t, f, d)
	if v.Mismatch != nil || v.Restore == nil || v.LostAnchors == 0 || !v.Restore.Settled() {
		t.Fatalf("audit verify after the restore: mismatch %v, restore %+v, %d lost anchors", v.Mismatch, v.Restore, v.LostAnchors)
	}
	if err := f.StartNode(d); err != nil {
		t.Fatalf("the restored district's second start: %v", err)
	}
}

// recordKVs reads the records and versions of a store (r/ and v/), key to
// value, as stored.
func recordKVs(t *testing.T, db *storage.DB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := db.Badger().View(func(txn *badger.Txn) error {
		for _, p := range []string{"r/", "v/"} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(p), PrefetchValues: true})
			for it.Rewind(); it.Valid(); it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					it.Close()
					return err
				}
				out[string(it.Item().KeyCopy(nil))] = v
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no records in the store")
	}
	return out
}

func equalKVs(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// chainEntries reads the stored audit entries 1 to head of a node, as
// stored (the running node's store, or the stopped node's).
func chainEntries(t *testing.T, f *localfed.Federation, name string, head uint64) [][]byte {
	t.Helper()
	var db *storage.DB
	if n := f.Node(name); n != nil {
		db = n.Store()
	} else {
		db = openStore(t, f, name)
		defer db.Close()
	}
	var out [][]byte
	err := db.Badger().View(func(txn *badger.Txn) error {
		for s := uint64(1); s <= head; s++ {
			item, err := txn.Get(auditKey(s))
			if err != nil {
				return fmt.Errorf("entry %d: %w", s, err)
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func auditHas(t *testing.T, db *storage.DB, match func(storage.AuditEntry) bool) bool {
	t.Helper()
	found := false
	if err := db.Audit().Range(1, 0, func(e storage.AuditEntry) error {
		found = found || match(e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

func takeBackup(t *testing.T, c *api.Client, path string) *api.BackupInfo {
	t.Helper()
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	info, err := c.Backup(ctxT(t, time.Minute), out)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
