package audit

import (
	"strings"
	"testing"
	"unicode/utf8"

	"credfed/storage"
)

// TestBound: text within the bound is kept as it is; longer text is cut at
// a rune boundary within the bound, ending in "…"; control, format and
// invisible characters and invalid bytes become U+FFFD.
func TestBound(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"案件 R-1", "案件 R-1"},
		{strings.Repeat("a", 10), strings.Repeat("a", 10)},
		{strings.Repeat("a", 11), strings.Repeat("a", 7) + "…"},
		{"案案案案", "案案…"}, // 12 bytes: two runes and the ellipsis fit in 10
		{"a\u202eb\x07c", "a\ufffdb\ufffdc"},
		{"a\xffb", "a\ufffdb"},
		{"罚\u3164款", "罚\ufffd款"},
	} {
		got := Bound(c.in, 10)
		if got != c.want || len(got) > 10 || !utf8.ValidString(got) {
			t.Errorf("Bound(%+q, 10) = %+q, want %+q", c.in, got, c.want)
		}
	}
}

// TestRecordBoundsEntries: what the recorder writes keeps no field over its
// bound, nor a control character, whatever the caller put in the entry;
// the notes go in the same append, after the entry.
func TestRecordBoundsEntries(t *testing.T) {
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := New(db.Audit(), "zhejiang/quzhou", nil, nil, nil)
	huge := strings.Repeat("案", 100_000) + "\u202e\a"
	recs := []string{"d/" + huge}
	e := storage.AuditEntry{Operation: "lookup", Decision: storage.DecisionDenied, User: huge, Purpose: huge, Reference: huge,
		Authorization: huge, Authentication: huge, Institution: huge, Reason: huge, Records: recs}
	note := storage.AuditEntry{Operation: "lookup.note", Decision: storage.DecisionAllowed, Reference: "r\u2028"}
	if err := r.Record(e, note); err != nil {
		t.Fatal(err)
	}
	if recs[0] != "d/"+huge {
		t.Fatal("Record changed the caller's records slice")
	}
	var got []storage.AuditEntry
	if err := db.Audit().Range(1, 2, func(e storage.AuditEntry) error {
		got = append(got, e)
		return nil
	}); err != nil || len(got) != 2 {
		t.Fatalf("%d entries, %v", len(got), err)
	}
	w := got[0]
	for _, f := range []struct {
		v   string
		max int
	}{{w.User, MaxField}, {w.Purpose, MaxField}, {w.Reference, MaxField}, {w.Authorization, MaxField}, {w.Authentication, MaxField},
		{w.Institution, MaxName}, {w.Reason, MaxName}, {w.Records[0], MaxName}} {
		if len(f.v) > f.max || len(f.v) < f.max-6 || strings.ContainsAny(f.v, "\u202e\a") || !strings.HasSuffix(f.v, "…") {
			t.Errorf("a field of %d bytes kept (bound %d)", len(f.v), f.max)
		}
	}
	if got[1].Operation != "lookup.note" || got[1].Reference != "r\ufffd" || got[1].Node != "zhejiang/quzhou" {
		t.Errorf("note: %+v", got[1])
	}
}
