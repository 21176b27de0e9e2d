package wait

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestForReturnsWhenTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := For(ctx, time.Millisecond, func() bool { return n.Add(1) >= 3 }); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 3 {
		t.Fatalf("condition polled %d times, want 3", n.Load())
	}
}

func TestForEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := For(ctx, time.Millisecond, func() bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}

func TestPauseEndsWhenStopped(t *testing.T) {
	stop := make(chan struct{})
	close(stop)
	if Pause(stop, time.Hour) {
		t.Fatal("Pause went on after stop")
	}
	if !Pause(make(chan struct{}), time.Millisecond) {
		t.Fatal("Pause did not go on")
	}
}
