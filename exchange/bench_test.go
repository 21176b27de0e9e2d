package exchange

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/certs"
)

// Benchmarks: see docs/BENCHMARKS.md (## exchange) for the command and
// the figures.
//
// BenchmarkExchange compares a small request/response over one QUIC
// connection (this package) with the same exchange over HTTP/2 + TLS 1.3 +
// JSON (net/http, one keep-alive connection, mutual TLS with the same
// certificates), at 1, 16 and 256 concurrent requests. Each reports
// req/s and p50/p99 latency in microseconds.

var benchReq = echoReq{Subject: "99010119900307001X", N: 7}

type benchFixture struct {
	server, client *node
	peer           Peer
	httpURL        string
	httpClient     *http.Client
}

func newBenchFixture(b *testing.B) *benchFixture {
	f := newFederation(b, testFed)
	server := f.startNode(b, certs.District, "zj/hz/xh")
	server.Handle("echo", echoHandler)
	client := f.startNode(b, certs.City, "zj/hz")
	fx := &benchFixture{server: server, client: client, peer: server.peer()}

	// The HTTP/2 baseline, with the same certificates and checks.
	srvCert := f.issue(b, server.id)
	cliCert := f.issue(b, client.id)
	verifier := certs.NewVerifier(f.ca.Cert, testFed, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, err := certs.PeerIdentity(*r.TLS)
			if err != nil {
				http.Error(w, "unauthenticated", http.StatusUnauthorized)
				return
			}
			var req echoReq
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(echoResp{Subject: req.Subject, N: req.N + 1, Caller: caller,
				Purpose: r.Header.Get("X-Purpose")})
		}),
		TLSConfig: verifier.ServerConfig(srvCert.TLSCertificate(), certs.RequireClientCert, "h2"),
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: 1000},
	}
	go srv.ServeTLS(ln, "", "")
	b.Cleanup(func() { srv.Close() })
	fx.httpURL = "https://127.0.0.1:" + fmt.Sprint(ln.Addr().(*net.TCPAddr).Port) + "/v1/echo"
	fx.httpClient = &http.Client{Transport: &http.Transport{
		TLSClientConfig:   verifier.ClientConfig(cliCert.TLSCertificate(), "127.0.0.1", nil, "h2"),
		ForceAttemptHTTP2: true,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 1000},
	}}
	b.Cleanup(fx.httpClient.CloseIdleConnections)

	// Warm both up (connections dialed outside the measurement).
	if err := fx.callQUIC(); err != nil {
		b.Fatal(err)
	}
	resp, err := fx.httpClient.Post(fx.httpURL, "application/json", bytes.NewReader([]byte(`{"subject":"x","n":1}`)))
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		b.Fatalf("baseline speaks %s, not HTTP/2", resp.Proto)
	}
	return fx
}

func (fx *benchFixture) callQUIC() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var resp echoResp
	if err := fx.client.Call(ctx, fx.peer, "echo", Meta{Purpose: "bench"}, benchReq, &resp); err != nil {
		return err
	}
	if resp.N != benchReq.N+1 {
		return fmt.Errorf("wrong answer %d", resp.N)
	}
	return nil
}

func (fx *benchFixture) callHTTP2() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, err := json.Marshal(benchReq)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fx.httpURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Purpose", "bench")
	resp, err := fx.httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	var out echoResp
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return err
	}
	if out.N != benchReq.N+1 {
		return fmt.Errorf("wrong answer %d", out.N)
	}
	return nil
}

// runConcurrent runs b.N calls of fn from c goroutines and reports
// throughput and latency percentiles.
func runConcurrent(b *testing.B, c int, fn func() error) {
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for g := 0; g < c; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := fn(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d calls failed, first: %v", n, b.N, firstErr.Load())
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e3 }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

func BenchmarkExchange(b *testing.B) {
	fx := newBenchFixture(b)
	for _, c := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("quic/streams=%d", c), func(b *testing.B) { runConcurrent(b, c, fx.callQUIC) })
		b.Run(fmt.Sprintf("http2/streams=%d", c), func(b *testing.B) { runConcurrent(b, c, fx.callHTTP2) })
	}
}

// BenchmarkConnSetup measures a new connection and its first request: a
// full handshake, and a resumed TLS session.
func BenchmarkConnSetup(b *testing.B) {
	f := newFederation(b, testFed)
	server := f.startNode(b, certs.District, "zj/hz/xh")
	server.Handle("echo", echoHandler)
	for _, resumed := range []bool{false, true} {
		name := map[bool]string{false: "full", true: "resumed"}[resumed]
		b.Run(name, func(b *testing.B) {
			id := nodeID(testFed, certs.City, "zj/hz")
			e, err := New(Config{Certificate: f.issue(b, id).TLSCertificate(), Verifier: certs.NewVerifier(f.ca.Cert, testFed, nil),
				Addr: "127.0.0.1:0", DisableSessionResumption: !resumed})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			key := poolKey{server.Addr().String(), ALPN}
			frame, err := e.encodeRequest(context.Background(), "echo", Meta{}, benchReq)
			if err != nil {
				b.Fatal(err)
			}
			one := func() {
				ci, err := e.dialOnce(key, "server")
				if err != nil {
					b.Fatal(err)
				}
				if err := e.roundTrip(context.Background(), ci, "server", frame.b, nil); err != nil {
					b.Fatal(err)
				}
				ci.conn.CloseWithError(0, "")
			}
			one() // primes the session cache
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				one()
			}
			b.StopTimer()
			if resumed {
				ci, err := e.dialOnce(key, "server")
				if err != nil {
					b.Fatal(err)
				}
				if !ci.conn.ConnectionState().TLS.DidResume {
					b.Error("session was not resumed")
				}
				ci.conn.CloseWithError(0, "")
			}
		})
	}
}

// BenchmarkRaftDial compares the raft layer's choice (a new raft conn is a
// new stream on the shared connection) with a new QUIC connection per raft
// conn, each followed by a one-byte exchange.
func BenchmarkRaftDial(b *testing.B) {
	f := newFederation(b, testFed)
	a := f.startNode(b, certs.City, "zj/hz")
	srv := f.startNode(b, certs.District, "zj/hz/xh")
	go func() {
		for {
			c, err := srv.RaftListener().Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				one := make([]byte, 1)
				if _, err := io.ReadFull(c, one); err == nil {
					c.Write(one)
				}
			}()
		}
	}()
	ping := func(c net.Conn) {
		one := []byte{1}
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	addr := srv.Addr().String()
	b.Run("stream", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			c, err := a.DialRaft(context.Background(), addr)
			if err != nil {
				b.Fatal(err)
			}
			ping(c)
		}
	})
	b.Run("connection", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			ci, err := a.dialOnce(poolKey{addr, RaftALPN}, addr)
			if err != nil {
				b.Fatal(err)
			}
			str, err := ci.conn.OpenStreamSync(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			ping(newStreamConn(a.Endpoint, ci, str))
			ci.conn.CloseWithError(0, "")
		}
	})
}
