package consensus

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"credfed/certs"
	"credfed/credit"
)

// randomPseudonyms returns n random pseudonyms: needles that no other
// bytes match by chance.
func randomPseudonyms(n int) []credit.Pseudonym {
	out := make([]credit.Pseudonym, n)
	for i := range out {
		rand.Read(out[i][:])
	}
	return out
}

// applySealed proposes an index batch as the leader's batcher does:
// sealed with keys.
func (f *testFSM) applySealed(t testing.TB, keys *IndexKeys, b IndexBatch) any {
	t.Helper()
	s, err := keys.sealBatch(b, fed)
	if err != nil {
		t.Fatal(err)
	}
	return f.apply(t, CmdSealedIndexBatch, province, certs.Identity{}, s)
}

// applyRaw applies an already encoded log entry as the next one.
func (f *testFSM) applyRaw(data []byte) any {
	f.index++
	return f.Apply(&raft.Log{Index: f.index, Type: raft.LogCommand, Data: data})
}

func TestIndexKeys_DerivationAndKeyring(t *testing.T) {
	a, err := DeriveIndexKey(testPseudonymKey)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := DeriveIndexKey(testPseudonymKey)
	other, _ := DeriveIndexKey(bytes.Repeat([]byte{1}, 32))
	if !bytes.Equal(a, b) || bytes.Equal(a, other) || len(a) != 32 || bytes.Equal(a, testPseudonymKey) {
		t.Fatal("the derivation is not a deterministic 32-byte key of its pseudonym key")
	}
	if _, err := DeriveIndexKey([]byte("short")); err == nil {
		t.Fatal("a short pseudonym key derived an index key")
	}
	if _, err := NewIndexKeys(2, map[uint32][]byte{1: a}); err == nil {
		t.Fatal("a keyring whose current version it does not hold")
	}
	if _, err := NewIndexKeys(1, map[uint32][]byte{1: a[:16]}); err == nil {
		t.Fatal("a keyring with a short key")
	}
	ring, err := NewIndexKeys(2, map[uint32][]byte{1: a, 2: other})
	if err != nil || ring.Current() != 2 || !reflect.DeepEqual(ring.Versions(), []uint32{1, 2}) {
		t.Fatalf("keyring: %v %v", ring, err)
	}
	if s := fmt.Sprintf("%v %+v", ring, ring); strings.Contains(s, string(a)) || strings.Contains(s, fmt.Sprintf("%x", a)) {
		t.Fatal("the keyring prints key material")
	}
}

// TestSealedIndexBatch_OpensOnlyAsSealed: a sealed batch opens with its
// key version; with any byte flipped, its version swapped, under another
// federation or another command type, or with a key this node does not
// hold, it does not.
func TestSealedIndexBatch_OpensOnlyAsSealed(t *testing.T) {
	v1, _ := DeriveIndexKey(testPseudonymKey)
	v2, _ := DeriveIndexKey(bytes.Repeat([]byte{2}, 32))
	ring, err := NewIndexKeys(2, map[uint32][]byte{1: v1, 2: v2})
	if err != nil {
		t.Fatal(err)
	}
	batch := IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: []IndexUpdate{update(pseudo(7), kecheng.Region, 3, 9)}}}}
	s, err := ring.sealBatch(batch, fed)
	if err != nil || s.Version != 2 {
		t.Fatalf("sealed with version %d: %v", s.Version, err)
	}
	got, err := ring.openBatch(s, fed)
	if err != nil || !reflect.DeepEqual(got, batch) {
		t.Fatalf("open: %+v %v", got, err)
	}
	// Older versions still open: a batch sealed before a rotation.
	old, _ := testIndexKeys.sealBatch(batch, fed)
	if got, err := ring.openBatch(old, fed); err != nil || !reflect.DeepEqual(got, batch) {
		t.Fatalf("a batch of version 1: %v", err)
	}
	for i := range s.Sealed {
		c := s
		c.Sealed = append([]byte(nil), s.Sealed...)
		c.Sealed[i] ^= 0x01
		if _, err := ring.openBatch(c, fed); !errors.Is(err, errSealBroken) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	if _, err := ring.openBatch(SealedIndexBatch{Version: 1, Sealed: s.Sealed}, fed); !errors.Is(err, errSealBroken) {
		t.Fatalf("version swapped: %v", err)
	}
	if _, err := ring.openBatch(s, "other"); !errors.Is(err, errSealBroken) {
		t.Fatalf("another federation: %v", err)
	}
	if _, err := ring.open(s.Version, s.Sealed, sealedBatchAD(CmdIndexBatch, s.Version, fed)); !errors.Is(err, errSealBroken) {
		t.Fatalf("another command type: %v", err)
	}
	if _, err := testIndexKeys.openBatch(s, fed); !errors.Is(err, errUnknownIndexKey) {
		t.Fatalf("a version this node does not hold: %v", err)
	}
	if _, err := ring.openBatch(SealedIndexBatch{Version: 2, Sealed: s.Sealed[:10]}, fed); !errors.Is(err, errSealBroken) {
		t.Fatalf("cut short: %v", err)
	}
	// Nothing of the batch is in the clear.
	enc, _ := EncodeCommand(CmdSealedIndexBatch, Envelope{Proposer: province}, s)
	p := pseudo(7)
	if bytes.Contains(enc, p[:]) || bytes.Contains(enc, []byte(kecheng.Region)) {
		t.Fatal("the sealed log entry holds the pseudonym or the proposing district in the clear")
	}
}

