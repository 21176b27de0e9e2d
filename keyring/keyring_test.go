package keyring

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"testing"

	"credfed/consensus"
	"credfed/credit"
)

func p(b byte) credit.Pseudonym {
	var out credit.Pseudonym
	out[0] = b
	return out
}

func entry(d string, neg int, seq uint64) consensus.IndexEntry {
	return consensus.IndexEntry{District: d, Summary: credit.IndexSummary{Negative: neg}, Seq: seq}
}

// TestEntries_MergesAcrossVersions: per district the latest entry, the
// newer version's on a tie; strong for the first read only.
func TestEntries_MergesAcrossVersions(t *testing.T) {
	index := map[credit.Pseudonym][]consensus.IndexEntry{
		p(1): {entry("a", 1, 5), entry("b", 1, 9), entry("c", 1, 4)}, // old version
		p(2): {entry("a", 2, 7), entry("c", 3, 4), entry("d", 1, 1)}, // new version
	}
	var strong []bool
	lookup := func(_ context.Context, q credit.Pseudonym, s bool) ([]consensus.IndexEntry, uint64, error) {
		strong = append(strong, s)
		return index[q], uint64(10 * len(strong)), nil
	}
	got, applied, err := Entries(context.Background(), lookup, []credit.Pseudonym{p(1), p(2)}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := []consensus.IndexEntry{entry("a", 2, 7), entry("b", 1, 9), entry("c", 3, 4), entry("d", 1, 1)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("merged %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(strong, []bool{true, false}) || applied != 20 {
		t.Fatalf("reads strong %v, applied %d", strong, applied)
	}
	// One version: one read, as before rotations.
	strong = nil
	if got, _, _ := Entries(context.Background(), lookup, []credit.Pseudonym{p(2)}, true); len(got) != 3 || !reflect.DeepEqual(strong, []bool{true}) {
		t.Fatalf("one version: %+v %v", got, strong)
	}
	boom := errors.New("boom")
	if _, _, err := Entries(context.Background(), func(context.Context, credit.Pseudonym, bool) ([]consensus.IndexEntry, uint64, error) {
		return nil, 0, boom
	}, []credit.Pseudonym{p(1), p(2)}, false); !errors.Is(err, boom) {
		t.Fatalf("error: %v", err)
	}
}

func TestMatchesAndRings(t *testing.T) {
	if !Matches([]credit.Pseudonym{p(1), p(2)}, []credit.Pseudonym{p(3), p(2)}) || Matches([]credit.Pseudonym{p(1)}, []credit.Pseudonym{p(2)}) ||
		Matches([]credit.Pseudonym{{}}, []credit.Pseudonym{{}}) {
		t.Fatal("Matches")
	}
	if got := All(p(2), []credit.Pseudonym{p(1), p(2)}); !reflect.DeepEqual(got, []credit.Pseudonym{p(2), p(1)}) {
		t.Fatalf("All %v", got)
	}
	key := credit.PseudonymKey(bytes.Repeat([]byte{9}, 32))
	r := Or(nil, key)
	if r == nil || r.Pseudonym("x") != key.Pseudonym("x") || len(r.IndexPseudonyms("x")) != 1 || len(r.AuditPseudonyms("x")) != 1 {
		t.Fatal("the ring of one key")
	}
	if Or(nil, nil) != nil {
		t.Fatal("a ring without a key")
	}
	ring, err := consensus.NewPseudonymKeyRing(map[uint32]credit.PseudonymKey{1: key})
	if err != nil || Or(ring, nil) != Ring(ring) {
		t.Fatalf("a ring of its own: %v", err)
	}
}
