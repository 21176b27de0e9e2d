package storage

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
)

// Audit decisions.
const (
	DecisionAllowed = "allowed"
	DecisionDenied  = "denied"
)

// AuditEntry is one registered operation (a lookup, a submission, a
// pseudonymization request, …), written before the operation is answered.
//
// Subject is never a raw identifier: it is the subject's pseudonym (the
// federation's keyed hash) in lowercase hex, and Append refuses anything
// else. Records holds record ids, never record content.
//
// Seq, Prev and Hash are filled by AuditLog.Append: Hash is
// SHA-256(Prev || CBOR(entry without Hash)), with the package's Core
// Deterministic encoding, and Prev is the Hash of entry Seq-1 (zero for 1).
type AuditEntry struct {
	At             time.Time `json:"at" cbor:"1,keyasint"`
	Node           string    `json:"node,omitempty" cbor:"2,keyasint,omitempty"`            // region path of the node writing the entry
	Caller         string    `json:"caller,omitempty" cbor:"3,keyasint,omitempty"`          // identity URI of the verified caller
	Role           string    `json:"role,omitempty" cbor:"4,keyasint,omitempty"`            // caller's role
	Institution    string    `json:"institution,omitempty" cbor:"5,keyasint,omitempty"`     // caller's institution or department
	User           string    `json:"user,omitempty" cbor:"6,keyasint,omitempty"`            // end user named in the request
	Operation      string    `json:"operation" cbor:"7,keyasint"`                           // e.g. "lookup", "record.submit"
	Purpose        string    `json:"purpose,omitempty" cbor:"8,keyasint,omitempty"`         // catalog purpose code
	Reference      string    `json:"reference,omitempty" cbor:"9,keyasint,omitempty"`       // case reference
	Authorization  string    `json:"authorization,omitempty" cbor:"10,keyasint,omitempty"`  // subject's authorization reference
	Authentication string    `json:"authentication,omitempty" cbor:"11,keyasint,omitempty"` // portal's real-name authentication reference
	Subject        string    `json:"subject,omitempty" cbor:"12,keyasint,omitempty"`        // pseudonym, lowercase hex
	District       string    `json:"district,omitempty" cbor:"13,keyasint,omitempty"`       // district asked or answering
	Records        []string  `json:"records,omitempty" cbor:"14,keyasint,omitempty"`        // ids of the records returned
	Decision       string    `json:"decision" cbor:"15,keyasint"`                           // DecisionAllowed or DecisionDenied
	Reason         string    `json:"reason,omitempty" cbor:"16,keyasint,omitempty"`         // error code when denied
	// Pseudonyms are those a coordinator handed out (pseudonymize),
	// lowercase hex; Count is how many identifiers a request named.
	Pseudonyms []string `json:"pseudonyms,omitempty" cbor:"20,keyasint,omitempty"`
	Count      int      `json:"count,omitempty" cbor:"21,keyasint,omitempty"`
	// LookupID is the federation-wide id of the lookup or check the entry
	// is part of: the same at the asking node and at every district that
	// answered (it travels in the exchange envelope), so that the access
	// log shows one entry per lookup.
	LookupID string `json:"lookup_id,omitempty" cbor:"22,keyasint,omitempty"`
	// Requester is the identity URI of the user a node asked on behalf of,
	// when it is not the caller: the coordinator or department a city
	// vouches for at an answering district, the department a district
	// forwarded at the city. Role and Institution are the requester's.
	Requester string `json:"requester,omitempty" cbor:"23,keyasint,omitempty"`

	Seq  uint64   `json:"seq" cbor:"17,keyasint"`
	Prev [32]byte `json:"prev" cbor:"18,keyasint"`
	Hash [32]byte `json:"hash" cbor:"19,keyasint,omitzero"`
}

// AuditTamperError is Verify's finding: the first entry at which the chain
// breaks, and how.
type AuditTamperError struct {
	Seq     uint64
	Problem string
}

