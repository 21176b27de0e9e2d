package credit

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// SubjectKind says whether a subject is a natural person or an organization.
// Its zero value is no kind at all; ParseSubject never returns it.
type SubjectKind uint8

// Subject kinds.
const (
	// Person is a natural person identified by the 18-character citizen
	// identity number (GB 11643).
	Person SubjectKind = 1
	// Organization is a legal person or other organization, government bodies
	// included, identified by the unified social credit code (GB 32100).
	Organization SubjectKind = 2
)

// String returns "person", "organization" or "unknown".
func (k SubjectKind) String() string {
	switch k {
	case Person:
		return "person"
	case Organization:
		return "organization"
	}
	return "unknown"
}

// MarshalText renders the kind as "person" or "organization" (JSON, YAML).
func (k SubjectKind) MarshalText() ([]byte, error) {
	if k != Person && k != Organization {
		return nil, fmt.Errorf("credit: subject kind %d has no name", uint8(k))
	}
	return []byte(k.String()), nil
}

// UnmarshalText accepts "person" or "organization".
func (k *SubjectKind) UnmarshalText(b []byte) error {
	switch string(b) {
	case "person":
		*k = Person
	case "organization":
		*k = Organization
	default:
		return fmt.Errorf("credit: subject kind must be person or organization, not %q", b)
	}
	return nil
}

// ChinaStandardTime is UTC+8 without daylight saving, the zone of every civil
// date in the federation. It is a fixed zone so that no time zone database is
// needed.
var ChinaStandardTime = time.FixedZone("UTC+8", 8*60*60)

// TodayAt returns the civil date of t in China Standard Time (UTC+8).
func TodayAt(t time.Time) Date { return DateOf(t.In(ChinaStandardTime)) }

// ParseOptions tune identifier parsing.
type ParseOptions struct {
	// TestMode accepts the reserved test province 99 in region codes. Only
	// the demo and tests set it; production refuses 99.
	TestMode bool
	// TestOnly accepts the reserved test province 99 and nothing else: a
	// real identifier is refused, so no real person's record can enter a
	// demonstration or test federation. It implies TestMode.
	TestOnly bool
	// Today bounds birth dates from above. The zero value means the current
	// date in China Standard Time (UTC+8).
	Today Date
}

func (o ParseOptions) today() Date {
	if o.Today != 0 {
		return o.Today
	}
	return TodayAt(time.Now())
}

// Subject is a validated identifier in canonical form: 18 characters, the
// citizen number's check character X upper case, the unified social credit
// code upper case.
type Subject struct {
	Kind SubjectKind
	ID   string // canonical identifier
}

// String returns the masked identifier (see MaskIdentifier), never the raw
// one, so that a Subject printed into a log by mistake leaks nothing. Use
// s.ID for the identifier itself.
func (s Subject) String() string { return s.Masked() }

// Masked returns the identifier masked for public disclosure: for a person
// the region code (characters 1-6) and the check character are kept, for an
// organization the region code (characters 3-8) and the check character.
func (s Subject) Masked() string { return maskAs(s.ID, s.Kind) }

// The province-level region codes of GB/T 2260 (the first two digits of a
// region code), and the reserved test province.
var provinces = map[string]bool{
	"11": true, "12": true, "13": true, "14": true, "15": true,
	"21": true, "22": true, "23": true,
	"31": true, "32": true, "33": true, "34": true, "35": true, "36": true, "37": true,
	"41": true, "42": true, "43": true, "44": true, "45": true, "46": true,
	"50": true, "51": true, "52": true, "53": true, "54": true,
	"61": true, "62": true, "63": true, "64": true, "65": true,
	"71": true, "81": true, "82": true,
}

// TestProvince is the province code reserved for synthetic data: accepted
// only in test mode, so a synthetic identifier is never a real person's.
const TestProvince = "99"

// nationalRegion is the GB/T 2260 code of the whole country, used as the
// registration region of organizations registered by central authorities
// (for example 11100000… for a ministry).
const nationalRegion = "100000"

