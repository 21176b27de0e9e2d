package storage

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// Outcome is what SubmitRecords did with one record.
type Outcome uint8

// Outcomes of a submission, decided on (department, id).
const (
	// Accepted: the record was new and is now stored (version 1).
	Accepted Outcome = iota + 1
	// Duplicate: a record with this (department, id) and the same content
	// (credit.Record.SameContent with the first or the latest version) is
	// already stored; nothing was written.
	Duplicate
	// Conflict: a record with this (department, id) and other content is
	// already stored; nothing was written. Err returns ErrConflict.
	Conflict
)

// String returns "accepted", "duplicate" or "conflict".
func (o Outcome) String() string {
	switch o {
	case Accepted:
		return "accepted"
	case Duplicate:
		return "duplicate"
	case Conflict:
		return "conflict"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Err returns ErrConflict for Conflict and nil otherwise.
func (o Outcome) Err() error {
	if o == Conflict {
		return ErrConflict
	}
	return nil
}

// maxGroupUnits bounds how many records one group commit gathers from the
// queue before committing (a single large submission is not cut by it; it
// is split by the transaction budget instead).
const maxGroupUnits = 4096

// maxCommitRetries bounds retries of a transaction that lost a conflict.
const maxCommitRetries = 16

type writeKind uint8

const (
	kindSubmit writeKind = iota
	kindUpdate
	kindDelete
	kindRelease
)

// writeReq is one caller's write, queued to the committer.
type writeReq struct {
	kind     writeKind
	recs     []credit.Record // submit: the records; update: the next version
	enc      [][]byte        // their CBOR
	facts    [][]byte        // their subject index values (encodeFacts)
	keys     []recordKeys    // submit: the records' keys
	dept, id string          // delete
	due      []DueItem       // release: the due markers to release
	next     []DueItem       // release: the due markers to add
	released int             // release: subjects marked, set by the committer

	outcomes []Outcome // submit, filled by the committer
	err      error     // the request's error (update/delete: its single outcome)
	done     chan struct{}
}

func (r *writeReq) units() int {
	if r.kind == kindSubmit {
		return len(r.recs)
	}
	return 1
}

// unit is one record's worth of work inside a request.
type unit struct {
	req *writeReq
	i   int
}

// unitResult is the effect of a planned unit, applied to its request only
// once the transaction holding it has committed.
type unitResult struct {
	outcome  Outcome
	err      error
	released int
}

// txnState accumulates a transaction's budget use and counters.
type txnState struct {
	seq     uint64
	records int64
	bytes   int64
	count   int64
	marked  int64 // outbox entries written (len(marks))

	marks []OutboxItem        // the subjects marked, with their numbers, for the pages
	seen  map[string]struct{} // the subjects in marks
}

// op is one planned key change.
type op struct {
	key, val []byte
	del      bool
}

// recordKeys are the keys a submitted record is written under, built by
// SubmitRecords in the caller's goroutine (callers run in parallel; the
// committer is one): the latest version, version 1 (read to tell a
// duplicate of a record updated since) and the subject index entry.
type recordKeys struct {
	record, version, subject []byte
}

// keysOf builds r's recordKeys.
func keysOf(r *credit.Record) recordKeys {
	return recordKeys{
		record:  recordKey(r.Department, r.ID),
		version: versionKey(r.Department, r.ID, 1),
		subject: subjectKey(r.Subject, r.Department, r.ID),
	}
}

// SubmitRecords stores new records, each already validated by the caller
// (Department and District from the certificate, Version 1, Status set).
// It returns one Outcome per record, in order.
//
// For each accepted record it writes, in one transaction, the latest-version
// key (the record's only copy until a second version supersedes it), the
// subject index entry, its due markers and an outbox entry of the
// subject. Every transaction is synced to disk before
// SubmitRecords returns. Concurrent callers are coalesced into shared
// transactions (one sync for all), and a large batch is split into several
// transactions to stay under Badger's size limit: on error, some of the
// records may already be stored, and submitting them again is safe
// (duplicates). RecordedAt is set to the current time when zero.
func (db *DB) SubmitRecords(recs []credit.Record) ([]Outcome, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	cp := make([]credit.Record, len(recs))
	enc := make([][]byte, len(recs))
	facts := make([][]byte, len(recs))
	keys := make([]recordKeys, len(recs))
	now := time.Now().UTC()
	for i := range recs {
		cp[i] = recs[i]
		r := &cp[i]
		if err := checkRecordKey(r); err != nil {
			return nil, fmt.Errorf("storage: submit: record %d: %w", i, err)
		}
		if r.Version != 1 {
			return nil, fmt.Errorf("storage: submit: record %d: %w: version must be 1", i, ErrInvalidRecord)
		}
		if r.RecordedAt.IsZero() {
			r.RecordedAt = now
		}
		b, err := encodeRecord(r)
		if err != nil {
			return nil, fmt.Errorf("storage: submit: record %d: %w", i, err)
		}
		if !db.fits(r, b) {
			return nil, fmt.Errorf("storage: submit: record %d: %w", i, ErrRecordTooLarge)
		}
		enc[i] = b
		facts[i] = encodeFacts(r)
		keys[i] = keysOf(r)
	}
	req := &writeReq{kind: kindSubmit, recs: cp, enc: enc, facts: facts, keys: keys, outcomes: make([]Outcome, len(cp))}
	if err := db.write(req); err != nil {
		return nil, fmt.Errorf("storage: submit: %w", err)
	}
	return req.outcomes, nil
}

// UpdateRecord stores next as a new version of the record (department, id)
// — a correction or a status change. next.Version must be the stored latest
// version + 1, else ErrConflict; ErrNotFound if there is no such record. In
// one synced transaction it rewrites the latest-version key, moves the
// superseded version to its version key, rewrites the subject index entry (its summary fields), moving it
// if the subject changed (marking both subjects in the outbox), and marks
// the subject in the outbox.
// RecordedAt is set to the current time when zero.
func (db *DB) UpdateRecord(next credit.Record) error {
	if err := checkRecordKey(&next); err != nil {
		return fmt.Errorf("storage: update: %w", err)
	}
	if next.Version < 2 || next.Version > math.MaxUint32 {
		return fmt.Errorf("storage: update: %w: version must be the stored latest + 1", ErrConflict)
	}
	if next.RecordedAt.IsZero() {
		next.RecordedAt = time.Now().UTC()
	}
	b, err := encodeRecord(&next)
	if err != nil {
		return fmt.Errorf("storage: update: %w", err)
	}
	if !db.fits(&next, b) {
		return fmt.Errorf("storage: update: %w", ErrRecordTooLarge)
	}
	req := &writeReq{kind: kindUpdate, recs: []credit.Record{next}, enc: [][]byte{b}, facts: [][]byte{encodeFacts(&next)}}
	if err := db.write(req); err != nil {
		return fmt.Errorf("storage: update: %w", err)
	}
	return nil
}

// DeleteRecord removes the record (department, id) for good — every version,
// its subject index entries — and marks the subjects in the
// outbox, in one synced transaction. It is what retention does when a
// record's retention period ends. ErrNotFound if there is no such record.
func (db *DB) DeleteRecord(department, id string) error {
	if err := checkDeptID(department, id); err != nil {
		return fmt.Errorf("storage: delete: %w", err)
	}
	req := &writeReq{kind: kindDelete, dept: department, id: id}
	if err := db.write(req); err != nil {
		return fmt.Errorf("storage: delete: %w", err)
	}
	return nil
}

// fits reports whether one record with its index entries stays within a
// transaction's budget (the committer would refuse it otherwise).
func (db *DB) fits(r *credit.Record, enc []byte) bool {
	keys := 4*(len(r.Department)+len(r.ID)+len(r.Subject)) + 64
	facts := 6 + len(r.Status) + len(r.CatalogItem)
	return int64(2*len(enc)+facts+keys+6*32) <= db.budgetBytes
}

func checkRecordKey(r *credit.Record) error {
	if err := checkDeptID(r.Department, r.ID); err != nil {
		return err
	}
	return checkPart("subject", r.Subject)
}

func checkDeptID(department, id string) error {
	if err := checkPart("department", department); err != nil {
		return err
	}
	return checkPart("record id", id)
}

// write queues req to the committer and waits for it.
func (db *DB) write(req *writeReq) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	req.done = make(chan struct{})
	db.writes <- req
	<-req.done
	return req.err
}

// committer is the single writer of records: it takes what is queued,
// commits it in as few synced transactions as the budget allows and
// answers every request of the group.
func (db *DB) committer() {
	defer close(db.writerDone)
	for req := range db.writes {
		group := []*writeReq{req}
		n := req.units()
	drain:
		for n < maxGroupUnits {
			select {
			case r, ok := <-db.writes:
				if !ok {
					break drain
				}
				group = append(group, r)
				n += r.units()
			default:
				break drain
			}
		}
		db.commitGroup(group, n)
		for _, r := range group {
			close(r.done)
		}
	}
}

func (db *DB) commitGroup(group []*writeReq, n int) {
	units := make([]unit, 0, n)
	for _, r := range group {
		for i := 0; i < r.units(); i++ {
			units = append(units, unit{r, i})
		}
	}
	for from := 0; from < len(units); {
		next, err := db.commitFrom(units, from)
		if err != nil {
			for _, u := range units[from:] {
				if u.req.err == nil {
					u.req.err = err
				}
			}
			return
		}
		from = next
	}
}

// commitFrom commits one transaction holding units[from:next] and records
// their results; it retries on a Badger conflict.
func (db *DB) commitFrom(units []unit, from int) (int, error) {
	for attempt := 0; ; attempt++ {
		txn := db.raw.NewTransaction(true)
		st := txnState{seq: db.outboxSeq, records: db.records.Load()}
		next, results, err := db.build(txn, units, from, &st)
		if err == nil {
			err = txn.Commit()
		}
		txn.Discard()
		// Sequence numbers handed out are never reused, even if the commit
		// failed in a way that might surface after a restart.
		db.outboxSeq = max(db.outboxSeq, st.seq)
		if errors.Is(err, badger.ErrConflict) && attempt < maxCommitRetries {
			continue
		}
		if err != nil {
			return 0, engine(err)
		}
		db.records.Store(st.records)
		db.outboxLen.Add(st.marked)
		db.outboxVersion.Add(1)
		for k, res := range results {
			u := units[from+k]
			switch u.req.kind {
			case kindSubmit:
				u.req.outcomes[u.i] = res.outcome
			case kindRelease:
				u.req.released, u.req.err = res.released, res.err
			default:
				u.req.err = res.err
			}
		}
		return next, nil
	}
}

// build plans units from units[from] on into txn until the budget is used;
// it returns the index after the last unit placed and their results.
func (db *DB) build(txn *badger.Txn, units []unit, from int, st *txnState) (int, []unitResult, error) {
	seq0, records0 := st.seq, st.records
	results := make([]unitResult, 0, min(len(units)-from, maxGroupUnits))
	// Scratch for each unit's plan: its ops are written to txn (which
	// keeps their keys and values, not the slice) before the next unit.
	var ops []op
	var marks []string
	i := from
	for ; i < len(units); i++ {
		u := units[i]
		var delta int64
		var res unitResult
		var err error
		ops, marks, delta, res, err = db.plan(txn, u, ops[:0], marks[:0])
		if err != nil {
			return 0, nil, err
		}
		var size, count int64
		for _, o := range ops {
			size += int64(len(o.key)+len(o.val)) + 32
		}
		for _, m := range marks {
			size += pageEntryBytes(m)
		}
		// A page holds 29 entries at least (pageMaxBytes over the largest
		// entry): one key counted for every 16 marks is more than enough.
		count = int64(len(ops) + (len(marks)+15)/16)
		if st.bytes+size > db.budgetBytes || st.count+count > db.budgetCount {
			if i > from {
				break // commit what we have; this unit starts the next txn
			}
			// Alone it does not fit: refuse it, write nothing for it.
			results = append(results, unitResult{outcome: Conflict, err: ErrRecordTooLarge})
			if u.req.kind == kindSubmit {
				// A submission has no per-record error slot: fail the request.
				u.req.err = fmt.Errorf("record %d: %w", u.i, ErrRecordTooLarge)
			}
			i++
			break
		}
		for _, o := range ops {
			if o.del {
				err = txn.Delete(o.key)
			} else {
				err = txn.Set(o.key, o.val)
			}
			if err != nil {
				return 0, nil, err
			}
		}
		for _, m := range marks {
			if _, dup := st.seen[m]; dup {
				continue // once a transaction: the publisher reads it as committed
			}
			if st.seen == nil {
				st.seen = make(map[string]struct{}, len(units)-from)
			}
			st.seen[m] = struct{}{}
			st.seq++
			st.marks = append(st.marks, OutboxItem{Subject: m, Seq: st.seq})
		}
		st.bytes += size
		st.count += count
		st.records += delta
		results = append(results, res)
	}
	if _, err := writePages(txn, st.marks); err != nil {
		return 0, nil, err
	}
	st.marked = int64(len(st.marks))
	if st.seq != seq0 {
		if err := txn.Set(metaOutboxSeq, be64(st.seq)); err != nil {
			return 0, nil, err
		}
	}
	if st.records != records0 {
		if err := txn.Set(metaRecordsKey, be64(uint64(st.records))); err != nil {
			return 0, nil, err
		}
	}
	return i, results, nil
}

// plan reads what unit u needs through txn (which sees the writes already
// planned into it) and returns the key changes and the subjects to mark in
// the outbox (appended to ops and marks), the change in the record
// count and the unit's result.
func (db *DB) plan(txn *badger.Txn, u unit, ops []op, marks []string) (_ []op, _ []string, delta int64, res unitResult, err error) {
	r := u.req
	switch r.kind {
	case kindSubmit:
		rec, enc, k := &r.recs[u.i], r.enc[u.i], &r.keys[u.i]
		cur, found, err := getRecord(txn, k.record)
		if err != nil {
			return nil, nil, 0, res, err
		}
		if found {
			same := cur.SameContent(*rec)
			if !same && cur.Version > 1 {
				first, ok, err := getRecord(txn, k.version)
				if err != nil {
					return nil, nil, 0, res, err
				}
				same = ok && first.SameContent(*rec)
			}
			if same {
				return ops, marks, 0, unitResult{outcome: Duplicate}, nil
			}
			return ops, marks, 0, unitResult{outcome: Conflict, err: ErrConflict}, nil
		}
		// Version 1 is kept under r/ alone; v/ gets it once a second
		// version supersedes it (kindUpdate).
		ops = append(ops,
			op{key: k.record, val: enc},
			op{key: k.subject, val: r.facts[u.i]})
		ops = db.appendDue(ops, rec)
		return ops, append(marks, rec.Subject), 1, unitResult{outcome: Accepted}, nil

	case kindUpdate:
		next, enc := &r.recs[0], r.enc[0]
		cur, curEnc, found, err := getRecordBytes(txn, recordKey(next.Department, next.ID))
		if err != nil {
			return nil, nil, 0, res, err
		}
		if !found {
			return nil, nil, 0, unitResult{err: ErrNotFound}, nil
		}
		if next.Version != cur.Version+1 {
			return nil, nil, 0, unitResult{err: fmt.Errorf("%w: version must be the stored latest + 1", ErrConflict)}, nil
		}
		// The superseded version moves to v/ (a layout-2 store has it
		// there already: the same bytes again); the new one is under r/
		// alone.
		ops = append(ops,
			op{key: recordKey(next.Department, next.ID), val: enc},
			op{key: versionKey(cur.Department, cur.ID, cur.Version), val: curEnc})
		ops = db.appendDue(ops, next)
		// The subject index entry holds the summary fields, which a
		// correction or a status change may change.
		ops = append(ops, op{key: subjectKey(next.Subject, next.Department, next.ID), val: r.facts[0]})
		marks = append(marks, next.Subject)
		if cur.Subject != next.Subject {
			ops = append(ops, op{key: subjectKey(cur.Subject, cur.Department, cur.ID), del: true})
			marks = append(marks, cur.Subject)
		}
		return ops, marks, 0, unitResult{}, nil

	case kindRelease:
		relOps, subjects, err := planRelease(txn, r.due, r.next)
		marks = append(marks, subjects...)
		return append(ops, relOps...), marks, 0, unitResult{released: len(subjects)}, err

	default: // kindDelete
		cur, found, err := getRecord(txn, recordKey(r.dept, r.id))
		if err != nil {
			return nil, nil, 0, res, err
		}
		if !found {
			return nil, nil, 0, unitResult{err: ErrNotFound}, nil
		}
		seen := map[string]bool{cur.Subject: true}
		subjects := []string{cur.Subject}
		err = scanPrefix(txn, versionPrefix(r.dept, r.id), true, func(key, val []byte) error {
			v, err := decodeRecord(val)
			if err != nil {
				return err
			}
			ops = append(ops, op{key: key, del: true})
			if !seen[v.Subject] {
				seen[v.Subject] = true
				subjects = append(subjects, v.Subject)
			}
			return nil
		})
		if err != nil {
			return nil, nil, 0, res, err
		}
		for _, s := range subjects {
			ops = append(ops, op{key: subjectKey(s, r.dept, r.id), del: true})
			marks = append(marks, s)
		}
		ops = append(ops,
			op{key: recordKey(r.dept, r.id), del: true})
		return ops, marks, -1, unitResult{}, nil
	}
}

// getRecord reads and decodes the record under key.
func getRecord(txn *badger.Txn, key []byte) (credit.Record, bool, error) {
	rec, _, found, err := readRecord(txn, key, false)
	return rec, found, err
}

// getRecordBytes is getRecord that also returns a copy of the encoding.
func getRecordBytes(txn *badger.Txn, key []byte) (credit.Record, []byte, bool, error) {
	return readRecord(txn, key, true)
}

// readRecord reads and decodes the record under key, and copies its
// encoding if keep (the hot path, a duplicate check, does not).
func readRecord(txn *badger.Txn, key []byte, keep bool) (credit.Record, []byte, bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return credit.Record{}, nil, false, nil
	}
	if err != nil {
		return credit.Record{}, nil, false, engine(err)
	}
	var rec credit.Record
	var b []byte
	err = item.Value(func(v []byte) error {
		if keep {
			b = append([]byte(nil), v...)
		}
		var err error
		rec, err = decodeRecord(v)
		return err
	})
	if err != nil {
		return credit.Record{}, nil, false, engine(err)
	}
	return rec, b, true, nil
}

