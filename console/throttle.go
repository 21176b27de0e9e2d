package console

import (
	"sync"
	"time"
)

// throttle slows failed logins per account name: after freeFailures
// failures in a row, each further attempt must wait a delay that doubles
// up to maxDelay, and is refused unchecked before it. The account's owner
// still gets in after the delay; a guesser gets a few tries an hour.
type throttle struct {
	mu  sync.Mutex
	m   map[string]*failures
	max int
}

type failures struct {
	n     int
	until time.Time // no attempt is checked before
	last  time.Time
}

const (
	freeFailures = 5
	maxDelay     = 15 * time.Minute
	// throttleEntries bounds the names tracked; at the limit entries
	// whose delay has passed are dropped first.
	throttleEntries = 10000
)

func newThrottle() *throttle { return &throttle{m: map[string]*failures{}, max: throttleEntries} }

// wait returns how long the name must still wait before an attempt.
func (t *throttle) wait(name string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f, ok := t.m[name]; ok && now.Before(f.until) {
		return f.until.Sub(now)
	}
	return 0
}

// fail records a failed attempt; flagged is true when it crosses the
// free failures (the first time the name is slowed down, and each time
// after).
func (t *throttle) fail(name string, now time.Time) (n int, flagged bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.m[name]
	if !ok {
		if len(t.m) >= t.max {
			t.evictLocked(now)
		}
		f = &failures{}
		t.m[name] = f
	}
	f.n++
	f.last = now
	if f.n >= freeFailures {
		d := time.Second << min(f.n-freeFailures, 20)
		f.until = now.Add(min(d, maxDelay))
		return f.n, true
	}
	return f.n, false
}

// succeed forgets the name's failures.
func (t *throttle) succeed(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, name)
}

func (t *throttle) evictLocked(now time.Time) {
	var oldest string
	var oldestAt time.Time
	for k, f := range t.m {
		if now.After(f.until) && now.Sub(f.last) > time.Hour {
			delete(t.m, k)
			continue
		}
		if oldest == "" || f.last.Before(oldestAt) {
			oldest, oldestAt = k, f.last
		}
	}
	if len(t.m) >= t.max && oldest != "" {
		delete(t.m, oldest)
	}
}
