package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

func pseudonym(n int) string {
	h := sha256.Sum256([]byte(fmt.Sprint(n)))
	return hex.EncodeToString(h[:])
}

func lookupEntry(n int) AuditEntry {
	return AuditEntry{
		Node:        "tianjin/heping",
		Caller:      "spiffe://demo/coordinator/tianjin/city-credit-office",
		Role:        "coordinator",
		Institution: "city-credit-office",
		User:        "u-17",
		Operation:   "lookup",
		Purpose:     "recruitment",
		Reference:   fmt.Sprintf("case-%d", n),
		Subject:     pseudonym(n % 3),
		District:    "tianjin/heping",
		Records:     []string{"A1", "A2"},
		Decision:    DecisionAllowed,
	}
}

func appendN(t testing.TB, l *AuditLog, n int) []AuditEntry {
	t.Helper()
	es := make([]AuditEntry, n)
	for i := range es {
		es[i] = lookupEntry(i)
	}
	out, err := l.Append(es...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAuditAppendChain(t *testing.T) {
	db := openTest(t, Options{})
	l := db.Audit()
	if seq, h := l.Head(); seq != 0 || h != ([32]byte{}) {
		t.Fatalf("empty head = %d %x", seq, h)
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.FixedZone("CST", 8*3600))
	e := lookupEntry(0)
	e.At = at
	out, err := l.Append(e, lookupEntry(1))
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Seq != 1 || out[1].Seq != 2 || out[0].Prev != ([32]byte{}) || out[1].Prev != out[0].Hash {
		t.Fatalf("chain: %+v", out)
	}
	if !out[0].At.Equal(at) || out[0].At.Location() != time.UTC || out[1].At.IsZero() {
		t.Fatalf("At = %v, %v", out[0].At, out[1].At)
	}
	// The hash is SHA-256(prev || deterministic CBOR without the hash).
	plain := out[1]
	plain.Hash = [32]byte{}
	b, _ := encMode.Marshal(&plain)
	if want := sha256.Sum256(append(out[1].Prev[:], b...)); want != out[1].Hash {
		t.Fatalf("hash %x, want %x", out[1].Hash, want)
	}
	if seq, h := l.Head(); seq != 2 || h != out[1].Hash {
		t.Fatalf("head = %d %x", seq, h)
	}
	more := appendN(t, l, 10)
	if more[0].Seq != 3 || more[0].Prev != out[1].Hash {
		t.Fatalf("second append: %+v", more[0])
	}
	var seen []uint64
	if err := l.Range(4, 6, func(e AuditEntry) error { seen = append(seen, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[4 5 6]" {
		t.Fatalf("Range(4, 6) = %v", seen)
	}
	stop := errors.New("stop")
	n := 0
	if err := l.Range(1, 0, func(AuditEntry) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("Range stop: %v after %d", err, n)
	}
	n = 0
	l.Range(0, 0, func(AuditEntry) error { n++; return nil })
	if n != 12 {
		t.Fatalf("Range(0, 0) saw %d entries", n)
	}
	bySubj, err := l.BySubject(pseudonym(1))
	if err != nil {
		t.Fatal(err)
	}
	// Entry 2 (lookupEntry(1)) and entries made from lookupEntry(1), (4), (7).
	if len(bySubj) != 4 || bySubj[0].Seq != 2 || bySubj[0].Reference != "case-1" {
		t.Fatalf("BySubject = %d entries, first %+v", len(bySubj), bySubj[0])
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestAuditRefusesRawIdentifiers(t *testing.T) {
	db := openTest(t, Options{InMemory: true})
	l := db.Audit()
	for _, subj := range []string{testSubject(1), "91350100M000100Y43", strings.ToUpper(pseudonym(1)), pseudonym(1)[:31]} {
		e := lookupEntry(1)
		e.Subject = subj
		_, err := l.Append(e)
		if !errors.Is(err, ErrNotPseudonym) {
			t.Errorf("subject %q: err = %v, want ErrNotPseudonym", subj, err)
		}
		if err != nil && strings.Contains(err.Error(), subj) {
			t.Errorf("error repeats the subject: %v", err)
		}
		if _, err := l.BySubject(subj); !errors.Is(err, ErrNotPseudonym) {
			t.Errorf("BySubject(%q): err = %v", subj, err)
		}
	}
	bad := []func(*AuditEntry){
		func(e *AuditEntry) { e.Seq = 5 },
		func(e *AuditEntry) { e.Hash[0] = 1 },
		func(e *AuditEntry) { e.Operation = "" },
		func(e *AuditEntry) { e.Decision = "maybe" },
		func(e *AuditEntry) { e.Records = make([]string, maxAuditRecords+1) },
		func(e *AuditEntry) { e.Reason = strings.Repeat("r", 2<<20) },
	}
	for i, f := range bad {
		e := lookupEntry(1)
		f(&e)
		if _, err := l.Append(lookupEntry(2), e); !errors.Is(err, ErrAuditEntry) {
			t.Errorf("case %d: err = %v, want ErrAuditEntry", i, err)
		}
	}
	if seq, _ := l.Head(); seq != 0 {
		t.Fatalf("refused appends wrote %d entries", seq)
	}
}

func TestAuditConcurrentAppends(t *testing.T) {
	db := openTest(t, Options{})
	l := db.Audit()
	const workers, each = 32, 10
	var wg sync.WaitGroup
	seqs := make(chan uint64, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				out, err := l.Append(lookupEntry(w*each + i))
				if err != nil {
					t.Error(err)
					return
				}
				seqs <- out[0].Seq
			}
		}()
	}
	wg.Wait()
	close(seqs)
	got := map[uint64]bool{}
	for s := range seqs {
		if got[s] {
			t.Fatalf("seq %d handed out twice", s)
		}
		got[s] = true
	}
	for s := uint64(1); s <= workers*each; s++ {
		if !got[s] {
			t.Fatalf("seq %d missing", s)
		}
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestAuditSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	first := appendN(t, db.Audit(), 3)
	db.Close()
	db = openTest(t, Options{Dir: dir})
	if seq, h := db.Audit().Head(); seq != 3 || h != first[2].Hash {
		t.Fatalf("head after reopen = %d %x", seq, h)
	}
	next := appendN(t, db.Audit(), 1)
	if next[0].Seq != 4 || next[0].Prev != first[2].Hash {
		t.Fatalf("chain broken across reopen: %+v", next[0])
	}
	if err := db.Audit().Verify(); err != nil {
		t.Fatal(err)
	}
}

// rawGet and rawSet reach into Badger directly, as an attacker with the
// data directory (and the key) could.
func rawGet(t *testing.T, db *DB, key []byte) []byte {
	t.Helper()
	var v []byte
	err := db.Badger().View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func rawUpdate(t *testing.T, db *DB, fn func(txn *badger.Txn) error) {
	t.Helper()
	if err := db.Badger().Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestAuditVerifyFindsTampering(t *testing.T) {
	cases := []struct {
		name    string
		tamper  func(t *testing.T, db *DB)
		seq     uint64
		problem string
	}{
		{"changed", func(t *testing.T, db *DB) {
			e, _ := decodeAudit(rawGet(t, db, auditKey(5)))
			e.Purpose = "curiosity"
			b, _ := encMode.Marshal(&e)
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(auditKey(5), b) })
		}, 5, "entry changed"},
		{"changed with its hash recomputed", func(t *testing.T, db *DB) {
			e, _ := decodeAudit(rawGet(t, db, auditKey(5)))
			e.Records = nil
			e.Hash = [32]byte{}
			e.Hash, _ = auditHash(&e)
			b, _ := encMode.Marshal(&e)
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(auditKey(5), b) })
		}, 6, "prev does not match the hash of entry 5"},
		{"bytes altered", func(t *testing.T, db *DB) {
			v := rawGet(t, db, auditKey(5))
			i := strings.Index(string(v), "recruitment")
			v[i] = 'R'
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(auditKey(5), v) })
		}, 5, "entry changed"},
		{"removed", func(t *testing.T, db *DB) {
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Delete(auditKey(5)) })
		}, 5, "entry missing"},
		{"removed and renumbered", func(t *testing.T, db *DB) {
			// Entries 6..10 moved down one place, seq fields rewritten.
			rawUpdate(t, db, func(txn *badger.Txn) error {
				for s := uint64(5); s < 10; s++ {
					e, _ := decodeAudit(rawGet(t, db, auditKey(s+1)))
					e.Seq = s
					b, _ := encMode.Marshal(&e)
					if err := txn.Set(auditKey(s), b); err != nil {
						return err
					}
				}
				return txn.Delete(auditKey(10))
			})
		}, 5, "an entry before this one was removed"},
		{"reordered", func(t *testing.T, db *DB) {
			a, b := rawGet(t, db, auditKey(5)), rawGet(t, db, auditKey(6))
			rawUpdate(t, db, func(txn *badger.Txn) error {
				if err := txn.Set(auditKey(5), b); err != nil {
					return err
				}
				return txn.Set(auditKey(6), a)
			})
		}, 5, "reordered"},
		{"tail removed, head kept", func(t *testing.T, db *DB) {
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Delete(auditKey(10)) })
		}, 10, "missing at the end"},
		{"entry appended outside the log", func(t *testing.T, db *DB) {
			e, _ := decodeAudit(rawGet(t, db, auditKey(10)))
			e.Prev, e.Seq, e.Hash = e.Hash, 11, [32]byte{}
			e.Hash, _ = auditHash(&e)
			b, _ := encMode.Marshal(&e)
			rawUpdate(t, db, func(txn *badger.Txn) error { return txn.Set(auditKey(11), b) })
		}, 11, "after the head"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTest(t, Options{})
			appendN(t, db.Audit(), 10)
			if err := db.Audit().Verify(); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			c.tamper(t, db)
			err := db.Audit().Verify()
			var te *AuditTamperError
			if !errors.As(err, &te) || !errors.Is(err, ErrAuditTampered) {
				t.Fatalf("Verify = %v, want *AuditTamperError", err)
			}
			if te.Seq != c.seq || !strings.Contains(te.Problem, c.problem) {
				t.Fatalf("Verify = seq %d %q, want seq %d containing %q", te.Seq, te.Problem, c.seq, c.problem)
			}
		})
	}
}