// newIterator is the store's one way to walk keys: under prefix (nil: the
// whole store), without prefetching values. Badger starts a goroutine for
// each value it prefetches, and the store's values are small, in the LSM
// tree, where reading one in place costs less (BenchmarkAuditScan: Range
// took half the CPU without).
func newIterator(txn *badger.Txn, prefix []byte) *badger.Iterator {
	return txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
}

// scanPrefix calls fn with a copy of each key (and value, if withValues)
// under prefix, in key order.
func scanPrefix(txn *badger.Txn, prefix []byte, withValues bool, fn func(key, val []byte) error) error {
	it := newIterator(txn, prefix)
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		var val []byte
		if withValues {
			var err error
			if val, err = item.ValueCopy(nil); err != nil {
				return engine(err)
			}
		}
		if err := fn(item.KeyCopy(nil), val); err != nil {
			return err
		}
	}
	return nil
}

// view runs fn in a read transaction while the DB is open.
func (db *DB) view(fn func(txn *badger.Txn) error) error {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.leave()
	return db.raw.View(fn)
}

// Record returns the latest version of the record (department, id), or
// ErrNotFound.
func (db *DB) Record(department, id string) (credit.Record, error) {
	if err := checkDeptID(department, id); err != nil {
		return credit.Record{}, fmt.Errorf("storage: record: %w", err)
	}
	var rec credit.Record
	err := db.view(func(txn *badger.Txn) error {
		r, found, err := getRecord(txn, recordKey(department, id))
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		rec = r
		return nil
	})
	if err != nil {
		return credit.Record{}, fmt.Errorf("storage: record: %w", err)
	}
	return rec, nil
}

