package storage

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// RecordFacts is what federation statistics count of one record: the
// fields of its latest version that classify it, and when its first
// version was recorded (when the department submitted it). It holds
// nothing about the subject.
type RecordFacts struct {
	Department  string
	CatalogItem string
	Polarity    credit.Polarity
	Severity    credit.Severity
	Status      credit.Status
	DecidedOn   credit.Date
	// FirstRecordedAt is the first version's recording time (the latest
	// version's, if the first is missing).
	FirstRecordedAt time.Time
}

// factsHead decodes the classifying fields of a stored record
// (credit.Record's CBOR keys); the others, the subject among them, are
// skipped.
type factsHead struct {
	CatalogItem string          `cbor:"3,keyasint"`
	DecidedOn   credit.Date     `cbor:"6,keyasint"`
	Polarity    credit.Polarity `cbor:"10,keyasint"`
	Severity    credit.Severity `cbor:"11,keyasint"`
	Status      credit.Status   `cbor:"13,keyasint"`
	Version     int             `cbor:"14,keyasint"`
	RecordedAt  time.Time       `cbor:"16,keyasint"`
}

// EachRecordFacts calls fn with the facts of the latest version of every
// record held, in key order, from one read snapshot; fn's error stops the
// walk and is returned as is. Nothing is kept between calls: the walk holds
// one record's head at a time.
func (db *DB) EachRecordFacts(fn func(RecordFacts) error) error {
	pfx := prefix(famRecord, 0)
	err := db.view(func(txn *badger.Txn) error {
		it := newIterator(txn, pfx)
		defer it.Close()
		for it.Seek(pfx); it.ValidForPrefix(pfx); it.Next() {
			item := it.Item()
			var h factsHead
			var decErr error
			if err := item.Value(func(v []byte) error {
				decErr = headMode.Unmarshal(v, &h)
				return nil
			}); err != nil {
				return engine(err)
			}
			if decErr != nil {
				return fmt.Errorf("%w: record head does not decode", ErrCorrupt)
			}
			dept, id, ok := splitDeptID(item.Key()[len(pfx):])
			if !ok {
				return fmt.Errorf("%w: malformed record key", ErrCorrupt)
			}
			first := h.RecordedAt
			if h.Version > 1 {
				at, found, err := firstRecordedAt(txn, dept, id)
				if err != nil {
					return err
				}
				if found {
					first = at
				}
			}
			if err := fn(RecordFacts{Department: dept, CatalogItem: h.CatalogItem, Polarity: h.Polarity, Severity: h.Severity,
				Status: h.Status, DecidedOn: h.DecidedOn, FirstRecordedAt: first}); err != nil {
				return &fnError{err}
			}
		}
		return nil
	})
	var fe *fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	if err != nil {
		return fmt.Errorf("storage: record facts: %w", err)
	}
	return nil
}

// firstRecordedAt reads the recording time of version 1 of (dept, id).
func firstRecordedAt(txn *badger.Txn, dept, id string) (time.Time, bool, error) {
	item, err := txn.Get(versionKey(dept, id, 1))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, engine(err)
	}
	var h factsHead
	var decErr error
	if err := item.Value(func(v []byte) error {
		decErr = headMode.Unmarshal(v, &h)
		return nil
	}); err != nil {
		return time.Time{}, false, engine(err)
	}
	if decErr != nil {
		return time.Time{}, false, fmt.Errorf("%w: record version head does not decode", ErrCorrupt)
	}
	return h.RecordedAt, true, nil
}