// Error names the entry and the problem (never entry content).
func (e *AuditTamperError) Error() string {
	return fmt.Sprintf("storage: audit log tampered with at seq %d: %s", e.Seq, e.Problem)
}

// Unwrap returns ErrAuditTampered.
func (e *AuditTamperError) Unwrap() error { return ErrAuditTampered }

// auditHead is the value of a!head.
type auditHead struct {
	Seq  uint64   `cbor:"1,keyasint"`
	Hash [32]byte `cbor:"2,keyasint"`
}

// maxAuditRecords bounds AuditEntry.Records (the decoder's array limit).
const maxAuditRecords = 65536

// maxGroupEntries bounds how many entries one group commit takes from the
// queue.
const maxGroupEntries = 4096

// AuditLog is the node's tamper-evident audit log: a hash chain in the
// store, appended by one goroutine that writes every waiting append to the
// audit journal with one flush (auditjournal.go), or, in memory, commits
// it in one transaction. Obtain it from DB.Audit.
type AuditLog struct {
	db *DB

	mu       sync.Mutex // guards headSeq, headHash
	headSeq  uint64
	headHash [32]byte

	reqs chan *appendReq
	done chan struct{}

	// window is deferWindow (a test sets it longer, to know what waits).
	window atomic.Int64 // nanoseconds
	// commits counts the synced writes that acknowledge appends (journal
	// flushes, or transactions without a journal); deferred, the entries
	// of deferred appends waiting for one; moves, the synced transactions
	// that moved journaled entries into the store (all for the tests).
	commits  atomic.Uint64
	deferred atomic.Int64
	moves    atomic.Uint64

	// The journal (auditjournal.go; nil in memory and read-only): the
	// appender's alone, like pending, pendingBytes and failed.
	j            *auditJournal
	pending      []journaled // acknowledged, in the journal, not yet in the store
	pendingBytes int
	failed       error // a journal write or a move failed: appends are refused
}

type appendReq struct {
	entries []AuditEntry
	err     error
	done    chan struct{}
	// deferred: the entries may wait up to deferWindow for another append
	// to share their commit (AppendDeferred).
	deferred bool
	// settle: no entries; done once every acknowledged entry is in the
	// store (AuditLog.settle).
	settle bool
}

// deferWindow is how long a deferred append waits for another append to
// share its flush before it is written alone.
const deferWindow = 5 * time.Millisecond

// maxDeferredEntries bounds the entries of deferred appends waiting for a
// commit; an append beyond it is committed at once.
const maxDeferredEntries = 1024

// Journaled entries are moved into the store once this many (or this many
// bytes) are pending, or after auditMoveIdle without an append.
const (
	auditMoveEntries = 512
	auditMoveBytes   = 1 << 20
)

var auditMoveIdle = 100 * time.Millisecond

func newAuditLog(db *DB) *AuditLog {
	l := &AuditLog{db: db, reqs: make(chan *appendReq, 1024), done: make(chan struct{})}
	l.window.Store(int64(deferWindow))
	return l
}

// Audit returns the node's audit log.
func (db *DB) Audit() *AuditLog { return db.audit }

func (l *AuditLog) load() error {
	return l.db.raw.View(func(txn *badger.Txn) error {
		item, err := txn.Get(auditHeadKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return engine(err)
		}
		return item.Value(func(v []byte) error {
			var h auditHead
			if err := decMode.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("%w: audit head does not decode", ErrCorrupt)
			}
			l.headSeq, l.headHash = h.Seq, h.Hash
			return nil
		})
	})
}

func (l *AuditLog) stop() {
	close(l.reqs)
	<-l.done
}

