package storage

import (
	"testing"
)

func TestOutboxAck(t *testing.T) {
	db := openTest(t, Options{})
	mustSubmit(t, db, testRecord("O1", 1), testRecord("O2", 2), testRecord("O3", 3))
	if n, err := db.OutboxLen(); err != nil || n != 3 {
		t.Fatalf("OutboxLen = %d, %v", n, err)
	}
	page, err := db.PendingSubjects(2)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || page[0].Subject != testSubject(1) || page[1].Subject != testSubject(2) {
		t.Fatalf("PendingSubjects(2) = %+v", page)
	}
	if page[0].Seq == page[1].Seq {
		t.Fatalf("sequence numbers not distinct: %+v", page)
	}
	// Subject 1 changes after the drainer read it: its marker must stay.
	mustSubmit(t, db, testRecord("O4", 1))
	if err := db.AckOutbox(page); err != nil {
		t.Fatal(err)
	}
	// Sequence order: subject 3 (marked third), then subject 1 (re-marked).
	left := mustPending(t, db)
	if len(left) != 2 || left[0].Subject != testSubject(3) || left[1].Subject != testSubject(1) {
		t.Fatalf("after ack = %+v", left)
	}
	if left[1].Seq <= page[0].Seq {
		t.Fatalf("newer marker has seq %d, not above %d", left[1].Seq, page[0].Seq)
	}
	// Acking twice, or acking a subject with no marker, is harmless.
	if err := db.AckOutbox(append(page, OutboxItem{Subject: testSubject(9), Seq: 1})); err != nil {
		t.Fatal(err)
	}
	if err := db.AckOutbox(left); err != nil {
		t.Fatal(err)
	}
	if n, _ := db.OutboxLen(); n != 0 {
		t.Fatalf("OutboxLen after acking everything = %d", n)
	}
}

func TestPendingSubjectsAfter(t *testing.T) {
	db := openTest(t, Options{})
	mustSubmit(t, db, testRecord("PA1", 1), testRecord("PA2", 2), testRecord("PA3", 3))
	all := mustPending(t, db)
	if len(all) != 3 {
		t.Fatalf("pending = %+v", all)
	}
	rest, err := db.PendingSubjectsAfter(all[0].Seq, 0)
	if err != nil || len(rest) != 2 || rest[0] != all[1] || rest[1] != all[2] {
		t.Fatalf("after the first = %+v, %v", rest, err)
	}
	one, err := db.PendingSubjectsAfter(all[0].Seq, 1)
	if err != nil || len(one) != 1 || one[0] != all[1] {
		t.Fatalf("after the first, limit 1 = %+v, %v", one, err)
	}
	if none, err := db.PendingSubjectsAfter(all[2].Seq, 0); err != nil || len(none) != 0 {
		t.Fatalf("after the last = %+v, %v", none, err)
	}
}
