package storage

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHelperJournal is not a test: run by the journal crash tests in a
// child process, it appends audit entries one Append at a time, printing
// "audit <seq> <hash hex>" once each has returned, and then, by mode:
//
//   - "journal-acked": prints "ready" and waits to be killed, the entries
//     in the journal only (nothing moves them: the idle move is an hour);
//   - "journal-midmove": starts a move of many transactions and kills
//     itself after the first has committed;
//   - "journal-rewound": moves everything (the journal rewinds), appends
//     three more small entries over the start of the old frames, prints
//     "ready" and waits to be killed.
func TestHelperJournal(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if !strings.HasPrefix(mode, "journal-") {
		t.Skip("helper process for the audit journal crash tests")
	}
	auditMoveIdle = time.Hour
	db := helperStore(Options{})
	appendOne := func(e AuditEntry) {
		out, err := db.Audit().Append(e)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(3)
		}
		fmt.Printf("audit %d %x\n", out[0].Seq, out[0].Hash)
	}
	big := strings.Repeat("x", 2000)
	for i := range 30 {
		e := lookupEntry(i)
		if mode == "journal-rewound" {
			e.Reference = big
		}
		appendOne(e)
	}
	switch mode {
	case "journal-midmove":
		db.budgetCount = 6 // two entries a transaction: a move of 15
		moveCommitted = func(through uint64) {
			fmt.Printf("moved %d\n", through)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		db.Audit().Verify() // settles: the move
		fmt.Println("error the move returned")
		os.Exit(3)
	case "journal-rewound":
		if err := db.Audit().Verify(); err != nil {
			fmt.Println("error", err)
			os.Exit(3)
		}
		if db.audit.j.off != 0 {
			fmt.Println("error the journal did not rewind")
			os.Exit(3)
		}
		for i := range 3 {
			appendOne(lookupEntry(100 + i))
		}
	}
	fmt.Println("ready")
	<-time.After(60 * time.Second) // never outlive a dead parent for long
	os.Exit(4)
}

// helperStore opens the helper process's store (its directory and key
// from the environment, the rest from opts), or exits.
func helperStore(opts Options) *DB {
	opts.Dir, opts.GCInterval = os.Getenv(helperDirEnv), -1
	if k := os.Getenv(helperKeyEnv); k != "" {
		opts.EncryptionKey, _ = hex.DecodeString(k)
	}
	db, err := Open(opts)
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(2)
	}
	return db
}

