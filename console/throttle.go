package console

import (
	"crypto/sha256"
	"encoding/hex"
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
	// audited: a refusal before until has been audited (one per delay,
	// so that refusals, which cost no hash, cannot flood the audit log).
	audited bool
}

const (
	freeFailures = 5
	maxDelay     = 15 * time.Minute
	// throttleEntries bounds the names tracked; at the limit entries
	// whose delay has passed are dropped first.
	throttleEntries = 10000
)

func newThrottle() *throttle { return &throttle{m: map[string]*failures{}, max: throttleEntries} }

// throttleKey is the name as the map keeps it: a name no account can
// have (a login form takes 16 KiB) is kept as its hash.
func throttleKey(name string) string {
	if CheckName(name) == nil {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "\x00" + hex.EncodeToString(sum[:16])
}

// refuse returns how long the name must still wait before an attempt,
// and whether this is the first refusal of the delay (the one audited).
func (t *throttle) refuse(name string, now time.Time) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f, ok := t.m[throttleKey(name)]; ok && now.Before(f.until) {
		first := !f.audited
		f.audited = true
		return f.until.Sub(now), first
	}
	return 0, false
}

// fail records a failed attempt; flagged is true when it crosses the
// free failures (the first time the name is slowed down, and each time
// after).
func (t *throttle) fail(name string, now time.Time) (n int, flagged bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := throttleKey(name)
	f, ok := t.m[key]
	if !ok {
		if len(t.m) >= t.max {
			t.evictLocked(now)
		}
		f = &failures{}
		t.m[key] = f
	}
	f.n++
	f.last = now
	f.audited = false
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
	delete(t.m, throttleKey(name))
}

// evictLocked drops the entries whose delay passed an hour ago and, if
// the map is still full, the one with the fewest failures (the oldest of
// those): names failed once each cannot push out a name being guessed.
func (t *throttle) evictLocked(now time.Time) {
	var victim string
	var vf *failures
	for k, f := range t.m {
		if now.After(f.until) && now.Sub(f.last) > time.Hour {
			delete(t.m, k)
			continue
		}
		if vf == nil || f.n < vf.n || f.n == vf.n && f.last.Before(vf.last) {
			victim, vf = k, f
		}
	}
	if len(t.m) >= t.max && vf != nil {
		delete(t.m, victim)
	}
}