func checkProvince(region string, opt ParseOptions, allowNational bool) error {
	p := region[:2]
	switch {
	case opt.TestOnly && p != TestProvince:
		return idErr(RuleProvince, "this federation is test-only: it accepts identifiers of the reserved test province 99, not real ones (province code %s)", p)
	case provinces[p]:
		return nil
	case p == TestProvince:
		if opt.TestMode || opt.TestOnly {
			return nil
		}
		return idErr(RuleProvince, "province code 99 is the reserved test province, accepted only in test mode")
	case allowNational && region == nationalRegion:
		return nil
	}
	return idErr(RuleProvince, "province code %s is not a province-level region code", p)
}

// ParseSubject validates an identifier and returns it in canonical form.
// Surrounding white space is removed. A string of 17 digits followed by a
// digit or X is read as a citizen identity number; if it is not a valid one
// but is a valid unified social credit code (which may also be all digits),
// it is an organization (and a string valid as both, which is rare but
// possible, is a person). Anything else is read as a unified social credit
// code. Use ParseSubjectAs when the kind is known, as Catalog.Accept does.
// Errors are *IdentifierError values that never contain the identifier.
func ParseSubject(s string, opt ParseOptions) (Subject, error) {
	s = strings.TrimSpace(s)
	if personShaped(s) {
		sub, err := parsePerson(s, opt)
		if err == nil {
			return sub, nil
		}
		if org, oerr := parseOrganization(s, opt); oerr == nil {
			return org, nil
		}
		return Subject{}, err
	}
	return parseOrganization(s, opt)
}

// ParseSubjectAs is ParseSubject for a known kind: the identifier must be a
// valid citizen identity number (Person) or unified social credit code
// (Organization), and the error explains what is wrong with it as that kind.
func ParseSubjectAs(s string, kind SubjectKind, opt ParseOptions) (Subject, error) {
	s = strings.TrimSpace(s)
	switch kind {
	case Person:
		return parsePerson(s, opt)
	case Organization:
		return parseOrganization(s, opt)
	}
	return Subject{}, idErr(RuleKind, "subject kind %d is neither person nor organization", uint8(kind))
}

func isNotDigit(r rune) bool { return r < '0' || r > '9' }

func personShaped(s string) bool {
	if len(s) != 18 || strings.ContainsFunc(s[:17], isNotDigit) {
		return false
	}
	c := s[17]
	return c >= '0' && c <= '9' || c == 'X' || c == 'x'
}

func checkLength(s string) error {
	if len(s) == 18 {
		return nil
	}
	if n := utf8.RuneCountInString(s); n != 18 {
		return idErr(RuleLength, "must be 18 characters, got %d", n)
	}
	return idErr(RuleCharset, "must be 18 ASCII letters and digits")
}

// personWeights are the GB 11643 (ISO 7064 MOD 11-2) weights of the first
// 17 digits.
var personWeights = [17]int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}

// personChecks maps the weighted sum modulo 11 to the check character.
const personChecks = "10X98765432"

// PersonCheck returns the GB 11643 check character of the first 17 digits of
// a citizen identity number.
func PersonCheck(first17 string) (byte, error) {
	if len(first17) != 17 {
		return 0, idErr(RuleLength, "check character needs 17 digits, got %d", utf8.RuneCountInString(first17))
	}
	sum := 0
	for i := range 17 {
		c := first17[i]
		if c < '0' || c > '9' {
			return 0, idErr(RuleCharset, "character %d must be a digit", i+1)
		}
		sum += int(c-'0') * personWeights[i]
	}
	return personChecks[sum%11], nil
}

func parsePerson(s string, opt ParseOptions) (Subject, error) {
	if err := checkLength(s); err != nil {
		return Subject{}, err
	}
	for i := range 17 {
		if s[i] < '0' || s[i] > '9' {
			return Subject{}, idErr(RuleCharset, "character %d of a citizen identity number must be a digit", i+1)
		}
	}
	last := s[17]
	if last == 'x' {
		last = 'X'
	}
	if (last < '0' || last > '9') && last != 'X' {
		return Subject{}, idErr(RuleCharset, "character 18 of a citizen identity number must be a digit or X")
	}
	if err := checkProvince(s[:6], opt, false); err != nil {
		return Subject{}, err
	}
	if err := checkBirth(s[6:14], opt); err != nil {
		return Subject{}, err
	}
	want, _ := PersonCheck(s[:17])
	if last != want {
		return Subject{}, idErr(RuleCheckCharacter, "check character is %c, expected %c", last, want)
	}
	return Subject{Kind: Person, ID: s[:17] + string(last)}, nil
}

