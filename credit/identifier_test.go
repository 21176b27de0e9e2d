package credit

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// today is the fixed "today" of the tests.
var today = NewDate(2025, time.June, 1)

var (
	prod = ParseOptions{Today: today}
	test = ParseOptions{Today: today, TestMode: true}
)

// Published or real-format identifiers. The citizen number is GB 11643's own
// example; the organization codes are real-format codes whose check
// characters were verified with an independent implementation.
var (
	validPersons = []string{
		"11010519491231002X", // GB 11643 example
		"120101199001011239",
		"65010220000229001X", // leap day
	}
	validOrgs = []string{
		"91350100M000100Y43",
		"914403001922038216", // all digits: looks like a citizen number
		"91440300708461136T",
		"91110108551385082Q",
		"91440300MA5H0HLK5U",
	}
)

// withCheck completes 17 characters with their check character.
func withCheck(t *testing.T, kind SubjectKind, first17 string) string {
	t.Helper()
	check := PersonCheck
	if kind == Organization {
		check = OrgCheck
	}
	c, err := check(first17)
	if err != nil {
		t.Fatalf("check(%q): %v", first17, err)
	}
	return first17 + string(c)
}

func TestParseSubjectValid(t *testing.T) {
	tests := []struct {
		in   string
		opt  ParseOptions
		kind SubjectKind
		want string
	}{
		{"11010519491231002X", prod, Person, "11010519491231002X"},
		{"11010519491231002x", prod, Person, "11010519491231002X"},
		{"  11010519491231002X\t\n", prod, Person, "11010519491231002X"},
		{"65010220000229001X", prod, Person, "65010220000229001X"},
		{"91350100M000100Y43", prod, Organization, "91350100M000100Y43"},
		{"91350100m000100y43", prod, Organization, "91350100M000100Y43"},
		{"914403001922038216", prod, Organization, "914403001922038216"},
		{" 91440300708461136T ", prod, Organization, "91440300708461136T"},
		{SyntheticPerson(1, NewDate(1990, time.January, 1)), test, Person, ""},
		{SyntheticOrganization(7), test, Organization, ""},
		// Birth date on the very day bounds.
		{withCheck(t, Person, "11010519000101001"), prod, Person, ""},
		{withCheck(t, Person, "11010520250601001"), prod, Person, ""},
		// Central registration uses the national region 100000.
		{withCheck(t, Organization, "11100000000013127"), prod, Organization, ""},
		// Every registration authority of the table.
		{withCheck(t, Organization, "12110000MB0000001"), prod, Organization, ""},
		{withCheck(t, Organization, "31110000MC0000001"), prod, Organization, ""},
		{withCheck(t, Organization, "35110000MD0000001"), prod, Organization, ""},
		{withCheck(t, Organization, "53110000MJ0000001"), prod, Organization, ""},
		{withCheck(t, Organization, "72110000MK0000001"), prod, Organization, ""},
		{withCheck(t, Organization, "81110000ML0000001"), prod, Organization, ""},
		{withCheck(t, Organization, "92110000MM0000001"), prod, Organization, ""},
		{withCheck(t, Organization, "A1110000MN0000001"), prod, Organization, ""},
		{withCheck(t, Organization, "N2110000MP0000001"), prod, Organization, ""},
		{withCheck(t, Organization, "Y1110000MQ0000001"), prod, Organization, ""},
	}
	for _, tt := range tests {
		got, err := ParseSubject(tt.in, tt.opt)
		if err != nil {
			t.Errorf("ParseSubject(%q) = %v", tt.in, err)
			continue
		}
		want := tt.want
		if want == "" {
			want = strings.ToUpper(strings.TrimSpace(tt.in))
		}
		if got.Kind != tt.kind || got.ID != want {
			t.Errorf("ParseSubject(%q) = %v %q, want %v %q", tt.in, got.Kind, got.ID, tt.kind, want)
		}
		again, err := ParseSubjectAs(got.ID, got.Kind, tt.opt)
		if err != nil || again != got {
			t.Errorf("ParseSubjectAs(%q, %v) = %+v, %v; want %+v", got.ID, got.Kind, again, err, got)
		}
	}
}

