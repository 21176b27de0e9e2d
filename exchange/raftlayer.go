package exchange

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"credfed/certs"
)

// The raft stream layer. Raft connections ride on QUIC connections of ALPN
// credfed-raft/1, separate from the request protocol's, on the same UDP
// port. Each raft net.Conn is one bidirectional QUIC stream; all raft
// conns to one address share one QUIC connection, dialed lazily and
// redialed on loss like the request connections. A new raft conn thus
// costs a stream (no round trip), not a handshake (docs/BENCHMARKS.md).

// RaftListener returns the listener of incoming raft conns: each Accept
// returns one net.Conn, a QUIC stream of a mutually authenticated
// connection from a node of the federation (ConnIdentity tells which).
// There is one listener per endpoint; closing it refuses further raft
// conns (the endpoint's Close closes it too). Its Addr is the endpoint's
// UDP address, which is also the node's raft address.
func (e *Endpoint) RaftListener() net.Listener { return e.raftListener }

// DialRaft opens a raft conn to the node at addr (host:port). ctx bounds
// the dial only, not the life of the conn. The peer may be any node of the
// federation; ConnIdentity tells which it proved to be.
func (e *Endpoint) DialRaft(ctx context.Context, addr string) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		ci, err := e.conn(ctx, poolKey{addr, RaftALPN}, addr)
		if err != nil {
			return nil, err
		}
		str, err := ci.conn.OpenStreamSync(ctx)
		if err != nil {
			if ctx.Err() == nil && attempt == 0 {
				e.forget(poolKey{addr, RaftALPN}, ci) // it just died: redial once
				continue
			}
			return nil, connError(addr, err)
		}
		return newStreamConn(e, ci, str), nil
	}
}

// ConnIdentity returns the verified identity of the peer of a raft conn
// returned by RaftListener().Accept or DialRaft.
func ConnIdentity(c net.Conn) (certs.Identity, bool) {
	if sc, ok := c.(*streamConn); ok {
		return sc.ci.peer, true
	}
	return certs.Identity{}, false
}

type raftListener struct {
	e    *Endpoint
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newRaftListener(e *Endpoint) *raftListener {
	return &raftListener{e: e, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next raft conn.
func (l *raftListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: "quic", Addr: l.Addr(), Err: net.ErrClosed}
	}
}

// Close stops accepting raft conns; conns already accepted stay open.
func (l *raftListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the endpoint's UDP address.
func (l *raftListener) Addr() net.Addr { return l.e.Addr() }

// serveRaft hands each incoming stream of a raft connection to the
// listener. A stream not taken within RequestReadTimeout (nobody
// accepting) is reset.
//
// A peer that Config.AdmitRaft refuses, on arrival or at any stream, loses
// the connection (code 0x6).
func (e *Endpoint) serveRaft(ci *connInfo) {
	if !e.admitRaftConn(ci) {
		return
	}
	for {
		str, err := ci.conn.AcceptStream(e.ctx)
		if err != nil {
			return
		}
		c := newStreamConn(e, ci, str)
		if !e.admitRaftConn(ci) {
			c.reset()
			return
		}
		t := time.NewTimer(e.lim.RequestReadTimeout)
		select {
		case e.raftListener.ch <- c:
		case <-e.raftListener.done:
			c.reset()
		case <-t.C:
			c.reset()
		case <-e.ctx.Done():
			c.reset()
		}
		t.Stop()
	}
}

// streamConn is a QUIC stream seen as a net.Conn.
type streamConn struct {
	e   *Endpoint
	ci  *connInfo
	str *quic.Stream

	wmu       sync.Mutex // serializes Write with the graceful close
	closed    atomic.Bool
	closeOnce sync.Once
}

func newStreamConn(e *Endpoint, ci *connInfo, str *quic.Stream) *streamConn {
	return &streamConn{e: e, ci: ci, str: str}
}

func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.str.Read(p)
	if n > 0 {
		c.e.m.raftBytesIn.Add(float64(n))
	}
	if err != nil && c.closed.Load() {
		err = net.ErrClosed
	}
	return n, err
}

func (c *streamConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := c.str.Write(p)
	if n > 0 {
		c.e.m.raftBytesOut.Add(float64(n))
	}
	return n, err
}

// Close ends both directions: a blocked Read or Write returns at once,
// data already written is still delivered, then the peer reads io.EOF.
func (c *streamConn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.str.CancelRead(streamClosed)
		c.str.SetWriteDeadline(time.Unix(1, 0)) // unblock a pending Write
		c.wmu.Lock()
		c.str.SetWriteDeadline(time.Time{})
		c.str.Close()
		c.wmu.Unlock()
	})
	return nil
}

// reset aborts the stream in both directions.
func (c *streamConn) reset() {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.str.CancelRead(streamRefused)
		c.str.CancelWrite(streamRefused)
	})
}

func (c *streamConn) LocalAddr() net.Addr                { return c.ci.conn.LocalAddr() }
func (c *streamConn) RemoteAddr() net.Addr               { return c.ci.conn.RemoteAddr() }
func (c *streamConn) SetDeadline(t time.Time) error      { return c.str.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.str.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }
