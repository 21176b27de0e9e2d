package storage

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// The backup file (format version 1). A backup is the node's whole records
// database, which holds raw identifiers and record content, so it is never
// written in the clear: it is encrypted under a key derived from the node's
// encryption-at-rest key, in bounded chunks, each authenticated, so that a
// reader detects a changed, removed, reordered or appended chunk and a file
// cut short, and never holds more than one chunk.
//
//	file    = magic "CFBACKUP" | version (1 byte, 1) | header length (2 bytes, big-endian) | header (CBOR BackupHeader)
//	          chunk* final
//	chunk   = kind (1 byte: 0 data, 1 final) | length (4 bytes, big-endian) | AES-256-GCM ciphertext and tag (length bytes)
//
// The header is in the clear (what a file is, before any key is used): the
// federation and region of the node, when the backup was taken, a random
// 16-byte id, a random 4-byte nonce prefix, the chunk size and a key check.
// Per file, HKDF-SHA256 over the node's key with the id as salt gives the
// chunk key (info "credfed/backup/v1/chunks", 32 bytes) and the key check
// (info "credfed/backup/v1/key-check", 16 bytes): another key is told from
// a damaged file before anything is decrypted, and the key check says
// nothing of the chunk key. Chunk i (from 0) is sealed with nonce
// prefix || be64(i) and additional data SHA-256(magic..header) || be64(i)
// || kind, so each chunk is bound to this file's header, to its place and
// to whether it is the last. A data chunk's plaintext is 1 to ChunkSize
// bytes of the payload; the final chunk's plaintext is the CBOR
// BackupTrailer (counts and the chain head of the snapshot), and nothing may
// follow it. The payload is Badger's backup format (DB.Load reads it: a
// little-endian uint64 length, then a protobuf pb.KVList, repeated), written
// from one read transaction (backup.go).
const (
	backupMagic   = "CFBACKUP"
	backupVersion = 1

	chunkData  = 0
	chunkFinal = 1

	// DefaultBackupChunk is the plaintext size of a data chunk unless
	// BackupOptions says otherwise; MinBackupChunk and MaxBackupChunk bound
	// what a header may say (a reader refuses others).
	DefaultBackupChunk = 64 << 10
	MinBackupChunk     = 1 << 10
	MaxBackupChunk     = 1 << 20

	maxBackupHeader  = 4 << 10
	maxBackupTrailer = 4 << 10
	gcmTag           = 16
)

// Backup errors. Every one is safe to show an operator: none carries an
// identifier, a key or content.
var (
	// ErrBackupFormat: the file is not a credfed backup of a version this
	// build reads (wrong magic, unknown version, a header that does not
	// decode or says impossible things).
	ErrBackupFormat = errors.New("storage: not a credfed backup file this build can read")
	// ErrBackupWrongKey: the file was not written with this encryption key
	// (or its header was altered).
	ErrBackupWrongKey = errors.New("storage: the backup was not written with this encryption key (another node's backup, another key, or an altered header)")
	// ErrBackupCorrupt: a chunk failed authentication, is longer than the
	// header allows, is out of place, or data follows the final chunk: the
	// file was changed or damaged.
	ErrBackupCorrupt = errors.New("storage: the backup file is damaged or was altered")
	// ErrBackupTruncated: the file ends before its final chunk.
	ErrBackupTruncated = errors.New("storage: the backup file is cut short (it ends before its final chunk)")
	// ErrBackupOtherNode: the backup is of another federation or region
	// than the node it is restored for.
	ErrBackupOtherNode = errors.New("storage: the backup is of another node")
	// ErrBackupKeyRequired: a node without an encryption key neither writes
	// nor restores backups (a backup would hold its records in the clear).
	ErrBackupKeyRequired = errors.New("storage: backups are encrypted with the node's encryption key, and this node has none (encryption_key_file)")
)

// BackupHeader is the clear header of a backup file.
type BackupHeader struct {
	Federation  string    `cbor:"1,keyasint"`
	Region      string    `cbor:"2,keyasint"`
	TakenAt     time.Time `cbor:"3,keyasint"`
	ID          [16]byte  `cbor:"4,keyasint"`
	NoncePrefix [4]byte   `cbor:"5,keyasint"`
	ChunkSize   uint32    `cbor:"6,keyasint"`
	KeyCheck    [16]byte  `cbor:"7,keyasint"`
}

