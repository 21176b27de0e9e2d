package certs

import "errors"

// Sentinel errors. Verification failures are *VerifyError values that match
// one of the Err* reasons below with errors.Is.
var (
	// ErrBadIdentity: an identity or one of its parts is malformed.
	ErrBadIdentity = errors.New("certs: malformed identity")
	// ErrUntrusted: the chain does not lead to the federation's CA.
	ErrUntrusted = errors.New("certs: certificate not issued by the federation CA")
	// ErrExpired: the certificate's validity has ended.
	ErrExpired = errors.New("certs: certificate expired")
	// ErrNotYetValid: the certificate's validity has not begun.
	ErrNotYetValid = errors.New("certs: certificate not yet valid")
	// ErrWrongFederation: the identity names another federation.
	ErrWrongFederation = errors.New("certs: certificate belongs to another federation")
	// ErrNoIdentity: the certificate has no (or more than one) spiffe URI SAN.
	ErrNoIdentity = errors.New("certs: certificate carries no single spiffe identity")
	// ErrWrongUsage: the certificate may not be used this way (key usage, or
	// a user certificate presented by a node).
	ErrWrongUsage = errors.New("certs: certificate not valid for this use")
	// ErrRevoked: the certificate's serial number is on the revocation list.
	ErrRevoked = errors.New("certs: certificate revoked")
	// ErrSuspended: the certificate's identity is suspended.
	ErrSuspended = errors.New("certs: identity suspended")
	// ErrNoCertificate: the peer presented no certificate where one is required.
	ErrNoCertificate = errors.New("certs: no certificate presented")
	// ErrBadPEM: a file does not hold the PEM blocks expected.
	ErrBadPEM = errors.New("certs: malformed PEM")
	// ErrBadCSR: a certificate signing request is malformed, unsigned by
	// its key, or for a key the federation does not use.
	ErrBadCSR = errors.New("certs: bad certificate signing request")
	// ErrNotRoot: an operation of the root CA asked of another CA.
	ErrNotRoot = errors.New("certs: not the root CA")
)

// VerifyError says why a presented certificate was refused. Reason is one of
// the sentinel errors above; Subject names the certificate (its identity URI
// or serial) without any personal data, since identities are institutions
// and regions, never persons.
type VerifyError struct {
	Reason  error
	Subject string
	Detail  string
}

func (e *VerifyError) Error() string {
	msg := e.Reason.Error()
	if e.Subject != "" {
		msg += " (" + e.Subject + ")"
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap lets errors.Is match the reason.
func (e *VerifyError) Unwrap() error { return e.Reason }