// recover moves the entries the journal in dir holds after the store's
// head into the store, then opens the journal for appending (Open, before
// the appender starts).
func (l *AuditLog) recover(dir string, key []byte) error {
	items, err := l.readOwnJournal(dir, key)
	if err != nil {
		return err
	}
	if len(items) > 0 {
		l.pending = items
		if err := l.move(); err != nil {
			return fmt.Errorf("audit journal: move %d recovered entries: %w", len(items), err)
		}
		last := items[len(items)-1]
		l.headSeq, l.headHash = last.seq, last.hash
		l.db.log.Info("storage: audit entries recovered from the journal", "entries", len(items), "through", last.seq)
	}
	l.j, err = openJournal(dir, key)
	return err
}

// settle returns once every acknowledged entry is in the store's keys,
// where the readers look (a no-op without a journal). The caller holds
// db.enter.
func (l *AuditLog) settle() error {
	if l.reqs == nil || l.j == nil {
		return nil
	}
	req := &appendReq{settle: true, done: make(chan struct{})}
	l.reqs <- req
	<-req.done
	if req.err != nil {
		return fmt.Errorf("storage: audit log: %w", req.err)
	}
	return nil
}

// view runs fn in a read transaction that sees every acknowledged entry.
func (l *AuditLog) view(fn func(txn *badger.Txn) error) error {
	if err := l.db.enter(); err != nil {
		return err
	}
	defer l.db.leave()
	if err := l.settle(); err != nil {
		return err
	}
	return l.db.raw.View(fn)
}

// Append adds entries to the log in order and returns them with At (set to
// now when zero, always in UTC), Seq, Prev and Hash filled. They are on disk
// (synced) when Append returns. Concurrent appends are serialized by one
// appender and share a sync.
func (l *AuditLog) Append(entries ...AuditEntry) ([]AuditEntry, error) {
	return l.append(false, entries)
}

// AppendDeferred is Append for entries nothing waits on (a lookup's
// outcome, after its answer is released): they are as durable when it
// returns, but may wait up to 5 ms for another append to share their
// flush instead of paying one of their own. At one lookup at a
// time, the coordinator's outcome entry then rides on the next lookup's
// commit: one sync a lookup instead of two.
func (l *AuditLog) AppendDeferred(entries ...AuditEntry) ([]AuditEntry, error) {
	return l.append(true, entries)
}

func (l *AuditLog) append(deferred bool, entries []AuditEntry) ([]AuditEntry, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	now := time.Now().UTC()
	cp := make([]AuditEntry, len(entries))
	for i := range entries {
		// Checked in place in the copy: a loop variable whose address
		// reaches an encoder would be moved to the heap, one more
		// allocation per entry.
		cp[i] = entries[i]
		e := &cp[i]
		if err := checkAuditEntry(e); err != nil {
			return nil, fmt.Errorf("storage: audit append: entry %d: %w", i, err)
		}
		if e.At.IsZero() {
			e.At = now
		}
		e.At = e.At.UTC()
		if !l.fits(e) {
			return nil, fmt.Errorf("storage: audit append: entry %d: %w: too large", i, ErrAuditEntry)
		}
	}
	if err := l.db.enter(); err != nil {
		return nil, fmt.Errorf("storage: audit append: %w", err)
	}
	defer l.db.leave()
	req := &appendReq{entries: cp, done: make(chan struct{}), deferred: deferred}
	l.reqs <- req
	<-req.done
	if req.err != nil {
		return nil, fmt.Errorf("storage: audit append: %w", req.err)
	}
	return req.entries, nil
}

// fits says whether e, once chained, fits a transaction's budget (and
// encodes). Most entries are far below it, and auditSizeBound says so
// without encoding them (the appender encodes each entry anyway); only an
// entry near the budget, or with a time outside what RFC 3339 encodes, is
// encoded here to decide. The caller's goroutine is often a fresh one, and
// a reflective CBOR encoding on it cost a stack growth as well
// (docs/BENCHMARKS.md, "Server CPU per lookup").
func (l *AuditLog) fits(e *AuditEntry) bool {
	limit := l.db.budgetBytes - 256
	if l.j != nil {
		limit = min(limit, maxJournalEntry(l.j.size))
	}
	if y := e.At.Year(); y >= 0 && y <= 9999 && auditSizeBound(e) <= limit {
		return true
	}
	b, err := encMode.Marshal(e)
	return err == nil && int64(len(b)) <= limit
}