func TestFSM_SnapshotRestore_SealedIndexBatch(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	ps := randomPseudonyms(3)
	res := a.applySealed(t, testIndexKeys, IndexBatch{Groups: []IndexGroup{
		{Proposer: kecheng, Updates: []IndexUpdate{update(ps[0], kecheng.Region, 3, 7), update(ps[1], kecheng.Region, 0, 9)}},
		{Proposer: qujiang, Updates: []IndexUpdate{update(ps[0], qujiang.Region, 1, 4)}},
		{Proposer: kecheng, Updates: []IndexUpdate{update(ps[2], qujiang.Region, 5, 1)}}, // refused
	}}).(IndexResult)
	if res.Errs[0] != nil || res.Errs[1] != nil || !errors.Is(res.Errs[2], ErrForbidden) {
		t.Fatalf("batch results %v", res.Errs)
	}
	b := restoredCopy(t, a)
	for _, p := range ps {
		if got, want := lookupOf(t, b.state, p), lookupOf(t, a.state, p); !reflect.DeepEqual(got, want) {
			t.Fatalf("%x: %+v, want %+v", p[:2], got, want)
		}
	}
	if e := lookupOf(t, b.state, ps[0]); len(e) != 2 || e[0].Summary.Negative != 3 || e[0].Seq != 7 || e[0].Index != a.index {
		t.Fatalf("restored entries %+v", e)
	}
	if len(lookupOf(t, b.state, ps[2])) != 0 {
		t.Fatal("the refused group's entry was restored")
	}
	if got := stateUint(t, b, watermarkKey(kecheng.Region)); got != 9 {
		t.Fatalf("watermark %d", got)
	}
	// A district restoring the same snapshot keeps its clear sections and
	// nothing of the index.
	d := newDistrictFSM(t)
	if err := d.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
		t.Fatal(err)
	}
	checkNoIndex(t, d, ps)
	if got, want := cachedOf(d.state), cachedOf(a.state); !reflect.DeepEqual(got, want) {
		t.Fatalf("the district's registry, catalog, revocations or applied index differ:\n%+v\nwant\n%+v", got, want)
	}
}

// checkNoIndex checks that f's state holds no index key, and no needle in
// any key or value.
func checkNoIndex(t *testing.T, f *testFSM, needles []credit.Pseudonym) {
	t.Helper()
	dump := dumpState(t, f.db)
	if len(dump) == 0 {
		t.Fatal("an empty state: the check looks at nothing")
	}
	for k, v := range dump {
		if isIndexKey([]byte(k)) {
			t.Fatalf("the state holds index key %q…", k[:4])
		}
		for _, p := range needles {
			if strings.Contains(k, string(p[:])) || strings.Contains(v, string(p[:])) {
				t.Fatalf("the state holds a pseudonym under %q…", k[:4])
			}
		}
	}
	if n, err := f.state.EntryCount(); err != nil || n != 0 || f.state.IndexEntries() != 0 {
		t.Fatalf("%d entries (%v)", n, err)
	}
	if _, _, err := f.state.Lookup(needles[0]); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("a lookup on a node without the index: %v", err)
	}
}

// TestFSM_DistrictKeepsNoIndex: a district's FSM applies the same log as
// a coordinator's — sealed batches, plain batches an older leader wrote,
// operator commands — and keeps the registry, the catalog and the
// revocations, with the same applied index, and nothing of the index.
func TestFSM_DistrictKeepsNoIndex(t *testing.T) {
	coord, dist := newTestFSM(t), newDistrictFSM(t)
	ps := randomPseudonyms(20)
	both := func(do func(f *testFSM)) { do(coord); do(dist) }
	both(func(f *testFSM) { initFederation(t, f) })
	for i, p := range ps {
		b := IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: []IndexUpdate{update(p, kecheng.Region, 1+i%3, uint64(i+1))}}}}
		if i%2 == 0 {
			both(func(f *testFSM) { f.applySealed(t, testIndexKeys, b) })
		} else {
			both(func(f *testFSM) { f.apply(t, CmdIndexBatch, province, certs.Identity{}, b) })
		}
	}
	both(func(f *testFSM) {
		if err := errOf(f.apply(t, CmdRevoke, province, provOp, certs.Revocation{Serial: "99"})); err != nil {
			t.Fatal(err)
		}
	})
	if n, _ := coord.state.EntryCount(); n != len(ps) {
		t.Fatalf("the coordinator holds %d entries", n)
	}
	checkNoIndex(t, dist, ps)
	if got, want := cachedOf(dist.state), cachedOf(coord.state); !reflect.DeepEqual(got, want) {
		t.Fatalf("the district's state differs beyond the index:\n%+v\nwant\n%+v", got, want)
	}
	// Its snapshot has no index section; a coordinator refuses it, a
	// district restores it.
	snap := snapshotBytes(t, dist)
	if err := newTestFSM(t).Restore(io.NopCloser(bytes.NewReader(snap))); !errors.Is(err, errSnapshotWithoutIndex) {
		t.Fatalf("a coordinator restoring a district's snapshot: %v", err)
	}
	other := newDistrictFSM(t)
	if err := other.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cachedOf(other.state), cachedOf(dist.state)) {
		t.Fatal("a district's snapshot did not restore on another district")
	}
}

// TestFSM_SealedBatchThatDoesNotOpenStopsACoordinator: a sealed batch
// whose bytes changed is corruption on a coordinator (the FSM panics, as
// for an undecodable entry, and applies nothing of it), and so is one
// sealed with a key version the coordinator does not hold; a district
// skips either.
func TestFSM_SealedBatchThatDoesNotOpenStopsACoordinator(t *testing.T) {
	p := randomPseudonyms(1)[0]
	batch := IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: []IndexUpdate{update(p, kecheng.Region, 1, 1)}}}}
	s, _ := testIndexKeys.sealBatch(batch, fed)
	tampered := s
	tampered.Sealed = append([]byte(nil), s.Sealed...)
	tampered.Sealed[len(tampered.Sealed)/2] ^= 0x80
	otherKey, _ := DeriveIndexKey(bytes.Repeat([]byte{9}, 32))
	ring2, _ := NewIndexKeys(2, map[uint32][]byte{2: otherKey})
	unknown, _ := ring2.sealBatch(batch, fed)
	for _, c := range []struct {
		name string
		body SealedIndexBatch
		want string
	}{
		{"a flipped byte", tampered, "corrupt"},
		{"an unknown key version", unknown, "install that index key version"},
	} {
		t.Run(c.name, func(t *testing.T) {
			data, err := EncodeCommand(CmdSealedIndexBatch, Envelope{Proposer: province}, c.body)
			if err != nil {
				t.Fatal(err)
			}
			f := newTestFSM(t)
			initFederation(t, f)
			before := f.state.Applied()
			func() {
				defer func() {
					r := recover()
					if r == nil || !strings.Contains(fmt.Sprint(r), c.want) {
						t.Fatalf("the coordinator's FSM went on: %v", r)
					}
				}()
				f.applyRaw(data)
			}()
			if f.state.Applied() != before || len(lookupOf(t, f.state, p)) != 0 {
				t.Fatal("the refused batch changed the coordinator's state")
			}
			d := newDistrictFSM(t)
			initFederation(t, d)
			if res := d.applyRaw(data); res != nil || d.state.Applied() != d.index {
				t.Fatalf("the district did not skip it: %v", res)
			}
		})
	}
}

