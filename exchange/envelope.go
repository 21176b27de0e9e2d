package exchange

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// EnvelopeVersion is the version of the envelope format spoken under ALPN
// credfed/1. A request with any other version is refused (bad_request).
const EnvelopeVersion = 1

// Envelope field limits (checked after decoding).
const (
	maxOpLen        = 64
	maxMetaFieldLen = 4096
)

// Meta is the context the caller states for a request: why it asks, for
// whom, under which case and authorization. The server records it in its
// audit log and checks it against the catalog's purposes; the exchange only
// carries it. Values may name persons (User) or hold references that
// identify them: they are never logged or put in metrics by this package.
type Meta struct {
	// Purpose is a purpose code of the catalog.
	Purpose string `cbor:"1,keyasint,omitempty"`
	// User names the end user on whose behalf the calling node asks.
	User string `cbor:"2,keyasint,omitempty"`
	// Reference is the case or business reference of the request.
	Reference string `cbor:"3,keyasint,omitempty"`
	// Authorization is the reference of the subject's authorization, where
	// the purpose requires one.
	Authorization string `cbor:"4,keyasint,omitempty"`
	// Authentication says how a subject-facing portal verified the subject
	// (real-name authentication reference).
	Authentication string `cbor:"5,keyasint,omitempty"`
	// LookupID is the federation-wide id of the lookup or check the request
	// serves, registered in the audit entries at both ends.
	LookupID string `cbor:"6,keyasint,omitempty"`
}

// Check applies the envelope's bounds to m (each field at most 4096
// bytes), for a Meta that travels inside a body (the items of a batch),
// where the envelope's own check does not reach.
func (m *Meta) Check() error { return m.check() }

func (m *Meta) check() error {
	for _, f := range [...]struct{ name, v string }{
		{"purpose", m.Purpose}, {"user", m.User}, {"reference", m.Reference},
		{"authorization", m.Authorization}, {"authentication", m.Authentication}, {"lookup id", m.LookupID},
	} {
		if len(f.v) > maxMetaFieldLen {
			return fmt.Errorf("meta field %s longer than %d bytes", f.name, maxMetaFieldLen)
		}
	}
	return nil
}

// requestEnvelope is the CBOR map sent by the caller: integer keys, see
// docs/exchange.md.
type requestEnvelope struct {
	Version   uint64 `cbor:"1,keyasint"`
	Op        string `cbor:"2,keyasint"`
	ID        uint64 `cbor:"3,keyasint"`
	TimeoutMS uint64 `cbor:"4,keyasint,omitempty"` // remaining time, ms; 0 or absent: none
	Meta      Meta   `cbor:"5,keyasint"`
	Body      []byte `cbor:"6,keyasint,omitempty"` // one encoded CBOR item, or empty
}

// responseEnvelope is the CBOR map the server answers with.
type responseEnvelope struct {
	Version uint64     `cbor:"1,keyasint"`
	ID      uint64     `cbor:"3,keyasint"`
	Body    []byte     `cbor:"6,keyasint,omitempty"`
	Error   *wireError `cbor:"7,keyasint,omitempty"`
}

type wireError struct {
	Code    string `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint,omitempty"`
}

// CBOR modes, built once. Encoding is Core Deterministic (RFC 8949 §4.2.1):
// sorted map keys, shortest forms, no indefinite lengths. The envelope
// decoder is tight (it only ever sees the small envelope map; the body is a
// byte string it does not parse); the body decoder allows what requests
// really need (batches of ten thousand subjects) and no more.
var (
	encMode     cbor.EncMode
	envDecMode  cbor.DecMode
	bodyDecMode cbor.DecMode
)

// Body decoding limits (BodyDecOptions documents them).
const (
	bodyMaxNesting  = 16
	bodyMaxArray    = 65536
	bodyMaxMapPairs = 16384
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	if envDecMode, err = (cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  4,
		MaxArrayElements: 16,
		MaxMapPairs:      32,
		UTF8:             cbor.UTF8RejectInvalid,
	}).DecMode(); err != nil {
		panic(err)
	}
	if bodyDecMode, err = BodyDecOptions().DecMode(); err != nil {
		panic(err)
	}
}

