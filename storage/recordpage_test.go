package storage

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"credfed/credit"
)

// recIDs are the records' ids.
func recIDs(rs []credit.Record) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// pageIDs reads every page of q and returns the ids in order, and the
// number of pages.
func pageIDs(t *testing.T, db *DB, q RecordQuery) ([]string, int) {
	t.Helper()
	var out []string
	pages := 0
	for {
		p, err := db.RecordPage(q)
		if err != nil {
			t.Fatalf("RecordPage(%+v): %v", q, err)
		}
		pages++
		if pages > 100 {
			t.Fatalf("RecordPage(%+v): more than 100 pages", q)
		}
		out = append(out, recIDs(p.Records)...)
		if p.Next == "" {
			return out, pages
		}
		if q.After != "" && p.Next <= q.After {
			t.Fatalf("RecordPage: next %q does not move past after %q", p.Next, q.After)
		}
		q.After = p.Next
	}
}

func TestRecordPage(t *testing.T) {
	db := openTest(t, Options{})
	var recs []credit.Record
	for i := range 25 {
		r := testRecord(fmt.Sprintf("P%02d", i), i)
		if i%3 == 0 {
			r.CatalogItem = "FD-002"
		}
		recs = append(recs, r)
	}
	// Another department whose name starts with this one's, and one whose
	// name this one's starts with: neither leaks in.
	longer, shorter := testRecord("P00x", 1), testRecord("P01x", 1)
	longer.Department, shorter.Department = testDept+"-x", testDept[:5]
	mustSubmit(t, db, append(recs, longer, shorter)...)
	// A later version of one record: the page shows its latest.
	v2 := recs[4]
	v2.Version, v2.Status, v2.Reason = 2, credit.StatusDisputed, "objection"
	if err := db.UpdateRecord(v2); err != nil {
		t.Fatal(err)
	}

	var want []string
	for _, r := range recs {
		want = append(want, r.ID)
	}
	all, err := db.RecordPage(RecordQuery{Department: testDept})
	if err != nil {
		t.Fatal(err)
	}
	if got := recIDs(all.Records); !slices.Equal(got, want) || all.Next != "" {
		t.Fatalf("one page of all: %v next %q, want %v", got, all.Next, want)
	}
	for _, r := range all.Records {
		if r.Department != testDept {
			t.Fatalf("record %s of %s", r.ID, r.Department)
		}
		if r.ID == v2.ID && (r.Version != 2 || r.Status != credit.StatusDisputed) {
			t.Fatalf("record %s: version %d %s, want the latest (2, disputed)", r.ID, r.Version, r.Status)
		}
	}

	// Pages of 10 chain to the same list; the last is short and has no next.
	got, pages := pageIDs(t, db, RecordQuery{Department: testDept, Limit: 10})
	if !slices.Equal(got, want) || pages != 3 {
		t.Fatalf("pages of 10: %v in %d pages, want %v in 3", got, pages, want)
	}
	// A page that ends exactly at the last record has no next.
	if p, err := db.RecordPage(RecordQuery{Department: testDept, Limit: 25}); err != nil || len(p.Records) != 25 || p.Next != "" {
		t.Fatalf("a page of exactly all: %d records next %q, %v", len(p.Records), p.Next, err)
	}
	// After is exclusive, and need not be a stored id.
	if p, err := db.RecordPage(RecordQuery{Department: testDept, After: "P20", Limit: 2}); err != nil || !slices.Equal(recIDs(p.Records), []string{"P21", "P22"}) || p.Next != "P22" {
		t.Fatalf("after P20: %v next %q, %v", recIDs(p.Records), p.Next, err)
	}
	if p, err := db.RecordPage(RecordQuery{Department: testDept, After: "P205"}); err != nil || recIDs(p.Records)[0] != "P21" {
		t.Fatalf("after P205: %v, %v", recIDs(p.Records), err)
	}
	if p, err := db.RecordPage(RecordQuery{Department: testDept, After: "Z"}); err != nil || len(p.Records) != 0 || p.Next != "" {
		t.Fatalf("after the last: %v next %q, %v", recIDs(p.Records), p.Next, err)
	}
	if p, err := db.RecordPage(RecordQuery{Department: "tax"}); err != nil || len(p.Records) != 0 || p.Next != "" {
		t.Fatalf("a department without records: %v, %v", recIDs(p.Records), err)
	}

	// Filters.
	var item2, disputed []string
	for _, r := range recs {
		if r.CatalogItem == "FD-002" {
			item2 = append(item2, r.ID)
		}
	}
	disputed = []string{v2.ID}
	if got, _ := pageIDs(t, db, RecordQuery{Department: testDept, CatalogItem: "FD-002", Limit: 3}); !slices.Equal(got, item2) {
		t.Fatalf("item FD-002: %v, want %v", got, item2)
	}
	if got, _ := pageIDs(t, db, RecordQuery{Department: testDept, Status: credit.StatusDisputed}); !slices.Equal(got, disputed) {
		t.Fatalf("disputed: %v, want %v", got, disputed)
	}
	if got, _ := pageIDs(t, db, RecordQuery{Department: testDept, CatalogItem: "FD-002", Status: credit.StatusDisputed}); len(got) != 0 {
		t.Fatalf("FD-002 and disputed: %v, want none", got)
	}
	if got, _ := pageIDs(t, db, RecordQuery{Department: testDept, CatalogItem: "NO-SUCH"}); len(got) != 0 {
		t.Fatalf("an unknown item: %v, want none", got)
	}
}

