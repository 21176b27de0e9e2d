package storage

import (
	"fmt"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// TestOutboxLenFollowsTheMarkers: the count kept in memory equals the
// entries of the store's outbox pages after submissions (two records of
// one subject in one commit mark it once), a resubmission, an update that moves a record to
// another subject, acknowledgements (one of them stale: its subject
// changed since it was read, and stays marked), a deletion, a refused
// update, and a reopen.
func TestOutboxLenFollowsTheMarkers(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, Options{Dir: dir})
	check := func(step string) {
		t.Helper()
		n, err := db.OutboxLen()
		if want := len(pageEntries(t, db)); err != nil || n != want {
			t.Fatalf("%s: OutboxLen %d (%v), the store's pages hold %d entries", step, n, err, want)
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

// TestAckOutboxWalk: acknowledgements in any order, with gaps (a subject
// left marked between two acknowledged ones), an item twice, an item
// naming another subject's sequence number and one already acknowledged
// remove exactly the markers they match.
func TestAckOutboxWalk(t *testing.T) {
	db := openTest(t, Options{})
	for i := 1; i <= 6; i++ {
		mustSubmit(t, db, testRecord(fmt.Sprintf("W%d", i), i))
	}
	items := mustPending(t, db)
	if len(items) != 6 {
		t.Fatalf("%d pending", len(items))
	}
	wrong := OutboxItem{Subject: items[4].Subject, Seq: items[3].Seq} // subject 5 under subject 4's number
	ack := []OutboxItem{items[5], items[2], items[0], items[2], wrong}
	if err := db.AckOutbox(ack); err != nil {
		t.Fatal(err)
	}
	left := mustPending(t, db)
	var got []string
	for _, it := range left {
		got = append(got, it.Subject)
	}
	want := []string{items[1].Subject, items[3].Subject, items[4].Subject}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("left marked %v, want %v", got, want)
	}
	if n, _ := db.OutboxLen(); n != 3 || len(pageEntries(t, db)) != 3 {
		t.Fatalf("OutboxLen %d, page entries %d", n, len(pageEntries(t, db)))
	}
	if err := db.AckOutbox(ack); err != nil { // again: nothing left to match
		t.Fatal(err)
	}
	if n, _ := db.OutboxLen(); n != 3 {
		t.Fatalf("after acknowledging again: %d", n)
	}
}

// TestAckOutboxUnderSubmissions: acknowledgements racing re-marking
// updates leave the count equal to the pages' entries, and every subject
// whose last update came after the acknowledger stopped marked by it.
func TestAckOutboxUnderSubmissions(t *testing.T) {
	db := openTest(t, Options{})
	const subjects = 8
	for i := 1; i <= subjects; i++ {
		mustSubmit(t, db, testRecord(fmt.Sprintf("R%d", i), i))
	}
	stop := make(chan struct{})
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		for n := 0; n < 2000; n++ {
			select {
			case <-stop:
				return
			default:
			}
			items, err := db.PendingSubjects(3)
			if err != nil {
				t.Error(err)
				return
			}
			if err := db.AckOutbox(items); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	version := make([]int, subjects+1)
	for i := range version {
		version[i] = 1
	}
	for n := 0; n < 300; n++ {
		i := 1 + n%subjects
		r := testRecord(fmt.Sprintf("R%d", i), i)
		version[i]++
		r.Version, r.Summary = version[i], fmt.Sprintf("v%d", version[i])
		if err := db.UpdateRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-acked
	// The acknowledger has stopped: one more update of each subject, and
	// each must be marked above every number handed out before, whatever
	// the acknowledger did.
	var before uint64
	if err := db.Badger().View(func(txn *badger.Txn) error {
		var err error
		before, err = getCounter(txn, metaOutboxSeq)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= subjects; i++ {
		r := testRecord(fmt.Sprintf("R%d", i), i)
		version[i]++
		r.Version, r.Summary = version[i], "last"
		if err := db.UpdateRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	entries, pending := pageEntries(t, db), mustPending(t, db)
	if n, _ := db.OutboxLen(); n != len(entries) || n != len(pending) {
		t.Fatalf("OutboxLen %d, page entries %d, pending %d", n, len(entries), len(pending))
	}
	last := map[string]uint64{}
	for _, it := range pending {
		last[it.Subject] = max(last[it.Subject], it.Seq)
	}
	for i := 1; i <= subjects; i++ {
		if last[testSubject(i)] <= before {
			t.Fatalf("subject %d: its last change is not marked (entries %+v, numbers before it up to %d)", i, pending, before)
		}
	}
}

// pageEntries decodes every outbox page of db, in key order.
func pageEntries(t *testing.T, db *DB) []OutboxItem {
	t.Helper()
	var out []OutboxItem
	p := []byte{famOutboxPage, '/'}
	err := db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: true})
		defer it.Close()
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			var err error
			if _, out, err = readPage(it.Item(), out); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
