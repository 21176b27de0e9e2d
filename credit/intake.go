package credit

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on submitted fields.
const (
	MaxRecordIDLength       = 128  // bytes
	MaxDecisionNumberLength = 128  // bytes
	MaxSummaryLength        = 4096 // bytes
	MaxReasonLength         = 1024 // bytes
)

// minRecordDate is the earliest occurrence or decision date accepted.
var minRecordDate = NewDate(1900, time.January, 1)

// Accept validates a submitted record against the catalog and returns it as
// the first version to store. The caller sets Department and District from
// the verified certificate before calling (ErrMissingCollector otherwise);
// the submitted fields are ID, Subject, CatalogItem, DecisionNumber,
// OccurredOn, DecidedOn and Summary, and any other field of r is ignored.
//
// The accepted record has its subject in canonical form, Polarity, Severity
// and LegalBasis inherited from the item, CatalogVersion set to the
// catalog's, Status active, Version 1, RecordedAt at (UTC) and no Reason.
//
// Rules, each refused with a *FieldError naming the field:
//   - id: 1 to 128 bytes of printable UTF-8, no '/' (it appears in URLs);
//   - catalog_item: known to the catalog (CodeUnknownCatalogItem);
//   - subject: a valid identifier of the item's subject kind
//     (CodeInvalidIdentifier, wrapping the *IdentifierError; a valid
//     identifier of the other kind is CodeBadRequest);
//   - decision_number: required for negative items (a penalty, judgment or
//     listing always has a document number), at most 128 bytes, printable;
//   - occurred_on and decided_on: given, not before 1900-01-01, occurred_on ≤
//     decided_on ≤ today;
//   - summary: at most 4 KiB of visible text, line breaks and tabs
//     (TextRune: no control, format or invisible character).
//
// Today is opt.Today if set, otherwise the date of at in China Standard
// Time; it also bounds the birth date in the identifier.
func (c *Catalog) Accept(r Record, at time.Time, opt ParseOptions) (Record, error) {
	if r.Department == "" || r.District == "" {
		return Record{}, ErrMissingCollector
	}
	if err := checkRecordID(r.ID); err != nil {
		return Record{}, err
	}
	out, err := c.validateContent(r, at, opt)
	if err != nil {
		return Record{}, err
	}
	out.Status = StatusActive
	out.Version = 1
	out.Reason = ""
	return out, nil
}

// validateContent checks the submitted fields other than the id and returns
// the record with its subject canonical and the item's fields inherited.
func (c *Catalog) validateContent(r Record, at time.Time, opt ParseOptions) (Record, error) {
	today := opt.Today
	if today == 0 {
		today = TodayAt(at)
		opt.Today = today
	}
	if r.CatalogItem == "" {
		return Record{}, badField("catalog_item", "required")
	}
	it, ok := c.Item(r.CatalogItem)
	if !ok {
		// Never the code given: a caller may have put an identifier there.
		return Record{}, &FieldError{Code: CodeUnknownCatalogItem, Field: "catalog_item",
			Message: "catalog item is not in catalog version " + strconv.Itoa(c.Version) + " (GET /v1/catalog lists the items)"}
	}
	sub, err := parseSubjectFor(r.Subject, it, opt)
	if err != nil {
		return Record{}, err
	}
	if r.DecisionNumber == "" && it.Polarity == Negative {
		return Record{}, badField("decision_number", "required for negative records")
	}
	if len(r.DecisionNumber) > MaxDecisionNumberLength || !printable(r.DecisionNumber) {
		return Record{}, badField("decision_number", "must be at most %d bytes of printable text", MaxDecisionNumberLength)
	}
	if err := checkText("summary", r.Summary, MaxSummaryLength); err != nil {
		return Record{}, err
	}
	if err := checkDates(r.OccurredOn, r.DecidedOn, today); err != nil {
		return Record{}, err
	}
	r.Subject = sub.ID
	r.Polarity = it.Polarity
	r.Severity = it.Severity
	r.LegalBasis = it.LegalBasis
	r.CatalogVersion = c.Version
	r.RecordedAt = at.UTC()
	return r, nil
}

