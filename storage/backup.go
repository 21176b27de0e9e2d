package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"google.golang.org/protobuf/proto"

	"credfed/internal/atomicfile"
)

// Backup and restore of the records database (docs/operations.md, "Back
// up and restore"). WriteBackup streams a consistent snapshot of the whole
// store — records and versions, indexes, outbox, audit chain, cases,
// custody, jobs, pseudonyms: every key — as an encrypted backup file
// (backupfile.go) while the node serves. It reads everything in one Badger
// read transaction, so the file is the store at one instant (Badger's own
// DB.Backup streams with one transaction per goroutine, which is not one
// instant, and buffers up to 32 lists of 16 MiB before the writer takes
// them); it holds at most one list of about backupListBytes and one chunk.
// Restore loads a file into an absent or empty directory with Badger's
// Load, through a directory beside it that is renamed into place only once
// every chunk was authenticated, the entry count matches and the audit
// chain verifies.
// backupListBytes is the size at which WriteBackup closes a KVList (a
// variable: tests make it small).
var backupListBytes = 1 << 20

const (
	// maxBackupList bounds a list Restore accepts (an entry is at most half
	// a transaction: far below).
	maxBackupList = 64 << 20
	// restoreMarkBatch is how many subjects one transaction of Restore
	// marks in the outbox.
	restoreMarkBatch = 1000
	// maxRestoreMarkers bounds the restore history kept (m/restores).
	maxRestoreMarkers = 64
	// restorePendingWrites is Badger Load's pending batches.
	restorePendingWrites = 8
)

// ErrRestoreNotEmpty: Restore was pointed at a store directory that is
// not absent or empty. Nothing was changed.
var ErrRestoreNotEmpty = errors.New("storage: restore goes only into an absent or empty store directory, and this one holds files (a store is there: stop its node if it runs, then move the directory aside)")

var metaRestoresKey = []byte("m/restores")

// BackupOptions configures WriteBackup.
type BackupOptions struct {
	// Key is the node's encryption-at-rest key; required
	// (ErrBackupKeyRequired).
	Key []byte
	// Federation and Region name the node (in the header; Restore refuses
	// a file of another node).
	Federation, Region string
	// TakenAt dates the backup (zero: now); ID is its id (zero: random).
	TakenAt time.Time
	ID      [16]byte
	// ChunkSize is the plaintext size of a chunk (0: DefaultBackupChunk).
	ChunkSize int
}

// BackupSummary is what WriteBackup wrote.
type BackupSummary struct {
	Header  BackupHeader
	Trailer BackupTrailer
	// FileBytes is the size of the file written.
	FileBytes int64
}

