package storage

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"credfed/credit"
)

// tenDays is a Boundaries hook: a record's display ends ten days after its
// decision.
func tenDays(r credit.Record) []credit.Date { return []credit.Date{r.DecidedOn + 10} }

// drainOutbox acknowledges everything pending and returns the subjects.
func drainOutbox(t *testing.T, db *DB) []string {
	t.Helper()
	items := mustPending(t, db)
	if err := db.AckOutbox(items); err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for _, it := range items {
		subjects = append(subjects, it.Subject)
	}
	return subjects
}

func mustRelease(t *testing.T, db *DB, through credit.Date) int {
	t.Helper()
	n, err := db.ReleaseDue(through)
	if err != nil {
		t.Fatalf("ReleaseDue: %v", err)
	}
	return n
}

func decidedOn(r credit.Record, d credit.Date) credit.Record {
	r.DecidedOn, r.OccurredOn = d, d-1
	return r
}

func TestReleaseDueMarksSubjectsWhoseDisplayEnded(t *testing.T) {
	db := openTest(t, Options{Boundaries: tenDays})
	d := credit.NewDate(2026, 1, 5)
	mustSubmit(t, db,
		decidedOn(testRecord("A1", 1), d),    // due d+10
		decidedOn(testRecord("A2", 1), d+10), // due d+20
		decidedOn(testRecord("B1", 2), d+10), // due d+20
		decidedOn(testRecord("C1", 3), d+20), // due d+30
	)
	drainOutbox(t, db)

	if n := mustRelease(t, db, d+9); n != 0 {
		t.Fatalf("released %d subjects before any display ended", n)
	}
	if n := mustRelease(t, db, d+15); n != 1 {
		t.Fatalf("released %d subjects through d+15, want 1", n)
	}
	if got := drainOutbox(t, db); !slices.Equal(got, []string{testSubject(1)}) {
		t.Fatalf("outbox after the first release = %v", got)
	}
	if n := mustRelease(t, db, d+15); n != 0 {
		t.Fatalf("a second release of the same days marked %d subjects", n)
	}
	if n := mustRelease(t, db, d+20); n != 2 {
		t.Fatalf("released %d subjects through d+20, want 2", n)
	}
	if got := drainOutbox(t, db); !slices.Equal(got, []string{testSubject(1), testSubject(2)}) {
		t.Fatalf("outbox after the second release = %v", got)
	}
	if left := rawKeys(t, db, "e/"); len(left) != 1 {
		t.Fatalf("due markers left: %d, want 1 (subject 3)", len(left))
	}
}

func TestReleaseDueSpansTransactions(t *testing.T) {
	db := openTest(t, Options{Boundaries: tenDays})
	d := credit.NewDate(2026, 3, 2)
	n := maxReleaseBatch*2 + 7
	recs := make([]credit.Record, n)
	for i := range recs {
		recs[i] = decidedOn(testRecord(fmt.Sprintf("R%d", i), i), d)
	}
	mustSubmit(t, db, recs...)
	drainOutbox(t, db)
	if got := mustRelease(t, db, d+10); got != n {
		t.Fatalf("released %d subjects, want %d", got, n)
	}
	if got, err := db.OutboxLen(); err != nil || got != n {
		t.Fatalf("outbox holds %d (%v), want %d", got, err, n)
	}
}

func TestCorrectionAddsItsOwnDueDay(t *testing.T) {
	db := openTest(t, Options{Boundaries: tenDays})
	d := credit.NewDate(2026, 2, 2)
	r := decidedOn(testRecord("K1", 1), d)
	mustSubmit(t, db, r)
	next := decidedOn(r, d+30)
	next.Version = 2
	if err := db.UpdateRecord(next); err != nil {
		t.Fatal(err)
	}
	drainOutbox(t, db)
	// The old day's marker is stale but harmless; the new day has its own.
	if n := mustRelease(t, db, d+10); n != 1 {
		t.Fatalf("released %d through the first version's day", n)
	}
	if n := mustRelease(t, db, d+40); n != 1 {
		t.Fatalf("released %d through the corrected version's day", n)
	}
}

func TestRebuildDueCoversRecordsWrittenWithoutBoundaries(t *testing.T) {
	dir := t.TempDir()
	d := credit.NewDate(2025, 11, 3)
	plain, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.SubmitRecords([]credit.Record{decidedOn(testRecord("P1", 1), d), decidedOn(testRecord("P2", 2), d+1)}); err != nil {
		t.Fatal(err)
	}
	if n, err := plain.ReleaseDue(d + 100); err != nil || n != 0 {
		t.Fatalf("without Boundaries ReleaseDue = %d, %v", n, err)
	}
	if err := plain.RebuildDue("v1"); err == nil {
		t.Fatal("RebuildDue without Boundaries succeeded")
	}
	if err := plain.Close(); err != nil {
		t.Fatal(err)
	}

	db := openTest(t, Options{Dir: dir, Boundaries: tenDays})
	if v, err := db.DueVersion(); err != nil || v != "" {
		t.Fatalf("DueVersion before a rebuild = %q, %v", v, err)
	}
	drainOutbox(t, db)
	if err := db.RebuildDue("catalog-7"); err != nil {
		t.Fatal(err)
	}
	if v, err := db.DueVersion(); err != nil || v != "catalog-7" {
		t.Fatalf("DueVersion = %q, %v", v, err)
	}
	if n := mustRelease(t, db, d+10); n != 1 {
		t.Fatalf("released %d through the first record's day, want 1", n)
	}
	if n := mustRelease(t, db, d+11); n != 1 {
		t.Fatalf("released %d through the second record's day, want 1", n)
	}
}

func TestReleaseDueAfterClose(t *testing.T) {
	db, err := Open(Options{InMemory: true, Boundaries: tenDays})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ReleaseDue(credit.NewDate(2026, 1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReleaseDue after Close: %v", err)
	}
}

func TestDayKeysSortLikeDays(t *testing.T) {
	days := []credit.Date{credit.NewDate(1950, 1, 1), -1, 1, credit.NewDate(2026, 11, 22), credit.NewDate(2100, 1, 1)}
	for i := 1; i < len(days); i++ {
		a, b := dueKey(days[i-1], "z"), dueKey(days[i], "a")
		if string(a) >= string(b) {
			t.Fatalf("key of %v does not sort before key of %v", days[i-1], days[i])
		}
	}
}