// TestState_DistrictDropsTheIndexItKept: a district's state written by an
// older binary, which kept the index, loses it when it opens; the rest
// stays.
func TestState_DistrictDropsTheIndexItKept(t *testing.T) {
	dir := t.TempDir()
	db := openTestDB(t, dir)
	f := newTestFSMOn(t, db)
	initFederation(t, f)
	ps := randomPseudonyms(5)
	for i, p := range ps {
		f.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{
			{Proposer: kecheng, Updates: []IndexUpdate{update(p, kecheng.Region, 1, uint64(i+1))}}}})
	}
	want := cachedOf(f.state)
	d := newTestFSMWith(t, db, nil)
	checkNoIndex(t, d, ps)
	if !reflect.DeepEqual(cachedOf(d.state), want) {
		t.Fatal("the district lost more than the index")
	}
	db.Close()
	db = openTestDB(t, dir)
	defer db.Close()
	checkNoIndex(t, newTestFSMWith(t, db, nil), ps)
}

// snapshotParts splits a version 2 snapshot: the clear pairs, and the
// sealed section's bytes (its start and end offsets).
func snapshotParts(t *testing.T, data []byte) (clear map[string]string, sealedFrom, sealedTo int) {
	t.Helper()
	r := bytes.NewReader(data[len(snapshotMagic):])
	read := func() []byte {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, n)
		io.ReadFull(r, b)
		return b
	}
	clear = map[string]string{}
	for {
		k := read()
		if len(k) == 0 {
			break
		}
		clear[string(k)] = string(read())
	}
	binary.ReadUvarint(r) // count
	sealedFrom = len(data) - r.Len()
	return clear, sealedFrom, len(data) - sha256.Size
}

// resum recomputes a snapshot's SHA-256 trailer: what someone who changes
// a snapshot would do, so that only the seal stands in the way.
func resum(data []byte) []byte {
	sum := sha256.Sum256(data[:len(data)-sha256.Size])
	return append(data[:len(data)-sha256.Size:len(data)-sha256.Size], sum[:]...)
}

