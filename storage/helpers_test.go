package storage

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

const testDept = "market-supervision"

// testSubject returns a synthetic identifier (test province 99).
func testSubject(n int) string { return fmt.Sprintf("99%016d", n) }

func testRecord(id string, subject int) credit.Record {
	return credit.Record{
		ID:             id,
		Subject:        testSubject(subject),
		CatalogItem:    "FD-001",
		DecisionNumber: "津市监罚〔2024〕" + id,
		OccurredOn:     credit.NewDate(2024, 3, 1),
		DecidedOn:      credit.NewDate(2024, 4, 2),
		Summary:        "administrative penalty for selling expired food",
		Department:     testDept,
		District:       "tianjin/heping",
		Polarity:       credit.Negative,
		Severity:       credit.Ordinary,
		LegalBasis:     "Food Safety Law art. 124",
		Status:         credit.StatusActive,
		Version:        1,
		CatalogVersion: 3,
	}
}

// openTest opens a store in a fresh temporary directory (or opts.Dir) and
// closes it at the end of the test.
func openTest(t testing.TB, opts Options) *DB {
	t.Helper()
	if opts.Dir == "" && !opts.InMemory {
		opts.Dir = t.TempDir()
	}
	if opts.GCInterval == 0 {
		opts.GCInterval = -1
	}
	db, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

func mustSubmit(t testing.TB, db *DB, recs ...credit.Record) []Outcome {
	t.Helper()
	out, err := db.SubmitRecords(recs)
	if err != nil {
		t.Fatalf("SubmitRecords: %v", err)
	}
	if len(out) != len(recs) {
		t.Fatalf("SubmitRecords: %d outcomes for %d records", len(out), len(recs))
	}
	return out
}

// rawKeys lists the keys under prefix, straight from Badger.
func rawKeys(t testing.TB, db *DB, prefix string) []string {
	t.Helper()
	var keys []string
	err := db.Badger().View(func(txn *badger.Txn) error {
		return scanPrefix(txn, []byte(prefix), false, func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatalf("scan %q: %v", prefix, err)
	}
	return keys
}