// parseSubjectFor parses the subject as the item's kind. A valid identifier
// of the other kind is a bad request (wrong item or wrong subject), anything
// else an invalid identifier explained as the kind the item expects.
func parseSubjectFor(s string, it Item, opt ParseOptions) (Subject, error) {
	if strings.TrimSpace(s) == "" {
		return Subject{}, badField("subject", "required")
	}
	sub, err := ParseSubjectAs(s, it.SubjectKind, opt)
	if err == nil {
		return sub, nil
	}
	if other, oerr := ParseSubject(s, opt); oerr == nil && other.Kind != it.SubjectKind {
		return Subject{}, badField("subject", "catalog item is for %s subjects, not %s", it.SubjectKind, other.Kind)
	}
	msg := "invalid identifier"
	var ie *IdentifierError
	if errors.As(err, &ie) {
		msg = ie.Message
	}
	return Subject{}, &FieldError{Code: CodeInvalidIdentifier, Field: "subject", Message: msg, Err: err}
}

func checkRecordID(id string) error {
	switch {
	case id == "":
		return badField("id", "required")
	case len(id) > MaxRecordIDLength:
		return badField("id", "must be at most %d bytes, got %d", MaxRecordIDLength, len(id))
	case !printable(id):
		return badField("id", "must be printable UTF-8")
	case strings.ContainsRune(id, '/'):
		return badField("id", "must not contain '/'")
	}
	return nil
}

// printable reports whether s is valid UTF-8 of printable characters
// (spaces included, control characters and blank ones not).
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || !TextRune(r) {
			return false
		}
	}
	return true
}

// textCategories are the Unicode categories of text a person reads:
// letters, marks, numbers, punctuation, symbols and space separators.
var textCategories = []*unicode.RangeTable{unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Zs}

// TextRune reports whether r may appear in text a person reads (a record's
// summary, a reason, a lookup's case reference): a letter, mark, number,
// punctuation, symbol or space separator, except the characters of those
// categories that show nothing — the Hangul fillers (U+115F, U+1160,
// U+3164, U+FFA0), the braille blank (U+2800), the combining grapheme
// joiner (U+034F) and the Khmer inherent vowels (U+17B4, U+17B5). Control
// and format characters (bidirectional controls, zero-width characters,
// the soft hyphen, tag characters), line and paragraph separators,
// private-use and unassigned code points are not text.
func TextRune(r rune) bool {
	switch {
	case r >= 0 && r < utf8.RuneSelf:
		// ASCII: the space and the visible characters (letters, digits,
		// punctuation, symbols); not the controls or DEL.
		return r >= ' ' && r < 0x7f
	case r >= 0 && r < 1<<16:
		return textRuneBMP()[r/64]&(1<<(r%64)) != 0
	}
	return textRune(r)
}

// textRuneBMP is textRune for each code point of the Basic Multilingual
// Plane, where nearly all text is, a bit each (8 KiB), built on first use:
// the Unicode tables are searched once per code point, not once per
// character of every text checked.
var textRuneBMP = sync.OnceValue(func() *[1 << 16 / 64]uint64 {
	var t [1 << 16 / 64]uint64
	for r := rune(0); r < 1<<16; r++ {
		if textRune(r) {
			t[r/64] |= 1 << (r % 64)
		}
	}
	return &t
})

// textRune is TextRune from the Unicode tables.
func textRune(r rune) bool {
	switch r {
	case 0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x034F, 0x17B4, 0x17B5:
		return false
	}
	return unicode.IsOneOf(textCategories, r)
}

// checkText refuses free text (a summary, a reason) that is too long, not
// UTF-8, or holds anything but text (TextRune), line breaks and tabs: NUL,
// BEL, escape sequences, bidirectional overrides, invisible characters,
// which make a record read differently from what it holds. The message
// names the character's code point and position (in characters, from 1),
// never the text.
func checkText(field, s string, max int) error {
	if len(s) > max {
		return badField(field, "must be at most %d bytes, got %d", max, len(s))
	}
	if !utf8.ValidString(s) {
		return badField(field, "must be valid UTF-8")
	}
	pos := 0
	for _, r := range s {
		pos++
		if r == '\n' || r == '\t' || TextRune(r) {
			continue
		}
		return badField(field, "must hold only visible text, line breaks and tabs: character %d is U+%04X, a control, format or invisible character", pos, r)
	}
	return nil
}

