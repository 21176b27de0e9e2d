package storage

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/dgraph-io/badger/v4"
)

// The audit journal is the audit log's write-ahead file: an appended
// group of entries is acknowledged once its frame is written there and
// flushed with one fdatasync, and moved into the store's a/, A/ and a!head
// keys later: everything pending at once, in synced commits within
// Badger's transaction budget, once auditMoveEntries entries or
// auditMoveBytes are pending, when the journal is full, before a reader
// looks (a read, a backup, Badger()), after auditMoveIdle without an
// append, and at Close. Badger syncs two files at every
// commit, its WAL and its value log (which holds nothing below the value
// threshold); a preallocated file changes no metadata when written, so its
// flush is the cheapest durable write this disk has (docs/BENCHMARKS.md,
// "Where a lookup at one client waits").
//
// The file is journalSize bytes, zeros when created, written from offset 0
// again once everything in it is in the store. A frame is
//
//	len u32 LE | crc32c(body) u32 LE | body
//	body = salt [16] | first seq u64 BE | payload
//	payload = (len u32 LE | CBOR AuditEntry)…, sealed with AES-GCM when
//	          the store is encrypted (in the clear otherwise, as Badger's
//	          files are)
//
// The GCM key is HKDF-SHA-256 of the store's encryption key with the salt,
// which is random at every open, and the nonce the frame's first seq, which
// only grows within an open. Recovery (at Open) reads frames from offset 0
// while each is whole and continues the sequence: a torn frame (its crc
// does not match), a zero length, or a frame of an earlier pass over the
// file or of an earlier open (its first seq does not continue the frame
// before, or its salt is another) ends the journal. A clean stop zeroes
// the first frame's header, so the journal of a stopped node ends at once
// (the old frames' bytes stay on the disk, sealed when the store is
// encrypted). Entries at or below the store's
// head are already in the store; the others must chain on from it, and
// are moved into it before Open returns.
type auditJournal struct {
	f    *os.File
	off  int64 // where the next frame goes
	size int64 // the file's
	key  []byte
	salt [16]byte
	aead cipher.AEAD // nil: the store is not encrypted
	buf  []byte
}

// journalName is the journal's file name in the store's directory.
const journalName = "credfed-audit.journal"

// journalSize is the journal file's size. The largest frame is one entry
// of the transaction budget (about 1.2 MiB) plus its header.
var journalSize int64 = 8 << 20

// frameBudget bounds the payload of one frame; a group larger than it is
// written as several frames under one flush.
const frameBudget = 1 << 20

const (
	frameHeader = 8
	bodyHeader  = 16 + 8
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errJournalFull: the frame does not fit after off; the caller moves what
// is pending and writes it from offset 0.
var errJournalFull = errors.New("storage: audit journal full")

// openJournal opens the journal in dir for appending, without reading it
// (recover has moved what it held): created and zero-filled when absent,
// and made again when it is shorter than journalSize (cut by hand, or of
// another build), which would refuse every entry as too large otherwise.
func openJournal(dir string, key []byte) (*auditJournal, error) {
	path := filepath.Join(dir, journalName)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = createJournal(path)
	}
	if err != nil {
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	st, err := f.Stat()
	if err == nil && st.Size() < journalSize {
		f.Close()
		if f, err = createJournal(path); err == nil {
			st, err = f.Stat()
		}
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	j := &auditJournal{f: f, key: key, size: st.Size()}
	if _, err := rand.Read(j.salt[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	if len(key) > 0 {
		if j.aead, err = journalAEAD(key, j.salt[:]); err != nil {
			f.Close()
			return nil, fmt.Errorf("audit journal: %w", err)
		}
	}
	return j, nil
}

// createJournal writes a zero-filled journal under a temporary name,
// syncs it and renames it into place (and syncs the directory), so that a
// crash never leaves a short journal whose writes would change metadata.
func createJournal(path string) (*os.File, error) {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	zeros := make([]byte, 1<<20)
	for n := int64(0); n < journalSize && err == nil; n += int64(len(zeros)) {
		_, err = f.Write(zeros[:min(int64(len(zeros)), journalSize-n)])
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	return f, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func journalAEAD(key, salt []byte) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, key, salt, "credfed audit journal", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// journaled is one entry as the journal and the move hold it.
type journaled struct {
	seq     uint64
	hash    [32]byte
	subject string
	val     []byte // CBOR AuditEntry
}

// frame encodes entries (consecutive seqs) as one frame into j.buf.
func (j *auditJournal) frame(entries []journaled) []byte {
	b := append(j.buf[:0], make([]byte, frameHeader)...)
	b = append(b, j.salt[:]...)
	b = binary.BigEndian.AppendUint64(b, entries[0].seq)
	payload := len(b)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.val)))
		b = append(b, e.val...)
	}
	if j.aead != nil {
		b = slices.Grow(b, j.aead.Overhead()) // sealed in place
		var nonce [12]byte
		binary.BigEndian.PutUint64(nonce[4:], entries[0].seq)
		sealed := j.aead.Seal(b[payload:payload], nonce[:], b[payload:], b[frameHeader:payload])
		b = b[:payload+len(sealed)]
	}
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)-frameHeader))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[frameHeader:], crcTable))
	j.buf = b
	return b
}

// write appends frames at off and flushes them with one fdatasync. It
// returns errJournalFull, having written nothing, when they do not fit.
func (j *auditJournal) write(frames []byte) error {
	if j.off+int64(len(frames)) > j.size {
		return errJournalFull
	}
	if _, err := j.f.WriteAt(frames, j.off); err != nil {
		return err
	}
	if err := syscall.Fdatasync(int(j.f.Fd())); err != nil {
		return err
	}
	j.off += int64(len(frames))
	return nil
}

// rewind makes the next frame go to offset 0: everything in the journal
// is in the store.
func (j *auditJournal) rewind() { j.off = 0 }

// clear zeroes the first frame's header (and flushes it): the journal
// then ends before its first frame.
func (j *auditJournal) clear() error {
	var zero [frameHeader]byte
	if _, err := j.f.WriteAt(zero[:], 0); err != nil {
		return err
	}
	j.off = 0
	return syscall.Fdatasync(int(j.f.Fd()))
}

func (j *auditJournal) close() error { return j.f.Close() }

// readJournal returns the entries of the journal in dir after head, in
// order, checked: every entry decodes, hashes to its Hash, and chains on
// from head (seq head.Seq+1 with Prev head.Hash, then each from the one
// before); the journal's entry at head.Seq, when it holds one, must be
// headVal, the store's. Entries before the head are not decoded: they are
// the store's already. A journal that cannot be read so is ErrCorrupt: it
// holds acknowledged entries this store does not have, or is another
// store's. An absent journal holds none.
//
// The frames from offset 0 to the end are those of the last open, which
// started writing at 0: the journal ends at the first frame that is torn
// (its crc does not match) or zeros, of an earlier pass over the file (its
// first seq does not continue the one before) or of another open (its
// salt, random at every open, is not the first frame's).
func readJournal(dir string, key []byte, head auditHead, headVal []byte) ([]journaled, error) {
	f, err := os.Open(filepath.Join(dir, journalName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("audit journal: %w", err)
	}
	var (
		out   []journaled
		off   int64
		next  uint64 // the seq the next frame must start at (0: the first frame)
		salt  [16]byte
		aead  cipher.AEAD
		prev  = head.Hash
		want  = head.Seq + 1
		hdr   [frameHeader]byte
		size  = st.Size()
		first = true
	)
	for {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("audit journal: %w", err)
		}
		n := int64(binary.LittleEndian.Uint32(hdr[0:]))
		if n < bodyHeader || off+frameHeader+n > size {
			return out, nil // zeros, or not a frame: the end
		}
		body := make([]byte, n)
		if _, err := f.ReadAt(body, off+frameHeader); err != nil {
			return nil, fmt.Errorf("audit journal: %w", err)
		}
		if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(hdr[4:]) {
			return out, nil // a torn frame: never acknowledged
		}
		start := binary.BigEndian.Uint64(body[16:24])
		if !first && (start != next || [16]byte(body[:16]) != salt) {
			return out, nil // a frame of an earlier pass, or of an earlier open
		}
		if first {
			salt, first = [16]byte(body[:16]), false
			if len(key) > 0 {
				if aead, err = journalAEAD(key, salt[:]); err != nil {
					return nil, fmt.Errorf("audit journal: %w", err)
				}
			}
		}
		payload := body[bodyHeader:]
		if aead != nil {
			var nonce [12]byte
			binary.BigEndian.PutUint64(nonce[4:], start)
			if payload, err = aead.Open(nil, nonce[:], payload, body[:bodyHeader]); err != nil {
				return nil, fmt.Errorf("%w: an audit journal frame at offset %d does not authenticate", ErrCorrupt, off)
			}
		}
		seq := start
		for len(payload) > 0 {
			if len(payload) < 4 || int64(binary.LittleEndian.Uint32(payload)) > int64(len(payload)-4) {
				return nil, fmt.Errorf("%w: an audit journal frame at offset %d is malformed", ErrCorrupt, off)
			}
			l := binary.LittleEndian.Uint32(payload)
			val := payload[4 : 4+l]
			payload = payload[4+l:]
			at := seq
			seq++
			switch {
			case at < head.Seq:
				continue // the store's already
			case at == head.Seq:
				if !bytes.Equal(val, headVal) {
					return nil, fmt.Errorf("%w: audit journal entry %d is not the store's (a journal of another store?)", ErrCorrupt, at)
				}
				continue
			}
			e, err := decodeAudit(val)
			if err != nil || e.Seq != at {
				return nil, fmt.Errorf("%w: audit journal entry %d does not decode", ErrCorrupt, at)
			}
			if e.Seq != want || e.Prev != prev {
				return nil, fmt.Errorf("%w: audit journal entry %d does not chain on from the store's head %d", ErrCorrupt, e.Seq, want-1)
			}
			h := e.Hash
			e.Hash = [32]byte{}
			if got, err := auditHash(&e); err != nil || got != h {
				return nil, fmt.Errorf("%w: audit journal entry %d does not match its hash", ErrCorrupt, e.Seq)
			}
			out = append(out, journaled{seq: e.Seq, hash: h, subject: e.Subject, val: val})
			prev, want = h, want+1
		}
		next = seq
		off += frameHeader + n
	}
}

