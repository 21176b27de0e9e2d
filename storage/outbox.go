package storage

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// OutboxItem is a subject whose index entry must be recomputed and sent to
// the Raft leader, with the sequence number of the latest change that
// marked it.
type OutboxItem struct {
	Subject string
	Seq     uint64
}

// PendingSubjects returns up to limit marked subjects (all when limit <= 0)
// in the order they were marked (sequence order), so that a drainer sends a
// district's changes in the order they happened.
//
// The outbox holds no deltas: the drainer recomputes the subject's index
// summary (flags and counts) from the records as they are now (their
// summary fields, SummaryFieldsBySubjects) and sends that absolute value, so sending it twice, or
// after a later change already went out, is harmless. Then it calls
// AckOutbox with the items it read.
func (db *DB) PendingSubjects(limit int) ([]OutboxItem, error) {
	return db.PendingSubjectsAfter(0, limit)
}

// PendingSubjectsAfter is PendingSubjects from the first marker whose
// sequence number is above after: a drainer that leaves a subject marked
// (it could not handle it) goes on past it.
func (db *DB) PendingSubjectsAfter(after uint64, limit int) ([]OutboxItem, error) {
	var out []OutboxItem
	p := []byte{famOutboxSeq, '/'}
	start := outboxSeqKey(after + 1)
	err := db.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = p
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(start); it.ValidForPrefix(p); it.Next() {
			item := it.Item()
			seq, err := parseBE64(item.Key()[len(p):])
			if err != nil {
				return err
			}
			subject, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			out = append(out, OutboxItem{Subject: string(subject), Seq: seq})
			if limit > 0 && len(out) >= limit {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: outbox pending: %w", err)
	}
	return out, nil
}

// AckOutbox removes, in one synced transaction, the marker of each item
// whose stored sequence number still equals the item's: a subject changed
// again since it was read keeps its (newer) marker and is drained again.
//
// It walks the O/ family (sequence order) from the lowest item's number:
// the items of a drain's pass are consecutive there, so the walk costs a
// step each where a point read of each subject's o/ marker cost a search
// of every level (8 % of an intake district's CPU). O/<seq> exists, naming
// the subject, exactly while o/<subject> holds seq (markOutboxKey and this
// change both together). A submission that re-marks a subject of the
// batch meanwhile deletes an O/ key this transaction read: the commit
// conflicts, and the walk is done again.
func (db *DB) AckOutbox(items []OutboxItem) error {
	if len(items) == 0 {
		return nil
	}
	if err := db.enter(); err != nil {
		return fmt.Errorf("storage: outbox ack: %w", err)
	}
	defer db.leave()
	sorted := slices.Clone(items)
	slices.SortStableFunc(sorted, func(a, b OutboxItem) int { return cmp.Compare(a.Seq, b.Seq) })
	// The walk sees the store as it was when it began, not its own
	// deletions: an item given twice is removed (and counted) once.
	sorted = slices.CompactFunc(sorted, func(a, b OutboxItem) bool { return a.Seq == b.Seq })
	p := []byte{famOutboxSeq, '/'}
	for attempt := 0; ; attempt++ {
		var removed int64
		err := db.raw.Update(func(txn *badger.Txn) error {
			removed = 0
			it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
			defer it.Close()
			for _, item := range sorted {
				key := outboxSeqKey(item.Seq)
				if !it.ValidForPrefix(p) || !bytes.Equal(it.Item().Key(), key) {
					it.Seek(key)
				}
				if !it.ValidForPrefix(p) || !bytes.Equal(it.Item().Key(), key) {
					continue // marked again since, or acknowledged before
				}
				same := false
				if err := it.Item().Value(func(v []byte) error {
					same = string(v) == item.Subject
					return nil
				}); err != nil {
					return err
				}
				if !same {
					continue // not this subject's marker
				}
				if err := txn.Delete(key); err != nil {
					return err
				}
				if err := txn.Delete(outboxKey(item.Subject)); err != nil {
					return err
				}
				removed++
				it.Next()
			}
			return nil
		})
		// A conflict means a submission re-marked one of these subjects
		// after we read it: read again, and that marker stays.
		if errors.Is(err, badger.ErrConflict) && attempt < maxCommitRetries {
			continue
		}
		if err != nil {
			return fmt.Errorf("storage: outbox ack: %w", engine(err))
		}
		db.outboxLen.Add(-removed)
		return nil
	}
}

// OutboxVersion changes after every committed write of records (each may
// mark subjects in the outbox): a drainer that found the outbox empty at
// one version need not look again until it changes.
func (db *DB) OutboxVersion() uint64 { return db.outboxVersion.Load() }

// OutboxLen returns the number of marked subjects: a count kept in memory
// (counted when the store opens, moved by every commit that marks or
// acknowledges), so a drain may ask after every pass.
func (db *DB) OutboxLen() (int, error) {
	if err := db.enter(); err != nil {
		return 0, fmt.Errorf("storage: outbox len: %w", err)
	}
	defer db.leave()
	return int(db.outboxLen.Load()), nil
}
