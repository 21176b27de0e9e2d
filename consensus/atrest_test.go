package consensus

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"hash/crc64"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// testWAL is a raft-wal log in dir, and the metadata database under it.
type testWAL struct {
	*raftwal.WAL
	meta *metadb.BoltMetaDB
}

func openTestWAL(t *testing.T, dir string) *testWAL {
	t.Helper()
	meta := &metadb.BoltMetaDB{}
	w, err := raftwal.Open(dir, raftwal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	tw := &testWAL{WAL: w, meta: meta}
	t.Cleanup(tw.close)
	return tw
}

func (w *testWAL) close() {
	w.WAL.Close()
	w.meta.Close()
}

var testNodeKey = bytes.Repeat([]byte{0x42}, 32)

// logEntries are entries of every type raft writes, with a needle in each
// command's data.
func logEntries(from, to uint64, needle string) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		l := &raft.Log{Index: i, Term: 3, Type: raft.LogCommand, Data: []byte(needle + "/" + string(rune('a'+i%26)))}
		switch i % 5 {
		case 1:
			l.Type, l.Data = raft.LogNoop, nil
		case 2:
			l.Extensions = []byte("ext-" + needle)
		}
		out = append(out, l)
	}
	return out
}

func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type && bytes.Equal(a.Data, b.Data) &&
		bytes.Equal(a.Extensions, b.Extensions)
}

// TestEncryptedLog_RoundTripAndTamper: with a key, entries read back as
// written, none is in the clear in raft-wal's files, and an entry whose
// bytes changed, that was moved to another index, or whose encryption
// was removed is refused.
func TestEncryptedLog_RoundTripAndTamper(t *testing.T) {
	dir := t.TempDir()
	w := openTestWAL(t, dir)
	l, err := newEncryptedLog(w, testNodeKey)
	if err != nil {
		t.Fatal(err)
	}
	const needle = "zhejiang/quzhou/secret-region"
	in := logEntries(1, 40, needle)
	kept := make([]raft.Log, len(in))
	for i, e := range in {
		kept[i] = *e
	}
	if err := l.StoreLogs(in[:1]); err != nil {
		t.Fatal(err)
	}
	if err := l.StoreLogs(in[1:]); err != nil {
		t.Fatal(err)
	}
	for i, e := range in {
		if !sameLog(e, &kept[i]) {
			t.Fatal("StoreLogs changed the entries raft handed it")
		}
		var got raft.Log
		if err := l.GetLog(e.Index, &got); err != nil || !sameLog(&got, e) {
			t.Fatalf("entry %d: %+v, %v", e.Index, got, err)
		}
		var raw raft.Log
		w.GetLog(e.Index, &raw)
		if bytes.Contains(raw.Data, []byte(needle)) || bytes.Contains(raw.Extensions, []byte(needle)) ||
			!bytes.Equal(raw.Extensions, encryptedMarker) {
			t.Fatalf("entry %d is stored in the clear", e.Index)
		}
	}
	w.close()
	for _, name := range filesUnder(t, dir) {
		b, _ := os.ReadFile(name)
		if bytes.Contains(b, []byte(needle)) {
			t.Fatalf("%s holds the plaintext", filepath.Base(name))
		}
	}

	// Reopened with the key, it reads; without, it is refused; with
	// another key, too.
	w = openTestWAL(t, dir)
	if l, err = newEncryptedLog(w, testNodeKey); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := l.GetLog(7, &got); err != nil || !sameLog(&got, in[6]) {
		t.Fatalf("after reopening: %v", err)
	}
	if _, err := newEncryptedLog(w, nil); err == nil {
		t.Fatal("an encrypted log opened without a key")
	}
	if _, err := newEncryptedLog(w, bytes.Repeat([]byte{1}, 32)); err == nil {
		t.Fatal("an encrypted log opened with another key")
	}

	// Tampering, through raft-wal itself (append after a suffix delete):
	// the entry at 40 replaced by the bytes of entry 39 (moved), by entry
	// 40 with a flipped byte, by entry 40 with its marker removed.
	var e39, e40 raft.Log
	w.GetLog(39, &e39)
	w.GetLog(40, &e40)
	flip := func(b []byte, i int) []byte { c := append([]byte(nil), b...); c[i] ^= 1; return c }
	cases := map[string]raft.Log{
		"moved to another index": {Index: 40, Term: e39.Term, Type: e39.Type, Data: e39.Data, Extensions: e39.Extensions},
		"another term":           {Index: 40, Term: e40.Term + 1, Type: e40.Type, Data: e40.Data, Extensions: e40.Extensions},
		"a flipped nonce byte":   {Index: 40, Term: e40.Term, Type: e40.Type, Data: flip(e40.Data, 3), Extensions: e40.Extensions},
		"a flipped data byte":    {Index: 40, Term: e40.Term, Type: e40.Type, Data: flip(e40.Data, len(e40.Data)/2), Extensions: e40.Extensions},
		"a flipped tag byte":     {Index: 40, Term: e40.Term, Type: e40.Type, Data: flip(e40.Data, len(e40.Data)-1), Extensions: e40.Extensions},
		"the marker altered":     {Index: 40, Term: e40.Term, Type: e40.Type, Data: e40.Data, Extensions: flip(e40.Extensions, 2)},
		"the marker removed":     {Index: 40, Term: e40.Term, Type: e40.Type, Data: e40.Data},
		"replaced in the clear":  {Index: 40, Term: e40.Term, Type: raft.LogCommand, Data: []byte("forged")},
	}
	for name, bad := range cases {
		if err := w.DeleteRange(40, 40); err != nil {
			t.Fatal(err)
		}
		if err := w.StoreLogs([]*raft.Log{&bad}); err != nil {
			t.Fatal(err)
		}
		var got raft.Log
		if err := l.GetLog(40, &got); err == nil {
			t.Errorf("%s: read back (%q)", name, got.Data)
		}
	}
	// The good entry back in place reads again.
	w.DeleteRange(40, 40)
	w.StoreLogs([]*raft.Log{&e40})
	if err := l.GetLog(40, &got); err != nil || !sameLog(&got, in[39]) {
		t.Fatalf("the restored entry: %v", err)
	}
}