// WriteBackup writes a backup of the whole store to w: the snapshot of one
// read transaction, encrypted (backupfile.go). It stops at ctx's end or
// w's first error; w then holds a file without its final chunk, which
// Restore refuses.
func (db *DB) WriteBackup(ctx context.Context, w io.Writer, o BackupOptions) (BackupSummary, error) {
	var sum BackupSummary
	if len(o.Key) == 0 {
		return sum, ErrBackupKeyRequired
	}
	if o.Region == "" {
		return sum, errors.New("storage: backup: BackupOptions.Region is required")
	}
	if o.ChunkSize < 0 || o.ChunkSize > MaxBackupChunk {
		return sum, fmt.Errorf("storage: backup chunk size must be from %d to %d bytes", MinBackupChunk, MaxBackupChunk)
	}
	id, np, err := newBackupIDs()
	if err != nil {
		return sum, fmt.Errorf("storage: backup: %w", err)
	}
	if o.ID != [16]byte{} {
		id = o.ID
	}
	if o.TakenAt.IsZero() {
		o.TakenAt = time.Now()
	}
	if err := db.enter(); err != nil {
		return sum, fmt.Errorf("storage: backup: %w", err)
	}
	defer db.leave()
	if err := db.audit.settle(); err != nil {
		return sum, fmt.Errorf("storage: backup: %w", err)
	}
	txn := db.raw.NewTransaction(false)
	defer txn.Discard()
	head, err := readAuditHead(txn)
	if err != nil {
		return sum, fmt.Errorf("storage: backup: %w", err)
	}
	records, err := getCounter(txn, metaRecordsKey)
	if err != nil {
		return sum, fmt.Errorf("storage: backup: %w", err)
	}
	bw, err := newBackupWriter(w, o.Key, BackupHeader{Federation: o.Federation, Region: o.Region, TakenAt: o.TakenAt,
		ID: id, NoncePrefix: np, ChunkSize: uint32(o.ChunkSize)})
	if err != nil {
		return sum, fmt.Errorf("storage: backup: %w", err)
	}
	sum.Header = bw.hdr
	trailer := BackupTrailer{Records: int64(records), AuditSeq: head.Seq, AuditHash: head.Hash}
	list := &pb.KVList{}
	size := 0
	var lenBuf [8]byte
	flush := func() error {
		if len(list.Kv) == 0 {
			return nil
		}
		data, err := proto.Marshal(list)
		if err != nil {
			return fmt.Errorf("storage: backup: encode a list: %w", err)
		}
		binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(data)))
		if _, err := bw.Write(lenBuf[:]); err != nil {
			return err
		}
		if _, err := bw.Write(data); err != nil {
			return err
		}
		list.Kv, size = list.Kv[:0], 0
		return nil
	}
	it := newIterator(txn, nil)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if err := ctx.Err(); err != nil {
			return sum, fmt.Errorf("storage: backup: %w", err)
		}
		item := it.Item()
		if item.IsDeletedOrExpired() {
			continue
		}
		val, err := item.ValueCopy(nil)
		if err != nil {
			return sum, fmt.Errorf("storage: backup: %w", engine(err))
		}
		key := item.KeyCopy(nil)
		list.Kv = append(list.Kv, &pb.KV{Key: key, Value: val, UserMeta: []byte{item.UserMeta()},
			Version: item.Version(), ExpiresAt: item.ExpiresAt()})
		trailer.Entries++
		if size += len(key) + len(val) + 32; size >= backupListBytes {
			if err := flush(); err != nil {
				return sum, fmt.Errorf("storage: backup: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return sum, fmt.Errorf("storage: backup: %w", err)
	}
	n, err := bw.Finish(trailer)
	if err != nil {
		return sum, fmt.Errorf("storage: backup: %w", err)
	}
	trailer.Bytes = bw.payload
	sum.Trailer, sum.FileBytes = trailer, n
	return sum, nil
}

// RestoreMarker records a restore in the store it made (m/restores, the
// newest last): which backup, when, and the audit chain's head in it. The
// node's start check (audit.Anchorer) accepts an audit chain that ends
// before its anchors in Raft only on such a marker (CheckAnchorsReport),
// and settles it at the first start that reached the Raft leader: from
// then on, the anchors after AuditSeq up to LostThrough are known to be of
// the entries the restore lost, and are not checked.
type RestoreMarker struct {
	// Backup is the backup's id (hex).
	Backup string `cbor:"1,keyasint"`
	Region string `cbor:"2,keyasint"`
	// TakenAt is when the backup was taken, RestoredAt when it was
	// restored.
	TakenAt    time.Time `cbor:"3,keyasint"`
	RestoredAt time.Time `cbor:"4,keyasint"`
	// AuditSeq and AuditHash are the audit chain's head in the backup.
	AuditSeq  uint64   `cbor:"5,keyasint"`
	AuditHash [32]byte `cbor:"6,keyasint"`
	// Entries and Records are what the backup held; Subjects how many
	// subjects the restore marked for publishing, from outbox sequence
	// number OutboxFrom on.
	Entries    uint64 `cbor:"7,keyasint"`
	Records    int64  `cbor:"8,keyasint"`
	Subjects   int    `cbor:"9,keyasint"`
	OutboxFrom uint64 `cbor:"10,keyasint"`
	// LostThrough is the newest anchor of the node's log in Raft at the
	// first start after the restore (at least AuditSeq), SettledAt when
	// that start settled it; both zero until then.
	LostThrough uint64    `cbor:"11,keyasint,omitempty"`
	SettledAt   time.Time `cbor:"12,keyasint,omitzero"`
}

// Settled reports whether a start has settled the marker.
func (m RestoreMarker) Settled() bool { return !m.SettledAt.IsZero() }

func readRestores(txn *badger.Txn) ([]RestoreMarker, error) {
	item, err := txn.Get(metaRestoresKey)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, engine(err)
	}
	var out []RestoreMarker
	err = item.Value(func(v []byte) error { return decMode.Unmarshal(v, &out) })
	if err != nil {
		return nil, fmt.Errorf("%w: the restore markers do not decode", ErrCorrupt)
	}
	return out, nil
}

func writeRestores(txn *badger.Txn, ms []RestoreMarker) error {
	if len(ms) > maxRestoreMarkers {
		ms = ms[len(ms)-maxRestoreMarkers:]
	}
	b, err := encMode.Marshal(ms)
	if err != nil {
		return fmt.Errorf("storage: encode restore markers: %w", err)
	}
	return engine(txn.Set(metaRestoresKey, b))
}

