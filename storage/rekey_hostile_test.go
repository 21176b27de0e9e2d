package storage

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// TestPseudonymVersionsOfHostileKeys: a key of the subject's range that is
// not one of its two forms (version 0 or 1 in the versioned form, a NUL
// with fewer or more than four bytes after it) is ErrCorrupt and names no
// subject; a subject extending another by a byte other than NUL stays
// apart; no subjects is an empty answer; an invalid subject is
// ErrInvalidRecord, names nothing, and the store is unchanged.
func TestPseudonymVersionsOfHostileKeys(t *testing.T) {
	s := testSubject(5)
	for name, suffix := range map[string][]byte{
		"version 0":        {0, 0, 0, 0, 0},
		"version 1":        {0, 0, 0, 0, 1},
		"a NUL alone":      {0},
		"five bytes after": {0, 0, 0, 0, 2, 9},
		"three bytes":      {0, 0, 0, 2},
	} {
		t.Run(name, func(t *testing.T) {
			db := openTest(t, Options{})
			if err := db.PutPseudonymsAt(1, map[string]credit.Pseudonym{s: pseudo(1)}); err != nil {
				t.Fatal(err)
			}
			v := pseudo(9)
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(append(pseudonymKey(s), suffix...), v[:]) })
			_, err := db.PseudonymVersionsOf([]string{s})
			if !errors.Is(err, ErrCorrupt) || strings.Contains(err.Error(), s) {
				t.Fatalf("err = %v, want ErrCorrupt naming no subject", err)
			}
		})
	}
	db := openTest(t, Options{})
	other := s + "\x01"
	if err := db.PutPseudonymsAt(1, map[string]credit.Pseudonym{s: pseudo(1), other: pseudo(2)}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutPseudonymsAt(4, map[string]credit.Pseudonym{other: pseudo(3)}); err != nil {
		t.Fatal(err)
	}
	all, err := db.PseudonymVersionsOf([]string{s, other, s})
	want := []map[uint32]credit.Pseudonym{{1: pseudo(1)}, {1: pseudo(2), 4: pseudo(3)}, {1: pseudo(1)}}
	if err != nil || !reflect.DeepEqual(all, want) {
		t.Fatalf("versions %v, %v; want %v", all, err, want)
	}
	if all, err := db.PseudonymVersionsOf(nil); err != nil || all == nil || len(all) != 0 {
		t.Fatalf("no subjects: %v, %v", all, err)
	}
	for _, bad := range []string{"", s + "\x00\x00\x00\x00\x04", strings.Repeat("9", maxKeyPart+1)} {
		all, err := db.PseudonymVersionsOf([]string{s, bad})
		if !errors.Is(err, ErrInvalidRecord) || all != nil || (bad != "" && strings.Contains(err.Error(), bad)) {
			t.Fatalf("subject %q: %v, %v", bad, all, err)
		}
	}
	if got, _ := db.PseudonymVersions(s); !reflect.DeepEqual(got, want[0]) {
		t.Fatalf("after invalid input: %v", got)
	}
}
