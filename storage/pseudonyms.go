package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

func pseudonymKey(subject string) []byte {
	return append(prefix(famPseudonym, len(subject)), subject...)
}

// Pseudonyms returns the cached pseudonyms of the subjects that have one.
// The district holds its subjects' raw identifiers anyway; caching their
// pseudonyms spares a coordinator round trip per index update.
func (db *DB) Pseudonyms(subjects []string) (map[string]credit.Pseudonym, error) {
	out := make(map[string]credit.Pseudonym, len(subjects))
	err := db.view(func(txn *badger.Txn) error {
		for _, s := range subjects {
			item, err := txn.Get(pseudonymKey(s))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			err = item.Value(func(v []byte) error {
				if len(v) != len(credit.Pseudonym{}) {
					return fmt.Errorf("%w: cached pseudonym of %d bytes", ErrCorrupt, len(v))
				}
				out[s] = credit.Pseudonym(v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: pseudonyms: %w", engine(err))
	}
	return out, nil
}

// PutPseudonyms caches pseudonyms of subjects (one write; losing it on a
// crash only costs a coordinator round trip later, so it is not synced on
// its own).
func (db *DB) PutPseudonyms(ps map[string]credit.Pseudonym) error {
	if len(ps) == 0 {
		return nil
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	wb := db.raw.NewWriteBatch()
	defer wb.Cancel()
	for s, p := range ps {
		if err := checkPart("subject", s); err != nil {
			return err
		}
		if err := wb.Set(pseudonymKey(s), p[:]); err != nil {
			return fmt.Errorf("storage: put pseudonyms: %w", engine(err))
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("storage: put pseudonyms: %w", engine(err))
	}
	return nil
}
