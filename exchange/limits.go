package exchange

import (
	"context"
	"math"
	"sync"
	"time"
)

// Limits bound what one peer, and all peers together, can make this node
// hold. Every zero field takes the default named in its comment; the
// defaults are what docs/exchange.md documents.
type Limits struct {
	// MaxFrame is the largest frame (envelope) accepted, in either
	// direction. Default DefaultMaxFrame (4 MiB).
	MaxFrame int

	// MaxIncomingStreams caps the concurrent streams a peer may have open
	// on one connection (QUIC MAX_STREAMS), requests and raft conns alike.
	// A stream's credit returns when it is finished in both directions.
	// Default 512.
	MaxIncomingStreams int
	// MaxConnsPerPeer caps the live incoming connections of one identity,
	// both ALPNs together. Default 8.
	MaxConnsPerPeer int
	// MaxConns caps all live incoming connections. Default 4096.
	MaxConns int

	// MaxInflightPerPeer caps the handlers running at once for one caller
	// identity, so that one peer cannot starve the others. Default 256.
	MaxInflightPerPeer int
	// MaxBytesPerPeer caps the request bytes being read or held for one
	// caller identity. Default 32 MiB.
	MaxBytesPerPeer int
	// MaxBytes caps request bytes being read or held for all callers.
	// Default 256 MiB.
	MaxBytes int
	// QueueWait is how long a request beyond a cap (in-flight, bytes, rate)
	// waits for room before it is refused with unavailable (or
	// too_many_requests for a rate limit). Default 100 ms.
	QueueWait time.Duration

	// RequestReadTimeout bounds the time to receive a whole request frame
	// once its stream is open (slow-loris defence). Default 10 s.
	RequestReadTimeout time.Duration
	// DefaultTimeout is the handler deadline for a request that carries
	// none. Default 30 s.
	DefaultTimeout time.Duration
	// MaxTimeout caps the deadline a caller may ask for. Default 2 min.
	MaxTimeout time.Duration

	// HandshakeIdleTimeout aborts a handshake when the peer is silent this
	// long (and at twice this long in any case). Default 5 s.
	HandshakeIdleTimeout time.Duration
	// MaxIdleTimeout closes a connection that heard nothing for this long;
	// the effective value is the smaller of both peers'. Default 30 s.
	MaxIdleTimeout time.Duration
	// KeepAlivePeriod is how often a connection without traffic sends a
	// PING, so that connections stay up between sparse lookups and a dead
	// peer is noticed within MaxIdleTimeout. Default 10 s.
	KeepAlivePeriod time.Duration
	// DialTimeout bounds one dial (handshake included). Default 10 s.
	DialTimeout time.Duration

	// StreamReceiveWindow and ConnReceiveWindow are the largest QUIC flow
	// control windows (bytes a peer may send ahead of our reading).
	// Defaults: MaxFrame+4 KiB per stream, 16 MiB per connection.
	StreamReceiveWindow int
	ConnReceiveWindow   int

	// RedialBackoff is the first pause after a failed dial during which
	// calls to that address fail fast; it doubles per failure up to
	// MaxRedialBackoff. Defaults 250 ms and 10 s.
	RedialBackoff    time.Duration
	MaxRedialBackoff time.Duration

	// ShutdownGrace is how long Close lets running handlers finish
	// before it closes the connections. Default 2 s.
	ShutdownGrace time.Duration
}

func (l Limits) withDefaults() Limits {
	set := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	setD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	set(&l.MaxFrame, DefaultMaxFrame)
	set(&l.MaxIncomingStreams, 512)
	set(&l.MaxConnsPerPeer, 8)
	set(&l.MaxConns, 4096)
	set(&l.MaxInflightPerPeer, 256)
	set(&l.MaxBytesPerPeer, 32<<20)
	set(&l.MaxBytes, 256<<20)
	setD(&l.QueueWait, 100*time.Millisecond)
	setD(&l.RequestReadTimeout, 10*time.Second)
	setD(&l.DefaultTimeout, 30*time.Second)
	setD(&l.MaxTimeout, 2*time.Minute)
	setD(&l.HandshakeIdleTimeout, 5*time.Second)
	setD(&l.MaxIdleTimeout, 30*time.Second)
	setD(&l.KeepAlivePeriod, 10*time.Second)
	setD(&l.DialTimeout, 10*time.Second)
	set(&l.StreamReceiveWindow, l.MaxFrame+4<<10)
	set(&l.ConnReceiveWindow, 16<<20)
	setD(&l.RedialBackoff, 250*time.Millisecond)
	setD(&l.MaxRedialBackoff, 10*time.Second)
	setD(&l.ShutdownGrace, 2*time.Second)
	if l.MaxBytesPerPeer < l.MaxFrame {
		l.MaxBytesPerPeer = l.MaxFrame
	}
	if l.MaxBytes < l.MaxBytesPerPeer {
		l.MaxBytes = l.MaxBytesPerPeer
	}
	if l.DefaultTimeout > l.MaxTimeout {
		l.DefaultTimeout = l.MaxTimeout
	}
	return l
}