func TestParseSubjectInvalid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		opt  ParseOptions
		rule string
		msg  string // substring of the message
	}{
		{"empty", "", prod, RuleLength, "got 0"},
		{"short", "11010519491231002", prod, RuleLength, "got 17"},
		{"long", "11010519491231002X1", prod, RuleLength, "got 19"},
		{"multibyte", "11010519491231002Ｘ", prod, RuleCharset, ""},
		{"person wrong check", "110105194912310021", prod, RuleCheckCharacter, "check character is 1, expected X"},
		{"person province 00", withCheck(t, Person, "00010519491231002"), prod, RuleProvince, "00"},
		{"person province 99 in production", SyntheticPerson(5, NewDate(1990, time.May, 1)), prod, RuleProvince, "reserved test province"},
		{"person province 10", withCheck(t, Person, "10000019491231002"), prod, RuleProvince, "10"},
		{"birth before 1900", "440524188001010014", prod, RuleBirthDate, "before 1900"},
		{"birth not a day", withCheck(t, Person, "11010519490230002"), prod, RuleBirthDate, "not a real date"},
		{"birth month 13", withCheck(t, Person, "11010519491331002"), prod, RuleBirthDate, "not a real date"},
		{"birth 29 Feb non-leap", withCheck(t, Person, "11010520010229002"), prod, RuleBirthDate, "not a real date"},
		{"birth tomorrow", withCheck(t, Person, "11010520250602001"), prod, RuleBirthDate, "future"},
		{"org wrong check", "91350100M000100Y44", prod, RuleCheckCharacter, "check character is 4, expected 3"},
		{"org letter I", "91350100M000100I43", prod, RuleCharset, "character 16"},
		{"org letter O", "91350100O000100Y43", prod, RuleCharset, "character 9"},
		{"org punctuation", "91350100-000100Y43", prod, RuleCharset, ""},
		{"org authority B", withCheck(t, Organization, "B1350100M000100Y4"), prod, RuleRegistrationAuthority, "B"},
		{"org authority 0", withCheck(t, Organization, "01350100M000100Y4"), prod, RuleRegistrationAuthority, "0"},
		{"org type 94", withCheck(t, Organization, "94350100M000100Y4"), prod, RuleOrganizationType, "4"},
		{"org type 99", withCheck(t, Organization, "99350100M000100Y4"), prod, RuleOrganizationType, ""},
		{"org type Y2", withCheck(t, Organization, "Y2350100M000100Y4"), prod, RuleOrganizationType, ""},
		{"org region letter", withCheck(t, Organization, "9135A100M000100Y4"), prod, RuleCharset, "region"},
		{"org province 00", withCheck(t, Organization, "91000100M000100Y4"), prod, RuleProvince, "00"},
		{"org province 99 in production", SyntheticOrganization(3), prod, RuleProvince, "reserved test province"},
		{"org region 100001", withCheck(t, Organization, "91100001M000100Y4"), prod, RuleProvince, "10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSubject(tt.in, tt.opt)
			var ie *IdentifierError
			if !errors.As(err, &ie) {
				t.Fatalf("ParseSubject(%q) error = %v, want *IdentifierError", tt.in, err)
			}
			if !errors.Is(err, ErrInvalidIdentifier) {
				t.Errorf("error does not match ErrInvalidIdentifier")
			}
			if ie.Rule != tt.rule {
				t.Errorf("rule = %q (%s), want %q", ie.Rule, ie.Message, tt.rule)
			}
			if !strings.Contains(ie.Message, tt.msg) {
				t.Errorf("message %q does not contain %q", ie.Message, tt.msg)
			}
			assertNoIdentifier(t, err, tt.in)
		})
	}
}

// assertNoIdentifier fails if the error's text holds the identifier or any
// 8-character stretch of it (a birth date, a region and sequence, …).
func assertNoIdentifier(t *testing.T, err error, id string) {
	t.Helper()
	id = strings.TrimSpace(id)
	msg := err.Error()
	for i := 0; i+8 <= len(id); i++ {
		if strings.Contains(msg, id[i:i+8]) {
			t.Errorf("error %q contains %q from the identifier", msg, id[i:i+8])
			return
		}
	}
}