// maxJournalEntry bounds one entry's encoding in a journal of size bytes:
// its frame, alone, fits in the quarter of the journal a flush may write.
func maxJournalEntry(size int64) int64 { return size/4 - frameHeader - bodyHeader - 4 - 16 - 256 }

// journalSlots chains the slots' entries on from the head, writes them to
// the journal and acknowledges them (the appender's path with a journal).
// Entries are encoded as they are framed, and frames are flushed together
// up to a quarter of the journal, so what a group holds in memory beyond
// its callers' entries is bounded by that and by auditMoveBytes: a larger
// group takes more than one flush, and a move between them.
func (l *AuditLog) journalSlots(slots []auditSlot) {
	if len(slots) == 0 {
		return
	}
	if l.failed != nil {
		for _, s := range slots {
			s.req.err = l.failed
		}
		return
	}
	l.mu.Lock()
	seq, prev := l.headSeq, l.headHash
	l.mu.Unlock()
	var (
		out     []byte      // frames not yet written
		frame   []journaled // the entries of the frame being built
		fsize   int
		items   []journaled // the entries in out and frame
		written int         // slots acknowledged by a flush
	)
	chained := make([]AuditEntry, 0, min(len(slots), auditMoveEntries))
	flush := func() bool {
		err := l.j.write(out)
		if errors.Is(err, errJournalFull) {
			if err = l.move(); err == nil {
				l.j.rewind()
				err = l.j.write(out)
			}
		}
		if err != nil {
			// A write or flush that failed leaves the file in a state
			// not known: nothing more is written to it in this process.
			l.failed = fmt.Errorf("audit journal: %w", err)
			for _, s := range slots[written:] {
				s.req.err = l.failed
			}
			return false
		}
		l.commits.Add(1)
		for k, e := range chained {
			s := slots[written+k]
			s.req.entries[s.i] = e
			l.pendingBytes += len(items[k].val)
		}
		l.pending = append(l.pending, items...)
		l.mu.Lock()
		l.headSeq, l.headHash = items[len(items)-1].seq, items[len(items)-1].hash
		l.mu.Unlock()
		written += len(items)
		out, items, chained = out[:0], items[:0:0], chained[:0]
		if l.pendingBytes >= auditMoveBytes {
			l.moveOrFail()
			if l.failed != nil {
				for _, s := range slots[written:] {
					s.req.err = l.failed
				}
				return false
			}
		}
		return true
	}
	endFrame := func() {
		if len(frame) > 0 {
			out = append(out, l.j.frame(frame)...)
			frame, fsize = frame[:0], 0
		}
	}
	for _, s := range slots {
		e := s.req.entries[s.i]
		e.Seq, e.Prev, e.Hash = seq+1, prev, [32]byte{}
		hash, err := auditHash(&e)
		var val []byte
		if err == nil {
			e.Hash = hash
			val, err = encMode.Marshal(&e)
		}
		if err != nil {
			// Append checked every entry; one that does not encode now
			// fails what is not flushed yet, which nothing acknowledged.
			for _, s := range slots[written:] {
				s.req.err = fmt.Errorf("%w: encode: %v", ErrAuditEntry, err)
			}
			return
		}
		if len(frame) > 0 && fsize+4+len(val) > frameBudget {
			endFrame()
		}
		if (len(out) > 0 || len(frame) > 0) && int64(len(out)+frameHeader+bodyHeader+fsize+4+len(val)+16) > l.j.size/4 {
			// out and the frame being built, flushed before this entry.
			endFrame()
			if !flush() {
				return
			}
		}
		it := journaled{seq: e.Seq, hash: hash, subject: e.Subject, val: val}
		frame, fsize = append(frame, it), fsize+4+len(val)
		items, chained = append(items, it), append(chained, e)
		seq, prev = e.Seq, hash
	}
	endFrame()
	flush()
}

