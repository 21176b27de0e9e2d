package consensus

import (
	"bufio"
	"bytes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/hashicorp/raft"
	"golang.org/x/crypto/chacha20poly1305"
)

// Encryption at rest of the Raft log and snapshots (issue 9). The records
// and state databases are encrypted by Badger with the node's key
// (encryption_key_file); the raft-wal log and raft's snapshot files are
// encrypted here, with keys derived from the same node key:
//
//	log key       HKDF-SHA256(node key, no salt, "credfed/raft-log/v1"), 32 bytes
//	snapshot key  HKDF-SHA256(node key, no salt, "credfed/raft-snapshot/v1"), 32 bytes
//
// both XChaCha20-Poly1305 with a random 192-bit nonce per entry and per
// chunk. What is encrypted is what raft hands over to store: raft itself,
// the FSM and the peers see the plain entries and snapshot streams, and a
// follower encrypts what it receives under its own key. A node without a
// key writes today's format.
//
// An encrypted log entry, as raft-wal stores it (index, term, type and
// append time stay as raft-wal writes them: they are not secret):
//
//	Extensions  "\x00credfed-enc/1" (the marker)
//	Data        nonce(24) || XChaCha20-Poly1305(plaintext, additional data)
//	plaintext   uvarint(len data) || data || extensions (raft's own)
//	additional  "credfed/raft-log/v1\x00" || be64(index) || be64(term) || type byte
//
// so an entry moved to another index, or another term or type, does not
// open.
//
// A log written without a key before one was configured stays readable:
// the first time a node opens its log with a key it records, sealed under
// the log key in raft-wal's stable store, the index from which every
// entry is encrypted (its last index + 1). Entries below it may be plain
// (they were written before, and raft drops them as snapshots cover them
// and its log is truncated); an entry at or above it that is not
// encrypted — its marker removed or altered, its bytes replaced — is
// refused, as is an entry whose ciphertext does not open. A log with that
// record opened without a key is refused at open; a log whose last entry
// is encrypted but which has no record (the record deleted) is refused
// too.
//
// An encrypted snapshot file (state.bin of raft's file snapshot store):
//
//	"credfed-snapenc/1\n" id(16)
//	repeated: 'c' nonce(24) XChaCha20-Poly1305(1 MiB of the stream)
//	then:     'f' nonce(24) XChaCha20-Poly1305(the rest (< 1 MiB) || be64(the stream's length))
//	additional data: "credfed/raft-snapshot/v1\x00" || id || be64(chunk number) || the kind byte
//
// A chunk dropped, reordered or taken from another snapshot does not open,
// and a file cut short ends without its final chunk or with a final chunk
// that does not open: truncation is caught. The plain length of a file is
// known from its size (every chunk but the last holds exactly 1 MiB), so
// raft is told the length of the plain stream it sends to followers.
// Snapshot files written without a key stay readable (they start with
// "credfed-state/", not the encrypted magic; their own SHA-256 trailer
// checks them) until newer snapshots replace them; an encrypted one
// opened without a key is refused.

const (
	logKeyLabel      = "credfed/raft-log/v1"
	snapshotKeyLabel = "credfed/raft-snapshot/v1"
)

