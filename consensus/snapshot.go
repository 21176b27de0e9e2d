package consensus

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Snapshot format (version 2): one generation of the x/ family, with
// logical keys (state.go), so that a snapshot does not depend on the
// generation it was taken from; the index sealed (seal.go), since raft's
// InstallSnapshot ships a coordinator's snapshot to districts:
//
//	"credfed-state/2\n"
//	clear section, every key but the index's, in key order:
//	  repeated: uvarint(len key) key uvarint(len value) value
//	  uvarint(0)                       end of pairs (no key is empty)
//	  uvarint(pair count)
//	index section (x/e/ and x/w/):
//	  0x00                             none: taken by a node that keeps no index
//	  0x01 uvarint(key version) id(16) sealed, in chunks:
//	    repeated: uvarint(len chunk) chunk   chunk = nonce(24) || ciphertext || tag(16)
//	    uvarint(0)                     end of chunks
//	sha256(32)                         over every byte before it
//
// A chunk's plaintext is pairs as in the clear section (a pair never spans
// two chunks; a chunk is cut after it passes 1 MiB); the last chunk's
// plaintext starts with uvarint(the section's pair count), so that
// neither the entries nor their number are in the clear. Each chunk's
// additional data binds the snapshot's random id, the key version, the
// chunk's number and whether it is the last (sealedChunkAD): a chunk
// dropped, reordered, cut off or spliced in from another snapshot does not
// open. The reader knows a chunk is the last when the length after it is
// 0.
//
// A node that keeps no index restores the clear section and skips the
// sealed one (it reads it for the hash, and keeps none of it). A
// coordinator opens it, and refuses a snapshot without an index section:
// only a node without the index key takes one, and restoring it would
// drop this coordinator's index.
//
// Version 1 ("credfed-state/1\n", written before the index was sealed)
// is still read: all pairs in the clear, then uvarint(0), uvarint(pair
// count) and the SHA-256; a node that keeps no index skips its index keys.
//
// Restore refuses a stream whose counts, hash or chunks do not check.
const (
	snapshotMagic   = "credfed-state/2\n"
	snapshotMagicV1 = "credfed-state/1\n"
)

// Index sections of a version 2 snapshot.
const (
	indexSectionNone   = 0
	indexSectionSealed = 1
)

// sealedChunkBytes is the plaintext after which a sealed chunk is cut (a
// variable for the tests, which cut small chunks).
var sealedChunkBytes = 1 << 20

// snapshotIDSize is the length of a snapshot's random id.
const snapshotIDSize = 16

// maxSnapshotKV bounds one key or value read back from a snapshot.
const maxSnapshotKV = 64 << 20

// maxSealedChunk bounds one sealed chunk read back from a snapshot.
const maxSealedChunk = 1<<20 + 2*maxSnapshotKV + 64

// restoreChunkBytes is how much a restore writes between two flushes of
// its write batch.
const restoreChunkBytes = 64 << 20

var (
	errSnapshotCorrupt = errors.New("snapshot stream is corrupt")
	// errSnapshotWithoutIndex: a coordinator is handed a snapshot without
	// an index section.
	errSnapshotWithoutIndex = errors.New("snapshot was taken by a node that keeps no index; a coordinator does not restore it (its index would be lost)")
)

// writeSnapshot streams generation g as visible in txn to w, the index
// sealed with keys (no index section if keys is nil), and returns the
// bytes written and the index entries (x/e/) it holds.
func writeSnapshot(w io.Writer, txn *badger.Txn, g *generation, keys *IndexKeys) (int64, int, error) {
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return 0, 0, err
	}
	var lenBuf [binary.MaxVarintLen64]byte
	uvarint := func(v uint64) error {
		_, err := bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], v)])
		return err
	}
	writeBytes := func(b []byte) error {
		if err := uvarint(uint64(len(b))); err != nil {
			return err
		}
		_, err := bw.Write(b)
		return err
	}
	var n uint64
	err := scanSnapshotPairs(txn, g, false, func(k, v []byte) error {
		if err := writeBytes(k); err != nil {
			return err
		}
		n++
		return writeBytes(v)
	})
	if err != nil {
		return 0, 0, err
	}
	if err := uvarint(0); err != nil {
		return 0, 0, err
	}
	if err := uvarint(n); err != nil {
		return 0, 0, err
	}
	entries := 0
	if keys == nil {
		if err := bw.WriteByte(indexSectionNone); err != nil {
			return 0, 0, err
		}
	} else if entries, err = writeSealedIndex(bw, txn, g, keys, uvarint); err != nil {
		return 0, 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, 0, err
	}
	sum := h.Sum(nil)
	if _, err := w.Write(sum); err != nil {
		return 0, 0, err
	}
	return cw.n + int64(len(sum)), entries, nil
}