// TestSnapshot_IndexSectionIsSealed: a coordinator's snapshot holds no
// pseudonym and no index key in the clear, nor the number of entries;
// its sealed section, changed in any way (a flipped byte, a chunk
// dropped, two chunks swapped, the last chunk cut off, a chunk of another
// snapshot) with the hash recomputed, is refused by a coordinator, whose
// state stays as it was.
func TestSnapshot_IndexSectionIsSealed(t *testing.T) {
	defer func(old int) { sealedChunkBytes = old }(sealedChunkBytes)
	sealedChunkBytes = 512 // several chunks
	a := newTestFSM(t)
	initFederation(t, a)
	ps := randomPseudonyms(200)
	for i := 0; i < len(ps); i += 50 {
		var ups []IndexUpdate
		for j, p := range ps[i : i+50] {
			ups = append(ups, update(p, kecheng.Region, 1+j%4, uint64(i+j+1)))
		}
		a.applySealed(t, testIndexKeys, IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: ups}}})
	}
	data := snapshotBytes(t, a)
	for _, p := range ps {
		if bytes.Contains(data, p[:]) {
			t.Fatal("the snapshot holds a pseudonym in the clear")
		}
	}
	clear, from, to := snapshotParts(t, data)
	for k := range clear {
		if isIndexKey([]byte(k)) {
			t.Fatalf("index key %q… in the clear section", k[:4])
		}
	}
	if len(clear) == 0 || from >= to {
		t.Fatal("the snapshot's parts were not found")
	}
	// The chunks, to rearrange them.
	r := bytes.NewReader(data[from:to])
	r.ReadByte()
	binary.ReadUvarint(r)
	id := make([]byte, snapshotIDSize)
	io.ReadFull(r, id)
	head := data[:to-r.Len()]
	headOf := func(version uint64) []byte {
		h := append(append([]byte(nil), data[:from]...), indexSectionSealed)
		return append(binary.AppendUvarint(h, version), id...)
	}
	if !bytes.Equal(headOf(1), head) {
		t.Fatal("the test's reading of the section header is not the format")
	}
	var chunks [][]byte
	for {
		n, _ := binary.ReadUvarint(r)
		if n == 0 {
			break
		}
		c := make([]byte, n)
		io.ReadFull(r, c)
		chunks = append(chunks, c)
	}
	if len(chunks) < 4 {
		t.Fatalf("%d chunks", len(chunks))
	}
	rebuild := func(head []byte, cs [][]byte) []byte {
		out := append([]byte(nil), head...)
		for _, c := range cs {
			out = binary.AppendUvarint(out, uint64(len(c)))
			out = append(out, c...)
		}
		out = binary.AppendUvarint(out, 0)
		return resum(append(out, make([]byte, sha256.Size)...))
	}
	if !bytes.Equal(rebuild(head, chunks), data) {
		t.Fatal("the test's rebuild is not the snapshot format")
	}
	flipped := append([][]byte(nil), chunks...)
	flipped[1] = append([]byte(nil), chunks[1]...)
	flipped[1][30] ^= 1
	other := snapshotBytes(t, a) // same state, another id and nonces
	_, ofrom, oto := snapshotParts(t, other)
	or := bytes.NewReader(other[ofrom:oto])
	or.ReadByte()
	binary.ReadUvarint(or)
	io.ReadFull(or, make([]byte, snapshotIDSize))
	n, _ := binary.ReadUvarint(or)
	foreign := make([]byte, n)
	io.ReadFull(or, foreign)
	cases := map[string][]byte{
		"a flipped byte":            rebuild(head, flipped),
		"a chunk dropped":           rebuild(head, append(append([][]byte(nil), chunks[:1]...), chunks[2:]...)),
		"two chunks swapped":        rebuild(head, append([][]byte{chunks[1], chunks[0]}, chunks[2:]...)),
		"the last chunk cut off":    rebuild(head, chunks[:len(chunks)-1]),
		"a chunk of another":        rebuild(head, append([][]byte{foreign}, chunks[1:]...)),
		"another key version":       rebuild(headOf(2), chunks),
		"an index pair in the open": resum(append(encodeSnapshotV2Clear(t, clear, [2]string{string(entryKey(ps[0], kecheng.Region)), "x"}), data[from:]...)),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			b := newTestFSM(t)
			initFederation(t, b)
			before := dumpState(t, b.db)
			err := b.Restore(io.NopCloser(bytes.NewReader(bad)))
			if err == nil {
				t.Fatal("restored")
			}
			if !reflect.DeepEqual(dumpState(t, b.db), before) {
				t.Fatal("a refused snapshot changed the state")
			}
		})
	}
	// Untouched, it restores.
	b := newTestFSM(t)
	if err := b.Restore(io.NopCloser(bytes.NewReader(rebuild(head, chunks)))); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.state.EntryCount(); n != len(ps) {
		t.Fatalf("restored %d entries", n)
	}
}