// deriveAtRestKey derives one of the at-rest keys from the node's key.
func deriveAtRestKey(nodeKey []byte, label string) (cipher.AEAD, error) {
	if len(nodeKey) < 16 {
		return nil, fmt.Errorf("consensus: an encryption key of %d bytes is too short", len(nodeKey))
	}
	k, err := hkdf.Key(sha256.New, nodeKey, nil, label, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	return chacha20poly1305.NewX(k)
}

// logStore is what raft-wal offers raft: the log, and raft's monotonic
// hint. The stable store is raft-wal's too.
type logStore interface {
	raft.LogStore
	raft.StableStore
	IsMonotonic() bool
}

// encryptedLog is a raft.LogStore over raft-wal that encrypts each entry's
// data and extensions (see above). With no key it writes plain entries
// and refuses encrypted ones.
type encryptedLog struct {
	inner logStore
	aead  cipher.AEAD // nil: no key
	// from is the first index from which every entry is encrypted (with
	// a key); entries below it may be plain.
	from uint64
}

var _ raft.LogStore = (*encryptedLog)(nil)
var _ raft.MonotonicLogStore = (*encryptedLog)(nil)

// encryptedMarker marks an encrypted entry (its Extensions).
var encryptedMarker = []byte("\x00credfed-enc/1")

// keyEncryptedFrom is the stable-store key of the sealed "encrypted from"
// index.
var keyEncryptedFrom = []byte("credfed/log-encrypted-from")

const (
	logADLabel  = "credfed/raft-log/v1\x00"
	fromADLabel = "credfed/log-encrypted-from/v1\x00"
)

var errLogTampered = errors.New("consensus: raft log entry is corrupt or tampered with")

// newEncryptedLog wraps a raft-wal log; nodeKey nil keeps the plain
// format.
func newEncryptedLog(inner logStore, nodeKey []byte) (*encryptedLog, error) {
	l := &encryptedLog{inner: inner}
	rec, err := inner.Get(keyEncryptedFrom)
	if err != nil {
		return nil, fmt.Errorf("consensus: raft log: %w", err)
	}
	if nodeKey == nil {
		if len(rec) > 0 {
			return nil, errors.New("consensus: the raft log is encrypted and this node has no encryption key (encryption_key_file)")
		}
		return l, nil
	}
	if l.aead, err = deriveAtRestKey(nodeKey, logKeyLabel); err != nil {
		return nil, err
	}
	if len(rec) > 0 {
		plain, err := openWith(l.aead, rec, []byte(fromADLabel))
		if err != nil || len(plain) != 8 {
			return nil, errors.New("consensus: the raft log's encryption record does not open: another encryption key, or tampered with")
		}
		l.from = binary.BigEndian.Uint64(plain)
		return l, nil
	}
	last, err := inner.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("consensus: raft log: %w", err)
	}
	if last > 0 {
		var e raft.Log
		if err := inner.GetLog(last, &e); err != nil {
			return nil, fmt.Errorf("consensus: raft log entry %d: %w", last, err)
		}
		if bytes.Equal(e.Extensions, encryptedMarker) {
			return nil, errors.New("consensus: the raft log holds encrypted entries but no encryption record: tampered with")
		}
	}
	// The first open with a key: everything from here on is encrypted.
	l.from = last + 1
	sealed := sealWith(l.aead, nil, binary.BigEndian.AppendUint64(nil, l.from), []byte(fromADLabel))
	if err := inner.Set(keyEncryptedFrom, sealed); err != nil {
		return nil, fmt.Errorf("consensus: raft log: record its encryption: %w", err)
	}
	return l, nil
}

func sealWith(a cipher.AEAD, dst, plain, ad []byte) []byte {
	n := len(dst)
	dst = slices.Grow(dst, a.NonceSize()+len(plain)+a.Overhead())[:n+a.NonceSize()]
	if _, err := rand.Read(dst[n:]); err != nil {
		panic(fmt.Sprintf("consensus: random nonce: %v", err))
	}
	return a.Seal(dst, dst[n:], plain, ad)
}

func openWith(a cipher.AEAD, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < a.NonceSize()+a.Overhead() {
		return nil, errSealBroken
	}
	return a.Open(nil, sealed[:a.NonceSize()], sealed[a.NonceSize():], ad)
}

func logAD(buf *[len(logADLabel) + 17]byte, l *raft.Log) []byte {
	ad := append(buf[:0], logADLabel...)
	ad = binary.BigEndian.AppendUint64(ad, l.Index)
	ad = binary.BigEndian.AppendUint64(ad, l.Term)
	return append(ad, byte(l.Type))
}

// FirstIndex implements raft.LogStore.
func (l *encryptedLog) FirstIndex() (uint64, error) { return l.inner.FirstIndex() }

// LastIndex implements raft.LogStore.
func (l *encryptedLog) LastIndex() (uint64, error) { return l.inner.LastIndex() }

