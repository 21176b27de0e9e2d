// Package keyrate is a bounded set of token-bucket limiters, one per key
// (a portal's identity, a client address), for per-caller rate limits.
package keyrate

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiters holds one limiter per key, at most Max of them. It is safe for
// concurrent use.
type Limiters[K comparable] struct {
	limit rate.Limit
	burst int
	max   int

	mu   sync.Mutex
	keys map[K]*rate.Limiter
}

// New returns limiters of limit events per second with bursts of burst,
// keeping at most max keys.
func New[K comparable](limit rate.Limit, burst, max int) *Limiters[K] {
	return &Limiters[K]{limit: limit, burst: burst, max: max, keys: map[K]*rate.Limiter{}}
}

// Allow takes a token of key's bucket. When max keys are held, the keys
// whose buckets are full again are forgotten (they lose nothing by starting
// afresh); if none is, a new key is refused.
func (l *Limiters[K]) Allow(key K) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.keys[key]
	if !ok {
		if len(l.keys) >= l.max {
			now := time.Now()
			for k, v := range l.keys {
				if v.TokensAt(now) >= float64(v.Burst()) {
					delete(l.keys, k)
				}
			}
			if len(l.keys) >= l.max {
				return false
			}
		}
		lim = rate.NewLimiter(l.limit, l.burst)
		l.keys[key] = lim
	}
	return lim.Allow()
}

// Len is how many keys are held.
func (l *Limiters[K]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}
