package consensus

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"credfed/exchange"
)

// streamLayer is raft's network: QUIC streams of the exchange endpoint on
// the node's one UDP port (ALPN credfed-raft/1), mutually authenticated
// with node certificates, so a peer without a valid node certificate of
// the federation cannot take part in Raft.
type streamLayer struct {
	ep        *exchange.Endpoint
	ln        net.Listener
	advertise net.Addr
	// ctx bounds every dial; stop cancels it so that a shutdown does not
	// wait for dials to peers that are gone.
	ctx  context.Context
	stop context.CancelFunc
	// policy says which peers announced a clean stop, and whether this
	// replica is closing.
	policy *raftLogPolicy

	// Accepted conns, until raft's handler of each returns (it closes the
	// conn). Raft answers heartbeats on those handlers, outside its main
	// loop, and writes the term to the stable store when it does: the log
	// may only close once they are all done (closeInbound).
	mu      sync.Mutex
	inbound map[*inboundConn]struct{}
	wg      sync.WaitGroup
}

func newStreamLayer(ep *exchange.Endpoint, advertise string, policy *raftLogPolicy) *streamLayer {
	ctx, stop := context.WithCancel(context.Background())
	return &streamLayer{ep: ep, ln: ep.RaftListener(), advertise: textAddr(advertise), ctx: ctx, stop: stop,
		policy: policy, inbound: map[*inboundConn]struct{}{}}
}

// inboundConn is an accepted conn whose Close tells the stream layer that
// raft's handler of it has returned.
//
// A conn that ends because of a clean stop — this node's (closeInbound,
// or its transport shutting down) or its peer's, announced — ends as a
// hang-up: a failed read returns io.EOF and a failed write is dropped, so
// that raft's handler returns quietly instead of logging an ERROR for
// what is no failure.
type inboundConn struct {
	net.Conn
	once sync.Once
	s    *streamLayer
	peer raft.ServerID
	shut atomic.Bool // closed by closeInbound
}

func (c *inboundConn) ending() bool {
	return c.shut.Load() || c.s.policy.closing.Load() || c.s.policy.peerStopped(c.peer, "")
}

func (c *inboundConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && err != io.EOF && c.ending() {
		err = io.EOF
	}
	return n, err
}

func (c *inboundConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && c.ending() {
		return len(p), nil
	}
	return n, err
}

func (c *inboundConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.inbound, c)
		c.s.mu.Unlock()
		c.s.wg.Done()
	})
	return err
}

// closeInbound closes every accepted conn and waits (at most timeout) for
// raft's handlers of them to return.
func (s *streamLayer) closeInbound(timeout time.Duration) bool {
	s.mu.Lock()
	for c := range s.inbound {
		c.shut.Store(true)
		c.Conn.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	ic := &inboundConn{Conn: c, s: s}
	if id, ok := exchange.ConnIdentity(c); ok {
		ic.peer = raft.ServerID(id.Region)
	}
	s.mu.Lock()
	s.inbound[ic] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	return ic, nil
}
func (s *streamLayer) Close() error   { return s.ln.Close() }
func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	return s.ep.DialRaft(ctx, string(addr))
}

// textAddr is a net.Addr for an advertised host:port.
type textAddr string

func (a textAddr) Network() string { return "quic" }
func (a textAddr) String() string  { return string(a) }
