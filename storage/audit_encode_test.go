package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
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

// TestAuditChainEncodesOnceAsMarshalTwice: the hash and the stored value
// the appender derives from one encoding (auditChain, spliceAuditHash) are
// byte for byte those of hashing encMode.Marshal of the entry without Hash
// and storing encMode.Marshal of the entry with it, for varied entries; the
// splice itself (not the fallback to a second encoding) gives them.
func TestAuditChainEncodesOnceAsMarshalTwice(t *testing.T) {
	if n := reflect.TypeOf(AuditEntry{}).NumField(); n != 23 {
		t.Fatalf("AuditEntry has %d fields; the generator fills 23: update it", n)
	}
	g := auditTestGen{rand.New(rand.NewPCG(7, 11))}
	var empty, filled [23]int
	lens := map[int]bool{}
	entries := 3000
	if testing.Short() {
		entries = 500
	}
	full := g.entry()
	v := reflect.ValueOf(&full).Elem()
	for i := 0; i < 23; i++ {
		if v.Field(i).IsZero() && v.Type().Field(i).Name != "Hash" {
			switch f := v.Field(i); f.Kind() {
			case reflect.String:
				f.SetString(strings.Repeat("x", 24))
			case reflect.Slice:
				f.Set(reflect.ValueOf([]string{g.hex()}))
			}
		}
	}
	full.At, full.Count, full.Seq, full.Prev[0] = time.Now(), 24, 24, 1
	cases := []AuditEntry{{}, {Operation: "lookup", Decision: DecisionAllowed}, full}
	var scratch bytes.Buffer
	for i := 0; i < entries+len(cases); i++ {
		var e AuditEntry
		if i < len(cases) {
			e = cases[i]
		} else {
			e = g.entry()
		}
		v := reflect.ValueOf(e)
		for f := 0; f < v.NumField(); f++ {
			if v.Field(f).IsZero() {
				empty[f]++
			} else {
				filled[f]++
			}
		}
		for _, s := range []string{e.Node, e.Operation, e.Reason, e.Requester} {
			lens[len(s)] = true
		}
		wantHash, wantVal := wantChained(t, e)
		if got, err := auditHash(&e); err != nil || got != wantHash {
			t.Fatalf("entry %d: auditHash changed: %x, %v", i, got, err)
		}

		enc, err := encMode.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		dst := make([]byte, len(enc)+auditHashPairLen)
		if !spliceAuditHash(dst, enc, &e.Prev, &wantHash) {
			t.Fatalf("entry %d: the splice refused the encoder's own encoding", i)
		}
		if !bytes.Equal(dst, wantVal) {
			t.Fatalf("entry %d: spliced value differs from encMode.Marshal:\n got %x\nwant %x", i, dst, wantVal)
		}

		c := e
		val, key, skey, err := auditChain(&c, &scratch, 10, 7)
		switch {
		case err != nil:
			t.Fatalf("entry %d: %v", i, err)
		case c.Hash != wantHash:
			t.Fatalf("entry %d: hash %x, want %x", i, c.Hash, wantHash)
		case !bytes.Equal(val, wantVal):
			t.Fatalf("entry %d: value differs from encMode.Marshal", i)
		case cap(val) != len(val) || len(key) != 0 || cap(key) != 10 || len(skey) != 0 || cap(skey) != 7:
			t.Fatalf("entry %d: slices of %d/%d, %d/%d, %d/%d", i, len(val), cap(val), len(key), cap(key), len(skey), cap(skey))
		}
		if scratch.Cap() > maxAuditScratch {
			t.Fatalf("entry %d: scratch kept at %d bytes", i, scratch.Cap())
		}
	}
	for f := 0; f < 23; f++ {
		name := reflect.TypeOf(AuditEntry{}).Field(f).Name
		if name != "Hash" && (empty[f] == 0 || filled[f] == 0) {
			t.Errorf("field %s: %d empty, %d filled: the generator does not vary it", name, empty[f], filled[f])
		}
	}
	for _, n := range append(append([]int{}, auditTestLens...), auditTestBig...) {
		if !lens[n] {
			t.Errorf("no string of %d bytes generated", n)
		}
	}
}