// encodeSnapshotV2Clear encodes the start of a version 2 snapshot: its
// header and clear section with extra pairs.
func encodeSnapshotV2Clear(t *testing.T, clear map[string]string, extra ...[2]string) []byte {
	t.Helper()
	var keys []string
	for k := range clear {
		keys = append(keys, k)
	}
	var pairs [][2]string
	for _, k := range keys {
		pairs = append(pairs, [2]string{k, clear[k]})
	}
	pairs = append(pairs, extra...)
	b := []byte(snapshotMagic)
	for _, p := range pairs {
		b = binary.AppendUvarint(b, uint64(len(p[0])))
		b = append(b, p[0]...)
		b = binary.AppendUvarint(b, uint64(len(p[1])))
		b = append(b, p[1]...)
	}
	b = binary.AppendUvarint(b, 0)
	return binary.AppendUvarint(b, uint64(len(pairs)))
}

// TestSnapshot_Version1StillRestores: a snapshot written before the index
// was sealed (all in the clear) restores on a coordinator whole, and on a
// district without its index.
func TestSnapshot_Version1StillRestores(t *testing.T) {
	a := newTestFSM(t)
	initFederation(t, a)
	ps := randomPseudonyms(10)
	for i, p := range ps {
		a.applySealed(t, testIndexKeys, IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: []IndexUpdate{update(p, kecheng.Region, 1, uint64(i+1))}}}})
	}
	var pairs [][2]string
	for k, v := range dumpState(t, a.db) {
		pairs = append(pairs, [2]string{k, v})
	}
	v1 := encodeSnapshot(pairs, uint64(len(pairs)))
	b := newTestFSM(t)
	if err := b.Restore(io.NopCloser(bytes.NewReader(v1))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dumpState(t, b.db), dumpState(t, a.db)) {
		t.Fatal("a version 1 snapshot did not restore whole on a coordinator")
	}
	d := newDistrictFSM(t)
	if err := d.Restore(io.NopCloser(bytes.NewReader(v1))); err != nil {
		t.Fatal(err)
	}
	checkNoIndex(t, d, ps)
	if !reflect.DeepEqual(cachedOf(d.state), cachedOf(a.state)) {
		t.Fatal("a version 1 snapshot did not restore on a district")
	}
}

// TestState_IndexEntriesIsCached: the count is taken at the first call,
// by every snapshot and restore, and again only when the state changed
// and the cached one is old.
func TestState_IndexEntriesIsCached(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	if n := f.state.IndexEntries(); n != 0 {
		t.Fatalf("%d entries in a new state", n)
	}
	put := func(p credit.Pseudonym, seq uint64) {
		f.applySealed(t, testIndexKeys, IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: []IndexUpdate{update(p, kecheng.Region, 1, seq)}}}})
	}
	put(pseudo(1), 1)
	if n := f.state.IndexEntries(); n != 0 {
		t.Fatalf("a count younger than %v was taken again: %d", entryCountMaxAge, n)
	}
	f.state.count.at = time.Now().Add(-entryCountMaxAge)
	if n := f.state.IndexEntries(); n != 1 {
		t.Fatalf("%d entries, want 1", n)
	}
	// Unchanged state: the old count stands, however old.
	f.state.count.at = time.Now().Add(-time.Hour)
	f.state.count.n = 77
	if n := f.state.IndexEntries(); n != 77 {
		t.Fatalf("an unchanged state was counted again: %d", n)
	}
	// A snapshot counts.
	put(pseudo(2), 2)
	put(pseudo(3), 3)
	data := snapshotBytes(t, f)
	if n := f.state.IndexEntries(); n != 3 {
		t.Fatalf("after a snapshot: %d entries, want 3", n)
	}
	// A restore counts.
	g := newTestFSM(t)
	g.state.IndexEntries()
	if err := g.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if n := g.state.IndexEntries(); n != 3 {
		t.Fatalf("after a restore: %d entries, want 3", n)
	}
}