// minBirth is the earliest birth date accepted.
var minBirth = NewDate(1900, time.January, 1)

func checkBirth(yyyymmdd string, opt ParseOptions) error {
	// By hand rather than time.Parse: every lookup parses one at each end.
	y, m, day, ok := digitsYMD(yyyymmdd)
	if !ok || m < 1 || m > 12 || day < 1 || day > time.Date(y, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day() {
		return idErr(RuleBirthDate, "birth date (characters 7-14) is not a real date")
	}
	d := NewDate(y, time.Month(m), day)
	if d < minBirth {
		return idErr(RuleBirthDate, "birth date is before 1900-01-01")
	}
	if d > opt.today() {
		return idErr(RuleBirthDate, "birth date is in the future")
	}
	return nil
}

// digitsYMD reads "YYYYMMDD" (8 ASCII digits).
func digitsYMD(s string) (y, m, d int, ok bool) {
	if len(s) != 8 {
		return 0, 0, 0, false
	}
	n := [3]int{}
	for i := range 8 {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, 0, 0, false
		}
		k := 0
		if i >= 6 {
			k = 2
		} else if i >= 4 {
			k = 1
		}
		n[k] = n[k]*10 + int(c-'0')
	}
	return n[0], n[1], n[2], true
}

// orgAlphabet is the GB 32100 code alphabet; a character's value is its
// index. I, O, Z, S and V are not used.
const orgAlphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"

// orgWeights are the GB 32100 weights of the first 17 characters (3^i mod 31).
var orgWeights = [17]int{1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28}

// orgTypes is the GB 32100-2015 table (with amendment No. 1 of 2016) of
// registration authorities (character 1) and the organization types
// (character 2) each may register:
//
//	1 机构编制 (establishment): 1 机关, 2 事业单位, 3 中央编办直接管理机构编制的群众团体, 9 其他
//	2 外交 (foreign affairs): 1 外国常驻新闻机构, 9 其他
//	3 司法行政 (justice): 1 律师执业机构, 2 公证处, 3 基层法律服务所, 4 司法鉴定机构, 5 仲裁委员会, 9 其他
//	4 文化 (culture): 1 外国在华文化中心, 9 其他
//	5 民政 (civil affairs): 1 社会团体, 2 民办非企业单位, 3 基金会, 9 其他
//	6 旅游 (tourism): 1 外国旅游部门常驻代表机构, 2 港澳台地区旅游部门常驻内地(大陆)代表机构, 9 其他
//	7 宗教 (religious affairs): 1 宗教活动场所, 2 宗教院校, 9 其他
//	8 工会 (trade unions): 1 基层工会, 9 其他
//	9 工商 (industry and commerce): 1 企业, 2 个体工商户, 3 农民专业合作社
//	A 中央军委改革和编制办公室: 1 军队事业单位, 9 其他
//	N 农业 (agriculture): 1 组级集体经济组织, 2 村级集体经济组织, 3 乡镇级集体经济组织, 9 其他
//	Y 其他 (others): 1
var orgTypes = map[byte]string{
	'1': "1239",
	'2': "19",
	'3': "123459",
	'4': "19",
	'5': "1239",
	'6': "129",
	'7': "129",
	'8': "19",
	'9': "123",
	'A': "19",
	'N': "1239",
	'Y': "1",
}

func orgValue(c byte) int { return strings.IndexByte(orgAlphabet, c) }

// OrgCheck returns the GB 32100 check character of the first 17 characters
// of a unified social credit code (upper case).
func OrgCheck(first17 string) (byte, error) {
	if len(first17) != 17 {
		return 0, idErr(RuleLength, "check character needs 17 characters, got %d", utf8.RuneCountInString(first17))
	}
	sum := 0
	for i := range 17 {
		v := orgValue(first17[i])
		if v < 0 {
			return 0, idErr(RuleCharset, "character %d is not in the code alphabet (digits and upper-case letters except I, O, S, V, Z)", i+1)
		}
		sum += v * orgWeights[i]
	}
	return orgAlphabet[(31-sum%31)%31], nil
}