// BodyDecOptions returns the decode options applied to request and response
// bodies: duplicate map keys rejected, indefinite lengths forbidden, nesting
// at most 16, arrays at most 65,536 elements, maps at most 16,384 pairs,
// invalid UTF-8 rejected. Unknown struct fields are ignored, so that fields
// can be added to a body without breaking older peers. The frame limit caps
// the total size.
func BodyDecOptions() cbor.DecOptions {
	return cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  bodyMaxNesting,
		MaxArrayElements: bodyMaxArray,
		MaxMapPairs:      bodyMaxMapPairs,
		UTF8:             cbor.UTF8RejectInvalid,
	}
}

// Marshal encodes v the way the exchange does (Core Deterministic CBOR).
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// Unmarshal decodes a body with the exchange's strict limits.
func Unmarshal(data []byte, v any) error {
	if err := bodyDecMode.Unmarshal(data, v); err != nil {
		return &Error{Code: CodeBadRequest, Message: describeDecodeError(v, err), cause: err}
	}
	return nil
}

// decodeRequest decodes and checks a request envelope.
func decodeRequest(data []byte, env *requestEnvelope) error {
	if err := envDecMode.Unmarshal(data, env); err != nil {
		return &Error{Code: CodeBadRequest, Message: "malformed envelope: " + describeDecodeError(nil, err), cause: err}
	}
	switch {
	case env.Version != EnvelopeVersion:
		return Errorf(CodeBadRequest, "unsupported envelope version %d (want %d)", env.Version, EnvelopeVersion)
	case env.Op == "":
		return Errorf(CodeBadRequest, "envelope names no operation")
	case len(env.Op) > maxOpLen:
		return Errorf(CodeBadRequest, "operation name longer than %d bytes", maxOpLen)
	}
	if err := env.Meta.check(); err != nil {
		return Errorf(CodeBadRequest, "%v", err)
	}
	return nil
}

// decodeResponse decodes a response envelope.
func decodeResponse(data []byte, env *responseEnvelope) error {
	if err := envDecMode.Unmarshal(data, env); err != nil {
		return &Error{Code: CodeBadRequest, Message: "malformed response envelope: " + describeDecodeError(nil, err), cause: err}
	}
	if env.Version != EnvelopeVersion {
		return Errorf(CodeBadRequest, "unsupported response envelope version %d", env.Version)
	}
	return nil
}

// describeDecodeError says why data did not decode without quoting any of
// the data: a duplicate map key, for one, could be an identifier.
func describeDecodeError(v any, err error) string {
	var (
		dup  *cbor.DupMapKeyError
		typ  *cbor.UnmarshalTypeError
		syn  *cbor.SyntaxError
		ext  *cbor.ExtraneousDataError
		nest *cbor.MaxNestedLevelError
		arr  *cbor.MaxArrayElementsError
		mp   *cbor.MaxMapPairsError
		ind  *cbor.IndefiniteLengthError
		tag  *cbor.TagsMdError
		sem  *cbor.SemanticError
	)
	what := "CBOR"
	if v != nil {
		what = strings.TrimPrefix(reflect.TypeOf(v).String(), "*")
	}
	switch {
	case errors.As(err, &dup):
		return fmt.Sprintf("duplicate map key at element %d", dup.Index)
	case errors.As(err, &typ):
		// Built from the types and the field name only: the library's
		// own message may quote a value.
		if typ.StructFieldName != "" {
			return "cannot decode CBOR " + typ.CBORType + " into field " + typ.StructFieldName + " of type " + typ.GoType
		}
		return "cannot decode CBOR " + typ.CBORType + " into " + typ.GoType
	case errors.As(err, &syn), errors.As(err, &ext), errors.As(err, &nest),
		errors.As(err, &arr), errors.As(err, &mp), errors.As(err, &ind), errors.As(err, &tag),
		errors.As(err, &sem):
		// Messages about structure and limits, never about values.
		return strings.TrimPrefix(err.Error(), "cbor: ")
	}
	return "not a valid " + what
}

// NewID returns a fresh federation-wide request id for Meta.LookupID:
// prefix, "-" and 26 random base32 characters (128 bits).
func NewID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// ValidID reports whether id has the form NewID(prefix) gives: a node keeps
// an asking node's id in its audit entry only if it does.
func ValidID(prefix, id string) bool {
	rest, ok := strings.CutPrefix(id, prefix+"-")
	if !ok || len(rest) != 26 {
		return false
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}
