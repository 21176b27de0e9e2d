package exchange

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"credfed/certs"
)

func withAdmit(admit func(certs.Identity) error) nodeOption {
	return func(c *Config) { c.Admit = admit }
}

func withAdmitRaft(admit func(certs.Identity) error) nodeOption {
	return func(c *Config) { c.AdmitRaft = admit }
}

// registry is a test's region registry: the regions admitted, by path,
// with the role each is registered with.
type registry struct {
	mu      sync.Mutex
	regions map[string]certs.Role
	asked   atomic.Int32
}

func newRegistry(ids ...certs.Identity) *registry {
	r := &registry{regions: map[string]certs.Role{}}
	for _, id := range ids {
		r.regions[id.Region] = id.Role
	}
	return r
}

func (r *registry) remove(region string) {
	r.mu.Lock()
	delete(r.regions, region)
	r.mu.Unlock()
}

// admit is what a node's hook does: registered, with the caller's role.
func (r *registry) admit(id certs.Identity) error {
	r.asked.Add(1)
	r.mu.Lock()
	role, ok := r.regions[id.Region]
	r.mu.Unlock()
	switch {
	case !ok:
		return Errorf(CodeForbidden, "region %s is not registered in the federation", id.Region)
	case role != id.Role:
		return fmt.Errorf("region %s is registered for a %s node, not a %s", id.Region, role, id.Role)
	}
	return nil
}

// TestAdmitRefusesUnregisteredCallers: a caller with a valid node
// certificate whose region the hook refuses gets forbidden, naming the
// region, on the very first use of its connection (TLS 1.3 lets the dial
// succeed), for any operation, known or not; no handler runs. An
// operation registered with Unregistered still serves it, and registered
// callers are served as before.
func TestAdmitRefusesUnregisteredCallers(t *testing.T) {
	f := newFederation(t, testFed)
	good := nodeID(testFed, certs.District, "zj/hz/xh")
	reg := newRegistry(nodeID(testFed, certs.City, "zj/hz"), good, nodeID(testFed, certs.District, "zj/hz/sc"))
	server := f.startNode(t, certs.City, "zj/hz", withAdmit(reg.admit))
	var ran atomic.Int32
	server.Handle("echo", func(ctx context.Context, r *Request) (any, error) { ran.Add(1); return echoHandler(ctx, r) })
	var joined atomic.Int32
	server.Handle("join", func(ctx context.Context, r *Request) (any, error) {
		joined.Add(1)
		return echoHandler(ctx, r)
	}, Unregistered(), MaxBody(1024), RateLimit(5, 5))

	rogue := f.startNode(t, certs.District, "zj/hz/rogue")
	err := rogue.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{Subject: "s", N: 1}, nil)
	var we *Error
	if !errors.Is(err, ErrForbidden) || !errors.As(err, &we) {
		t.Fatalf("first call of an unregistered caller: %v, want forbidden", err)
	}
	if !strings.Contains(we.Message, "zj/hz/rogue") || !strings.Contains(we.Message, "not registered") {
		t.Errorf("message %q does not say which region is not registered", we.Message)
	}
	if ran.Load() != 0 {
		t.Fatal("the handler ran for a caller that is not admitted")
	}
	// Unknown operations are refused the same way: nothing is learned of
	// which exist.
	if err := rogue.Call(ctxTimeout(t, 5*time.Second), server.peer(), "nope", Meta{}, nil, nil); !errors.Is(err, ErrForbidden) {
		t.Errorf("unknown operation for an unregistered caller: %v, want forbidden", err)
	}
	// The operation open to unregistered nodes serves it.
	var resp echoResp
	if err := rogue.Call(ctxTimeout(t, 5*time.Second), server.peer(), "join", Meta{}, echoReq{Subject: "j", N: 1}, &resp); err != nil {
		t.Fatalf("join: %v", err)
	}
	if resp.Caller != rogue.id || joined.Load() != 1 {
		t.Errorf("join answered %+v (ran %d times)", resp, joined.Load())
	}
	// Still refused afterwards, on the same connection.
	if err := rogue.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil); !errors.Is(err, ErrForbidden) {
		t.Errorf("second call: %v, want forbidden", err)
	}

	// A plain error from the hook is answered forbidden with its text.
	wrongRole := f.startNode(t, certs.City, "zj/hz/sc")
	err = wrongRole.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil)
	if !errors.As(err, &we) || we.Code != CodeForbidden || !strings.Contains(we.Message, "registered for a district node, not a city") {
		t.Errorf("caller registered with another role: %v", err)
	}

	// A registered caller is served, and an unknown operation is
	// not_found for it.
	member := f.startNode(t, certs.District, "zj/hz/xh")
	if err := member.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{N: 1}, &resp); err != nil || resp.N != 2 {
		t.Fatalf("registered caller: %v %+v", err, resp)
	}
	if err := member.Call(ctxTimeout(t, 5*time.Second), server.peer(), "nope", Meta{}, nil, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown operation for a registered caller: %v, want not_found", err)
	}
	if ran.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", ran.Load())
	}
	// A region removed from the registry is refused from its next request.
	reg.remove("zj/hz/xh")
	if err := member.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil); !errors.Is(err, ErrForbidden) {
		t.Errorf("after removal: %v, want forbidden", err)
	}
	if got := metricValue(server.m.notAdmitted.WithLabelValues(ALPN, string(CodeForbidden))); got != 5 {
		t.Errorf("not admitted counter = %v, want 5", got)
	}
}