// OrgCodeCheck returns the GB 11714 check character of the first 8
// characters of a 9-character organization code (characters 9-16 of a unified
// social credit code): weights 3 7 9 10 5 8 4 2, letters valued A=10 … Z=35,
// check = 11 − sum mod 11, written X for 10 and 0 for 11.
//
// ParseSubject does not enforce it (the GB 32100 check character already
// covers the whole code, and codes issued in early pilots are known to
// deviate); SyntheticOrganization uses it so synthetic codes are well formed
// in both respects.
func OrgCodeCheck(first8 string) (byte, error) {
	if len(first8) != 8 {
		return 0, idErr(RuleLength, "organization code check needs 8 characters, got %d", utf8.RuneCountInString(first8))
	}
	weights := [8]int{3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i := range 8 {
		c := first8[i]
		var v int
		switch {
		case c >= '0' && c <= '9':
			v = int(c - '0')
		case c >= 'A' && c <= 'Z':
			v = int(c-'A') + 10
		default:
			return 0, idErr(RuleCharset, "character %d must be a digit or an upper-case letter", i+1)
		}
		sum += v * weights[i]
	}
	switch c := 11 - sum%11; c {
	case 10:
		return 'X', nil
	case 11:
		return '0', nil
	default:
		return byte('0' + c), nil
	}
}

func parseOrganization(s string, opt ParseOptions) (Subject, error) {
	if err := checkLength(s); err != nil {
		return Subject{}, err
	}
	s = strings.ToUpper(s)
	for i := range 18 {
		if orgValue(s[i]) < 0 {
			return Subject{}, idErr(RuleCharset, "character %d of a unified social credit code is not in its alphabet (digits and upper-case letters except I, O, S, V, Z)", i+1)
		}
	}
	types, ok := orgTypes[s[0]]
	if !ok {
		return Subject{}, idErr(RuleRegistrationAuthority, "registration authority code %c is not in GB 32100", s[0])
	}
	if strings.IndexByte(types, s[1]) < 0 {
		return Subject{}, idErr(RuleOrganizationType, "organization type %c is not one registration authority %c registers", s[1], s[0])
	}
	region := s[2:8]
	if strings.ContainsFunc(region, isNotDigit) {
		return Subject{}, idErr(RuleCharset, "characters 3-8 (region code) must be digits")
	}
	if err := checkProvince(region, opt, true); err != nil {
		return Subject{}, err
	}
	want, _ := OrgCheck(s[:17])
	if s[17] != want {
		return Subject{}, idErr(RuleCheckCharacter, "check character is %c, expected %c", s[17], want)
	}
	return Subject{Kind: Organization, ID: s}, nil
}

// SyntheticPerson returns a valid citizen identity number in the reserved
// test province 99, for tests and the demo. seq is reduced modulo 10,000,000:
// its thousands and above become region digits 3-6, its last three digits
// the sequence code, so distinct seq in that range give distinct numbers for
// one birth date. birth must lie between 1900-01-01 and the parser's today
// for the number to be accepted (in test mode only).
func SyntheticPerson(seq int, birth Date) string {
	const m = 10_000_000
	seq = (seq%m + m) % m
	first17 := fmt.Sprintf("99%04d%s%03d", seq/1000, birth.Time().Format("20060102"), seq%1000)
	c, err := PersonCheck(first17)
	if err != nil {
		panic("credit: SyntheticPerson: " + err.Error()) // only for birth years beyond 9999
	}
	return first17 + string(c)
}

// SyntheticOrganization returns a valid unified social credit code of an
// enterprise (authority 9, type 1) registered in the reserved test province
// 99, for tests and the demo. seq is reduced modulo 100,000,000 and becomes
// the organization code body, which carries its own GB 11714 check character.
func SyntheticOrganization(seq int) string {
	const m = 100_000_000
	seq = (seq%m + m) % m
	body := fmt.Sprintf("%08d", seq)
	bc, _ := OrgCodeCheck(body)
	first17 := "91990000" + body + string(bc)
	c, _ := OrgCheck(first17)
	return first17 + string(c)
}