// BackupTrailer is the final chunk's content: what the snapshot held.
type BackupTrailer struct {
	// Entries is the number of key-value pairs in the payload.
	Entries uint64 `cbor:"1,keyasint"`
	// Bytes is the payload's length (the data chunks' plaintext).
	Bytes uint64 `cbor:"2,keyasint"`
	// Records is the number of records (m/records) in the snapshot.
	Records int64 `cbor:"3,keyasint"`
	// AuditSeq and AuditHash are the audit chain's head in the snapshot.
	AuditSeq  uint64   `cbor:"4,keyasint"`
	AuditHash [32]byte `cbor:"5,keyasint"`
}

// backupKeys derives the chunk key and the key check of a file.
func backupKeys(key []byte, id [16]byte) (cipher.AEAD, [16]byte, error) {
	var check [16]byte
	if !validKeyLen(len(key)) {
		return nil, check, ErrBadKey
	}
	ck, err := hkdf.Key(sha256.New, key, id[:], "credfed/backup/v1/chunks", 32)
	if err != nil {
		return nil, check, fmt.Errorf("storage: backup key: %w", err)
	}
	kc, err := hkdf.Key(sha256.New, key, id[:], "credfed/backup/v1/key-check", 16)
	if err != nil {
		return nil, check, fmt.Errorf("storage: backup key: %w", err)
	}
	copy(check[:], kc)
	block, err := aes.NewCipher(ck)
	if err != nil {
		return nil, check, fmt.Errorf("storage: backup key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, check, fmt.Errorf("storage: backup key: %w", err)
	}
	return aead, check, nil
}

// chunkAAD is the additional data of chunk i.
func chunkAAD(dst []byte, headerSum [32]byte, i uint64, kind byte) []byte {
	dst = append(dst[:0], headerSum[:]...)
	dst = binary.BigEndian.AppendUint64(dst, i)
	return append(dst, kind)
}

func chunkNonce(dst []byte, prefix [4]byte, i uint64) []byte {
	dst = append(dst[:0], prefix[:]...)
	return binary.BigEndian.AppendUint64(dst, i)
}

// backupWriter encrypts a payload into a backup file: Write buffers at most
// one chunk, Finish writes the final chunk. It is not safe for concurrent
// use.
type backupWriter struct {
	w         io.Writer
	aead      cipher.AEAD
	hdr       BackupHeader
	headerSum [32]byte
	buf       []byte // plaintext of the chunk being filled
	out       []byte // frame being written
	nonce     []byte
	aad       []byte
	i         uint64 // next chunk's number
	payload   uint64 // payload bytes so far
	written   int64  // file bytes so far
	err       error
}

// newBackupWriter writes the header of a file for hdr (whose ID and
// NoncePrefix must be set; ChunkSize 0 is DefaultBackupChunk) under key.
func newBackupWriter(w io.Writer, key []byte, hdr BackupHeader) (*backupWriter, error) {
	if hdr.ChunkSize == 0 {
		hdr.ChunkSize = DefaultBackupChunk
	}
	if hdr.ChunkSize < MinBackupChunk || hdr.ChunkSize > MaxBackupChunk {
		return nil, fmt.Errorf("storage: backup chunk size must be from %d to %d bytes", MinBackupChunk, MaxBackupChunk)
	}
	aead, check, err := backupKeys(key, hdr.ID)
	if err != nil {
		return nil, err
	}
	hdr.KeyCheck = check
	hdr.TakenAt = hdr.TakenAt.UTC()
	body, err := encMode.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("storage: backup header: %w", err)
	}
	head := make([]byte, 0, len(backupMagic)+3+len(body))
	head = append(head, backupMagic...)
	head = append(head, backupVersion)
	head = binary.BigEndian.AppendUint16(head, uint16(len(body)))
	head = append(head, body...)
	bw := &backupWriter{w: w, aead: aead, hdr: hdr, headerSum: sha256.Sum256(head),
		buf: make([]byte, 0, hdr.ChunkSize), out: make([]byte, 0, 5+int(hdr.ChunkSize)+gcmTag)}
	if err := bw.emit(head); err != nil {
		return nil, err
	}
	return bw, nil
}

func (bw *backupWriter) emit(b []byte) error {
	n, err := bw.w.Write(b)
	bw.written += int64(n)
	if err != nil {
		bw.err = err
		return err
	}
	return nil
}