// TestSpliceAuditHashRefusesOtherShapes: what is not an entry without Hash
// as encMode writes it is refused (auditChain then encodes again), not
// spliced into something else.
func TestSpliceAuditHashRefusesOtherShapes(t *testing.T) {
	e := lookupEntry(1)
	e.At, e.Seq, e.LookupID = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), 9, "lk-1" // a pair after Prev
	e.Prev[0], e.Prev[31] = 0xaa, 0x55
	enc, err := encMode.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	var hash [32]byte
	hash[3] = 7
	withHash := e
	withHash.Hash = hash
	hashed, err := encMode.Marshal(&withHash)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(enc)) }
	prevAt := bytes.Index(enc, append([]byte{0x12, 0x58, 0x20}, e.Prev[:]...))
	if prevAt < 0 {
		t.Fatal("no Prev pair in the encoding")
	}
	other := e.Prev
	other[5]++
	for name, tc := range map[string]struct {
		enc  []byte
		prev [32]byte
	}{
		"empty":               {nil, e.Prev},
		"not a map":           {mod(func(b []byte) []byte { b[0] = 0x80 | b[0]&0x1f; return b }), e.Prev},
		"23 pairs":            {mod(func(b []byte) []byte { b[0] = 0xb7; return b }), e.Prev},
		"fewer pairs":         {mod(func(b []byte) []byte { b[0]--; return b }), e.Prev},
		"more pairs":          {mod(func(b []byte) []byte { b[0]++; return b }), e.Prev},
		"other prev":          {enc, other},
		"truncated":           {enc[:prevAt+20], e.Prev},
		"truncated before":    {enc[:prevAt-3], e.Prev},
		"hash already there":  {hashed, e.Prev},
		"indefinite string":   {mod(func(b []byte) []byte { b[2] = 0x7f; return b }), e.Prev},
		"keys out of order":   {mod(func(b []byte) []byte { b[1] = 0x05; return b }), e.Prev},
		"prev as an array":    {mod(func(b []byte) []byte { b[prevAt+1] = 0x98; return b }), e.Prev},
		"string past the end": {mod(func(b []byte) []byte { b[2] = 0x7b; return b }), e.Prev},
	} {
		dst := make([]byte, len(tc.enc)+auditHashPairLen)
		if spliceAuditHash(dst, tc.enc, &tc.prev, &hash) {
			t.Errorf("%s: spliced", name)
		}
	}
	dst := make([]byte, len(enc)+auditHashPairLen)
	if !spliceAuditHash(dst, enc, &e.Prev, &hash) || !bytes.Equal(dst, hashed) {
		t.Fatal("the unmodified encoding is not spliced into encMode's")
	}
	if spliceAuditHash(dst[1:], enc, &e.Prev, &hash) {
		t.Error("spliced into a buffer of the wrong size")
	}

	// The fallback: an entry whose encoding the splice refuses (its Hash
	// already set) still gets encMode's bytes for the hash it is given.
	c := withHash
	val, _, _, err := auditChain(&c, new(bytes.Buffer), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := encMode.Marshal(&c); !bytes.Equal(val, want) {
		t.Fatal("the fallback's value is not encMode.Marshal of the entry")
	}
}

// TestSkipCBOR: skipCBOR steps over one whole well-formed item of every
// major type (nested to its depth), and refuses truncated, indefinite and
// too deeply nested ones.
func TestSkipCBOR(t *testing.T) {
	for _, v := range []any{
		0, 23, 24, uint64(math.MaxUint64), -1, -25, math.MinInt64, 1.5, float32(2.5), true, nil,
		"", strings.Repeat("é", 200), []byte{1, 2, 3}, make([]byte, 70000),
		[]any{1, "a", []string{"b"}}, map[int]string{1: "a", 300: "b"},
		cbor.Tag{Number: 1 << 40, Content: "x"}, cbor.Tag{Number: 2, Content: []int{1}},
	} {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if end, ok := skipCBOR(append(b, 0xf6), 0, 2); !ok || end != len(b) {
			t.Errorf("%T: skipped to %d, %v; want %d", v, end, ok, len(b))
		}
		if len(b) > 1 {
			if _, ok := skipCBOR(b[:len(b)-1], 0, 2); ok {
				t.Errorf("%T: truncated item skipped", v)
			}
		}
	}
	deep, _ := cbor.Marshal([]any{[]any{[]any{1}}})
	if _, ok := skipCBOR(deep, 0, 2); ok {
		t.Error("an item nested 3 deep skipped at depth 2")
	}
	for _, b := range [][]byte{{0x5f, 0xff}, {0x9f, 0xff}, {0x1c}, {0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		if _, ok := skipCBOR(b, 0, 2); ok {
			t.Errorf("% x skipped", b)
		}
	}
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

// BenchmarkAuditChain: the appender's CPU per entry for its hash and value,
// without the store: encoded twice as before (auditHash, then
// encMode.Marshal with Hash set) and once (auditChain), for a lookup entry.
func BenchmarkAuditChain(b *testing.B) {
	base := benchAuditEntry(1)
	base.At, base.Seq = time.Now().UTC(), 123456
	base.Prev[0] = 1
	b.Run("twice", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e := base
			h, err := auditHash(&e)
			if err != nil {
				b.Fatal(err)
			}
			e.Hash = h
			if _, err := encMode.Marshal(&e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("once", func(b *testing.B) {
		var scratch bytes.Buffer
		b.ReportAllocs()
		for b.Loop() {
			e := base
			if _, _, _, err := auditChain(&e, &scratch, 10, len(e.Subject)+11); err != nil {
				b.Fatal(err)
			}
		}
	})
}
