package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
	"github.com/dgraph-io/badger/v4/skl"
)

// DB is a node's store: one Badger database holding records, the outbox,
// the audit log and (later) the index state and Raft log. It is safe for
// concurrent use. Writes to records go through one committer goroutine,
// which coalesces what is waiting into one synced Badger transaction, and
// audit appends through one appender, which coalesces them into one
// flush of the audit journal (group commit).
type DB struct {
	raw *badger.DB
	log *slog.Logger

	// mu guards closed; every public method holds it for reading while it
	// uses raw, so Close waits for them and nothing touches a closed Badger.
	mu     sync.RWMutex
	closed bool

	// budget is how much one of our transactions may hold (half of Badger's
	// limit, computed as Badger does, so that splitting happens before
	// ErrTxnTooBig and the counters always fit).
	budgetBytes int64
	budgetCount int64

	records atomic.Int64 // number of records, mirrors m/records

	boundaries func(credit.Record) []credit.Date // Options.Boundaries

	writes     chan *writeReq
	writerDone chan struct{}
	outboxSeq  uint64 // last outbox seq handed out; owned by the committer
	// outboxVersion counts committed record writes (OutboxVersion).
	outboxVersion atomic.Uint64
	// outboxLen is the number of outbox entries (OutboxLen): counted when the
	// store opens, then moved by each committed write that adds or
	// removes one (a counter key would make concurrent writers conflict).
	outboxLen atomic.Int64

	audit *AuditLog

	custodyMu sync.Mutex // serializes custody counts (custody.go)

	gcStop chan struct{}
	gcDone chan struct{}
}

// Open opens (creating if needed) the store in opts.Dir.
//
// Encryption errors are told apart: ErrWrongKey (another key), ErrKeyRequired
// (encrypted directory, no key), ErrNotEncrypted (key given, plain directory);
// all three also match badger.ErrEncryptionKeyMismatch.
func Open(opts Options) (*DB, error) {
	if !opts.InMemory && opts.Dir == "" {
		return nil, errors.New("storage: open: Options.Dir is required")
	}
	if len(opts.EncryptionKey) > 0 && !validKeyLen(len(opts.EncryptionKey)) {
		return nil, fmt.Errorf("storage: open: %w", ErrBadKey)
	}
	bo := opts.badgerOptions()
	raw, err := badger.Open(bo)
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, classifyKeyMismatch(opts, err)
		}
		// Open errors name files and directories, never keys.
		return nil, fmt.Errorf("storage: open: %w", err)
	}
	db := &DB{
		raw:        raw,
		log:        opts.logger(),
		writes:     make(chan *writeReq, 1024),
		writerDone: make(chan struct{}),
		boundaries: opts.Boundaries,
	}
	// Badger: maxBatchSize = 15 % of MemTableSize, maxBatchCount =
	// maxBatchSize / skl.MaxNodeSize (db.go, checkAndSetOptions).
	maxSize := 15 * bo.MemTableSize / 100
	db.budgetBytes = maxSize / 2
	db.budgetCount = maxSize / int64(skl.MaxNodeSize) / 2

	if err := db.load(); err != nil {
		raw.Close()
		return nil, fmt.Errorf("storage: open: %w", err)
	}
	db.audit = newAuditLog(db)
	if err := db.audit.load(); err != nil {
		raw.Close()
		return nil, fmt.Errorf("storage: open: %w", err)
	}
	if !opts.InMemory {
		if err := db.audit.recover(opts.Dir, opts.EncryptionKey); err != nil {
			raw.Close()
			return nil, fmt.Errorf("storage: open: %w", err)
		}
	}
	go db.committer()
	go db.audit.appender()

	interval := opts.GCInterval
	if interval == 0 {
		interval = defaultGCInterval
	}
	if interval > 0 && !opts.InMemory {
		db.gcStop = make(chan struct{})
		db.gcDone = make(chan struct{})
		go db.gcLoop(interval)
	}
	return db, nil
}