// DeleteRange implements raft.LogStore.
func (l *encryptedLog) DeleteRange(min, max uint64) error { return l.inner.DeleteRange(min, max) }

// IsMonotonic implements raft.MonotonicLogStore (raft-wal is).
func (l *encryptedLog) IsMonotonic() bool { return l.inner.IsMonotonic() }

// GetLog implements raft.LogStore: it decrypts an encrypted entry.
func (l *encryptedLog) GetLog(index uint64, out *raft.Log) error {
	if err := l.inner.GetLog(index, out); err != nil {
		return err
	}
	if !bytes.Equal(out.Extensions, encryptedMarker) {
		if l.aead != nil && index >= l.from {
			return fmt.Errorf("%w: entry %d is not encrypted, but every entry from %d on is", errLogTampered, index, l.from)
		}
		return nil
	}
	if l.aead == nil {
		return fmt.Errorf("consensus: raft log entry %d is encrypted and this node has no encryption key", index)
	}
	var adBuf [len(logADLabel) + 17]byte
	plain, err := openWith(l.aead, out.Data, logAD(&adBuf, out))
	if err != nil {
		return fmt.Errorf("%w: entry %d does not open", errLogTampered, index)
	}
	n, k := binary.Uvarint(plain)
	if k <= 0 || n > uint64(len(plain)-k) {
		return fmt.Errorf("%w: entry %d", errLogTampered, index)
	}
	out.Data = plain[k : k+int(n) : k+int(n)]
	if ext := plain[k+int(n):]; len(ext) > 0 {
		out.Extensions = ext
	} else {
		out.Extensions = nil
	}
	return nil
}