func checkDates(occurred, decided, today Date) error {
	switch {
	case occurred == 0:
		return badField("occurred_on", "required")
	case decided == 0:
		return badField("decided_on", "required")
	case occurred < minRecordDate:
		return badField("occurred_on", "must not be before 1900-01-01")
	case decided < minRecordDate:
		return badField("decided_on", "must not be before 1900-01-01")
	case occurred > decided:
		return badField("occurred_on", "must not be after decided_on")
	case decided > today:
		return badField("decided_on", "must not be after today (%s)", today)
	}
	return nil
}

// Correction holds the fields a department corrects; nil fields stay as
// they were. The id, the subject, the department and the district cannot be
// corrected: a record about the wrong subject is revoked and submitted anew,
// so that no subject's index entry silently changes hands.
type Correction struct {
	CatalogItem    *string `json:"catalog_item,omitempty"`
	DecisionNumber *string `json:"decision_number,omitempty"`
	OccurredOn     *Date   `json:"occurred_on,omitempty"`
	DecidedOn      *Date   `json:"decided_on,omitempty"`
	Summary        *string `json:"summary,omitempty"`
}

// Correct returns the next version of prev with the corrections applied:
// Version+1, Reason set, RecordedAt at, and the content validated again by
// Accept's rules against the current catalog (so Polarity, Severity,
// LegalBasis and CatalogVersion follow a corrected catalog item). The status
// is kept. Records whose status is revoked or corrected (superseded) cannot
// be corrected; a correction that changes nothing and an empty reason (or
// one longer than 1 KiB) are refused with a *FieldError.
func (c *Catalog) Correct(prev Record, fields Correction, reason string, at time.Time, opt ParseOptions) (Record, error) {
	switch prev.Status {
	case StatusRevoked, StatusCorrected:
		return Record{}, badField("status", "a %s record cannot be corrected", prev.Status)
	}
	if err := checkReason(reason); err != nil {
		return Record{}, err
	}
	next := prev
	if fields.CatalogItem != nil {
		next.CatalogItem = *fields.CatalogItem
	}
	if fields.DecisionNumber != nil {
		next.DecisionNumber = *fields.DecisionNumber
	}
	if fields.OccurredOn != nil {
		next.OccurredOn = *fields.OccurredOn
	}
	if fields.DecidedOn != nil {
		next.DecidedOn = *fields.DecidedOn
	}
	if fields.Summary != nil {
		next.Summary = *fields.Summary
	}
	if next.SameContent(prev) {
		return Record{}, badField("correction", "changes nothing")
	}
	out, err := c.validateContent(next, at, opt)
	if err != nil {
		return Record{}, err
	}
	out.Status = prev.Status
	out.Version = prev.Version + 1
	out.Reason = reason
	return out, nil
}

func checkReason(reason string) error {
	if strings.TrimSpace(reason) == "" {
		return badField("reason", "required")
	}
	return checkText("reason", reason, MaxReasonLength)
}

// transitions lists the status changes a record's life allows. Corrections
// are not status changes (see Correct); superseded versions are marked
// corrected by the store, never through Transition.
var transitions = map[Status][]Status{
	StatusActive:   {StatusDisputed, StatusRepaired, StatusExpired, StatusRevoked},
	StatusDisputed: {StatusActive, StatusExpired, StatusRevoked},
	StatusRepaired: {StatusExpired, StatusRevoked},
	StatusExpired:  {StatusRevoked},
}

// CanTransition reports whether a record may go from one status to another.
func CanTransition(from, to Status) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Transition returns the next version of prev with its status changed:
// an objection opens (active → disputed) or is resolved (disputed → active
// when the record stands, → revoked when it is withdrawn), a repair is
// approved (active → repaired), the display period ends (→ expired).
// Version+1, Reason set (required), RecordedAt at; the content is unchanged.
// A change the table does not allow matches ErrBadTransition.
func Transition(prev Record, to Status, reason string, at time.Time) (Record, error) {
	if !CanTransition(prev.Status, to) {
		return Record{}, &transitionError{from: prev.Status, to: to}
	}
	if err := checkReason(reason); err != nil {
		return Record{}, err
	}
	next := prev
	next.Status = to
	next.Version = prev.Version + 1
	next.Reason = reason
	next.RecordedAt = at.UTC()
	return next, nil
}

type transitionError struct{ from, to Status }

// Error implements error.
func (e *transitionError) Error() string {
	return "credit: a record cannot go from " + string(e.from) + " to " + string(e.to)
}

// Is reports whether target is ErrBadTransition.
func (e *transitionError) Is(target error) bool { return target == ErrBadTransition }
