package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// A key rotation (consensus/keys.go) gives every subject a new pseudonym.
// The district keeps its pseudonyms by key version, so that it knows the
// old one when it republishes a subject under the new one (to withdraw the
// old entry from the index) and afterwards (to find the audit entries
// written under it, which the subject's access log must still show):
//
//	n/<subject>                         → 16 bytes: the pseudonym under version 1 (pseudonyms.go)
//	n/<subject>\x00<version:be32>       → 16 bytes: the pseudonym under version ≥ 2
//
// Version 1 keeps the key it always had, so a store written before
// rotations opens unchanged. Subjects hold no NUL byte (checkPart), so the
// two forms never meet.

func pseudonymAtKey(subject string, v uint32) []byte {
	if v <= 1 {
		return pseudonymKey(subject)
	}
	k := append(pseudonymKey(subject), 0)
	return binary.BigEndian.AppendUint32(k, v)
}

// PseudonymsAt returns the cached pseudonyms under key version v of the
// subjects that have one.
func (db *DB) PseudonymsAt(v uint32, subjects []string) (map[string]credit.Pseudonym, error) {
	if v <= 1 {
		return db.Pseudonyms(subjects)
	}
	out := make(map[string]credit.Pseudonym, len(subjects))
	err := db.view(func(txn *badger.Txn) error {
		for _, s := range subjects {
			p, ok, err := getPseudonym(txn, pseudonymAtKey(s, v))
			if err != nil {
				return err
			}
			if ok {
				out[s] = p
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: pseudonyms: %w", engine(err))
	}
	return out, nil
}

// PutPseudonymsAt caches pseudonyms under key version v (not synced on its
// own, as PutPseudonyms).
func (db *DB) PutPseudonymsAt(v uint32, ps map[string]credit.Pseudonym) error {
	if v <= 1 {
		return db.PutPseudonyms(ps)
	}
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
		if err := wb.Set(pseudonymAtKey(s, v), p[:]); err != nil {
			return fmt.Errorf("storage: put pseudonyms: %w", engine(err))
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("storage: put pseudonyms: %w", engine(err))
	}
	return nil
}

// PseudonymVersions returns the subject's cached pseudonym under each key
// version.
func (db *DB) PseudonymVersions(subject string) (map[uint32]credit.Pseudonym, error) {
	all, err := db.PseudonymVersionsOf([]string{subject})
	if err != nil {
		return nil, err
	}
	return all[0], nil
}

// PseudonymVersionsOf is PseudonymVersions of several subjects, in order,
// in one read transaction: one seek per subject, which finds version 1
// (n/<subject>) and the later ones (n/<subject>\x00<v>) together. A
// district answering a lookup reads its pseudonyms this way.
func (db *DB) PseudonymVersionsOf(subjects []string) ([]map[uint32]credit.Pseudonym, error) {
	for _, s := range subjects {
		if err := checkPart("subject", s); err != nil {
			return nil, err
		}
	}
	out := make([]map[uint32]credit.Pseudonym, len(subjects))
	err := db.view(func(txn *badger.Txn) error {
		for i, s := range subjects {
			out[i] = map[uint32]credit.Pseudonym{}
			if err := pseudonymVersions(txn, s, out[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: pseudonym versions: %w", engine(err))
	}
	return out, nil
}

// pseudonymVersions reads a subject's cached pseudonyms into into. Its keys
// sort together: n/<subject>, then n/<subject>\x00<v:be32>; a key that
// only extends the subject (another subject) ends them.
func pseudonymVersions(txn *badger.Txn, subject string, into map[uint32]credit.Pseudonym) error {
	pk := pseudonymKey(subject)
	it := newIterator(txn, pk)
	defer it.Close()
	for it.Seek(pk); it.ValidForPrefix(pk); it.Next() {
		item := it.Item()
		key := item.Key()
		v := uint32(1)
		switch {
		case len(key) == len(pk):
		case key[len(pk)] != 0:
			return nil // another subject's: past this one's
		case len(key) == len(pk)+5:
			v = binary.BigEndian.Uint32(key[len(pk)+1:])
		default:
			return fmt.Errorf("%w: a cached pseudonym of a version", ErrCorrupt)
		}
		err := item.Value(func(val []byte) error {
			if len(val) != len(credit.Pseudonym{}) || v < 2 && len(key) != len(pk) {
				return fmt.Errorf("%w: a cached pseudonym of a version", ErrCorrupt)
			}
			into[v] = credit.Pseudonym(val)
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func getPseudonym(txn *badger.Txn, key []byte) (credit.Pseudonym, bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return credit.Pseudonym{}, false, nil
	}
	if err != nil {
		return credit.Pseudonym{}, false, err
	}
	var p credit.Pseudonym
	err = item.Value(func(v []byte) error {
		if len(v) != len(p) {
			return fmt.Errorf("%w: cached pseudonym of %d bytes", ErrCorrupt, len(v))
		}
		copy(p[:], v)
		return nil
	})
	return p, err == nil, err
}

// MarkEverySubject marks, in the outbox, every subject the store holds
// records of, and every subject it holds only a cached pseudonym of (an
// entry it once published, to be withdrawn), so that the publisher
// republishes each: a key rotation's re-pseudonymization. It goes through
// the committer (ReleaseDue with markers that match none), in transactions
// of at most maxReleaseBatch subjects, while the store serves, and
// returns how many subjects it marked. Marking a subject twice only costs
// one more recomputation; a crash midway leaves the rest unmarked, and the
// caller marks again.
func (db *DB) MarkEverySubject(ctx context.Context) (int, error) {
	marked := 0
	for _, fam := range []byte{famSubject, famPseudonym} {
		after := ""
		for {
			if err := ctx.Err(); err != nil {
				return marked, err
			}
			subjects, next, err := db.subjectsPage(fam, after, maxReleaseBatch)
			if err != nil {
				return marked, fmt.Errorf("storage: mark every subject: %w", engine(err))
			}
			if len(subjects) > 0 {
				// Items without a stamp match no due marker (stamps are
				// odd): ReleaseDue deletes none and marks each subject in
				// the outbox.
				items := make([]DueItem, len(subjects))
				for i, s := range subjects {
					items[i] = DueItem{Subject: s}
				}
				n, err := db.ReleaseDue(items, nil)
				marked += n
				if err != nil {
					return marked, fmt.Errorf("storage: mark every subject: %w", err)
				}
			}
			if next == "" {
				break
			}
			after = next
		}
	}
	return marked, nil
}

// subjectsPage returns up to limit distinct subjects of family fam (s/:
// the subjects with records; n/: the subjects with a cached pseudonym and
// no record) after the subject after, and the last one read ("" at the
// end).
func (db *DB) subjectsPage(fam byte, after string, limit int) ([]string, string, error) {
	var out []string
	last := ""
	err := db.view(func(txn *badger.Txn) error {
		p := []byte{fam, '/'}
		it := newIterator(txn, p)
		defer it.Close()
		start := p
		if after != "" {
			// The first key past every key of after (its own and its
			// versions'): after, then the byte after NUL.
			start = append(append(append([]byte(nil), p...), after...), 1)
		}
		for it.Seek(start); it.ValidForPrefix(p); it.Next() {
			rest := it.Item().Key()[len(p):]
			if i := bytes.IndexByte(rest, 0); i >= 0 {
				rest = rest[:i]
			}
			s := string(rest)
			if s == after || s == last {
				continue
			}
			if len(out) == limit {
				return nil
			}
			last = s
			if fam == famPseudonym {
				// A subject with records is marked by the s/ pass.
				sp := subjectPrefix(s)
				si := newIterator(txn, sp)
				si.Rewind()
				has := si.ValidForPrefix(sp)
				si.Close()
				if has {
					continue
				}
			}
			out = append(out, s)
		}
		last = ""
		return nil
	})
	return out, last, err
}
