package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// anchorsAt are anchors of the entries seqs of a log, as the node would
// have anchored them.
func anchorsAt(entries []AuditEntry, seqs ...uint64) []AuditAnchor {
	var out []AuditAnchor
	for _, s := range seqs {
		e := entries[s-1]
		out = append(out, AuditAnchor{Seq: e.Seq, Hash: e.Hash, At: time.Date(2026, 12, 1, 9, 0, int(s), 0, time.UTC)})
	}
	return out
}

// rehashFrom rewrites entries from..head of the log as a tamperer who
// knows the scheme would: each entry's prev and hash recomputed, and the
// head record rewritten, so that Verify passes.
func rehashFrom(t *testing.T, db *DB, from uint64, edit func(e *AuditEntry)) {
	t.Helper()
	head := diskHead(t, db)
	prev := [32]byte{}
	if from > 1 {
		p, _ := decodeAudit(rawGet(t, db, auditKey(from-1)))
		prev = p.Hash
	}
	rawUpdate(t, db, func(txn *badger.Txn) error {
		for s := from; s <= head; s++ {
			e, err := decodeAudit(rawGet(t, db, auditKey(s)))
			if err != nil {
				return err
			}
			if s == from {
				edit(&e)
			}
			e.Prev, e.Hash = prev, [32]byte{}
			if e.Hash, err = auditHash(&e); err != nil {
				return err
			}
			b, _ := encMode.Marshal(&e)
			if err := txn.Set(auditKey(s), b); err != nil {
				return err
			}
			prev = e.Hash
		}
		h, _ := encMode.Marshal(auditHead{Seq: head, Hash: prev})
		return txn.Set(auditHeadKey, h)
	})
}

// diskHead is the head record's seq as stored (the log's copy in memory
// does not see raw writes).
func diskHead(t *testing.T, db *DB) uint64 {
	t.Helper()
	var h auditHead
	if err := decMode.Unmarshal(rawGet(t, db, auditHeadKey), &h); err != nil {
		t.Fatal(err)
	}
	return h.Seq
}

// truncateTo deletes the entries after seq and rewinds the head to it, as
// a tamperer who knows the scheme would.
func truncateTo(t *testing.T, db *DB, seq uint64) {
	t.Helper()
	head := diskHead(t, db)
	last, _ := decodeAudit(rawGet(t, db, auditKey(seq)))
	rawUpdate(t, db, func(txn *badger.Txn) error {
		for s := seq + 1; s <= head; s++ {
			e, _ := decodeAudit(rawGet(t, db, auditKey(s)))
			if e.Subject != "" {
				if err := txn.Delete(auditSubjectKey(e.Subject, s)); err != nil {
					return err
				}
			}
			if err := txn.Delete(auditKey(s)); err != nil {
				return err
			}
		}
		h, _ := encMode.Marshal(auditHead{Seq: seq, Hash: last.Hash})
		return txn.Set(auditHeadKey, h)
	})
}