// TestSealedIndexBatch_LengthHidesContentAndCount: sealed batches are
// padded to size buckets, so a batch of one plain penalty, one serious
// penalty on the dishonesty list, one red-list record, one of a district
// with a longer path, and batches of up to twenty updates all seal to the
// same length; a batch past the smallest bucket seals to the next; each
// opens to exactly what was sealed; padding that is not zeros does not
// open.
func TestSealedIndexBatch_LengthHidesContentAndCount(t *testing.T) {
	one := func(u IndexUpdate) IndexBatch {
		d := certs.Identity{Federation: fed, Role: certs.District, Region: u.District}
		return IndexBatch{Groups: []IndexGroup{{Proposer: d, Updates: []IndexUpdate{u}}}}
	}
	plain := update(pseudo(1), kecheng.Region, 1, 1)
	serious := update(pseudo(2), kecheng.Region, 3, 2)
	serious.Summary.Serious, serious.Summary.OnDishonestyList = 2, true
	red := IndexUpdate{Pseudonym: pseudo(3), District: kecheng.Region, Seq: 1 << 40,
		Summary: credit.IndexSummary{Positive: 1, OnRedList: true}}
	far := update(pseudo(4), "zhejiang/quzhou/a-district-with-a-much-longer-path", 1, 1)
	batches := map[string]IndexBatch{"a plain penalty": one(plain), "a serious penalty": one(serious),
		"a red-list record": one(red), "a longer district path": one(far)}
	for n := 2; n <= 20; n++ {
		var us []IndexUpdate
		for i := 0; i < n; i++ {
			us = append(us, update(pseudo(byte(i)), kecheng.Region, i, uint64(i+1)))
		}
		batches[fmt.Sprintf("%d updates", n)] = IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: us}}}
	}
	sizes := map[int][]string{}
	for name, b := range batches {
		s, err := testIndexKeys.sealBatch(b, fed)
		if err != nil {
			t.Fatal(err)
		}
		sizes[len(s.Sealed)] = append(sizes[len(s.Sealed)], name)
		got, err := testIndexKeys.openBatch(s, fed)
		if err != nil || !reflect.DeepEqual(got, b) {
			t.Fatalf("%s: opened %+v, %v", name, got, err)
		}
	}
	if len(sizes) != 1 {
		t.Fatalf("sealed lengths tell the batches apart: %v", sizes)
	}
	var small int
	for l := range sizes {
		small = l
	}
	// Enough updates to pass the smallest bucket: the next one, twice it.
	var us []IndexUpdate
	for i := 0; i < 30; i++ {
		us = append(us, update(pseudo(byte(i)), kecheng.Region, 1, uint64(i+1)))
	}
	big, _ := testIndexKeys.sealBatch(IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: us}}}, fed)
	const overhead = 24 + 16 // nonce and tag
	if small != minSealedBatchPlain+overhead || len(big.Sealed) != 2*minSealedBatchPlain+overhead {
		t.Fatalf("sealed lengths %d and %d, want %d and %d", small, len(big.Sealed), minSealedBatchPlain+overhead, 2*minSealedBatchPlain+overhead)
	}
	// Padding that is not zeros: refused.
	enc, _ := encMode.Marshal(one(plain))
	enc = append(enc, make([]byte, 100)...)
	enc[len(enc)-1] = 1
	sealed, v := testIndexKeys.seal(nil, enc, sealedBatchAD(CmdSealedIndexBatch, testIndexKeys.current, fed))
	if _, err := testIndexKeys.openBatch(SealedIndexBatch{Version: v, Sealed: sealed}, fed); err == nil {
		t.Fatal("a batch with data after it opened")
	}
	// A batch sealed before padding (no bytes after the batch) still opens.
	enc, _ = encMode.Marshal(one(red))
	sealed, v = testIndexKeys.seal(nil, enc, sealedBatchAD(CmdSealedIndexBatch, testIndexKeys.current, fed))
	if got, err := testIndexKeys.openBatch(SealedIndexBatch{Version: v, Sealed: sealed}, fed); err != nil || !reflect.DeepEqual(got, one(red)) {
		t.Fatalf("an unpadded batch: %+v %v", got, err)
	}
}