// classifyKeyMismatch tells the three encryption mismatches apart by
// reading Badger's KEYREGISTRY header: a 16-byte IV, then the sanity text
// "Hello Badger", stored in clear when the directory is not encrypted
// (key_registry.go, WriteKeyRegistry).
func classifyKeyMismatch(opts Options, cause error) error {
	switch {
	case len(opts.EncryptionKey) == 0:
		return &keyError{ErrKeyRequired, cause}
	case registryIsPlain(opts.Dir):
		return &keyError{ErrNotEncrypted, cause}
	default:
		return &keyError{ErrWrongKey, cause}
	}
}

func registryIsPlain(dir string) bool {
	f, err := os.Open(filepath.Join(dir, badger.KeyRegistryFileName))
	if err != nil {
		return false
	}
	defer f.Close()
	hdr := make([]byte, 16+len("Hello Badger"))
	if _, err := io.ReadFull(f, hdr); err != nil {
		return false
	}
	return bytes.Equal(hdr[16:], []byte("Hello Badger"))
}

// load checks the layout version (writing it into a new directory),
// upgrades an older layout and reads the counters.
func (db *DB) load() error {
	var layout []byte
	err := db.raw.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaLayoutKey)
		if err != nil {
			return err
		}
		layout, err = item.ValueCopy(nil)
		return err
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return engine(err)
	}
	switch string(layout) {
	case "", "1", "2", "3", "4", layoutVersion:
	default:
		return ErrLayoutVersion // before any change: a later layout may use these families otherwise
	}
	// The old outbox is checked before anything changes: a store whose
	// markers cannot be converted is refused as it is.
	if err := db.checkOldOutbox(); err != nil {
		return fmt.Errorf("upgrade the outbox to pages: %w", err)
	}
	if string(layout) == "2" {
		if err := db.rewriteFacts(); err != nil {
			return fmt.Errorf("upgrade from layout 2: %w", err)
		}
	}
	// The by-id index of layouts 1 and 2 (and of builds of layout 3 before
	// it went), which nothing reads and no deletion removes any more: it
	// would keep a deleted record's id. One seek when there is none.
	if err := db.dropByID(); err != nil {
		return fmt.Errorf("drop the by-id index: %w", err)
	}
	// The layout is set before the outbox of layouts 1–3 is converted to
	// pages, so that an older build refuses the directory from the first
	// page on; the conversion is done again at every open while any o/ or
	// O/ marker is left (a crash part way).
	err = db.raw.Update(func(txn *badger.Txn) error {
		return engine(txn.Set(metaLayoutKey, []byte(layoutVersion)))
	})
	if err != nil {
		return err
	}
	if err := db.convertOutbox(); err != nil {
		return fmt.Errorf("upgrade the outbox to pages: %w", err)
	}
	return db.raw.View(func(txn *badger.Txn) error {
		var err error
		if db.outboxSeq, err = getCounter(txn, metaOutboxSeq); err != nil {
			return err
		}
		n, err := getCounter(txn, metaRecordsKey)
		if err != nil {
			return err
		}
		db.records.Store(int64(n))
		marked, err := countOutbox(txn)
		if err != nil {
			return engine(err)
		}
		db.outboxLen.Store(marked)
		return nil
	})
}

// convertBatch is the markers one transaction of convertOutbox converts.
var convertBatch = 1000

// convertCommitted is called after each transaction of convertOutbox has
// committed, with its step ("order": O/ entries added for layout 1;
// "pages"): a seam for the crash test, which kills the process there.
var convertCommitted = func(step string) {}

// checkOldOutbox reads the outbox markers of layouts 1–3 (o/<subject> →
// seq; from layout 2 on also O/<seq> → subject, the order the drain read)
// and refuses, as ErrCorrupt and before anything changes, markers that
// could not be converted: a number that is not 8 bytes, a subject a page
// could not hold, two subjects under one number. Two seeks when there
// are none.
func (db *DB) checkOldOutbox() error {
	return engine(db.raw.View(func(txn *badger.Txn) error {
		o := []byte{famOutbox, '/'}
		if err := scanPrefix(txn, o, true, func(key, val []byte) error {
			subject := string(key[len(o):])
			seq, err := parseBE64(val)
			if err != nil || checkPart("subject", subject) != nil {
				return fmt.Errorf("%w: an outbox marker of layout 3 or before (%d bytes of number)", ErrCorrupt, len(val))
			}
			item, err := txn.Get(outboxSeqKey(seq))
			if errors.Is(err, badger.ErrKeyNotFound) {
				return nil // layout 1, or an O/ entry lost: added by the conversion
			}
			if err != nil {
				return err
			}
			return item.Value(func(v []byte) error {
				if string(v) != subject {
					return fmt.Errorf("%w: two outbox markers under the number %d", ErrCorrupt, seq)
				}
				return nil
			})
		}); err != nil {
			return err
		}
		O := []byte{famOutboxSeq, '/'}
		return scanPrefix(txn, O, true, func(key, val []byte) error {
			if _, err := parseBE64(key[len(O):]); err != nil || checkPart("subject", string(val)) != nil {
				return fmt.Errorf("%w: an outbox marker of layout 2 or 3 in sequence order", ErrCorrupt)
			}
			return nil
		})
	}))
}