// TestAuditCheckAnchorsFindsEachKindOfTampering: each kind of tampering
// of a 10-entry log anchored at entries 3, 6 and 10 is found, with the
// first bad entry and its kind. Truncating and rewinding, and editing and
// re-hashing to the head, leave a chain that verifies: only the anchors
// show them.
func TestAuditCheckAnchorsFindsEachKindOfTampering(t *testing.T) {
	cases := []struct {
		name         string
		tamper       func(t *testing.T, db *DB)
		verifyPasses bool
		kind         TamperKind
		seq, through uint64
		problem      string
	}{
		{"edit an entry", func(t *testing.T, db *DB) {
			e, _ := decodeAudit(rawGet(t, db, auditKey(5)))
			e.Purpose = "curiosity"
			b, _ := encMode.Marshal(&e)
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(auditKey(5), b) })
		}, false, TamperEdited, 5, 0, "entry changed"},
		{"edit an entry's bytes", func(t *testing.T, db *DB) {
			v := rawGet(t, db, auditKey(4))
			i := strings.Index(string(v), "recruitment")
			v[i] = 'R'
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(auditKey(4), v) })
		}, false, TamperEdited, 4, 0, "entry changed"},
		{"delete an entry", func(t *testing.T, db *DB) {
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Delete(auditKey(5)) })
		}, false, TamperDeleted, 5, 0, "entry missing"},
		{"delete the last entry, head kept", func(t *testing.T, db *DB) {
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Delete(auditKey(10)) })
		}, false, TamperDeleted, 10, 0, "missing at the end"},
		{"reorder two entries", func(t *testing.T, db *DB) {
			a, b := rawGet(t, db, auditKey(5)), rawGet(t, db, auditKey(6))
			rawUpdate(t, db, func(txn *badger.Txn) error {
				if err := txn.Set(auditKey(5), b); err != nil {
					return err
				}
				return txn.Set(auditKey(6), a)
			})
		}, false, TamperReordered, 5, 0, "reordered"},
		{"edit an entry and re-hash it alone", func(t *testing.T, db *DB) {
			e, _ := decodeAudit(rawGet(t, db, auditKey(5)))
			e.Records, e.Hash = nil, [32]byte{}
			e.Hash, _ = auditHash(&e)
			b, _ := encMode.Marshal(&e)
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(auditKey(5), b) })
		}, false, TamperRewritten, 6, 0, "prev does not match"},
		{"truncate the tail and rewind the head", func(t *testing.T, db *DB) {
			truncateTo(t, db, 8)
		}, true, TamperTruncated, 9, 10, "the log ends at entry 8, but entry 10 was anchored"},
		{"truncate past an earlier anchor", func(t *testing.T, db *DB) {
			truncateTo(t, db, 4)
		}, true, TamperTruncated, 5, 6, "entries 5 to 6 were removed"},
		{"edit an entry and re-hash the chain to the head", func(t *testing.T, db *DB) {
			rehashFrom(t, db, 8, func(e *AuditEntry) { e.Purpose = "curiosity" })
		}, true, TamperRewritten, 7, 10, "entry 10's hash is not the one anchored"},
		{"edit the entry after an anchor and re-hash to the head", func(t *testing.T, db *DB) {
			rehashFrom(t, db, 4, func(e *AuditEntry) { e.Records = nil })
		}, true, TamperRewritten, 4, 6, "entry 6's hash is not the one anchored"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTest(t, Options{})
			entries := appendN(t, db.Audit(), 10)
			anchors := anchorsAt(entries, 3, 6, 10)
			if err := db.Audit().CheckAnchors(anchors); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			c.tamper(t, db)
			if err := db.Audit().Verify(); (err == nil) != c.verifyPasses {
				t.Fatalf("Verify alone = %v; want it to pass: %v", err, c.verifyPasses)
			}
			err := db.Audit().CheckAnchors(anchors)
			var me *AuditMismatchError
			if !errors.As(err, &me) || !errors.Is(err, ErrAuditTampered) {
				t.Fatalf("CheckAnchors = %v, want *AuditMismatchError", err)
			}
			if me.Kind != c.kind || me.Seq != c.seq || me.Through != c.through || !strings.Contains(me.Problem, c.problem) {
				t.Fatalf("CheckAnchors = %s at %d through %d: %q; want %s at %d through %d containing %q",
					me.Kind, me.Seq, me.Through, me.Problem, c.kind, c.seq, c.through, c.problem)
			}
			if !strings.Contains(err.Error(), string(c.kind)) || strings.Contains(err.Error(), "recruitment") || strings.Contains(err.Error(), pseudonym(1)) {
				t.Fatalf("message %q: want the kind, no entry content", err)
			}
		})
	}
}

// TestAuditCheckAnchorsWindow: what happens after the newest anchor is
// checked by the chain alone. A truncation of only those entries is not
// seen (the window the anchoring interval leaves, docs/design.md); one
// that reaches the newest anchor is. An anchored log that was emptied is
// truncated from entry 1.
func TestAuditCheckAnchorsWindow(t *testing.T) {
	db := openTest(t, Options{})
	entries := appendN(t, db.Audit(), 10)
	anchors := anchorsAt(entries, 3, 7)
	truncateTo(t, db, 7)
	if err := db.Audit().CheckAnchors(anchors); err != nil {
		t.Fatalf("entries 8 to 10, after the newest anchor, removed: %v (the window is not checkable)", err)
	}
	truncateTo(t, db, 6)
	var me *AuditMismatchError
	if err := db.Audit().CheckAnchors(anchors); !errors.As(err, &me) || me.Kind != TamperTruncated || me.Seq != 7 {
		t.Fatalf("the newest anchored entry removed: %v", err)
	}
	// An empty log with anchors.
	empty := openTest(t, Options{})
	if err := empty.Audit().CheckAnchors(nil); err != nil {
		t.Fatalf("an empty log without anchors: %v", err)
	}
	if err := empty.Audit().CheckAnchors(anchors); !errors.As(err, &me) || me.Kind != TamperTruncated || me.Seq != 1 || me.Through != 3 {
		t.Fatalf("an empty log with anchors: %v", err)
	}
}

