package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// Due markers: the days on which a subject's records change with nothing
// written — a record's display period ends (its subject's index entry must
// be recomputed) or its retention period ends (the record is to be
// deleted). Each record write adds one marker per day that
// Options.Boundaries returns (the node returns one: the display's end), in
// the same transaction; releasing markers may add the subject's next ones
// (the node adds the next day anything of the subject ends, such as a
// retention end), so later days cost one marker per subject, not per
// record:
//
//	e/<day:be32 offset by 2^31><subject> → stamp:be64 (random, per write)
//
// The day comes first so that the markers of every past day are one range
// scan; the subject is the rest of the key. A marker is a durable reminder,
// consumed like the outbox: DueSubjects reads the markers up to a day, the
// caller does what the day requires (the node deletes records past their
// retention), and ReleaseDue then deletes those markers — each only if its
// stamp is still the one read, so a record written meanwhile keeps the
// marker it set — adds the next ones and marks the subjects in the outbox,
// in one synced transaction through the committer, for the publisher to
// recompute each summary from the subject's records. A crash in between
// leaves the markers, and the work is done again (deleting a deleted
// record is ErrNotFound, a no-op for the caller). A stale marker (the
// record was corrected, deleted, or the catalog changed its periods) costs
// one needless recomputation, never a wrong entry, because the summary is
// always computed from the records themselves.

// maxReleaseBatch bounds the markers one ReleaseDue transaction holds.
const maxReleaseBatch = 1024

// DueItem is one due marker: a subject whose records change on Day.
type DueItem struct {
	Day     credit.Date
	Subject string

	stamp uint64 // the marker's value when read (DueSubjects)
}

// dayKeyPart encodes a day so that big-endian bytes sort like the days,
// negative (before 1970) ones included.
func dayKeyPart(d credit.Date) uint32 { return uint32(int64(d) + 1<<31) }

func dueKey(d credit.Date, subject string) []byte {
	b := prefix(famDue, 4+len(subject))
	b = binary.BigEndian.AppendUint32(b, dayKeyPart(d))
	return append(b, subject...)
}

// newStamp is a marker's value: random, so that a marker rewritten between
// DueSubjects and ReleaseDue (even across a restart) is told apart.
func newStamp() []byte { return be64(rand.Uint64() | 1) }

// appendDue adds the due markers of rec to ops (none without Boundaries).
func (db *DB) appendDue(ops []op, rec *credit.Record) []op {
	if db.boundaries == nil {
		return ops
	}
	for _, d := range db.boundaries(*rec) {
		ops = append(ops, op{key: dueKey(d, rec.Subject), val: newStamp()})
	}
	return ops
}