// TestAdmitRefusesBeforeReading: without an operation open to
// unregistered callers, a refused caller's request is not even read (a
// large one costs the server nothing), yet the caller learns why on its
// first use of the connection. The hook's own *Error goes out as is.
func TestAdmitRefusesBeforeReading(t *testing.T) {
	f := newFederation(t, testFed)
	server := f.startNode(t, certs.City, "zj/hz", withAdmit(func(id certs.Identity) error {
		if id.Region == "zj/hz/later" {
			return Errorf(CodeUnavailable, "this node has not received the registry yet")
		}
		return Errorf(CodeForbidden, "region %s is not registered", id.Region)
	}))
	server.Handle("echo", echoHandler)

	rogue := f.startNode(t, certs.District, "zj/hz/rogue")
	big := echoReq{Subject: strings.Repeat("x", 2<<20)}
	err := rogue.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, big, nil)
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "region zj/hz/rogue is not registered") {
		t.Fatalf("err = %v, want forbidden naming the region", err)
	}
	if got := metricValue(server.m.reqBytesIn); got > 64<<10 {
		t.Errorf("the server read %v bytes of a refused request", got)
	}
	// A raw client sees the same on its first stream: the dial succeeded.
	cert := f.issue(t, nodeID(testFed, certs.District, "zj/hz/raw")).TLSCertificate()
	conn, err := rawDial(t, rawClientTLS(f, cert, ALPN), server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	env, err := rawExchange(ctxTimeout(t, 5*time.Second), conn, requestFrame(t, requestEnvelope{Version: 1, Op: "echo", ID: 3, Body: echoBody(t)}))
	if err != nil || env.Error == nil || env.Error.Code != string(CodeForbidden) {
		t.Fatalf("raw request: %+v %v", env, err)
	}
	later := f.startNode(t, certs.District, "zj/hz/later")
	if err := later.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("hook's own code: %v, want unavailable", err)
	}
}

