package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Batch checks (the checks package) keep their job here, encrypted at rest
// like the records: the job's state, the rows it was given in chunks, and
// the results of each chunk checked. The contents are opaque to storage.
//
//	k/<id>\x00m              → the job's state
//	k/<id>\x00r<chunk:be32> → rows of one chunk
//	k/<id>\x00o<chunk:be32> → results of one chunk
//
// A job exists once its state is written, after its rows: a crash while the
// rows are written leaves rows without a state, which Batches skips and
// DeleteBatch removes.
const famBatch = 'k'

// MaxBatchChunk bounds one chunk of rows or results.
const MaxBatchChunk = 32 << 20

func batchKey(id string, kind byte, chunk int) []byte {
	b := prefix(famBatch, len(id)+6)
	b = append(b, id...)
	b = append(b, 0, kind)
	if kind != 'm' {
		b = binary.BigEndian.AppendUint32(b, uint32(chunk))
	}
	return b
}

func batchPrefix(id string) []byte {
	b := prefix(famBatch, len(id)+1)
	b = append(b, id...)
	return append(b, 0)
}

// CreateBatch stores a job's rows, chunk by chunk, then its state.
func (db *DB) CreateBatch(id string, state []byte, rows [][]byte) error {
	if err := checkPart("batch id", id); err != nil {
		return err
	}
	if len(state) > maxJobState {
		return fmt.Errorf("storage: batch state of %d bytes (at most %d)", len(state), maxJobState)
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	wb := db.raw.NewWriteBatch()
	defer wb.Cancel()
	for i, c := range rows {
		if len(c) > MaxBatchChunk {
			return fmt.Errorf("storage: batch chunk of %d bytes (at most %d)", len(c), MaxBatchChunk)
		}
		if err := wb.Set(batchKey(id, 'r', i), c); err != nil {
			return fmt.Errorf("storage: create batch: %w", engine(err))
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("storage: create batch: %w", engine(err))
	}
	if err := db.raw.Update(func(txn *badger.Txn) error { return txn.Set(batchKey(id, 'm', 0), state) }); err != nil {
		return fmt.Errorf("storage: create batch: %w", engine(err))
	}
	return nil
}

// BatchState returns a job's state, ErrNotFound if there is no such job.
func (db *DB) BatchState(id string) ([]byte, error) {
	if err := checkPart("batch id", id); err != nil {
		return nil, err
	}
	return db.batchGet(batchKey(id, 'm', 0))
}

// BatchRows returns one chunk of a job's rows, ErrNotFound past the last.
func (db *DB) BatchRows(id string, chunk int) ([]byte, error) {
	if err := checkPart("batch id", id); err != nil {
		return nil, err
	}
	return db.batchGet(batchKey(id, 'r', chunk))
}

func (db *DB) batchGet(key []byte) ([]byte, error) {
	var out []byte
	err := db.view(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: batch: %w", engine(err))
	}
	return out, nil
}

// PutBatchResults stores the results of one chunk and the job's new state,
// and deletes the chunk's rows, in one synced transaction, so that a
// restart resumes after the last chunk whose results are kept.
func (db *DB) PutBatchResults(id string, chunk int, results, state []byte) error {
	if err := checkPart("batch id", id); err != nil {
		return err
	}
	if len(results) > MaxBatchChunk || len(state) > maxJobState {
		return fmt.Errorf("storage: batch results of %d bytes or state of %d bytes too large", len(results), len(state))
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	err := db.raw.Update(func(txn *badger.Txn) error {
		if err := txn.Set(batchKey(id, 'o', chunk), results); err != nil {
			return err
		}
		// The chunk's rows (identifiers) are no longer needed.
		if err := txn.Delete(batchKey(id, 'r', chunk)); err != nil {
			return err
		}
		return txn.Set(batchKey(id, 'm', 0), state)
	})
	if err != nil {
		return fmt.Errorf("storage: batch results: %w", engine(err))
	}
	return nil
}

// PutBatchState replaces a job's state.
func (db *DB) PutBatchState(id string, state []byte) error {
	if err := checkPart("batch id", id); err != nil {
		return err
	}
	if len(state) > maxJobState {
		return fmt.Errorf("storage: batch state of %d bytes (at most %d)", len(state), maxJobState)
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if err := db.raw.Update(func(txn *badger.Txn) error { return txn.Set(batchKey(id, 'm', 0), state) }); err != nil {
		return fmt.Errorf("storage: batch state: %w", engine(err))
	}
	return nil
}

// BatchResults calls fn with each chunk of a job's results, in order.
func (db *DB) BatchResults(id string, fn func(chunk int, results []byte) error) error {
	if err := checkPart("batch id", id); err != nil {
		return err
	}
	// One chunk at a time, each in its own read: fn may write to a slow
	// client.
	for chunk := 0; ; chunk++ {
		b, err := db.batchGet(batchKey(id, 'o', chunk))
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(chunk, b); err != nil {
			return err
		}
	}
}

// Batches calls fn with the id and state of every job, in id order.
func (db *DB) Batches(fn func(id string, state []byte) error) error {
	type job struct {
		id    string
		state []byte
	}
	var jobs []job
	err := db.view(func(txn *badger.Txn) error {
		it := newIterator(txn, prefix(famBatch, 0))
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()[2:]
			i := bytes.IndexByte(k, 0)
			if i < 0 || string(k[i+1:]) != "m" {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			jobs = append(jobs, job{string(k[:i]), v})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: batches: %w", engine(err))
	}
	for _, j := range jobs {
		if err := fn(j.id, j.state); err != nil {
			return err
		}
	}
	return nil
}

// DeleteBatch removes a job: its state first (it no longer exists), then
// its rows and results.
func (db *DB) DeleteBatch(id string) error {
	if err := checkPart("batch id", id); err != nil {
		return err
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	if err := db.raw.Update(func(txn *badger.Txn) error { return txn.Delete(batchKey(id, 'm', 0)) }); err != nil {
		return fmt.Errorf("storage: delete batch: %w", engine(err))
	}
	var keys [][]byte
	err := db.raw.View(func(txn *badger.Txn) error {
		it := newIterator(txn, batchPrefix(id))
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: delete batch: %w", engine(err))
	}
	wb := db.raw.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return fmt.Errorf("storage: delete batch: %w", engine(err))
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("storage: delete batch: %w", engine(err))
	}
	return nil
}