// DueSubjects returns up to limit due markers (at most a thousand when
// limit <= 0 or above) of days up to and including through, oldest day
// first, starting after the marker after (nil: from the first), so that a
// caller that leaves some markers unreleased (their work failed) can go on
// past them. It changes nothing: pass what was handled to ReleaseDue.
func (db *DB) DueSubjects(through credit.Date, after *DueItem, limit int) ([]DueItem, error) {
	if limit <= 0 || limit > maxReleaseBatch {
		limit = maxReleaseBatch
	}
	pfx := prefix(famDue, 0)
	end := binary.BigEndian.AppendUint32(prefix(famDue, 4), dayKeyPart(through)+1)
	start := pfx
	if after != nil {
		start = append(dueKey(after.Day, after.Subject), 0) // the next key up
	}
	var out []DueItem
	err := db.view(func(txn *badger.Txn) error {
		it := newIterator(txn, pfx)
		defer it.Close()
		for it.Seek(start); it.ValidForPrefix(pfx) && len(out) < limit; it.Next() {
			key := it.Item().Key()
			if bytes.Compare(key, end) >= 0 {
				break
			}
			if len(key) <= len(pfx)+4 {
				return fmt.Errorf("%w: due marker without a subject", ErrCorrupt)
			}
			d := DueItem{Day: credit.Date(int64(binary.BigEndian.Uint32(key[len(pfx):])) - 1<<31),
				Subject: string(key[len(pfx)+4:])}
			if err := it.Item().Value(func(v []byte) error {
				var err error
				d.stamp, err = parseBE64(v)
				return err
			}); err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: due subjects: %w", engine(err))
	}
	return out, nil
}

// ReleaseDue deletes the markers of items (those still as DueSubjects read
// them), adds the markers of next (the subjects' next due days, if any)
// and marks the items' subjects (each once) in the outbox, in one synced
// transaction, and returns how many subjects it marked. Releasing an item
// twice is harmless (the subject is marked again, which costs one
// recomputation). A subject that is empty, over 256 bytes or holds a NUL
// byte is ErrInvalidRecord, and nothing is written.
func (db *DB) ReleaseDue(items, next []DueItem) (int, error) {
	if len(items) == 0 && len(next) == 0 {
		return 0, nil
	}
	if len(items) > maxReleaseBatch || len(next) > maxReleaseBatch {
		return 0, fmt.Errorf("storage: release due: %d items and %d next, at most %d each at a time", len(items), len(next), maxReleaseBatch)
	}
	// A subject goes into a key and an outbox page: one that could not be
	// read back is refused before anything is written.
	for _, it := range slices.Concat(items, next) {
		if err := checkPart("subject", it.Subject); err != nil {
			return 0, fmt.Errorf("storage: release due: %w", err)
		}
	}
	req := &writeReq{kind: kindRelease, due: items, next: next}
	if err := db.write(req); err != nil {
		return 0, fmt.Errorf("storage: release due: %w", err)
	}
	return req.released, nil
}

// planRelease plans, in the committer's transaction, the deletion of the
// items' markers whose stamp is unchanged and the addition of the next
// ones, and returns the distinct subjects to mark in the outbox.
func planRelease(txn *badger.Txn, items, next []DueItem) ([]op, []string, error) {
	ops := make([]op, 0, len(items)+len(next))
	var subjects []string
	seen := make(map[string]bool, len(items))
	for _, it := range items {
		key := dueKey(it.Day, it.Subject)
		stamp, found, err := getBE64(txn, key)
		if err != nil {
			return nil, nil, err
		}
		if found && stamp == it.stamp {
			ops = append(ops, op{key: key, del: true})
		}
		if !seen[it.Subject] {
			seen[it.Subject] = true
			subjects = append(subjects, it.Subject)
		}
	}
	for _, it := range next {
		ops = append(ops, op{key: dueKey(it.Day, it.Subject), val: newStamp()})
	}
	return ops, subjects, nil
}

// DueVersion returns the version RebuildDue last recorded ("" if the
// markers were never rebuilt). The node records its catalog's version, so
// that a changed catalog — whose display periods may differ — triggers a
// rebuild.
func (db *DB) DueVersion() (string, error) {
	var v string
	err := db.view(func(txn *badger.Txn) error {
		item, err := txn.Get(metaDueKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		b, err := item.ValueCopy(nil)
		v = string(b)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("storage: due version: %w", engine(err))
	}
	return v, nil
}

// RebuildDue writes the due markers of every stored record with
// Options.Boundaries (so records written before Boundaries was set, or
// under another catalog, get theirs), then records version as the
// DueVersion. Markers already there stay: a stale one costs one needless
// recomputation. Safe while records are written: a record committed after
// the scan started wrote its own markers. A cancelled ctx stops it before
// the version is recorded.
func (db *DB) RebuildDue(ctx context.Context, version string) error {
	if db.boundaries == nil {
		return errors.New("storage: rebuild due: no Boundaries in the options")
	}
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	wb := db.raw.NewWriteBatch()
	defer wb.Cancel()
	err := db.raw.View(func(txn *badger.Txn) error {
		return scanPrefix(txn, prefix(famRecord, 0), true, func(_, val []byte) error {
			if err := ctx.Err(); err != nil {
				return err // the version is not recorded: the next call starts over
			}
			rec, err := decodeRecord(val)
			if err != nil {
				return err
			}
			for _, d := range db.boundaries(rec) {
				if err := wb.Set(dueKey(d, rec.Subject), newStamp()); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err == nil {
		err = wb.Set(metaDueKey, []byte(version))
	}
	if err == nil {
		err = wb.Flush()
	}
	if err == nil {
		err = db.raw.Sync()
	}
	if err != nil {
		return fmt.Errorf("storage: rebuild due: %w", engine(err))
	}
	return nil
}