func TestTestModeAcceptsOnlyProvince99(t *testing.T) {
	p := SyntheticPerson(42, NewDate(1985, time.March, 3))
	if !strings.HasPrefix(p, "99") {
		t.Fatalf("SyntheticPerson = %q, want province 99", p)
	}
	if _, err := ParseSubject(p, test); err != nil {
		t.Errorf("test mode refused %q: %v", p, err)
	}
	if _, err := ParseSubject(p, prod); err == nil {
		t.Errorf("production accepted %q", p)
	}
	// Test mode does not relax the other provinces.
	if _, err := ParseSubject(withCheck(t, Person, "98010519491231002"), test); err == nil {
		t.Error("test mode accepted province 98")
	}
}

func TestSyntheticDistinct(t *testing.T) {
	birth := NewDate(2000, time.February, 29)
	seen := map[string]int{}
	for seq := 0; seq < 3000; seq += 7 {
		for _, id := range []string{SyntheticPerson(seq, birth), SyntheticOrganization(seq)} {
			if prev, dup := seen[id]; dup {
				t.Fatalf("seq %d and %d give the same identifier", prev, seq)
			}
			seen[id] = seq
			if _, err := ParseSubject(id, test); err != nil {
				t.Fatalf("synthetic %q refused: %v", id, err)
			}
		}
	}
	if a, b := SyntheticPerson(-1, birth), SyntheticPerson(9_999_999, birth); a != b {
		t.Errorf("negative seq: %q, want %q", a, b)
	}
	org := SyntheticOrganization(12345678)
	if c, _ := OrgCodeCheck(org[8:16]); org[16] != c {
		t.Errorf("synthetic organization %q: body check %c, want %c", org, org[16], c)
	}
}

func TestOrgCodeCheck(t *testing.T) {
	// The organization code bodies of real codes carry GB 11714 check digits.
	for _, id := range []string{"91350100M000100Y43", "91440300708461136T", "91110108551385082Q", "914403001922038216"} {
		c, err := OrgCodeCheck(id[8:16])
		if err != nil || c != id[16] {
			t.Errorf("OrgCodeCheck(%q) = %c, %v; want %c", id[8:16], c, err, id[16])
		}
	}
	if _, err := OrgCodeCheck("1234567"); err == nil {
		t.Error("OrgCodeCheck accepted 7 characters")
	}
	if _, err := OrgCodeCheck("1234567-"); err == nil {
		t.Error("OrgCodeCheck accepted '-'")
	}
}

func TestCheckHelpers(t *testing.T) {
	if c, err := PersonCheck("11010519491231002"); err != nil || c != 'X' {
		t.Errorf("PersonCheck = %c, %v; want X", c, err)
	}
	if c, err := OrgCheck("91350100M000100Y4"); err != nil || c != '3' {
		t.Errorf("OrgCheck = %c, %v; want 3", c, err)
	}
	for _, bad := range []string{"", "1101051949123100", "1101051949123100A", "110105194912310022"} {
		if _, err := PersonCheck(bad); !errors.Is(err, ErrInvalidIdentifier) {
			t.Errorf("PersonCheck(%q) error = %v", bad, err)
		}
	}
	for _, bad := range []string{"", "91350100M000100Y", "91350100M000100I4"} {
		if _, err := OrgCheck(bad); !errors.Is(err, ErrInvalidIdentifier) {
			t.Errorf("OrgCheck(%q) error = %v", bad, err)
		}
	}
}

func TestParseSubjectAsWrongKind(t *testing.T) {
	if _, err := ParseSubjectAs("11010519491231002X", Organization, prod); !errors.Is(err, ErrInvalidIdentifier) {
		t.Errorf("citizen number accepted as organization: %v", err)
	}
	if _, err := ParseSubjectAs("91350100M000100Y43", Person, prod); !errors.Is(err, ErrInvalidIdentifier) {
		t.Errorf("organization code accepted as person: %v", err)
	}
	if _, err := ParseSubjectAs("11010519491231002X", 0, prod); !errors.Is(err, ErrInvalidIdentifier) {
		t.Errorf("kind 0 accepted: %v", err)
	}
}