// writeSealedIndex writes the sealed index section of g and returns how
// many index entries (x/e/) it holds.
func writeSealedIndex(bw *bufio.Writer, txn *badger.Txn, g *generation, keys *IndexKeys, uvarint func(uint64) error) (int, error) {
	version := keys.Current() // once: a switch meanwhile must not change the chunks' version
	id := make([]byte, snapshotIDSize)
	if _, err := rand.Read(id); err != nil {
		return 0, err
	}
	if err := bw.WriteByte(indexSectionSealed); err != nil {
		return 0, err
	}
	if err := uvarint(uint64(version)); err != nil {
		return 0, err
	}
	if _, err := bw.Write(id); err != nil {
		return 0, err
	}
	var plain, sealed []byte
	var pairs, chunk uint64
	entries := 0
	emit := func(final bool) error {
		sealed = keys.sealAt(version, sealed[:0], plain, sealedChunkAD(id, version, chunk, final))
		chunk++
		if err := uvarint(uint64(len(sealed))); err != nil {
			return err
		}
		_, err := bw.Write(sealed)
		return err
	}
	err := scanSnapshotPairs(txn, g, true, func(k, v []byte) error {
		plain = binary.AppendUvarint(plain, uint64(len(k)))
		plain = append(plain, k...)
		plain = binary.AppendUvarint(plain, uint64(len(v)))
		plain = append(plain, v...)
		pairs++
		if bytes.HasPrefix(k, prefixEntry) {
			entries++
		}
		if len(plain) < sealedChunkBytes {
			return nil
		}
		if err := emit(false); err != nil {
			return err
		}
		plain = plain[:0]
		return nil
	})
	if err != nil {
		return 0, err
	}
	// The last chunk: the section's pair count, then what is left.
	last := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(plain)), pairs)
	plain = append(last, plain...)
	if err := emit(true); err != nil {
		return 0, err
	}
	return entries, uvarint(0)
}

// scanSnapshotPairs calls fn with the logical key and the value of every
// pair of generation g as visible in txn: the index's (index) or every
// other one, in key order. The key is valid only during the call.
func scanSnapshotPairs(txn *badger.Txn, g *generation, index bool, fn func(k, v []byte) error) error {
	var key []byte
	visit := func(it *badger.Iterator) error {
		item := it.Item()
		k := item.Key()
		key = append(append(key[:0], prefixState...), k[len(g.root):]...)
		return item.Value(func(v []byte) error { return fn(key, v) })
	}
	if index {
		for _, f := range indexFamilies {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: g.key(f), PrefetchValues: false})
			for it.Rewind(); it.Valid(); it.Next() {
				if err := visit(it); err != nil {
					it.Close()
					return err
				}
			}
			it.Close()
		}
		return nil
	}
	// Everything under g's root but the index families, and (generation 0
	// is stored at the logical keys, beside the bookkeeping and the other
	// generations) the bookkeeping.
	var skip [][]byte
	for _, f := range indexFamilies {
		skip = append(skip, g.key(f))
	}
	if g.n == 0 {
		skip = append(skip, prefixReserved)
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: g.root, PrefetchValues: false})
	defer it.Close()
	for it.Rewind(); it.Valid(); {
		k := it.Item().Key()
		skipped := false
		for _, p := range skip {
			if bytes.HasPrefix(k, p) {
				it.Seek(prefixEnd(p))
				skipped = true
				break
			}
		}
		if skipped {
			continue
		}
		if err := visit(it); err != nil {
			return err
		}
		it.Next()
	}
	return nil
}

