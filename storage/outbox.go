package storage

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// OutboxItem is a subject whose index entry must be recomputed and sent to
// the Raft leader, with the sequence number of the change that marked it.
type OutboxItem struct {
	Subject string
	Seq     uint64
}

// The outbox is kept in pages: each transaction that marks subjects (a
// group of the committer, a batch of a restore's marking) writes the
// subjects it marks, each with a sequence number of its own, strictly
// increasing, into pages of at most pageMaxEntries entries and
// pageMaxBytes bytes, each under P/<its last sequence number>. A page is
// never added to after it is written: a subject changed again is marked
// again in a later page, and the earlier entry, published by then or
// published with the same (absolute) state, is harmless. An
// acknowledgement removes entries from their page (deleting the page when
// it is empty). Pages do not overlap in sequence numbers, so the page of
// a number n is the first at or after P/<n>.
//
// Against a marker per subject (layouts 1–3: o/<subject> and O/<seq>, each
// read before it was overwritten), a record written costs no outbox read
// and a page entry instead of two keys, and its acknowledgement no
// deletions of its own: with the record itself, its subject index entry
// and its due marker, three keys a record instead of five written and two
// deleted (docs/BENCHMARKS.md).
const (
	pageMaxEntries = 256
	pageMaxBytes   = 8 << 10 // far below the value threshold: pages stay in the LSM tree
)

// pageEntryBytes is what an entry of subject adds to a page at most.
func pageEntryBytes(subject string) int64 { return int64(len(subject)) + 2*binary.MaxVarintLen64 }

// appendPageEntry appends an entry (the distance of its sequence number
// below the page's last, the subject's length, the subject) to page.
func appendPageEntry(page []byte, last uint64, it OutboxItem) []byte {
	page = binary.AppendUvarint(page, last-it.Seq)
	page = binary.AppendUvarint(page, uint64(len(it.Subject)))
	return append(page, it.Subject...)
}

// decodePage returns the entries of the page stored under P/<last>, in
// sequence order (appended to out). A page that does not decode into
// entries of strictly increasing numbers at or below last, with subjects
// of at most maxKeyPart bytes, is ErrCorrupt.
func decodePage(last uint64, v []byte, out []OutboxItem) ([]OutboxItem, error) {
	first := len(out)
	for len(v) > 0 {
		d, n := binary.Uvarint(v)
		if n <= 0 || d > last {
			return out, fmt.Errorf("%w: an outbox page under %d: a bad sequence number", ErrCorrupt, last)
		}
		v = v[n:]
		l, n := binary.Uvarint(v)
		if n <= 0 || l == 0 || l > maxKeyPart || l > uint64(len(v)-n) {
			return out, fmt.Errorf("%w: an outbox page under %d: a bad subject", ErrCorrupt, last)
		}
		seq := last - d
		if len(out) > first && seq <= out[len(out)-1].Seq {
			return out, fmt.Errorf("%w: an outbox page under %d: numbers out of order", ErrCorrupt, last)
		}
		out = append(out, OutboxItem{Subject: string(v[n : n+int(l)]), Seq: seq})
		v = v[n+int(l):]
	}
	if len(out) == first {
		return out, fmt.Errorf("%w: an empty outbox page under %d", ErrCorrupt, last)
	}
	return out, nil
}

// readPage decodes the page item holds (a P/<last> key), its entries
// appended to out.
func readPage(item *badger.Item, out []OutboxItem) (uint64, []OutboxItem, error) {
	last, err := parseBE64(item.Key()[2:])
	if err != nil {
		return 0, out, err
	}
	err = item.Value(func(v []byte) error {
		out, err = decodePage(last, v, out)
		return err
	})
	return last, out, err
}

// writePages writes items (in strictly increasing sequence order, above
// every page already stored) into new pages through txn, and returns how
// many pages it wrote. A subject decodePage would refuse is an error, and
// the caller's transaction must not commit: one such entry would make its
// page, and every entry after it, unreadable (the writers check
// subjects before: checkPart).
func writePages(txn *badger.Txn, items []OutboxItem) (int, error) {
	for i, it := range items {
		if it.Subject == "" || len(it.Subject) > maxKeyPart || (i > 0 && it.Seq <= items[i-1].Seq) {
			return 0, fmt.Errorf("%w: an outbox entry that could not be read back (subject of %d bytes, number %d)", ErrInvalidRecord, len(it.Subject), it.Seq)
		}
	}
	pages := 0
	for len(items) > 0 {
		n, size := 0, int64(0)
		for n < len(items) && n < pageMaxEntries {
			if size += pageEntryBytes(items[n].Subject); size > pageMaxBytes && n > 0 {
				break
			}
			n++
		}
		last := items[n-1].Seq
		page := make([]byte, 0, size)
		for _, it := range items[:n] {
			page = appendPageEntry(page, last, it)
		}
		if err := txn.Set(outboxPageKey(last), page); err != nil {
			return pages, err
		}
		pages++
		items = items[n:]
	}
	return pages, nil
}

