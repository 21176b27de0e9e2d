package exchange

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"credfed/certs"
)

// honestCalls makes n calls from an honest peer and fails the test if any
// fails. Each has 5 s, far more than an answer takes even on a loaded
// machine under -race, and far less than a server starved by the attack
// would need (the attacks hold their streams until the test ends).
func honestCalls(t *testing.T, client *node, server *node, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := client.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{N: i}, nil); err != nil {
			t.Fatalf("honest call %d failed under attack: %v", i, err)
		}
	}
}

// openHostileStreams opens streams on conn until the server's stream limit
// stops it, writing first on each; it returns how many it opened.
func openHostileStreams(t *testing.T, conn *quic.Conn, first []byte) int {
	t.Helper()
	n := 0
	for {
		str, err := conn.OpenStream()
		if err != nil {
			var limit *quic.StreamLimitReachedError
			if !errors.As(err, &limit) {
				t.Fatalf("open stream: %v", err)
			}
			return n
		}
		if _, err := str.Write(first); err != nil {
			t.Fatalf("write: %v", err)
		}
		n++
		if n > 100000 {
			t.Fatal("no stream limit")
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// TestSlowLoris: a peer opens streams and sends (almost) nothing. It gets
// only its stream credit, the server answers each stream when the read
// timeout passes, and other peers are served all along.
func TestSlowLoris(t *testing.T) {
	f := newFederation(t, testFed)
	server := f.startNode(t, certs.City, "zj/hz", withLimits(Limits{RequestReadTimeout: 1500 * time.Millisecond}))
	server.Handle("echo", echoHandler)
	honest := f.startNode(t, certs.District, "zj/hz/ok")

	cert := f.issue(t, nodeID(testFed, certs.District, "zj/hz/loris")).TLSCertificate()
	conn, err := rawDial(t, rawClientTLS(f, cert, ALPN), server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	opened := openHostileStreams(t, conn, []byte{0}) // one byte of a length prefix
	if opened != server.lim.MaxIncomingStreams {
		t.Errorf("hostile peer opened %d streams, want the limit %d", opened, server.lim.MaxIncomingStreams)
	}
	honestCalls(t, honest, server, 20)
	// After the read timeout every loris stream has been answered and its
	// credit returned: the peer can open streams again.
	eventually(t, 10*time.Second, "loris streams to be answered", func() bool {
		return server.served("unknown", certs.District, "bad_request") >= float64(opened)
	})
	eventually(t, 5*time.Second, "stream credit to return", func() bool {
		str, err := conn.OpenStream()
		if err == nil {
			str.CancelWrite(0)
		}
		return err == nil
	})
}

// TestThousandsOfStreams: one peer opens thousands of streams over several
// connections, each announcing a 4 MiB frame and sending a little of it.
// The stream and connection caps bound what it gets, the byte budget
// bounds what the server allocates, memory stays bounded, and another
// peer's requests complete meanwhile.
func TestThousandsOfStreams(t *testing.T) {
	f := newFederation(t, testFed)
	const conns = 4
	server := f.startNode(t, certs.City, "zj/hz", withLimits(Limits{MaxConnsPerPeer: conns, RequestReadTimeout: 20 * time.Second}))
	server.Handle("echo", echoHandler)
	honest := f.startNode(t, certs.District, "zj/hz/ok")
	honestCalls(t, honest, server, 1) // warm up: dial outside the measurement

	before := heapInUse()
	cert := f.issue(t, nodeID(testFed, certs.District, "zj/hz/flood")).TLSCertificate()
	claim := make([]byte, 4+1024)
	binary.BigEndian.PutUint32(claim, DefaultMaxFrame)
	total := 0
	var hostile []*quic.Conn
	for i := 0; i < conns; i++ {
		conn, err := rawDial(t, rawClientTLS(f, cert, ALPN), server.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		hostile = append(hostile, conn)
		total += openHostileStreams(t, conn, claim)
	}
	if total < 2000 {
		t.Fatalf("opened only %d streams", total)
	}
	// One connection more than the cap is refused (on first use).
	eventually(t, 5*time.Second, "the server to register the connections", func() bool {
		return server.liveConns() == conns+1 // and the honest one
	})
	extra, err := rawDial(t, rawClientTLS(f, cert, ALPN), server.Addr().String())
	if err == nil {
		_, err = rawExchange(ctxTimeout(t, 5*time.Second), extra, requestFrame(t, requestEnvelope{Version: 1, Op: "echo", Body: echoBody(t)}))
	}
	if ce := connError("server", err); !errors.Is(ce, ErrUnavailable) || !errors.Is(err, &quic.ApplicationError{ErrorCode: closeTooManyConns, Remote: true}) {
		t.Fatalf("extra connection: %v, want refused with too many connections", err)
	}

	// The server holds at most its per-peer byte budget for them.
	eventually(t, 10*time.Second, "the flood to reach the server", func() bool {
		return server.peerBytes(cert) >= int64(server.lim.MaxBytesPerPeer-DefaultMaxFrame)
	})
	if got := server.peerBytes(cert); got > int64(server.lim.MaxBytesPerPeer) {
		t.Errorf("server holds %d bytes for the peer, over its budget", got)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); honestCalls(t, honest, server, 25) }()
	}
	wg.Wait()
	growth := int64(heapInUse()) - int64(before)
	t.Logf("%d hostile streams; heap+stack growth %d MiB", total, growth>>20)
	// Unbounded, 2,000 streams × 4 MiB would be 8 GiB.
	if growth > 256<<20 {
		t.Errorf("memory grew by %d MiB", growth>>20)
	}
	for _, c := range hostile {
		c.CloseWithError(0, "")
	}
	eventually(t, 10*time.Second, "the budget to be released", func() bool { return server.peerBytes(cert) == 0 })
}

// peerBytes is the request bytes the server holds for the identity of cert.
func (n *node) peerBytes(cert tls.Certificate) int64 {
	id, err := certs.IdentityOf(cert.Leaf)
	if err != nil {
		panic(err)
	}
	n.mu.Lock()
	ps := n.peers[id.String()]
	n.mu.Unlock()
	if ps == nil {
		return 0
	}
	return ps.bytes.inUse()
}
