package consensus

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// stuckFuture is a raft future nobody ever answers (what raft leaves behind
// when it shuts down with the entry queued for the FSM).
type stuckFuture struct{ never chan struct{} }

func (f stuckFuture) Error() error { <-f.never; return nil }

// answered is a future that has its answer.
type answered struct{ err error }

func (f answered) Error() error { return f.err }

func TestAwaitReturnsWhenTheReplicaCloses(t *testing.T) {
	r := &Replica{done: make(chan struct{})}
	if err := r.await(answered{raft.ErrNotLeader}); !errors.Is(err, raft.ErrNotLeader) {
		t.Fatalf("an answered future: %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- r.await(stuckFuture{never: make(chan struct{})}) }()
	close(r.done)
	select {
	case err := <-got:
		if !errors.Is(err, raft.ErrRaftShutdown) || !errors.Is(raftError(err), ErrOutcomeUnknown) {
			t.Fatalf("await on close: %v (mapped %v)", err, raftError(err))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("await still blocked 10 s after the replica closed")
	}
}
