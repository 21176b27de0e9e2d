package storage

import (
	"fmt"
	"testing"
	"time"

	"credfed/credit"
)

// newestIDs pages through NewestRecords with page size n and returns the
// ids in the order returned, failing on a page that is out of order.
func newestIDs(t *testing.T, db *DB, n int, keep func(RecordHead) bool) []string {
	t.Helper()
	var ids []string
	var after *RecordPosition
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
		page, err := db.NewestRecords(NewestQuery{After: after, Limit: n, Keep: keep})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > n {
			t.Fatalf("page of %d records, limit %d", len(page), n)
		}
		for i, p := range page {
			if after != nil && !after.Before(p.Position) {
				t.Fatalf("record %s at or before the cursor", p.Record.ID)
			}
			if i > 0 && !page[i-1].Position.Before(p.Position) {
				t.Fatalf("page out of order at %s", p.Record.ID)
			}
			if p.Position.Tie != RecordTie(p.Record.Department, p.Record.ID) {
				t.Fatalf("record %s has the tie of another", p.Record.ID)
			}
			ids = append(ids, p.Record.ID)
		}
		if len(page) < n {
			return ids
		}
		after = &page[len(page)-1].Position
	}
}

func TestNewestRecordsOrderAndPaging(t *testing.T) {
	db := openTest(t, Options{})
	base := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	var recs []credit.Record
	// 25 records, recorded one minute apart, and 5 more sharing one time.
	for i := range 25 {
		r := testRecord(fmt.Sprintf("N-%02d", i), i)
		r.RecordedAt = base.Add(time.Duration(i) * time.Minute)
		recs = append(recs, r)
	}
	for i := range 5 {
		r := testRecord(fmt.Sprintf("T-%d", i), 100+i)
		r.RecordedAt = base.Add(time.Hour)
		recs = append(recs, r)
	}
	mustSubmit(t, db, recs...)
	all := func(RecordHead) bool { return true }

	whole := newestIDs(t, db, MaxNewest, all)
	if len(whole) != 30 {
		t.Fatalf("one page holds %d records, want 30", len(whole))
	}
	// The five sharing the latest time come first, then N-24 … N-00.
	for i, id := range whole[5:] {
		if want := fmt.Sprintf("N-%02d", 24-i); id != want {
			t.Fatalf("position %d is %s, want %s (order %v)", 5+i, id, want, whole)
		}
	}
	for _, n := range []int{1, 2, 7, 29, 30} {
		got := newestIDs(t, db, n, all)
		if fmt.Sprint(got) != fmt.Sprint(whole) {
			t.Errorf("pages of %d: %v, want %v", n, got, whole)
		}
	}

	// keep decides on the head alone.
	even := func(h RecordHead) bool { return h.RecordedAt.Minute()%2 == 0 && h.RecordedAt.Hour() == 9 }
	got := newestIDs(t, db, 4, even)
	if len(got) != 13 || got[0] != "N-24" || got[12] != "N-00" {
		t.Errorf("filtered: %v, want the 13 even minutes newest first", got)
	}

	if page, err := db.NewestRecords(NewestQuery{Keep: all}); err != nil || len(page) != 0 {
		t.Errorf("limit 0: %d records, %v", len(page), err)
	}
}

