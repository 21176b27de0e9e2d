package storage

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// TestReleaseDueBadSubjectPoisonsNoOtherEntry (review): a subject a page
// could not hold (empty, or longer than maxKeyPart) given to ReleaseDue is
// refused before it is written. Written, it would make its page
// ErrCorrupt for good: no entry after it, of any subject, would be read
// again, and the store would not open (countOutbox decodes every page).
func TestReleaseDueBadSubjectPoisonsNoOtherEntry(t *testing.T) {
	for name, subject := range map[string]string{
		"empty":    "",
		"too long": strings.Repeat("9", maxKeyPart+1),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			db, err := Open(Options{Dir: dir, GCInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if db != nil {
					db.Close()
				}
			}()
			mustSubmit(t, db, testRecord("BAD1", 1))
			_, relErr := db.ReleaseDue([]DueItem{{Day: credit.NewDate(2030, 1, 1), Subject: subject}}, nil)
			mustSubmit(t, db, testRecord("BAD2", 2)) // an acknowledged change after it
			pending, perr := db.PendingSubjects(0)
			if relErr == nil {
				t.Logf("ReleaseDue accepted the subject %q", subject[:min(len(subject), 8)])
			}
			var subjects []string
			for _, it := range pending {
				subjects = append(subjects, it.Subject)
			}
			if perr != nil || !slices.Contains(subjects, testSubject(2)) {
				t.Errorf("after ReleaseDue (err %v): PendingSubjects: %v; subject 2's accepted change pending: %v",
					relErr, perr, slices.Contains(subjects, testSubject(2)))
			}
			db.Close()
			if db, err = Open(Options{Dir: dir, GCInterval: -1}); err != nil {
				t.Fatalf("the store does not open again: %v", err)
			}
		})
	}
}