// Write adds payload bytes, sealing and writing each full chunk.
func (bw *backupWriter) Write(p []byte) (int, error) {
	if bw.err != nil {
		return 0, bw.err
	}
	n := 0
	for len(p) > 0 {
		room := cap(bw.buf) - len(bw.buf)
		take := min(room, len(p))
		bw.buf = append(bw.buf, p[:take]...)
		p, n = p[take:], n+take
		if len(bw.buf) == cap(bw.buf) {
			if err := bw.seal(chunkData, bw.buf); err != nil {
				return n, err
			}
			bw.buf = bw.buf[:0]
		}
	}
	return n, nil
}

func (bw *backupWriter) seal(kind byte, plain []byte) error {
	if kind == chunkData {
		bw.payload += uint64(len(plain))
	}
	bw.nonce = chunkNonce(bw.nonce, bw.hdr.NoncePrefix, bw.i)
	bw.aad = chunkAAD(bw.aad, bw.headerSum, bw.i, kind)
	bw.out = append(bw.out[:0], kind)
	bw.out = binary.BigEndian.AppendUint32(bw.out, uint32(len(plain)+gcmTag))
	bw.out = bw.aead.Seal(bw.out, bw.nonce, plain, bw.aad)
	bw.i++
	return bw.emit(bw.out)
}

// Finish seals what is buffered and the final chunk holding t (its Bytes
// filled in); nothing may be written after it. It returns the file's size.
func (bw *backupWriter) Finish(t BackupTrailer) (int64, error) {
	if bw.err != nil {
		return bw.written, bw.err
	}
	if len(bw.buf) > 0 {
		if err := bw.seal(chunkData, bw.buf); err != nil {
			return bw.written, err
		}
		bw.buf = bw.buf[:0]
	}
	t.Bytes = bw.payload
	body, err := encMode.Marshal(t)
	if err != nil {
		return bw.written, fmt.Errorf("storage: backup trailer: %w", err)
	}
	if err := bw.seal(chunkFinal, body); err != nil {
		return bw.written, err
	}
	bw.err = errors.New("storage: backup finished")
	return bw.written, nil
}

// BackupReader decrypts a backup file as it is read: Read returns the
// payload, each chunk only once it is authenticated, and io.EOF only after
// the final chunk was authenticated and nothing follows it. A file cut short
// fails with ErrBackupTruncated, a damaged one with ErrBackupCorrupt. It
// holds one chunk at a time.
type BackupReader struct {
	r         io.Reader
	aead      cipher.AEAD
	hdr       BackupHeader
	headerSum [32]byte
	frame     []byte
	plain     []byte // authenticated payload not yet returned
	nonce     []byte
	aad       []byte
	i         uint64
	payload   uint64
	trailer   *BackupTrailer
	err       error
}

// OpenBackup reads and checks the header of a backup file: its format, and
// that it was written under key (ErrBackupWrongKey otherwise). Nothing of
// the payload is read yet.
func OpenBackup(r io.Reader, key []byte) (*BackupReader, error) {
	if len(key) == 0 {
		return nil, ErrBackupKeyRequired
	}
	if !validKeyLen(len(key)) {
		return nil, ErrBadKey
	}
	hdr, head, err := readBackupHeader(r)
	if err != nil {
		return nil, err
	}
	aead, check, err := backupKeys(key, hdr.ID)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(check[:], hdr.KeyCheck[:]) != 1 {
		return nil, ErrBackupWrongKey
	}
	return &BackupReader{r: r, aead: aead, hdr: hdr, headerSum: sha256.Sum256(head),
		frame: make([]byte, 0, int(hdr.ChunkSize)+gcmTag)}, nil
}

// ReadBackupHeader reads a backup file's clear header without a key (what
// the file says it is; nothing of it is authenticated yet).
func ReadBackupHeader(r io.Reader) (BackupHeader, error) {
	hdr, _, err := readBackupHeader(r)
	return hdr, err
}

