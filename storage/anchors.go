package storage

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// AuditAnchor is a head of the audit chain as anchored in Raft
// (consensus.AuditAnchor): entry Seq had hash Hash when the federation
// recorded it, at At.
type AuditAnchor struct {
	Seq  uint64
	Hash [32]byte
	At   time.Time
}

// TamperKind names how an audit log was tampered with.
type TamperKind string

// Kinds of tampering CheckAnchors tells apart. Verify alone catches the
// first three and the last two; truncated and rewritten only show
// against the anchors.
const (
	// TamperEdited: an entry's content changed, its hash not recomputed.
	TamperEdited TamperKind = "edited"
	// TamperDeleted: an entry is missing from the chain.
	TamperDeleted TamperKind = "deleted"
	// TamperReordered: an entry is stored under another entry's place.
	TamperReordered TamperKind = "reordered"
	// TamperTruncated: entries were removed from the end and the head
	// rewound: the chain verifies, but ends before an anchored entry.
	TamperTruncated TamperKind = "truncated"
	// TamperRewritten: entries were changed and the chain re-hashed from
	// there (to the head, or not quite: a link or the head record does not
	// match).
	TamperRewritten TamperKind = "rewritten"
	// TamperAppended: entries were added after the head outside the log.
	TamperAppended TamperKind = "appended"
	// TamperCorrupt: the log's own records do not decode.
	TamperCorrupt TamperKind = "corrupt"
)

// AuditMismatchError is CheckAnchors's finding: the first bad entry, the
// kind of tampering, and what shows it (never entry content). For a
// rewrite the anchors tell only the stretch it lies in: Seq is the first
// entry after the last anchor that still matches, Through the first
// anchored entry that does not; for a truncation Seq is the first entry
// missing and Through the last anchored one.
type AuditMismatchError struct {
	Seq     uint64
	Through uint64
	Kind    TamperKind
	Problem string
}

// Error names the entry, the kind and the evidence.
func (e *AuditMismatchError) Error() string {
	return fmt.Sprintf("storage: audit log tampered with (%s): first bad entry %d: %s", e.Kind, e.Seq, e.Problem)
}

// Unwrap returns ErrAuditTampered.
func (e *AuditMismatchError) Unwrap() error { return ErrAuditTampered }

// CheckAnchors checks the log against its anchors: the chain verifies
// (Verify), every anchored entry is there with exactly its anchored hash,
// and the head is at or after the newest anchor. It returns nil or an
// *AuditMismatchError naming the first bad entry and the kind of
// tampering. Entries after the newest anchor are checked by the chain
// alone: a truncation that removes only them is not seen (the window the
// anchoring interval leaves). The store's restore markers are honoured as
// CheckAnchorsReport says.
func (l *AuditLog) CheckAnchors(anchors []AuditAnchor) error {
	_, err := l.CheckAnchorsReport(anchors)
	return err
}

// AnchorReport is what CheckAnchorsReport found besides a mismatch: the
// restore that let anchors past the chain go unchecked.
type AnchorReport struct {
	// Restore is the newest restore marker that covered an anchor (or, on
	// the first check after a restore, the pending marker, even if none
	// was needed); nil when no restore was involved.
	Restore *RestoreMarker
	// Skipped is how many anchors were of entries lost with a restore:
	// after the backup's head, up to the marker's LostThrough (pending: up
	// to any seq). They are not checked.
	Skipped int
	// Pending reports that Restore was not settled yet: this is the first
	// check after the restore, and the caller settles it (SettleRestore)
	// with Newest before anything is appended.
	Pending bool
	// Newest is the newest anchor's seq (0: no anchors).
	Newest uint64
}

