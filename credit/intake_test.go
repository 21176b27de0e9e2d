package credit

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
)

var at = time.Date(2025, time.June, 1, 2, 30, 0, 0, time.UTC) // 10:30 in Beijing

func submission() Record {
	return Record{
		ID:             "HP-MS-2025-0001",
		Subject:        " 11010519491231002x ",
		CatalogItem:    "FOOD-DRUG-PENALTY",
		DecisionNumber: "津和市监罚〔2025〕12号",
		OccurredOn:     d("2025-03-02"),
		DecidedOn:      d("2025-04-15"),
		Summary:        "销售过期食品",
		Department:     "market-supervision",
		District:       "tianjin/heping",
		// Fields a submitter cannot set; Accept overwrites them.
		Polarity: Positive, Status: StatusRepaired, Version: 7, LegalBasis: "none", Reason: "x",
	}
}

func TestAcceptInherits(t *testing.T) {
	c := DefaultCatalog()
	got, err := c.Accept(submission(), at, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	it, _ := c.Item("FOOD-DRUG-PENALTY")
	want := submission()
	want.Subject = "11010519491231002X"
	want.Polarity, want.Severity, want.LegalBasis = Negative, Ordinary, it.LegalBasis
	want.Status, want.Version, want.CatalogVersion, want.Reason = StatusActive, 1, 1, ""
	want.RecordedAt = at
	if got != want {
		t.Errorf("Accept =\n%+v\nwant\n%+v", got, want)
	}
	if !got.SameContent(func() Record { r := submission(); r.Subject = got.Subject; return r }()) {
		t.Error("content changed")
	}
}

func TestAcceptRefuses(t *testing.T) {
	c := DefaultCatalog()
	long := strings.Repeat("a", 129)
	tests := []struct {
		name   string
		mutate func(r *Record)
		opt    ParseOptions
		code   string
		field  string
	}{
		{"empty id", func(r *Record) { r.ID = "" }, prod, CodeBadRequest, "id"},
		{"long id", func(r *Record) { r.ID = long }, prod, CodeBadRequest, "id"},
		{"slash in id", func(r *Record) { r.ID = "a/b" }, prod, CodeBadRequest, "id"},
		{"control in id", func(r *Record) { r.ID = "a\nb" }, prod, CodeBadRequest, "id"},
		{"invalid UTF-8 id", func(r *Record) { r.ID = "a\xffb" }, prod, CodeBadRequest, "id"},
		{"unknown item", func(r *Record) { r.CatalogItem = "NO-SUCH" }, prod, CodeUnknownCatalogItem, "catalog_item"},
		{"missing item", func(r *Record) { r.CatalogItem = "" }, prod, CodeBadRequest, "catalog_item"},
		{"missing subject", func(r *Record) { r.Subject = " " }, prod, CodeBadRequest, "subject"},
		{"bad check character", func(r *Record) { r.Subject = "110105194912310021" }, prod, CodeInvalidIdentifier, "subject"},
		{"test province in production", func(r *Record) { r.Subject = SyntheticPerson(1, d("1990-01-01")) }, prod, CodeInvalidIdentifier, "subject"},
		{"organization for a person item", func(r *Record) { r.Subject = "91350100M000100Y43" }, prod, CodeBadRequest, "subject"},
		{"person for an organization item", func(r *Record) { r.CatalogItem = "GOVERNMENT-JUDGMENT-DEFAULT" }, prod, CodeBadRequest, "subject"},
		{"negative without decision number", func(r *Record) { r.DecisionNumber = "" }, prod, CodeBadRequest, "decision_number"},
		{"long decision number", func(r *Record) { r.DecisionNumber = long }, prod, CodeBadRequest, "decision_number"},
		{"no occurrence date", func(r *Record) { r.OccurredOn = 0 }, prod, CodeBadRequest, "occurred_on"},
		{"no decision date", func(r *Record) { r.DecidedOn = 0 }, prod, CodeBadRequest, "decided_on"},
		{"occurred after decided", func(r *Record) { r.OccurredOn = d("2025-04-16") }, prod, CodeBadRequest, "occurred_on"},
		{"decided in the future", func(r *Record) { r.DecidedOn = d("2025-06-02") }, ParseOptions{}, CodeBadRequest, "decided_on"},
		{"before 1900", func(r *Record) { r.OccurredOn = d("1899-12-31") }, prod, CodeBadRequest, "occurred_on"},
		{"long summary", func(r *Record) { r.Summary = strings.Repeat("食", 1366) }, prod, CodeBadRequest, "summary"},
		{"invalid UTF-8 summary", func(r *Record) { r.Summary = "\xff" }, prod, CodeBadRequest, "summary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := submission()
			tt.mutate(&r)
			_, err := c.Accept(r, at, tt.opt)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error = %v, want *FieldError", err)
			}
			if fe.Code != tt.code || fe.Field != tt.field {
				t.Errorf("FieldError = %s %s (%s), want %s %s", fe.Code, fe.Field, fe.Message, tt.code, tt.field)
			}
			if !errors.Is(err, ErrBadRecord) {
				t.Error("does not match ErrBadRecord")
			}
			if got := errors.Is(err, ErrUnknownCatalogItem); got != (tt.code == CodeUnknownCatalogItem) {
				t.Errorf("errors.Is(ErrUnknownCatalogItem) = %v", got)
			}
			if tt.code == CodeInvalidIdentifier {
				var ie *IdentifierError
				if !errors.As(err, &ie) || !errors.Is(err, ErrInvalidIdentifier) {
					t.Errorf("identifier error not wrapped: %v", err)
				}
				if fe.Message != ie.Message {
					t.Errorf("message %q, want the identifier rule's %q", fe.Message, ie.Message)
				}
			}
			if strings.Contains(err.Error(), "49123100") || strings.Contains(err.Error(), r.Summary) && r.Summary != "" {
				t.Errorf("error leaks content: %v", err)
			}
		})
	}
}

