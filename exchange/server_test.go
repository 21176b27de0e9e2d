package exchange

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/certs"
)

// pair starts a city serving echo and a district to call it.
func pair(t *testing.T, opts ...nodeOption) (server, client *node) {
	t.Helper()
	f := newFederation(t, testFed)
	server = f.startNode(t, certs.City, "zj/hz", opts...)
	server.Handle("echo", echoHandler)
	client = f.startNode(t, certs.District, "zj/hz/xh")
	return server, client
}

func TestDeadlineTravels(t *testing.T) {
	server, client := pair(t)
	got := make(chan time.Time, 1)
	server.Handle("deadline", func(ctx context.Context, r *Request) (any, error) {
		d, ok := ctx.Deadline()
		if !ok || !d.Equal(r.Deadline) {
			return nil, Errorf(CodeInternal, "ctx deadline %v, request deadline %v", d, r.Deadline)
		}
		got <- d
		return nil, nil
	})
	// A first call opens the connection: the deadline travels as the time
	// remaining when the request is encoded, so a handshake in between
	// would shift it.
	if err := client.Call(ctxTimeout(t, 5*time.Second), server.peer(), "deadline", Meta{}, nil, nil); err != nil {
		t.Fatal(err)
	}
	<-got
	want := time.Now().Add(3 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), want)
	defer cancel()
	if err := client.Call(ctx, server.peer(), "deadline", Meta{}, nil, nil); err != nil {
		t.Fatal(err)
	}
	d := <-got
	// The server counts the remaining time (whole milliseconds) from the
	// stream's arrival: it may trail the caller's deadline by the one-way
	// delay (generous here: a loaded 2-core machine under -race can pause a
	// goroutine for tens of milliseconds), and is not much earlier.
	if d.After(want.Add(500*time.Millisecond)) || d.Before(want.Add(-200*time.Millisecond)) {
		t.Errorf("handler deadline %v, caller's %v", d, want)
	}
}

func TestSlowHandlerCutOff(t *testing.T) {
	server, client := pair(t, withLimits(Limits{MaxTimeout: 300 * time.Millisecond}))
	stopped := make(chan error, 1)
	server.Handle("slow", func(ctx context.Context, r *Request) (any, error) {
		<-ctx.Done()
		stopped <- ctx.Err()
		return nil, ctx.Err()
	})
	release := make(chan struct{})
	server.Handle("stubborn", func(ctx context.Context, r *Request) (any, error) {
		<-release // ignores its context
		return "late", nil
	})
	defer close(release)

	// The caller would wait 10 s; the server's cap of 300 ms cuts it off
	// and says so on the wire.
	for _, op := range []string{"slow", "stubborn"} {
		start := time.Now()
		err := client.Call(ctxTimeout(t, 10*time.Second), server.peer(), op, Meta{}, nil, nil)
		var e *Error
		if !errors.Is(err, ErrDeadlineExceeded) || !errors.As(err, &e) || !strings.Contains(e.Message, "did not finish") {
			t.Fatalf("%s: err = %v, want the server's deadline_exceeded", op, err)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("%s: answered after %v", op, el)
		}
	}
	if err := <-stopped; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("handler context ended with %v", err)
	}

	// The caller's own short deadline: the call ends on time, whether
	// the server's answer or the caller's clock comes first.
	start := time.Now()
	err := client.Call(ctxTimeout(t, 200*time.Millisecond), server.peer(), "slow", Meta{}, nil, nil)
	if !errors.Is(err, ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el > 3*time.Second { // generous: only a hang fails it
		t.Errorf("call returned after %v", el)
	}
}

func TestUnknownOperation(t *testing.T) {
	server, client := pair(t)
	err := client.Call(ctxTimeout(t, 5*time.Second), server.peer(), "no.such-op", Meta{}, nil, nil)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if got := server.served("unknown", certs.District, "not_found"); got != 1 {
		t.Errorf("counted %v under op=unknown", got)
	}
}