// auditSizeBound is an upper bound of len(encMode.Marshal(e)) for an
// entry whose time is within years 0–9999: a map head, and for every
// field its key, a head of at most 9 bytes and its content (the time an
// RFC 3339 string of at most 35 bytes, the hashes byte strings of 32, and
// all of them counted present, the omitted ones too).
func auditSizeBound(e *AuditEntry) int64 {
	const field = 1 + 9 // key, head
	n := int64(9) + 23*field + 35 + 3*32
	for _, s := range [...]string{e.Node, e.Caller, e.Role, e.Institution, e.User, e.Operation, e.Purpose, e.Reference,
		e.Authorization, e.Authentication, e.Subject, e.District, e.Decision, e.Reason, e.LookupID, e.Requester} {
		n += int64(len(s))
	}
	for _, list := range [...][]string{e.Records, e.Pseudonyms} {
		for _, s := range list {
			n += 9 + int64(len(s))
		}
	}
	return n
}

func checkAuditEntry(e *AuditEntry) error {
	switch {
	case e.Seq != 0 || e.Prev != [32]byte{} || e.Hash != [32]byte{}:
		return fmt.Errorf("%w: seq, prev and hash are filled by the log", ErrAuditEntry)
	case len(e.Records) > maxAuditRecords:
		return fmt.Errorf("%w: more than %d record ids", ErrAuditEntry, maxAuditRecords)
	case e.Operation == "":
		return fmt.Errorf("%w: operation is empty", ErrAuditEntry)
	case e.Decision != DecisionAllowed && e.Decision != DecisionDenied:
		return fmt.Errorf("%w: decision must be %q or %q", ErrAuditEntry, DecisionAllowed, DecisionDenied)
	case len(e.Pseudonyms) > maxAuditRecords:
		return fmt.Errorf("%w: more than %d pseudonyms", ErrAuditEntry, maxAuditRecords)
	case e.Subject != "":
		if err := checkPseudonym(e.Subject); err != nil {
			return err
		}
	}
	for _, p := range e.Pseudonyms {
		if err := checkPseudonym(p); err != nil {
			return err
		}
	}
	// The decoder refuses invalid UTF-8 (codec.go): an entry it could not
	// read back would be stored, and then fail Verify and the journal's
	// recovery.
	for _, s := range [...]string{e.Node, e.Caller, e.Role, e.Institution, e.User, e.Operation, e.Purpose, e.Reference,
		e.Authorization, e.Authentication, e.District, e.Decision, e.Reason, e.LookupID, e.Requester} {
		if !utf8.ValidString(s) {
			return fmt.Errorf("%w: a text field is not valid UTF-8", ErrAuditEntry)
		}
	}
	for _, s := range e.Records {
		if !utf8.ValidString(s) {
			return fmt.Errorf("%w: a record id is not valid UTF-8", ErrAuditEntry)
		}
	}
	return nil
}

// checkPseudonym accepts lowercase hex of 32 to 128 digits (128 to 512 bits).
// An 18-character identifier is refused by length even when it is all digits.
func checkPseudonym(p string) error {
	if len(p) < 32 || len(p) > 128 || len(p)%2 != 0 {
		return ErrNotPseudonym
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ErrNotPseudonym
		}
	}
	return nil
}

// Head returns the sequence number and hash of the last entry (0 and the
// zero hash for an empty log). Anchoring it in Raft is what catches a
// removed tail.
func (l *AuditLog) Head() (seq uint64, hash [32]byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.headSeq, l.headHash
}

