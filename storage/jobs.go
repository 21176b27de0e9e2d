package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// maxJobState bounds what a background job may keep (its status and
// progress cursor).
const maxJobState = 64 << 10

func jobKey(name string) []byte { return append(prefix(famJob, len(name)), name...) }

// JobState returns what the background job name last saved, nil if
// nothing.
func (db *DB) JobState(name string) ([]byte, error) {
	if err := checkPart("job name", name); err != nil {
		return nil, err
	}
	var out []byte
	err := db.view(func(txn *badger.Txn) error {
		item, err := txn.Get(jobKey(name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: job state: %w", engine(err))
	}
	return out, nil
}

// PutJobState replaces what the background job name keeps, durably (one
// synced transaction: a job saves at the end of a run or at a checkpoint,
// not per item). It holds status and progress, never personal data.
func (db *DB) PutJobState(name string, state []byte) error {
	if err := checkPart("job name", name); err != nil {
		return err
	}
	if len(state) > maxJobState {
		return fmt.Errorf("storage: job state of %d bytes (at most %d)", len(state), maxJobState)
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if err := db.raw.Update(func(txn *badger.Txn) error { return txn.Set(jobKey(name), state) }); err != nil {
		return fmt.Errorf("storage: put job state: %w", engine(err))
	}
	return nil
}