// CheckAnchorsReport is CheckAnchors, honouring the store's restore
// markers (RestoreMarker). A restored store's chain ends at the backup's
// head, which may be before the node's newest anchors in Raft: the entries
// after it were lost with the restore. Such a chain is accepted only on a
// marker that covers it:
//
//   - a pending marker (the first check after the restore) covers the
//     anchors after its head only while the chain ends exactly at the head
//     the marker records (nothing appended, nothing removed);
//   - a settled marker covers the anchors after its head up to its
//     LostThrough (the newest anchor when it was settled): the lost
//     entries' anchors; anchors after LostThrough are of the chain written
//     since, and are checked.
//
// Anchors at or before a marker's head are always checked: a chain that
// contradicts one (another hash at an anchored seq) is refused, as is a
// chain that ends early without a marker covering it.
func (l *AuditLog) CheckAnchorsReport(anchors []AuditAnchor) (AnchorReport, error) {
	var rep AnchorReport
	if err := l.Verify(); err != nil {
		var te *AuditTamperError
		if !errors.As(err, &te) {
			return rep, err
		}
		return rep, &AuditMismatchError{Seq: te.Seq, Kind: l.classify(te), Problem: te.Problem}
	}
	sorted := slices.Clone(anchors)
	slices.SortFunc(sorted, func(a, b AuditAnchor) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	if n := len(sorted); n > 0 {
		rep.Newest = sorted[n-1].Seq
	}
	var found *AuditMismatchError
	err := l.view(func(txn *badger.Txn) error {
		head, err := readAuditHead(txn)
		if err != nil {
			return err
		}
		markers, err := readRestores(txn)
		if err != nil {
			return err
		}
		var pending *RestoreMarker
		if n := len(markers); n > 0 && !markers[n-1].Settled() {
			if m := markers[n-1]; head.Seq == m.AuditSeq && head.Hash == m.AuditHash {
				pending = &m
				rep.Restore, rep.Pending = &m, true
			}
		}
		// lostWith returns the marker whose lost entries seq is one of.
		lostWith := func(seq uint64) *RestoreMarker {
			if pending != nil && seq > pending.AuditSeq {
				return pending
			}
			for i := len(markers) - 1; i >= 0; i-- {
				if m := markers[i]; m.Settled() && seq > m.AuditSeq && seq <= m.LostThrough {
					return &m
				}
			}
			return nil
		}
		var good uint64 // the last anchored entry that matches
		for _, a := range sorted {
			if a.Seq == 0 {
				continue
			}
			if m := lostWith(a.Seq); m != nil {
				rep.Skipped++
				if rep.Restore == nil || m.RestoredAt.After(rep.Restore.RestoredAt) {
					rep.Restore = m
				}
				continue
			}
			at := a.At.UTC().Format(time.RFC3339)
			if a.Seq > head.Seq {
				found = &AuditMismatchError{Seq: head.Seq + 1, Through: a.Seq, Kind: TamperTruncated,
					Problem: fmt.Sprintf("the log ends at entry %d, but entry %d was anchored in Raft at %s: entries %d to %d were removed and the head rewound",
						head.Seq, a.Seq, at, head.Seq+1, a.Seq)}
				return nil
			}
			e, err := auditEntryAt(txn, a.Seq)
			if err != nil {
				return err
			}
			if e.Hash != a.Hash {
				found = &AuditMismatchError{Seq: good + 1, Through: a.Seq, Kind: TamperRewritten,
					Problem: fmt.Sprintf("entry %d's hash is not the one anchored in Raft at %s: an entry from %d to %d was changed and the chain re-hashed after it",
						a.Seq, at, good+1, a.Seq)}
				return nil
			}
			good = a.Seq
		}
		return nil
	})
	if err != nil {
		return AnchorReport{}, fmt.Errorf("storage: audit check against anchors: %w", err)
	}
	if found != nil {
		return AnchorReport{}, found
	}
	return rep, nil
}

// readAuditHead reads the head record (zero for an empty log).
func readAuditHead(txn *badger.Txn) (auditHead, error) {
	var h auditHead
	item, err := txn.Get(auditHeadKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return h, nil
	}
	if err != nil {
		return h, engine(err)
	}
	err = item.Value(func(v []byte) error { return decMode.Unmarshal(v, &h) })
	if err != nil {
		return h, fmt.Errorf("%w: audit head does not decode", ErrCorrupt)
	}
	return h, nil
}

// auditEntryAt reads the entry stored at seq.
func auditEntryAt(txn *badger.Txn, seq uint64) (AuditEntry, error) {
	item, err := txn.Get(auditKey(seq))
	if err != nil {
		return AuditEntry{}, engine(err)
	}
	var e AuditEntry
	err = item.Value(func(v []byte) error {
		e, err = decodeAudit(v)
		return err
	})
	return e, err
}

// classify tells the kind of the break Verify found at te.Seq from what is
// stored there: nothing (deleted), another entry's (reordered), an entry
// whose hash does not match it (edited), a whole entry whose link to the
// one before does not match (rewritten: the one before was changed and
// re-hashed, or entries were removed and the rest renumbered), or a whole
// chain whose head record is wrong.
func (l *AuditLog) classify(te *AuditTamperError) TamperKind {
	kind := TamperCorrupt
	_ = l.view(func(txn *badger.Txn) error {
		s := te.Seq
		item, err := txn.Get(auditKey(s))
		if errors.Is(err, badger.ErrKeyNotFound) {
			kind = TamperDeleted
			return nil
		}
		if err != nil {
			return err
		}
		val, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		e, err := decodeAudit(val)
		if err != nil {
			kind = TamperEdited
			return nil
		}
		if e.Seq != s {
			kind = TamperReordered
			return nil
		}
		if re, err := encMode.Marshal(&e); err != nil || !bytes.Equal(re, val) {
			kind = TamperEdited
			return nil
		}
		want := e.Hash
		e.Hash = [32]byte{}
		if got, err := auditHash(&e); err != nil || got != want {
			kind = TamperEdited
			return nil
		}
		var prev [32]byte
		if s > 1 {
			p, err := auditEntryAt(txn, s-1)
			if err != nil {
				kind = TamperDeleted
				return nil
			}
			prev = p.Hash
		}
		if e.Prev != prev {
			kind = TamperRewritten
			return nil
		}
		// The entry and its link are whole: the head record is wrong.
		h, err := readAuditHead(txn)
		switch {
		case err != nil:
			kind = TamperCorrupt
		case h.Seq < s:
			kind = TamperAppended
		default:
			kind = TamperRewritten
		}
		return nil
	})
	return kind
}

// ErrStoreInUse: a store opened read-only is held by a running node.
var ErrStoreInUse = errors.New("storage: the store is in use by a running node; stop the node first")

// AuditReader is a stopped node's audit log, opened read-only (Badger's
// ReadOnly mode, which shares the directory lock with other readers and
// fails while a node holds it).
type AuditReader struct {
	db *DB
}

// OpenAuditReadOnly opens the audit log of the store in opts.Dir
// read-only. A store held by a running node is refused (ErrStoreInUse);
// one whose last writer did not close it cleanly too (Badger cannot
// replay it without writing): start the node and stop it cleanly.
func OpenAuditReadOnly(opts Options) (*AuditReader, error) {
	raw, err := openReadOnly(opts.badgerOptions(), opts)
	if err != nil {
		return nil, err
	}
	db := &DB{raw: raw, log: opts.logger()}
	db.audit = newAuditLog(db)
	if err := db.audit.load(); err != nil {
		raw.Close()
		return nil, fmt.Errorf("storage: open read-only: %w", err)
	}
	// The appender is not started: nothing can be appended, and a settle
	// has nothing to wait for.
	db.audit.reqs = nil
	held, err := db.audit.readOwnJournal(opts.Dir, opts.EncryptionKey)
	if err == nil && len(held) > 0 {
		err = fmt.Errorf("%s holds %d audit entries in its journal that its last writer had not moved into the store (it did not stop cleanly): start the node and stop it cleanly first", opts.Dir, len(held))
	}
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("storage: open read-only: %w", err)
	}
	return &AuditReader{db: db}, nil
}

