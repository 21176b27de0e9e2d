package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"credfed/certs"
)

// API error codes (API.md): the only values of "code" in an error body.
const (
	codeBadRequest         = "bad_request"
	codeInvalidIdentifier  = "invalid_identifier"
	codeUnknownCatalogItem = "unknown_catalog_item"
	codeUnauthenticated    = "unauthenticated"
	codeForbidden          = "forbidden"
	codeNotFound           = "not_found"
	codeConflict           = "conflict"
	codeTooEarly           = "too_early"
	codeDeadlineExceeded   = "deadline_exceeded"
	codeUnavailable        = "unavailable"
	codeInternal           = "internal"
)

var codeStatus = map[string]int{
	codeBadRequest:         http.StatusBadRequest,
	codeInvalidIdentifier:  http.StatusBadRequest,
	codeUnknownCatalogItem: http.StatusBadRequest,
	codeUnauthenticated:    http.StatusUnauthorized,
	codeForbidden:          http.StatusForbidden,
	codeNotFound:           http.StatusNotFound,
	codeConflict:           http.StatusConflict,
	codeTooEarly:           http.StatusTooEarly,
	codeDeadlineExceeded:   http.StatusGatewayTimeout,
	codeUnavailable:        http.StatusServiceUnavailable,
	codeInternal:           http.StatusInternalServerError,
}

// apiError is an error built on purpose to be shown to the caller. Any
// other error a handler returns is answered "internal" with a generic
// message and logged without its text reaching the caller.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, args ...any) *apiError {
	return &apiError{Code: code, Message: fmt.Sprintf(format, args...)}
}

func fieldError(code, field, format string, args ...any) *apiError {
	return &apiError{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// caller is who is calling the API: the verified client certificate's
// identity, or nobody.
type caller struct {
	id     certs.Identity
	authed bool
}

// access says which callers a route admits.
type access struct {
	roles  []certs.Role // admitted roles; empty with anyCert means any certificate
	any    bool         // any certificate of the federation
	public bool         // no certificate needed
}

func roles(r ...certs.Role) access { return access{roles: r} }

var (
	anyCertificate = access{any: true}
	publicAccess   = access{public: true}
)

func (a access) admits(c caller) *apiError {
	if a.public {
		return nil
	}
	if !c.authed {
		return errorf(codeUnauthenticated, "this route needs a client certificate of the federation")
	}
	if a.any || slices.Contains(a.roles, c.id.Role) {
		return nil
	}
	names := make([]string, len(a.roles))
	for i, r := range a.roles {
		names[i] = string(r)
	}
	return errorf(codeForbidden, "a %s certificate may not use this route (admitted: %s)", c.id.Role, strings.Join(names, ", "))
}

// route is one method and path of the API.
type route struct {
	method  string
	pattern string // net/http pattern path, e.g. /v1/records/{id}
	access  access
	// maxBody bounds the request body (default 1 MiB).
	maxBody int64
	handle  func(w http.ResponseWriter, r *http.Request, c caller) error
}

// router builds the HTTP handler of the API from routes.
func (n *Node) router(routes []route) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routes {
		rt := rt
		mux.HandleFunc(rt.method+" "+rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			n.serveRoute(rt, w, r)
		})
	}
	methods := map[string]bool{}
	for _, rt := range routes {
		methods[rt.method] = true
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// A known path with another method is 405 with Allow, not 404.
		var allow []string
		for m := range methods {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			slices.Sort(allow)
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeErrorStatus(w, http.StatusMethodNotAllowed, errorf(codeBadRequest, "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")))
			return
		}
		writeError(w, errorf(codeNotFound, "no route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func (n *Node) serveRoute(rt route, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	c := callerOf(r)
	code := "ok"
	defer func() {
		n.metrics.apiRequests.WithLabelValues(rt.method+" "+rt.pattern, code).Inc()
		n.metrics.apiLatency.WithLabelValues(rt.method + " " + rt.pattern).Observe(time.Since(start).Seconds())
	}()
	if e := rt.access.admits(c); e != nil {
		code = e.Code
		writeError(w, e)
		return
	}
	max := rt.maxBody
	if max == 0 {
		max = 1 << 20
	}
	r.Body = http.MaxBytesReader(w, r.Body, max)
	defer func() {
		if p := recover(); p != nil {
			code = codeInternal
			n.log.Error("API handler panicked", "route", rt.pattern, "panic", fmt.Sprint(p))
			writeError(w, errorf(codeInternal, "internal error"))
		}
	}()
	if err := rt.handle(w, r, c); err != nil {
		var ae *apiError
		if errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &ae) {
			ae = errorf(codeDeadlineExceeded, "the request's deadline passed before an answer")
		}
		if ae == nil && !errors.As(err, &ae) {
			// Never the error's text: it may carry identifiers or content.
			n.log.Error("API request failed", "route", rt.pattern, "error_type", fmt.Sprintf("%T", err))
			ae = errorf(codeInternal, "internal error")
		}
		code = ae.Code
		writeError(w, ae)
	}
}

// callerOf reads the identity of a client certificate that the TLS
// handshake verified (certs.Verifier.ServerConfig with OptionalClientCert).
func callerOf(r *http.Request) caller {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return caller{}
	}
	id, err := certs.PeerIdentity(*r.TLS)
	if err != nil {
		return caller{}
	}
	return caller{id: id, authed: true}
}

func writeError(w http.ResponseWriter, e *apiError) {
	status := codeStatus[e.Code]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	writeErrorStatus(w, status, e)
}

func writeErrorStatus(w http.ResponseWriter, status int, e *apiError) {
	writeJSON(w, status, map[string]*apiError{"error": e})
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
		return errorf(codeBadRequest, "request body holds more than one JSON value")
	}
	return nil
}

// jsonError turns a decoding error into a message safe to show: it names
// the field and the offset, never the value.
func jsonError(err error) *apiError {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return errorf(codeBadRequest, "request body is larger than %d bytes", tooBig.Limit)
	case errors.As(err, &syn):
		return errorf(codeBadRequest, "malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fieldError(codeBadRequest, typ.Field, "field %s must be a %s", typ.Field, typ.Type)
	case errors.Is(err, io.EOF):
		return errorf(codeBadRequest, "request body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(codeBadRequest, "request body ends in the middle of a JSON value")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return fieldError(codeBadRequest, f, "unknown field %q", f)
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return errorf(codeBadRequest, "malformed JSON body")
}

// mediaType returns the request's content type without parameters.
func mediaType(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}
