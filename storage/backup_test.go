package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

func randomKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// sealPayload writes payload as a backup file in chunks of chunk bytes.
func sealPayload(t *testing.T, key, payload []byte, chunk uint32) []byte {
	t.Helper()
	id, np, err := newBackupIDs()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	bw, err := newBackupWriter(&buf, key, BackupHeader{Federation: "demo", Region: "tianjin/heping", TakenAt: time.Now(),
		ID: id, NoncePrefix: np, ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	// Uneven writes, so that chunks fill across them.
	for rest := payload; len(rest) > 0; {
		n := min(len(rest), 777)
		if _, err := bw.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	n, err := bw.Finish(BackupTrailer{Entries: 7, AuditSeq: 3})
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("Finish: %d bytes of %d, %v", n, buf.Len(), err)
	}
	return buf.Bytes()
}

func openPayload(file, key []byte) ([]byte, *BackupReader, error) {
	br, err := OpenBackup(bytes.NewReader(file), key)
	if err != nil {
		return nil, nil, err
	}
	got, err := io.ReadAll(br)
	return got, br, err
}

// frames returns the offsets of the chunks of a file (after the header).
func frames(t *testing.T, file []byte) []int {
	t.Helper()
	off := len(backupMagic) + 3 + int(binary.BigEndian.Uint16(file[len(backupMagic)+1:]))
	var out []int
	for off < len(file) {
		out = append(out, off)
		off += 5 + int(binary.BigEndian.Uint32(file[off+1:]))
	}
	if off != len(file) {
		t.Fatalf("frames do not tile the file: %d of %d", off, len(file))
	}
	return out
}

// TestBackupFileRoundTripAndRefusals: the chunked format returns exactly
// what was written, in chunks of the header's size, and refuses every
// change: a file cut at any frame boundary or inside a chunk (truncated),
// a flipped bit anywhere (wrong key for the header, damaged for a chunk),
// another key, chunks swapped, a data chunk marked final, a frame longer
// than the header allows, and bytes after the final chunk.
func TestBackupFileRoundTripAndRefusals(t *testing.T) {
	key := randomKey(t)
	payload := make([]byte, 10*MinBackupChunk+123)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	file := sealPayload(t, key, payload, MinBackupChunk)
	got, br, err := openPayload(file, key)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("round trip: %d bytes of %d, %v", len(got), len(payload), err)
	}
	tr, ok := br.Trailer()
	if !ok || tr.Entries != 7 || tr.AuditSeq != 3 || tr.Bytes != uint64(len(payload)) {
		t.Fatalf("trailer %+v (%v)", tr, ok)
	}
	if h := br.Header(); h.Region != "tianjin/heping" || h.ChunkSize != MinBackupChunk {
		t.Fatalf("header %+v", h)
	}
	fr := frames(t, file)
	if len(fr) != 12 { // 11 data chunks and the final one
		t.Fatalf("%d chunks, want 12", len(fr))
	}
	for _, off := range fr[:len(fr)-1] {
		if n := binary.BigEndian.Uint32(file[off+1:]); n > MinBackupChunk+gcmTag {
			t.Fatalf("a chunk of %d bytes in a file of %d-byte chunks", n, MinBackupChunk)
		}
	}

	expect := func(name string, f, k []byte, want error) {
		t.Helper()
		_, _, err := openPayload(f, k)
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
	for i, off := range fr {
		expect("cut before chunk", file[:off], key, ErrBackupTruncated)
		expect("cut inside chunk", file[:off+7+i], key, ErrBackupTruncated)
	}
	for _, pos := range []int{3, len(backupMagic) + 5, fr[0] + 6, fr[3] + 100, fr[len(fr)-1] + 9, len(file) - 1} {
		flipped := bytes.Clone(file)
		flipped[pos] ^= 0x10
		_, _, err := openPayload(flipped, key)
		if err == nil || !(errors.Is(err, ErrBackupCorrupt) || errors.Is(err, ErrBackupWrongKey) || errors.Is(err, ErrBackupFormat)) {
			t.Errorf("bit %d flipped: %v", pos, err)
		}
		if pos >= fr[0] && !errors.Is(err, ErrBackupCorrupt) {
			t.Errorf("bit %d (in a chunk) flipped: %v, want ErrBackupCorrupt", pos, err)
		}
	}
	expect("another key", file, randomKey(t), ErrBackupWrongKey)
	expect("no key", file, nil, ErrBackupKeyRequired)
	expect("not a backup", []byte("PK\x03\x04 a zip file, not a backup"), key, ErrBackupFormat)

	swapped := slices.Concat(file[:fr[1]], file[fr[2]:fr[3]], file[fr[1]:fr[2]], file[fr[3]:])
	expect("chunks 1 and 2 swapped", swapped, key, ErrBackupCorrupt)
	marked := bytes.Clone(file)
	marked[fr[2]] = chunkFinal
	expect("a data chunk marked final", marked, key, ErrBackupCorrupt)
	long := bytes.Clone(file)
	binary.BigEndian.PutUint32(long[fr[1]+1:], MinBackupChunk+gcmTag+1)
	expect("a frame longer than the chunk size", long, key, ErrBackupCorrupt)
	expect("bytes after the final chunk", append(bytes.Clone(file), 0), key, ErrBackupCorrupt)
	expect("the final chunk dropped", file[:fr[len(fr)-1]], key, ErrBackupTruncated)
}

// allKVs reads every key and value of a store.
func allKVs(t *testing.T, db *DB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := db.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().KeyCopy(nil))] = v
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const testPseudonym = "0123456789abcdef0123456789abcdef"

// filledStore is an encrypted store with records, versions, audit entries
// and an outbox.
func filledStore(t *testing.T, key []byte, records int) *DB {
	t.Helper()
	db := openTest(t, Options{EncryptionKey: key})
	var recs []credit.Record
	for i := 0; i < records; i++ {
		recs = append(recs, testRecord("R-"+string(rune('A'+i%26))+string(rune('a'+i/26)), i%7))
	}
	mustSubmit(t, db, recs...)
	next := recs[0]
	next.Version, next.Summary = 2, "corrected"
	if err := db.UpdateRecord(next); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := db.Audit().Append(AuditEntry{Operation: "lookup.answer", Decision: DecisionAllowed, Subject: testPseudonym}); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func backupOf(t *testing.T, db *DB, key []byte) ([]byte, BackupSummary) {
	t.Helper()
	var buf bytes.Buffer
	sum, err := db.WriteBackup(context.Background(), &buf, BackupOptions{Key: key, Federation: "demo", Region: "tianjin/heping", ChunkSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if sum.FileBytes != int64(buf.Len()) {
		t.Fatalf("summary says %d bytes, wrote %d", sum.FileBytes, buf.Len())
	}
	return buf.Bytes(), sum
}

func restoreInto(dir string, file, key []byte, now time.Time) (RestoreSummary, error) {
	return Restore(RestoreOptions{From: bytes.NewReader(file), Dir: dir, Key: key, Federation: "demo", Region: "tianjin/heping",
		Now: func() time.Time { return now }})
}

// restoreLeftovers lists what a restore left beside dir.
func restoreLeftovers(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(filepath.Dir(dir), "."+filepath.Base(dir)+".restore-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestBackupRestoreRoundTrip: a store written while open comes back whole
// — every key and value as it was, but the outbox and the restore's own
// marker: every subject is marked for publishing, numbered above the
// restore's time in nanoseconds — with an audit chain that verifies and
// ends where the backup's did, and a marker that says so.
func TestBackupRestoreRoundTrip(t *testing.T) {
	defer func(n int) { backupListBytes = n }(backupListBytes)
	backupListBytes = 2 << 10 // many lists
	key := randomKey(t)
	db := filledStore(t, key, 60)
	before := allKVs(t, db)
	file, sum := backupOf(t, db, key)
	if sum.Trailer.Entries != uint64(len(before)) || sum.Trailer.Records != 60 || sum.Trailer.AuditSeq != 5 {
		t.Fatalf("backup summary %+v, store has %d keys", sum.Trailer, len(before))
	}
	// Changes after the backup are not in it.
	mustSubmit(t, db, testRecord("AFTER", 99))

	dir := filepath.Join(t.TempDir(), "data", "db")
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	rs, err := restoreInto(dir, file, key, now)
	if err != nil {
		t.Fatal(err)
	}
	if left := restoreLeftovers(t, dir); len(left) != 0 {
		t.Fatalf("restore left %v", left)
	}
	r := openTest(t, Options{Dir: dir, EncryptionKey: key})
	after := allKVs(t, r)
	restoreOwn := func(k string) bool {
		return strings.HasPrefix(k, "P/") || k == "m/oseq" || k == "m/restores"
	}
	for k, v := range before {
		if restoreOwn(k) {
			continue
		}
		if got, ok := after[k]; !ok || !bytes.Equal(got, v) {
			t.Fatalf("key %q: restored %v, was %q", k, ok, v)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok && !restoreOwn(k) {
			t.Fatalf("key %q is in the restored store only", k)
		}
	}
	if _, err := r.Record(testDept, "AFTER"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a record submitted after the backup: %v", err)
	}
	if err := r.Audit().Verify(); err != nil {
		t.Fatal(err)
	}
	if seq, _ := r.Audit().Head(); seq != 5 || r.CountRecords() != 60 {
		t.Fatalf("restored head %d, %d records", seq, r.CountRecords())
	}
	// Every subject held marked, and the backup's own pending entries
	// again (renumbered: TestRestoreKeepsAPendingWithdrawal).
	pending, err := r.PendingSubjects(0)
	marked := map[string]bool{}
	for _, p := range pending {
		marked[p.Subject] = true
	}
	if err != nil || len(marked) != 7 {
		t.Fatalf("outbox after restore: %d subjects (%v), want the 7 held", len(marked), err)
	}
	if n, err := r.OutboxLen(); n != len(pending) || err != nil {
		t.Fatalf("OutboxLen after restore %d, %v; %d entries", n, err, len(pending))
	}
	for _, p := range pending {
		if p.Seq <= uint64(now.UnixNano()) {
			t.Fatalf("outbox seq %d is not above the restore's time %d", p.Seq, now.UnixNano())
		}
	}
	ms, err := r.Restores()
	if err != nil || len(ms) != 1 {
		t.Fatalf("restore markers %v, %v", ms, err)
	}
	m := ms[0]
	if m.AuditSeq != 5 || m.Subjects != 7 || m.Records != 60 || m.Entries != sum.Trailer.Entries || m.Settled() ||
		!m.RestoredAt.Equal(now) || !m.TakenAt.Equal(sum.Header.TakenAt) || m != rs.Marker {
		t.Fatalf("marker %+v, summary %+v", m, rs.Marker)
	}
}

// TestRestoreRefusesAndLeavesNothing: a store directory that holds
// anything is refused unchanged; a tampered or cut file, another key and
// another node's backup are refused, and the store directory is still
// absent, with nothing left beside it.
func TestRestoreRefusesAndLeavesNothing(t *testing.T) {
	key := randomKey(t)
	file, _ := backupOf(t, filledStore(t, key, 300), key)
	now := time.Now()

	full := filepath.Join(t.TempDir(), "db")
	if err := os.MkdirAll(full, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "MANIFEST"), []byte("a store"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreInto(full, file, key, now); !errors.Is(err, ErrRestoreNotEmpty) {
		t.Fatalf("into a directory holding a file: %v", err)
	}
	if names, _ := os.ReadDir(full); len(names) != 1 {
		t.Fatalf("the refused directory changed: %v", names)
	}
	// An empty directory is fine.
	empty := filepath.Join(t.TempDir(), "db")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreInto(empty, file, key, now); err != nil {
		t.Fatalf("into an empty directory: %v", err)
	}

	fr := frames(t, file)
	tampered := bytes.Clone(file)
	tampered[fr[len(fr)/2]+20] ^= 1
	for _, c := range []struct {
		name string
		file []byte
		key  []byte
		want error
	}{
		{"tampered", tampered, key, ErrBackupCorrupt},
		{"cut", file[:fr[len(fr)-2]+50], key, ErrBackupTruncated},
		{"another key", file, randomKey(t), ErrBackupWrongKey},
	} {
		dir := filepath.Join(t.TempDir(), "db")
		if _, err := restoreInto(dir, c.file, c.key, now); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the store directory exists after a refused restore (%v)", c.name, err)
		}
		if left := restoreLeftovers(t, dir); len(left) != 0 {
			t.Errorf("%s: restore left %v", c.name, left)
		}
	}
	dir := filepath.Join(t.TempDir(), "db")
	_, err := Restore(RestoreOptions{From: bytes.NewReader(file), Dir: dir, Key: key, Federation: "demo", Region: "tianjin/hexi"})
	if !errors.Is(err, ErrBackupOtherNode) || !strings.Contains(err.Error(), "tianjin/heping") {
		t.Fatalf("another district's backup: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the store directory exists after a refused restore (%v)", err)
	}
	if _, err := Restore(RestoreOptions{From: bytes.NewReader(file), Dir: dir, Federation: "demo", Region: "tianjin/heping"}); !errors.Is(err, ErrBackupKeyRequired) {
		t.Fatalf("without a key: %v", err)
	}
}

// TestWriteBackupRefusesWithoutKeyAndStopsOnWriteError: no key, no
// backup; a writer that fails stops the backup with its error.
func TestWriteBackupRefusesWithoutKeyAndStopsOnWriteError(t *testing.T) {
	key := randomKey(t)
	db := filledStore(t, key, 10)
	if _, err := db.WriteBackup(context.Background(), io.Discard, BackupOptions{Region: "tianjin/heping"}); !errors.Is(err, ErrBackupKeyRequired) {
		t.Fatalf("without a key: %v", err)
	}
	broken := errors.New("disk full")
	_, err := db.WriteBackup(context.Background(), failingWriter{after: 100, err: broken}, BackupOptions{Key: key, Region: "tianjin/heping"})
	if !errors.Is(err, broken) {
		t.Fatalf("a failing writer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.WriteBackup(ctx, io.Discard, BackupOptions{Key: key, Region: "tianjin/heping"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled backup: %v", err)
	}
}

type failingWriter struct {
	after int
	err   error
}

func (w failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.after {
		return w.after, w.err
	}
	return len(p), nil
}

// auditEntries appends n entries and returns the whole chain.
func auditEntries(t *testing.T, db *DB, n int) []AuditEntry {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := db.Audit().Append(AuditEntry{Operation: "lookup", Decision: DecisionAllowed}); err != nil {
			t.Fatal(err)
		}
	}
	var out []AuditEntry
	if err := db.Audit().Range(1, 0, func(e AuditEntry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCheckAnchorsAfterARestore: a restored chain ends at the backup's
// head, before the anchors the node made since. It is accepted on the
// restore's marker only: pending, while the chain ends exactly at the
// marker's head; settled, for the anchors up to the newest one at
// settling, while anchors of the chain written since are checked. A chain
// that contradicts an anchor at or before the backup's head, and a chain
// cut short without a marker, are refused.
func TestCheckAnchorsAfterARestore(t *testing.T) {
	key := randomKey(t)
	old := openTest(t, Options{EncryptionKey: key})
	auditEntries(t, old, 5)
	file, _ := backupOf(t, old, key)
	lost := auditEntries(t, old, 5) // entries 6 to 10, lost with the restore
	anchors := anchorsAt(lost, 3, 5, 8, 10)

	// Without a marker, the same chain cut at 5 is a truncation.
	truncateTo(t, old, 5)
	var me *AuditMismatchError
	if err := old.Audit().CheckAnchors(anchors); !errors.As(err, &me) || me.Kind != TamperTruncated || me.Seq != 6 {
		t.Fatalf("a chain cut short without a marker: %v", err)
	}

	dir := filepath.Join(t.TempDir(), "db")
	if _, err := restoreInto(dir, file, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	r := openTest(t, Options{Dir: dir, EncryptionKey: key})
	rep, err := r.Audit().CheckAnchorsReport(anchors)
	if err != nil || rep.Restore == nil || !rep.Pending || rep.Skipped != 2 || rep.Newest != 10 {
		t.Fatalf("the first check after the restore: %+v, %v", rep, err)
	}
	// An anchor at or before the backup's head that the chain contradicts.
	forged := append(slices.Clone(anchors), AuditAnchor{Seq: 4, Hash: [32]byte{4}, At: time.Now()})
	if err := r.Audit().CheckAnchors(forged); !errors.As(err, &me) || me.Kind != TamperRewritten {
		t.Fatalf("a restored chain contradicting an anchor: %v", err)
	}
	m, ok, err := r.Audit().SettleRestore(rep.Newest, time.Now())
	if err != nil || !ok || m.LostThrough != 10 || !m.Settled() {
		t.Fatalf("settle: %+v %v %v", m, ok, err)
	}
	if _, again, _ := r.Audit().SettleRestore(20, time.Now()); again {
		t.Fatal("a settled marker settled again")
	}
	// The node goes on from entry 6: a new chain, whose entries 6 to 10
	// differ from the lost ones anchored.
	chain := auditEntries(t, r, 8)
	if chain[7].Hash == lost[2].Hash {
		t.Fatal("the new chain's entry 8 is the lost one: the test proves nothing")
	}
	rep, err = r.Audit().CheckAnchorsReport(anchors)
	if err != nil || rep.Restore == nil || rep.Pending || rep.Skipped != 2 {
		t.Fatalf("a later check: %+v, %v", rep, err)
	}
	// Anchors of the new chain, after the lost ones, are checked.
	withNew := append(slices.Clone(anchors), anchorsAt(chain, 12)...)
	if _, err := r.Audit().CheckAnchorsReport(withNew); err != nil {
		t.Fatalf("with an anchor of the new chain: %v", err)
	}
	wrongNew := append(slices.Clone(anchors), AuditAnchor{Seq: 12, Hash: lost[0].Hash, At: time.Now()})
	if err := r.Audit().CheckAnchors(wrongNew); !errors.As(err, &me) || me.Kind != TamperRewritten {
		t.Fatalf("a new-chain anchor the chain contradicts: %v", err)
	}
	truncateTo(t, r, 11)
	if err := r.Audit().CheckAnchors(withNew); !errors.As(err, &me) || me.Kind != TamperTruncated || me.Seq != 12 {
		t.Fatalf("the new chain cut before its anchor: %v", err)
	}
}

// TestPendingRestoreMarkerCoversOnlyItsHead: a pending marker covers the
// chain only while it ends exactly where the backup's did.
func TestPendingRestoreMarkerCoversOnlyItsHead(t *testing.T) {
	key := randomKey(t)
	old := openTest(t, Options{EncryptionKey: key})
	auditEntries(t, old, 5)
	file, _ := backupOf(t, old, key)
	anchors := anchorsAt(auditEntries(t, old, 5), 9)
	dir := filepath.Join(t.TempDir(), "db")
	if _, err := restoreInto(dir, file, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	r := openTest(t, Options{Dir: dir, EncryptionKey: key})
	truncateTo(t, r, 4)
	var me *AuditMismatchError
	if err := r.Audit().CheckAnchors(anchors); !errors.As(err, &me) || me.Kind != TamperTruncated || me.Seq != 5 {
		t.Fatalf("a restored chain cut further: %v", err)
	}
}
