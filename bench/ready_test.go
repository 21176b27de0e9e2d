package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"credfed/localfed"
)

// TestWaitReadyNamesTheRunsDeadline: when the run's --timeout ends while
// the nodes start, the error says so (errors.Is context.DeadlineExceeded)
// instead of only "node … is not ready", and it prints no empty "its log
// ends:" section.
func TestWaitReadyNamesTheRunsDeadline(t *testing.T) {
	// A loopback port nothing listens on: /readyz is never answered.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	f := &federation{
		layout: localfed.Layout{Nodes: []localfed.Node{{Name: "zhejiang", Metrics: addr}}},
		procs:  map[string]*proc{},
		http:   &http.Client{Timeout: time.Second},
	}
	// A node process that has not written to its log yet (still running).
	log := filepath.Join(t.TempDir(), "zhejiang.log")
	if err := os.WriteFile(log, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f.procs["zhejiang"] = &proc{name: "zhejiang", done: make(chan struct{}), log: log}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond) // the run's --timeout
	defer cancel()
	err = f.waitReady(ctx, 2*time.Minute)
	if err == nil {
		t.Fatal("waitReady succeeded with no node serving")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the run's deadline ended the wait, but the error does not say so: %q", err)
	}
	if strings.HasSuffix(strings.TrimSpace(err.Error()), "its log ends:") {
		t.Errorf("an empty log section: %q", err)
	}
}