// budget is a counting semaphore whose waiters give up after a bounded
// wait: there is never an unbounded queue behind it.
type budget struct {
	mu    sync.Mutex
	limit int64
	used  int64
	wake  chan struct{} // made by a waiter, closed by the next release
}

func newBudget(limit int) *budget {
	return &budget{limit: int64(limit)}
}

func (b *budget) tryAcquire(n int64) (ok bool, wake <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n <= b.limit {
		b.used += n
		return true, nil
	}
	if b.wake == nil {
		b.wake = make(chan struct{})
	}
	return false, b.wake
}

// acquire takes n units, waiting at most maxWait (and not past ctx) for
// room. It reports whether it got them.
func (b *budget) acquire(ctx context.Context, n int64, maxWait time.Duration) bool {
	ok, wake := b.tryAcquire(n)
	if ok {
		return true
	}
	if n > b.limit {
		return false
	}
	t := time.NewTimer(maxWait)
	defer t.Stop()
	for {
		select {
		case <-wake:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
		if ok, wake = b.tryAcquire(n); ok {
			return true
		}
	}
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	if b.wake != nil {
		close(b.wake)
		b.wake = nil
	}
	b.mu.Unlock()
}

func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// tokenBucket is a rate limiter: rate tokens per second, up to burst.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// reserve takes a token if one is available now, or reserves the next one
// if it will be available within maxWait and returns how long to wait for
// it; otherwise it takes nothing and reports false.
func (tb *tokenBucket) reserve(now time.Time, maxWait time.Duration) (time.Duration, bool) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.tokens = math.Min(tb.burst, tb.tokens+now.Sub(tb.last).Seconds()*tb.rate)
	tb.last = now
	if tb.tokens >= 1 {
		tb.tokens--
		return 0, true
	}
	wait := time.Duration((1 - tb.tokens) / tb.rate * float64(time.Second))
	if wait > maxWait {
		return 0, false
	}
	tb.tokens-- // goes negative: the reservation
	return wait, true
}

// peerState holds the per-identity limits of the server side. One exists
// per identity URI ever seen (bounded by the federation's size).
type peerState struct {
	inflight *budget // handler slots
	bytes    *budget // request bytes being read or held
	conns    int     // live incoming connections, under Endpoint.mu

	mu      sync.Mutex
	buckets map[string]*tokenBucket // per operation with a rate limit
}

func (p *peerState) bucket(op string, rate float64, burst int) *tokenBucket {
	p.mu.Lock()
	defer p.mu.Unlock()
	tb := p.buckets[op]
	if tb == nil {
		if p.buckets == nil {
			p.buckets = map[string]*tokenBucket{}
		}
		tb = newTokenBucket(rate, burst)
		p.buckets[op] = tb
	}
	return tb
}

// activity counts running work (request handlers) and lets shutdown wait
// for it to drain. Unlike a WaitGroup it refuses new work once closing.
type activity struct {
	mu      sync.Mutex
	n       int
	closing bool
	idle    chan struct{} // closed when n drops to 0 while closing
}

// add counts one more unit of work; false once closing.
func (a *activity) add() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return false
	}
	a.n++
	return true
}

func (a *activity) done() {
	a.mu.Lock()
	a.n--
	if a.n == 0 && a.closing && a.idle != nil {
		close(a.idle)
		a.idle = nil
	}
	a.mu.Unlock()
}

// drain refuses new work and waits at most d for running work to end.
func (a *activity) drain(d time.Duration) bool {
	a.mu.Lock()
	a.closing = true
	if a.n == 0 {
		a.mu.Unlock()
		return true
	}
	idle := make(chan struct{})
	a.idle = idle
	a.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
		return true
	case <-t.C:
		return false
	}
}
