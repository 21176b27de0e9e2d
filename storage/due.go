package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// Due markers: the days on which a subject's index summary changes with
// nothing written — a record's display period ends, so the index entry of
// its subject must be recomputed. Each record write adds one marker per
// boundary day (Options.Boundaries) in the same transaction:
//
//	e/<day:be32 offset by 2^31><subject> → empty
//
// The day comes first so that the markers of every past day are one range
// scan; the subject is the rest of the key. A marker is only a reminder:
// ReleaseDue deletes the markers up to a day and marks their subjects in the
// outbox, in one synced transaction through the committer, and the
// publisher then recomputes each summary from the subject's records. A stale
// marker (the record was corrected, deleted, or the catalog changed its
// display period) costs one needless recomputation, never a wrong entry,
// because the summary is always computed from the records themselves.

// maxReleaseBatch bounds the markers ReleaseDue handles per transaction.
const maxReleaseBatch = 1024

// dayKeyPart encodes a day so that big-endian bytes sort like the days,
// negative (before 1970) ones included.
func dayKeyPart(d credit.Date) uint32 { return uint32(int64(d) + 1<<31) }

func dueKey(d credit.Date, subject string) []byte {
	b := prefix(famDue, 4+len(subject))
	b = binary.BigEndian.AppendUint32(b, dayKeyPart(d))
	return append(b, subject...)
}

// appendDue adds the due markers of rec to ops (none without Boundaries).
func (db *DB) appendDue(ops []op, rec *credit.Record) []op {
	if db.boundaries == nil {
		return ops
	}
	for _, d := range db.boundaries(*rec) {
		ops = append(ops, op{key: dueKey(d, rec.Subject), val: []byte{}})
	}
	return ops
}

// planRelease plans the deletion of up to limit due markers of days up to
// through and returns the distinct subjects to mark in the outbox.
func planRelease(txn *badger.Txn, through credit.Date, limit int) ([]op, []string, error) {
	pfx := prefix(famDue, 0)
	end := binary.BigEndian.AppendUint32(prefix(famDue, 4), dayKeyPart(through)+1)
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	opts.Prefix = pfx
	it := txn.NewIterator(opts)
	defer it.Close()
	var ops []op
	var subjects []string
	seen := map[string]bool{}
	for it.Seek(pfx); it.ValidForPrefix(pfx) && len(ops) < limit; it.Next() {
		key := it.Item().KeyCopy(nil)
		if bytes.Compare(key, end) >= 0 {
			break
		}
		if len(key) <= len(pfx)+4 {
			return nil, nil, fmt.Errorf("%w: due marker without a subject", ErrCorrupt)
		}
		ops = append(ops, op{key: key, del: true})
		if s := string(key[len(pfx)+4:]); !seen[s] {
			seen[s] = true
			subjects = append(subjects, s)
		}
	}
	return ops, subjects, nil
}

// ReleaseDue moves the subjects of every due marker of a day up to and
// including through into the outbox and deletes those markers, in synced
// transactions of at most a thousand markers, and returns how many subjects
// it marked. Run it once a day or more often (it is cheap when nothing is
// due); a subject due on several days is marked once.
func (db *DB) ReleaseDue(through credit.Date) (int, error) {
	total := 0
	for {
		req := &writeReq{kind: kindRelease, through: through, limit: maxReleaseBatch}
		if err := db.write(req); err != nil {
			return total, fmt.Errorf("storage: release due: %w", err)
		}
		total += req.released
		if req.released == 0 {
			return total, nil
		}
	}
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
// the scan started wrote its own markers.
func (db *DB) RebuildDue(version string) error {
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
			rec, err := decodeRecord(val)
			if err != nil {
				return err
			}
			for _, d := range db.boundaries(rec) {
				if err := wb.Set(dueKey(d, rec.Subject), []byte{}); err != nil {
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