// OpenStateReadOnly opens the state database in opts.Dir read-only, with
// the refusals of OpenAuditReadOnly.
func OpenStateReadOnly(opts Options) (*StateDB, error) {
	bo := opts.badgerOptions().WithSyncWrites(false).WithDetectConflicts(false).
		WithMemTableSize(presetStateMemTableSize).WithNumMemtables(2)
	raw, err := openReadOnly(bo, opts)
	if err != nil {
		return nil, err
	}
	return &StateDB{raw: raw}, nil
}

func openReadOnly(bo badger.Options, opts Options) (*badger.DB, error) {
	if opts.InMemory || opts.Dir == "" {
		return nil, errors.New("storage: open read-only: Options.Dir is required")
	}
	if len(opts.EncryptionKey) > 0 && !validKeyLen(len(opts.EncryptionKey)) {
		return nil, fmt.Errorf("storage: open read-only: %w", ErrBadKey)
	}
	raw, err := badger.Open(bo.WithReadOnly(true))
	switch {
	case err == nil:
		return raw, nil
	case errors.Is(err, badger.ErrEncryptionKeyMismatch):
		return nil, classifyKeyMismatch(opts, err)
	case bytes.Contains([]byte(err.Error()), []byte("Cannot acquire directory lock")):
		return nil, fmt.Errorf("%w (%s)", ErrStoreInUse, opts.Dir)
	case errors.Is(err, badger.ErrTruncateNeeded), bytes.Contains([]byte(err.Error()), []byte(badger.ErrTruncateNeeded.Error())):
		// Badger formats the cause into its memtable errors (y.Wrapf,
		// %+v), so errors.Is does not find it there.
		return nil, fmt.Errorf("storage: open read-only: %s was not closed cleanly and cannot be read without recovering it: start the node and stop it cleanly first", opts.Dir)
	}
	return nil, fmt.Errorf("storage: open read-only: %w", err)
}

// Head returns the log's head (AuditLog.Head).
func (r *AuditReader) Head() (uint64, [32]byte) { return r.db.audit.Head() }

// Verify verifies the chain (AuditLog.Verify).
func (r *AuditReader) Verify() error { return r.db.audit.Verify() }

// CheckAnchors checks the chain against anchors (AuditLog.CheckAnchors).
func (r *AuditReader) CheckAnchors(anchors []AuditAnchor) error {
	return r.db.audit.CheckAnchors(anchors)
}

// CheckAnchorsReport checks the chain against anchors and says which
// restore let anchors go unchecked (AuditLog.CheckAnchorsReport).
func (r *AuditReader) CheckAnchorsReport(anchors []AuditAnchor) (AnchorReport, error) {
	return r.db.audit.CheckAnchorsReport(anchors)
}

// Close closes the store.
func (r *AuditReader) Close() error { return r.db.raw.Close() }
