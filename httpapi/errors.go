package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"credfed/api"
	"credfed/fault"
)

// codeStatus is the HTTP status of each API error code.
var codeStatus = map[string]int{
	api.CodeBadRequest:         http.StatusBadRequest,
	api.CodeInvalidIdentifier:  http.StatusBadRequest,
	api.CodeUnknownCatalogItem: http.StatusBadRequest,
	api.CodeUnauthenticated:    http.StatusUnauthorized,
	api.CodeForbidden:          http.StatusForbidden,
	api.CodeNotFound:           http.StatusNotFound,
	api.CodeConflict:           http.StatusConflict,
	api.CodeTooEarly:           http.StatusTooEarly,
	api.CodeTooManyRequests:    http.StatusTooManyRequests,
	api.CodeDeadlineExceeded:   http.StatusGatewayTimeout,
	api.CodeUnavailable:        http.StatusServiceUnavailable,
	api.CodeInternal:           http.StatusInternalServerError,
}

// errorOf is the API error of a refusal; nil if err holds none.
func errorOf(err error) *api.Error {
	e := fault.As(err)
	if e == nil {
		return nil
	}
	code := string(e.Kind)
	if _, known := codeStatus[code]; !known {
		code = api.CodeInternal
	}
	return &api.Error{Code: code, Message: e.Message, Field: e.Field}
}

// apiError is what the caller is told of a handler's error: the refusal a
// service built on purpose, a deadline, or else "internal", whose cause is
// logged by its type only (its text may carry identifiers or content).
func (s *Server) apiError(rt route, err error) *api.Error {
	if e := errorOf(err); e != nil {
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &api.Error{Code: api.CodeDeadlineExceeded, Message: "the request's deadline passed before an answer"}
	}
	s.log.Error("API request failed", "route", rt.pattern, "error_type", fmt.Sprintf("%T", err))
	return &api.Error{Code: api.CodeInternal, Message: "internal error"}
}

func writeError(w http.ResponseWriter, e *api.Error) {
	status := codeStatus[e.Code]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	// A refusal for want of room says when to try again, unless the
	// handler said so already.
	if (status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeErrorStatus(w, status, e)
}

// retryAfter is the Retry-After (seconds) of an unavailable or
// too-many-requests refusal that does not say how long to wait.
const retryAfter = "2"

// setRetryAfter sets Retry-After from a refusal that says how long to wait
// (fault.Error.RetryAfter, e.g. until a quota resets), in whole seconds
// rounded up; writeError then keeps it.
func setRetryAfter(w http.ResponseWriter, err error) {
	if e := fault.As(err); e != nil && e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10))
	}
}

func writeErrorStatus(w http.ResponseWriter, status int, e *api.Error) {
	writeJSON(w, status, api.ErrorBody{Error: e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		slog.Debug("writing response failed", "error_type", fmt.Sprintf("%T", err))
	}
}

// decodeJSON decodes one JSON value from the body into v, refusing unknown
// fields and trailing data.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return fault.New(fault.BadRequest, "request body holds more than one JSON value")
	}
	return nil
}

// jsonError turns a decoding error into a refusal safe to show: it names
// the field and the offset, never the value.
func jsonError(err error) *fault.Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return fault.New(fault.BadRequest, "request body is larger than %d bytes", tooBig.Limit)
	case errors.As(err, &syn):
		return fault.New(fault.BadRequest, "malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fault.Field(fault.BadRequest, typ.Field, "field %s must be a %s", typ.Field, typ.Type)
	case errors.Is(err, io.EOF):
		return fault.New(fault.BadRequest, "request body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fault.New(fault.BadRequest, "request body ends in the middle of a JSON value")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// The name is the caller's text: it is repeated only if it looks
		// like a field name, never if it may be an identifier or content.
		f, uerr := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		if uerr != nil || !plausibleFieldName(f) {
			return fault.New(fault.BadRequest, "the body holds an unknown field, whose name is not repeated here (field names are lowercase letters, digits and underscores)")
		}
		return fault.Field(fault.BadRequest, f, "unknown field %q", f)
	}
	if e := fault.As(err); e != nil {
		return e
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fault.New(fault.BadRequest, "the request body was not sent in time")
	}
	return fault.New(fault.BadRequest, "malformed JSON body")
}

// plausibleFieldName says whether an unknown JSON field's name may be
// repeated in a refusal: at most 64 of [a-z0-9_], starting with a letter
// and holding at most 8 digits, like the API's own names; an identifier
// (18 characters, mostly digits) is not one.
func plausibleFieldName(f string) bool {
	if f == "" || len(f) > 64 || f[0] < 'a' || f[0] > 'z' {
		return false
	}
	digits := 0
	for i := 0; i < len(f); i++ {
		switch c := f[i]; {
		case c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9':
			digits++
		default:
			return false
		}
	}
	return digits <= 8
}