// Restores returns the store's restore markers, oldest first (none for a
// store never restored).
func (db *DB) Restores() ([]RestoreMarker, error) {
	var out []RestoreMarker
	err := db.view(func(txn *badger.Txn) error {
		var err error
		out, err = readRestores(txn)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("storage: restores: %w", err)
	}
	return out, nil
}

// SettleRestore settles the newest restore marker if it is not settled
// yet: LostThrough becomes max(AuditSeq, lostThrough). It returns the
// marker as stored, and false when there was none to settle.
func (l *AuditLog) SettleRestore(lostThrough uint64, at time.Time) (RestoreMarker, bool, error) {
	var m RestoreMarker
	settled := false
	if err := l.db.enter(); err != nil {
		return m, false, fmt.Errorf("storage: settle restore: %w", err)
	}
	defer l.db.leave()
	err := l.db.raw.Update(func(txn *badger.Txn) error {
		ms, err := readRestores(txn)
		if err != nil || len(ms) == 0 || ms[len(ms)-1].Settled() {
			return err
		}
		last := &ms[len(ms)-1]
		last.LostThrough, last.SettledAt = max(last.AuditSeq, lostThrough), at.UTC()
		m, settled = *last, true
		return writeRestores(txn, ms)
	})
	if err != nil {
		return RestoreMarker{}, false, fmt.Errorf("storage: settle restore: %w", engine(err))
	}
	return m, settled, nil
}

// RestoreOptions configures Restore.
type RestoreOptions struct {
	// From is the backup file.
	From io.Reader
	// Dir is the store directory to create (data_dir/db): absent or empty.
	Dir string
	// Key is the node's encryption key: the backup's, and the new store's.
	Key []byte
	// Federation and Region are the node's: a backup of another node is
	// refused (ErrBackupOtherNode).
	Federation, Region string
	// Now dates the restore (nil: time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// RestoreSummary is what Restore did.
type RestoreSummary struct {
	Header  BackupHeader
	Trailer BackupTrailer
	Marker  RestoreMarker
}

// Restore creates the store directory o.Dir from a backup file, offline
// (the node stopped). It refuses, changing nothing, a directory that is not
// absent or empty (ErrRestoreNotEmpty), a file that is not a backup
// (ErrBackupFormat), of another key (ErrBackupWrongKey) or of another node
// (ErrBackupOtherNode). It loads into a directory beside o.Dir, authenticating
// each chunk before Badger sees it; a damaged (ErrBackupCorrupt) or cut
// (ErrBackupTruncated) file, an entry count that does not match, or an audit
// chain that does not verify removes it again, so no half-restored store is
// left. Then it marks every subject the store holds for publishing (the
// index may hold what the district recorded after the backup; the outbox
// numbers restart above the restore's time in nanoseconds, so that the
// index takes these updates over the newer-numbered ones of the lost
// entries), writes a RestoreMarker, and renames the directory into place.
func Restore(o RestoreOptions) (RestoreSummary, error) {
	var sum RestoreSummary
	if len(o.Key) == 0 {
		return sum, fmt.Errorf("storage: restore: %w", ErrBackupKeyRequired)
	}
	if o.Dir == "" || o.Region == "" || o.From == nil {
		return sum, errors.New("storage: restore: RestoreOptions.From, Dir and Region are required")
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	if err := checkEmptyDir(o.Dir); err != nil {
		return sum, err
	}
	br, err := OpenBackup(o.From, o.Key)
	if err != nil {
		return sum, fmt.Errorf("storage: restore: %w", err)
	}
	hdr := br.Header()
	sum.Header = hdr
	if hdr.Federation != o.Federation || hdr.Region != o.Region {
		return sum, fmt.Errorf("storage: restore: %w: the file is a backup of %s in federation %q, and this node is %s in %q",
			ErrBackupOtherNode, hdr.Region, hdr.Federation, o.Region, o.Federation)
	}
	parent, base := filepath.Dir(o.Dir), filepath.Base(o.Dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return sum, fmt.Errorf("storage: restore: %w", err)
	}
	// A restore that died half-way left its directory: ours by its name.
	if stale, _ := filepath.Glob(filepath.Join(parent, "."+base+".restore-*")); len(stale) > 0 {
		for _, s := range stale {
			os.RemoveAll(s)
		}
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".restore-")
	if err != nil {
		return sum, fmt.Errorf("storage: restore: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	opts := Options{Dir: tmp, EncryptionKey: o.Key, Logger: o.Logger, GCInterval: -1}
	trailer, err := loadBackup(opts, br)
	if err != nil {
		return sum, fmt.Errorf("storage: restore: %w", err)
	}
	sum.Trailer = trailer
	db, err := Open(opts)
	if err != nil {
		return sum, fmt.Errorf("storage: restore: the loaded store does not open: %w", err)
	}
	marker, err := db.finishRestore(hdr, trailer, now().UTC())
	if cerr := db.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("storage: restore: %w", cerr)
	}
	if err != nil {
		return sum, err
	}
	sum.Marker = marker
	// The empty directory (if any) gives way to the restored one.
	if err := os.Remove(o.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return sum, fmt.Errorf("storage: restore: %w", err)
	}
	if err := os.Rename(tmp, o.Dir); err != nil {
		return sum, fmt.Errorf("storage: restore: %w", err)
	}
	done = true
	if err := atomicfile.SyncDir(parent); err != nil {
		return sum, fmt.Errorf("storage: restore: %w", err)
	}
	return sum, nil
}

// checkEmptyDir refuses a directory that holds anything.
func checkEmptyDir(dir string) error {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w (%s is a file)", ErrRestoreNotEmpty, dir)
	}
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return fmt.Errorf("%w (%s)", ErrRestoreNotEmpty, dir)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("storage: restore: %w", err)
	}
	return nil
}

// loadBackup loads the payload of br into a new Badger store at opts.Dir
// and checks that it holds the trailer's number of entries.
func loadBackup(opts Options, br *BackupReader) (BackupTrailer, error) {
	raw, err := badger.Open(opts.badgerOptions())
	if err != nil {
		return BackupTrailer{}, fmt.Errorf("open the new store: %w", err)
	}
	lerr := raw.Load(&listBound{r: br}, restorePendingWrites)
	var entries uint64
	if lerr == nil {
		lerr = raw.View(func(txn *badger.Txn) error {
			it := newIterator(txn, nil)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				entries++
			}
			return nil
		})
	}
	if cerr := raw.Close(); lerr == nil && cerr != nil {
		return BackupTrailer{}, fmt.Errorf("close the new store: %w", engine(cerr))
	}
	if lerr != nil {
		for _, s := range []error{ErrBackupCorrupt, ErrBackupTruncated} {
			if errors.Is(lerr, s) {
				return BackupTrailer{}, lerr
			}
		}
		// Everything Badger read was authenticated first: a list that does
		// not decode was written so (or the disk failed).
		return BackupTrailer{}, fmt.Errorf("%w: the payload does not load (%s)", ErrBackupCorrupt, safeLoadErr(lerr))
	}
	t, ok := br.Trailer()
	if !ok {
		return BackupTrailer{}, fmt.Errorf("%w: the payload ended before the final chunk", ErrBackupCorrupt)
	}
	if entries != t.Entries {
		return BackupTrailer{}, fmt.Errorf("%w: the backup says %d entries and %d loaded", ErrBackupCorrupt, t.Entries, entries)
	}
	return t, nil
}

// safeLoadErr names a Load error without its text (which may quote a key).
func safeLoadErr(err error) string {
	var ee *engineError
	if errors.As(engine(err), &ee) {
		return ee.Error()
	}
	return "engine error"
}

// listBound passes a Badger backup payload through, refusing a list longer
// than maxBackupList before Load allocates for it.
type listBound struct {
	r    io.Reader
	size [8]byte
	have int
	left uint64
}

func (l *listBound) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	for b := p[:n]; len(b) > 0; {
		if l.left > 0 {
			k := min(uint64(len(b)), l.left)
			l.left -= k
			b = b[k:]
			continue
		}
		c := copy(l.size[l.have:], b)
		l.have += c
		b = b[c:]
		if l.have == len(l.size) {
			l.have = 0
			l.left = binary.LittleEndian.Uint64(l.size[:])
			if l.left > maxBackupList {
				return 0, fmt.Errorf("%w: a list of %d bytes", ErrBackupCorrupt, l.left)
			}
		}
	}
	return n, err
}

