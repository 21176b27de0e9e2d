package storage

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// toOldOutbox turns db's outbox into the markers of an older layout: the
// latest entry of each subject as o/<subject> → seq and, unless layout is
// "1", as O/<seq> → subject; no pages; m/layout set to layout. It returns
// the markers, in sequence order.
func toOldOutbox(t *testing.T, db *DB, layout string) []OutboxItem {
	t.Helper()
	latest := map[string]uint64{}
	for _, e := range pageEntries(t, db) {
		latest[e.Subject] = max(latest[e.Subject], e.Seq)
	}
	var ms []OutboxItem
	for s, seq := range latest {
		ms = append(ms, OutboxItem{Subject: s, Seq: seq})
	}
	slices.SortFunc(ms, func(a, b OutboxItem) int { return cmp.Compare(a.Seq, b.Seq) })
	pages := rawKeys(t, db, "P/")
	wb := db.Badger().NewWriteBatch()
	for _, k := range pages {
		if err := wb.Delete([]byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range ms {
		if err := wb.Set(outboxKey(m.Subject), be64(m.Seq)); err != nil {
			t.Fatal(err)
		}
		if layout != "1" {
			if err := wb.Set(outboxSeqKey(m.Seq), []byte(m.Subject)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := wb.Set(metaLayoutKey, []byte(layout)); err != nil {
		t.Fatal(err)
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	return ms
}

// outboxSubjects submits n records of n subjects in batches of 500, then
// corrects every seventh of them (so that it has two entries), and
// returns the store.
func outboxSubjects(t *testing.T, dir string, n int) *DB {
	t.Helper()
	db := openTest(t, Options{Dir: dir})
	for from := 0; from < n; from += 500 {
		var recs []credit.Record
		for i := from; i < min(from+500, n); i++ {
			recs = append(recs, testRecord(fmt.Sprintf("OP%d", i), i))
		}
		mustSubmit(t, db, recs...)
	}
	for i := 0; i < n; i += 7 {
		r := testRecord(fmt.Sprintf("OP%d", i), i)
		r.Version, r.Summary = 2, "corrected"
		if err := db.UpdateRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// TestUpgradeConvertsTheOutbox: the markers of layouts 1 (o/ alone) and 3
// (o/ and O/) become pages at the next opening, in several transactions,
// with their numbers and in their order; nothing of the old families is
// left, the count equals the pages' entries, the layout is 4, and the
// next changes are numbered above them.
func TestUpgradeConvertsTheOutbox(t *testing.T) {
	defer func(n int) { convertBatch = n }(convertBatch)
	convertBatch = 700
	for _, layout := range []string{"1", "3"} {
		t.Run("layout="+layout, func(t *testing.T) {
			dir := t.TempDir()
			db := outboxSubjects(t, dir, 2300)
			want := toOldOutbox(t, db, layout)
			if len(want) != 2300 {
				t.Fatalf("%d old markers", len(want))
			}
			db.Close()
			db = openTest(t, Options{Dir: dir})
			got := mustPending(t, db)
			if !slices.Equal(got, want) {
				t.Fatalf("after the upgrade %d entries (first %+v), want the %d markers (first %+v)", len(got), got[0], len(want), want[0])
			}
			if n, _ := db.OutboxLen(); n != len(want) {
				t.Fatalf("OutboxLen %d", n)
			}
			if o, O := rawKeys(t, db, "o/"), rawKeys(t, db, "O/"); len(o)+len(O) != 0 {
				t.Fatalf("left of the old families: %d o/, %d O/", len(o), len(O))
			}
			if pages := rawKeys(t, db, "P/"); len(pages) < 2300/pageMaxEntries+1 {
				t.Fatalf("%d pages", len(pages))
			}
			if v := rawValue(t, db, metaLayoutKey); string(v) != layoutVersion {
				t.Fatalf("layout %q", v)
			}
			mustSubmit(t, db, testRecord("OPNEXT", 9999))
			if all := mustPending(t, db); all[len(all)-1].Seq <= want[len(want)-1].Seq {
				t.Fatalf("a change after the upgrade numbered %d, not above %d", all[len(all)-1].Seq, want[len(want)-1].Seq)
			}
		})
	}
}

// TestUpgradeCutShortIsFinished: a conversion that stopped after its first
// transaction (its pages written and its markers deleted, the layout
// already 4, the rest still markers) is finished by the next opening,
// its pages apart from the earlier ones.
func TestUpgradeCutShortIsFinished(t *testing.T) {
	dir := t.TempDir()
	db := outboxSubjects(t, dir, 1200)
	want := toOldOutbox(t, db, "3")
	first := want[:500]
	err := db.Badger().Update(func(txn *badger.Txn) error {
		if _, err := writePages(txn, first); err != nil {
			return err
		}
		for _, m := range first {
			if err := txn.Delete(outboxKey(m.Subject)); err != nil {
				return err
			}
			if err := txn.Delete(outboxSeqKey(m.Seq)); err != nil {
				return err
			}
		}
		return txn.Set(metaLayoutKey, []byte(layoutVersion))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openTest(t, Options{Dir: dir})
	if got := pageEntries(t, db); !slices.Equal(got, want) {
		t.Fatalf("%d entries after finishing, want %d in order", len(got), len(want))
	}
	if n, _ := db.OutboxLen(); n != len(want) {
		t.Fatalf("OutboxLen %d", n)
	}
	if err := db.AckOutbox(mustPending(t, db)); err != nil {
		t.Fatal(err)
	}
	if n, _ := db.OutboxLen(); n != 0 || len(rawKeys(t, db, "P/")) != 0 {
		t.Fatalf("after acknowledging everything: OutboxLen %d, %d pages", n, len(rawKeys(t, db, "P/")))
	}
}

// TestPagesSplitAndAcknowledgePartly: a commit marking more subjects than
// a page holds, some with long subjects, writes several pages, none over
// its bounds; a drain that reads part of a page and acknowledges part of
// what it read leaves exactly the rest, the page rewritten, and goes on
// within the page.
func TestPagesSplitAndAcknowledgePartly(t *testing.T) {
	db := openTest(t, Options{})
	var recs []credit.Record
	for i := 0; i < 3*pageMaxEntries; i++ {
		recs = append(recs, testRecord(fmt.Sprintf("PS%d", i), i))
	}
	mustSubmit(t, db, recs...)
	var pages int
	err := db.Badger().View(func(txn *badger.Txn) error {
		return scanPrefix(txn, []byte("P/"), true, func(k, v []byte) error {
			pages++
			last, _ := parseBE64(k[2:])
			es, err := decodePage(last, v, nil)
			if err != nil || len(es) > pageMaxEntries || len(v) > pageMaxBytes || es[len(es)-1].Seq != last {
				return fmt.Errorf("page %d: %d entries, %d bytes, %v", last, len(es), len(v), err)
			}
			return nil
		})
	})
	if err != nil || pages < 3 {
		t.Fatalf("%d pages: %v", pages, err)
	}
	all := mustPending(t, db)
	part, err := db.PendingSubjectsAfter(all[9].Seq, 20) // within the first page
	if err != nil || !slices.Equal(part, all[10:30]) {
		t.Fatalf("entries 10–29: %v", err)
	}
	ack := slices.Concat(all[:5], part[:10]) // 0–4 and 10–19
	if err := db.AckOutbox(ack); err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(all[5:10], all[20:])
	if got := mustPending(t, db); !slices.Equal(got, want) {
		t.Fatalf("left %d entries, want %d", len(got), len(want))
	}
	if n, _ := db.OutboxLen(); n != len(want) {
		t.Fatalf("OutboxLen %d, want %d", n, len(want))
	}
}

// TestCorruptPageIsRefused: a page that does not decode is ErrCorrupt for
// the drain and for an acknowledgement, which changes nothing.
func TestCorruptPageIsRefused(t *testing.T) {
	for name, val := range map[string][]byte{
		"empty":          {},
		"truncated":      {0, 40, 'x'},
		"out of order":   append(appendPageEntry(nil, 10, OutboxItem{Subject: "b", Seq: 9}), appendPageEntry(nil, 10, OutboxItem{Subject: "a", Seq: 8})...),
		"below zero":     appendPageEntry(nil, 10, OutboxItem{Subject: "a", Seq: 1<<63 + 11}),
		"a long subject": appendPageEntry(nil, 10, OutboxItem{Subject: strings.Repeat("s", maxKeyPart+1), Seq: 10}),
	} {
		t.Run(name, func(t *testing.T) {
			db := openTest(t, Options{})
			setRaw(t, db, outboxPageKey(10), val)
			if _, err := db.PendingSubjects(0); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("PendingSubjects: %v, want ErrCorrupt", err)
			}
			if err := db.AckOutbox([]OutboxItem{{Subject: "a", Seq: 10}}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("AckOutbox: %v, want ErrCorrupt", err)
			}
			if v := rawValue(t, db, outboxPageKey(10)); string(v) != string(val) {
				t.Fatal("the acknowledgement changed the page")
			}
		})
	}
}
