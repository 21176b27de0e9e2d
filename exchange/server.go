package exchange

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"credfed/certs"
)

// Handler serves one operation. It returns the answer body (encoded as
// CBOR; nil for none) or an error. An *Error (or an error wrapping one) is
// sent to the caller as is; any other error is answered internal with a
// generic message and only its type is logged, since its text might hold
// personal data.
//
// ctx carries the request's deadline (the caller's, capped by the
// server's limits) and is canceled when it passes, when the caller gives
// up, or when the endpoint closes; CallerFrom and MetaFrom read it. If the
// handler is still running at the deadline, the caller is answered
// deadline_exceeded at once and the handler's late answer is dropped.
type Handler func(ctx context.Context, req *Request) (any, error)

// Request is one incoming request as a handler sees it.
type Request struct {
	// Caller is the identity of the verified peer certificate: never
	// anything the peer asserts.
	Caller certs.Identity
	// Op is the operation name.
	Op string
	// Leaf is the caller's verified certificate.
	Leaf *x509.Certificate
	// ID is the caller's request id (for correlating logs).
	ID uint64
	// Meta is the context the caller states (purpose, user, ...). It is
	// the caller's assertion: check it, audit it, never log it.
	Meta Meta
	// Deadline is when the server stops working on the request.
	Deadline time.Time

	body []byte
}

// Body returns the raw CBOR body (nil if the request had none). It is
// valid only until the handler returns.
func (r *Request) Body() []byte { return r.body }

// Decode decodes the body into v with the exchange's strict limits (see
// BodyDecOptions). It returns a bad_request *Error if the body is missing
// or does not decode; the handler can return that error as is.
func (r *Request) Decode(v any) error {
	if len(r.body) == 0 {
		return Errorf(CodeBadRequest, "request has no body")
	}
	return Unmarshal(r.body, v)
}

type ctxKey struct{}

// CallerFrom returns the verified identity of the caller of the request
// being served in ctx.
func CallerFrom(ctx context.Context) (certs.Identity, bool) {
	if r, ok := ctx.Value(ctxKey{}).(*Request); ok {
		return r.Caller, true
	}
	return certs.Identity{}, false
}

// MetaFrom returns the caller-stated context of the request being served
// in ctx.
func MetaFrom(ctx context.Context) (Meta, bool) {
	if r, ok := ctx.Value(ctxKey{}).(*Request); ok {
		return r.Meta, true
	}
	return Meta{}, false
}

// operation is a registered handler and its options.
type operation struct {
	name    string
	h       Handler
	roles   map[certs.Role]bool // nil: every node role
	maxBody int
	timeout time.Duration
	rate    float64
	burst   int
	// unregistered: callers that Config.Admit refuses may call it
	// (Unregistered).
	unregistered bool
}

// HandleOption configures one operation.
type HandleOption func(*operation)

// AllowRoles restricts an operation to callers of the given node roles
// (default: every node role). Others are answered forbidden.
func AllowRoles(roles ...certs.Role) HandleOption {
	return func(o *operation) {
		o.roles = map[certs.Role]bool{}
		for _, r := range roles {
			if !r.IsNode() {
				panic(fmt.Sprintf("exchange: AllowRoles(%q): only node roles reach the exchange", r))
			}
			o.roles[r] = true
		}
	}
}

// MaxBody caps the request body of the operation, in bytes (default: the
// frame limit). Larger requests are answered bad_request.
func MaxBody(n int) HandleOption { return func(o *operation) { o.maxBody = n } }

// Timeout caps the handler's time for this operation below the endpoint's
// MaxTimeout, whatever deadline the caller asks for.
func Timeout(d time.Duration) HandleOption { return func(o *operation) { o.timeout = d } }

// RateLimit limits each caller identity to perSecond requests of this
// operation on average, with bursts of up to burst. A request over the
// limit waits up to Limits.QueueWait for a token, then is answered
// too_many_requests.
func RateLimit(perSecond float64, burst int) HandleOption {
	return func(o *operation) {
		if perSecond <= 0 || burst < 1 {
			panic("exchange: RateLimit needs a positive rate and a burst of at least 1")
		}
		o.rate, o.burst = perSecond, burst
	}
}