// checkReadOnly opens dir's audit log read-only and checks its head and
// chain.
func checkReadOnly(t *testing.T, opts Options, head uint64) {
	t.Helper()
	r, err := OpenAuditReadOnly(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if seq, _ := r.Head(); seq != head {
		t.Fatalf("read-only head %d, want %d", seq, head)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
}

// journalAcks is what a journal helper acknowledged: seq → hash.
type journalAcks map[uint64]string

// crashJournal runs the journal helper in mode on dir until it is ready
// (or has killed itself), kills it and returns its acknowledgements.
func crashJournal(t *testing.T, mode, dir string, key []byte) journalAcks {
	t.Helper()
	acks := journalAcks{}
	ready := false
	killHelper(t, "TestHelperJournal", mode, dir, key, func(f []string) {
		switch {
		case len(f) == 3 && f[0] == "audit":
			s, _ := strconv.ParseUint(f[1], 10, 64)
			acks[s] = f[2]
		case len(f) == 1 && f[0] == "ready":
			ready = true
		}
	}, func() bool { return ready })
	return acks
}

// checkAcks opens dir and checks that every acknowledged entry is in the
// store with its hash, that nothing else is, that the head is the last of
// them, and that the chain verifies (checkAcked, exact).
func checkAcks(t *testing.T, dir string, key []byte, acks journalAcks) *DB {
	t.Helper()
	db := checkAcked(t, Options{Dir: dir, EncryptionKey: key}, acks, true)
	if seq, _ := db.Audit().Head(); seq != uint64(len(acks)) {
		t.Fatalf("head %d after %d acknowledged entries", seq, len(acks))
	}
	return db
}

// TestAuditJournalCrashKeepsAcknowledgedEntries kills a node's store at
// each step of the journal: after appends acknowledged from the journal
// alone, in the middle of moving them into the store, and after a rewind
// whose new frames overwrite the start of the old ones. Every
// acknowledged entry is back after the restart, with its hash, and
// nothing else; appends go on from it.
func TestAuditJournalCrashKeepsAcknowledgedEntries(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("in the helper process")
	}
	for _, mode := range []string{"journal-acked", "journal-midmove", "journal-rewound"} {
		for _, key := range [][]byte{nil, testKey(7)} {
			t.Run(fmt.Sprintf("%s/encrypted=%v", mode, key != nil), func(t *testing.T) {
				dir := t.TempDir()
				acks := crashJournal(t, mode, dir, key)
				want := 30
				if mode == "journal-rewound" {
					want = 33
				}
				if len(acks) != want {
					t.Fatalf("premise: the helper acknowledged %d entries, want %d", len(acks), want)
				}
				db := checkAcks(t, dir, key, acks)
				if db.audit.moves.Load() == 0 {
					t.Fatal("premise: the journal held nothing the store lacked")
				}
				out := appendN(t, db.Audit(), 2)
				if out[0].Seq != uint64(want+1) {
					t.Fatalf("the next append got seq %d", out[0].Seq)
				}
				if err := db.Audit().Verify(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// journalFrames returns the offsets of the frames in dir's journal.
func journalFrames(t *testing.T, dir string) []int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off := int64(0); off+frameHeader <= int64(len(b)); {
		n := int64(binary.LittleEndian.Uint32(b[off:]))
		if n == 0 {
			break
		}
		offs = append(offs, off)
		off += frameHeader + n
	}
	return offs
}

// rewriteJournal changes dir's journal with fn.
func rewriteJournal(t *testing.T, dir string, fn func(b []byte)) {
	t.Helper()
	path := filepath.Join(dir, journalName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fn(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAuditJournalTornFrame: a frame whose bytes do not match its
// checksum (a write torn by the crash, never acknowledged) ends the
// journal: the entries before it come back, it and whatever follows do
// not, and the chain verifies.
func TestAuditJournalTornFrame(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("in the helper process")
	}
	dir := t.TempDir()
	acks := crashJournal(t, "journal-acked", dir, nil)
	offs := journalFrames(t, dir)
	if len(offs) != 30 {
		t.Fatalf("premise: %d frames, want one per append", len(offs))
	}
	rewriteJournal(t, dir, func(b []byte) { b[offs[27]+frameHeader+30] ^= 0xff })
	delete(acks, 28)
	delete(acks, 29)
	delete(acks, 30)
	checkAcks(t, dir, nil, acks)
}

// TestAuditJournalRefusesWhatDoesNotAuthenticate: an encrypted frame
// changed and given a matching checksum (someone with the disk and not
// the key), and a journal carried over from another store, are refused
// at Open as ErrCorrupt, changing nothing: the store opens whole once its
// own journal is put back.
func TestAuditJournalRefusesWhatDoesNotAuthenticate(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("in the helper process")
	}
	key := testKey(5)
	dir := t.TempDir()
	acks := crashJournal(t, "journal-acked", dir, key)
	path := filepath.Join(dir, journalName)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offs := journalFrames(t, dir)
	rewriteJournal(t, dir, func(b []byte) {
		off := offs[10]
		n := int64(binary.LittleEndian.Uint32(b[off:]))
		b[off+frameHeader+bodyHeader+5] ^= 0x01
		binary.LittleEndian.PutUint32(b[off+4:], crc32.Checksum(b[off+frameHeader:off+frameHeader+n], crcTable))
	})
	if _, err := Open(Options{Dir: dir, EncryptionKey: key, GCInterval: -1}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a changed frame: Open = %v, want ErrCorrupt", err)
	}

	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	checkAcks(t, dir, key, acks).Close()
	moved, err := os.ReadFile(path) // its frames all in the store now
	if err != nil {
		t.Fatal(err)
	}

	// Another store's journal, whose entry at this store's head is another.
	other := t.TempDir()
	crashJournal(t, "journal-acked", other, key)
	foreign, err := os.ReadFile(filepath.Join(other, journalName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, foreign, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir, EncryptionKey: key, GCInterval: -1}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("another store's journal: Open = %v, want ErrCorrupt", err)
	}

	if err := os.WriteFile(path, moved, 0o600); err != nil {
		t.Fatal(err)
	}
	checkAcks(t, dir, key, acks)
}

// TestAuditJournalReadOnlyRefusesUnmovedEntries: a stopped node's audit
// log opened read-only, while its journal holds entries the store lacks
// (it was killed), is refused with what to do; once the node was started
// and stopped, it opens and shows them.
func TestAuditJournalReadOnlyRefusesUnmovedEntries(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("in the helper process")
	}
	dir := t.TempDir()
	acks := crashJournal(t, "journal-acked", dir, nil)
	if _, err := OpenAuditReadOnly(Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "stop it cleanly") {
		t.Fatalf("read-only with unmoved entries: %v", err)
	}
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	checkReadOnly(t, Options{Dir: dir}, uint64(len(acks)))
}

// TestAuditJournalIsEncrypted: with a key, the journal holding entries
// shows none of their text; without one it does (so the check can fail).
func TestAuditJournalIsEncrypted(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("in the helper process")
	}
	for _, key := range [][]byte{nil, testKey(3)} {
		dir := t.TempDir()
		crashJournal(t, "journal-acked", dir, key)
		b, err := os.ReadFile(filepath.Join(dir, journalName))
		if err != nil {
			t.Fatal(err)
		}
		shows := bytes.Contains(b, []byte("recruitment")) || bytes.Contains(b, []byte(pseudonym(1)[:16]))
		if shows != (key == nil) {
			t.Fatalf("encrypted=%v: the journal shows the entries' text: %v", key != nil, shows)
		}
	}
}

// TestAuditJournalAcknowledgesWithOneFlush: an append is acknowledged by
// one journal flush, with nothing moved into the store yet; every reader
// (range, subject, page, verify, backup) still sees it at once, moving it
// first.
func TestAuditJournalAcknowledgesWithOneFlush(t *testing.T) {
	defer func(d time.Duration) { auditMoveIdle = d }(auditMoveIdle)
	auditMoveIdle = time.Hour
	db := openTest(t, Options{})
	l := db.Audit()
	commits, moves := l.commits.Load(), l.moves.Load()
	out := appendN(t, l, 3)
	if n := l.commits.Load() - commits; n != 1 {
		t.Fatalf("%d synced writes for one append", n)
	}
	if l.moves.Load() != moves {
		t.Fatal("premise: the append was moved into the store at once")
	}
	got, err := l.BySubject(out[0].Subject)
	if err != nil || len(got) != 1 || got[0].Hash != out[0].Hash {
		t.Fatalf("by subject before a move: %v, %d entries", err, len(got))
	}
	if l.moves.Load() == moves {
		t.Fatal("a read did not move the journaled entries")
	}
	more := appendN(t, l, 2)
	page, _, err := l.Page(AuditFilter{}, 0, 100)
	if err != nil || len(page) != 5 || page[4].Hash != more[1].Hash {
		t.Fatalf("page: %v, %d entries", err, len(page))
	}
	last := appendN(t, l, 1)
	var n int
	if err := l.Range(1, 0, func(AuditEntry) error { n++; return nil }); err != nil || n != 6 {
		t.Fatalf("range: %v, %d entries", err, n)
	}
	appendN(t, l, 1)
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1)
	var buf bytes.Buffer
	sum, err := db.WriteBackup(t.Context(), &buf, BackupOptions{Key: testKey(1), Region: "r"})
	if err != nil || sum.Trailer.AuditSeq != last[0].Seq+2 {
		t.Fatalf("backup: %v, audit seq %d", err, sum.Trailer.AuditSeq)
	}
}

// TestAuditJournalFull: appends that fill the journal move what it holds
// into the store and rewind it; nothing is lost or reordered, and a
// reopen finds the whole chain.
func TestAuditJournalFull(t *testing.T) {
	defer func(d time.Duration, n int64) { auditMoveIdle, journalSize = d, n }(auditMoveIdle, journalSize)
	auditMoveIdle, journalSize = time.Hour, 64<<10
	dir := t.TempDir()
	db := openTest(t, Options{Dir: dir})
	l := db.Audit()
	for range 200 {
		e := lookupEntry(1)
		e.Reference = strings.Repeat("r", 500)
		if _, err := l.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	if l.moves.Load() == 0 {
		t.Fatal("premise: the journal never filled")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	checkReadOnly(t, Options{Dir: dir}, 200)
}

// TestAuditJournalEmptyAfterCleanClose: a store closed cleanly leaves a
// journal that holds nothing, even for a store whose log ended before
// (what a log truncated while the node was stopped looks like), so old
// frames never mend a log changed offline: its anchors judge it.
func TestAuditJournalEmptyAfterCleanClose(t *testing.T) {
	for _, key := range [][]byte{nil, testKey(8)} {
		dir := t.TempDir()
		db := openTest(t, Options{Dir: dir, EncryptionKey: key})
		appendN(t, db.Audit(), 5)
		if err := db.Audit().Verify(); err != nil { // moved, frames left behind
			t.Fatal(err)
		}
		moved := rawAuditHead(t, db) // entry 5
		appendN(t, db.Audit(), 2)
		if items, err := readJournal(dir, key, moved, nil); err != nil || len(items) != 2 {
			t.Fatalf("premise: the open journal holds %d entries after the store's head (%v)", len(items), err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		for _, head := range []auditHead{moved, {}} {
			if items, err := readJournal(dir, key, head, nil); err != nil || len(items) != 0 {
				t.Fatalf("encrypted=%v: after a clean close the journal holds %d entries after %d (%v)", key != nil, len(items), head.Seq, err)
			}
		}
	}
}

// TestAuditJournalCutShortIsMadeAgain: a journal shorter than its size (cut
// by hand while the node was stopped) is made again at the next open,
// instead of refusing every append as too large.
func TestAuditJournalCutShortIsMadeAgain(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, Options{Dir: dir})
	appendN(t, db.Audit(), 3)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, journalName)
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, Options{Dir: dir})
	out := appendN(t, db.Audit(), 2)
	if out[0].Seq != 4 {
		t.Fatalf("the next append after a cut journal got seq %d", out[0].Seq)
	}
	if st, err := os.Stat(path); err != nil || st.Size() != journalSize {
		t.Fatalf("journal after the open: %v, %d bytes, want %d", err, st.Size(), journalSize)
	}
	if err := db.Audit().Verify(); err != nil {
		t.Fatal(err)
	}
}