// appender is the single writer of the audit log. A deferred append waits,
// up to deferWindow and within maxDeferredEntries, for any other append,
// and is committed with it. (The log is stopped only once no append is in
// progress, Close waiting for them, so nothing waits when it stops; were
// anything waiting, it would be committed first.)
func (l *AuditLog) appender() {
	defer close(l.done)
	var (
		waiting []*appendReq // deferred, in arrival order
		held    int          // their entries
		window  = time.NewTimer(deferWindow)
		idle    = time.NewTimer(auditMoveIdle)
	)
	window.Stop()
	idle.Stop()
	defer l.closeJournal()
	commit := func(group []*appendReq) {
		l.commitGroup(group)
		if len(l.pending) > 0 {
			idle.Reset(auditMoveIdle)
		}
		for _, r := range group {
			close(r.done)
		}
	}
	for {
		var req *appendReq
		open := true
		switch {
		case len(waiting) > 0:
			select {
			case req, open = <-l.reqs:
			case <-window.C:
			}
		case len(l.pending) > 0:
			select {
			case req, open = <-l.reqs:
			case <-idle.C:
				l.moveOrFail()
				continue
			}
		default:
			req, open = <-l.reqs
		}
		if !open {
			if len(waiting) > 0 {
				commit(waiting)
			}
			return
		}
		if req != nil && req.deferred && held+len(req.entries) <= maxDeferredEntries {
			if len(waiting) == 0 {
				window.Reset(time.Duration(l.window.Load()))
			}
			waiting, held = append(waiting, req), held+len(req.entries)
			l.deferred.Store(int64(held))
			continue
		}
		// Stop: since Go 1.23 no stale tick is received after it.
		window.Stop()
		group, n := waiting, held
		waiting, held = nil, 0
		l.deferred.Store(0)
		if req != nil {
			group, n = append(group, req), n+len(req.entries)
		}
	drain:
		for n < maxGroupEntries {
			select {
			case r, ok := <-l.reqs:
				if !ok {
					commit(group)
					return
				}
				group = append(group, r)
				n += len(r.entries)
			default:
				break drain
			}
		}
		commit(group)
	}
}

// auditSlot points at one entry of a request in a group.
type auditSlot struct {
	req *appendReq
	i   int
}

func (l *AuditLog) commitGroup(group []*appendReq) {
	var slots []auditSlot
	settle := false
	for _, r := range group {
		settle = settle || r.settle
		for i := range r.entries {
			slots = append(slots, auditSlot{r, i})
		}
	}
	if l.j != nil {
		l.journalSlots(slots)
		if settle || len(l.pending) >= auditMoveEntries || l.pendingBytes >= auditMoveBytes {
			l.moveOrFail()
		}
		if settle && l.failed != nil {
			for _, r := range group {
				if r.settle {
					r.err = l.failed
				}
			}
		}
		return
	}
	for from := 0; from < len(slots); {
		next, err := l.commitFrom(slots, from)
		if err != nil {
			for _, s := range slots[from:] {
				s.req.err = err
			}
			return
		}
		from = next
	}
}

