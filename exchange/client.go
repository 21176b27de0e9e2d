package exchange

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"credfed/certs"
)

// Peer is a node to call.
type Peer struct {
	// Name is how logs and messages name the peer (e.g. its region).
	Name string
	// Addr is the peer's UDP address, host:port. The host must be one of
	// the IP addresses or DNS names in the peer's certificate.
	Addr string
	// Identity, if not nil, is the identity the peer must prove; nil
	// accepts any node of the federation.
	Identity *certs.Identity
}

func (p Peer) label() string {
	if p.Name != "" {
		return p.Name
	}
	return p.Addr
}

// poolKey names one pooled connection: an address and a protocol.
type poolKey struct {
	addr string
	alpn string
}

// peerConn is the long-lived connection to one address for one protocol,
// dialed lazily, shared by all callers, redialed after loss. Only one dial
// runs at a time; callers that need the connection meanwhile wait for it.
type peerConn struct {
	key poolKey

	mu       sync.Mutex
	ci       *connInfo
	dialing  chan struct{} // closed when the running dial ends
	err      error         // last dial failure
	failedAt time.Time
	backoff  time.Duration
	// retiredSerial is the peer certificate of the connection last retired
	// for its near expiry.
	retiredSerial string
}

// RetireWindow is how long before a peer's certificate expires a pooled
// connection to it is replaced by a fresh one (which finds the peer's
// renewed certificate); RetireGrace bounds how long the old connection
// stays open for the requests in flight on it.
const (
	RetireWindow = 15 * time.Second
	RetireGrace  = 10 * time.Second
)

// Reasons a pooled connection is retired.
const (
	staleExpiry = "peer certificate expires soon"
	staleOwn    = "own certificate renewed"
)

// stale says why a pooled connection should no longer take new requests,
// or "" if it should.
func (e *Endpoint) stale(ci *connInfo) string {
	if ci.gen != e.certGen.Load() {
		return staleOwn
	}
	// A connection kept because the peer had not renewed is tried again
	// every second: the peer may have renewed since.
	if time.Until(ci.leaf.NotAfter) < RetireWindow && (!ci.keep || time.Since(ci.keptAt) > time.Second) {
		return staleExpiry
	}
	return ""
}