// Handle registers h for op. op is 1 to 64 characters of a-z, 0-9, '.',
// '_' and '-'. Registering an operation twice panics, as does a nil
// handler. Handle may be called at any time.
func (e *Endpoint) Handle(op string, h Handler, opts ...HandleOption) {
	if !validOpName(op) {
		panic(fmt.Sprintf("exchange: invalid operation name %q", op))
	}
	if h == nil {
		panic("exchange: nil handler for " + op)
	}
	o := &operation{name: op, h: h, maxBody: e.lim.MaxFrame}
	for _, opt := range opts {
		opt(o)
	}
	e.opsMu.Lock()
	defer e.opsMu.Unlock()
	old := *e.ops.Load()
	if _, dup := old[op]; dup {
		panic("exchange: operation " + op + " registered twice")
	}
	next := maps.Clone(old)
	next[op] = o
	if o.unregistered {
		e.anyUnregistered.Store(true)
	}
	e.ops.Store(&next)
}

func validOpName(op string) bool {
	if op == "" || len(op) > maxOpLen {
		return false
	}
	for i := 0; i < len(op); i++ {
		c := op[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// serveRequests accepts the request streams of one connection, each in its
// own goroutine.
func (e *Endpoint) serveRequests(ci *connInfo) {
	for {
		str, err := ci.conn.AcceptStream(e.ctx)
		if err != nil {
			return
		}
		e.wg.Add(1)
		go e.serveStream(ci, str)
	}
}

// serverStream is one request being served: the answer is written once,
// by whichever comes first of the handler and the deadline.
type serverStream struct {
	e   *Endpoint
	ci  *connInfo
	str *quic.Stream

	mu       sync.Mutex
	answered bool
	id       uint64
	op       string // for metrics: a registered operation or "unknown"
	start    time.Time
}

func (e *Endpoint) serveStream(ci *connInfo, str *quic.Stream) {
	defer e.wg.Done()
	s := &serverStream{e: e, ci: ci, str: str, op: "unknown", start: time.Now()}
	defer func() {
		if p := recover(); p != nil {
			e.m.panics.Inc()
			e.log.Error("panic serving stream", "panic_type", fmt.Sprintf("%T", p), "stack", string(debug.Stack()))
			s.answer(nil, Errorf(CodeInternal, "internal error"))
		}
		// Finished or not, we want no more input: this also returns the
		// stream's credit to the peer if it never sent its FIN.
		str.CancelRead(streamDone)
	}()
	s.serve()
}

func (s *serverStream) serve() {
	e, str := s.e, s.str
	ps := s.ci.state
	// Admission first: a caller the node does not admit holds nothing
	// here. Unless some operation is open to such callers, its request is
	// not even read.
	refusal := e.admission(s.ci)
	if refusal != nil && !e.anyUnregistered.Load() {
		s.refuse(e.notAdmitted(s.ci, refusal))
		return
	}
	str.SetReadDeadline(s.start.Add(e.lim.RequestReadTimeout))

	size, err := readFrameHeader(str, e.lim.MaxFrame)
	if err != nil {
		s.refuseUnread(err)
		return
	}
	// Hold room for the frame before reading it: per caller, and for all.
	if !ps.bytes.acquire(str.Context(), int64(size), e.lim.QueueWait) {
		s.refuse(Errorf(CodeUnavailable, "too many request bytes in flight from %s", s.ci.peer.Role))
		return
	}
	defer ps.bytes.release(int64(size))
	if !e.bytes.acquire(str.Context(), int64(size), e.lim.QueueWait) {
		s.refuse(Errorf(CodeUnavailable, "server is holding too many request bytes"))
		return
	}
	defer e.bytes.release(int64(size))

	buf, err := readFrameBody(str, size)
	if err != nil {
		s.refuseUnread(err)
		return
	}
	defer buf.free()
	e.m.reqBytesIn.Add(float64(size + frameHeaderLen))
	str.SetReadDeadline(time.Time{})

	var env requestEnvelope
	if err := decodeRequest(buf.b, &env); err != nil {
		s.id = env.ID
		s.refuse(err)
		return
	}
	s.id = env.ID
	op := (*e.ops.Load())[env.Op]
	if refusal != nil && (op == nil || !op.unregistered) {
		// Before not_found: a caller that is not admitted learns nothing
		// of which operations exist.
		s.answer(nil, e.notAdmitted(s.ci, refusal))
		return
	}
	if op == nil {
		s.answer(nil, Errorf(CodeNotFound, "unknown operation %q", env.Op))
		return
	}
	s.op = op.name
	caller := s.ci.peer
	if op.roles != nil && !op.roles[caller.Role] {
		s.answer(nil, Errorf(CodeForbidden, "operation %s is not open to %s nodes", op.name, caller.Role))
		return
	}
	if len(env.Body) > op.maxBody {
		s.answer(nil, Errorf(CodeBadRequest, "body of %d bytes exceeds the limit of %d for %s", len(env.Body), op.maxBody, op.name))
		return
	}

	// Deadline: the caller's remaining time from when the stream arrived,
	// capped by the server's limits.
	timeout := e.lim.DefaultTimeout
	if env.TimeoutMS > 0 {
		timeout = time.Duration(min(env.TimeoutMS, uint64(e.lim.MaxTimeout/time.Millisecond))) * time.Millisecond
	}
	if timeout > e.lim.MaxTimeout {
		timeout = e.lim.MaxTimeout
	}
	if op.timeout > 0 && op.timeout < timeout {
		timeout = op.timeout
	}
	deadline := s.start.Add(timeout)
	if !time.Now().Before(deadline) {
		s.answer(nil, Errorf(CodeDeadlineExceeded, "deadline passed before the request was read"))
		return
	}

	// Rate limit per caller and operation, then a handler slot per caller.
	if op.rate > 0 {
		wait, ok := ps.bucket(op.name, op.rate, op.burst).reserve(time.Now(), e.lim.QueueWait)
		if !ok {
			s.answer(nil, Errorf(CodeTooManyRequests, "rate limit of %g/s for %s exceeded", op.rate, op.name))
			return
		}
		if wait > 0 && !sleepCtx(str.Context(), wait) {
			return
		}
	}
	if !ps.inflight.acquire(str.Context(), 1, e.lim.QueueWait) {
		s.answer(nil, Errorf(CodeUnavailable, "too many requests in flight from this %s node", caller.Role))
		return
	}
	defer ps.inflight.release(1)
	if !e.handlers.add() {
		s.answer(nil, Errorf(CodeUnavailable, "server is shutting down"))
		return
	}
	defer e.handlers.done()

	req := &Request{Caller: caller, Op: op.name, Leaf: s.ci.leaf, ID: env.ID, Meta: env.Meta, Deadline: deadline, body: env.Body}
	ctx, cancel := context.WithDeadline(str.Context(), deadline)
	defer cancel()
	ctx = context.WithValue(ctx, ctxKey{}, req)
	// At the deadline, answer at once even if the handler is still busy.
	// (Tied to ctx, so that the handler sees DeadlineExceeded before the
	// answer closes the stream.)
	stop := context.AfterFunc(ctx, func() {
		if ctx.Err() == context.DeadlineExceeded {
			s.answer(nil, Errorf(CodeDeadlineExceeded, "%s did not finish before the deadline", op.name))
		}
	})
	resp, err := e.runHandler(ctx, op, req)
	stop()
	if err != nil && ctx.Err() == context.DeadlineExceeded &&
		(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)) {
		err = Errorf(CodeDeadlineExceeded, "%s did not finish before the deadline", op.name)
	}
	s.answer(resp, err)
}

// runHandler calls the handler, turning a panic into an internal error.
func (e *Endpoint) runHandler(ctx context.Context, op *operation, req *Request) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			e.m.panics.Inc()
			// The panic value may hold data; its type and the stack do not.
			e.log.Error("handler panicked", "op", op.name, "caller", req.Caller.String(),
				"panic_type", fmt.Sprintf("%T", p), "stack", string(debug.Stack()))
			resp, err = nil, Errorf(CodeInternal, "internal error")
		}
	}()
	return op.h(ctx, req)
}

