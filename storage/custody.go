package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// A coordinator's custody of pseudonymization (pseudonym package): the
// pseudonyms it handed to each district, kept until they are checked
// against that district's index updates, and per district the counts.
//
//	u/<district>\x00<at:be64 unix seconds><pseudonym:16> → empty
//	U/<district>                                         → CBOR Custody
//
// Nothing here holds an identifier: pseudonyms and region paths only.

// Custody is one district's pseudonymization account at a coordinator.
type Custody struct {
	District string `cbor:"1,keyasint" json:"district"`
	// Issued counts the pseudonyms handed to the district.
	Issued uint64 `cbor:"2,keyasint" json:"issued"`
	// Checked counts those checked against its index updates, Unmatched
	// those that never showed up in them.
	Checked   uint64 `cbor:"3,keyasint" json:"checked"`
	Unmatched uint64 `cbor:"4,keyasint" json:"unmatched"`
	// FlaggedAt is when the district was flagged (zero: not flagged).
	FlaggedAt time.Time `cbor:"5,keyasint,omitempty" json:"flagged_at,omitzero"`
}

// Issued is a pseudonym handed to a district at a time.
type Issued struct {
	District  string
	At        time.Time
	Pseudonym credit.Pseudonym
}

func issuedKey(district string, at time.Time, p credit.Pseudonym) []byte {
	k := prefix(famIssued, len(district)+1+8+len(p))
	k = append(k, district...)
	k = append(k, 0)
	k = binary.BigEndian.AppendUint64(k, uint64(max(at.Unix(), 0)))
	return append(k, p[:]...)
}

func custodyKey(district string) []byte {
	return append(prefix(famCustody, len(district)), district...)
}

// RecordIssued counts issued pseudonyms handed to district at at, and
// notes ps (a sample of them) for the check. The write is not synced on
// its own: a crash loses at most the last counts and notes.
func (db *DB) RecordIssued(district string, at time.Time, issued int, ps []credit.Pseudonym) error {
	if err := checkPart("district", district); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	db.custodyMu.Lock()
	defer db.custodyMu.Unlock()
	c, err := db.custody(district)
	if err != nil {
		return err
	}
	c.Issued += uint64(max(issued, len(ps)))
	wb := db.raw.NewWriteBatch()
	defer wb.Cancel()
	for _, p := range ps {
		if err := wb.Set(issuedKey(district, at, p), nil); err != nil {
			return fmt.Errorf("storage: record issued: %w", engine(err))
		}
	}
	if err := setCustody(wb, c); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("storage: record issued: %w", engine(err))
	}
	return nil
}

func setCustody(wb *badger.WriteBatch, c Custody) error {
	b, err := encMode.Marshal(c)
	if err != nil {
		return err
	}
	if err := wb.Set(custodyKey(c.District), b); err != nil {
		return fmt.Errorf("storage: custody: %w", engine(err))
	}
	return nil
}

func (db *DB) custody(district string) (Custody, error) {
	c := Custody{District: district}
	err := db.raw.View(func(txn *badger.Txn) error {
		item, err := txn.Get(custodyKey(district))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return decMode.Unmarshal(v, &c) })
	})
	if err != nil {
		return c, fmt.Errorf("storage: custody: %w", engine(err))
	}
	return c, nil
}

// IssuedBefore returns up to limit pseudonyms (all if limit <= 0) handed
// out before cutoff, district by district in time order.
func (db *DB) IssuedBefore(cutoff time.Time, limit int) ([]Issued, error) {
	var out []Issued
	err := db.view(func(txn *badger.Txn) error {
		it := newIterator(txn, prefix(famIssued, 0))
		defer it.Close()
		for it.Rewind(); it.Valid(); {
			k := it.Item().Key()[2:]
			n := len(k) - 8 - len(credit.Pseudonym{})
			if n < 1 || k[n-1] != 0 {
				return fmt.Errorf("%w: issued key of %d bytes", ErrCorrupt, len(k))
			}
			at := time.Unix(int64(binary.BigEndian.Uint64(k[n:n+8])), 0)
			if !at.Before(cutoff) {
				// The district's later notes are not due: on to the next
				// district (its name followed by a byte above the NUL).
				next := append(prefix(famIssued, n), k[:n-1]...)
				it.Seek(append(next, 1))
				continue
			}
			var p credit.Pseudonym
			copy(p[:], k[n+8:])
			out = append(out, Issued{District: string(k[:n-1]), At: at, Pseudonym: p})
			if limit > 0 && len(out) >= limit {
				break
			}
			it.Next()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: issued: %w", engine(err))
	}
	return out, nil
}

// SettleIssued deletes checked notes and adds to each district's counts:
// unmatched[d] of its checked notes never showed up in its index updates;
// flag[d] flags it at that time unless it is flagged already.
func (db *DB) SettleIssued(checked []Issued, unmatched map[string]uint64, flag map[string]time.Time) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	db.custodyMu.Lock()
	defer db.custodyMu.Unlock()
	perDistrict := map[string]uint64{}
	wb := db.raw.NewWriteBatch()
	defer wb.Cancel()
	for _, it := range checked {
		perDistrict[it.District]++
		if err := wb.Delete(issuedKey(it.District, it.At, it.Pseudonym)); err != nil {
			return fmt.Errorf("storage: settle issued: %w", engine(err))
		}
	}
	for d := range flag {
		if _, ok := perDistrict[d]; !ok {
			perDistrict[d] = 0
		}
	}
	for d, n := range perDistrict {
		c, err := db.custody(d)
		if err != nil {
			return err
		}
		c.Checked += n
		c.Unmatched += unmatched[d]
		if at, ok := flag[d]; ok && c.FlaggedAt.IsZero() {
			c.FlaggedAt = at.UTC()
		}
		if err := setCustody(wb, c); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("storage: settle issued: %w", engine(err))
	}
	return nil
}

// CustodyStats returns every district's account, by district.
func (db *DB) CustodyStats() ([]Custody, error) {
	var out []Custody
	err := db.view(func(txn *badger.Txn) error {
		return scanPrefix(txn, prefix(famCustody, 0), true, func(_, v []byte) error {
			var c Custody
			if err := decMode.Unmarshal(v, &c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: custody: %w", engine(err))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].District < out[j].District })
	return out, nil
}
