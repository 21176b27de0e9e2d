package storage

import (
	"errors"
	"testing"
	"time"

	"credfed/credit"
)

// TestEachRecordFacts: every record's latest version, with the first
// version's recording time; a callback's error stops the walk.
func TestEachRecordFacts(t *testing.T) {
	db := openTest(t, Options{})
	first := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	a, b := testRecord("A-1", 1), testRecord("B-1", 2)
	a.RecordedAt, b.RecordedAt = first, first.Add(time.Hour)
	b.Department, b.CatalogItem, b.Severity = "tax", "TAX-SERIOUS", credit.Serious
	mustSubmit(t, db, a, b)
	next := a
	next.Version, next.RecordedAt, next.Status, next.Reason = 2, first.AddDate(0, 1, 0), credit.StatusDisputed, "objection"
	if err := db.UpdateRecord(next); err != nil {
		t.Fatal(err)
	}
	got := map[string]RecordFacts{}
	if err := db.EachRecordFacts(func(f RecordFacts) error {
		got[f.Department] = f
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string]RecordFacts{
		testDept: {Department: testDept, CatalogItem: "FD-001", Polarity: credit.Negative, Severity: credit.Ordinary,
			Status: credit.StatusDisputed, DecidedOn: a.DecidedOn, FirstRecordedAt: first},
		"tax": {Department: "tax", CatalogItem: "TAX-SERIOUS", Polarity: credit.Negative, Severity: credit.Serious,
			Status: credit.StatusActive, DecidedOn: b.DecidedOn, FirstRecordedAt: first.Add(time.Hour)},
	}
	if len(got) != 2 {
		t.Fatalf("facts %+v", got)
	}
	for k, w := range want {
		g := got[k]
		if g.Department != w.Department || g.CatalogItem != w.CatalogItem || g.Polarity != w.Polarity || g.Severity != w.Severity ||
			g.Status != w.Status || g.DecidedOn != w.DecidedOn || !g.FirstRecordedAt.Equal(w.FirstRecordedAt) {
			t.Errorf("%s: %+v, want %+v", k, g, w)
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := db.EachRecordFacts(func(RecordFacts) error { n++; return stop }); err != stop || n != 1 {
		t.Errorf("a callback's error: %v after %d records, want it as is after 1", err, n)
	}
}
