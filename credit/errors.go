package credit

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns matches one of them
// under errors.Is (file-system errors of the key files are wrapped as they
// are), so callers can map them to the API's error codes without parsing
// messages.
var (
	// ErrBadDate is returned for a date string that is not YYYY-MM-DD or
	// names a day that does not exist.
	ErrBadDate = errors.New("credit: date must be a real day written YYYY-MM-DD")

	// ErrInvalidIdentifier is matched by every *IdentifierError: a citizen
	// identity number or unified social credit code that breaks a rule.
	ErrInvalidIdentifier = errors.New("credit: invalid identifier")

	// ErrBadRecord is matched by every *FieldError: a submitted record or
	// correction that is refused.
	ErrBadRecord = errors.New("credit: bad record")

	// ErrUnknownCatalogItem is matched by the *FieldError of a record whose
	// catalog_item is not in the catalog.
	ErrUnknownCatalogItem = errors.New("credit: unknown catalog item")

	// ErrMissingCollector is returned by Accept when the caller did not set
	// Department and District from the verified certificate: a programming
	// error of the caller, not a fault of the submitter.
	ErrMissingCollector = errors.New("credit: department and district must come from the caller's certificate")

	// ErrBadTransition is returned for a status change the record's life
	// does not allow (for example from revoked back to active).
	ErrBadTransition = errors.New("credit: status change not allowed")

	// ErrInvalidCatalog is matched by every *CatalogError and by catalog
	// documents that cannot be decoded at all.
	ErrInvalidCatalog = errors.New("credit: invalid catalog")

	// ErrBadPeriod is returned for a period that is not written PnYnMnD.
	ErrBadPeriod = errors.New("credit: period must be written like P3Y, P6M, P1Y6M or P90D")

	// ErrBadPseudonymKey is returned for a pseudonym key that is not exactly
	// 32 bytes (64 hexadecimal digits in its file).
	ErrBadPseudonymKey = errors.New("credit: pseudonym key must be 32 bytes written as 64 hexadecimal digits")

	// ErrBadPseudonym is returned for a pseudonym that is not 32 hexadecimal
	// digits.
	ErrBadPseudonym = errors.New("credit: pseudonym must be 32 hexadecimal digits")

	// ErrBadPseudonymCBOR is returned for a CBOR pseudonym that is not a
	// byte string of exactly 16 bytes.
	ErrBadPseudonymCBOR = errors.New("credit: a pseudonym in CBOR must be a byte string of exactly 16 bytes")
)

// Identifier rules, the values of IdentifierError.Rule.
const (
	RuleLength                = "length"
	RuleCharset               = "charset"
	RuleProvince              = "province"
	RuleBirthDate             = "birth_date"
	RuleCheckCharacter        = "check_character"
	RuleRegistrationAuthority = "registration_authority"
	RuleOrganizationType      = "organization_type"
	RuleKind                  = "kind"
)

// IdentifierError says which rule an identifier broke. Its message never
// contains the identifier (at most the one or two characters the rule is
// about, such as a check character or a province code), so it is safe to log
// and to return to the submitter.
type IdentifierError struct {
	Rule    string // one of the Rule constants
	Message string // what is wrong, e.g. "check character is 7, expected X"
}

// Error implements error.
func (e *IdentifierError) Error() string {
	return "invalid identifier: " + e.Message
}

// Is reports whether target is ErrInvalidIdentifier.
func (e *IdentifierError) Is(target error) bool { return target == ErrInvalidIdentifier }

func idErr(rule, format string, args ...any) *IdentifierError {
	return &IdentifierError{Rule: rule, Message: fmt.Sprintf(format, args...)}
}

// API error codes carried by FieldError.Code (see API.md).
const (
	CodeBadRequest         = "bad_request"
	CodeInvalidIdentifier  = "invalid_identifier"
	CodeUnknownCatalogItem = "unknown_catalog_item"
)

// FieldError refuses a record or a correction because of one field. Code is
// the API error code to answer with, Field the JSON name of the field, and
// Message is built on purpose to be shown to the submitter: it never contains
// the subject's identifier or the record's summary.
//
// Every FieldError matches ErrBadRecord; one with Code
// CodeUnknownCatalogItem also matches ErrUnknownCatalogItem; one with Code
// CodeInvalidIdentifier wraps the *IdentifierError (errors.As finds it, and
// errors.Is matches ErrInvalidIdentifier).
type FieldError struct {
	Code    string // CodeBadRequest, CodeInvalidIdentifier or CodeUnknownCatalogItem
	Field   string // JSON field name, e.g. "subject"
	Message string
	Err     error // the underlying *IdentifierError, if any
}

// Error implements error.
func (e *FieldError) Error() string {
	return fmt.Sprintf("record field %s: %s", e.Field, e.Message)
}

// Is matches ErrBadRecord always and ErrUnknownCatalogItem for unknown items.
func (e *FieldError) Is(target error) bool {
	switch target {
	case ErrBadRecord:
		return true
	case ErrUnknownCatalogItem:
		return e.Code == CodeUnknownCatalogItem
	}
	return false
}

// Unwrap returns the underlying identifier error, if any.
func (e *FieldError) Unwrap() error { return e.Err }

func badField(field, format string, args ...any) *FieldError {
	return &FieldError{Code: CodeBadRequest, Field: field, Message: fmt.Sprintf(format, args...)}
}

// CatalogError names the catalog entry and the field that make a catalog
// invalid. Kind is "catalog", "domain", "occupation", "item", "purpose",
// "list", "scenario", "measure", "rule" or "level"; Code is the entry's code
// (for a measure "SCENARIO/MEASURE"; empty for the catalog itself).
type CatalogError struct {
	Kind    string
	Code    string
	Field   string
	Message string
}

// Error renders e.g. `catalog: item "TAX-SERIOUS" field legal_basis: required`.
func (e *CatalogError) Error() string {
	if e.Kind == "catalog" || e.Kind == "" {
		return fmt.Sprintf("catalog: field %s: %s", e.Field, e.Message)
	}
	return fmt.Sprintf("catalog: %s %q field %s: %s", e.Kind, e.Code, e.Field, e.Message)
}

// Is reports whether target is ErrInvalidCatalog.
func (e *CatalogError) Is(target error) bool { return target == ErrInvalidCatalog }
