package httpapi

import (
	"container/list"
	"crypto/tls"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Listener bounds the open connections of an http.Server without letting
// idle ones lock new ones out: at the limit, Accept closes the connection
// that has been new or idle the longest and takes the new one in its
// place; it waits only while every open connection is serving a request.
// The server's ConnState hook must be Listener.ConnState, which is how the
// listener learns which connections are idle.
type Listener struct {
	net.Listener
	max     int
	evicted prometheus.Counter
	wake    chan struct{} // a slot may have freed or a connection gone idle
	done    chan struct{} // closed by Close
	once    sync.Once

	mu   sync.Mutex
	open int
	idle list.List // *trackedConn in state New or Idle, longest first
}

// NewListener bounds ln to max open connections; reg, if set, receives
// the count of connections closed to make room.
func NewListener(ln net.Listener, max int, reg prometheus.Registerer) *Listener {
	if max <= 0 {
		max = 1
	}
	l := &Listener{Listener: ln, max: max, wake: make(chan struct{}, 1), done: make(chan struct{}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_api_connections_evicted_total",
			Help: "API connections closed while new or idle to make room for a new one.",
		})}
	if reg != nil {
		reg.MustRegister(l.evicted, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "credfed_api_open_connections", Help: "Open API connections.",
		}, func() float64 { return float64(l.Open()) }))
	}
	return l
}

// trackedConn is a connection the listener counts; elem is its place in
// Listener.idle while it is new or idle.
type trackedConn struct {
	net.Conn
	l        *Listener
	elem     *list.Element
	released bool // guarded by l.mu
}

// Close closes the connection and frees its slot.
func (c *trackedConn) Close() error {
	c.l.release(c)
	return c.Conn.Close()
}

// Accept waits for a connection; at the limit it closes the connection
// new or idle the longest, or, if every one is serving a request, waits
// for one to finish.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		l.mu.Lock()
		if l.open < l.max {
			tc := &trackedConn{Conn: c, l: l}
			tc.elem = l.idle.PushBack(tc)
			l.open++
			l.mu.Unlock()
			return tc, nil
		}
		if e := l.idle.Front(); e != nil {
			victim := e.Value.(*trackedConn)
			l.releaseLocked(victim)
			l.mu.Unlock()
			victim.Conn.Close()
			l.evicted.Inc()
			continue
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-l.done:
			c.Close()
			return nil, net.ErrClosed
		}
	}
}

// Close stops accepting; open connections stay open.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// Open is the number of open connections.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// ConnState is the http.Server.ConnState hook: a new or idle connection
// may be closed to make room, an active one may not.
func (l *Listener) ConnState(nc net.Conn, st http.ConnState) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	c, ok := nc.(*trackedConn)
	if !ok || c.l != l {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.released {
		return
	}
	switch st {
	case http.StateIdle:
		// Idle again: it goes to the back of the line.
		if c.elem != nil {
			l.idle.Remove(c.elem)
		}
		c.elem = l.idle.PushBack(c)
		l.signal()
	case http.StateActive, http.StateHijacked:
		if c.elem != nil {
			l.idle.Remove(c.elem)
			c.elem = nil
		}
	case http.StateClosed:
		l.releaseLocked(c)
	}
}

func (l *Listener) release(c *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked(c)
}

func (l *Listener) releaseLocked(c *trackedConn) {
	if c.released {
		return
	}
	c.released = true
	if c.elem != nil {
		l.idle.Remove(c.elem)
		c.elem = nil
	}
	l.open--
	l.signal()
}

// signal wakes an Accept waiting for room, if any.
func (l *Listener) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}
