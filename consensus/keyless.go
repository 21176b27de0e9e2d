package consensus

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"

	"github.com/hashicorp/raft"
)

// keylessSnapshots is the snapshot store of a node that keeps no index (a
// district). Raft writes a leader's InstallSnapshot stream into the
// store byte for byte before it restores from it, and a coordinator's
// snapshot holds the sealed index section: kept as it came, the district
// would hold the coordinators' sealed index on disk until it took two
// snapshots of its own. This store rewrites every snapshot on its way in
// instead: the clear section as it came, an index section of kind none,
// and the SHA-256 of the new stream. The incoming stream is checked as a
// restore checks it (counts, hash); one that does not check is not kept.
// The district's own snapshots, which have no index section, are written
// unchanged.
type keylessSnapshots struct {
	raft.SnapshotStore
}

// Create implements raft.SnapshotStore.
func (s keylessSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	k := &keylessSink{SnapshotSink: sink, pw: pw, done: make(chan error, 1)}
	go func() {
		err := stripIndexSection(pr, sink)
		if err != nil {
			pr.CloseWithError(err) // the writer's next Write fails
		} else {
			_, err = io.Copy(io.Discard, pr) // bytes after the hash are dropped
		}
		k.done <- err
	}()
	return k, nil
}

// keylessSink feeds what raft writes to stripIndexSection, which writes
// the rewritten stream into the store's own sink.
type keylessSink struct {
	raft.SnapshotSink
	pw   *io.PipeWriter
	done chan error
	end  error // the rewriter's result, once it has ended
	ok   bool  // end is set
}

func (k *keylessSink) Write(p []byte) (int, error) { return k.pw.Write(p) }

// wait ends the input with cause (nil: the stream is complete) and returns
// the rewriter's result.
func (k *keylessSink) wait(cause error) error {
	if !k.ok {
		k.pw.CloseWithError(cause)
		k.end, k.ok = <-k.done, true
	}
	return k.end
}

// Close implements raft.SnapshotSink: the rewritten snapshot is kept only
// if the stream checked.
func (k *keylessSink) Close() error {
	if err := k.wait(nil); err != nil {
		_ = k.SnapshotSink.Cancel()
		return err
	}
	return k.SnapshotSink.Close()
}

// Cancel implements raft.SnapshotSink.
func (k *keylessSink) Cancel() error {
	_ = k.wait(errSnapshotCanceled)
	return k.SnapshotSink.Cancel()
}

var errSnapshotCanceled = errors.New("consensus: snapshot canceled")

// stripIndexSection reads a snapshot stream (version 1 or 2) from r and
// writes to w the same state without the index: a version 2 stream whose
// clear section holds the pairs a node without the index keys restores
// (readSnapshot with no keys), with an index section of kind none. It
// returns an error if the stream does not check; w then holds a partial
// stream, which the caller discards.
func stripIndexSection(r io.Reader, w io.Writer) error {
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 1<<20)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	var lenBuf [binary.MaxVarintLen64]byte
	uvarint := func(v uint64) error {
		_, err := bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], v)])
		return err
	}
	n, err := readSnapshot(r, nil, func(k, v []byte) error {
		if err := uvarint(uint64(len(k))); err != nil {
			return err
		}
		if _, err := bw.Write(k); err != nil {
			return err
		}
		if err := uvarint(uint64(len(v))); err != nil {
			return err
		}
		_, err := bw.Write(v)
		return err
	})
	if err != nil {
		return err
	}
	if err := uvarint(0); err != nil {
		return err
	}
	if err := uvarint(n); err != nil {
		return err
	}
	if err := bw.WriteByte(indexSectionNone); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(h.Sum(nil))
	return err
}