func readBackupHeader(r io.Reader) (BackupHeader, []byte, error) {
	var hdr BackupHeader
	pre := make([]byte, len(backupMagic)+3)
	if _, err := io.ReadFull(r, pre); err != nil {
		return hdr, nil, fmt.Errorf("%w: %s", ErrBackupFormat, "the file is shorter than a backup header")
	}
	if string(pre[:len(backupMagic)]) != backupMagic {
		return hdr, nil, fmt.Errorf("%w: %s", ErrBackupFormat, "it does not start with the backup magic")
	}
	if v := pre[len(backupMagic)]; v != backupVersion {
		return hdr, nil, fmt.Errorf("%w: format version %d (this build reads %d)", ErrBackupFormat, v, backupVersion)
	}
	n := int(binary.BigEndian.Uint16(pre[len(backupMagic)+1:]))
	if n == 0 || n > maxBackupHeader {
		return hdr, nil, fmt.Errorf("%w: a header of %d bytes", ErrBackupFormat, n)
	}
	head := make([]byte, len(pre)+n)
	copy(head, pre)
	if _, err := io.ReadFull(r, head[len(pre):]); err != nil {
		return hdr, nil, fmt.Errorf("%w: the header is cut short", ErrBackupFormat)
	}
	if err := decMode.Unmarshal(head[len(pre):], &hdr); err != nil {
		return hdr, nil, fmt.Errorf("%w: the header does not decode", ErrBackupFormat)
	}
	if hdr.ChunkSize < MinBackupChunk || hdr.ChunkSize > MaxBackupChunk || hdr.Region == "" || hdr.ID == [16]byte{} {
		return hdr, nil, fmt.Errorf("%w: the header says impossible things", ErrBackupFormat)
	}
	return hdr, head, nil
}

// Header is the file's header (authenticated with every chunk: a reader
// that reaches io.EOF has proven it).
func (br *BackupReader) Header() BackupHeader { return br.hdr }

// Trailer is the final chunk's content, once Read returned io.EOF.
func (br *BackupReader) Trailer() (BackupTrailer, bool) {
	if br.trailer == nil {
		return BackupTrailer{}, false
	}
	return *br.trailer, true
}

// Read implements io.Reader over the payload.
func (br *BackupReader) Read(p []byte) (int, error) {
	for len(br.plain) == 0 {
		if br.err != nil {
			return 0, br.err
		}
		br.err = br.next()
	}
	n := copy(p, br.plain)
	br.plain = br.plain[n:]
	return n, nil
}

// next reads, authenticates and opens one chunk.
func (br *BackupReader) next() error {
	var pre [5]byte
	if _, err := io.ReadFull(br.r, pre[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: after %d chunks", ErrBackupTruncated, br.i)
		}
		return fmt.Errorf("storage: read the backup: %w", err)
	}
	kind, n := pre[0], binary.BigEndian.Uint32(pre[1:])
	limit := uint32(br.hdr.ChunkSize) + gcmTag
	if kind == chunkFinal {
		limit = maxBackupTrailer + gcmTag
	}
	if (kind != chunkData && kind != chunkFinal) || n <= gcmTag || n > limit {
		return fmt.Errorf("%w: chunk %d has kind %d and %d bytes", ErrBackupCorrupt, br.i, kind, n)
	}
	br.frame = br.frame[:n]
	if _, err := io.ReadFull(br.r, br.frame); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: in chunk %d", ErrBackupTruncated, br.i)
		}
		return fmt.Errorf("storage: read the backup: %w", err)
	}
	br.nonce = chunkNonce(br.nonce, br.hdr.NoncePrefix, br.i)
	br.aad = chunkAAD(br.aad, br.headerSum, br.i, kind)
	plain, err := br.aead.Open(br.frame[:0], br.nonce, br.frame, br.aad)
	if err != nil {
		return fmt.Errorf("%w: chunk %d does not authenticate", ErrBackupCorrupt, br.i)
	}
	br.i++
	if kind == chunkData {
		br.payload += uint64(len(plain))
		br.plain = plain
		return nil
	}
	var t BackupTrailer
	if err := decMode.Unmarshal(plain, &t); err != nil {
		return fmt.Errorf("%w: the final chunk does not decode", ErrBackupCorrupt)
	}
	if t.Bytes != br.payload {
		return fmt.Errorf("%w: the final chunk counts %d payload bytes, the file held %d", ErrBackupCorrupt, t.Bytes, br.payload)
	}
	var extra [1]byte
	if m, _ := io.ReadFull(br.r, extra[:]); m > 0 {
		return fmt.Errorf("%w: data follows the final chunk", ErrBackupCorrupt)
	}
	br.trailer = &t
	return io.EOF
}

// newBackupIDs returns a random file id and nonce prefix.
func newBackupIDs() ([16]byte, [4]byte, error) {
	var id [16]byte
	var np [4]byte
	if _, err := rand.Read(id[:]); err != nil {
		return id, np, err
	}
	_, err := rand.Read(np[:])
	return id, np, err
}