// convertOutbox converts the outbox markers of layouts 1–3 (checked by
// checkOldOutbox) into pages, keeping their numbers. First every o/ marker
// without its O/ entry (layout 1) gets one; then O/ is walked in sequence
// order, convertBatch entries a transaction that writes them into pages
// and deletes them, and the o/ markers that hold their numbers. A subject
// whose O/ entry is older than its o/ marker (the families out of step)
// gets an entry of each: published twice, harmlessly. The pages of a
// conversion cut short are below every marker left, so finishing it later
// keeps the pages apart; memory holds one batch.
func (db *DB) convertOutbox() error {
	o := []byte{famOutbox, '/'}
	start := o
	for { // the O/ entries layout 1 has not
		var missing []OutboxItem
		err := db.raw.View(func(txn *badger.Txn) error {
			it := newIterator(txn, o)
			defer it.Close()
			for it.Seek(start); it.ValidForPrefix(o) && len(missing) < convertBatch; it.Next() {
				key := it.Item().KeyCopy(nil)
				start = append(key, 0)
				val, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				seq, err := parseBE64(val)
				if err != nil {
					return fmt.Errorf("%w: an outbox marker", ErrCorrupt)
				}
				if _, err := txn.Get(outboxSeqKey(seq)); errors.Is(err, badger.ErrKeyNotFound) {
					missing = append(missing, OutboxItem{Subject: string(key[len(o):]), Seq: seq})
				} else if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return engine(err)
		}
		if len(missing) == 0 {
			break
		}
		err = db.raw.Update(func(txn *badger.Txn) error {
			for _, m := range missing {
				if err := txn.Set(outboxSeqKey(m.Seq), []byte(m.Subject)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return engine(err)
		}
		convertCommitted("order")
	}
	O := []byte{famOutboxSeq, '/'}
	for {
		var batch []OutboxItem
		var drop [][]byte // the o/ markers holding a number of the batch
		err := db.raw.View(func(txn *badger.Txn) error {
			it := newIterator(txn, O)
			defer it.Close()
			for it.Seek(O); it.ValidForPrefix(O) && len(batch) < convertBatch; it.Next() {
				seq, err := parseBE64(it.Item().Key()[len(O):])
				if err != nil {
					return fmt.Errorf("%w: an outbox marker in sequence order", ErrCorrupt)
				}
				subject, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				batch = append(batch, OutboxItem{Subject: string(subject), Seq: seq})
				if cur, found, err := getBE64(txn, outboxKey(string(subject))); err != nil {
					return err
				} else if found && cur == seq {
					drop = append(drop, outboxKey(string(subject)))
				}
			}
			return nil
		})
		if err != nil {
			return engine(err)
		}
		if len(batch) == 0 {
			return nil
		}
		err = db.raw.Update(func(txn *badger.Txn) error {
			if _, err := writePages(txn, batch); err != nil {
				return err
			}
			for _, m := range batch {
				if err := txn.Delete(outboxSeqKey(m.Seq)); err != nil {
					return err
				}
			}
			for _, k := range drop {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return engine(err)
		}
		convertCommitted("pages")
	}
}

// dropByID drops the i/ family if the store holds any of it.
func (db *DB) dropByID() error {
	p := []byte{famByID, '/'}
	found := false
	if err := db.raw.View(func(txn *badger.Txn) error {
		it := newIterator(txn, p)
		defer it.Close()
		it.Seek(p)
		found = it.ValidForPrefix(p)
		return nil
	}); err != nil {
		return engine(err)
	}
	if !found {
		return nil
	}
	return engine(db.raw.DropPrefix(p))
}

// factsBatch is the subject index entries one transaction of rewriteFacts
// writes.
var factsBatch = 1000

// rewriteFacts upgrades layout 2 to 3: it writes every subject index
// entry's summary fields from the record it names, since a layout-2 entry
// is empty or, if a later build wrote it and an older one then updated
// its record, stale. An entry whose record cannot be read is left empty
// (SummaryFieldsBySubjects then reads the record and reports it). Each
// batch of factsBatch entries is its own transaction: a crash part way
// leaves layout 2, and the next open does it all again.
func (db *DB) rewriteFacts() error {
	p := []byte{famSubject, '/'}
	start := p
	for {
		var keys, vals [][]byte
		err := db.raw.View(func(txn *badger.Txn) error {
			it := newIterator(txn, p)
			defer it.Close()
			for it.Seek(start); it.ValidForPrefix(p) && len(keys) < factsBatch; it.Next() {
				k := it.Item().KeyCopy(nil)
				val := []byte{}
				if i := bytes.IndexByte(k[len(p):], 0); i > 0 {
					if r, err := recordOfSubjectKey(txn, k[len(p)+i+1:]); err == nil {
						val = encodeFacts(&r)
					}
				}
				keys, vals = append(keys, k), append(vals, val)
			}
			return nil
		})
		if err != nil {
			return engine(err)
		}
		if len(keys) == 0 {
			return nil
		}
		err = db.raw.Update(func(txn *badger.Txn) error {
			for i := range keys {
				if err := txn.Set(keys[i], vals[i]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return engine(err)
		}
		if len(keys) < factsBatch {
			return nil
		}
		start = append(keys[len(keys)-1], 0) // the next key up
	}
}

func getCounter(txn *badger.Txn, key []byte) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, engine(err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return 0, engine(err)
	}
	return parseBE64(v)
}

// Badger returns the underlying database, for inspection (tools, tests
// that look at every key). It stays valid until Close; writing through it
// bypasses every guarantee of this package.
func (db *DB) Badger() *badger.DB {
	// What the audit journal holds is moved in first, so that an
	// inspection sees every acknowledged entry (an error is the next
	// audit operation's to report).
	if db.enter() == nil {
		_ = db.audit.settle()
		db.leave()
	}
	return db.raw
}

// enter marks the start of a public operation; it fails once Close began.
func (db *DB) enter() error {
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (db *DB) leave() { db.mu.RUnlock() }

// Close waits for operations in progress, stops the background goroutines
// and closes Badger. Calls after Close return ErrClosed.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return ErrClosed
	}
	db.closed = true
	db.mu.Unlock()

	if db.gcStop != nil {
		close(db.gcStop)
		<-db.gcDone
	}
	close(db.writes)
	<-db.writerDone
	db.audit.stop()
	if err := db.raw.Close(); err != nil {
		return fmt.Errorf("storage: close: %w", engine(err))
	}
	return nil
}

// CollectGarbage runs Badger's value-log GC until it has nothing left to
// rewrite. Only values above the value threshold (16 KiB in the preset) live
// in the value log, so on a store of ordinary records this is cheap; the
// active value-log file is never reclaimed. The background loop started by
// Open calls the same thing every Options.GCInterval.
func (db *DB) CollectGarbage() error {
	if err := db.enter(); err != nil {
		return fmt.Errorf("storage: gc: %w", err)
	}
	defer db.leave()
	return db.collectGarbage()
}

func (db *DB) collectGarbage() error {
	for {
		err := db.raw.RunValueLogGC(gcDiscardRatio)
		switch {
		case err == nil:
			continue // a file was rewritten; try the next one
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrGCInMemoryMode):
			return nil
		case errors.Is(err, badger.ErrRejected):
			return nil // another GC is running
		default:
			return fmt.Errorf("storage: gc: %w", engine(err))
		}
	}
}

func (db *DB) gcLoop(every time.Duration) {
	defer close(db.gcDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-db.gcStop:
			return
		case <-t.C:
			if err := db.collectGarbage(); err != nil {
				db.log.Warn("storage: value log GC failed", "err", err)
			}
		}
	}
}
