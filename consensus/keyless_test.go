package consensus

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// coordinatorSnapshot returns a coordinator's snapshot stream (with a
// sealed index section holding needles) and the same state's stream
// without the index section, as a node without the keys writes it.
func coordinatorSnapshot(t *testing.T) (sealed, clear []byte) {
	t.Helper()
	c := newTestFSM(t)
	initFederation(t, c)
	var updates []IndexUpdate
	for i, p := range randomPseudonyms(50) {
		updates = append(updates, update(p, kecheng.Region, 1, uint64(i+1)))
	}
	res, _ := c.applySealed(t, testIndexKeys, IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: updates}}}).(IndexResult)
	if len(res.Errs) != 1 || res.Errs[0] != nil {
		t.Fatalf("the index batch: %+v", res)
	}
	sealed = snapshotBytes(t, c)
	g, _ := c.state.acquire()
	defer g.release()
	txn := c.db.NewTransaction(false)
	defer txn.Discard()
	var b bytes.Buffer
	if _, _, err := writeSnapshot(&b, txn, g, nil); err != nil {
		t.Fatal(err)
	}
	return sealed, b.Bytes()
}

// TestKeylessSnapshots_KeepNoIndexSection: a district's snapshot store
// handed a coordinator's snapshot (as raft's InstallSnapshot does) keeps
// the state without its index section, byte for byte what a district
// would have written, with or without encryption at rest; on disk nothing
// of the sealed section is left; the district restores from it. A
// district's own snapshot is kept unchanged. A stream that does not check
// (a flipped byte, cut short) is not kept at all.
func TestKeylessSnapshots_KeepNoIndexSection(t *testing.T) {
	sealed, clear := coordinatorSnapshot(t)
	// The sealed section: after the common prefix (up to the section's
	// kind byte), before the hash.
	section := sealed[len(clear)-1-sha256.Size : len(sealed)-sha256.Size]
	if _, err := readSnapshot(bytes.NewReader(sealed), nil, func(k, v []byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for _, key := range [][]byte{nil, testNodeKey} {
		dir := t.TempDir()
		files, err := raft.NewFileSnapshotStoreWithLogger(dir, 10, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		enc, _ := newEncryptedSnapshots(files, key)
		store := keylessSnapshots{enc}

		id := createSnapshot(t, store, 10, sealed)
		meta, got, err := readSnapshotFile(store, id)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, clear) || meta.Size != int64(len(clear)) {
			t.Fatalf("key %v: kept %d bytes (meta %d), want the %d bytes of the state without the index (the coordinator's had %d)",
				key != nil, len(got), meta.Size, len(clear), len(sealed))
		}
		if _, err := readSnapshot(bytes.NewReader(got), testIndexKeys, func(k, v []byte) error { return nil }); !errors.Is(err, errSnapshotWithoutIndex) {
			t.Fatalf("the kept snapshot has an index section: %v", err)
		}
		if key == nil {
			raw, _ := os.ReadFile(snapshotFile(dir, id))
			if !bytes.Equal(raw, clear) || bytes.Contains(raw, section[len(section)/2:len(section)/2+64]) {
				t.Fatal("the file on disk holds the sealed index section")
			}
		}
		d := newDistrictFSM(t)
		_, rc, err := store.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Restore(rc); err != nil {
			t.Fatal(err)
		}
		if _, ok := d.state.Region(kecheng.Region); !ok || d.state.Applied() == 0 {
			t.Fatal("the district's restore from the kept snapshot lost the registry")
		}
		if n, _ := d.state.EntryCount(); n != 0 {
			t.Fatalf("the district holds %d index entries", n)
		}
		// The district's own snapshot: unchanged.
		own := snapshotBytes(t, d)
		if _, kept, _ := readSnapshotFile(store, createSnapshot(t, store, 11, own)); !bytes.Equal(kept, own) {
			t.Fatal("a district's own snapshot was changed")
		}
		// Streams that do not check are not kept.
		before, _ := store.List()
		flipped := append([]byte(nil), sealed...)
		flipped[len(sealed)-sha256.Size-len(section)/2] ^= 1
		for name, bad := range map[string][]byte{"a flipped byte": flipped, "cut short": sealed[:len(sealed)-40]} {
			sink, err := store.Create(raft.SnapshotVersionMax, 12, 1, raft.Configuration{}, 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, werr := sink.Write(bad)
			if cerr := sink.Close(); werr == nil && cerr == nil {
				t.Fatalf("%s: kept", name)
			}
		}
		if after, _ := store.List(); len(after) != len(before) {
			t.Fatalf("%d snapshots listed after the refused streams, %d before", len(after), len(before))
		}
		// Cancel leaves nothing either.
		sink, _ := store.Create(raft.SnapshotVersionMax, 13, 1, raft.Configuration{}, 1, nil)
		sink.Write(sealed[:100])
		if err := sink.Cancel(); err != nil {
			t.Fatal(err)
		}
		if after, _ := store.List(); len(after) != len(before) {
			t.Fatal("a canceled snapshot was kept")
		}
		left, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*.tmp"))
		if len(left) != 0 {
			t.Fatalf("temporary snapshot directories left: %v", left)
		}
	}
}

// TestKeylessSnapshots_DropIndexKeysOfVersion1: a version 1 stream (all in
// the clear, written before the index was sealed) loses its index keys.
func TestKeylessSnapshots_DropIndexKeysOfVersion1(t *testing.T) {
	p := pseudo(9)
	entry := string(entryKey(p, kecheng.Region))
	region := string(regionKey("zhejiang"))
	v1 := encodeSnapshot([][2]string{{entry, "e"}, {region, "r"}, {string(watermarkKey(kecheng.Region)), "w"}}, 3)
	var out bytes.Buffer
	if err := stripIndexSection(bytes.NewReader(v1), &out); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if _, err := readSnapshot(bytes.NewReader(out.Bytes()), nil, func(k, v []byte) error {
		keys = append(keys, string(k))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != region || bytes.Contains(out.Bytes(), p[:]) {
		t.Fatalf("kept %q", keys)
	}
}