// TestAuditReadOnly: a store a node holds open cannot be opened read-only
// (the node must be stopped); once closed it can, while another reader
// holds it, and reads the same chain without writing.
func TestAuditReadOnly(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, 32)
	key[0] = 7
	db, err := Open(Options{Dir: dir, EncryptionKey: key, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	entries := appendN(t, db.Audit(), 5)
	if _, err := OpenAuditReadOnly(Options{Dir: dir, EncryptionKey: key}); !errors.Is(err, ErrStoreInUse) {
		t.Fatalf("read-only open of a store in use: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before := dirListing(t, dir)
	r, err := OpenAuditReadOnly(Options{Dir: dir, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := OpenAuditReadOnly(Options{Dir: dir, EncryptionKey: key})
	if err != nil {
		t.Fatalf("a second reader: %v", err)
	}
	r2.Close()
	if seq, h := r.Head(); seq != 5 || h != entries[4].Hash {
		t.Fatalf("head %d %x", seq, h)
	}
	if err := r.CheckAnchors(anchorsAt(entries, 2, 5)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if after := dirListing(t, dir); after != before {
		t.Fatalf("reading changed the directory:\n%s\nthen\n%s", before, after)
	}
	if _, err := OpenAuditReadOnly(Options{Dir: dir}); !errors.Is(err, ErrKeyRequired) {
		t.Fatalf("read-only open without the key: %v", err)
	}
	sdir := filepath.Join(t.TempDir(), "state")
	st, err := OpenState(Options{Dir: sdir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenStateReadOnly(Options{Dir: sdir}); !errors.Is(err, ErrStoreInUse) {
		t.Fatalf("read-only open of a state in use: %v", err)
	}
	st.Close()
	ro, err := OpenStateReadOnly(Options{Dir: sdir})
	if err != nil {
		t.Fatal(err)
	}
	if err := ro.Badger().Update(func(txn *badger.Txn) error { return txn.Set([]byte("x/z"), nil) }); err == nil {
		t.Fatal("a write to the read-only state succeeded")
	}
	ro.Close()
}

// dirListing names every file of dir with its size and modification time.
func dirListing(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() && fi.Name() != "LOCK" {
			fmt.Fprintf(&b, "%s %d %s\n", p, fi.Size(), fi.ModTime())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestAuditPage: filters, the cursor, the limit and the scan bound.
func TestAuditPage(t *testing.T) {
	db := openTest(t, Options{})
	l := db.Audit()
	base := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	var es []AuditEntry
	for i := 0; i < 30; i++ {
		e := lookupEntry(i)
		e.At = base.Add(time.Duration(i) * time.Minute)
		if i%5 == 0 {
			e.Operation, e.Institution = "record.submit", "market-supervision"
		}
		es = append(es, e)
	}
	if _, err := l.Append(es...); err != nil {
		t.Fatal(err)
	}
	seqs := func(es []AuditEntry) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	// Paged through, 7 at a time: every entry once, in order.
	var all []uint64
	var after uint64
	for pages := 0; ; pages++ {
		got, next, err := l.Page(AuditFilter{}, after, 7)
		if err != nil || pages > 10 {
			t.Fatal(err, pages)
		}
		all = append(all, seqs(got)...)
		if next == 0 {
			break
		}
		if next != got[len(got)-1].Seq {
			t.Fatalf("next %d after a full page ending at %d", next, got[len(got)-1].Seq)
		}
		after = next
	}
	if len(all) != 30 || all[0] != 1 || all[29] != 30 {
		t.Fatalf("paged %v", all)
	}
	got, _, err := l.Page(AuditFilter{Operation: "record.submit", Institution: "market-supervision"}, 0, 100)
	if err != nil || len(got) != 6 || got[0].Seq != 1 || got[5].Seq != 26 {
		t.Fatalf("by operation and institution: %v %v", seqs(got), err)
	}
	got, _, err = l.Page(AuditFilter{From: base.Add(10 * time.Minute), To: base.Add(12 * time.Minute)}, 0, 100)
	if err != nil || len(got) != 3 || got[0].Seq != 11 || got[2].Seq != 13 {
		t.Fatalf("by time: %v %v", seqs(got), err)
	}
	got, next, err := l.Page(AuditFilter{Subject: pseudonym(1)}, 4, 3)
	if err != nil || len(got) != 3 || got[0].Seq != 5 || got[1].Seq != 8 || got[2].Seq != 11 || next != 11 {
		t.Fatalf("by subject after 4: %v next %d %v", seqs(got), next, err)
	}
	if _, _, err := l.Page(AuditFilter{Subject: "110101199003074578"}, 0, 3); !errors.Is(err, ErrNotPseudonym) {
		t.Fatalf("an identifier as subject: %v", err)
	}
	if got, next, err := l.Page(AuditFilter{}, 30, 10); err != nil || len(got) != 0 || next != 0 {
		t.Fatalf("after the head: %v %d %v", seqs(got), next, err)
	}
	if got, next, err := l.Page(AuditFilter{}, ^uint64(0), 10); err != nil || len(got) != 0 || next != 0 {
		t.Fatalf("after the last possible seq: %v %d %v", seqs(got), next, err)
	}
}