// commitFrom chains and commits slots[from:next] in one transaction.
func (l *AuditLog) commitFrom(slots []auditSlot, from int) (int, error) {
	db := l.db
	l.mu.Lock()
	seq, prev := l.headSeq, l.headHash
	l.mu.Unlock()

	txn := db.raw.NewTransaction(true)
	defer txn.Discard()
	chained := make([]AuditEntry, 0, len(slots)-from)
	var size, count int64
	i := from
	for ; i < len(slots); i++ {
		e := slots[i].req.entries[slots[i].i]
		e.Seq, e.Prev, e.Hash = seq+1, prev, [32]byte{}
		hash, err := auditHash(&e)
		if err != nil {
			return 0, err
		}
		e.Hash = hash
		val, err := encMode.Marshal(&e)
		if err != nil {
			return 0, fmt.Errorf("%w: encode: %v", ErrAuditEntry, err)
		}
		esize, ecount := int64(len(val))+10+32, int64(1)
		if e.Subject != "" {
			esize += int64(len(e.Subject)) + 12 + 32
			ecount++
		}
		if i > from && (size+esize > db.budgetBytes || count+ecount > db.budgetCount) {
			break
		}
		if err := txn.Set(auditKey(e.Seq), val); err != nil {
			return 0, engine(err)
		}
		if e.Subject != "" {
			if err := txn.Set(auditSubjectKey(e.Subject, e.Seq), []byte{}); err != nil {
				return 0, engine(err)
			}
		}
		size, count = size+esize, count+ecount
		seq, prev = e.Seq, e.Hash
		chained = append(chained, e)
	}
	head, err := encMode.Marshal(auditHead{Seq: seq, Hash: prev})
	if err != nil {
		return 0, fmt.Errorf("storage: encode audit head: %w", err)
	}
	if err := txn.Set(auditHeadKey, head); err != nil {
		return 0, engine(err)
	}
	// Only the appender writes these keys, so there is no conflict to retry.
	if err := txn.Commit(); err != nil {
		return 0, engine(err)
	}
	l.commits.Add(1)
	l.mu.Lock()
	l.headSeq, l.headHash = seq, prev
	l.mu.Unlock()
	for k, e := range chained {
		s := slots[from+k]
		s.req.entries[s.i] = e
	}
	return i, nil
}

// auditHash is SHA-256(e.Prev || CBOR(e without Hash)); e.Hash must be zero
// (the field is omitted from the encoding when zero).
func auditHash(e *AuditEntry) ([32]byte, error) {
	b, err := encMode.Marshal(e)
	if err != nil {
		return [32]byte{}, fmt.Errorf("%w: encode: %v", ErrAuditEntry, err)
	}
	h := sha256.New()
	h.Write(e.Prev[:])
	h.Write(b)
	var out [32]byte
	h.Sum(out[:0])
	return out, nil
}

func decodeAudit(b []byte) (AuditEntry, error) {
	var e AuditEntry
	if err := decMode.Unmarshal(b, &e); err != nil {
		return AuditEntry{}, fmt.Errorf("%w: audit entry does not decode", ErrCorrupt)
	}
	return e, nil
}

// Range calls fn for each entry with from <= Seq <= to in order (to == 0:
// up to the end), inside one read snapshot; fn's error stops the walk and is
// returned as is.
func (l *AuditLog) Range(from, to uint64, fn func(AuditEntry) error) error {
	start := auditKey(from)
	p := []byte{famAudit, '/'}
	err := l.view(func(txn *badger.Txn) error {
		it := newIterator(txn, p)
		defer it.Close()
		for it.Seek(start); it.ValidForPrefix(p); it.Next() {
			item := it.Item()
			seq, err := parseBE64(item.Key()[2:])
			if err != nil {
				return err
			}
			if to != 0 && seq > to {
				return nil
			}
			var e AuditEntry
			if err := item.Value(func(v []byte) error {
				e, err = decodeAudit(v)
				return err
			}); err != nil {
				return engine(err)
			}
			if err := fn(e); err != nil {
				return &fnError{err}
			}
		}
		return nil
	})
	var fe *fnError
	if errors.As(err, &fe) {
		return fe.err
	}
	if err != nil {
		return fmt.Errorf("storage: audit range: %w", err)
	}
	return nil
}

// fnError carries a callback's error through a transaction unchanged.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }

