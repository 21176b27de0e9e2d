package storage

// Hostile review of the audit journal (auditjournal.go): crash points,
// stale frames, nonces, concurrency, failures and the read-only path.
// Crashes are real (a child process killed with SIGKILL, TestHelperHostile)
// where the point can be reached from outside; where it cannot (inside a
// move, right after a journal write), the test looks at what recovery
// would read at that instant (readJournal on the live file against the
// head the store has committed), which is what Open does after a kill.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

var hostileAt = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// plantedFrame is a journal frame claiming first seq first, with a payload
// too short to hold an entry, every byte of it valid UTF-8 (the salt is
// chosen so that the checksum's bytes are ASCII): text an audit entry can
// carry in a free-text field such as Reference.
func plantedFrame(first uint64) []byte {
	for i := 0; ; i++ {
		body := []byte(fmt.Sprintf("%016d", i))
		body = binary.BigEndian.AppendUint64(body, first)
		body = append(body, 'Z')
		crc := crc32.Checksum(body, crcTable)
		f := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
		f = binary.LittleEndian.AppendUint32(f, crc)
		ascii := true
		for _, c := range f[4:8] {
			ascii = ascii && c < 0x80
		}
		if ascii {
			return append(f, body...)
		}
	}
}

// sizedEntry returns an entry that, chained as seq and journaled alone
// (unencrypted), makes a frame of exactly size bytes.
func sizedEntry(seq uint64, size int) (AuditEntry, bool) {
	for l := 0; l < size; l++ {
		e := lookupEntry(1)
		e.At = hostileAt
		e.Reference = strings.Repeat("q", l)
		c := e
		c.Seq, c.Prev, c.Hash = seq, [32]byte{1}, [32]byte{1}
		v, err := encMode.Marshal(&c)
		if err != nil {
			return e, false
		}
		if n := frameHeader + bodyHeader + 4 + len(v); n == size {
			return e, true
		} else if n > size {
			return e, false
		}
	}
	return AuditEntry{}, false
}

