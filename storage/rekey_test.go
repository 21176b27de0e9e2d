package storage

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"credfed/credit"

	"github.com/dgraph-io/badger/v4"
)

func pseudo(b byte) credit.Pseudonym {
	var p credit.Pseudonym
	p[0], p[15] = b, b
	return p
}

// TestPseudonymCacheByVersion: each version has its own pseudonyms;
// version 1 is the cache as it always was.
func TestPseudonymCacheByVersion(t *testing.T) {
	db := openTest(t, Options{InMemory: true})
	a, b := testSubject(1), testSubject(2)
	if err := db.PutPseudonyms(map[string]credit.Pseudonym{a: pseudo(1), b: pseudo(2)}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutPseudonymsAt(2, map[string]credit.Pseudonym{a: pseudo(21)}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutPseudonymsAt(3, map[string]credit.Pseudonym{a: pseudo(31)}); err != nil {
		t.Fatal(err)
	}
	v1, err := db.PseudonymsAt(1, []string{a, b})
	if err != nil || v1[a] != pseudo(1) || v1[b] != pseudo(2) {
		t.Fatalf("version 1: %v %v", v1, err)
	}
	v2, err := db.PseudonymsAt(2, []string{a, b})
	if err != nil || len(v2) != 1 || v2[a] != pseudo(21) {
		t.Fatalf("version 2: %v %v (b has none under it)", v2, err)
	}
	all, err := db.PseudonymVersions(a)
	if err != nil || !reflect.DeepEqual(all, map[uint32]credit.Pseudonym{1: pseudo(1), 2: pseudo(21), 3: pseudo(31)}) {
		t.Fatalf("versions of a: %v %v", all, err)
	}
	// Another subject's versions do not leak into b's (b is a's neighbour
	// in key order).
	if all, err := db.PseudonymVersions(b); err != nil || len(all) != 1 {
		t.Fatalf("versions of b: %v %v", all, err)
	}
	if err := db.PutPseudonymsAt(2, map[string]credit.Pseudonym{"bad\x00subject": pseudo(9)}); err == nil {
		t.Fatal("a subject with a NUL byte was cached")
	}
}

// TestMarkEverySubject: every subject with records, and every subject
// with only a cached pseudonym, is marked once; the markers drain as
// usual.
func TestMarkEverySubject(t *testing.T) {
	db := openTest(t, Options{InMemory: true})
	var recs []credit.Record
	for i := range 1500 { // more than a page
		recs = append(recs, testRecord(fmt.Sprintf("R%d", i), i))
	}
	recs = append(recs, testRecord("R-second", 7)) // a subject with two records
	mustSubmit(t, db, recs...)
	items, err := db.PendingSubjects(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.AckOutbox(items); err != nil {
		t.Fatal(err)
	}
	// Cached pseudonyms: of subjects with records (under two versions),
	// and of two without any left.
	gone := []string{testSubject(5000), testSubject(5001)}
	if err := db.PutPseudonyms(map[string]credit.Pseudonym{testSubject(3): pseudo(3), gone[0]: pseudo(4), gone[1]: pseudo(5)}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutPseudonymsAt(2, map[string]credit.Pseudonym{testSubject(3): pseudo(6), gone[1]: pseudo(7)}); err != nil {
		t.Fatal(err)
	}
	n, err := db.MarkEverySubject(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 1500+len(gone) {
		t.Fatalf("marked %d subjects, want %d", n, 1500+len(gone))
	}
	pending, err := db.PendingSubjects(0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range pending {
		got = append(got, it.Subject)
	}
	slices.Sort(got)
	var want []string
	for i := range 1500 {
		want = append(want, testSubject(i))
	}
	want = append(want, gone...)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("pending %d subjects, want %d (each once)", len(got), len(want))
	}
	// Nothing else changed: the records are all there, no due marker was
	// taken.
	if db.CountRecords() != int64(len(recs)) {
		t.Fatalf("%d records", db.CountRecords())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.MarkEverySubject(ctx); err == nil {
		t.Fatal("a canceled mark ran")
	}
}

// TestPseudonymVersionsOf: every version of several subjects in one read,
// in order; a subject whose identifier extends another's is not taken for
// one of its versions; a malformed version key is ErrCorrupt.
func TestPseudonymVersionsOf(t *testing.T) {
	db := openTest(t, Options{})
	s1 := testSubject(1)
	s2 := s1 + "7" // another subject, its key extends s1's
	s3 := testSubject(3)
	p := pseudo
	if err := db.PutPseudonymsAt(1, map[string]credit.Pseudonym{s1: p(1), s2: p(2)}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutPseudonymsAt(2, map[string]credit.Pseudonym{s1: p(3)}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutPseudonymsAt(3, map[string]credit.Pseudonym{s2: p(4)}); err != nil {
		t.Fatal(err)
	}
	all, err := db.PseudonymVersionsOf([]string{s2, s3, s1})
	if err != nil {
		t.Fatal(err)
	}
	want := []map[uint32]credit.Pseudonym{{1: p(2), 3: p(4)}, {}, {1: p(1), 2: p(3)}}
	if !reflect.DeepEqual(all, want) {
		t.Fatalf("versions %v, want %v", all, want)
	}
	one, err := db.PseudonymVersions(s1)
	if err != nil || !reflect.DeepEqual(one, want[2]) {
		t.Fatalf("PseudonymVersions = %v, %v", one, err)
	}
	if _, err := db.PseudonymVersionsOf([]string{"bad\x00subject"}); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("a subject with a NUL: %v", err)
	}
	bad, five := append(append(pseudonymKey(s3), 0), 1, 2), p(5)
	rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(bad, five[:]) })
	if _, err := db.PseudonymVersionsOf([]string{s1, s3}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a version key of 2 bytes: %v", err)
	}
}
