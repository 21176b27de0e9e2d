package storage

import (
	"testing"

	"credfed/credit"
)

// TestOutboxLenFollowsTheMarkers: the count kept in memory equals the
// markers in the store after submissions (two records of one subject
// mark it once), a resubmission, an update that moves a record to
// another subject, acknowledgements (one of them stale: its subject
// changed since it was read, and stays marked), a deletion, a refused
// update, and a reopen.
func TestOutboxLenFollowsTheMarkers(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, Options{Dir: dir})
	check := func(step string) {
		t.Helper()
		n, err := db.OutboxLen()
		if want := len(rawKeys(t, db, "o/")); err != nil || n != want {
			t.Fatalf("%s: OutboxLen %d (%v), the store holds %d markers", step, n, err, want)
		}
	}
	check("empty")
	mustSubmit(t, db, testRecord("C1", 1), testRecord("C2", 1), testRecord("C3", 2))
	check("three records of two subjects")
	if n, _ := db.OutboxLen(); n != 2 {
		t.Fatalf("OutboxLen %d, want 2", n)
	}
	mustSubmit(t, db, testRecord("C1", 1))
	check("a duplicate")

	items := mustPending(t, db)
	moved := testRecord("C3", 2)
	moved.Version, moved.Subject = 2, testSubject(3)
	if err := db.UpdateRecord(moved); err != nil {
		t.Fatal(err)
	}
	check("an update to another subject")
	// Subject 2 was marked again by the update: its item is stale.
	if err := db.AckOutbox(items); err != nil {
		t.Fatal(err)
	}
	check("an acknowledgement, one item stale")
	if n, _ := db.OutboxLen(); n != 2 {
		t.Fatalf("after the acknowledgement %d markers, want subjects 2 and 3", n)
	}
	if err := db.AckOutbox(items); err != nil {
		t.Fatal(err)
	}
	check("the same acknowledgement again")
	bad := testRecord("NOPE", 4)
	bad.Version = 2
	if err := db.UpdateRecord(bad); err == nil {
		t.Fatal("an update of a missing record was taken")
	}
	check("a refused update")
	if err := db.DeleteRecord(testDept, "C1"); err != nil {
		t.Fatal(err)
	}
	check("a deletion")
	if err := db.AckOutbox(mustPending(t, db)); err != nil {
		t.Fatal(err)
	}
	check("everything acknowledged")
	if _, err := db.SubmitRecords([]credit.Record{testRecord("C4", 5), {ID: "bad"}}); err == nil {
		t.Fatal("a submission with an invalid record was taken")
	}
	check("a refused submission")
	mustSubmit(t, db, testRecord("C4", 5))
	db.Close()
	db = openTest(t, Options{Dir: dir})
	check("after a reopen")
}