// StoreLog implements raft.LogStore.
func (l *encryptedLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore: it encrypts copies of the entries
// (raft keeps the ones it passed) and appends them in one call, one sync.
func (l *encryptedLog) StoreLogs(logs []*raft.Log) error {
	if l.aead == nil {
		return l.inner.StoreLogs(logs)
	}
	enc := make([]*raft.Log, len(logs))
	copies := make([]raft.Log, len(logs))
	var adBuf [len(logADLabel) + 17]byte
	a := l.aead
	for i, in := range logs {
		c := &copies[i]
		*c = *in
		// Build the plaintext where its ciphertext goes, after the nonce:
		// Seal then encrypts it in place.
		size := binary.MaxVarintLen64 + len(in.Data) + len(in.Extensions)
		buf := make([]byte, a.NonceSize(), a.NonceSize()+size+a.Overhead())
		if _, err := rand.Read(buf); err != nil {
			return fmt.Errorf("consensus: random nonce: %w", err)
		}
		buf = binary.AppendUvarint(buf, uint64(len(in.Data)))
		buf = append(buf, in.Data...)
		buf = append(buf, in.Extensions...)
		plain := buf[a.NonceSize():]
		c.Data = a.Seal(buf[:a.NonceSize()], buf[:a.NonceSize()], plain, logAD(&adBuf, in))
		c.Extensions = encryptedMarker
		enc[i] = c
	}
	return l.inner.StoreLogs(enc)
}

// encryptedSnapshots is a raft.SnapshotStore over raft's file store that
// encrypts every snapshot it writes (see above). With no key it is the
// file store; an encrypted snapshot is refused then.
type encryptedSnapshots struct {
	inner raft.SnapshotStore
	aead  cipher.AEAD // nil: no key
}

var _ raft.SnapshotStore = (*encryptedSnapshots)(nil)

const (
	snapEncMagic   = "credfed-snapenc/1\n"
	snapChunkBytes = 1 << 20
	snapADLabel    = "credfed/raft-snapshot/v1\x00"
	snapChunkMore  = 'c'
	snapChunkFinal = 'f'
)

// snapFrameOverhead is what each chunk adds: its kind, nonce and tag.
const snapFrameOverhead = 1 + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead

func newEncryptedSnapshots(inner raft.SnapshotStore, nodeKey []byte) (*encryptedSnapshots, error) {
	s := &encryptedSnapshots{inner: inner}
	if nodeKey != nil {
		var err error
		if s.aead, err = deriveAtRestKey(nodeKey, snapshotKeyLabel); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Create implements raft.SnapshotStore.
func (s *encryptedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.inner.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil || s.aead == nil {
		return sink, err
	}
	id := make([]byte, snapshotIDSize)
	if _, err := rand.Read(id); err != nil {
		_ = sink.Cancel()
		return nil, err
	}
	if _, err := sink.Write(append([]byte(snapEncMagic), id...)); err != nil {
		_ = sink.Cancel()
		return nil, err
	}
	return &sealingSink{SnapshotSink: sink, aead: s.aead, id: id, buf: make([]byte, 0, snapChunkBytes)}, nil
}

// List implements raft.SnapshotStore. The sizes are those of the files
// (Open reports the plain length).
func (s *encryptedSnapshots) List() ([]*raft.SnapshotMeta, error) { return s.inner.List() }

// Open implements raft.SnapshotStore: an encrypted snapshot is decrypted
// as it is read, and its meta reports the plain length.
func (s *encryptedSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.inner.Open(id)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(rc, 1<<20)
	head, _ := br.Peek(len(snapEncMagic))
	if string(head) != snapEncMagic {
		// Written without a key (before one was configured).
		return meta, readCloser{Reader: br, Closer: rc}, nil
	}
	if s.aead == nil {
		rc.Close()
		return nil, nil, fmt.Errorf("consensus: snapshot %s is encrypted and this node has no encryption key", id)
	}
	plain, ok := plainSnapshotSize(meta.Size)
	if !ok {
		rc.Close()
		return nil, nil, fmt.Errorf("consensus: encrypted snapshot %s: a file of %d bytes cannot hold whole chunks: truncated or corrupt", id, meta.Size)
	}
	if _, err := br.Discard(len(snapEncMagic)); err != nil {
		rc.Close()
		return nil, nil, err
	}
	sid := make([]byte, snapshotIDSize)
	if _, err := io.ReadFull(br, sid); err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("consensus: encrypted snapshot %s: %w", id, err)
	}
	m := *meta
	m.Size = plain
	return &m, &openingReader{r: br, c: rc, aead: s.aead, id: sid}, nil
}

// plainSnapshotSize is the plain length of an encrypted snapshot file of
// size bytes: header, k full chunks, and a final chunk of r < 1 MiB bytes
// and the 8-byte length.
func plainSnapshotSize(size int64) (int64, bool) {
	t := size - int64(len(snapEncMagic)) - snapshotIDSize - snapFrameOverhead - 8
	if t < 0 {
		return 0, false
	}
	full := int64(snapFrameOverhead + snapChunkBytes)
	k, r := t/full, t%full
	if r >= snapChunkBytes {
		return 0, false
	}
	return k*snapChunkBytes + r, true
}

func snapAD(buf []byte, id []byte, n uint64, kind byte) []byte {
	ad := append(buf[:0], snapADLabel...)
	ad = append(ad, id...)
	ad = binary.BigEndian.AppendUint64(ad, n)
	return append(ad, kind)
}

type readCloser struct {
	io.Reader
	io.Closer
}

// sealingSink encrypts a snapshot stream into raft's file sink, chunk by
// chunk.
type sealingSink struct {
	raft.SnapshotSink
	aead  cipher.AEAD
	id    []byte
	buf   []byte // plaintext of the chunk being filled
	frame []byte
	ad    []byte
	n     uint64 // chunks written
	total uint64 // plaintext bytes
	err   error
}

func (s *sealingSink) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	written := 0
	for len(p) > 0 {
		m := min(len(p), snapChunkBytes-len(s.buf))
		s.buf = append(s.buf, p[:m]...)
		p, written = p[m:], written+m
		if len(s.buf) == snapChunkBytes {
			if s.err = s.emit(snapChunkMore); s.err != nil {
				return written, s.err
			}
		}
	}
	s.total += uint64(written)
	return written, nil
}

func (s *sealingSink) emit(kind byte) error {
	s.ad = snapAD(s.ad, s.id, s.n, kind)
	s.frame = append(s.frame[:0], kind)
	s.frame = sealWith(s.aead, s.frame, s.buf, s.ad)
	s.n++
	s.buf = s.buf[:0]
	_, err := s.SnapshotSink.Write(s.frame)
	return err
}

// Close writes the final chunk, with the stream's length, and closes the
// file sink.
func (s *sealingSink) Close() error {
	if s.err != nil {
		_ = s.SnapshotSink.Cancel()
		return s.err
	}
	s.buf = binary.BigEndian.AppendUint64(s.buf, s.total)
	if err := s.emit(snapChunkFinal); err != nil {
		_ = s.SnapshotSink.Cancel()
		return err
	}
	return s.SnapshotSink.Close()
}

// openingReader decrypts an encrypted snapshot file as it is read.
type openingReader struct {
	r     *bufio.Reader
	c     io.Closer
	aead  cipher.AEAD
	id    []byte
	frame []byte
	ad    []byte
	plain []byte // decrypted, not yet read
	buf   []byte // holds plain
	n     uint64 // chunks opened
	total uint64 // plaintext bytes delivered so far, counting plain
	done  bool   // the final chunk is open
	err   error
}

var errSnapshotTampered = errors.New("consensus: encrypted snapshot is truncated, corrupt or tampered with")

func (o *openingReader) Read(p []byte) (int, error) {
	for len(o.plain) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		if o.done {
			return 0, io.EOF
		}
		o.err = o.next()
	}
	n := copy(p, o.plain)
	o.plain = o.plain[n:]
	return n, nil
}