// prefixEnd is the first key after every key with prefix p (p ends in a
// byte below 0xff: every prefix here ends in '/').
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	end[len(end)-1]++
	return end
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// hashReader hashes what is read through it.
type hashReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (h *hashReader) ReadByte() (byte, error) {
	b, err := h.r.ReadByte()
	if err == nil {
		h.h.Write([]byte{b})
	}
	return b, err
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

// readSnapshot reads a snapshot stream (version 1 or 2) and calls put
// with the logical key and value of every pair this node restores: all
// of them on a node holding the index keys (keys), all but the index's on
// one that keeps no index. It checks the stream as it goes and at its
// end (counts, chunks, hash) and returns the applied pairs' count; put
// has already been called for pairs of a stream that then fails a check,
// so the caller writes them somewhere nothing reads until readSnapshot
// returns nil.
func readSnapshot(r io.Reader, keys *IndexKeys, put func(k, v []byte) error) (uint64, error) {
	hr := &hashReader{r: bufio.NewReaderSize(r, 1<<20), h: sha256.New()}
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errSnapshotCorrupt, fmt.Sprintf(format, args...))
	}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(hr, magic); err != nil {
		return 0, corrupt("bad header: %v", err)
	}
	v1 := string(magic) == snapshotMagicV1
	if !v1 && string(magic) != snapshotMagic {
		return 0, corrupt("bad header")
	}
	readLen := func(limit uint64) (uint64, error) {
		size, err := binary.ReadUvarint(hr)
		if err != nil {
			return 0, corrupt("%v", err)
		}
		if size > limit {
			return 0, corrupt("a length of %d bytes", size)
		}
		return size, nil
	}
	readBytes := func(limit uint64) ([]byte, error) {
		size, err := readLen(limit)
		if err != nil {
			return nil, err
		}
		b := make([]byte, size)
		if _, err := io.ReadFull(hr, b); err != nil {
			return nil, corrupt("%v", err)
		}
		return b, nil
	}
	var restored, n uint64
	for {
		k, err := readBytes(maxSnapshotKV)
		if err != nil {
			return 0, err
		}
		if len(k) == 0 {
			break
		}
		// In version 2 the index is only in the sealed section.
		if !validLogical(k) || (!v1 && isIndexKey(k)) {
			return 0, corrupt("key outside the replicated state, or of the index in the clear")
		}
		v, err := readBytes(maxSnapshotKV)
		if err != nil {
			return 0, err
		}
		n++
		if isIndexKey(k) && keys == nil {
			continue // version 1: a node that keeps no index skips it
		}
		if err := put(k, v); err != nil {
			return 0, err
		}
		restored++
	}
	count, err := binary.ReadUvarint(hr)
	if err != nil || count != n {
		return 0, corrupt("%d pairs read, trailer says %d", n, count)
	}
	if !v1 {
		m, err := readSealedIndex(hr, keys, put, readLen, corrupt)
		if err != nil {
			return 0, err
		}
		restored += m
	}
	want := hr.h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(hr.r, got); err != nil || !bytes.Equal(got, want) {
		return 0, corrupt("checksum mismatch")
	}
	return restored, nil
}

