package consensus

import (
	"errors"
	"fmt"
)

// Sentinel errors. A command the FSM refuses comes back to its proposer as
// a *RefusedError that matches one of the first four with errors.Is.
var (
	// ErrForbidden: the proposer (or the actor it speaks for) may not issue
	// this command: a district writing another district's entries, a
	// non-operator changing the registry, catalog or revocations.
	ErrForbidden = errors.New("consensus: forbidden")
	// ErrInvalid: the command is malformed or names something that does not
	// exist (an unknown region, an invalid catalog).
	ErrInvalid = errors.New("consensus: invalid command")
	// ErrConflict: the command does not fit the current state (a catalog
	// version that is not the next, a federation that is already
	// initialized).
	ErrConflict = errors.New("consensus: conflict")
	// ErrNotFound: the command names a region or identity that is not there.
	ErrNotFound = errors.New("consensus: not found")
	// ErrExpired: the command presents something whose time has passed (a
	// join token).
	ErrExpired = errors.New("consensus: expired")

	// ErrNoLeader: there is no leader to take the command right now; it
	// was certainly not applied. Try again later.
	ErrNoLeader = errors.New("consensus: no leader")
	// ErrOutcomeUnknown: the command may or may not be applied: leadership
	// was lost after it was handed to Raft, or the leader could not be
	// reached or stopped answering. Retry only idempotent commands.
	ErrOutcomeUnknown = errors.New("consensus: outcome unknown")
	// ErrClosed: the replica is shutting down.
	ErrClosed = errors.New("consensus: closed")
	// ErrStale: a strong read could not be served before its deadline.
	ErrStale = errors.New("consensus: could not catch up for a strong read")
	// ErrNoIndex: this node keeps no index (it does not hold the index
	// keys: a district); ask a coordinator.
	ErrNoIndex = errors.New("consensus: this node keeps no index; coordinators do")
)

// RefusedError is a command refused by the FSM. Its message names no
// personal data: identities are institutions and regions, entries are
// pseudonymous.
type RefusedError struct {
	Reason  error // one of ErrForbidden, ErrInvalid, ErrConflict, ErrNotFound
	Message string
}

func (e *RefusedError) Error() string { return e.Reason.Error() + ": " + e.Message }

// Unwrap lets errors.Is match the reason.
func (e *RefusedError) Unwrap() error { return e.Reason }

func refuse(reason error, format string, args ...any) *RefusedError {
	return &RefusedError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}
