package credit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// FuzzParseSubject: ParseSubject never panics; what it accepts is canonical
// (parsing the canonical form again gives the same subject); what it refuses
// is refused with an *IdentifierError that does not repeat the input.
func FuzzParseSubject(f *testing.F) {
	for _, s := range append(append([]string{}, validPersons...), validOrgs...) {
		f.Add(s, false)
	}
	for _, s := range []string{
		"", " ", "11010519491231002x", "  91350100m000100y43 ", "110105194912310021",
		"440524188001010014", "91350100M000100I43", "11010519491231002Ｘ", "\x00\xff",
		"999999999999999999", "YYYYYYYYYYYYYYYYYY",
		SyntheticPerson(3, NewDate(1999, time.December, 31)), SyntheticOrganization(3),
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, in string, testMode bool) {
		opt := ParseOptions{Today: today, TestMode: testMode}
		s, err := ParseSubject(in, opt)
		if err != nil {
			var ie *IdentifierError
			if !errors.As(err, &ie) || !errors.Is(err, ErrInvalidIdentifier) {
				t.Fatalf("error %v is not an *IdentifierError", err)
			}
			if trimmed := strings.TrimSpace(in); len(trimmed) >= 8 && strings.Contains(err.Error(), trimmed) {
				t.Fatalf("error %q repeats the input", err)
			}
			return
		}
		if len(s.ID) != 18 || (s.Kind != Person && s.Kind != Organization) {
			t.Fatalf("accepted %q as %+v", in, s)
		}
		if s.ID != strings.ToUpper(strings.TrimSpace(in)) {
			t.Fatalf("canonical %q is not the trimmed upper-case input %q", s.ID, in)
		}
		again, err := ParseSubject(s.ID, opt)
		if err != nil || again != s {
			t.Fatalf("canonical %q parses as %+v, %v; want %+v", s.ID, again, err, s)
		}
		if m := MaskIdentifier(s.ID); len(m) != 18 || m[17] != s.ID[17] {
			t.Fatalf("mask of %q is %q", s.ID, m)
		}
	})
}

// FuzzPseudonymCBOR: decoding never panics, and what it accepts is a byte
// string of exactly 16 bytes that encodes back to the same bytes.
func FuzzPseudonymCBOR(f *testing.F) {
	f.Add(append([]byte{0x50}, make([]byte, 16)...))
	f.Add([]byte{0x43, 1, 2, 3})
	f.Add(append([]byte{0x58, 24}, make([]byte, 24)...))
	f.Add([]byte{0xf6})
	f.Add([]byte{0xa1, 0x01, 0x50})
	f.Fuzz(func(t *testing.T, in []byte) {
		var p Pseudonym
		if err := cbor.Unmarshal(in, &p); err != nil {
			return
		}
		if len(in) != 17 || in[0] != 0x50 {
			t.Fatalf("accepted %x as a pseudonym", in)
		}
		out, err := cbor.Marshal(p)
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("%x decodes to %s, which encodes as %x, %v", in, p, out, err)
		}
	})
}
