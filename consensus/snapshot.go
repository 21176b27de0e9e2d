package consensus

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Snapshot format (version 1), all of one generation of the x/ family in
// key order, with logical keys (state.go), so that a snapshot does not
// depend on the generation it was taken from:
//
//	"credfed-state/1\n"
//	repeated: uvarint(len key) key uvarint(len value) value
//	uvarint(0)                       end of pairs (no key is empty)
//	uvarint(pair count) sha256(32)   over every byte before the hash
//
// Restore refuses a stream whose count or hash does not match.
const snapshotMagic = "credfed-state/1\n"

// maxSnapshotKV bounds one key or value read back from a snapshot.
const maxSnapshotKV = 64 << 20

// restoreChunkBytes is how much a restore writes between two flushes of
// its write batch.
const restoreChunkBytes = 64 << 20

var errSnapshotCorrupt = errors.New("snapshot stream is corrupt")

// writeSnapshot streams generation g as visible in txn to w and returns
// the bytes written.
func writeSnapshot(w io.Writer, txn *badger.Txn, g *generation) (int64, error) {
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	bw := bufio.NewWriterSize(cw, 1<<20)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return 0, err
	}
	var n uint64
	var lenBuf [binary.MaxVarintLen64]byte
	writeBytes := func(b []byte) error {
		if _, err := bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(b)))]); err != nil {
			return err
		}
		_, err := bw.Write(b)
		return err
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: g.root, PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	var key []byte
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := item.Key()
		if g.n == 0 && bytes.HasPrefix(k, prefixReserved) {
			// Generation 0 is stored at the logical keys, beside the
			// bookkeeping and the other generations: skip them.
			it.Seek(afterReserved)
			if !it.Valid() {
				break
			}
			item, k = it.Item(), it.Item().Key()
		}
		key = append(append(key[:0], prefixState...), k[len(g.root):]...)
		if err := writeBytes(key); err != nil {
			return 0, err
		}
		if err := item.Value(writeBytes); err != nil {
			return 0, err
		}
		n++
	}
	if _, err := bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], 0)]); err != nil {
		return 0, err
	}
	if _, err := bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], n)]); err != nil {
		return 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, err
	}
	sum := h.Sum(nil)
	if _, err := w.Write(sum); err != nil {
		return 0, err
	}
	return cw.n + int64(len(sum)), nil
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
// reads that resolved to it are done. Runs on the FSM's goroutine.
func (s *State) restore(r io.Reader) (uint64, error) {
	hr := &hashReader{r: bufio.NewReaderSize(r, 1<<20), h: sha256.New()}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(hr, magic); err != nil || string(magic) != snapshotMagic {
		return 0, fmt.Errorf("%w: bad header", errSnapshotCorrupt)
	}
	g := newGeneration(s.next)
	s.next++
	c, err := s.build(g, hr)
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

// build writes the pairs read from hr into g, checks the stream's
// trailer, makes g durable and loads its caches.
func (s *State) build(g *generation, hr *hashReader) (stateCaches, error) {
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
	var n uint64
	readBytes := func() ([]byte, error) {
		size, err := binary.ReadUvarint(hr)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errSnapshotCorrupt, err)
		}
		if size > maxSnapshotKV {
			return nil, fmt.Errorf("%w: a key or value of %d bytes", errSnapshotCorrupt, size)
		}
		b := make([]byte, size)
		if _, err := io.ReadFull(hr, b); err != nil {
			return nil, fmt.Errorf("%w: %v", errSnapshotCorrupt, err)
		}
		return b, nil
	}
	for {
		k, err := readBytes()
		if err != nil {
			return stateCaches{}, err
		}
		if len(k) == 0 {
			break
		}
		if !validLogical(k) {
			return stateCaches{}, fmt.Errorf("%w: key outside the replicated state", errSnapshotCorrupt)
		}
		v, err := readBytes()
		if err != nil {
			return stateCaches{}, err
		}
		if err := wb.Set(g.key(k), v); err != nil {
			return stateCaches{}, err
		}
		n++
		if pending += len(k) + len(v); pending >= chunk {
			if err := flush(); err != nil {
				return stateCaches{}, err
			}
		}
	}
	count, err := binary.ReadUvarint(hr)
	if err != nil || count != n {
		return stateCaches{}, fmt.Errorf("%w: %d pairs read, trailer says %d", errSnapshotCorrupt, n, count)
	}
	want := hr.h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(hr.r, got); err != nil || string(got) != string(want) {
		return stateCaches{}, fmt.Errorf("%w: checksum mismatch", errSnapshotCorrupt)
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
	return c, nil
}

// sortByDepth orders regions parents first.
func sortByDepth(rs []Region) {
	sort.SliceStable(rs, func(i, j int) bool {
		return strings.Count(rs[i].Path, "/") < strings.Count(rs[j].Path, "/")
	})
}
