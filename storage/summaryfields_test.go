package storage

import (
	"errors"
	"reflect"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// sameAsRecords checks that SummaryFieldsBySubjects gives, for every
// subject, the summary fields of what RecordsBySubjects reads.
func sameAsRecords(t *testing.T, db *DB, subjects []string) [][]credit.Record {
	t.Helper()
	fields, ferrs, err := db.SummaryFieldsBySubjects(subjects)
	if err != nil {
		t.Fatal(err)
	}
	recs, rerrs, err := db.RecordsBySubjects(subjects)
	if err != nil {
		t.Fatal(err)
	}
	for i := range subjects {
		if (ferrs[i] != nil) != (rerrs[i] != nil) {
			t.Fatalf("subject %d: fields err %v, records err %v", i, ferrs[i], rerrs[i])
		}
		want := make([]credit.Record, 0, len(recs[i]))
		for _, r := range recs[i] {
			want = append(want, r.SummaryFields())
		}
		if len(want) != len(fields[i]) || (len(want) > 0 && !reflect.DeepEqual(want, fields[i])) {
			t.Fatalf("subject %d: summary fields %+v, records say %+v", i, fields[i], want)
		}
	}
	return fields
}

// TestSummaryFieldsFollowTheRecords: the summary fields kept in the subject
// index are those of each record's latest version through submissions,
// status changes, corrections that move a record to another subject and
// deletions; an entry written before they were kept (empty) is read from
// its record; a damaged entry is its subject's error and not the others'.
func TestSummaryFieldsFollowTheRecords(t *testing.T) {
	db := openTest(t, Options{})
	a, b, c := testRecord("A1", 1), testRecord("A2", 1), testRecord("A3", 2)
	c.CatalogItem, c.DecidedOn = "TAX-SERIOUS", credit.NewDate(2025, 1, 9)
	mustSubmit(t, db, a, b, c)
	subjects := []string{testSubject(1), testSubject(2), testSubject(3), ""}
	got := sameAsRecords(t, db, subjects)
	if len(got[0]) != 2 || len(got[1]) != 1 || got[1][0].CatalogItem != "TAX-SERIOUS" || len(got[2]) != 0 {
		t.Fatalf("after the submission: %+v", got)
	}

	// A status change, then a correction of the item and date that also
	// moves the record to subject 3.
	v2 := a
	v2.Version, v2.Status, v2.Reason = 2, credit.StatusDisputed, "objection"
	if err := db.UpdateRecord(v2); err != nil {
		t.Fatal(err)
	}
	got = sameAsRecords(t, db, subjects)
	if got[0][0].Status != credit.StatusDisputed {
		t.Fatalf("after the status change: %+v", got[0])
	}
	v3 := v2
	v3.Version, v3.Status, v3.Subject = 3, credit.StatusActive, testSubject(3)
	v3.CatalogItem, v3.DecidedOn = "TAX-SERIOUS", credit.NewDate(2025, 2, 1)
	if err := db.UpdateRecord(v3); err != nil {
		t.Fatal(err)
	}
	got = sameAsRecords(t, db, subjects)
	if len(got[0]) != 1 || len(got[2]) != 1 || got[2][0].DecidedOn != v3.DecidedOn {
		t.Fatalf("after the move: %+v", got)
	}
	if err := db.DeleteRecord(testDept, "A2"); err != nil {
		t.Fatal(err)
	}
	if got = sameAsRecords(t, db, subjects); len(got[0]) != 0 {
		t.Fatalf("after the deletion: %+v", got[0])
	}

	// An entry as an older build wrote it (empty) reads the record.
	key := subjectKey(testSubject(2), testDept, "A3")
	setRaw(t, db, key, []byte{})
	if got = sameAsRecords(t, db, subjects); len(got[1]) != 1 || got[1][0].CatalogItem != "TAX-SERIOUS" {
		t.Fatalf("an empty entry: %+v", got[1])
	}

	// Damaged entries: an unknown tag, a status longer than the value.
	for _, bad := range [][]byte{{9, 0, 0, 0, 0, 0}, {factsTag, 0, 0, 0, 1, 40, 'a'}, {factsTag}} {
		setRaw(t, db, key, bad)
		fields, errs, err := db.SummaryFieldsBySubjects(subjects)
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(errs[1], ErrCorrupt) || fields[1] != nil {
			t.Fatalf("value %x: err %v fields %+v, want ErrCorrupt", bad, errs[1], fields[1])
		}
		if errs[2] != nil || len(fields[2]) != 1 {
			t.Fatalf("value %x: subject 3 %v %+v", bad, errs[2], fields[2])
		}
	}
}

func setRaw(t *testing.T, db *DB, key, val []byte) {
	t.Helper()
	if err := db.Badger().Update(func(txn *badger.Txn) error { return txn.Set(key, val) }); err != nil {
		t.Fatal(err)
	}
}

// TestFactsRoundTrip: every status and item the catalog knows, and dates
// on both sides of the epoch, decode as encoded.
func TestFactsRoundTrip(t *testing.T) {
	for _, it := range credit.DefaultCatalog().Items {
		for _, st := range []credit.Status{credit.StatusActive, credit.StatusRepaired, ""} {
			for _, day := range []credit.Date{credit.NewDate(1949, 10, 1), 0, credit.NewDate(2099, 12, 31)} {
				r := credit.Record{CatalogItem: it.Code, Status: st, DecidedOn: day, Summary: "x"}
				got, ok, err := decodeFacts(encodeFacts(&r))
				if err != nil || !ok || got != r.SummaryFields() {
					t.Fatalf("%+v: decoded %+v %v %v", r.SummaryFields(), got, ok, err)
				}
			}
		}
	}
}

// TestOpenLayouts: a layout-2 directory opens and becomes layout 4, its
// empty entries read from their records; a directory of a layout this
// build does not know is refused and left as it was.
func TestOpenLayouts(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustSubmit(t, db, testRecord("L1", 1))
	setRaw(t, db, subjectKey(testSubject(1), testDept, "L1"), []byte{})
	setRaw(t, db, metaLayoutKey, []byte("2"))
	db.Close()

	db = openTest(t, Options{Dir: dir})
	if got := sameAsRecords(t, db, []string{testSubject(1)}); len(got[0]) != 1 {
		t.Fatalf("a layout-2 entry: %+v", got)
	}
	if v := rawValue(t, db, metaLayoutKey); string(v) != layoutVersion || layoutVersion != "5" {
		t.Fatalf("layout after opening a layout-2 directory: %q", v)
	}
	setRaw(t, db, metaLayoutKey, []byte("6"))
	setRaw(t, db, []byte("i/of a later layout"), []byte("kept"))
	db.Close()
	if _, err := Open(Options{Dir: dir, GCInterval: -1}); !errors.Is(err, ErrLayoutVersion) {
		t.Fatalf("a layout-6 directory: %v, want ErrLayoutVersion", err)
	}
	raw, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.View(func(txn *badger.Txn) error {
		_, err := txn.Get([]byte("i/of a later layout"))
		return err
	}); err != nil {
		t.Fatalf("the refused directory was changed: %v", err)
	}
}

func rawValue(t *testing.T, db *DB, key []byte) []byte {
	t.Helper()
	var v []byte
	if err := db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}