// move commits the pending entries into the store (a/, A/, a!head) in
// synced transactions within the budget, and rewinds the journal once
// nothing is pending. The appender's, or recover's before it starts.
func (l *AuditLog) move() error {
	db := l.db
	for len(l.pending) > 0 {
		txn := db.raw.NewTransaction(true)
		var size, count int64
		k := 0
		for ; k < len(l.pending); k++ {
			it := l.pending[k]
			esize, ecount := int64(len(it.val))+10+32, int64(1)
			if it.subject != "" {
				esize += int64(len(it.subject)) + 12 + 32
				ecount++
			}
			if k > 0 && (size+esize > db.budgetBytes || count+ecount+1 > db.budgetCount) {
				break
			}
			if err := txn.Set(auditKey(it.seq), it.val); err != nil {
				txn.Discard()
				return engine(err)
			}
			if it.subject != "" {
				if err := txn.Set(auditSubjectKey(it.subject, it.seq), []byte{}); err != nil {
					txn.Discard()
					return engine(err)
				}
			}
			size, count = size+esize, count+ecount
		}
		last := l.pending[k-1]
		head, err := encMode.Marshal(auditHead{Seq: last.seq, Hash: last.hash})
		if err == nil {
			err = txn.Set(auditHeadKey, head)
		}
		if err == nil && moveFails != nil {
			err = moveFails()
		}
		if err == nil {
			err = txn.Commit()
		}
		txn.Discard()
		if err != nil {
			return engine(err)
		}
		l.moves.Add(1)
		for _, it := range l.pending[:k] {
			l.pendingBytes -= len(it.val)
		}
		l.pending = l.pending[k:]
		if moveCommitted != nil {
			moveCommitted(last.seq)
		}
	}
	l.pending = nil
	if l.j != nil {
		l.j.rewind()
	}
	return nil
}

// moveCommitted, when set, is called after each transaction of a move has
// committed: a seam for the crash test, which kills the process there.
// moveFails, when set, is called before each commits, and its error fails
// the move: a seam for the test of a failed move.
var (
	moveCommitted func(through uint64)
	moveFails     func() error
)

// moveOrFail moves what is pending; a failure refuses every later append
// (the entries stay in the journal, for the next open).
func (l *AuditLog) moveOrFail() {
	if l.failed != nil || len(l.pending) == 0 {
		return
	}
	if err := l.move(); err != nil {
		l.failed = err
		l.db.log.Error("storage: moving audit entries from the journal into the store failed; audit appends are refused until the node restarts", "err", err)
	}
}

// closeJournal moves what is pending, empties the journal when all of it
// is in the store (a cleanly stopped store's journal holds nothing, so a
// log changed while the node is stopped is judged by its anchors alone,
// not mended from old frames) and closes it (the appender, stopping).
func (l *AuditLog) closeJournal() {
	if l.j == nil {
		return
	}
	l.moveOrFail()
	if l.failed == nil {
		if err := l.j.clear(); err != nil {
			l.db.log.Error("storage: emptying the audit journal failed; the next start reads it again", "err", err)
		}
	}
	if err := l.j.close(); err != nil {
		l.db.log.Error("storage: closing the audit journal failed", "err", err)
	}
}

// readOwnJournal is readJournal of the log's store, after its head.
func (l *AuditLog) readOwnJournal(dir string, key []byte) ([]journaled, error) {
	var headVal []byte
	if l.headSeq > 0 {
		err := l.db.raw.View(func(txn *badger.Txn) error {
			item, err := txn.Get(auditKey(l.headSeq))
			if err != nil {
				return err
			}
			headVal, err = item.ValueCopy(nil)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%w: the audit head's entry %d: %w", ErrCorrupt, l.headSeq, engine(err))
		}
	}
	return readJournal(dir, key, auditHead{Seq: l.headSeq, Hash: l.headHash}, headVal)
}
