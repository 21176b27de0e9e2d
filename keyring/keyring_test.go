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

// movingRing is a ring whose current version moves to the next the first
// time the index is read: a key switch applied, and the district's
// republishing after it, between the ring's read and the index's.
type movingRing struct{ versions []credit.Pseudonym }

func (m *movingRing) Pseudonym(string) credit.Pseudonym { return m.versions[len(m.versions)-1] }
func (m *movingRing) IndexPseudonyms(string) []credit.Pseudonym {
	return append([]credit.Pseudonym(nil), m.versions...)
}
func (m *movingRing) AuditPseudonyms(id string) []credit.Pseudonym { return m.IndexPseudonyms(id) }

// TestRead_FollowsASwitchDuringTheRead: the index read finds the subject
// withdrawn from under the old pseudonym and published under the new one,
// which the ring read before it did not name; Read reads again under the
// ring's versions after the read and finds the entry.
func TestRead_FollowsASwitchDuringTheRead(t *testing.T) {
	ring := &movingRing{versions: []credit.Pseudonym{p(1)}}
	var reads []credit.Pseudonym
	lookup := func(_ context.Context, q credit.Pseudonym, _ bool) ([]consensus.IndexEntry, uint64, error) {
		reads = append(reads, q)
		if len(ring.versions) == 1 {
			ring.versions = append(ring.versions, p(2)) // the switch, then the republishing
		}
		if q == p(2) {
			return []consensus.IndexEntry{entry("a", 1, 8)}, 30, nil
		}
		return nil, 30, nil // withdrawn under p(1)
	}
	live, got, _, err := Read(context.Background(), lookup, ring, "id", false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []consensus.IndexEntry{entry("a", 1, 8)}) || !reflect.DeepEqual(live, []credit.Pseudonym{p(1), p(2)}) {
		t.Fatalf("entries %+v under %v (reads %v)", got, live, reads)
	}
	// A ring that does not move: one read.
	reads = nil
	if _, got, _, err := Read(context.Background(), lookup, ring, "id", false); err != nil || len(got) != 1 || len(reads) != 2 {
		t.Fatalf("a still ring: %+v, %v, reads %v", got, err, reads)
	}
}

// TestRead_Bounded: a ring that moves on every read is read a bounded
// number of times, and the entries returned are those read under the
// pseudonyms returned.
func TestRead_Bounded(t *testing.T) {
	ring := &movingRing{versions: []credit.Pseudonym{p(1)}}
	n := 0
	lookup := func(_ context.Context, q credit.Pseudonym, _ bool) ([]consensus.IndexEntry, uint64, error) {
		n++
		last := ring.versions[len(ring.versions)-1]
		ring.versions = []credit.Pseudonym{p(last[0] + 1)}
		return []consensus.IndexEntry{entry("a", int(q[0]), 1)}, 1, nil
	}
	live, got, _, err := Read(context.Background(), lookup, ring, "id", false)
	if err != nil || n != readAttempts || len(live) != 1 || len(got) != 1 || got[0].Summary.Negative != int(live[0][0]) {
		t.Fatalf("%d reads; entries %+v under %v, %v", n, got, live, err)
	}
}
