package exchange

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/quic-go/quic-go"

	"credfed/certs"
)

// Code is the machine-readable class of an error that crosses the wire. It is
// sent as a text string; a peer that receives a code it does not know keeps
// it as is (errors.Is then matches no sentinel and fan-out reports it as a
// plain error).
type Code string

// Wire error codes. docs/exchange.md lists them with their meaning for
// clients in other languages.
const (
	// CodeBadRequest: the request was malformed (frame, envelope or body) or
	// broke a protocol rule. Retrying it unchanged fails again.
	CodeBadRequest Code = "bad_request"
	// CodeUnauthenticated: a certificate was refused (revoked, suspended,
	// expired, untrusted, wrong federation, not a node, or not the peer the
	// caller expected).
	CodeUnauthenticated Code = "unauthenticated"
	// CodeForbidden: the caller is authenticated but may not do this.
	CodeForbidden Code = "forbidden"
	// CodeNotFound: unknown operation, or the thing asked for does not exist.
	CodeNotFound Code = "not_found"
	// CodeConflict: the request contradicts the state the server holds
	// (e.g. the same id with other content).
	CodeConflict Code = "conflict"
	// CodeDeadlineExceeded: the request's deadline passed before an answer.
	CodeDeadlineExceeded Code = "deadline_exceeded"
	// CodeTooManyRequests: the caller exceeded its rate limit for this
	// operation; retry later, not at once.
	CodeTooManyRequests Code = "too_many_requests"
	// CodeTooEarly: what was asked may be done only from a later day (a
	// credit repair before the record's minimum publicity period ends).
	CodeTooEarly Code = "too_early"
	// CodeUnavailable: the peer could not be reached or is overloaded or
	// shutting down; the request was not carried out (or, for a connection
	// lost mid-request, its outcome is unknown — see the Call docs).
	CodeUnavailable Code = "unavailable"
	// CodeInternal: the server failed; the message is deliberately generic.
	CodeInternal Code = "internal"
	// CodeCanceled: the caller's context was canceled. Local only: a
	// server never sends it.
	CodeCanceled Code = "canceled"
)

// Error is a typed exchange error: what a handler returns to be sent to the
// caller, and what Call returns for a failure, whether it came over the
// wire or happened locally (dial, handshake, deadline).
//
// Message is meant to be read by the caller's operators: handlers build it
// on purpose (Errorf) and never put personal data into it.
type Error struct {
	Code    Code
	Message string
	// cause is a local cause kept for errors.Is/As (e.g. a
	// *certs.VerifyError for a server certificate we refused); it never
	// crosses the wire.
	cause error
}

// Sentinel errors, one per wire code: errors.Is(err, ErrForbidden) holds for
// any *Error (or error wrapping one) whose Code is CodeForbidden, on the
// handler's side and on the client's.
var (
	// ErrBadRequest matches CodeBadRequest.
	ErrBadRequest = &Error{Code: CodeBadRequest}
	// ErrUnauthenticated matches CodeUnauthenticated: a refused certificate,
	// ours or the peer's.
	ErrUnauthenticated = &Error{Code: CodeUnauthenticated}
	// ErrForbidden matches CodeForbidden.
	ErrForbidden = &Error{Code: CodeForbidden}
	// ErrNotFound matches CodeNotFound.
	ErrNotFound = &Error{Code: CodeNotFound}
	// ErrConflict matches CodeConflict.
	ErrConflict = &Error{Code: CodeConflict}
	// ErrDeadlineExceeded matches CodeDeadlineExceeded.
	ErrDeadlineExceeded = &Error{Code: CodeDeadlineExceeded}
	// ErrTooManyRequests matches CodeTooManyRequests.
	ErrTooManyRequests = &Error{Code: CodeTooManyRequests}
	// ErrUnavailable matches CodeUnavailable: unreachable, overloaded or
	// shutting down.
	ErrUnavailable = &Error{Code: CodeUnavailable}
	// ErrInternal matches CodeInternal.
	ErrInternal = &Error{Code: CodeInternal}
	// ErrCanceled matches CodeCanceled (local only).
	ErrCanceled = &Error{Code: CodeCanceled}
)

// Errorf builds an error to send to the caller. The message is formatted
// like fmt.Sprintf; it crosses the wire, so it must not hold personal data.
// A %w verb is not honoured: wrap the result instead.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "exchange: " + string(e.Code)
	}
	return "exchange: " + string(e.Code) + ": " + e.Message
}

// Is reports whether target is the sentinel of e's code (a *Error without a
// message), so that errors.Is(err, ErrForbidden) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.cause == nil && t.Code == e.Code
}

// Unwrap returns the local cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// CodeOf returns the code of err: that of the *Error it holds, internal for
// any other non-nil error, "" for nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Application error codes with which this package closes QUIC connections.
// The peer maps them back to typed errors.
const (
	closeNoError       quic.ApplicationErrorCode = 0x0
	closeShutdown      quic.ApplicationErrorCode = 0x1 // endpoint closing
	closeRevoked       quic.ApplicationErrorCode = 0x2 // peer certificate revoked or suspended
	closeExpired       quic.ApplicationErrorCode = 0x3 // peer certificate expired
	closeTooManyConns  quic.ApplicationErrorCode = 0x4 // per-identity or total connection cap
	closeProtocolError quic.ApplicationErrorCode = 0x5 // e.g. unidirectional streams, which we do not use
	closeNotAdmitted   quic.ApplicationErrorCode = 0x6 // raft: the peer is not admitted (Config.AdmitRaft); the reason says why
)