// TestEncryptedLog_PlainLogBeforeTheKey: a log written without a key
// reads on after a key is configured, with the new entries encrypted; an
// entry written before may stay plain, one written after may not; the
// encryption record, once written, keeps a key required.
func TestEncryptedLog_PlainLogBeforeTheKey(t *testing.T) {
	dir := t.TempDir()
	w := openTestWAL(t, dir)
	l, err := newEncryptedLog(w, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := logEntries(1, 10, "before")
	if err := l.StoreLogs(old); err != nil {
		t.Fatal(err)
	}
	var raw raft.Log
	w.GetLog(3, &raw)
	if !sameLog(&raw, old[2]) {
		t.Fatal("without a key, entries are not stored as they are")
	}
	if l, err = newEncryptedLog(w, testNodeKey); err != nil {
		t.Fatal(err)
	}
	if l.from != 11 {
		t.Fatalf("encrypted from %d, want 11", l.from)
	}
	nw := logEntries(11, 20, "after")
	if err := l.StoreLogs(nw); err != nil {
		t.Fatal(err)
	}
	for _, e := range append(old, nw...) {
		var got raft.Log
		if err := l.GetLog(e.Index, &got); err != nil || !sameLog(&got, e) {
			t.Fatalf("entry %d: %v", e.Index, err)
		}
	}
	// Reopened, the boundary stands.
	l2, err := newEncryptedLog(w, testNodeKey)
	if err != nil || l2.from != 11 {
		t.Fatalf("reopened: from %d, %v", l2.from, err)
	}
	// A plain entry above the boundary is refused.
	w.DeleteRange(20, 20)
	w.StoreLogs([]*raft.Log{{Index: 20, Term: 3, Type: raft.LogCommand, Data: []byte("forged")}})
	if err := l2.GetLog(20, &raw); !errors.Is(err, errLogTampered) {
		t.Fatalf("a plain entry above the boundary: %v", err)
	}
	// Without the key, the node does not start on this log.
	if _, err := newEncryptedLog(w, nil); err == nil {
		t.Fatal("opened without the key")
	}
	// The record deleted, with an encrypted last entry: refused.
	w.DeleteRange(20, 20)
	if err := l2.StoreLogs([]*raft.Log{nw[9]}); err != nil {
		t.Fatal(err)
	}
	if err := w.Set(keyEncryptedFrom, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := newEncryptedLog(w, testNodeKey); err == nil {
		t.Fatal("a log whose encryption record was deleted opened")
	}
}

func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// snapshotFile is the path of a snapshot's state.bin in a file store
// under dir.
func snapshotFile(dir, id string) string { return filepath.Join(dir, "snapshots", id, "state.bin") }

// rewriteSnapshotFile replaces a snapshot's file and fixes its meta.json
// (size and CRC) so that raft's own check passes: only the encryption
// stands in the way.
func rewriteSnapshotFile(t *testing.T, dir, id string, data []byte) {
	t.Helper()
	if err := os.WriteFile(snapshotFile(dir, id), data, 0o600); err != nil {
		t.Fatal(err)
	}
	metaPath := filepath.Join(dir, "snapshots", id, "meta.json")
	b, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	h.Write(data)
	meta["Size"] = len(data)
	meta["CRC"] = h.Sum(nil)
	b, _ = json.Marshal(meta)
	if err := os.WriteFile(metaPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func createSnapshot(t *testing.T, s raft.SnapshotStore, index uint64, data []byte) string {
	t.Helper()
	sink, err := s.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	// In pieces of odd sizes, as a stream arrives.
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 77_777)
		if _, err := sink.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	return sink.ID()
}

func readSnapshotFile(s raft.SnapshotStore, id string) (*raft.SnapshotMeta, []byte, error) {
	meta, rc, err := s.Open(id)
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return meta, b, err
}

// TestEncryptedSnapshots: a snapshot written with a key is not in the
// clear on disk, reads back whole with its plain length in the meta (what
// raft sends to followers), and a file changed in any way — a flipped
// byte, a chunk dropped, chunks swapped, cut short, a chunk of another
// snapshot — is refused even with raft's CRC fixed up. A snapshot written
// before the key was configured still reads; an encrypted one does not
// without the key.
func TestEncryptedSnapshots(t *testing.T) {
	dir := t.TempDir()
	files, err := raft.NewFileSnapshotStoreWithLogger(dir, 10, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := newEncryptedSnapshots(files, testNodeKey)
	plainStore, _ := newEncryptedSnapshots(files, nil)
	needle := []byte("a pseudonym-like needle 0123456789")
	for _, size := range []int{0, 5, snapChunkBytes - 8, snapChunkBytes, 3*snapChunkBytes + 12345} {
		data := make([]byte, size)
		rand.Read(data)
		for i := 0; i+len(needle) < len(data); i += 100_000 {
			copy(data[i:], needle)
		}
		id := createSnapshot(t, enc, uint64(size)+1, data)
		raw, _ := os.ReadFile(snapshotFile(dir, id))
		if size > len(needle) && bytes.Contains(raw, needle) {
			t.Fatalf("size %d: the file holds the plaintext", size)
		}
		meta, got, err := readSnapshotFile(enc, id)
		if err != nil || !bytes.Equal(got, data) || meta.Size != int64(size) {
			t.Fatalf("size %d: read %d bytes (meta %d): %v", size, len(got), meta.Size, err)
		}
		if _, _, err := readSnapshotFile(plainStore, id); err == nil {
			t.Fatalf("size %d: opened without the key", size)
		}
	}

	data := make([]byte, 3*snapChunkBytes+999)
	rand.Read(data)
	id := createSnapshot(t, enc, 100, data)
	raw, _ := os.ReadFile(snapshotFile(dir, id))
	other, _ := os.ReadFile(snapshotFile(dir, createSnapshot(t, enc, 101, data)))
	head := len(snapEncMagic) + snapshotIDSize
	frame := snapFrameOverhead + snapChunkBytes
	chunk := func(b []byte, i int) []byte { return b[head+i*frame : head+(i+1)*frame] }
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	flip := func(i int) []byte { c := append([]byte(nil), raw...); c[i] ^= 1; return c }
	cases := map[string][]byte{
		"a flipped byte in a chunk":  flip(head + frame + 100),
		"a flipped kind byte":        flip(head + frame),
		"a flipped byte at the end":  flip(len(raw) - 1),
		"a flipped id byte":          flip(len(snapEncMagic) + 2),
		"a chunk dropped":            cat(raw[:head], chunk(raw, 0), chunk(raw, 2), raw[head+3*frame:]),
		"two chunks swapped":         cat(raw[:head], chunk(raw, 1), chunk(raw, 0), raw[head+2*frame:]),
		"the final chunk cut off":    raw[:head+3*frame],
		"cut inside the last chunk":  raw[:len(raw)-100],
		"a chunk of another":         cat(raw[:head], chunk(other, 0), raw[head+frame:]),
		"the final chunk of another": cat(raw[:head+3*frame], other[head+3*frame:]),
	}
	for name, bad := range cases {
		rewriteSnapshotFile(t, dir, id, bad)
		if _, got, err := readSnapshotFile(enc, id); err == nil {
			t.Errorf("%s: read %d bytes", name, len(got))
		}
	}
	rewriteSnapshotFile(t, dir, id, raw)
	if _, got, err := readSnapshotFile(enc, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the good file back: %v", err)
	}

	// Written without a key: plain on disk, readable with one.
	legacy := []byte(snapshotMagic + strings.Repeat("old plain state ", 1000))
	lid := createSnapshot(t, plainStore, 200, legacy)
	if raw, _ := os.ReadFile(snapshotFile(dir, lid)); !bytes.Equal(raw, legacy) {
		t.Fatal("without a key the snapshot is not stored as it is")
	}
	meta, got, err := readSnapshotFile(enc, lid)
	if err != nil || !bytes.Equal(got, legacy) || meta.Size != int64(len(legacy)) {
		t.Fatalf("a snapshot written before the key: %v", err)
	}
	if !reflect.DeepEqual(plainSizes(t), []int64{0}) {
		t.Fatal("plainSnapshotSize is off")
	}
}

// plainSizes checks plainSnapshotSize against the sizes a sink writes.
func plainSizes(t *testing.T) []int64 {
	t.Helper()
	var bad []int64
	for _, p := range []int64{0, 1, snapChunkBytes - 9, snapChunkBytes - 8, snapChunkBytes - 1, snapChunkBytes, 2*snapChunkBytes + 7} {
		k := p / snapChunkBytes
		size := int64(len(snapEncMagic)+snapshotIDSize) + k*int64(snapFrameOverhead+snapChunkBytes) + int64(snapFrameOverhead) + p%snapChunkBytes + 8
		if got, ok := plainSnapshotSize(size); !ok || got != p {
			bad = append(bad, p)
		}
	}
	if _, ok := plainSnapshotSize(10); ok {
		bad = append(bad, -1)
	}
	return append(bad, 0)
}
