package certs

import (
	"net/url"
	"testing"
)

// tricky holds strings aimed at net/url's special cases: empty parts,
// leading and doubled slashes, dot segments, '*', colons, uppercase,
// '~' (unreserved in paths, and in hosts), '%', and bytes at the edges of
// the plain alphabet.
var hostileParts = []string{
	"", "/", "//", "///", ".", "..", "./", "../", "/.", "/..", "a/./b", "a/../b",
	"*", "/*", ":", "a:b", "/a:b", "A", "ZZ", "_", "-", "~", "a~b", "%", "%2F", "%41",
	".a", "a.", "_a_", "A-Z.0_9", "a//b", "/a", "a/", "x/y/z/w/v",
	"@", "[", "]", "[::1]", "!", "$", "&", "'", "(", ")", "+", ",", ";", "=",
	"\x00", "\x7f", "\x80", "\xff", " ", "\t",
}

func hostileCheck(t *testing.T, id Identity) {
	t.Helper()
	if got, want := id.String(), id.URI().String(); got != want {
		t.Errorf("%#v: String %q, URI().String() %q", id, got, want)
	}
}

// hostileShort is the structural subset used for role and institution in
// the cartesian product (kept small: CI shares the machine).
var hostileShort = []string{"", "/", "//", ".", "..", "*", "a:b", "A", "~", "%", "x/y", " "}

// TestHostileIdentityStringCartesian: every combination of the tricky
// parts in federation and region with the structural ones in role and
// institution.
func TestHostileIdentityStringCartesian(t *testing.T) {
	n := 0
	for _, f := range hostileParts {
		for _, r := range hostileShort {
			for _, g := range hostileParts {
				for _, i := range hostileShort {
					hostileCheck(t, Identity{Federation: f, Role: Role(r), Region: g, Institution: i})
					n++
				}
			}
		}
	}
	if n != len(hostileParts)*len(hostileShort)*len(hostileParts)*len(hostileShort) {
		t.Fatalf("ran %d", n)
	}
}

// TestHostileIdentityStringEveryByte: every byte, alone and between
// letters, in every field, the others plain or empty.
func TestHostileIdentityStringEveryByte(t *testing.T) {
	base := []Identity{
		{Federation: "demo", Role: District, Region: "zhejiang"},
		{Federation: "demo", Role: Department, Region: "zhejiang/quzhou", Institution: "tax"},
		{Federation: "demo"},
	}
	for c := 0; c < 256; c++ {
		for _, s := range []string{string([]byte{byte(c)}), "a" + string([]byte{byte(c)}) + "b", string([]byte{byte(c), byte(c)})} {
			for _, b := range base {
				for field := 0; field < 4; field++ {
					id := b
					switch field {
					case 0:
						id.Federation = s
					case 1:
						id.Role = Role(s)
					case 2:
						id.Region = s
					case 3:
						id.Institution = s
					}
					hostileCheck(t, id)
				}
			}
		}
	}
}

// TestHostileIdentityStringRoundTrip: for valid identities (the fast path)
// the string survives url.Parse as x509 does for a URI SAN, so IdentityOf's
// u.String() equals id.String(), and ParseIdentity gives the identity back.
func TestHostileIdentityStringRoundTrip(t *testing.T) {
	ids := []Identity{
		{Federation: "demo", Role: Province, Region: "zhejiang"},
		{Federation: "demo", Role: District, Region: "zhejiang/quzhou/kecheng/x1"},
		{Federation: "a-b", Role: Portal, Region: "z9", Institution: "credit-office"},
		{Federation: "0", Role: Operator, Region: "0/1/2/3", Institution: "9"},
	}
	for _, id := range ids {
		if err := id.Validate(); err != nil {
			t.Fatalf("%#v: %v", id, err)
		}
		s := id.String()
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if u.String() != s || u.RawPath != "" {
			t.Errorf("%q parses to %#v, renders %q", s, u, u.String())
		}
		back, err := ParseIdentity(s)
		if err != nil || back != id || back.String() != s {
			t.Errorf("%q: ParseIdentity %#v, %v", s, back, err)
		}
	}
}

// FuzzHostileIdentityString: seeds run under go test; the same property
// under go test -fuzz.
func FuzzHostileIdentityString(f *testing.F) {
	for _, p := range hostileParts {
		f.Add("demo", "district", p, p)
		f.Add(p, p, "zhejiang", "")
	}
	f.Fuzz(func(t *testing.T, fed, role, region, inst string) {
		hostileCheck(t, Identity{Federation: fed, Role: Role(role), Region: region, Institution: inst})
	})
}