// Versions returns every version of the record (department, id), oldest
// first, or ErrNotFound: the superseded ones under v/, then the latest
// under r/ (which a layout-2 store also kept under v/).
func (db *DB) Versions(department, id string) ([]credit.Record, error) {
	if err := checkDeptID(department, id); err != nil {
		return nil, fmt.Errorf("storage: versions: %w", err)
	}
	var out []credit.Record
	err := db.view(func(txn *badger.Txn) error {
		latest, found, err := getRecord(txn, recordKey(department, id))
		if err != nil || !found {
			return err
		}
		err = scanPrefix(txn, versionPrefix(department, id), true, func(_, val []byte) error {
			r, err := decodeRecord(val)
			if err != nil {
				return err
			}
			if r.Version < latest.Version {
				out = append(out, r)
			}
			return nil
		})
		if err != nil {
			return err
		}
		out = append(out, latest)
		return nil
	})
	if err == nil && len(out) == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: versions: %w", err)
	}
	return out, nil
}

// RecordsBySubject returns the latest version of every record about
// subject held here, ordered by (department, id); none is not an error.
func (db *DB) RecordsBySubject(subject string) ([]credit.Record, error) {
	if err := checkPart("subject", subject); err != nil {
		return nil, fmt.Errorf("storage: records by subject: %w", err)
	}
	var out []credit.Record
	p := subjectPrefix(subject)
	err := db.view(func(txn *badger.Txn) error {
		return scanPrefix(txn, p, false, func(key, _ []byte) error {
			r, err := recordOfSubjectKey(txn, key[len(p):])
			if err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: records by subject: %w", err)
	}
	return out, nil
}

// RecordsBySubjects is RecordsBySubject for many subjects at once, in one
// read transaction with one iterator (a publisher's pass: an iterator per
// subject cost more than reading the records). errs[i] is subject i's
// error, nil when its records were read; err is the transaction's.
func (db *DB) RecordsBySubjects(subjects []string) (out [][]credit.Record, errs []error, err error) {
	return db.bySubjects("records", subjects, func(txn *badger.Txn, item *badger.Item, rest []byte) (credit.Record, error) {
		return recordOfSubjectKey(txn, rest)
	})
}

// SummaryFieldsBySubjects is RecordsBySubjects for a publisher: each
// record holds only its summary fields (credit.Record.SummaryFields), read
// from the subject index entries themselves. Only an entry written before
// they were kept there (empty) costs a read of its record. The others are
// trusted to name a record: the two are written and deleted in one
// transaction, so only a damaged store has one without the other, and the
// district's answer to a lookup, which reads the records, reports that
// (ErrCorrupt). Looking each record's key up here to find it sooner
// doubled the index lag of a 100k-record intake (0.8 s -> 1.6 s).
func (db *DB) SummaryFieldsBySubjects(subjects []string) (out [][]credit.Record, errs []error, err error) {
	return db.bySubjects("summary fields", subjects, func(txn *badger.Txn, item *badger.Item, rest []byte) (credit.Record, error) {
		var r credit.Record
		var ok bool
		err := item.Value(func(v []byte) error {
			var err error
			r, ok, err = decodeFacts(v)
			return err
		})
		switch {
		case err != nil:
			return credit.Record{}, err
		case !ok:
			r, err = recordOfSubjectKey(txn, rest)
			return r.SummaryFields(), err
		}
		if _, _, ok := splitDeptID(rest); !ok {
			return credit.Record{}, fmt.Errorf("%w: malformed subject index key", ErrCorrupt)
		}
		return r, nil
	})
}

// bySubjects walks the subject index entries of each subject with one
// iterator in one read transaction, calling read with each entry and its
// key past the subject prefix (<department>\x00<id>). errs[i] is subject
// i's first error (its out[i] is then nil); err is the transaction's.
func (db *DB) bySubjects(what string, subjects []string, read func(txn *badger.Txn, item *badger.Item, rest []byte) (credit.Record, error)) (out [][]credit.Record, errs []error, err error) {
	out = make([][]credit.Record, len(subjects))
	errs = make([]error, len(subjects))
	err = db.view(func(txn *badger.Txn) error {
		it := newIterator(txn, prefix(famSubject, 0))
		defer it.Close()
		for i, subject := range subjects {
			if err := checkPart("subject", subject); err != nil {
				errs[i] = fmt.Errorf("storage: %s by subject: %w", what, err)
				continue
			}
			p := subjectPrefix(subject)
			for it.Seek(p); it.ValidForPrefix(p); it.Next() {
				item := it.Item()
				r, err := read(txn, item, item.Key()[len(p):])
				if err != nil {
					errs[i] = fmt.Errorf("storage: %s by subject: %w", what, err)
					out[i] = nil
					break
				}
				out[i] = append(out[i], r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("storage: %s by subjects: %w", what, err)
	}
	return out, errs, nil
}

// recordOfSubjectKey reads the record a subject index key names, given the
// key past its subject prefix (<department>\x00<id>).
func recordOfSubjectKey(txn *badger.Txn, rest []byte) (credit.Record, error) {
	dept, id, ok := splitDeptID(rest)
	if !ok {
		return credit.Record{}, fmt.Errorf("%w: malformed subject index key", ErrCorrupt)
	}
	r, found, err := getRecord(txn, recordKey(dept, id))
	if err != nil {
		return credit.Record{}, err
	}
	if !found {
		return credit.Record{}, fmt.Errorf("%w: subject index names a missing record", ErrCorrupt)
	}
	return r, nil
}

// CountRecords returns the number of records stored (latest versions). It
// is a counter kept in the same transactions as the records (m/records), so
// it costs nothing to read.
func (db *DB) CountRecords() int64 { return db.records.Load() }