// TestUpgradeRefusedChangesNothing (review): a layout-3 store whose
// outbox cannot be converted (a marker that is not 8 bytes; two markers
// under one number) is refused with ErrCorrupt and left as it was: still
// layout 3, its markers in place, no pages.
func TestUpgradeRefusedChangesNothing(t *testing.T) {
	for name, corrupt := range map[string]func(t *testing.T, db *DB){
		"a short marker": func(t *testing.T, db *DB) {
			setRaw(t, db, outboxKey(testSubject(1)), []byte{1, 2, 3})
		},
		"two markers under one number": func(t *testing.T, db *DB) {
			ms := mustPendingOld(t, db)
			setRaw(t, db, outboxKey(ms[1].Subject), be64(ms[0].Seq))
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			db, err := Open(Options{Dir: dir, GCInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			mustSubmit(t, db, testRecord("U1", 1))
			mustSubmit(t, db, testRecord("U2", 2))
			toOldOutbox(t, db, "3")
			corrupt(t, db)
			before := len(rawKeys(t, db, "o/"))
			db.Close()

			db, err = Open(Options{Dir: dir, GCInterval: -1})
			if err == nil {
				defer db.Close()
				if n := len(mustPending(t, db)); n != before {
					t.Fatalf("opened with %d entries, %d markers before", n, before)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open: %v, want ErrCorrupt", err)
			}
			raw, rerr := badger.Open(Options{Dir: dir}.badgerOptions().WithLogger(nil))
			if rerr != nil {
				t.Fatal(rerr)
			}
			defer raw.Close()
			var layout []byte
			var markers, pages int
			raw.View(func(txn *badger.Txn) error {
				if it, err := txn.Get(metaLayoutKey); err == nil {
					layout, _ = it.ValueCopy(nil)
				}
				scanPrefix(txn, []byte("o/"), false, func(_, _ []byte) error { markers++; return nil })
				scanPrefix(txn, []byte("P/"), false, func(_, _ []byte) error { pages++; return nil })
				return nil
			})
			if string(layout) != "3" || markers != before || pages != 0 {
				t.Fatalf("a refused upgrade changed the store: layout %q (was \"3\"), %d o/ markers (were %d), %d pages", layout, markers, before, pages)
			}
		})
	}
}

// mustPendingOld reads the o/ markers of a store turned into an older
// layout, in key order.
func mustPendingOld(t *testing.T, db *DB) []OutboxItem {
	t.Helper()
	var out []OutboxItem
	err := db.Badger().View(func(txn *badger.Txn) error {
		return scanPrefix(txn, []byte("o/"), true, func(k, v []byte) error {
			seq, err := parseBE64(v)
			out = append(out, OutboxItem{Subject: string(k[2:]), Seq: seq})
			return err
		})
	})
	if err != nil || len(out) < 2 {
		t.Fatalf("%d markers: %v", len(out), err)
	}
	return out
}

// TestUpgradeKeepsAnOrderOnlyMarker (review): in layouts 2–3 the drain
// read O/; a subject named by O/ whose o/ marker is missing (the two
// families out of step) stays pending after the upgrade, and no O/ key
// is left.
func TestUpgradeKeepsAnOrderOnlyMarker(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustSubmit(t, db, testRecord("K1", 1))
	mustSubmit(t, db, testRecord("K2", 2))
	ms := toOldOutbox(t, db, "3")
	if err := db.Badger().Update(func(txn *badger.Txn) error { return txn.Delete(outboxKey(ms[1].Subject)) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openTest(t, Options{Dir: dir})
	var subjects []string
	for _, it := range mustPending(t, db) {
		subjects = append(subjects, it.Subject)
	}
	left := rawKeys(t, db, "O/")
	if !slices.Contains(subjects, ms[1].Subject) || len(left) != 0 {
		t.Fatalf("the subject layout 3 would have drained from O/ pending after the upgrade: %v; O/ keys left: %d",
			slices.Contains(subjects, ms[1].Subject), len(left))
	}
}

// TestManyLongSubjectsFitTheBudget (review): a batch of records of
// distinct subjects of the longest length, more than one transaction's
// budget, commits without ErrTxnTooBig (the pages written at the end of
// build stay within what the per-unit estimates reserved), every subject
// marked once, and the count equal to the pages' entries.
func TestManyLongSubjectsFitTheBudget(t *testing.T) {
	db := openTest(t, Options{})
	const n = 12000
	recs := make([]credit.Record, n)
	for i := range recs {
		recs[i] = testRecord("LS"+itoa10(i), i)
		recs[i].Subject = strings.Repeat("9", maxKeyPart-10) + itoa10(i)
		recs[i].Summary = ""
	}
	mustSubmit(t, db, recs...)
	entries := pageEntries(t, db)
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.Subject] = true
	}
	if len(seen) != n || len(entries) != n {
		t.Fatalf("%d entries of %d subjects, want %d", len(entries), len(seen), n)
	}
	if l, _ := db.OutboxLen(); l != n {
		t.Fatalf("OutboxLen %d", l)
	}
	if pages := len(rawKeys(t, db, "P/")); pages < n/pageMaxEntries {
		t.Fatalf("%d pages", pages)
	}
}

// itoa10 is i in 10 digits.
func itoa10(i int) string {
	b := make([]byte, 10)
	for k := 9; k >= 0; k-- {
		b[k] = byte('0' + i%10)
		i /= 10
	}
	return string(b)
}

// TestRestoreKeepsAPendingWithdrawal (review): a subject whose only
// record was deleted, or moved to another subject, has an outbox entry:
// the change the index must get (its entry withdrawn). A backup taken
// before the publisher sent it holds that entry, and a restore keeps the
// subject marked (renumbered above the restore), although marking the
// subjects with records would miss it.
func TestRestoreKeepsAPendingWithdrawal(t *testing.T) {
	key := randomKey(t)
	db := openTest(t, Options{EncryptionKey: key})
	mustSubmit(t, db, testRecord("W1", 1), testRecord("W2", 2), testRecord("W3", 3))
	if err := db.AckOutbox(mustPending(t, db)); err != nil { // all published
		t.Fatal(err)
	}
	if err := db.DeleteRecord(testDept, "W1"); err != nil { // subject 1 has no record left
		t.Fatal(err)
	}
	moved := testRecord("W3", 4) // W3 moves from subject 3 to subject 4
	moved.Version = 2
	if err := db.UpdateRecord(moved); err != nil {
		t.Fatal(err)
	}
	var before []string
	for _, it := range mustPending(t, db) {
		before = append(before, it.Subject)
	}
	if !slices.Contains(before, testSubject(1)) || !slices.Contains(before, testSubject(3)) {
		t.Fatalf("before the backup: pending %v", before)
	}
	file, _ := backupOf(t, db, key)
	dir := t.TempDir() + "/db"
	if _, err := restoreInto(dir, file, key, time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	r := openTest(t, Options{Dir: dir, EncryptionKey: key})
	var after []string
	for _, it := range mustPending(t, r) {
		after = append(after, it.Subject)
	}
	for _, s := range []int{1, 3} {
		if !slices.Contains(after, testSubject(s)) {
			t.Errorf("subject %d: its pending change (no record left for it) is not marked after the restore; pending %v", s, after)
		}
	}
}
