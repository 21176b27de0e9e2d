package rights

import (
	"testing"
	"time"

	"credfed/credit"
	"credfed/storage"
)

func TestMergeOneEntryPerLookup(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	coord := []storage.AuditEntry{
		{Operation: "lookup", Decision: storage.DecisionAllowed, LookupID: "L1", At: t0, Node: "tianjin", Institution: "hr", Role: "coordinator",
			User: "clerk-1", Purpose: "ADMIN-LICENSING", Reference: "case-1",
			Records: []string{"tianjin/heping/dept/R1", "tianjin/hexi/dept/R2", "tianjin/heping/dept/R3"}},
		{Operation: "lookup", Decision: storage.DecisionDenied, LookupID: "L2", At: t0},        // refused: not an access
		{Operation: "pseudonymize", Decision: storage.DecisionAllowed, LookupID: "L3", At: t0}, // not a lookup
		{Operation: "lookup", Decision: storage.DecisionAllowed, LookupID: "L4", At: t0.Add(time.Hour), Node: "tianjin", User: "clerk-2",
			Purpose: "LAW-ENFORCEMENT", Reference: "case-2"},
	}
	heping := []storage.AuditEntry{
		{Operation: "lookup.answer", Decision: storage.DecisionAllowed, LookupID: "L1", At: t0, Caller: "spiffe://demo/city/tianjin", User: "clerk-1"},
		// A lookup the asking coordinator kept out of its own audit log.
		{Operation: "lookup.answer", Decision: storage.DecisionAllowed, LookupID: "L9", At: t0.Add(2 * time.Hour),
			Caller: "spiffe://demo/city/tianjin", Institution: "rogue", Role: "coordinator", User: "clerk-9", Purpose: "ADMIN-LICENSING", Reference: "x"},
	}
	hexi := []storage.AuditEntry{
		{Operation: "lookup.answer", Decision: storage.DecisionAllowed, LookupID: "L1", At: t0, Caller: "spiffe://demo/city/tianjin", User: "clerk-1"},
	}
	answering := append(fromAnswering(heping, "tianjin/heping"), fromAnswering(hexi, "tianjin/hexi")...)
	cat := credit.DefaultCatalog()
	now := t0.Add(3 * time.Hour)
	log := merge(fromAsking(coord), answering, delays(cat), now)

	if len(log.Entries) != 2 {
		t.Fatalf("entries %+v, want L9 and L1 (L4 delayed)", log.Entries)
	}
	if log.Delayed != 1 {
		t.Errorf("delayed %d, want 1 (the LAW-ENFORCEMENT lookup)", log.Delayed)
	}
	if got := log.Entries[0]; got.LookupID != "L9" || got.Institution != "rogue" || got.Coordinator != "tianjin" || len(got.Districts) != 1 {
		t.Errorf("newest entry %+v, want the district-only lookup L9", got)
	}
	l1 := log.Entries[1]
	if l1.LookupID != "L1" || l1.User != "clerk-1" || l1.Institution != "hr" || len(l1.Districts) != 2 ||
		l1.Districts[0] != "tianjin/heping" || l1.Districts[1] != "tianjin/hexi" {
		t.Errorf("L1 %+v, want one entry from the coordinator with both districts", l1)
	}
	// Six months later the delayed lookup is shown.
	later := merge(fromAsking(coord), answering, delays(cat), t0.AddDate(0, 7, 0))
	if later.Delayed != 0 || len(later.Entries) != 3 {
		t.Errorf("after the delay: %d entries, %d delayed; want 3 and 0", len(later.Entries), later.Delayed)
	}
}

func TestCallerRegion(t *testing.T) {
	for in, want := range map[string]string{
		"spiffe://demo/city/tianjin":          "tianjin",
		"spiffe://demo/district/tianjin/hexi": "tianjin/hexi",
		"spiffe://demo":                       "",
		"https://x/y/z":                       "",
	} {
		if got := callerRegion(in); got != want {
			t.Errorf("callerRegion(%q) = %q, want %q", in, got, want)
		}
	}
}
