package consensus

import (
	"bufio"
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

// Snapshot format (version 1), all of the x/ family in key order:
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

var errSnapshotCorrupt = errors.New("snapshot stream is corrupt")

// writeSnapshot streams the x/ family visible in txn to w and returns the
// bytes written.
func writeSnapshot(w io.Writer, txn *badger.Txn) (int64, error) {
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
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixState, PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if err := writeBytes(item.Key()); err != nil {
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

// restoreSnapshot replaces the x/ family of db with the snapshot read from
// r and returns the applied index the snapshot carries.
func restoreSnapshot(db *badger.DB, r io.Reader) (uint64, error) {
	hr := &hashReader{r: bufio.NewReaderSize(r, 1<<20), h: sha256.New()}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(hr, magic); err != nil || string(magic) != snapshotMagic {
		return 0, fmt.Errorf("%w: bad header", errSnapshotCorrupt)
	}
	if err := db.DropPrefix(prefixState); err != nil {
		return 0, err
	}
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	var n, applied uint64
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
			return 0, err
		}
		if len(k) == 0 {
			break
		}
		if !strings.HasPrefix(string(k), string(prefixState)) {
			return 0, fmt.Errorf("%w: key outside the replicated state", errSnapshotCorrupt)
		}
		v, err := readBytes()
		if err != nil {
			return 0, err
		}
		if string(k) == string(keyApplied) && len(v) == 8 {
			applied = binary.BigEndian.Uint64(v)
		}
		if err := wb.Set(k, v); err != nil {
			return 0, err
		}
		n++
	}
	count, err := binary.ReadUvarint(hr)
	if err != nil || count != n {
		return 0, fmt.Errorf("%w: %d pairs read, trailer says %d", errSnapshotCorrupt, n, count)
	}
	want := hr.h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(hr.r, got); err != nil || string(got) != string(want) {
		return 0, fmt.Errorf("%w: checksum mismatch", errSnapshotCorrupt)
	}
	if err := wb.Flush(); err != nil {
		return 0, err
	}
	return applied, nil
}

// sortByDepth orders regions parents first.
func sortByDepth(rs []Region) {
	sort.SliceStable(rs, func(i, j int) bool {
		return strings.Count(rs[i].Path, "/") < strings.Count(rs[j].Path, "/")
	})
}