// BySubject returns every entry about the subject pseudonym (lowercase
// hex), oldest first: the access log a subject may read through the portal.
func (l *AuditLog) BySubject(pseudonymHex string) ([]AuditEntry, error) {
	if err := checkPseudonym(pseudonymHex); err != nil {
		return nil, fmt.Errorf("storage: audit by subject: %w", err)
	}
	p := auditSubjectPrefix(pseudonymHex)
	var out []AuditEntry
	err := l.view(func(txn *badger.Txn) error {
		return scanPrefix(txn, p, false, func(key, _ []byte) error {
			seq, err := parseBE64(key[len(p):])
			if err != nil {
				return err
			}
			item, err := txn.Get(auditKey(seq))
			if errors.Is(err, badger.ErrKeyNotFound) {
				return fmt.Errorf("%w: audit subject index names a missing entry", ErrCorrupt)
			}
			if err != nil {
				return engine(err)
			}
			return item.Value(func(v []byte) error {
				e, err := decodeAudit(v)
				if err != nil {
					return err
				}
				out = append(out, e)
				return nil
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("storage: audit by subject: %w", err)
	}
	return out, nil
}

// Verify walks the whole chain in one snapshot and returns nil or an
// *AuditTamperError naming the first entry where it breaks: an entry
// changed (its hash no longer matches its content, or its bytes are not
// the canonical encoding of what they decode to), removed (a gap in the
// sequence, or a prev hash that does not match the entry before),
// reordered (an entry stored under another entry's sequence number), or a
// head that does not match the last entry. A tail removed together with a
// rewound head is invisible here; the heads anchored in Raft catch it.
func (l *AuditLog) Verify() error {
	p := []byte{famAudit, '/'}
	err := l.view(func(txn *badger.Txn) error {
		var prev [32]byte
		expect := uint64(1)
		it := newIterator(txn, p)
		defer it.Close()
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			item := it.Item()
			key := item.Key()
			if len(key) != 10 {
				return &AuditTamperError{expect, "malformed key in the audit range"}
			}
			seq, _ := parseBE64(key[2:])
			if seq != expect {
				return &AuditTamperError{expect, fmt.Sprintf("entry missing (the next stored entry is %d)", seq)}
			}
			val, err := item.ValueCopy(nil)
			if err != nil {
				return engine(err)
			}
			e, err := decodeAudit(val)
			if err != nil {
				return &AuditTamperError{seq, "entry does not decode"}
			}
			if e.Seq != seq {
				return &AuditTamperError{seq, fmt.Sprintf("entry stored here claims seq %d: entries reordered or moved", e.Seq)}
			}
			if re, err := encMode.Marshal(&e); err != nil || !bytes.Equal(re, val) {
				return &AuditTamperError{seq, "entry bytes are not the canonical encoding of its content: altered"}
			}
			if e.Prev != prev {
				return &AuditTamperError{seq, fmt.Sprintf("prev does not match the hash of entry %d: an entry before this one was removed (and the rest renumbered), entry %d was rewritten with its hash recomputed, or this entry's link was altered", seq-1, seq-1)}
			}
			want := e.Hash
			e.Hash = [32]byte{}
			got, err := auditHash(&e)
			if err != nil {
				return err
			}
			if got != want {
				return &AuditTamperError{seq, "hash does not match the content: entry changed"}
			}
			prev = want
			expect++
		}
		last := expect - 1
		item, err := txn.Get(auditHeadKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			if last == 0 {
				return nil
			}
			return &AuditTamperError{last, "head record missing"}
		}
		if err != nil {
			return engine(err)
		}
		var h auditHead
		if err := item.Value(func(v []byte) error { return decMode.Unmarshal(v, &h) }); err != nil {
			return &AuditTamperError{last, "head record does not decode"}
		}
		switch {
		case h.Seq > last:
			return &AuditTamperError{last + 1, fmt.Sprintf("entries %d to %d missing at the end (the head names %d)", last+1, h.Seq, h.Seq)}
		case h.Seq < last:
			return &AuditTamperError{h.Seq + 1, fmt.Sprintf("entries after the head (%d) were added outside the log", h.Seq)}
		case h.Hash != prev:
			return &AuditTamperError{last, "head hash does not match the last entry"}
		}
		return nil
	})
	var te *AuditTamperError
	if errors.As(err, &te) {
		return te
	}
	if err != nil {
		return fmt.Errorf("storage: audit verify: %w", err)
	}
	return nil
}