// readSealedIndex reads the index section of a version 2 snapshot: opens
// its chunks and puts their pairs with keys, skips them without.
func readSealedIndex(hr *hashReader, keys *IndexKeys, put func(k, v []byte) error, readLen func(uint64) (uint64, error),
	corrupt func(string, ...any) error) (uint64, error) {
	section, err := hr.ReadByte()
	if err != nil {
		return 0, corrupt("%v", err)
	}
	switch section {
	case indexSectionNone:
		if keys != nil {
			return 0, errSnapshotWithoutIndex
		}
		return 0, nil
	case indexSectionSealed:
	default:
		return 0, corrupt("index section of kind %d", section)
	}
	version, err := readLen(1<<32 - 1)
	if err != nil {
		return 0, err
	}
	id := make([]byte, snapshotIDSize)
	if _, err := io.ReadFull(hr, id); err != nil {
		return 0, corrupt("%v", err)
	}
	next, err := readLen(maxSealedChunk)
	if err != nil {
		return 0, err
	}
	if next == 0 {
		return 0, corrupt("a sealed index section without chunks")
	}
	var chunk []byte
	var restored, pairs, chunkNo uint64
	for next > 0 {
		chunk = slices.Grow(chunk[:0], int(next))[:next]
		if _, err := io.ReadFull(hr, chunk); err != nil {
			return 0, corrupt("%v", err)
		}
		if next, err = readLen(maxSealedChunk); err != nil {
			return 0, err
		}
		final := next == 0
		if keys == nil {
			chunkNo++
			continue // read for the hash, kept nowhere
		}
		plain, err := keys.open(uint32(version), chunk, sealedChunkAD(id, uint32(version), chunkNo, final))
		if errors.Is(err, errUnknownIndexKey) {
			return 0, fmt.Errorf("snapshot index %w", err)
		}
		if err != nil {
			return 0, corrupt("sealed index chunk %d: %v", chunkNo, err)
		}
		chunkNo++
		pr := bytes.NewReader(plain)
		var total uint64
		if final {
			if total, err = binary.ReadUvarint(pr); err != nil {
				return 0, corrupt("sealed index count: %v", err)
			}
		}
		for pr.Len() > 0 {
			k, err := readPlainBytes(pr)
			if err != nil {
				return 0, corrupt("sealed index chunk %d: %v", chunkNo-1, err)
			}
			if !validLogical(k) || !isIndexKey(k) {
				return 0, corrupt("a key outside the index in the sealed index section")
			}
			v, err := readPlainBytes(pr)
			if err != nil {
				return 0, corrupt("sealed index chunk %d: %v", chunkNo-1, err)
			}
			pairs++
			if err := put(k, v); err != nil {
				return 0, err
			}
			restored++
		}
		if final && total != pairs {
			return 0, corrupt("%d sealed index pairs read, the last chunk says %d", pairs, total)
		}
	}
	return restored, nil
}

func readPlainBytes(r *bytes.Reader) ([]byte, error) {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if size > uint64(r.Len()) {
		return nil, io.ErrUnexpectedEOF
	}
	b := make([]byte, size)
	_, err = io.ReadFull(r, b)
	return b, err
}

// restoreStep names the points of a restore at which State.failpoint is
// called.
type restoreStep string

const (
	// stepWrite: a flush of the write batch (several per restore); the new
	// generation is partial.
	stepWrite restoreStep = "write"
	// stepSync: the new generation is complete, checked and synced; the
	// pointer still names the old one.
	stepSync restoreStep = "sync"
	// stepSwitch: the pointer naming the new generation is committed.
	stepSwitch restoreStep = "switch"
	// stepSwitchSync: the pointer is synced and reads use the new
	// generation.
	stepSwitchSync restoreStep = "switch-sync"
	// stepDrop: a replaced generation is dropped (at the end of the
	// restore, or later, once the reads that held it are done).
	stepDrop restoreStep = "drop"
)

// errRestoreStopped marks an error that State.failpoint returned.
var errRestoreStopped = errors.New("restore stopped by a failpoint")

func (s *State) step(st restoreStep) error {
	if s.failpoint == nil {
		return nil
	}
	if err := s.failpoint(st); err != nil {
		return fmt.Errorf("%w at %s: %w", errRestoreStopped, st, err)
	}
	return nil
}