// TestAuditSizeBoundIsAnUpperBound: Append decides most entries fit by
// auditSizeBound without encoding them, so the bound must never be below
// the real encoding, whatever the fields hold (every field set, long and
// multi-byte strings, many records, a chained entry's seq, prev and hash).
func TestAuditSizeBoundIsAnUpperBound(t *testing.T) {
	if n := reflect.TypeOf(AuditEntry{}).NumField(); n != 23 {
		t.Fatalf("AuditEntry has %d fields; auditSizeBound counts 23: update it", n)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		b := make([]rune, rng.IntN(300))
		for i := range b {
			b[i] = []rune{'a', 'é', '信', '🙂'}[rng.IntN(4)]
		}
		return string(b)
	}
	list := func() []string {
		l := make([]string, rng.IntN(40))
		for i := range l {
			l[i] = str()
		}
		return l
	}
	for i := 0; i < 500; i++ {
		e := AuditEntry{At: time.Date(rng.IntN(10000), time.Month(1+rng.IntN(12)), 1+rng.IntN(28), rng.IntN(24), 59, 59, rng.IntN(1e9), time.UTC),
			Node: str(), Caller: str(), Role: str(), Institution: str(), User: str(), Operation: str(), Purpose: str(),
			Reference: str(), Authorization: str(), Authentication: str(), Subject: str(), District: str(),
			Records: list(), Decision: str(), Reason: str(), Pseudonyms: list(), Count: rng.Int(), LookupID: str(),
			Requester: str(), Seq: rng.Uint64()}
		for j := range e.Prev {
			e.Prev[j], e.Hash[j] = byte(rng.IntN(256)), byte(rng.IntN(256))
		}
		b, err := encMode.Marshal(&e)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if bound := auditSizeBound(&e); bound < int64(len(b)) {
			t.Fatalf("entry %d: bound %d < encoding %d", i, bound, len(b))
		}
	}
}

// TestAuditAppendRefusesAnEntryJustOverTheBudget: the estimate lets the
// common entry through without encoding; one whose encoding is just over
// the budget is still refused, one just under it still accepted.
func TestAuditAppendRefusesAnEntryJustOverTheBudget(t *testing.T) {
	db := openTest(t, Options{InMemory: true})
	l := db.Audit()
	e := lookupEntry(1)
	e.At = time.Date(2026, 5, 1, 10, 11, 12, 123456789, time.UTC)
	b, err := encMode.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	base := int64(len(b))
	db.budgetBytes = base + 256 + 100     // the entry plus 100 bytes of reason fit, the bound of it does not
	e.Reason = strings.Repeat("r", 100-3) // key, two-byte head, 97 bytes
	if _, err := l.Append(e); err != nil {
		t.Fatalf("an entry within the budget: %v", err)
	}
	e.Reason = strings.Repeat("r", 98)
	if _, err := l.Append(e); !errors.Is(err, ErrAuditEntry) {
		t.Fatalf("an entry over the budget: err = %v, want ErrAuditEntry", err)
	}
	if seq, _ := l.Head(); seq != 1 {
		t.Fatalf("head at %d, want 1 (only the entry within the budget)", seq)
	}
}
