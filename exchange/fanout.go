package exchange

import (
	"context"
	"sync"
)

// Status is the outcome of one peer's part of a fan-out.
type Status string

// Fan-out statuses, as reported to the caller of a federated lookup.
const (
	// StatusOK: the peer answered.
	StatusOK Status = "ok"
	// StatusUnreachable: no connection to the peer, or it is overloaded or
	// shutting down (unavailable).
	StatusUnreachable Status = "unreachable"
	// StatusTimeout: the request was sent but no answer came before the
	// deadline.
	StatusTimeout Status = "timeout"
	// StatusDenied: the peer refused us (unauthenticated, forbidden,
	// too_many_requests) or we refused it.
	StatusDenied Status = "denied"
	// StatusError: any other error (bad_request, not_found, internal, ...).
	StatusError Status = "error"
)

// Result is one peer's part of a fan-out.
type Result struct {
	Peer   Peer
	Status Status
	// Resp is the decoded answer (what newResp returned), set when Status
	// is ok.
	Resp any
	// Err is the error, nil when Status is ok.
	Err error
}

// StatusOf classifies the error of a call the way FanOut does.
func StatusOf(err error) Status {
	if err == nil {
		return StatusOK
	}
	switch CodeOf(err) {
	case CodeUnavailable:
		return StatusUnreachable
	case CodeDeadlineExceeded, CodeCanceled:
		return StatusTimeout
	case CodeUnauthenticated, CodeForbidden, CodeTooManyRequests:
		return StatusDenied
	}
	return StatusError
}

// FanOut sends the same request to every peer in parallel, each with ctx's
// remaining deadline, and returns one Result per peer in the order of
// peers. newResp returns a fresh pointer to decode each answer into (nil
// to ignore bodies). Partial results are normal: every peer's status is
// reported, none is hidden. FanOut returns when every call has ended,
// which is at ctx's deadline at the latest.
func (e *Endpoint) FanOut(ctx context.Context, peers []Peer, op string, meta Meta, req any, newResp func() any) []Result {
	results := make([]Result, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp any
			if newResp != nil {
				resp = newResp()
			}
			err := e.Call(ctx, p, op, meta, req, resp)
			r := Result{Peer: p, Status: StatusOf(err), Err: err}
			if err == nil {
				r.Resp = resp
			}
			results[i] = r
		}()
	}
	wg.Wait()
	return results
}
