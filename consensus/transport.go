package consensus

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
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

	// Accepted conns, until raft's handler of each returns (it closes the
	// conn). Raft answers heartbeats on those handlers, outside its main
	// loop, and writes the term to the stable store when it does: the log
	// may only close once they are all done (closeInbound).
	mu      sync.Mutex
	inbound map[*inboundConn]struct{}
	wg      sync.WaitGroup
}

func newStreamLayer(ep *exchange.Endpoint, advertise string) *streamLayer {
	ctx, stop := context.WithCancel(context.Background())
	return &streamLayer{ep: ep, ln: ep.RaftListener(), advertise: textAddr(advertise), ctx: ctx, stop: stop,
		inbound: map[*inboundConn]struct{}{}}
}

// inboundConn is an accepted conn whose Close tells the stream layer that
// raft's handler of it has returned.
type inboundConn struct {
	net.Conn
	once sync.Once
	s    *streamLayer
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

// hclogAdapter routes hashicorp/raft's hclog output into the node's slog
// logger. Raft logs name servers (region paths) and addresses, never
// subjects.
func hclogAdapter(log *slog.Logger, name string, level hclog.Level) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           level,
		Output:          &slogWriter{log: log},
		DisableTime:     true,
		IncludeLocation: false,
	})
}

// slogWriter turns hclog's lines into slog records of the right level.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	sc := bufio.NewScanner(bytes.NewReader(p))
	for sc.Scan() {
		line := sc.Text()
		lvl := slog.LevelInfo
		switch {
		case benignRaftWarning(line):
			lvl = slog.LevelDebug
		case strings.Contains(line, "[ERROR]"):
			lvl = slog.LevelError
		case strings.Contains(line, "[WARN]"):
			lvl = slog.LevelWarn
		case strings.Contains(line, "[DEBUG]"), strings.Contains(line, "[TRACE]"):
			lvl = slog.LevelDebug
		}
		w.log.Log(context.Background(), lvl, strings.TrimSpace(line))
	}
	return len(p), nil
}

var _ io.Writer = (*slogWriter)(nil)

// benignRaftWarning recognizes raft warnings that are part of normal
// operation (a follower that joins with an empty log makes the leader walk
// back to the first entry it has), so they do not alarm operators.
func benignRaftWarning(line string) bool {
	for _, s := range []string{"appendEntries rejected, sending older logs", "failed to get previous log",
		"not part of a stable configuration or a non-voter"} {
		if strings.Contains(line, s) {
			return true
		}
	}
	return false
}