func TestForbiddenRole(t *testing.T) {
	f := newFederation(t, testFed)
	city := f.startNode(t, certs.City, "zj/hz")
	city.Handle("pseudonymize", echoHandler, AllowRoles(certs.District))
	otherCity := f.startNode(t, certs.City, "zj/nb")
	district := f.startNode(t, certs.District, "zj/hz/xh")

	err := otherCity.Call(ctxTimeout(t, 5*time.Second), city.peer(), "pseudonymize", Meta{}, echoReq{}, nil)
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("err = %v, want ErrForbidden", err)
	}
	if err := district.Call(ctxTimeout(t, 5*time.Second), city.peer(), "pseudonymize", Meta{}, echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestHandlerErrors(t *testing.T) {
	server, client := pair(t)
	server.Handle("panic", func(ctx context.Context, r *Request) (any, error) { panic("boom 110101199003077777") })
	server.Handle("leak", func(ctx context.Context, r *Request) (any, error) {
		return nil, fmt.Errorf("no record for subject 110101199003077777")
	})
	server.Handle("typed", func(ctx context.Context, r *Request) (any, error) {
		return nil, fmt.Errorf("lookup: %w", Errorf(CodeForbidden, "purpose %q not allowed", "marketing"))
	})
	server.Handle("conflict", func(ctx context.Context, r *Request) (any, error) { return nil, ErrConflict })

	ctx := ctxTimeout(t, 5*time.Second)
	for _, op := range []string{"panic", "leak"} {
		err := client.Call(ctx, server.peer(), op, Meta{}, nil, nil)
		if !errors.Is(err, ErrInternal) {
			t.Fatalf("%s: err = %v, want ErrInternal", op, err)
		}
		if strings.Contains(err.Error(), "1101011990") || strings.Contains(err.Error(), "boom") {
			t.Errorf("%s: internal detail crossed the wire: %v", op, err)
		}
	}
	if metricValue(server.m.panics) != 1 {
		t.Error("panic not counted")
	}
	err := client.Call(ctx, server.peer(), "typed", Meta{}, nil, nil)
	var e *Error
	if !errors.Is(err, ErrForbidden) || !errors.As(err, &e) || e.Message != `purpose "marketing" not allowed` {
		t.Fatalf("err = %v, want the handler's forbidden", err)
	}
	if err := client.Call(ctx, server.peer(), "conflict", Meta{}, nil, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	// The server lives on.
	if err := client.Call(ctx, server.peer(), "echo", Meta{}, echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestMalformedInput: each kind of bad input gets a typed answer on its
// own stream; the connection and the server carry on.
func TestMalformedInput(t *testing.T) {
	f := newFederation(t, testFed)
	server := f.startNode(t, certs.City, "zj/hz", withLimits(Limits{MaxFrame: 64 << 10, RequestReadTimeout: 500 * time.Millisecond}))
	server.Handle("echo", echoHandler)
	server.Handle("small", echoHandler, MaxBody(16))
	cert := f.issue(t, nodeID(testFed, certs.District, "zj/hz/xh")).TLSCertificate()
	conn, err := rawDial(t, rawClientTLS(f, cert, ALPN), server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	env := func(e requestEnvelope) []byte { return requestFrame(t, e) }
	good := requestEnvelope{Version: 1, Op: "echo", ID: 7, Body: echoBody(t)}
	header := func(n uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, n); return b }

	cases := []struct {
		name string
		data []byte
		want string // substring of the answer's message
	}{
		{"not CBOR", rawFrame([]byte{0xff, 0xfe, 0x00}), "malformed envelope"},
		{"not a map", rawFrame([]byte{0x01}), "malformed envelope"},
		{"trailing bytes", rawFrame(append(mustMarshal(t, good), 0x00)), "malformed envelope"},
		{"oversized prefix", header(1 << 30), "exceeds the limit"},
		{"empty frame", header(0), "empty frame"},
		{"truncated frame", append(header(100), 1, 2, 3), "truncated frame"},
		{"truncated prefix", []byte{0, 0}, "truncated frame"},
		{"wrong version", env(requestEnvelope{Version: 2, Op: "echo", Body: echoBody(t)}), "unsupported envelope version"},
		{"no operation", env(requestEnvelope{Version: 1, Body: echoBody(t)}), "no operation"},
		{"duplicate keys", rawFrame([]byte{0xa3, 0x01, 0x01, 0x02, 0x64, 'e', 'c', 'h', 'o', 0x01, 0x01}), "duplicate map key"},
		{"indefinite length", rawFrame([]byte{0xbf, 0x01, 0x01, 0x02, 0x64, 'e', 'c', 'h', 'o', 0xff}), "indefinite"},
		{"body not CBOR", env(requestEnvelope{Version: 1, Op: "echo", Body: []byte{0xff}}), "break"},
		{"body wrong type", env(requestEnvelope{Version: 1, Op: "echo", Body: []byte{0x01}}), "cannot decode"},
		{"body duplicate keys", env(requestEnvelope{Version: 1, Op: "echo", Body: []byte{0xa2, 0x01, 0x61, 'a', 0x01, 0x61, 'b'}}), "duplicate map key"},
		{"body too deep", env(requestEnvelope{Version: 1, Op: "echo", Body: deepArray(40)}), "nested"},
		{"body over op limit", env(requestEnvelope{Version: 1, Op: "small", Body: mustMarshal(t, echoReq{Subject: strings.Repeat("x", 40)})}), "exceeds the limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := rawExchange(ctxTimeout(t, 5*time.Second), conn, tc.data)
			if err != nil {
				t.Fatalf("no typed answer: %v", err)
			}
			if resp.Error == nil || resp.Error.Code != string(CodeBadRequest) || !strings.Contains(resp.Error.Message, tc.want) {
				t.Fatalf("answer %+v, want bad_request containing %q", resp.Error, tc.want)
			}
			// Same connection, next stream: still served.
			resp, err = rawExchange(ctxTimeout(t, 5*time.Second), conn, env(good))
			if err != nil || resp.Error != nil || resp.ID != 7 {
				t.Fatalf("good request after bad one: %+v, %v", resp, err)
			}
		})
	}

	// A stream that never finishes its frame is answered when the read
	// timeout passes.
	str, err := conn.OpenStreamSync(ctxTimeout(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	str.Write(header(50))
	str.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf, err := readFrame(str, DefaultMaxFrame)
	if err != nil {
		t.Fatal(err)
	}
	var resp responseEnvelope
	if err := decodeResponse(buf.b, &resp); err != nil || resp.Error == nil || !strings.Contains(resp.Error.Message, "not received") {
		t.Fatalf("answer %+v, %v", resp.Error, err)
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func deepArray(n int) []byte {
	b := make([]byte, 0, n+1)
	for i := 0; i < n; i++ {
		b = append(b, 0x81)
	}
	return append(b, 0x01)
}

func TestConcurrentCallsOneConnection(t *testing.T) {
	server, client := pair(t)
	release := make(chan struct{})
	var inHandler atomic.Int32
	server.Handle("wait", func(ctx context.Context, r *Request) (any, error) {
		if inHandler.Add(1) == 256 {
			close(release) // all 256 are in flight at once
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return echoHandler(ctx, r)
	})
	ctx := ctxTimeout(t, 20*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 256)
	for i := 0; i < 256; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp echoResp
			if err := client.Call(ctx, server.peer(), "wait", Meta{}, echoReq{N: i}, &resp); err != nil {
				errs <- err
			} else if resp.N != i+1 {
				errs <- fmt.Errorf("call %d got answer %d", i, resp.N)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := metricValue(client.m.openConns.WithLabelValues(ALPN, "outbound")); n != 1 {
		t.Errorf("client has %v open connections, want 1", n)
	}
}

func TestRateLimit(t *testing.T) {
	server, client := pair(t, withLimits(Limits{QueueWait: 20 * time.Millisecond}))
	server.Handle("pseudonymize", echoHandler, RateLimit(0.5, 2))
	ctx := ctxTimeout(t, 5*time.Second)
	for i := 0; i < 2; i++ {
		if err := client.Call(ctx, server.peer(), "pseudonymize", Meta{}, echoReq{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	err := client.Call(ctx, server.peer(), "pseudonymize", Meta{}, echoReq{}, nil)
	if !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("err = %v, want ErrTooManyRequests", err)
	}
	if StatusOf(err) != StatusDenied {
		t.Errorf("status %v", StatusOf(err))
	}
	// Another identity has its own bucket.
	other := server.fed.startNode(t, certs.District, "zj/hz/sc")
	if err := other.Call(ctx, server.peer(), "pseudonymize", Meta{}, echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
	// Other operations are not limited.
	if err := client.Call(ctx, server.peer(), "echo", Meta{}, echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestInflightCapPerPeer: a peer at its cap waits a little then gets
// unavailable; another peer is served meanwhile.
func TestInflightCapPerPeer(t *testing.T) {
	server, client := pair(t, withLimits(Limits{MaxInflightPerPeer: 2, QueueWait: 50 * time.Millisecond}))
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	server.Handle("block", func(ctx context.Context, r *Request) (any, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	ctx := ctxTimeout(t, 10*time.Second)
	done := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() { done <- client.Call(ctx, server.peer(), "block", Meta{}, nil, nil) }()
	}
	<-entered
	<-entered
	err := client.Call(ctx, server.peer(), "echo", Meta{}, echoReq{}, nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable at the cap", err)
	}
	other := server.fed.startNode(t, certs.District, "zj/hz/sc")
	if err := other.Call(ctx, server.peer(), "echo", Meta{}, echoReq{}, nil); err != nil {
		t.Fatalf("another peer starved: %v", err)
	}
	close(release)
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestReconnectAfterRestart(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "graceful", true: "crash"}[crash], func(t *testing.T) {
			f := newFederation(t, testFed)
			id := nodeID(testFed, certs.City, "zj/hz")
			is := f.issue(t, id)
			start := func(addr string) *Endpoint {
				e, err := New(Config{Certificate: is.TLSCertificate(), Verifier: certs.NewVerifier(f.ca.Cert, testFed, nil),
					Addr: addr, Logger: testLogger()})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { e.Close() })
				e.Handle("echo", echoHandler)
				return e
			}
			server := start("127.0.0.1:0")
			addr := server.Addr().String()
			client := f.startNode(t, certs.District, "zj/hz/xh")
			peer := Peer{Name: "hz", Addr: addr, Identity: &id}
			if err := client.Call(ctxTimeout(t, 5*time.Second), peer, "echo", Meta{}, echoReq{}, nil); err != nil {
				t.Fatal(err)
			}
			old := client.pooled(t, addr, ALPN)
			if crash {
				server.shutdown(false) // no CONNECTION_CLOSE: the client does not know
			} else {
				server.Close()
				<-old.conn.Context().Done() // told at once
			}
			start(addr)
			// Graceful: the client redials. Crash: the restarted server
			// answers the old connection with a stateless reset and the
			// request is sent again on a new connection. Either way the
			// first call after the restart succeeds.
			if err := client.Call(ctxTimeout(t, 5*time.Second), peer, "echo", Meta{}, echoReq{}, nil); err != nil {
				t.Fatal(err)
			}
			if client.pooled(t, addr, ALPN) == old {
				t.Error("still on the old connection")
			}
		})
	}
}

func TestCallAfterClose(t *testing.T) {
	server, client := pair(t)
	client.Close()
	err := client.Call(ctxTimeout(t, time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}