// Stream error codes used with CancelRead/CancelWrite.
const (
	streamCanceled quic.StreamErrorCode = 0x10 // caller gave up (context)
	streamRefused  quic.StreamErrorCode = 0x11 // request not read (limits, malformed)
	streamDone     quic.StreamErrorCode = 0x12 // answer sent, no more input wanted
	streamClosed   quic.StreamErrorCode = 0x13 // raft net.Conn closed
)

// TLS alert numbers that matter here (RFC 8446 §6).
const (
	alertNoApplicationProtocol = 120
)

// connError turns a failure of a QUIC connection (dialing, opening or using
// a stream) into a typed *Error. peer names the peer for the message.
func connError(peer string, err error) *Error {
	var (
		te *quic.TransportError
		ae *quic.ApplicationError
		ve *certs.VerifyError
		ne net.Error
	)
	switch {
	case errors.As(err, &te) && te.ErrorCode >= 0x100 && te.ErrorCode < 0x200:
		alert := uint8(te.ErrorCode - 0x100)
		if alert == alertNoApplicationProtocol {
			return &Error{Code: CodeBadRequest, Message: peer + " does not speak " + ALPN, cause: err}
		}
		if te.Remote {
			return &Error{Code: CodeUnauthenticated, cause: err,
				Message: fmt.Sprintf("%s refused our certificate (TLS alert %q)", peer, tls.AlertError(alert).Error())}
		}
		// We refused the server: either our VerifyConnection (a
		// *certs.VerifyError) or Go's own chain and host name check,
		// which the certs configuration leaves on.
		if !errors.As(err, &ve) {
			ve = x509Reason(err)
		}
		return &Error{Code: CodeUnauthenticated, Message: peer + " presented a certificate we refuse: " + ve.Error(),
			cause: errors.Join(ve, err)}
	case errors.As(err, &ae) && ae.Remote:
		switch ae.ErrorCode {
		case closeRevoked:
			return &Error{Code: CodeUnauthenticated, Message: peer + " closed the connection: our certificate was revoked or suspended", cause: err}
		case closeExpired:
			return &Error{Code: CodeUnauthenticated, Message: peer + " closed the connection: our certificate expired", cause: err}
		case closeTooManyConns:
			return &Error{Code: CodeUnavailable, Message: peer + " refused the connection: too many connections", cause: err}
		case closeShutdown:
			return &Error{Code: CodeUnavailable, Message: peer + " is shutting down", cause: err}
		case closeNotAdmitted:
			msg := peer + " does not admit this node"
			if reason := ae.ErrorMessage; reason != "" {
				msg += ": " + reason[:min(len(reason), maxCloseReason)]
			}
			return &Error{Code: CodeForbidden, Message: msg, cause: err}
		}
		return &Error{Code: CodeUnavailable, Message: fmt.Sprintf("%s closed the connection (code %#x)", peer, uint64(ae.ErrorCode)), cause: err}
	case errors.Is(err, context.Canceled):
		return &Error{Code: CodeCanceled, Message: "canceled before " + peer + " answered", cause: err}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return &Error{Code: CodeDeadlineExceeded, Message: "no answer from " + peer + " before the deadline", cause: err}
	case errors.As(err, &ne) && ne.Timeout():
		// Handshake or idle timeout: nothing heard from the peer.
		return &Error{Code: CodeUnavailable, Message: peer + " is unreachable (" + err.Error() + ")", cause: err}
	}
	return &Error{Code: CodeUnavailable, Message: peer + " is unreachable (" + err.Error() + ")", cause: err}
}

// verifyReason names the reason of a certificate refusal for metrics and
// logs: a fixed, small set of values.
func verifyReason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{certs.ErrRevoked, "revoked"},
		{certs.ErrSuspended, "suspended"},
		{certs.ErrExpired, "expired"},
		{certs.ErrNotYetValid, "not_yet_valid"},
		{certs.ErrWrongFederation, "wrong_federation"},
		{certs.ErrNoIdentity, "no_identity"},
		{certs.ErrUntrusted, "untrusted"},
		{certs.ErrNoCertificate, "no_certificate"},
		{errNotNode, "not_a_node"},
		{certs.ErrWrongUsage, "wrong_usage"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}

// x509Reason classifies a failure of Go's own certificate verification.
func x509Reason(err error) *certs.VerifyError {
	var (
		unk  x509.UnknownAuthorityError
		inv  x509.CertificateInvalidError
		host x509.HostnameError
	)
	switch {
	case errors.As(err, &unk):
		return &certs.VerifyError{Reason: certs.ErrUntrusted}
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		if inv.Cert != nil && time.Now().Before(inv.Cert.NotBefore) {
			return &certs.VerifyError{Reason: certs.ErrNotYetValid}
		}
		return &certs.VerifyError{Reason: certs.ErrExpired}
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return &certs.VerifyError{Reason: certs.ErrWrongUsage}
	case errors.As(err, &host):
		return &certs.VerifyError{Reason: certs.ErrUntrusted, Detail: "certificate not valid for " + host.Host}
	}
	return &certs.VerifyError{Reason: certs.ErrUntrusted, Detail: "verification failed"}
}

// WireMessage is what an answer says about a peer's error: its code and
// the peer's message (which handlers build to be shown), or "error" for a
// local failure whose text may say more than a caller should see.
func WireMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		if e.Message == "" {
			return string(e.Code)
		}
		return string(e.Code) + ": " + e.Message
	}
	return "error"
}
