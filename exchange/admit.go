package exchange

import (
	"context"
	"errors"

	"credfed/certs"
)

// Admission. A valid certificate of the federation's CA proves who a peer
// is, not that it belongs to the federation: the CA may have issued it for
// a region that was never registered, or that has been removed. The node
// therefore gives the endpoint two hooks (Config.Admit for requests,
// Config.AdmitRaft for raft streams) that it answers from the replicated
// region registry, and the endpoint asks them on every request and on
// every raft connection and stream. Operations an unregistered node must
// be able to call (joining) are registered with Unregistered.

// Unregistered marks an operation that a caller refused by Config.Admit
// may still call: the one way in for a node whose region is not (yet) in
// the registry, such as joining the federation. Every other check still
// applies (node certificate, AllowRoles, limits). Anyone holding a node
// certificate of the federation reaches such an operation, so give it a
// small MaxBody and a RateLimit, and let it reveal nothing.
func Unregistered() HandleOption { return func(o *operation) { o.unregistered = true } }

// admission asks Config.Admit about the caller of a request on ci; nil
// when it is admitted (or there is no hook), else the error to answer if
// the operation is not open to unregistered callers.
func (e *Endpoint) admission(ci *connInfo) *Error {
	if e.admit == nil {
		return nil
	}
	err := e.admit(ci.peer)
	if err == nil {
		return nil
	}
	var we *Error
	if !errors.As(err, &we) {
		we = &Error{Code: CodeForbidden, Message: err.Error()}
	}
	return we
}

// notAdmitted counts and logs (once per connection) a request refused by
// Config.Admit, and returns the answer.
func (e *Endpoint) notAdmitted(ci *connInfo, we *Error) *Error {
	e.m.notAdmitted.WithLabelValues(ALPN, string(we.Code)).Inc()
	if ci.refusalLogged.CompareAndSwap(false, true) {
		e.log.Warn("refusing the requests of a caller that is not admitted", "peer", ci.peer.String(),
			"code", string(we.Code), "reason", we.Message)
	}
	return we
}

// admitRaftConn asks Config.AdmitRaft about the peer of an incoming raft
// connection and closes the connection if it is refused. It reports
// whether the connection may go on.
func (e *Endpoint) admitRaftConn(ci *connInfo) bool {
	if e.admitRaft == nil {
		return true
	}
	err := e.admitRaft(ci.peer)
	if err == nil {
		return true
	}
	code, reason := CodeForbidden, err.Error()
	var we *Error
	if errors.As(err, &we) {
		code = we.Code
		if we.Message != "" {
			reason = we.Message
		}
	}
	e.m.notAdmitted.WithLabelValues(RaftALPN, string(code)).Inc()
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
	}
	e.log.Warn("closing raft connection: peer not admitted", "peer", ci.peer.String(), "reason", reason)
	ci.conn.CloseWithError(closeNotAdmitted, reason)
	return false
}

// maxCloseReason bounds the reason phrase sent with a connection close.
const maxCloseReason = 256

// Readmit re-checks every live incoming raft connection against
// Config.AdmitRaft at once and closes the connections of peers it now
// refuses (it also runs every RaftReadmitInterval). Call it when the
// registry changes. Request connections need no re-check: Admit is asked
// on every request.
func (e *Endpoint) Readmit() {
	if e.admitRaft == nil {
		return
	}
	e.mu.Lock()
	live := make([]*connInfo, 0, len(e.conns))
	for _, ci := range e.conns {
		if ci.inbound && ci.alpn == RaftALPN {
			live = append(live, ci)
		}
	}
	e.mu.Unlock()
	for _, ci := range live {
		e.admitRaftConn(ci)
	}
}

// PeerAt returns the verified identity of the node that answers at addr
// (host:port), dialing it if no connection to it is open: what a caller
// learns before it trusts an address it was configured with (a new node
// asking its configured coordinators who the federation's voters are).
// Calls to it afterwards should name that identity (Peer.Identity), so
// that a connection replaced in between reaches the same node.
func (e *Endpoint) PeerAt(ctx context.Context, addr string) (certs.Identity, error) {
	ci, err := e.conn(ctx, poolKey{addr, ALPN}, addr)
	if err != nil {
		return certs.Identity{}, err
	}
	return ci.peer, nil
}