func TestAcceptEdges(t *testing.T) {
	c := DefaultCatalog()
	// Positive items need no decision number; the summary may be exactly 4 KiB.
	r := submission()
	r.CatalogItem, r.DecisionNumber, r.Summary = "OUTSTANDING-YOUTH-VOLUNTEER", "", strings.Repeat("a", MaxSummaryLength)
	if got, err := c.Accept(r, at, ParseOptions{}); err != nil || got.Polarity != Positive {
		t.Errorf("positive record: %+v, %v", got.Polarity, err)
	}
	// Decided today (in Beijing, while it is still the previous day in UTC).
	r = submission()
	lateUTC := time.Date(2025, time.May, 31, 17, 0, 0, 0, time.UTC) // 1:00 on 1 June in Beijing
	r.DecidedOn = d("2025-06-01")
	if _, err := c.Accept(r, lateUTC, ParseOptions{}); err != nil {
		t.Errorf("decided today in UTC+8: %v", err)
	}
	// Test mode admits synthetic subjects; organizations for organization items.
	r = submission()
	r.Subject = SyntheticPerson(9, d("1980-01-01"))
	if _, err := c.Accept(r, at, ParseOptions{TestMode: true}); err != nil {
		t.Errorf("synthetic subject in test mode: %v", err)
	}
	r = submission()
	r.CatalogItem, r.Subject = "GOVERNMENT-JUDGMENT-DEFAULT", "11100000000013127"
	oc, _ := OrgCheck(r.Subject)
	r.Subject += string(oc)
	if got, err := c.Accept(r, at, ParseOptions{}); err != nil || got.Severity != Serious {
		t.Errorf("government body: %v, %v", got.Severity, err)
	}
	// An all-digit organization code is an organization, whatever its shape.
	r = submission()
	r.CatalogItem, r.Subject = "GOVERNMENT-JUDGMENT-DEFAULT", "914403001922038216"
	if got, err := c.Accept(r, at, ParseOptions{}); err != nil || got.Subject != "914403001922038216" {
		t.Errorf("all-digit organization code: %v", err)
	}
	r.CatalogItem = "FOOD-DRUG-PENALTY"
	var fe *FieldError
	if _, err := c.Accept(r, at, ParseOptions{}); !errors.As(err, &fe) || fe.Code != CodeBadRequest || !strings.Contains(fe.Message, "person") {
		t.Errorf("organization code for a person item: %v", err)
	}
	// The collector comes from the certificate.
	r = submission()
	r.Department = ""
	if _, err := c.Accept(r, at, ParseOptions{}); !errors.Is(err, ErrMissingCollector) {
		t.Errorf("missing department: %v", err)
	}
	r = submission()
	r.District = ""
	if _, err := c.Accept(r, at, ParseOptions{}); !errors.Is(err, ErrMissingCollector) {
		t.Errorf("missing district: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestCorrect(t *testing.T) {
	c := DefaultCatalog()
	first, err := c.Accept(submission(), at, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	later := at.Add(48 * time.Hour)
	next, err := c.Correct(first, Correction{CatalogItem: ptr("FOOD-SAFETY-SERIOUS"), Summary: ptr("销售过期食品，情节严重")}, "复核认定情节严重", later, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if next.Version != 2 || next.Reason != "复核认定情节严重" || !next.RecordedAt.Equal(later) {
		t.Errorf("version/reason/time = %d %q %v", next.Version, next.Reason, next.RecordedAt)
	}
	if next.ID != first.ID || next.Department != first.Department || next.District != first.District || next.Subject != first.Subject {
		t.Error("identity fields changed")
	}
	if next.Severity != Serious || next.CatalogItem != "FOOD-SAFETY-SERIOUS" || next.Status != StatusActive {
		t.Errorf("corrected record = %+v", next)
	}
	if first.Version != 1 || first.CatalogItem != "FOOD-DRUG-PENALTY" {
		t.Error("previous version modified")
	}
	disputed := first
	disputed.Status = StatusDisputed
	if kept, err := c.Correct(disputed, Correction{DecidedOn: ptr(d("2025-04-16"))}, "日期笔误", later, ParseOptions{}); err != nil || kept.Status != StatusDisputed {
		t.Errorf("correcting a disputed record: %v, %v", kept.Status, err)
	}

	refusals := []struct {
		name  string
		prev  Record
		fix   Correction
		why   string
		field string
	}{
		{"no change", first, Correction{Summary: ptr(first.Summary)}, "无", "correction"},
		{"nothing given", first, Correction{}, "无", "correction"},
		{"no reason", first, Correction{Summary: ptr("x")}, " ", "reason"},
		{"long reason", first, Correction{Summary: ptr("x")}, strings.Repeat("r", MaxReasonLength+1), "reason"},
		{"unknown item", first, Correction{CatalogItem: ptr("NO-SUCH")}, "r", "catalog_item"},
		{"bad dates", first, Correction{OccurredOn: ptr(d("2025-05-01"))}, "r", "occurred_on"},
		{"dropping the decision number", first, Correction{DecisionNumber: ptr("")}, "r", "decision_number"},
		{"revoked", func() Record { r := first; r.Status = StatusRevoked; return r }(), Correction{Summary: ptr("x")}, "r", "status"},
		{"superseded", func() Record { r := first; r.Status = StatusCorrected; return r }(), Correction{Summary: ptr("x")}, "r", "status"},
	}
	for _, tt := range refusals {
		_, err := c.Correct(tt.prev, tt.fix, tt.why, later, ParseOptions{})
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%s: error = %v, want field %s", tt.name, err, tt.field)
		}
	}
}

func TestTransition(t *testing.T) {
	c := DefaultCatalog()
	r, err := c.Accept(submission(), at, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := []Status{StatusDisputed, StatusActive, StatusRepaired, StatusExpired, StatusRevoked}
	for i, to := range path {
		next, err := Transition(r, to, "原因", at.Add(time.Duration(i+1)*time.Hour))
		if err != nil {
			t.Fatalf("%s → %s: %v", r.Status, to, err)
		}
		if next.Version != r.Version+1 || next.Status != to || next.Reason != "原因" || !next.SameContent(r) {
			t.Fatalf("%s → %s gave %+v", r.Status, to, next)
		}
		r = next
	}
	for _, tc := range []struct{ from, to Status }{
		{StatusRevoked, StatusActive},
		{StatusExpired, StatusActive},
		{StatusRepaired, StatusActive},
		{StatusDisputed, StatusRepaired},
		{StatusActive, StatusCorrected},
		{StatusActive, StatusActive},
		{StatusCorrected, StatusRevoked},
	} {
		prev := r
		prev.Status = tc.from
		if _, err := Transition(prev, tc.to, "原因", at); !errors.Is(err, ErrBadTransition) {
			t.Errorf("%s → %s: error = %v", tc.from, tc.to, err)
		}
	}
	r.Status = StatusActive
	if _, err := Transition(r, StatusDisputed, "", at); !errors.Is(err, ErrBadRecord) {
		t.Errorf("empty reason: %v", err)
	}
}

// TestTextWithControlCharactersIsRefused: NUL, BEL, escape sequences,
// bidirectional overrides and invisible characters (tag characters, the
// soft hyphen, invisible operators, line separators, Hangul fillers, the
// braille blank) make a record read differently from what it holds; they
// are refused naming the field, the code point and its position, never
// the text. Line breaks, tabs and the ideographic space are text.
func TestTextWithControlCharactersIsRefused(t *testing.T) {
	cat := DefaultCatalog()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	base := Record{ID: "T-1", Subject: SyntheticPerson(3, NewDate(1980, 1, 1)), CatalogItem: "FOOD-DRUG-PENALTY",
		DecisionNumber: "X〔2026〕1", OccurredOn: NewDate(2026, 5, 1), DecidedOn: NewDate(2026, 5, 10),
		Department: "market-supervision", District: "zhejiang/quzhou/kecheng"}
	opt := ParseOptions{TestOnly: true}
	for bad, at := range map[string]string{"罚款\x00五千元": "character 3 is U+0000", "bell\a": "character 5 is U+0007",
		"esc\x1b[31m": "character 4 is U+001B", "inv\u202eoice": "U+202E", "iso\u2066late": "U+2066", "zero\u200bwidth": "U+200B",
		"del\x7f": "U+007F", "罚款五千元\U000E0049\U000E0047": "character 6 is U+E0049", "罚\u00ad款": "character 2 is U+00AD",
		"罚\u2063款": "U+2063", "罚款\u2028五千元": "U+2028", "罚款\u2029": "U+2029", "罚\u3164款": "U+3164", "罚\u115f款": "U+115F",
		"罚\u1160款": "U+1160", "罚\uffa0款": "U+FFA0", "罚\u2800款": "U+2800", "罚\u180e款": "U+180E", "私\ue000用": "U+E000",
		"bom\ufeff": "U+FEFF", "zwj\u200d": "U+200D"} {
		r := base
		r.Summary = bad
		_, err := cat.Accept(r, now, opt)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "summary" || !strings.Contains(fe.Message, at) {
			t.Errorf("summary %+q: %v, want the field and %s", bad, err, at)
			continue
		}
		if strings.Contains(err.Error(), "罚款") || strings.Contains(err.Error(), "bell") {
			t.Errorf("the refusal quotes the text: %v", err)
		}
	}
	r := base
	r.Summary = "第一行\n第二行\t（制表）\u3000全角空格，e\u0301 ✓"
	accepted, err := cat.Accept(r, now, opt)
	if err != nil {
		t.Fatalf("line breaks and tabs: %v", err)
	}
	if _, err := cat.Correct(accepted, Correction{Summary: ptr("新摘要")}, "fix\u202e", now, opt); err == nil {
		t.Fatal("a reason with a bidirectional override was accepted")
	}
	r.DecisionNumber = "X\u202e1"
	if _, err := cat.Accept(r, now, opt); err == nil {
		t.Fatal("a decision number with a bidirectional override was accepted")
	}
}

// TestTextRuneIsTheUnicodeTables: TextRune's shortcuts (ASCII, the bitmap
// of the Basic Multilingual Plane) answer as the tables do for every code
// point, and for what is none.
func TestTextRuneIsTheUnicodeTables(t *testing.T) {
	bad := 0
	for r := rune(-2); r <= unicode.MaxRune+2; r++ {
		if got, want := TextRune(r), textRune(r); got != want {
			if bad++; bad <= 10 {
				t.Errorf("TextRune(U+%04X) = %v, the tables say %v", r, got, want)
			}
		}
	}
	for _, c := range []struct {
		r    rune
		want bool
	}{{'a', true}, {' ', true}, {'~', true}, {'\t', false}, {0x7f, false}, {'大', true}, {0x200B, false}, {0x3164, false}, {0x1F600, true}, {0xE000, false}} {
		if TextRune(c.r) != c.want {
			t.Errorf("TextRune(U+%04X) = %v, want %v", c.r, !c.want, c.want)
		}
	}
}