// next reads and opens the next chunk.
func (o *openingReader) next() error {
	kind, err := o.r.ReadByte()
	if err != nil {
		return fmt.Errorf("%w: it ends without its final chunk", errSnapshotTampered)
	}
	nonceTag := chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
	switch kind {
	case snapChunkMore:
		o.frame = slices.Grow(o.frame[:0], nonceTag+snapChunkBytes)[:nonceTag+snapChunkBytes]
		if _, err := io.ReadFull(o.r, o.frame); err != nil {
			return fmt.Errorf("%w: a chunk cut short", errSnapshotTampered)
		}
	case snapChunkFinal:
		o.frame = o.frame[:0]
		var err error
		if o.frame, err = readAllLimited(o.r, o.frame, nonceTag+snapChunkBytes+8); err != nil {
			return fmt.Errorf("%w: %v", errSnapshotTampered, err)
		}
	default:
		return fmt.Errorf("%w: a chunk of kind %d", errSnapshotTampered, kind)
	}
	o.ad = snapAD(o.ad, o.id, o.n, kind)
	if len(o.frame) < nonceTag {
		return fmt.Errorf("%w: chunk %d cut short", errSnapshotTampered, o.n)
	}
	plain, err := o.aead.Open(o.buf[:0], o.frame[:chacha20poly1305.NonceSizeX], o.frame[chacha20poly1305.NonceSizeX:], o.ad)
	o.buf = plain
	if err != nil {
		return fmt.Errorf("%w: chunk %d does not open", errSnapshotTampered, o.n)
	}
	o.n++
	if kind == snapChunkFinal {
		if len(plain) < 8 {
			return errSnapshotTampered
		}
		body := plain[:len(plain)-8]
		if want := binary.BigEndian.Uint64(plain[len(plain)-8:]); want != o.total+uint64(len(body)) {
			return fmt.Errorf("%w: %d bytes, the final chunk says %d", errSnapshotTampered, o.total+uint64(len(body)), want)
		}
		plain = body
		o.done = true
	}
	o.total += uint64(len(plain))
	o.plain = plain
	return nil
}

// readAllLimited appends what is left of r to dst, refusing more than
// limit bytes.
func readAllLimited(r io.Reader, dst []byte, limit int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, errors.New("the final chunk is too long")
	}
	return append(dst, b...), nil
}

func (o *openingReader) Close() error { return o.c.Close() }