// restore replaces the replicated state with the snapshot read from r and
// returns the applied index the snapshot carries. It builds the snapshot
// into a new generation beside the live one, checks the stream's count
// and hash, syncs the new generation, and only then commits the pointer
// that names it (one small transaction, then synced): a crash at any
// point leaves either the old state or the new one, and a corrupt
// snapshot leaves the old state untouched. Reads go on against the old
// generation until the switch; the old generation is dropped once the
// reads that resolved to it are done. widenKeys, if set, is called with
// the new generation just before reads move to it (FSM.widenKeys). Runs
// on the FSM's goroutine.
func (s *State) restore(r io.Reader, widenKeys func(*generation)) (uint64, error) {
	g := newGeneration(s.next)
	s.next++
	c, err := s.build(g, r)
	if err != nil {
		if !errors.Is(err, errRestoreStopped) {
			// Nothing names g: dropping it only frees the space (the next
			// open would drop it too).
			if derr := s.db.DropPrefix(g.prefixes()...); derr != nil {
				err = errors.Join(err, fmt.Errorf("drop the partial generation: %w", derr))
			}
		}
		return 0, err
	}
	if err := s.step(stepSync); err != nil {
		return 0, err
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(keyLive, binary.BigEndian.AppendUint64(nil, g.n))
	}); err != nil {
		if derr := s.db.DropPrefix(g.prefixes()...); derr != nil {
			err = errors.Join(err, fmt.Errorf("drop the unused generation: %w", derr))
		}
		return 0, fmt.Errorf("switch to the restored state: %w", err)
	}
	if err := s.step(stepSwitch); err != nil {
		return 0, err
	}
	// The pointer is committed: from here on g is the state, whether or
	// not the sync below succeeds.
	syncErr := s.db.Sync()
	if widenKeys != nil {
		widenKeys(g)
	}
	s.install(g, c)
	if syncErr != nil {
		return 0, fmt.Errorf("sync the switch to the restored state: %w", syncErr)
	}
	if err := s.step(stepSwitchSync); err != nil {
		return 0, err
	}
	if err := s.dropRetired(); errors.Is(err, errRestoreStopped) {
		return 0, err
	} else if err != nil {
		// Not a failed restore: the replaced generation stays until the
		// next attempt (each apply) or the next open.
		return c.applied, fmt.Errorf("%w: %w", errDropLater, err)
	}
	return c.applied, nil
}

// errDropLater wraps a failure to drop the replaced generation after a
// restore that succeeded.
var errDropLater = errors.New("restored, but the replaced state is not dropped yet")

// build writes the pairs of the snapshot read from r into g (the index's
// only on a node that keeps one), checks the stream, makes g durable and
// loads its caches.
func (s *State) build(g *generation, r io.Reader) (stateCaches, error) {
	chunk := restoreChunkBytes
	if s.restoreChunk > 0 {
		chunk = s.restoreChunk
	}
	wb := s.db.NewWriteBatch()
	defer func() { wb.Cancel() }()
	pending := 0
	flush := func() error {
		if err := wb.Flush(); err != nil {
			return err
		}
		wb, pending = s.db.NewWriteBatch(), 0
		return s.step(stepWrite)
	}
	entries := 0
	_, err := readSnapshot(r, s.keys, func(k, v []byte) error {
		if err := wb.Set(g.key(k), v); err != nil {
			return err
		}
		if bytes.HasPrefix(k, prefixEntry) {
			entries++
		}
		if pending += len(k) + len(v); pending >= chunk {
			return flush()
		}
		return nil
	})
	if err != nil {
		return stateCaches{}, err
	}
	if err := flush(); err != nil {
		return stateCaches{}, err
	}
	if err := syncState(s.db); err != nil {
		return stateCaches{}, fmt.Errorf("sync the restored state: %w", err)
	}
	var c stateCaches
	err = s.db.View(func(txn *badger.Txn) error {
		var err error
		c, err = loadCaches(txn, g, reloadAll)
		return err
	})
	if err != nil {
		return stateCaches{}, fmt.Errorf("%w: load the restored state: %v", errSnapshotCorrupt, err)
	}
	c.entries = entries
	return c, nil
}

// sortByDepth orders regions parents first.
func sortByDepth(rs []Region) {
	sort.SliceStable(rs, func(i, j int) bool {
		return strings.Count(rs[i].Path, "/") < strings.Count(rs[j].Path, "/")
	})
}