// refuseUnread answers a request whose frame could not be read.
func (s *serverStream) refuseUnread(err error) {
	var tooLarge *frameTooLargeError
	switch {
	case errors.As(err, &tooLarge):
		s.refuse(Errorf(CodeBadRequest, "frame of %d bytes exceeds the limit of %d", tooLarge.size, tooLarge.max))
	case errors.Is(err, errEmptyFrame):
		s.refuse(Errorf(CodeBadRequest, "empty frame"))
	case errors.Is(err, errTruncatedFrame), err == io.EOF:
		s.refuse(Errorf(CodeBadRequest, "truncated frame"))
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.refuse(Errorf(CodeBadRequest, "request not received within %v", s.e.lim.RequestReadTimeout))
	default:
		// The stream or connection is gone (reset by the peer): nobody to
		// answer.
		s.str.CancelWrite(streamRefused)
		s.mu.Lock()
		s.answered = true
		s.mu.Unlock()
	}
}

// refuse answers with err and stops reading the rest of the request.
func (s *serverStream) refuse(err error) {
	s.str.CancelRead(streamRefused)
	s.answer(nil, err)
}

// answer writes the response frame once and closes the stream's send side.
func (s *serverStream) answer(resp any, herr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.answered {
		return
	}
	s.answered = true
	e := s.e

	env := responseEnvelope{Version: EnvelopeVersion, ID: s.id}
	var bodyBuf *buffer
	if herr == nil && resp != nil {
		bodyBuf = getBuffer(256)
		if err := encMode.NewEncoder(bodyBuf).Encode(resp); err != nil {
			e.log.Error("cannot encode answer", "op", s.op, "err_type", fmt.Sprintf("%T", err))
			herr = Errorf(CodeInternal, "internal error")
		} else {
			env.Body = bodyBuf.b
		}
	}
	code := Code("")
	if herr != nil {
		we := wireErrorOf(herr)
		if we.Code == string(CodeInternal) {
			var te *Error
			if !errors.As(herr, &te) {
				e.log.Error("handler failed", "op", s.op, "caller", s.ci.peer.String(), "err_type", errorClass(herr))
			}
		}
		env.Error, env.Body = &we, nil
		code = Code(we.Code)
	}
	frame := getBuffer(frameHeaderLen + len(env.Body) + 64)
	frame.b = append(frame.b, 0, 0, 0, 0)
	err := encMode.NewEncoder(frame).Encode(&env)
	bodyBuf.free()
	if err == nil && len(frame.b)-frameHeaderLen > e.lim.MaxFrame {
		e.log.Error("answer exceeds the frame limit", "op", s.op, "size", len(frame.b)-frameHeaderLen)
		frame.b = frame.b[:frameHeaderLen]
		env = responseEnvelope{Version: EnvelopeVersion, ID: s.id, Error: &wireError{Code: string(CodeInternal), Message: "answer too large"}}
		code = CodeInternal
		err = encMode.NewEncoder(frame).Encode(&env)
	}
	if err != nil { // cannot happen with these types
		frame.free()
		s.str.CancelWrite(streamRefused)
		return
	}
	finishFrame(frame.b)
	// Counted before the write, so that a caller holding the answer sees it
	// counted.
	e.m.request(false, s.op, s.ci.peer.Role, code)
	e.m.observe(false, s.op, time.Since(s.start).Seconds())
	s.str.SetWriteDeadline(time.Now().Add(e.lim.RequestReadTimeout))
	if _, err := s.str.Write(frame.b); err == nil {
		s.str.Close()
		e.m.reqBytesOut.Add(float64(len(frame.b)))
	} else {
		s.str.CancelWrite(streamRefused)
	}
	frame.free()
}

// wireErrorOf turns a handler's error into what goes on the wire.
func wireErrorOf(err error) wireError {
	var te *Error
	if errors.As(err, &te) {
		if te.Code == CodeCanceled { // local-only code
			return wireError{Code: string(CodeUnavailable), Message: "request canceled"}
		}
		return wireError{Code: string(te.Code), Message: te.Message}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return wireError{Code: string(CodeDeadlineExceeded), Message: "deadline exceeded"}
	case errors.Is(err, context.Canceled):
		return wireError{Code: string(CodeUnavailable), Message: "request canceled"}
	}
	return wireError{Code: string(CodeInternal), Message: "internal error"}
}

// errorClass names an error's innermost type, for logs that must not carry
// the error's text.
func errorClass(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return fmt.Sprintf("%T", err)
		}
		err = next
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
