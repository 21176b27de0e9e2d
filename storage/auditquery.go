package storage

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// AuditFilter selects audit entries for a reviewer (GET /v1/audit). Zero
// fields select everything.
type AuditFilter struct {
	// From and To bound the entries' time, both inclusive.
	From, To time.Time
	// Operation, Institution and Subject (a pseudonym, lowercase hex) must
	// equal the entry's when set.
	Operation, Institution, Subject string
}

func (f AuditFilter) match(e *AuditEntry) bool {
	switch {
	case !f.From.IsZero() && e.At.Before(f.From),
		!f.To.IsZero() && e.At.After(f.To),
		f.Operation != "" && e.Operation != f.Operation,
		f.Institution != "" && e.Institution != f.Institution,
		f.Subject != "" && e.Subject != f.Subject:
		return false
	}
	return true
}

// MaxAuditScan bounds the entries one Page examines: a filter that matches
// few entries of a long log answers a short (or empty) page and the cursor
// to go on from, never a scan of the whole log.
const MaxAuditScan = 100_000

// Page returns, oldest first, at most limit entries after the entry seq
// after that f selects, and the cursor of the next page: the seq of the
// last entry examined, 0 when the log has no more. A filter on a subject
// reads the subject index; the others walk the log from after, examining
// at most MaxAuditScan entries.
func (l *AuditLog) Page(f AuditFilter, after uint64, limit int) ([]AuditEntry, uint64, error) {
	if limit <= 0 {
		return nil, 0, fmt.Errorf("storage: audit page: %w: limit %d", ErrAuditEntry, limit)
	}
	if f.Subject != "" {
		if err := checkPseudonym(f.Subject); err != nil {
			return nil, 0, fmt.Errorf("storage: audit page: %w", err)
		}
	}
	if after == ^uint64(0) {
		return nil, 0, nil
	}
	var out []AuditEntry
	var next uint64
	err := l.view(func(txn *badger.Txn) error {
		p := []byte{famAudit, '/'}
		index := f.Subject != ""
		if index {
			p = auditSubjectPrefix(f.Subject)
		}
		it := newIterator(txn, p)
		defer it.Close()
		var last uint64 // the last entry examined
		scanned := 0
		for it.Seek(append(append([]byte(nil), p...), be64(after+1)...)); it.ValidForPrefix(p); it.Next() {
			if len(out) == limit || scanned == MaxAuditScan {
				next = last // more to examine: the next page goes on after it
				return nil
			}
			seq, err := parseBE64(it.Item().Key()[len(p):])
			if err != nil {
				return err
			}
			var e AuditEntry
			if index {
				if e, err = auditEntryAt(txn, seq); err != nil {
					if errors.Is(err, badger.ErrKeyNotFound) {
						return fmt.Errorf("%w: audit subject index names a missing entry", ErrCorrupt)
					}
					return err
				}
			} else if err := it.Item().Value(func(v []byte) error {
				e, err = decodeAudit(v)
				return err
			}); err != nil {
				return err
			}
			last, scanned = seq, scanned+1
			if f.match(&e) {
				out = append(out, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("storage: audit page: %w", err)
	}
	return out, next, nil
}
