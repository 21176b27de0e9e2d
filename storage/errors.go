package storage

import (
	"errors"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Errors returned by the package. They are compared with errors.Is; the
// messages never contain an identifier, a key or record content, so callers
// may show them to operators (API handlers still map them to codes on purpose).
var (
	// ErrNotFound: no record (or audit entry) under the given key.
	ErrNotFound = errors.New("storage: not found")
	// ErrConflict: a record with the same (department, id) and other content
	// already exists, or an update's version is not the stored latest + 1.
	ErrConflict = errors.New("storage: conflict")
	// ErrInvalidRecord: a record handed to the store lacks a key part
	// (department, id, subject), has a key part that is too long or contains
	// a NUL byte, or has a version the operation does not allow.
	ErrInvalidRecord = errors.New("storage: invalid record")
	// ErrRecordTooLarge: one record (with its index entries) does not fit in
	// a single Badger transaction.
	ErrRecordTooLarge = errors.New("storage: record too large")
	// ErrClosed: the DB has been closed.
	ErrClosed = errors.New("storage: closed")

	// ErrWrongKey: the encryption key given to Open is not the one the data
	// directory was created with. It wraps badger.ErrEncryptionKeyMismatch.
	ErrWrongKey = errors.New("storage: encryption key does not match the one this data directory was created with")
	// ErrKeyRequired: the data directory is encrypted and Open got no key.
	ErrKeyRequired = errors.New("storage: this data directory is encrypted and no encryption key was given")
	// ErrNotEncrypted: Open got a key but the data directory was created
	// without encryption (Badger cannot encrypt an existing plain directory).
	ErrNotEncrypted = errors.New("storage: an encryption key was given but this data directory was created without encryption")
	// ErrBadKey: an encryption key (or key file) is not 16, 24 or 32 bytes of
	// AES key, written as hex in a key file.
	ErrBadKey = errors.New("storage: encryption key must be 16, 24 or 32 bytes (32, 48 or 64 hex characters in a key file)")
	// ErrLayoutVersion: the data directory was written with a key layout
	// this build does not know.
	ErrLayoutVersion = errors.New("storage: data directory has an unknown key layout version")
	// ErrCorrupt: a stored value failed to decode or breaks an invariant of
	// the key layout.
	ErrCorrupt = errors.New("storage: stored data is corrupt")

	// ErrNotPseudonym: an audit subject is not a pseudonym (lowercase hex,
	// 32 to 128 characters). Raw identifiers are refused on purpose.
	ErrNotPseudonym = errors.New("storage: audit subject must be a pseudonym in lowercase hex, never a raw identifier")
	// ErrAuditTampered is matched (errors.Is) by every *AuditTamperError
	// that AuditLog.Verify returns.
	ErrAuditTampered = errors.New("storage: audit log tampered with")
	// ErrAuditEntry: an audit entry cannot be appended as given (it carries
	// a Seq, Prev or Hash, or lacks an operation or decision).
	ErrAuditEntry = errors.New("storage: invalid audit entry")
)

// badgerSentinels are Badger errors whose fixed text is safe to repeat.
var badgerSentinels = []error{
	badger.ErrDBClosed, badger.ErrBlockedWrites, badger.ErrTxnTooBig,
	badger.ErrConflict, badger.ErrTruncateNeeded, badger.ErrValueLogSize,
	badger.ErrEncryptionKeyMismatch, badger.ErrInvalidEncryptionKey,
	badger.ErrGCInMemoryMode, badger.ErrRejected, badger.ErrNoRewrite,
	badger.ErrInvalidRequest,
}

// engineError carries a Badger error while withholding its text: Badger
// formats keys into some of its errors ("DB::Get key: %q", key dumps), and our
// keys contain identifiers. errors.Is and errors.As still reach the cause.
type engineError struct {
	msg   string
	cause error
}

func (e *engineError) Error() string { return "badger: " + e.msg }
func (e *engineError) Unwrap() error { return e.cause }

// engine wraps a Badger error from an operation on keys (see engineError).
func engine(err error) error {
	if err == nil {
		return nil
	}
	var ee *engineError
	if errors.As(err, &ee) {
		return err
	}
	for _, s := range []error{ErrNotFound, ErrConflict, ErrInvalidRecord, ErrRecordTooLarge, ErrClosed, ErrCorrupt} {
		if errors.Is(err, s) {
			return err
		}
	}
	for _, s := range badgerSentinels {
		if errors.Is(err, s) {
			return &engineError{msg: s.Error(), cause: err}
		}
	}
	return &engineError{msg: "storage engine error (detail withheld: it may name a key)", cause: err}
}

// keyError reports an encryption-key problem found by Open; it matches both
// its sentinel and Badger's cause with errors.Is.
type keyError struct {
	sentinel error
	cause    error
}

func (e *keyError) Error() string {
	return "storage: open: " + strings.TrimPrefix(e.sentinel.Error(), "storage: ")
}
func (e *keyError) Unwrap() []error { return []error{e.sentinel, e.cause} }