// PendingSubjects returns up to limit marked subjects (all when limit <= 0)
// in the order they were marked (sequence order), so that a drainer sends
// a district's changes in the order they happened. A subject marked by two
// commits before it was acknowledged comes twice, under each one's number.
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
	p := []byte{famOutboxPage, '/'}
	err := db.view(func(txn *badger.Txn) error {
		it := newIterator(txn, p)
		defer it.Close()
		var page []OutboxItem
		for it.Seek(outboxPageKey(after + 1)); it.ValidForPrefix(p); it.Next() {
			var err error
			if _, page, err = readPage(it.Item(), page[:0]); err != nil {
				return err
			}
			for _, e := range page {
				if e.Seq <= after {
					continue
				}
				out = append(out, e)
				if limit > 0 && len(out) >= limit {
					return nil
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: outbox pending: %w", err)
	}
	return out, nil
}

// AckOutbox removes, in one synced transaction, the outbox entries of the
// items (each matched by its sequence number and subject; an item matching
// none, acknowledged before or never marked, is ignored). A subject marked
// again since it was read has a newer entry, which stays and is drained
// again.
//
// It walks the pages from the lowest item's number: the items of a
// drain's pass are in consecutive pages. Only acknowledgements change a
// stored page (writers add new ones), so two of them at once conflict, and
// the walk is done again.
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
	// An item given twice is removed (and counted) once.
	sorted = slices.CompactFunc(sorted, func(a, b OutboxItem) bool { return a.Seq == b.Seq })
	p := []byte{famOutboxPage, '/'}
	for attempt := 0; ; attempt++ {
		var removed int64
		err := db.raw.Update(func(txn *badger.Txn) error {
			removed = 0
			it := newIterator(txn, p)
			defer it.Close()
			var page, kept []OutboxItem
			for i := 0; i < len(sorted); {
				it.Seek(outboxPageKey(sorted[i].Seq))
				if !it.ValidForPrefix(p) {
					return nil // no page holds these numbers
				}
				key := it.Item().KeyCopy(nil)
				last, page, err := readPage(it.Item(), page[:0])
				if err != nil {
					return err
				}
				// The items up to this page's last number: those of its
				// entries, or of none.
				kept = kept[:0]
				for _, e := range page {
					for i < len(sorted) && sorted[i].Seq < e.Seq {
						i++
					}
					if i < len(sorted) && sorted[i].Seq == e.Seq && sorted[i].Subject == e.Subject {
						removed++
						i++
						continue
					}
					kept = append(kept, e)
				}
				for i < len(sorted) && sorted[i].Seq <= last {
					i++
				}
				if len(kept) == len(page) {
					continue
				}
				if len(kept) == 0 {
					err = txn.Delete(key)
				} else {
					buf := make([]byte, 0, int64(len(kept))*pageEntryBytes(""))
					for _, e := range kept {
						buf = appendPageEntry(buf, last, e)
					}
					err = txn.Set(key, buf)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
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

// countOutbox counts the entries of every page (the store's opening).
func countOutbox(txn *badger.Txn) (int64, error) {
	p := []byte{famOutboxPage, '/'}
	it := newIterator(txn, p)
	defer it.Close()
	var n int64
	var page []OutboxItem
	for it.Seek(p); it.ValidForPrefix(p); it.Next() {
		var err error
		if _, page, err = readPage(it.Item(), page[:0]); err != nil {
			return 0, err
		}
		n += int64(len(page))
	}
	return n, nil
}

// OutboxVersion changes after every committed write of records (each may
// mark subjects in the outbox): a drainer that found the outbox empty at
// one version need not look again until it changes.
func (db *DB) OutboxVersion() uint64 { return db.outboxVersion.Load() }

// OutboxLen returns the number of outbox entries (a subject changed twice
// before it was published counts twice): a count kept in memory (counted
// when the store opens, moved by every commit that marks or
// acknowledges), so a drain may ask after every pass.
func (db *DB) OutboxLen() (int, error) {
	if err := db.enter(); err != nil {
		return 0, fmt.Errorf("storage: outbox len: %w", err)
	}
	defer db.leave()
	return int(db.outboxLen.Load()), nil
}
