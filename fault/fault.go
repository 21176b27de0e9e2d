// Package fault is the error a service returns when it refuses a request:
// a kind that every edge maps to its own code (HTTP status and API code,
// exchange code), and a message built on purpose to be shown to the
// caller. Any other error is internal: its text never leaves the node.
package fault

import (
	"errors"
	"fmt"
	"time"
)

// Kind is why a request was refused. The values are the API's error codes
// (API.md), so the HTTP edge answers them as they are.
type Kind string

// Kinds.
const (
	BadRequest         Kind = "bad_request"
	InvalidIdentifier  Kind = "invalid_identifier"
	UnknownCatalogItem Kind = "unknown_catalog_item"
	Unauthenticated    Kind = "unauthenticated"
	Forbidden          Kind = "forbidden"
	NotFound           Kind = "not_found"
	Conflict           Kind = "conflict"
	TooEarly           Kind = "too_early"
	TooManyRequests    Kind = "too_many_requests"
	DeadlineExceeded   Kind = "deadline_exceeded"
	Unavailable        Kind = "unavailable"
	Internal           Kind = "internal"
)

// Error is a refusal that may be shown to the caller. Message and Field
// never hold an identifier, a record's content or any other personal
// data; Cause may, and is for the node's own use (errors.Is, errors.As),
// never shown.
type Error struct {
	Kind    Kind
	Field   string // the JSON field the refusal is about, if any
	Message string
	// RetryAfter, if above zero, is how long the caller should wait
	// before asking again (a quota's reset); the HTTP edge sends it as
	// Retry-After in whole seconds, rounded up.
	RetryAfter time.Duration
	Cause      error
}

// Error implements error with the message meant for the caller.
func (e *Error) Error() string {
	if e.Field != "" {
		return string(e.Kind) + ": " + e.Field + ": " + e.Message
	}
	return string(e.Kind) + ": " + e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// New returns a refusal of kind k.
func New(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

// Field returns a refusal of kind k about one field of the request.
func Field(k Kind, field, format string, args ...any) *Error {
	return &Error{Kind: k, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns a refusal of kind k that keeps err as its (unshown) cause.
func Wrap(k Kind, err error, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...), Cause: err}
}

// As returns the refusal in err's chain, or nil.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// KindOf returns the kind of the refusal in err's chain: Internal for any
// other non-nil error, "" for nil.
func KindOf(err error) Kind {
	if err == nil {
		return ""
	}
	if e := As(err); e != nil {
		return e.Kind
	}
	return Internal
}
