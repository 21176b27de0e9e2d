package credit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// testKey is the key 00 01 02 … 1f.
func testKey() PseudonymKey {
	k := make(PseudonymKey, PseudonymKeySize)
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// Known answers, computed independently (Python's hmac module):
// HMAC-SHA256(00..1f, "credfed/pseudonym/v1\x00" || id)[:16].
func TestPseudonymKnownAnswers(t *testing.T) {
	k := testKey()
	for id, want := range map[string]string{
		"11010519491231002X": "cc3cb41ad1e400958d9935b62486b96f",
		"91350100M000100Y43": "534cd8917c7554619b75fd0ca0390f51",
	} {
		if got := k.Pseudonym(id).String(); got != want {
			t.Errorf("Pseudonym(%q) = %s, want %s", id, got, want)
		}
	}
}

func TestPseudonymProperties(t *testing.T) {
	k1 := testKey()
	k2, err := NewPseudonymKey()
	if err != nil {
		t.Fatal(err)
	}
	id := "11010519491231002X"
	if k1.Pseudonym(id) != k1.Pseudonym(id) {
		t.Error("pseudonym is not deterministic")
	}
	if k1.Pseudonym(id) == k2.Pseudonym(id) {
		t.Error("pseudonym does not depend on the key")
	}
	seen := map[Pseudonym]string{}
	for _, other := range append(append([]string{}, validPersons...), validOrgs...) {
		p := k1.Pseudonym(other)
		if prev, dup := seen[p]; dup {
			t.Errorf("%q and %q share pseudonym %s", prev, other, p)
		}
		seen[p] = other
	}
	if k1.Pseudonym(id).IsZero() {
		t.Error("pseudonym is zero")
	}
	k3, _ := NewPseudonymKey()
	if bytes.Equal(k2, k3) {
		t.Error("two new keys are equal")
	}
}

func TestPseudonymPanicsOnShortKey(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("short key did not panic")
		}
	}()
	PseudonymKey(make([]byte, 16)).Pseudonym("x")
}

func TestPseudonymText(t *testing.T) {
	p := testKey().Pseudonym("11010519491231002X")
	b, err := json.Marshal(map[string]Pseudonym{"p": p})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"p":"cc3cb41ad1e400958d9935b62486b96f"}` {
		t.Errorf("JSON = %s", b)
	}
	var back map[string]Pseudonym
	if err := json.Unmarshal(b, &back); err != nil || back["p"] != p {
		t.Errorf("round trip = %v, %v", back, err)
	}
	if q, err := ParsePseudonym(strings.ToUpper(p.String())); err != nil || q != p {
		t.Errorf("upper-case parse = %v, %v", q, err)
	}
	for _, bad := range []string{"", "cc3cb41ad1e400958d9935b62486b96", "cc3cb41ad1e400958d9935b62486b96f00", "zz3cb41ad1e400958d9935b62486b96f"} {
		if _, err := ParsePseudonym(bad); !errors.Is(err, ErrBadPseudonym) {
			t.Errorf("ParsePseudonym(%q) error = %v", bad, err)
		}
	}
}

// TestPseudonymCBOR: a pseudonym is a CBOR byte string of exactly 16
// bytes, alone or in a struct; any other length, type or encoding is
// refused with ErrBadPseudonymCBOR rather than padded or cut.
func TestPseudonymCBOR(t *testing.T) {
	p := testKey().Pseudonym("11010519491231002X")
	b, err := cbor.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte{0x50}, p[:]...); !bytes.Equal(b, want) {
		t.Fatalf("CBOR = %x, want %x", b, want)
	}
	type wrapped struct {
		P  Pseudonym   `cbor:"1,keyasint"`
		Ps []Pseudonym `cbor:"2,keyasint"`
	}
	wb, err := cbor.Marshal(wrapped{P: p, Ps: []Pseudonym{p, {}}})
	if err != nil {
		t.Fatal(err)
	}
	var back wrapped
	if err := cbor.Unmarshal(wb, &back); err != nil || back.P != p || len(back.Ps) != 2 || back.Ps[0] != p || !back.Ps[1].IsZero() {
		t.Fatalf("round trip = %+v, %v", back, err)
	}
	for name, bad := range map[string][]byte{
		"3 bytes":              append([]byte{0x43}, 1, 2, 3),
		"24 bytes":             append([]byte{0x58, 24}, make([]byte, 24)...),
		"15 bytes":             append([]byte{0x4f}, make([]byte, 15)...),
		"16 bytes, long form":  append([]byte{0x58, 16}, p[:]...),
		"a text string":        append([]byte{0x70}, bytes.Repeat([]byte{'a'}, 16)...),
		"an array of 16 bytes": append([]byte{0x90}, make([]byte, 16)...),
		"a tagged byte string": append([]byte{0xd8, 0x40, 0x50}, p[:]...),
		"null":                 {0xf6},
		"empty byte string":    {0x40},
	} {
		var q Pseudonym
		if err := cbor.Unmarshal(bad, &q); !errors.Is(err, ErrBadPseudonymCBOR) {
			t.Errorf("%s: error = %v, want ErrBadPseudonymCBOR", name, err)
		}
		var w wrapped
		if err := cbor.Unmarshal(append([]byte{0xa1, 0x01}, bad...), &w); err == nil {
			t.Errorf("%s in a struct: accepted as %x", name, w.P)
		}
	}
}

func TestPseudonymKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pseudonym.key")
	k, err := NewPseudonymKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := WritePseudonymKey(path, k); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	got, err := LoadPseudonymKey(path)
	if err != nil || !bytes.Equal(got, k) {
		t.Fatalf("LoadPseudonymKey = %x, %v", []byte(got), err)
	}
	if err := WritePseudonymKey(path, k); !errors.Is(err, fs.ErrExist) {
		t.Errorf("overwrite error = %v, want fs.ErrExist", err)
	}
	if err := WritePseudonymKey(filepath.Join(dir, "short"), k[:31]); !errors.Is(err, ErrBadPseudonymKey) {
		t.Errorf("short key write error = %v", err)
	}

	hexKey := strings.Repeat("ab", 32)
	for name, tc := range map[string]struct {
		content string
		ok      bool
	}{
		"upper case and CRLF": {strings.ToUpper(hexKey) + "\r\n", true},
		"no newline":          {hexKey, true},
		"short":               {hexKey[:62] + "\n", false},
		"long":                {hexKey + "ab\n", false},
		"raw bytes":           {strings.Repeat("k", 32), false},
		"not hex":             {strings.Repeat("zz", 32), false},
		"empty":               {"", false},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := LoadPseudonymKey(p)
		switch {
		case tc.ok && (err != nil || len(k) != 32):
			t.Errorf("%s: %v", name, err)
		case !tc.ok && !errors.Is(err, ErrBadPseudonymKey):
			t.Errorf("%s: error = %v, want ErrBadPseudonymKey", name, err)
		case !tc.ok && strings.Contains(err.Error(), tc.content) && tc.content != "":
			t.Errorf("%s: error repeats the file content", name)
		}
	}
	if _, err := LoadPseudonymKey(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file error = %v", err)
	}
}

func TestPseudonymKeyRedacted(t *testing.T) {
	k := testKey()
	for _, format := range []string{"%v", "%s", "%x", "%#v", "%+v"} {
		out := fmt.Sprintf(format, k)
		if strings.Contains(out, "0001020304") || strings.Contains(out, "[0 1 2") {
			t.Errorf("%s printed the key: %s", format, out)
		}
	}
}