// TestHelperHostile is not a test: run by the hostile journal tests in a
// child process, it appends audit entries, printing "audit <seq> <hash>"
// once each Append has returned ("refused <error>" when one is refused),
// and by mode:
//
//   - "hostile-utf8": an entry whose Reference is not valid UTF-8 among
//     ordinary ones; then "ready";
//   - "hostile-bigframe": with Badger's default options (larger memtables,
//     so a larger transaction budget), one entry of 3.3 MB and a small one,
//     then "ready";
//   - "hostile-bigacked": 5 small entries, then a group of 2000 entries
//     of 1 kB, killing itself after the first transaction of its move;
//   - "hostile-recovermid": opens the store (recovering its journal) and
//     kills itself after the first transaction of the recovery's move;
//   - "hostile-groupfull": 30 small entries, then one Append of a group
//     larger than the journal, killing itself after the first transaction
//     of the move the full journal forces in the middle of the group;
//   - "hostile-plant": an entry carrying a planted frame, moved (the
//     journal rewinds), then one entry whose frame ends exactly where the
//     planted frame begins; then "ready".
//
// Nothing moves journaled entries in the background (the idle move is an
// hour).
func TestHelperHostile(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if !strings.HasPrefix(mode, "hostile-") {
		t.Skip("helper process for the hostile audit journal tests")
	}
	auditMoveIdle = time.Hour
	dir := os.Getenv(helperDirEnv)
	fail := func(format string, a ...any) {
		fmt.Printf("error "+format+"\n", a...)
		os.Exit(3)
	}
	killAtMove := func() {
		moveCommitted = func(through uint64) {
			fmt.Printf("moved %d\n", through)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	if mode == "hostile-recovermid" {
		killAtMove()
	}
	db := helperStore(Options{baseline: mode == "hostile-bigframe"})
	// appendKilled appends n entries with references of size bytes in one
	// group, to be killed in the move it starts.
	appendKilled := func(n int, fill string, size int) {
		killAtMove()
		group := make([]AuditEntry, n)
		for i := range group {
			group[i] = lookupEntry(100 + i)
			group[i].Reference = strings.Repeat(fill, size)
		}
		if _, err := db.Audit().Append(group...); err != nil {
			fail("group: %v", err)
		}
	}
	appendOne := func(e AuditEntry) {
		out, err := db.Audit().Append(e)
		if err != nil {
			fmt.Println("refused", err)
			return
		}
		fmt.Printf("audit %d %x\n", out[0].Seq, out[0].Hash)
	}
	switch mode {
	case "hostile-utf8":
		for i := range 3 {
			appendOne(lookupEntry(i))
		}
		e := lookupEntry(3)
		e.Reference = "case-\xff\xfe"
		appendOne(e)
		for i := range 2 {
			appendOne(lookupEntry(4 + i))
		}
	case "hostile-bigframe":
		e := lookupEntry(0)
		e.Reference = strings.Repeat("b", 3_300_000)
		appendOne(e)
		appendOne(lookupEntry(1))
	case "hostile-bigacked":
		// What is acknowledged and not moved always fits one transaction
		// (auditMoveBytes < the budget): a journal that needs several is
		// one a kill left between a large group's flushes and its move.
		for i := range 5 {
			appendOne(lookupEntry(i))
		}
		appendKilled(2000, "x", 1000)
		fail("the group was not moved")
	case "hostile-recovermid":
		// Open returned: the recovery moved everything in one transaction.
		fail("the recovery's move did not commit more than once")
	case "hostile-groupfull":
		for i := range 30 {
			appendOne(lookupEntry(i))
		}
		appendKilled(3500, "g", 1200)
		fail("the group never filled the journal")
	case "hostile-plant":
		fake := plantedFrame(3) // the seq after the second entry
		e1 := lookupEntry(0)
		e1.At = hostileAt
		e1.Reference = strings.Repeat("p", 600) + string(fake)
		appendOne(e1)
		b, err := os.ReadFile(filepath.Join(dir, journalName))
		if err != nil {
			fail("%v", err)
		}
		x := bytes.Index(b, fake)
		if x < 0 {
			fail("the planted frame is not in the journal")
		}
		if err := db.Audit().Verify(); err != nil { // moves it: the journal rewinds
			fail("%v", err)
		}
		if db.audit.j.off != 0 {
			fail("the journal did not rewind")
		}
		e2, ok := sizedEntry(2, x)
		if !ok {
			fail("no entry makes a frame of %d bytes", x)
		}
		appendOne(e2)
		if offs := journalFramesUpTo(dir, 1); len(offs) != 1 || offs[0] != int64(x) {
			fail("the second entry's frame does not end at the planted one: %v, want %d", offs, x)
		}
	default:
		fail("unknown mode %s", mode)
	}
	fmt.Println("ready")
	<-time.After(60 * time.Second) // never outlive a dead parent for long
	os.Exit(4)
}

// journalFramesUpTo returns the end offsets of the first n frames of dir's
// journal.
func journalFramesUpTo(dir string, n int) []int64 {
	b, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		return nil
	}
	var ends []int64
	for off := int64(0); len(ends) < n && off+frameHeader <= int64(len(b)); {
		l := int64(binary.LittleEndian.Uint32(b[off:]))
		if l == 0 {
			break
		}
		off += frameHeader + l
		ends = append(ends, off)
	}
	return ends
}

// hostileRun is what a hostile helper printed before it died.
type hostileRun struct {
	acks    journalAcks
	refused []string
	moved   []uint64
	ready   bool
}

// crashHostile runs the hostile helper in mode on dir until it is ready or
// has killed itself, kills it, and returns what it printed.
func crashHostile(t *testing.T, mode, dir string, key []byte) *hostileRun {
	t.Helper()
	r := &hostileRun{acks: journalAcks{}}
	killHelper(t, "TestHelperHostile", mode, dir, key, func(f []string) {
		switch {
		case len(f) == 3 && f[0] == "audit":
			s, _ := strconv.ParseUint(f[1], 10, 64)
			r.acks[s] = f[2]
		case len(f) >= 1 && f[0] == "refused":
			r.refused = append(r.refused, strings.Join(f[1:], " "))
		case len(f) == 2 && f[0] == "moved":
			s, _ := strconv.ParseUint(f[1], 10, 64)
			r.moved = append(r.moved, s)
		case len(f) == 1 && f[0] == "ready":
			r.ready = true
		}
	}, func() bool { return r.ready || len(r.moved) > 0 })
	return r
}

// checkAcked opens the store with opts and checks that every acknowledged
// entry is in it with its hash and that the chain verifies; exact: and
// nothing else.
func checkAcked(t *testing.T, opts Options, acks journalAcks, exact bool) *DB {
	t.Helper()
	db := openTest(t, opts)
	got := journalAcks{}
	if err := db.Audit().Range(1, 0, func(e AuditEntry) error {
		got[e.Seq] = hex.EncodeToString(e.Hash[:])
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for s := uint64(1); s <= uint64(len(acks)); s++ {
		if h, ok := acks[s]; ok && got[s] != h {
			t.Fatalf("acknowledged entry %d: stored hash %q, acknowledged %q (the store holds %d entries)", s, got[s], h, len(got))
		}
	}
	for s, h := range acks {
		if got[s] != h {
			t.Fatalf("acknowledged entry %d: stored hash %q, acknowledged %q", s, got[s], h)
		}
	}
	if exact && len(got) != len(acks) {
		t.Fatalf("the store holds %d entries, %d were acknowledged", len(got), len(acks))
	}
	if err := db.Audit().Verify(); err != nil {
		t.Fatalf("chain after the crash: %v", err)
	}
	return db
}

func skipInHelper(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("in the helper process")
	}
}

// TestHostileJournalInvalidUTF8 (finding): Append acknowledges an entry
// whose text is not valid UTF-8 (checkAuditEntry does not look, the
// encoder does not care), but the journal's recovery decodes entries with
// the strict decoder, which refuses it: after a crash the store does not
// open at all (ErrCorrupt), and every acknowledged entry of the journal,
// before and after that one, is out of reach. Either Append must refuse
// such an entry or recovery must not depend on decoding it. (The audit
// package's Recorder replaces invalid UTF-8 in the fields it bounds, so the
// node's own callers are covered; storage's Append is not.)
func TestHostileJournalInvalidUTF8(t *testing.T) {
	skipInHelper(t)
	dir := t.TempDir()
	run := crashHostile(t, "hostile-utf8", dir, nil)
	if len(run.refused) > 0 {
		t.Logf("Append refused the entry: %v", run.refused)
		if len(run.acks) != 5 {
			t.Fatalf("premise: %d acknowledged", len(run.acks))
		}
	} else if len(run.acks) != 6 {
		t.Fatalf("premise: %d acknowledged", len(run.acks))
	}
	checkAcked(t, Options{Dir: dir}, run.acks, true)
}

// TestHostileJournalInvalidUTF8CleanRestart (finding): the same entry
// breaks a clean restart, no crash needed. Close moves it into the store
// and rewinds the journal, but the frame stays at offset 0 until something
// overwrites it, and readJournal decodes every entry of a frame before it
// looks whether the store already holds it: the next Open refuses the
// store (ErrCorrupt), and so does OpenAuditReadOnly.
func TestHostileJournalInvalidUTF8CleanRestart(t *testing.T) {
	skipInHelper(t)
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, db.Audit(), 2)
	e := lookupEntry(3)
	e.Records = []string{"A1", "\xc3("}
	if _, err := db.Audit().Append(e); err != nil {
		t.Logf("Append refused the entry: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if r, err := OpenAuditReadOnly(Options{Dir: dir}); err != nil {
		t.Errorf("read-only after a clean stop: %v", err)
	} else {
		r.Close()
	}
	db, err = Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatalf("Open after a clean stop: %v", err)
	}
	db.Close()
}

// TestHostileJournalMoveFailure (held): a move that fails (here: a
// transaction Badger refuses as too big, the budget made too large) after
// the group was journaled still acknowledges the group (it is durable in
// the journal), refuses every later append and every reader, and a
// restart moves what was journaled: exactly the acknowledged entries.
func TestHostileJournalMoveFailure(t *testing.T) {
	skipInHelper(t)
	defer func(d time.Duration) { auditMoveIdle = d }(auditMoveIdle)
	auditMoveIdle = time.Hour
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	acks := journalAcks{}
	note := func(out []AuditEntry) {
		for _, e := range out {
			acks[e.Seq] = hex.EncodeToString(e.Hash[:])
		}
	}
	note(appendN(t, db.Audit(), 3))
	moveFails = func() error { return errors.New("the disk refuses the move") } // the appender is idle: ordered by the next send
	defer func() { moveFails = nil }()
	group := make([]AuditEntry, 2500)
	for i := range group {
		group[i] = lookupEntry(i)
		group[i].Reference = strings.Repeat("m", 1200)
	}
	// The group is flushed in parts with a move between them once 1 MiB is
	// pending: the failed move refuses what is not flushed yet, and so the
	// group (its flushed part is durable, not acknowledged).
	out, err := db.Audit().Append(group...)
	if err == nil {
		note(out)
	} else {
		t.Logf("a group whose move failed part way: %v", err)
	}
	if db.audit.moves.Load() != 0 {
		t.Fatal("premise: the move committed")
	}
	if _, err := db.Audit().Append(lookupEntry(9)); err == nil {
		t.Fatal("an append after a failed move was acknowledged")
	}
	if _, err := db.Audit().BySubject(pseudonym(0)); err == nil {
		t.Fatal("BySubject answered without the journaled entries")
	}
	moveFails = nil // the disk is back for the restart
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// What was flushed of a refused group may come back after them
	// (durable, never acknowledged), as after a crash.
	checkAcked(t, Options{Dir: dir}, acks, err == nil)
}

// TestHostileJournalLargeFrameMovedBeforeAck (held): with Badger's default
// options (64 MiB memtables, so a transaction budget of 5 MB) an entry of
// 3.3 MB is larger than a quarter of the journal, which one flush may
// write: Append refuses it (ErrAuditEntry, too large) and takes the next;
// whatever is acknowledged survives a kill.
func TestHostileJournalLargeFrameMovedBeforeAck(t *testing.T) {
	skipInHelper(t)
	dir := t.TempDir()
	run := crashHostile(t, "hostile-bigframe", dir, nil)
	if len(run.acks) != 1 || len(run.refused) != 1 || !strings.Contains(run.refused[0], "too large") {
		t.Fatalf("%d acknowledged, refused: %v; want the 3.3 MB entry refused as too large and the next taken", len(run.acks), run.refused)
	}
	checkAcked(t, Options{Dir: dir, baseline: true}, run.acks, true)
}

// TestHostileJournalEntryLargerThanJournal (finding, reachable only with
// larger Badger memtables, e.g. the package's baseline option): Append
// sizes entries by the store's transaction budget, the journal is a fixed
// 4 MiB. An entry of 4.5 MB passes Append's checks, its frame cannot fit
// even in an empty journal, the write after the move and rewind fails
// with errJournalFull, and that is taken for a failed journal write: every
// later append, and every reader, is refused until the process restarts.
// One oversized entry should be refused alone (ErrAuditEntry), as one
// that does not fit a transaction is.
func TestHostileJournalEntryLargerThanJournal(t *testing.T) {
	skipInHelper(t)
	db := openTest(t, Options{baseline: true})
	if db.budgetBytes < 4_600_000 {
		t.Skipf("premise: a budget of %d bytes", db.budgetBytes)
	}
	big := lookupEntry(0)
	big.Reference = strings.Repeat("b", 4_500_000)
	_, err := db.Audit().Append(big)
	t.Logf("a 4.5 MB entry: %v", err)
	if _, err := db.Audit().Append(lookupEntry(1)); err != nil {
		t.Fatalf("an ordinary append after one oversized entry: %v", err)
	}
	if err := db.Audit().Verify(); err != nil {
		t.Fatalf("verify after one oversized entry: %v", err)
	}
}

// TestHostileJournalRecoveryKilledMidMove (held): a kill in the middle of
// moving a group of 2000 entries, then a second kill after the first
// transaction of the recovery's own move of what is left, leave a store
// the next Open finishes: every acknowledged entry with its hash, then the
// part of the group that was flushed before the move (durable, not
// acknowledged), at least what the recovery had moved, the chain whole.
func TestHostileJournalRecoveryKilledMidMove(t *testing.T) {
	skipInHelper(t)
	for _, key := range [][]byte{nil, testKey(4)} {
		t.Run(fmt.Sprintf("encrypted=%v", key != nil), func(t *testing.T) {
			dir := t.TempDir()
			run := crashHostile(t, "hostile-bigacked", dir, key)
			if len(run.acks) != 5 || len(run.moved) != 1 || run.moved[0] >= 2005 {
				t.Fatalf("premise: %d acknowledged, moved %v", len(run.acks), run.moved)
			}
			rec := crashHostile(t, "hostile-recovermid", dir, key)
			if len(rec.moved) != 1 || rec.moved[0] <= run.moved[0] || rec.moved[0] >= 2005 {
				t.Fatalf("premise: the recovery was not killed part way: moved %v after %v", rec.moved, run.moved)
			}
			db := checkAcked(t, Options{Dir: dir, EncryptionKey: key}, run.acks, false)
			if seq, _ := db.Audit().Head(); seq < rec.moved[0] || seq > 2005 {
				t.Fatalf("head %d, want from %d (what the recovery moved) to 2005", seq, rec.moved[0])
			}
		})
	}
}

// TestHostileJournalKilledInGroupThatFillsTheJournal (held): a single
// Append larger than the journal is written in flushes of a quarter of
// it; when the journal fills part way, what it holds is moved; a kill
// after the first transaction of that move loses no acknowledged entry
// (the group itself was not acknowledged; whatever of it comes back is a
// whole chained prefix).
func TestHostileJournalKilledInGroupThatFillsTheJournal(t *testing.T) {
	skipInHelper(t)
	for _, key := range [][]byte{nil, testKey(6)} {
		t.Run(fmt.Sprintf("encrypted=%v", key != nil), func(t *testing.T) {
			dir := t.TempDir()
			run := crashHostile(t, "hostile-groupfull", dir, key)
			if len(run.acks) != 30 || len(run.moved) != 1 {
				t.Fatalf("premise: %d acknowledged, moved %v", len(run.acks), run.moved)
			}
			db := checkAcked(t, Options{Dir: dir, EncryptionKey: key}, run.acks, false)
			seq, _ := db.Audit().Head()
			if seq < 30 || seq > 30+3500 {
				t.Fatalf("head %d", seq)
			}
			t.Logf("head %d after the kill (30 acknowledged, the rest an unacknowledged prefix of the group)", seq)
		})
	}
}

// TestHostileJournalPlantedStaleFrame (finding, unencrypted stores): what
// lies beyond the journal's new tail after a rewind is old frames, whose
// bytes in a store without a key are entry text a caller chose. A frame
// planted in a free-text field (all of it valid UTF-8: the checksum is
// just a CRC) that claims the next seq is taken for a frame of the current
// pass when the new frames end exactly where it begins; its payload does
// not parse, and after a crash the store refuses to open (ErrCorrupt)
// although its journal holds nothing but acknowledged entries and a
// stale frame. Recovery cannot tell a stale frame from a current one by
// anything the writer of the stale bytes could not forge (no pass marker
// that is not in the entry text: the salt is per open, the seq predictable).
// A frame header needs NUL bytes, which the audit package's Recorder
// replaces in every field it bounds, so the node's own callers cannot plant
// one; an encrypted store's stale bytes are ciphertext, which cannot be
// planted at all.
func TestHostileJournalPlantedStaleFrame(t *testing.T) {
	skipInHelper(t)
	dir := t.TempDir()
	run := crashHostile(t, "hostile-plant", dir, nil)
	if len(run.acks) != 2 || !run.ready {
		t.Fatalf("premise: %d acknowledged, ready %v", len(run.acks), run.ready)
	}
	checkAcked(t, Options{Dir: dir}, run.acks, true)
}

// rawAuditHead is the head the store has committed (what a crash would
// leave in Badger), read without moving the journal.
func rawAuditHead(t *testing.T, db *DB) auditHead {
	t.Helper()
	var h auditHead
	if err := db.raw.View(func(txn *badger.Txn) error {
		var err error
		h, err = readAuditHead(txn)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return h
}

// crashNow checks what a kill at this instant would leave: recovery reads
// from the journal exactly the acknowledged entries the store has not
// committed, each with its hash, chaining on from the committed head.
func crashNow(t *testing.T, db *DB, where string, dir string, key []byte, committed auditHead, acked map[uint64][32]byte, ackedHead uint64) {
	t.Helper()
	var headVal []byte
	if committed.Seq > 0 {
		if err := db.raw.View(func(txn *badger.Txn) error {
			item, err := txn.Get(auditKey(committed.Seq))
			if err == nil {
				headVal, err = item.ValueCopy(nil)
			}
			return err
		}); err != nil {
			t.Errorf("%s: the committed head's entry: %v", where, err)
			return
		}
	}
	items, err := readJournal(dir, key, committed, headVal)
	if err != nil {
		t.Errorf("%s: recovery would refuse the store: %v", where, err)
		return
	}
	if want := ackedHead - committed.Seq; uint64(len(items)) < want {
		t.Errorf("%s: recovery would read %d entries after the committed head %d, %d acknowledged ones are only in the journal",
			where, len(items), committed.Seq, want)
		return
	}
	for _, it := range items {
		if h, ok := acked[it.seq]; ok && h != it.hash {
			t.Errorf("%s: recovery would read entry %d with another hash", where, it.seq)
			return
		}
	}
}

// TestHostileJournalCrashAtEveryMoveAndAck (held): after every
// acknowledgement and inside every transaction of every move (a group
// larger than a quarter of the journal, a journal full in the middle of a
// group, rewinds with stale frames behind the new tail, reopens with a new
// salt over the frames of the last open, deferred appends with a settle),
// recovery at that instant would read every acknowledged entry the store
// has not committed, chained on from what it has.
func TestHostileJournalCrashAtEveryMoveAndAck(t *testing.T) {
	skipInHelper(t)
	defer func(d time.Duration) { auditMoveIdle, moveCommitted = d, nil }(auditMoveIdle)
	auditMoveIdle = time.Hour
	for _, key := range [][]byte{nil, testKey(8)} {
		t.Run(fmt.Sprintf("encrypted=%v", key != nil), func(t *testing.T) {
			dir := t.TempDir()
			acked := map[uint64][32]byte{} // appender and test goroutine: under mu
			var mu sync.Mutex
			var inMove, midGroup atomic.Int64
			var groupEnd atomic.Uint64 // the last seq of the group being appended (0: none)
			var db *DB
			open := func() {
				moveCommitted = nil
				var err error
				db, err = Open(Options{Dir: dir, EncryptionKey: key, GCInterval: -1})
				if err != nil {
					t.Fatal(err)
				}
				l := db.audit
				// Runs in the appender, after each transaction of a move:
				// l.pending is what is acknowledged (or being written) and
				// not committed.
				moveCommitted = func(through uint64) {
					inMove.Add(1)
					l.mu.Lock()
					if l.headSeq < groupEnd.Load() {
						midGroup.Add(1) // a move the full journal forced part way through a group
					}
					l.mu.Unlock()
					mu.Lock()
					defer mu.Unlock()
					var ackedHead uint64
					for _, it := range l.pending {
						acked[it.seq] = it.hash
						ackedHead = it.seq
					}
					if ackedHead == 0 {
						ackedHead = through
					}
					var committed auditHead
					if err := db.raw.View(func(txn *badger.Txn) error {
						var err error
						committed, err = readAuditHead(txn)
						return err
					}); err != nil || committed.Seq != through {
						t.Errorf("inside a move: committed head %d (%v), the move says %d", committed.Seq, err, through)
						return
					}
					crashNow(t, db, fmt.Sprintf("inside a move, committed through %d", through), dir, key, committed, acked, ackedHead)
				}
			}
			afterAck := func(where string, out []AuditEntry) {
				t.Helper()
				mu.Lock()
				for _, e := range out {
					acked[e.Seq] = e.Hash
				}
				mu.Unlock()
				seq, _ := db.Audit().Head()
				crashNow(t, db, where, dir, key, rawAuditHead(t, db), acked, seq)
			}
			sized := func(n, size int) []AuditEntry {
				es := make([]AuditEntry, n)
				for i := range es {
					es[i] = lookupEntry(i)
					es[i].Reference = strings.Repeat("s", size)
				}
				return es
			}
			app := func(where string, es ...AuditEntry) {
				t.Helper()
				seq, _ := db.Audit().Head()
				groupEnd.Store(seq + uint64(len(es)))
				out, err := db.Audit().Append(es...)
				groupEnd.Store(0)
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				afterAck(where, out)
			}
			open()
			for i := range 20 {
				app(fmt.Sprintf("small append %d", i), sized(1, 10)...)
			}
			// A group of 2.4 MB: several frames, flushed a quarter of the
			// journal at a time, then moved (more than 512 entries).
			app("a group larger than a quarter", sized(2000, 1200)...)
			for i := range 5 {
				app(fmt.Sprintf("after the rewind %d", i), sized(1, 10+i)...)
			}
			// Groups larger than the journal: it fills part way through
			// each (moves inside a group), after small frames.
			for i := range 2 {
				app(fmt.Sprintf("small before filling group %d", i), sized(1, 10)...)
				app(fmt.Sprintf("filling group %d", i), sized(3500, 1300)...)
			}
			// Deferred appends waiting while a settle comes.
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, err := db.Audit().AppendDeferred(sized(1, 20+i)...)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for _, e := range out {
						acked[e.Seq] = e.Hash
					}
					mu.Unlock()
				}()
			}
			if err := db.Audit().Verify(); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			app("after deferred and a settle", sized(1, 5)...)
			moveCommitted = nil
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			// Reopen: a new salt over the last open's frames.
			open()
			for i := range 5 {
				app(fmt.Sprintf("reopened %d", i), sized(1, 10)...)
			}
			moveCommitted = nil
			if inMove.Load() < 6 || midGroup.Load() < 2 {
				t.Fatalf("premise: %d move transactions looked at, %d inside a group", inMove.Load(), midGroup.Load())
			}
			t.Logf("%d move transactions looked at, %d of them inside a group", inMove.Load(), midGroup.Load())
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// journalSeals lists the frames of dir's journal that check (walking from
// offset 0 while the checksum holds): salt and first seq → SHA-256 of the
// sealed payload.
func journalSeals(t *testing.T, dir string, into map[[24]byte][32]byte, salts map[[16]byte]bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off+frameHeader <= int64(len(b)); {
		n := int64(binary.LittleEndian.Uint32(b[off:]))
		if n < bodyHeader || off+frameHeader+n > int64(len(b)) {
			return
		}
		body := b[off+frameHeader : off+frameHeader+n]
		if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(b[off+4:]) {
			return
		}
		var id [24]byte
		copy(id[:], body[:bodyHeader])
		sum := sha256.Sum256(body[bodyHeader:])
		if prev, ok := into[id]; ok && prev != sum {
			t.Fatalf("nonce reused: salt %x, first seq %d sealed two different payloads", id[:16], binary.BigEndian.Uint64(id[16:]))
		}
		into[id] = sum
		var salt [16]byte
		copy(salt[:], body[:16])
		salts[salt] = true
		off += frameHeader + n
	}
}

// TestHostileJournalNonces (held): under one store key, no salt and first
// seq (the GCM key and nonce) ever seal two different payloads: across
// rewinds of a small journal, a full journal, reopens, and a restore from
// a backup into a new store under the same key; every open has its own
// salt; and the journal never shows entry text.
func TestHostileJournalNonces(t *testing.T) {
	skipInHelper(t)
	defer func(d time.Duration, n int64) { auditMoveIdle, journalSize = d, n }(auditMoveIdle, journalSize)
	auditMoveIdle, journalSize = time.Hour, 32<<10
	key := testKey(2)
	seals := map[[24]byte][32]byte{}
	salts := map[[16]byte]bool{}
	opens := 0
	run := func(dir string, rounds int) *DB {
		db, err := Open(Options{Dir: dir, EncryptionKey: key, GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		opens++
		for i := range rounds {
			n := 1 + i%7
			es := make([]AuditEntry, n)
			for k := range es {
				es[k] = lookupEntry(i + k)
			}
			if _, err := db.Audit().Append(es...); err != nil {
				t.Fatal(err)
			}
			journalSeals(t, dir, seals, salts)
			if i%40 == 39 {
				if err := db.Audit().Verify(); err != nil { // a rewind
					t.Fatal(err)
				}
			}
		}
		b, err := os.ReadFile(filepath.Join(dir, journalName))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("recruitment")) || bytes.Contains(b, []byte(pseudonym(1)[:16])) {
			t.Fatal("the encrypted journal shows entry text")
		}
		return db
	}
	dir := t.TempDir()
	for range 3 {
		db := run(dir, 120)
		if db.audit.moves.Load() < 3 {
			t.Fatalf("premise: %d moves", db.audit.moves.Load())
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db, err := Open(Options{Dir: dir, EncryptionKey: key, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := db.WriteBackup(context.Background(), &buf, BackupOptions{Key: key, Federation: "demo", Region: "tianjin/heping"}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	restored := filepath.Join(t.TempDir(), "db")
	if _, err := Restore(RestoreOptions{From: bytes.NewReader(buf.Bytes()), Dir: restored, Key: key, Federation: "demo", Region: "tianjin/heping"}); err != nil {
		t.Fatal(err)
	}
	opens++ // the restore's own open (it appends nothing)
	db = run(restored, 60)
	if err := db.Audit().Verify(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if len(salts) != 4 {
		t.Fatalf("%d salts in frames written by 4 opens that appended", len(salts))
	}
	t.Logf("%d distinct (salt, seq) seals seen over %d opens", len(seals), opens)
}

// TestHostileJournalConcurrentReadersAndClose (held): appends and
// deferred appends from many goroutines, readers of every kind at the same
// time (each must see every entry acknowledged before it started), and a
// Close while settles wait: no deadlock, every call answered or ErrClosed,
// and after a reopen exactly the acknowledged entries.
func TestHostileJournalConcurrentReadersAndClose(t *testing.T) {
	skipInHelper(t)
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		acks   = journalAcks{}
		maxAck atomic.Uint64
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	ack := func(out []AuditEntry) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range out {
			acks[e.Seq] = hex.EncodeToString(e.Hash[:])
			for {
				m := maxAck.Load()
				if e.Seq <= m || maxAck.CompareAndSwap(m, e.Seq) {
					break
				}
			}
		}
	}
	closedOK := func(err error) bool { return errors.Is(err, ErrClosed) }
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				e := lookupEntry(w*1000 + i)
				var out []AuditEntry
				var err error
				if (w+i)%2 == 0 {
					out, err = db.Audit().AppendDeferred(e)
				} else {
					out, err = db.Audit().Append(e, lookupEntry(i))
				}
				if err != nil {
					if !closedOK(err) {
						t.Errorf("append: %v", err)
					}
					return
				}
				ack(out)
			}
		}()
	}
	var reads atomic.Int64
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				want := maxAck.Load()
				var seen uint64
				var err error
				switch (r + i) % 5 {
				case 0:
					err = db.Audit().Range(want, 0, func(e AuditEntry) error { seen = max(seen, e.Seq); return nil })
				case 1:
					var page []AuditEntry
					page, _, err = db.Audit().Page(AuditFilter{}, want-min(want, 1), 5)
					for _, e := range page {
						seen = max(seen, e.Seq)
					}
				case 2:
					if err = db.Audit().Verify(); err == nil {
						if db.enter() != nil {
							return
						}
						err = db.raw.View(func(txn *badger.Txn) error {
							h, err := readAuditHead(txn)
							seen = h.Seq
							return err
						})
						db.leave()
					}
				case 3:
					var sum BackupSummary
					sum, err = db.WriteBackup(context.Background(), &bytes.Buffer{}, BackupOptions{Key: testKey(1), Region: "r"})
					seen = sum.Trailer.AuditSeq
				case 4:
					raw := db.Badger()
					if db.enter() != nil {
						return
					}
					err = raw.View(func(txn *badger.Txn) error {
						if _, err := txn.Get(auditKey(want)); err == nil || want == 0 {
							seen = want
						}
						return nil
					})
					db.leave()
				}
				if err != nil {
					if !closedOK(err) {
						t.Errorf("reader %d: %v", (r+i)%5, err)
					}
					return
				}
				if seen < want {
					t.Errorf("reader %d saw up to %d, %d was acknowledged before it started", (r+i)%5, seen, want)
					return
				}
				reads.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for (maxAck.Load() < 3000 || reads.Load() < 300) && time.Now().Before(deadline) && !t.Failed() {
		runtime.Gosched()
	}
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while readers and appends were in flight")
	}
	stop.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a call did not return after Close")
	}
	if maxAck.Load() < 50 || reads.Load() < 10 {
		t.Fatalf("premise: %d appended, %d reads", maxAck.Load(), reads.Load())
	}
	t.Logf("%d entries acknowledged, %d reads checked, Close in the middle", maxAck.Load(), reads.Load())
	checkAcked(t, Options{Dir: dir}, acks, true)
}

// TestHostileJournalWriteFailure (held): a journal write that fails
// (the file is replaced by a descriptor that cannot be written) refuses
// that append and every later one, every reader says so instead of
// answering without the journaled entries, and after a restart every entry
// acknowledged before the failure is there, nothing else.
func TestHostileJournalWriteFailure(t *testing.T) {
	skipInHelper(t)
	defer func(d time.Duration) { auditMoveIdle = d }(auditMoveIdle)
	auditMoveIdle = time.Hour
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	acks := journalAcks{}
	for i := range 5 {
		out, err := db.Audit().Append(lookupEntry(i))
		if err != nil {
			t.Fatal(err)
		}
		acks[out[0].Seq] = hex.EncodeToString(out[0].Hash[:])
	}
	ro, err := os.Open(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	// The appender is idle (nothing waits; the next request is sent after
	// this): it owns j, and the channel send orders this write before it.
	rw := db.audit.j.f
	db.audit.j.f = ro
	defer rw.Close()
	if _, err := db.Audit().Append(lookupEntry(10)); err == nil {
		t.Fatal("an append whose journal write failed was acknowledged")
	}
	if _, err := db.Audit().AppendDeferred(lookupEntry(11)); err == nil {
		t.Fatal("an append after a failed journal write was acknowledged")
	}
	if err := db.Audit().Range(1, 0, func(AuditEntry) error { return nil }); err == nil {
		t.Fatal("Range answered without the journaled entries")
	}
	if _, err := db.WriteBackup(context.Background(), &bytes.Buffer{}, BackupOptions{Key: testKey(1), Region: "r"}); err == nil {
		t.Fatal("a backup was written without the journaled entries")
	}
	if seq, _ := db.Audit().Head(); seq != 5 {
		t.Fatalf("head %d after 5 acknowledged", seq)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	checkAcked(t, Options{Dir: dir}, acks, true)
}

// TestHostileJournalReadOnly (held): opening the audit log read-only while
// the node runs is refused and leaves the journal alone; after a clean
// stop it opens, shows every entry, and writes nothing to the journal;
// a journal whose frame no longer authenticates is refused read-only too.
func TestHostileJournalReadOnly(t *testing.T) {
	skipInHelper(t)
	defer func(d time.Duration) { auditMoveIdle = d }(auditMoveIdle)
	auditMoveIdle = time.Hour
	key := testKey(9)
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, EncryptionKey: key, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, db.Audit(), 7)
	before, _ := os.ReadFile(filepath.Join(dir, journalName))
	if _, err := OpenAuditReadOnly(Options{Dir: dir, EncryptionKey: key}); !errors.Is(err, ErrStoreInUse) {
		t.Fatalf("read-only while running: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, journalName))
	if !bytes.Equal(before, after) {
		t.Fatal("a refused read-only open changed the journal")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	closed, _ := os.ReadFile(filepath.Join(dir, journalName))
	if !bytes.Equal(closed[:frameHeader], make([]byte, frameHeader)) {
		t.Fatal("a clean stop left frames in the journal")
	}
	checkReadOnly(t, Options{Dir: dir, EncryptionKey: key}, 7)
	if now, _ := os.ReadFile(filepath.Join(dir, journalName)); !bytes.Equal(now, closed) {
		t.Fatal("a read-only open wrote the journal")
	}
	// The clean stop emptied the journal; its frames as they were while
	// the node ran, one of them changed.
	rewriteJournal(t, dir, func(b []byte) {
		copy(b, before)
		n := int64(binary.LittleEndian.Uint32(b))
		b[frameHeader+bodyHeader+3] ^= 1
		binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[frameHeader:frameHeader+n], crcTable))
	})
	if _, err := OpenAuditReadOnly(Options{Dir: dir, EncryptionKey: key}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read-only with a frame that does not authenticate: %v", err)
	}
}