// TestRecordPageScanIsBounded: a filter that matches little examines at
// most recordScan records per page and hands back the cursor.
func TestRecordPageScanIsBounded(t *testing.T) {
	db := openTest(t, Options{})
	var recs []credit.Record
	for i := range 20 {
		recs = append(recs, testRecord(fmt.Sprintf("S%02d", i), i))
	}
	recs[17].CatalogItem = "FD-002"
	mustSubmit(t, db, recs...)
	defer func(n int) { recordScan = n }(recordScan)
	recordScan = 5
	p, err := db.RecordPage(RecordQuery{Department: testDept, CatalogItem: "FD-002"})
	if err != nil || len(p.Records) != 0 || p.Next != "S04" {
		t.Fatalf("first page: %v next %q, %v; want none and next S04", recIDs(p.Records), p.Next, err)
	}
	got, pages := pageIDs(t, db, RecordQuery{Department: testDept, CatalogItem: "FD-002"})
	if !slices.Equal(got, []string{"S17"}) || pages != 4 {
		t.Fatalf("all pages: %v in %d pages, want [S17] in 4", got, pages)
	}
}

// TestRecordPageRefusesBadQueries: each bad field is its own typed error,
// which never repeats the value.
func TestRecordPageRefusesBadQueries(t *testing.T) {
	db := openTest(t, Options{})
	mustSubmit(t, db, testRecord("B1", 1))
	secret := "99000000000000001X"
	long := strings.Repeat("x", maxKeyPart+1)
	for _, c := range []struct {
		q     RecordQuery
		field string
	}{
		{RecordQuery{}, "department"},
		{RecordQuery{Department: long}, "department"},
		{RecordQuery{Department: "a\x00" + secret}, "department"},
		{RecordQuery{Department: testDept, After: secret + "\x00"}, "after"},
		{RecordQuery{Department: testDept, After: long}, "after"},
		{RecordQuery{Department: testDept, CatalogItem: secret + "\x00"}, "catalog_item"},
		{RecordQuery{Department: testDept, Status: credit.Status(secret)}, "status"},
		{RecordQuery{Department: testDept, Limit: -1}, "limit"},
		{RecordQuery{Department: testDept, Limit: MaxRecordLimit + 1}, "limit"},
	} {
		p, err := db.RecordPage(c.q)
		var qe *QueryError
		if !errors.As(err, &qe) || !errors.Is(err, ErrInvalidQuery) || qe.Field != c.field || len(p.Records) != 0 {
			t.Errorf("%+v: %v, want a QueryError on %s", c.q, err, c.field)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), long) {
			t.Errorf("%q repeats the value", err)
		}
	}
	// The limits themselves are accepted.
	for _, n := range []int{1, MaxRecordLimit} {
		if p, err := db.RecordPage(RecordQuery{Department: testDept, Limit: n}); err != nil || len(p.Records) != 1 {
			t.Errorf("limit %d: %v, %v", n, recIDs(p.Records), err)
		}
	}
}
