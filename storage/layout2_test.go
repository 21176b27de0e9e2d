package storage

import (
	"bytes"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// TestUpgradeFromLayout2RewritesTheFacts: builds between the summary
// fields and layout 3 wrote them into s/ entries under layout "2", and a
// build before them (also layout "2", so it opens the directory) updated
// records without touching their entries (review). Opening such a
// directory rewrites every entry from its record, in several
// transactions: a stale entry, an empty one and the others all end up
// with their record's fields; an entry whose record is gone is left
// empty, and the publisher's read reports it.
func TestUpgradeFromLayout2RewritesTheFacts(t *testing.T) {
	defer func(n int) { factsBatch = n }(factsBatch)
	factsBatch = 2
	dir := t.TempDir()
	db := openTest(t, Options{Dir: dir})
	v1 := testRecord("L1", 1)
	mustSubmit(t, db, v1, testRecord("L2", 2), testRecord("L3", 3), testRecord("L4", 4), testRecord("L5", 5))
	// A layout-2 build before the summary fields updates L1: its entry
	// keeps version 1's fields.
	setRaw(t, db, metaLayoutKey, []byte("2"))
	v2 := v1
	v2.Version, v2.Status = 2, credit.StatusRepaired
	enc, err := encodeRecord(&v2)
	if err != nil {
		t.Fatal(err)
	}
	setRaw(t, db, versionKey(testDept, "L1", 1), rawValue(t, db, recordKey(testDept, "L1")))
	setRaw(t, db, recordKey(testDept, "L1"), enc)
	setRaw(t, db, versionKey(testDept, "L1", 2), enc)
	setRaw(t, db, subjectKey(testSubject(2), testDept, "L2"), []byte{}) // as layout 2 wrote them
	damaged := subjectKey(testSubject(5), testDept, "L5")
	if err := db.Badger().Update(func(txn *badger.Txn) error { return txn.Delete(recordKey(testDept, "L5")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db = openTest(t, Options{Dir: dir})
	if v := rawValue(t, db, metaLayoutKey); string(v) != layoutVersion {
		t.Fatalf("layout %q after the upgrade", v)
	}
	subjects := []string{testSubject(1), testSubject(2), testSubject(3), testSubject(4)}
	got := sameAsRecords(t, db, subjects)
	if got[0][0].Status != credit.StatusRepaired {
		t.Fatalf("the stale entry: %+v", got[0])
	}
	for i, s := range subjects {
		key := subjectKey(s, testDept, "L"+string(rune('1'+i)))
		if v := rawValue(t, db, key); len(v) == 0 || v[0] != factsTag {
			t.Fatalf("entry %d after the upgrade: %x", i+1, v)
		}
	}
	if v := rawValue(t, db, damaged); !bytes.Equal(v, []byte{}) {
		t.Fatalf("the entry of a missing record: %x, want empty", v)
	}
}

// TestOpenDropsTheByIDIndex: the i/ family, which nothing reads and no
// deletion removes any more (it would keep a deleted record's id), is
// gone after opening a store of layout 1, 2 or 3 that holds some (review:
// layout 1 skipped it), and layout 3 writes none.
func TestOpenDropsTheByIDIndex(t *testing.T) {
	for _, layout := range []string{"1", "2", layoutVersion} {
		dir := t.TempDir()
		db := openTest(t, Options{Dir: dir})
		mustSubmit(t, db, testRecord("I1", 1))
		if got := rawKeys(t, db, "i/"); len(got) != 0 {
			t.Fatalf("layout 3 wrote %q", got)
		}
		setRaw(t, db, []byte("i/I1\x00"+testDept), []byte{})
		setRaw(t, db, metaLayoutKey, []byte(layout))
		db.Close()
		db = openTest(t, Options{Dir: dir})
		if got := rawKeys(t, db, "i/"); len(got) != 0 {
			t.Fatalf("layout %s: after opening: %q", layout, got)
		}
		if r, err := db.Record(testDept, "I1"); err != nil || r.ID != "I1" {
			t.Fatalf("layout %s: the record after opening: %+v, %v", layout, r, err)
		}
	}
}
