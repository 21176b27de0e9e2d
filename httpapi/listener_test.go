package httpapi

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"credfed/internal/wait"
)

// countingListener counts the connections its listener accepted.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (c *countingListener) Accept() (net.Conn, error) {
	conn, err := c.Listener.Accept()
	if err == nil {
		c.n.Add(1)
	}
	return conn, err
}

// limitedServer serves h over TLS (HTTP/2 and HTTP/1.1) through a
// Listener of max connections.
func limitedServer(t *testing.T, max int, h http.Handler) (*httptest.Server, *Listener, *countingListener) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	inner := &countingListener{Listener: srv.Listener}
	ln := NewListener(inner, max, prometheus.NewRegistry())
	srv.Listener = ln
	srv.Config.ConnState = ln.ConnState
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // clients hung up on purpose
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, ln, inner
}

func (l *Listener) inLine() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.idle.Len()
}

// closedByPeer waits for c to be closed by the other end.
func closedByPeer(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s is still open: %v", what, err)
	}
}

// TestListenerEvictsIdleConnectionsForNewOnes: at the limit, a new
// connection takes the place of the one new or idle the longest — an
// idle HTTP/2 connection, a TCP connection that never sent a byte — so
// that connections holding nothing cannot lock clients out.
func TestListenerEvictsIdleConnectionsForNewOnes(t *testing.T) {
	srv, ln, inner := limitedServer(t, 2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	get := func() *http.Response {
		t.Helper()
		// A fresh transport each time: the pooled HTTP/2 connection may be
		// the one evicted, and a client that has not yet read the close
		// would send on it and get EOF.
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone(), ForceAttemptHTTP2: true}}
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp
	}
	if resp := get(); resp.ProtoMajor != 2 {
		t.Fatalf("served over HTTP/%d, want 2", resp.ProtoMajor)
	}
	wait.Until(t, 10*time.Second, "the HTTP/2 connection to be idle", func() bool { return ln.inLine() == 1 })
	evicted := func() int { return int(testutil.ToFloat64(ln.evicted)) }

	// Two connections that send nothing: the second takes the idle
	// HTTP/2 connection's place.
	var silent []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		silent = append(silent, c)
	}
	wait.Until(t, 10*time.Second, "both silent connections to be accepted", func() bool { return inner.n.Load() == 3 && evicted() == 1 })
	if ln.Open() != 2 || ln.inLine() != 2 {
		t.Fatalf("%d open, %d new or idle; want the 2 silent ones", ln.Open(), ln.inLine())
	}
	// A client is served on a new connection, in place of the first
	// silent one, the oldest.
	get()
	closedByPeer(t, silent[0], "the oldest silent connection")
	if evicted() != 2 || ln.Open() != 2 {
		t.Fatalf("%d evicted, %d open; want 2 and 2", evicted(), ln.Open())
	}
}

// TestListenerNeverEvictsActiveConnections: with every connection serving
// a request, a new one waits instead of cutting one; it is served once a
// request finishes.
func TestListenerNeverEvictsActiveConnections(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	var inHandler atomic.Int64
	srv, ln, inner := limitedServer(t, 2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			inHandler.Add(1)
			<-release
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(unblock) // before srv.Close, which waits for the handlers
	var wg sync.WaitGroup
	statuses := make([]int, 2)
	for i := range 2 {
		// One transport each: two connections, not two streams on one.
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()}}
		wg.Go(func() {
			resp, err := hc.Get(srv.URL + "/slow")
			if err != nil {
				t.Errorf("an active request was cut: %v", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wait.Until(t, 10*time.Second, "both requests to be in the handler", func() bool { return inHandler.Load() == 2 })

	third := make(chan error, 1)
	go func() {
		conf := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		conf.NextProtos = []string{"http/1.1"}
		c, err := tls.Dial("tcp", srv.Listener.Addr().String(), conf)
		if err != nil {
			third <- err
			return
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = errors.New(resp.Status)
		}
		third <- err
	}()
	wait.Until(t, 10*time.Second, "the third connection to reach Accept", func() bool { return inner.n.Load() == 3 })
	if n := testutil.ToFloat64(ln.evicted); n != 0 || ln.Open() != 2 {
		t.Fatalf("with both connections active: %v evicted, %d open", n, ln.Open())
	}
	unblock()
	wg.Wait()
	for i, st := range statuses {
		if st != http.StatusOK {
			t.Fatalf("active request %d: status %d", i, st)
		}
	}
	select {
	case err := <-third:
		if err != nil {
			t.Fatalf("the waiting connection: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting connection was not served after the requests finished")
	}
}
