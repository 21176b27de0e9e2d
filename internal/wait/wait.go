// Package wait is how credfed's tests wait for a distributed system to
// converge: poll a condition until it holds or a deadline passes, never a
// fixed sleep standing in for synchronization.
package wait

import (
	"context"
	"testing"
	"time"
)

// Interval is how often conditions are polled.
const Interval = 10 * time.Millisecond

// For polls cond every interval until it returns true (nil) or ctx ends
// (ctx's error).
func For(ctx context.Context, interval time.Duration, cond func() bool) error {
	if cond() {
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if cond() {
				return nil
			}
		}
	}
}

// Until polls cond until it holds, failing tb if it does not within
// timeout; what names the condition in the failure.
func Until(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := For(ctx, Interval, cond); err != nil {
		tb.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Pause waits d unless stop is closed first; it reports whether the
// caller should go on. It paces load loops, which must still end at once
// when told to.
func Pause(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}