// Every single-character substitution of a valid identifier, at every
// position and with every other character of the alphabet, is refused.
func TestSingleSubstitutionsRefused(t *testing.T) {
	const personAlphabet = "0123456789X"
	cases := []struct {
		ids      []string
		alphabet string
	}{
		{append(validPersons, SyntheticPerson(77, NewDate(1970, time.December, 31))), personAlphabet},
		{append(validOrgs, SyntheticOrganization(77), withCheck(t, Organization, "11100000000013127")), orgAlphabet},
	}
	tried := 0
	for _, c := range cases {
		for _, id := range c.ids {
			if _, err := ParseSubject(id, test); err != nil {
				t.Fatalf("base identifier %q refused: %v", id, err)
			}
			for pos := range len(id) {
				for _, r := range c.alphabet {
					if byte(r) == id[pos] {
						continue
					}
					mutated := id[:pos] + string(r) + id[pos+1:]
					tried++
					if s, err := ParseSubject(mutated, test); err == nil {
						t.Errorf("%q (position %d of %q changed) accepted as %v", mutated, pos+1, id, s.Kind)
					}
				}
			}
		}
	}
	if tried < 1000 {
		t.Fatalf("only %d substitutions tried", tried)
	}
}

func TestSubjectKindText(t *testing.T) {
	for _, k := range []SubjectKind{Person, Organization} {
		b, err := k.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back SubjectKind
		if err := back.UnmarshalText(b); err != nil || back != k {
			t.Errorf("round trip of %v: %v, %v", k, back, err)
		}
	}
	if _, err := SubjectKind(0).MarshalText(); err == nil {
		t.Error("kind 0 marshalled")
	}
	var k SubjectKind
	if err := k.UnmarshalText([]byte("people")); err == nil {
		t.Error("unknown kind accepted")
	}
	if SubjectKind(9).String() != "unknown" {
		t.Error("String of kind 9")
	}
}

func TestSubjectStringIsMasked(t *testing.T) {
	s, err := ParseSubject("11010519491231002X", prod)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != "110105***********X" {
		t.Errorf("String() = %q", got)
	}
}

func TestParseOptionsZeroTodayIsNow(t *testing.T) {
	// A person born today (UTC+8) is accepted with a zero Today; one born in
	// a few days is not. Days on either side keep the test independent of
	// the hour at which it runs.
	now := TodayAt(time.Now())
	past := withCheck(t, Person, "110105"+now.AddDays(-1).Time().Format("20060102")+"001")
	future := withCheck(t, Person, "110105"+now.AddDays(2).Time().Format("20060102")+"001")
	if _, err := ParseSubject(past, ParseOptions{}); err != nil {
		t.Errorf("yesterday's birth refused: %v", err)
	}
	if _, err := ParseSubject(future, ParseOptions{}); err == nil {
		t.Error("birth in two days accepted")
	}
}

// TestParseSubjectTestOnly: a test-only federation (the demo) takes the
// reserved province 99 and refuses every real identifier, persons and
// organizations alike, naming the rule and not the identifier.
func TestParseSubjectTestOnly(t *testing.T) {
	only := ParseOptions{Today: today, TestOnly: true}
	for _, id := range []string{SyntheticPerson(7, NewDate(1980, time.May, 1)), SyntheticOrganization(7)} {
		if _, err := ParseSubject(id, only); err != nil {
			t.Errorf("synthetic %s refused: %v", id, err)
		}
	}
	for _, id := range append(append([]string{}, validPersons...), validOrgs...) {
		_, err := ParseSubject(id, only)
		var ie *IdentifierError
		if !errors.As(err, &ie) || ie.Rule != RuleProvince || !strings.Contains(ie.Message, "test-only") {
			t.Errorf("real %s: %v, want a test-only refusal", id, err)
			continue
		}
		if strings.Contains(err.Error(), id) || strings.Contains(err.Error(), id[2:]) {
			t.Errorf("the refusal quotes the identifier: %v", err)
		}
		if _, err := ParseSubject(id, test); err != nil {
			t.Errorf("test mode refuses the real %s: %v", id, err)
		}
	}
}