// TestAdmitRaft: a peer the AdmitRaft hook refuses loses its raft
// connection (0x6, forbidden, the reason naming its region) and no raft
// conn of it reaches the listener; an admitted peer's raft conns work,
// until its admission ends: then its next stream, or Readmit, closes the
// connection.
func TestAdmitRaft(t *testing.T) {
	f := newFederation(t, testFed)
	voter := nodeID(testFed, certs.City, "zj/nb")
	reg := newRegistry(voter)
	server := f.startNode(t, certs.City, "zj/hz", withAdmitRaft(reg.admit))
	var accepted atomic.Int32
	go func() {
		for {
			c, err := server.RaftListener().Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()

	rogue := f.startNode(t, certs.City, "zj/rogue")
	c, err := rogue.DialRaft(ctxTimeout(t, 5*time.Second), server.Addr().String())
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err = c.Write([]byte{1}); err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		c.Close()
	}
	if err == nil {
		t.Fatal("a raft conn of an unregistered peer was served")
	}
	var ae *quic.ApplicationError
	if !errors.As(err, &ae) || ae.ErrorCode != closeNotAdmitted || !ae.Remote {
		t.Fatalf("raft conn failed with %v, want application error %#x from the server", err, closeNotAdmitted)
	}
	if ce := connError("server", err); ce.Code != CodeForbidden || !strings.Contains(ce.Message, "region zj/rogue is not registered") {
		t.Errorf("close maps to %v", ce)
	}
	if accepted.Load() != 0 {
		t.Fatal("the raft listener got a conn of a peer that is not admitted")
	}

	// An admitted peer.
	member := f.startNode(t, certs.City, "zj/nb")
	echoOnce := func(c net.Conn) error {
		if _, err := c.Write([]byte{7}); err != nil {
			return err
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if b[0] != 7 {
			return fmt.Errorf("echoed %d", b[0])
		}
		return nil
	}
	c1, err := member.DialRaft(ctxTimeout(t, 5*time.Second), server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c1.SetDeadline(time.Now().Add(5 * time.Second))
	if err := echoOnce(c1); err != nil {
		t.Fatalf("admitted peer: %v", err)
	}
	mci := member.pooled(t, server.Addr().String(), RaftALPN)

	// Its admission ends: a new stream on the same connection is refused.
	reg.remove("zj/nb")
	c2, err := member.DialRaft(ctxTimeout(t, 5*time.Second), server.Addr().String())
	if err == nil {
		c2.SetDeadline(time.Now().Add(5 * time.Second))
		err = echoOnce(c2)
		c2.Close()
	}
	if err == nil {
		t.Fatal("a new raft stream was served after the peer's admission ended")
	}
	select {
	case <-mci.conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection of a peer no longer admitted is still open")
	}

	// Readmit closes a live connection whose peer is no longer admitted,
	// without waiting for a new stream.
	reg.mu.Lock()
	reg.regions["zj/nb"] = certs.City
	reg.mu.Unlock()
	c3, err := member.DialRaft(ctxTimeout(t, 5*time.Second), server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	c3.SetDeadline(time.Now().Add(5 * time.Second))
	if err := echoOnce(c3); err != nil {
		t.Fatalf("readmitted peer: %v", err)
	}
	live := member.pooled(t, server.Addr().String(), RaftALPN)
	server.Readmit() // still admitted: nothing happens
	if live.conn.Context().Err() != nil {
		t.Fatal("Readmit closed the connection of an admitted peer")
	}
	reg.remove("zj/nb")
	server.Readmit()
	select {
	case <-live.conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Readmit left the connection of a peer no longer admitted open")
	}
	if _, err := c3.Read(make([]byte, 1)); err == nil {
		t.Error("the raft conn still reads after its connection was closed")
	}
	if got := metricValue(server.m.notAdmitted.WithLabelValues(RaftALPN, string(CodeForbidden))); got < 3 {
		t.Errorf("not admitted counter = %v, want at least 3", got)
	}
}

// TestPeerAt: PeerAt names the node that answers at an address, from its
// verified certificate, on the connection calls then use; an address where
// nothing answers is unavailable.
func TestPeerAt(t *testing.T) {
	f := newFederation(t, testFed)
	server := f.startNode(t, certs.City, "zj/hz")
	server.Handle("echo", echoHandler)
	client := f.startNode(t, certs.District, "zj/hz/xh")
	id, err := client.PeerAt(ctxTimeout(t, 5*time.Second), server.Addr().String())
	if err != nil || id != nodeID(testFed, certs.City, "zj/hz") {
		t.Fatalf("PeerAt: %v %v", id, err)
	}
	var resp echoResp
	if err := client.Call(ctxTimeout(t, 5*time.Second), Peer{Addr: server.Addr().String(), Identity: &id}, "echo", Meta{},
		echoReq{N: 1}, &resp); err != nil || resp.N != 2 {
		t.Fatalf("a call naming the identity PeerAt gave: %+v %v", resp, err)
	}
	// Nothing listens on a closed endpoint's port.
	gone := f.startNode(t, certs.City, "zj/nb")
	addr := gone.Addr().String()
	gone.Close()
	if _, err := client.PeerAt(ctxTimeout(t, 2*time.Second), addr); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("PeerAt of an address where nothing answers: %v", err)
	}
}
