package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// auditTestGen makes varied audit entries: every field empty or filled,
// strings whose byte lengths sit on both sides of the CBOR length-head
// boundaries (23/24, 255/256, 65535/65536), ASCII and multi-byte, record
// and pseudonym lists of such lengths, counts and sequence numbers on the
// integer-head boundaries (and negative counts), times of any year, with
// and without nanoseconds, in UTC and in other zones.
type auditTestGen struct{ rng *rand.Rand }

var (
	auditTestLens = []int{0, 1, 22, 23, 24, 25, 254, 255, 256, 257}
	auditTestBig  = []int{65534, 65535, 65536, 65537}
	auditTestInts = []uint64{0, 1, 23, 24, 25, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64}
)

func (g auditTestGen) length() int {
	switch r := g.rng.IntN(100); {
	case r < 2:
		return auditTestBig[g.rng.IntN(len(auditTestBig))]
	case r < 60:
		return auditTestLens[g.rng.IntN(len(auditTestLens))]
	default:
		return g.rng.IntN(300)
	}
}

// str returns a string of exactly n bytes, multi-byte runes in some.
func (g auditTestGen) str(n int) string {
	var b strings.Builder
	multi := g.rng.IntN(2) == 0
	for b.Len() < n {
		r := rune('a' + g.rng.IntN(26))
		if multi && n-b.Len() >= 4 {
			r = []rune{'a', 'é', '信', '🙂', 'Z', '\x00', '\x12'}[g.rng.IntN(7)]
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (g auditTestGen) maybe(s func() string) string {
	if g.rng.IntN(3) == 0 {
		return ""
	}
	return s()
}

func (g auditTestGen) text() string { return g.maybe(func() string { return g.str(g.length()) }) }

func (g auditTestGen) list(elem func() string) []string {
	if g.rng.IntN(3) == 0 {
		return nil
	}
	n := []int{1, 2, 3, 23, 24, 25}[g.rng.IntN(6)]
	if g.rng.IntN(40) == 0 {
		n = []int{255, 256}[g.rng.IntN(2)]
	}
	l := make([]string, n)
	for i := range l {
		l[i] = elem()
	}
	return l
}

func (g auditTestGen) hex() string {
	b := make([]byte, 16+g.rng.IntN(49)) // 32 to 128 digits
	for i := range b {
		b[i] = byte(g.rng.IntN(256))
	}
	return hex.EncodeToString(b)
}

func (g auditTestGen) count() int {
	switch g.rng.IntN(4) {
	case 0:
		return 0
	case 1:
		v := int(auditTestInts[g.rng.IntN(len(auditTestInts)-1)]) // all but MaxUint64
		if g.rng.IntN(2) == 0 {
			return -v - 1 // negative heads: -1, -24, -25, -256, ...
		}
		return v
	case 2:
		return []int{math.MaxInt64, math.MinInt64, -1}[g.rng.IntN(3)]
	}
	return g.rng.Int()
}

func (g auditTestGen) at() time.Time {
	if g.rng.IntN(20) == 0 {
		return time.Time{} // encoded as null
	}
	ns := 0
	if g.rng.IntN(2) == 0 {
		ns = g.rng.IntN(1e9)
	}
	loc := time.UTC
	if g.rng.IntN(4) == 0 {
		loc = time.FixedZone("", (g.rng.IntN(27)-12)*3600+g.rng.IntN(2)*1800)
	}
	return time.Date(g.rng.IntN(10000), time.Month(1+g.rng.IntN(12)), 1+g.rng.IntN(28), g.rng.IntN(24), g.rng.IntN(60), g.rng.IntN(60), ns, loc)
}

func (g auditTestGen) prev() [32]byte {
	var p [32]byte
	switch g.rng.IntN(4) {
	case 0: // zero, as for entry 1
	case 1: // bytes that look like the Prev and Hash pairs' heads
		for i := range p {
			p[i] = []byte{0x12, 0x13, 0x58, 0x20, 0xa0, 0xb7}[g.rng.IntN(6)]
		}
	default:
		for i := range p {
			p[i] = byte(g.rng.IntN(256))
		}
	}
	return p
}

// entry is a chained entry as the appender has it before hashing: Seq and
// Prev set, Hash zero.
func (g auditTestGen) entry() AuditEntry {
	return AuditEntry{
		At: g.at(), Node: g.text(), Caller: g.text(), Role: g.text(), Institution: g.text(), User: g.text(),
		Operation: g.text(), Purpose: g.text(), Reference: g.text(), Authorization: g.text(),
		Authentication: g.text(), Subject: g.maybe(g.hex), District: g.text(),
		Records:  g.list(func() string { return g.str(g.length()) }),
		Decision: g.text(), Reason: g.text(), Pseudonyms: g.list(g.hex), Count: g.count(),
		LookupID: g.text(), Requester: g.text(),
		Seq: auditTestInts[g.rng.IntN(len(auditTestInts))], Prev: g.prev(),
	}
}

// wantChained is what the appender stored before it encoded each entry
// once: Hash = SHA-256(Prev || encMode.Marshal(entry without Hash)), value
// encMode.Marshal(entry with Hash).
func wantChained(t *testing.T, e AuditEntry) ([32]byte, []byte) {
	t.Helper()
	e.Hash = [32]byte{}
	enc, err := encMode.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(append(e.Prev[:len(e.Prev):len(e.Prev)], enc...))
	e.Hash = h
	val, err := encMode.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	return h, val
}

// TestAuditAppendStoresTheCanonicalEncoding: through Append, the stored
// values are encMode.Marshal of the returned entries, the subject index
// keys are auditSubjectKey's, and the chain verifies.
func TestAuditAppendStoresTheCanonicalEncoding(t *testing.T) {
	db := openTest(t, Options{}) // on disk: entries of up to a megabyte
	l := db.Audit()
	g := auditTestGen{rand.New(rand.NewPCG(3, 5))}
	var in []AuditEntry
	for i := 0; i < 200; i++ {
		e := g.entry()
		e.Seq, e.Prev, e.Count = 0, [32]byte{}, e.Count&0xffff
		e.Operation, e.Decision = "op"+e.Operation, DecisionDenied
		for j := range e.Pseudonyms {
			e.Pseudonyms[j] = pseudonym(j)
		}
		if e.Subject != "" {
			e.Subject = pseudonym(i % 4)
		}
		in = append(in, e)
	}
	var out []AuditEntry
	for len(in) > 0 { // groups of 1 to 7 entries
		n := min(len(in), 1+g.rng.IntN(7))
		got, err := l.Append(in[:n]...)
		if err != nil {
			t.Fatal(err)
		}
		out, in = append(out, got...), in[n:]
	}
	subjects := 0
	for _, e := range out {
		want, err := encMode.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		if got := rawGet(t, db, auditKey(e.Seq)); !bytes.Equal(got, want) {
			t.Fatalf("entry %d: stored value is not encMode.Marshal of the entry", e.Seq)
		}
		if e.Subject != "" {
			subjects++
			k := auditSubjectKey(e.Subject, e.Seq)
			if old := append(auditSubjectPrefix(e.Subject), be64(e.Seq)...); !bytes.Equal(k, old) {
				t.Fatalf("auditSubjectKey = %q, want %q", k, old)
			}
			if got := rawGet(t, db, k); len(got) != 0 {
				t.Fatalf("entry %d: subject index value %x", e.Seq, got)
			}
		}
	}
	if n := len(rawKeys(t, db, "A/")); n != subjects {
		t.Fatalf("%d subject index keys, want %d", n, subjects)
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
}
