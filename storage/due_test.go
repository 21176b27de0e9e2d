package storage

import (
	"context"
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

// releaseThrough releases every marker up to a day, as the node's sweep
// does, and returns how many subjects were marked.
func releaseThrough(db *DB, through credit.Date) (int, error) {
	total := 0
	for {
		items, err := db.DueSubjects(through, nil, 0)
		if err != nil || len(items) == 0 {
			return total, err
		}
		n, err := db.ReleaseDue(items, nil)
		total += n
		if err != nil {
			return total, err
		}
	}
}

func mustRelease(t *testing.T, db *DB, through credit.Date) int {
	t.Helper()
	n, err := releaseThrough(db, through)
	if err != nil {
		t.Fatalf("release: %v", err)
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

func TestDueSubjectsReadsWithoutConsuming(t *testing.T) {
	db := openTest(t, Options{Boundaries: tenDays})
	d := credit.NewDate(1969, 12, 25) // days before 1970 are negative
	mustSubmit(t, db, decidedOn(testRecord("X1", 1), d), decidedOn(testRecord("X2", 2), d+1), decidedOn(testRecord("X3", 3), d+2))
	drainOutbox(t, db)
	items, err := db.DueSubjects(d+11, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []DueItem{{Day: d + 10, Subject: testSubject(1)}, {Day: d + 11, Subject: testSubject(2)}}
	if !sameDue(items, want) {
		t.Fatalf("DueSubjects = %+v, want %+v", items, want)
	}
	// Reading consumed nothing: a crash before ReleaseDue loses no work.
	if again, err := db.DueSubjects(d+11, nil, 1); err != nil || !sameDue(again, want[:1]) {
		t.Fatalf("DueSubjects again (limit 1) = %+v, %v", again, err)
	}
	// After a marker, the scan goes on past it.
	if rest, err := db.DueSubjects(d+11, &items[0], 0); err != nil || !sameDue(rest, want[1:]) {
		t.Fatalf("DueSubjects after the first = %+v, %v", rest, err)
	}
	if n, err := db.OutboxLen(); err != nil || n != 0 {
		t.Fatalf("reading due markers marked %d subjects (%v)", n, err)
	}
	// Releasing subject 1 chains its next due day.
	if n, err := db.ReleaseDue(items, []DueItem{{Day: d + 500, Subject: testSubject(1)}}); err != nil || n != 2 {
		t.Fatalf("ReleaseDue = %d, %v", n, err)
	}
	if left, err := db.DueSubjects(d+100, nil, 0); err != nil || len(left) != 1 || left[0].Subject != testSubject(3) {
		t.Fatalf("left after the release: %+v, %v", left, err)
	}
	if left, err := db.DueSubjects(d+500, nil, 0); err != nil || !sameDue(left[1:], []DueItem{{Day: d + 500, Subject: testSubject(1)}}) {
		t.Fatalf("the chained marker: %+v, %v", left, err)
	}
	if _, err := db.ReleaseDue(make([]DueItem, maxReleaseBatch+1), nil); err == nil {
		t.Fatal("ReleaseDue took more items than one transaction holds")
	}
}

// sameDue compares markers by day and subject.
func sameDue(a, b []DueItem) bool {
	return slices.EqualFunc(a, b, func(x, y DueItem) bool { return x.Day == y.Day && x.Subject == y.Subject })
}

// TestReleaseKeepsAMarkerRewrittenMeanwhile: a record written between
// DueSubjects and ReleaseDue that sets the same marker keeps it.
func TestReleaseKeepsAMarkerRewrittenMeanwhile(t *testing.T) {
	db := openTest(t, Options{Boundaries: tenDays})
	d := credit.NewDate(2026, 4, 1)
	mustSubmit(t, db, decidedOn(testRecord("W1", 1), d))
	items, err := db.DueSubjects(d+10, nil, 0)
	if err != nil || len(items) != 1 {
		t.Fatalf("DueSubjects = %+v, %v", items, err)
	}
	mustSubmit(t, db, decidedOn(testRecord("W2", 1), d)) // same subject, same day
	if n, err := db.ReleaseDue(items, nil); err != nil || n != 1 {
		t.Fatalf("ReleaseDue = %d, %v", n, err)
	}
	if left, err := db.DueSubjects(d+10, nil, 0); err != nil || !sameDue(left, items) {
		t.Fatalf("the marker W2 set is gone: %+v, %v", left, err)
	}
	again, _ := db.DueSubjects(d+10, nil, 0)
	if n, err := db.ReleaseDue(again, nil); err != nil || n != 1 {
		t.Fatalf("second ReleaseDue = %d, %v", n, err)
	}
	if left, err := db.DueSubjects(d+10, nil, 0); err != nil || len(left) != 0 {
		t.Fatalf("markers left after releasing what was read: %+v, %v", left, err)
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
	if n, err := releaseThrough(plain, d+100); err != nil || n != 0 {
		t.Fatalf("without Boundaries a release marked %d, %v", n, err)
	}
	if err := plain.RebuildDue(context.Background(), "v1"); err == nil {
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
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := db.RebuildDue(cancelled, "catalog-7"); err == nil {
		t.Fatal("a cancelled rebuild succeeded")
	}
	if v, err := db.DueVersion(); err != nil || v != "" {
		t.Fatalf("a cancelled rebuild recorded version %q (%v)", v, err)
	}
	if err := db.RebuildDue(context.Background(), "catalog-7"); err != nil {
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
	if _, err := db.DueSubjects(credit.NewDate(2026, 1, 1), nil, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("DueSubjects after Close: %v", err)
	}
	if _, err := db.ReleaseDue([]DueItem{{Day: 1, Subject: testSubject(1)}}, nil); !errors.Is(err, ErrClosed) {
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

// TestReleaseTooLargeIsAnError: a release that does not fit one
// transaction fails loudly instead of releasing nothing in silence.
func TestReleaseTooLargeIsAnError(t *testing.T) {
	db := openTest(t, Options{Boundaries: tenDays})
	d := credit.NewDate(2026, 5, 4)
	recs := make([]credit.Record, 50)
	for i := range recs {
		recs[i] = decidedOn(testRecord(fmt.Sprintf("L%d", i), i), d)
	}
	mustSubmit(t, db, recs...)
	items, err := db.DueSubjects(d+10, nil, 0)
	if err != nil || len(items) != 50 {
		t.Fatalf("DueSubjects = %d, %v", len(items), err)
	}
	db.budgetBytes = 512 // far less than 50 markers and outbox marks need
	if n, err := db.ReleaseDue(items, nil); !errors.Is(err, ErrRecordTooLarge) || n != 0 {
		t.Fatalf("an oversized release = %d, %v", n, err)
	}
	if left, err := db.DueSubjects(d+10, nil, 0); err != nil || len(left) != 50 {
		t.Fatalf("the refused release changed the markers: %d left, %v", len(left), err)
	}
}