// renumberPages gives the entries of the outbox pages below seq (all of
// them, in the restore's idle store) new numbers above seq, in their
// order, restoreMarkBatch entries (whole pages) a transaction that
// deletes the pages it rewrites, and returns the last number given.
func (db *DB) renumberPages(seq uint64) (uint64, error) {
	p := []byte{famOutboxPage, '/'}
	end := outboxPageKey(seq + 1)
	for {
		var keys [][]byte
		var entries []OutboxItem
		err := db.raw.View(func(txn *badger.Txn) error {
			it := newIterator(txn, p)
			defer it.Close()
			for it.Seek(p); it.ValidForPrefix(p) && bytes.Compare(it.Item().Key(), end) < 0 && len(entries) < restoreMarkBatch; it.Next() {
				var err error
				if _, entries, err = readPage(it.Item(), entries); err != nil {
					return err
				}
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return seq, engine(err)
		}
		s := seq
		for i := range entries {
			s++
			entries[i].Seq = s
		}
		err = db.raw.Update(func(txn *badger.Txn) error {
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			if _, err := writePages(txn, entries); err != nil {
				return err
			}
			return txn.Set(metaOutboxSeq, be64(s))
		})
		if err != nil {
			return seq, engine(err)
		}
		seq = s
	}
}

// finishRestore checks the restored store's audit chain against the
// backup's trailer, marks every subject for publishing and writes the
// restore marker. The store is open but idle (nothing else writes).
func (db *DB) finishRestore(hdr BackupHeader, t BackupTrailer, now time.Time) (RestoreMarker, error) {
	if err := db.Audit().Verify(); err != nil {
		return RestoreMarker{}, fmt.Errorf("storage: restore: %w: the restored audit chain does not verify: %w", ErrBackupCorrupt, err)
	}
	if seq, hash := db.Audit().Head(); seq != t.AuditSeq || hash != t.AuditHash {
		return RestoreMarker{}, fmt.Errorf("storage: restore: %w: the restored audit chain ends at entry %d, the backup says %d", ErrBackupCorrupt, seq, t.AuditSeq)
	}
	m := RestoreMarker{Backup: fmt.Sprintf("%x", hdr.ID), Region: hdr.Region, TakenAt: hdr.TakenAt, RestoredAt: now,
		AuditSeq: t.AuditSeq, AuditHash: t.AuditHash, Entries: t.Entries, Records: t.Records}
	var err error
	if m.Subjects, m.OutboxFrom, err = db.markEverySubject(now); err != nil {
		return RestoreMarker{}, fmt.Errorf("storage: restore: %w", err)
	}
	err = db.raw.Update(func(txn *badger.Txn) error {
		ms, err := readRestores(txn)
		if err != nil {
			return err
		}
		return writeRestores(txn, append(ms, m))
	})
	if err != nil {
		return RestoreMarker{}, fmt.Errorf("storage: restore: write the marker: %w", engine(err))
	}
	return m, nil
}

// markEverySubject marks every subject of the store in the outbox, with
// sequence numbers from above max(m/oseq, now in nanoseconds): the index
// entries of the lost changes carry the old numbering's later numbers,
// which the FSM would otherwise prefer. The backup's own outbox entries
// are numbered again first, above the same point: a change it had not
// published may have left its subject without records (a deletion, a
// record moved to another subject), which marking the subjects with
// records would miss. It returns the subjects marked with records and the
// first sequence number.
func (db *DB) markEverySubject(now time.Time) (int, uint64, error) {
	var seq uint64
	err := db.raw.View(func(txn *badger.Txn) error {
		var err error
		seq, err = getCounter(txn, metaOutboxSeq)
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	if ns := now.UnixNano(); ns > 0 && uint64(ns) > seq {
		seq = uint64(ns)
	}
	from := seq + 1
	if seq, err = db.renumberPages(seq); err != nil {
		return 0, 0, err
	}
	var batch []string
	var added int64
	write := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := db.raw.Update(func(txn *badger.Txn) error {
			s := seq
			items := make([]OutboxItem, len(batch))
			for i, subject := range batch {
				s++
				items[i] = OutboxItem{Subject: subject, Seq: s}
			}
			if _, err := writePages(txn, items); err != nil {
				return err
			}
			if err := txn.Set(metaOutboxSeq, be64(s)); err != nil {
				return err
			}
			seq, added = s, int64(len(items))
			return nil
		})
		batch = batch[:0]
		if err == nil {
			db.outboxLen.Add(added)
		}
		return engine(err)
	}
	marked := 0
	p := []byte{famSubject, '/'}
	err = db.raw.View(func(txn *badger.Txn) error {
		it := newIterator(txn, p)
		defer it.Close()
		last := ""
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			rest := it.Item().Key()[len(p):]
			i := strings.IndexByte(string(rest), 0)
			if i <= 0 {
				return fmt.Errorf("%w: a subject index key without its parts", ErrCorrupt)
			}
			subject := string(rest[:i])
			if subject == last {
				continue
			}
			last = subject
			batch = append(batch, subject)
			marked++
			if len(batch) >= restoreMarkBatch {
				if err := write(); err != nil {
					return err
				}
			}
		}
		return write()
	})
	if err != nil {
		return 0, 0, err
	}
	return marked, from, nil
}
