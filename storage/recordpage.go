package storage

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// Page sizes of RecordPage.
const (
	DefaultRecordLimit = 100
	MaxRecordLimit     = 500
	// MaxRecordScan bounds the records one page examines: a filter that
	// matches few of a large department's records answers a short (or
	// empty) page and the cursor to go on from, never a walk of them all.
	MaxRecordScan = 10_000
)

// recordScan is MaxRecordScan; tests lower it.
var recordScan = MaxRecordScan

// ErrInvalidQuery is matched (errors.Is) by every *QueryError.
var ErrInvalidQuery = errors.New("storage: invalid record query")

// QueryError is a RecordQuery refused as given. Field is the query's field
// (department, catalog_item, status, after, limit); Reason says what is
// wrong with it and never repeats its value.
type QueryError struct {
	Field, Reason string
}

func (e *QueryError) Error() string {
	return "storage: invalid record query: " + e.Field + " " + e.Reason
}

// Is makes a *QueryError match ErrInvalidQuery.
func (e *QueryError) Is(target error) bool { return target == ErrInvalidQuery }

// RecordQuery selects one page of a department's records.
type RecordQuery struct {
	// Department is whose records (required).
	Department string
	// CatalogItem and Status, when set, must equal the record's (latest
	// version's).
	CatalogItem string
	Status      credit.Status
	// After is the cursor: only records whose id sorts after it (bytewise),
	// the last id of the previous page or its Next; empty for the first
	// page.
	After string
	// Limit is the most records of the page, 1 to MaxRecordLimit; 0 is
	// DefaultRecordLimit.
	Limit int
}

// RecordPage is one page of a department's records.
type RecordPage struct {
	// Records are latest versions, in id order.
	Records []credit.Record
	// Next is the cursor of the next page (its After), empty when the
	// department has no more records after this page. A page may hold
	// fewer than Limit records and still have a Next (at most
	// MaxRecordScan records are examined per page).
	Next string
}

// statuses are the record statuses a query may ask for.
var statuses = []credit.Status{credit.StatusActive, credit.StatusDisputed, credit.StatusCorrected,
	credit.StatusRepaired, credit.StatusExpired, credit.StatusRevoked}

// check validates q and returns its limit.
func (q RecordQuery) check() (int, error) {
	part := func(field, s string, required bool) error {
		switch {
		case s == "" && required:
			return &QueryError{field, "is empty"}
		case len(s) > maxKeyPart:
			return &QueryError{field, fmt.Sprintf("is longer than %d bytes", maxKeyPart)}
		case strings.IndexByte(s, 0) >= 0:
			return &QueryError{field, "contains a NUL byte"}
		}
		return nil
	}
	if err := part("department", q.Department, true); err != nil {
		return 0, err
	}
	if err := part("catalog_item", q.CatalogItem, false); err != nil {
		return 0, err
	}
	if err := part("after", q.After, false); err != nil {
		return 0, err
	}
	if q.Status != "" && !slices.Contains(statuses, q.Status) {
		names := make([]string, len(statuses))
		for i, s := range statuses {
			names[i] = string(s)
		}
		return 0, &QueryError{"status", "must be one of " + strings.Join(names, ", ")}
	}
	switch {
	case q.Limit == 0:
		return DefaultRecordLimit, nil
	case q.Limit < 0 || q.Limit > MaxRecordLimit:
		return 0, &QueryError{"limit", fmt.Sprintf("must be from 1 to %d", MaxRecordLimit)}
	}
	return q.Limit, nil
}

// RecordPage returns the latest versions of q.Department's records that q
// selects, in id order, from the record after q.After on, examining at
// most MaxRecordScan of them. A query refused as given is a *QueryError
// (ErrInvalidQuery); no records is not an error.
func (db *DB) RecordPage(q RecordQuery) (RecordPage, error) {
	limit, err := q.check()
	if err != nil {
		return RecordPage{}, err
	}
	var page RecordPage
	p := recordKey(q.Department, "") // r/<department>\x00
	start := p
	if q.After != "" {
		// Ids hold no NUL: the first key after the cursor's own.
		start = append(recordKey(q.Department, q.After), 0)
	}
	err = db.view(func(txn *badger.Txn) error {
		it := newIterator(txn, p)
		defer it.Close()
		var last string // the id of the last record examined
		scanned := 0
		for it.Seek(start); it.ValidForPrefix(p); it.Next() {
			if len(page.Records) == limit || scanned == recordScan {
				page.Next = last // more to examine: the next page goes on after it
				return nil
			}
			item := it.Item()
			id := string(item.Key()[len(p):])
			if id == "" {
				return fmt.Errorf("%w: malformed record key", ErrCorrupt)
			}
			var rec credit.Record
			if err := item.Value(func(v []byte) error {
				var err error
				rec, err = decodeRecord(v)
				return err
			}); err != nil {
				return engine(err)
			}
			if rec.Department != q.Department || rec.ID != id {
				return fmt.Errorf("%w: a record is stored under another record's key", ErrCorrupt)
			}
			last, scanned = id, scanned+1
			if (q.CatalogItem == "" || rec.CatalogItem == q.CatalogItem) && (q.Status == "" || rec.Status == q.Status) {
				page.Records = append(page.Records, rec)
			}
		}
		return nil
	})
	if err != nil {
		return RecordPage{}, fmt.Errorf("storage: record page: %w", err)
	}
	return page, nil
}