// retire closes a connection taken out of the pool once the requests in
// flight on it are answered, or after RetireGrace (sooner if the peer's
// certificate expires first).
func (e *Endpoint) retire(ci *connInfo, why string) {
	deadline := time.Now().Add(RetireGrace)
	if exp := ci.leaf.NotAfter.Add(-time.Second); exp.Before(deadline) {
		deadline = exp
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for ci.inflight.Load() > 0 && time.Now().Before(deadline) {
		select {
		case <-t.C:
		case <-ci.conn.Context().Done():
			return
		case <-e.ctx.Done():
			return
		}
	}
	e.log.Debug("closing a retired connection", "peer", ci.peer.String(), "reason", why)
	ci.conn.CloseWithError(closeNoError, "")
}

// conn returns a live connection to key, dialing if needed.
func (e *Endpoint) conn(ctx context.Context, key poolKey, label string) (*connInfo, error) {
	e.mu.Lock()
	if e.closed.Load() {
		e.mu.Unlock()
		return nil, &Error{Code: CodeUnavailable, Message: "endpoint closed", cause: net.ErrClosed}
	}
	pc := e.pool[key]
	if pc == nil {
		pc = &peerConn{key: key}
		e.pool[key] = pc
	}
	e.mu.Unlock()

	for {
		pc.mu.Lock()
		if pc.ci != nil && pc.ci.conn.Context().Err() == nil {
			ci := pc.ci
			if why := e.stale(ci); why == "" {
				pc.mu.Unlock()
				return ci, nil
			} else {
				// Moved off before anyone closes it under a request: new
				// requests go to a fresh connection, those in flight finish.
				pc.ci = nil
				if why == staleExpiry {
					pc.retiredSerial = ci.leaf.SerialNumber.String()
					e.newSessionEpoch(key.addr)
				}
				go e.retire(ci, why)
			}
		}
		if pc.dialing == nil {
			if pc.err != nil && time.Since(pc.failedAt) < pc.backoff {
				err := pc.err
				pc.mu.Unlock()
				return nil, err
			}
			pc.dialing = make(chan struct{})
			go e.dial(pc, label)
		}
		wait := pc.dialing
		pc.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			// Still dialing: the peer has not been reached yet.
			return nil, &Error{Code: CodeUnavailable, cause: ctx.Err(),
				Message: fmt.Sprintf("%s not reached before the deadline (still dialing)", label)}
		}
		// The dial we waited for is over: use its outcome, even a
		// connection that died already (a refused client certificate
		// shows that way), rather than dial again.
		pc.mu.Lock()
		ci, err := pc.ci, pc.err
		pc.mu.Unlock()
		if ci != nil {
			return ci, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// dial runs one dial for pc, detached from any caller's context.
func (e *Endpoint) dial(pc *peerConn, label string) {
	ci, err := e.dialOnce(pc.key, label)
	pc.mu.Lock()
	if err != nil {
		pc.ci = nil
		pc.err = err
		pc.failedAt = time.Now()
		switch {
		case pc.backoff == 0:
			pc.backoff = e.lim.RedialBackoff
		case pc.backoff < e.lim.MaxRedialBackoff:
			pc.backoff = min(2*pc.backoff, e.lim.MaxRedialBackoff)
		}
	} else {
		if pc.retiredSerial != "" && ci.leaf.SerialNumber.String() == pc.retiredSerial {
			ci.keep, ci.keptAt = true, time.Now() // the peer has not renewed yet
		}
		pc.ci, pc.err, pc.backoff = ci, nil, 0
	}
	close(pc.dialing)
	pc.dialing = nil
	pc.mu.Unlock()
}

func (e *Endpoint) dialOnce(key poolKey, label string) (*connInfo, error) {
	ci, err := e.dialTLS(key, label)
	if err == nil && ci.resumed && time.Until(ci.leaf.NotAfter) < RetireWindow {
		// A resumed session brings back the certificate it was made with,
		// which is ending: a full handshake finds the peer's current one.
		ci.conn.CloseWithError(closeNoError, "")
		e.newSessionEpoch(key.addr)
		return e.dialTLS(key, label)
	}
	return ci, err
}

func (e *Endpoint) dialTLS(key poolKey, label string) (*connInfo, error) {
	udpAddr, err := net.ResolveUDPAddr("udp", key.addr)
	if err != nil {
		return nil, &Error{Code: CodeUnavailable, Message: fmt.Sprintf("cannot resolve %s: %v", label, err), cause: err}
	}
	gen := e.certGen.Load() // before the handshake reads the certificate
	tlsConf, err := e.clientTLS(key.addr, key.alpn)
	if err != nil {
		return nil, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("bad address %q", key.addr), cause: err}
	}
	ctx, cancel := context.WithTimeout(e.ctx, e.lim.DialTimeout)
	defer cancel()
	conn, err := e.tr.Dial(ctx, udpAddr, tlsConf, e.clientQC)
	if err != nil {
		if e.closed.Load() {
			return nil, &Error{Code: CodeUnavailable, Message: "endpoint closed", cause: err}
		}
		ce := connError(label, err)
		if ce.Code == CodeDeadlineExceeded { // the dial's own timeout
			ce = &Error{Code: CodeUnavailable, Message: label + " is unreachable (dial timed out)", cause: err}
		}
		var te *quic.TransportError
		if ce.Code == CodeUnauthenticated && errors.As(err, &te) && !te.Remote {
			reason := verifyReason(ce)
			e.m.refused.WithLabelValues("outbound", reason).Inc()
			e.log.Warn("refused server certificate", "peer", label, "addr", key.addr, "reason", reason)
		} else {
			e.log.Info("dial failed", "peer", label, "addr", key.addr, "code", string(ce.Code))
		}
		return nil, ce
	}
	ci, err := e.register(conn, false)
	if err != nil {
		conn.CloseWithError(closeShutdown, "closing")
		return nil, connError(label, err)
	}
	ci.gen, ci.resumed = gen, conn.ConnectionState().TLS.DidResume
	go func() {
		<-conn.Context().Done()
		e.unregister(ci)
	}()
	return ci, nil
}

// forget drops a dead connection from the pool (its closing may not have
// been noticed yet), so that the next use dials anew.
func (e *Endpoint) forget(key poolKey, ci *connInfo) {
	e.mu.Lock()
	pc := e.pool[key]
	e.mu.Unlock()
	if pc == nil {
		return
	}
	pc.mu.Lock()
	if pc.ci == ci {
		pc.ci = nil
	}
	pc.mu.Unlock()
	ci.conn.CloseWithError(closeNoError, "")
}

// checkPeer checks that the connection reaches the expected peer.
func checkPeer(ci *connInfo, p Peer) error {
	if p.Identity != nil && ci.peer != *p.Identity {
		return &Error{Code: CodeUnauthenticated,
			Message: fmt.Sprintf("%s at %s is %s, not the expected %s", p.label(), p.Addr, ci.peer, *p.Identity)}
	}
	return nil
}

// Call sends one request for op to peer and decodes the answer into resp
// (a pointer; nil to ignore the body). req is encoded as CBOR (nil sends
// no body). ctx's deadline travels with the request; the server stops
// working on it when it passes.
//
// Errors are *Error values: errors.Is(err, ErrForbidden) and the like work
// for answers from the server and for local failures alike (unreachable
// peer: ErrUnavailable; refused certificate, ours or theirs:
// ErrUnauthenticated; deadline: ErrDeadlineExceeded).
//
// The connection to peer.Addr is dialed on first use and reused. If it
// turns out to be dead before the request could be sent (closed, or the
// peer restarted and answered with a stateless reset), the request is
// sent once more on a fresh connection. Otherwise a connection lost while
// waiting for the answer leaves the outcome unknown (ErrUnavailable):
// operations should be idempotent.
func (e *Endpoint) Call(ctx context.Context, peer Peer, op string, meta Meta, req, resp any) error {
	start := time.Now()
	role, err := e.call(ctx, peer, op, meta, req, resp)
	label := op
	if !validOpName(op) {
		label = "invalid"
	}
	e.m.request(true, label, role, CodeOf(err))
	e.m.observe(true, label, time.Since(start).Seconds())
	return err
}

func (e *Endpoint) call(ctx context.Context, peer Peer, op string, meta Meta, req, resp any) (certs.Role, error) {
	label := peer.label()
	if err := ctx.Err(); err != nil {
		return "", connError(label, err)
	}
	if !validOpName(op) {
		return "", Errorf(CodeBadRequest, "invalid operation name %q", op)
	}
	// Encoded before dialing, so that a request that cannot be sent never
	// opens a connection.
	frame, err := e.encodeRequest(ctx, op, meta, req)
	if err != nil {
		return "", err
	}
	encodedAt := time.Now()
	defer func() { frame.free() }()

	var role certs.Role
	for attempt := 0; ; attempt++ {
		ci, err := e.conn(ctx, poolKey{peer.Addr, ALPN}, label)
		if err != nil {
			return role, err
		}
		role = ci.peer.Role
		if err := checkPeer(ci, peer); err != nil {
			return role, err
		}
		// The envelope carries the time remaining: after a handshake (or a
		// retry) it is re-encoded, or the server would grant the time the
		// handshake already used.
		if _, has := ctx.Deadline(); has && time.Since(encodedAt) > time.Millisecond {
			frame.free()
			if frame, err = e.encodeRequest(ctx, op, meta, req); err != nil {
				return role, err
			}
			encodedAt = time.Now()
		}
		ci.inflight.Add(1)
		err = e.roundTrip(ctx, ci, label, frame.b, resp)
		ci.inflight.Add(-1)
		if err != nil && attempt == 0 && retryable(ci, err) {
			e.log.Debug("retrying on a fresh connection", "peer", label, "op", op)
			e.forget(poolKey{peer.Addr, ALPN}, ci)
			continue
		}
		if rt, ok := err.(*roundTripError); ok {
			return role, rt.err
		}
		return role, err
	}
}

// retryable reports whether a failed round trip certainly never reached a
// handler: the connection was already closed, or the peer lost all state
// of it (stateless reset after a restart).
func retryable(ci *connInfo, err error) bool {
	var rt *roundTripError
	if !errors.As(err, &rt) {
		return false
	}
	if rt.beforeSend {
		// Not if the peer refused us: a new connection would be too.
		return rt.err.Code != CodeUnauthenticated
	}
	var sr *quic.StatelessResetError
	return errors.As(err, &sr) || errors.As(context.Cause(ci.conn.Context()), &sr)
}

// roundTripError marks a connection-level failure of a round trip.
type roundTripError struct {
	err        *Error
	beforeSend bool
}

func (e *roundTripError) Error() string { return e.err.Error() }
func (e *roundTripError) Unwrap() error { return e.err }

// encodeRequest builds the request frame: a fresh id, and the time left
// before ctx's deadline, computed just before sending (the server counts it
// from when the request's stream arrives).
func (e *Endpoint) encodeRequest(ctx context.Context, op string, meta Meta, req any) (*buffer, error) {
	env := requestEnvelope{Version: EnvelopeVersion, Op: op, ID: e.nextID.Add(1), Meta: meta}
	var bodyBuf *buffer
	if req != nil {
		bodyBuf = getBuffer(256)
		if err := encMode.NewEncoder(bodyBuf).Encode(req); err != nil {
			bodyBuf.free()
			return nil, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("cannot encode %T: %v", req, err), cause: err}
		}
		env.Body = bodyBuf.b
		defer bodyBuf.free()
	}
	if err := meta.check(); err != nil {
		return nil, Errorf(CodeBadRequest, "%v", err)
	}
	if d, ok := ctx.Deadline(); ok {
		ms := time.Until(d).Milliseconds()
		if ms <= 0 {
			return nil, &Error{Code: CodeDeadlineExceeded, Message: "deadline passed before sending", cause: context.DeadlineExceeded}
		}
		env.TimeoutMS = uint64(ms)
	}
	frame := getBuffer(frameHeaderLen + len(env.Body) + 64 + len(op))
	frame.b = append(frame.b, 0, 0, 0, 0)
	if err := encMode.NewEncoder(frame).Encode(&env); err != nil {
		frame.free()
		return nil, &Error{Code: CodeBadRequest, Message: "cannot encode the envelope", cause: err}
	}
	if len(frame.b)-frameHeaderLen > e.lim.MaxFrame {
		n := len(frame.b) - frameHeaderLen
		frame.free()
		return nil, Errorf(CodeBadRequest, "request of %d bytes exceeds the frame limit of %d", n, e.lim.MaxFrame)
	}
	finishFrame(frame.b)
	return frame, nil
}

// roundTrip sends one request frame on a new stream and reads the answer.
func (e *Endpoint) roundTrip(ctx context.Context, ci *connInfo, label string, frame []byte, resp any) error {
	str, err := ci.conn.OpenStreamSync(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return connError(label, ctx.Err())
		}
		return &roundTripError{err: connError(label, err), beforeSend: true}
	}
	if d, ok := ctx.Deadline(); ok {
		str.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() {
		str.CancelRead(streamCanceled)
		str.CancelWrite(streamCanceled)
	})
	defer stop()

	fail := func(err error) error {
		if ctx.Err() != nil {
			return connError(label, ctx.Err())
		}
		if errors.Is(err, errTruncatedFrame) || errors.Is(err, errEmptyFrame) {
			return &Error{Code: CodeUnavailable, Message: label + " sent a malformed answer", cause: err}
		}
		var tooLarge *frameTooLargeError
		if errors.As(err, &tooLarge) {
			str.CancelRead(streamRefused)
			return &Error{Code: CodeUnavailable, Message: label + " sent an answer larger than the frame limit", cause: err}
		}
		var se *quic.StreamError
		if errors.As(err, &se) {
			return &Error{Code: CodeUnavailable, Message: fmt.Sprintf("%s reset the request (code %#x)", label, uint64(se.ErrorCode)), cause: err}
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			return connError(label, context.DeadlineExceeded)
		}
		return &roundTripError{err: connError(label, err)}
	}

	_, werr := str.Write(frame)
	if werr == nil {
		str.Close()
		e.m.reqBytesOut.Add(float64(len(frame)))
	} else {
		var se *quic.StreamError
		if !errors.As(werr, &se) || !se.Remote {
			return fail(werr)
		}
		// The server stopped reading (STOP_SENDING): it refused the
		// request and its answer says why.
	}
	buf, err := readFrame(str, e.lim.MaxFrame)
	if err != nil {
		return fail(err)
	}
	defer buf.free()
	e.m.reqBytesIn.Add(float64(len(buf.b) + frameHeaderLen))
	str.CancelRead(streamDone) // no-op once the FIN was read

	var env responseEnvelope
	if err := decodeResponse(buf.b, &env); err != nil {
		return &Error{Code: CodeUnavailable, Message: label + " sent a malformed answer", cause: err}
	}
	if env.Error != nil {
		return &Error{Code: Code(env.Error.Code), Message: env.Error.Message}
	}
	if resp != nil && len(env.Body) > 0 {
		if err := bodyDecMode.Unmarshal(env.Body, resp); err != nil {
			return &Error{Code: CodeBadRequest, Message: label + " answered with a body that does not decode: " + describeDecodeError(resp, err), cause: err}
		}
	}
	return nil
}
