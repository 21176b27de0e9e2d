package credit

import (
	"slices"
	"testing"
)

// TestDiffAndStrandingConflicts: an added item is a change and no
// conflict; a dropped item, a shortened period, a changed disclosure or
// lists are conflicts naming item and field; a longer period is not.
func TestDiffAndStrandingConflicts(t *testing.T) {
	old := DefaultCatalog()
	next := DefaultCatalog()
	next.Version = old.Version + 1
	it := next.Items[0]
	it.Code = "NEW-ITEM"
	next.Items = append(next.Items, it)
	changes := DiffCatalogs(old, next)
	if len(changes) != 1 || changes[0].Kind != "item" || changes[0].Code != "NEW-ITEM" || changes[0].Change != "added" {
		t.Fatalf("changes %+v", changes)
	}
	if cs := StrandingConflicts(old, next); len(cs) != 0 {
		t.Fatalf("an added item: conflicts %+v", cs)
	}
	next.Items[1].DisplayPeriod = Period{Years: next.Items[1].DisplayPeriod.Years + 1}
	next.Items[2].RetentionPeriod = Period{Days: 1}
	next.Items[3].Disclosure = Internal
	next.Items[4].Lists = append(slices.Clone(next.Items[4].Lists), "X")
	dropped := next.Items[5].Code
	next.Items = slices.Delete(next.Items, 5, 6)
	got := map[string]string{}
	for _, c := range StrandingConflicts(old, next) {
		got[c.Item] = c.Field
	}
	want := map[string]string{old.Items[2].Code: "retention_period", old.Items[3].Code: "disclosure", old.Items[4].Code: "lists", dropped: "item"}
	if len(got) != len(want) {
		t.Fatalf("conflicts %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: conflict on %q, want %q", k, got[k], v)
		}
	}
	for _, c := range DiffCatalogs(old, next) {
		if c.Code == old.Items[1].Code && (c.Change != "changed" || !slices.Contains(c.Fields, "display_period")) {
			t.Errorf("a longer display period: %+v", c)
		}
	}
}