// A correction or a status change writes a new RecordedAt; the record
// keeps its place, which is its first recording.
func TestNewestRecordsKeepPlaceAfterUpdate(t *testing.T) {
	db := openTest(t, Options{})
	base := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	a, b := testRecord("OLD", 1), testRecord("NEW", 2)
	a.RecordedAt, b.RecordedAt = base, base.Add(time.Minute)
	mustSubmit(t, db, a, b)
	next := a
	next.Version, next.Status, next.Reason, next.RecordedAt = 2, credit.StatusDisputed, "objection", base.Add(time.Hour)
	if err := db.UpdateRecord(next); err != nil {
		t.Fatal(err)
	}
	var heads []RecordHead
	page, err := db.NewestRecords(NewestQuery{Limit: 10, Keep: func(h RecordHead) bool { heads = append(heads, h); return true }})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || page[0].Record.ID != "NEW" || page[1].Record.ID != "OLD" {
		t.Fatalf("order after an update: %+v", page)
	}
	if !page[1].Position.RecordedAt.Equal(base) || page[1].Record.Version != 2 || page[1].Record.Status != credit.StatusDisputed {
		t.Errorf("the updated record: position %v, record %+v; want its first recording time and its latest version", page[1].Position.RecordedAt, page[1].Record)
	}
	sawDisputed := false
	for _, h := range heads {
		if h.Status == credit.StatusDisputed && h.Version == 2 && h.CatalogItem == "FD-001" && h.District == "tianjin/heping" && h.DecidedOn == a.DecidedOn {
			sawDisputed = true
		}
	}
	if !sawDisputed {
		t.Errorf("keep did not see the latest version's head: %+v", heads)
	}
	// Filtered on the status, the disputed record alone.
	page, err = db.NewestRecords(NewestQuery{Limit: 10, Keep: func(h RecordHead) bool { return h.Status == credit.StatusDisputed }})
	if err != nil || len(page) != 1 || page[0].Record.ID != "OLD" {
		t.Errorf("disputed only: %+v, %v", page, err)
	}
}

func TestRecordPositionOrder(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := RecordPosition{RecordedAt: at, District: "a/b", Tie: RecordTie("d", "1")}
	newer := p
	newer.RecordedAt = at.Add(time.Nanosecond)
	otherDistrict := p
	otherDistrict.District = "a/c"
	if !newer.Before(p) || p.Before(newer) {
		t.Error("a newer position is not first")
	}
	if !p.Before(otherDistrict) || otherDistrict.Before(p) {
		t.Error("equal times are not ordered by district")
	}
	if p.Before(p) {
		t.Error("a position is before itself")
	}
	if RecordTie("d", "1") == RecordTie("d1", "") || RecordTie("d", "1") == RecordTie("d", "2") {
		t.Error("ties of different records are equal")
	}
}

// BenchmarkNewestRecords measures one page (50) over 100,000 records of
// which one in a hundred is wanted.
func BenchmarkNewestRecords(b *testing.B) {
	db := openTest(b, Options{})
	base := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	const n = 100_000
	batch := make([]credit.Record, 0, 1000)
	for i := range n {
		r := testRecord(fmt.Sprintf("B-%06d", i), i)
		r.RecordedAt = base.Add(time.Duration(i) * time.Second)
		if i%100 == 0 {
			r.CatalogItem = "SERIOUS"
		}
		batch = append(batch, r)
		if len(batch) == cap(batch) {
			if _, err := db.SubmitRecords(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.ResetTimer()
	for b.Loop() {
		page, err := db.NewestRecords(NewestQuery{Limit: 50, Items: []string{"SERIOUS"}})
		if err != nil || len(page) != 50 {
			b.Fatalf("%d records, %v", len(page), err)
		}
	}
}

// Items skips the records of other catalog items undecoded; a record whose
// value happens to hold the pattern of a wanted item elsewhere is still
// told apart by its head.
func TestNewestRecordsItems(t *testing.T) {
	db := openTest(t, Options{})
	wanted, other, lookalike := testRecord("W-1", 1), testRecord("O-1", 2), testRecord("L-1", 3)
	wanted.CatalogItem = "SERIOUS-1"
	enc, err := encMode.Marshal("SERIOUS-1")
	if err != nil {
		t.Fatal(err)
	}
	lookalike.Summary = "\x03" + string(enc) + " in the summary"
	mustSubmit(t, db, wanted, other, lookalike)
	decided := 0
	page, err := db.NewestRecords(NewestQuery{Limit: 10, Items: []string{"SERIOUS-1", "SERIOUS-2"},
		Keep: func(h RecordHead) bool { decided++; return true }})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 1 || page[0].Record.ID != "W-1" || !page[0].Record.SameContent(wanted) {
		t.Fatalf("items filter: %+v", page)
	}
	if decided != 1 {
		t.Errorf("keep was asked about %d heads, want 1 (the others are of other items)", decided)
	}
	if page, err := db.NewestRecords(NewestQuery{Limit: 10}); err != nil || len(page) != 3 {
		t.Errorf("no filter: %d records, %v", len(page), err)
	}
}
