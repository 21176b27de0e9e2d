package localfed

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"credfed/consensus"
	"credfed/credit"
	"credfed/keyring"
	"credfed/node"
)

// Federation is a local federation running in this process.
type Federation struct {
	Dir    string
	Layout Layout
	opts   node.Options

	mu    sync.Mutex
	nodes map[string]*node.Node
}

// RaftTiming suits a federation on one machine (the demo, the bench's
// in-process run): elections and heartbeats faster than hashicorp/raft's
// WAN-friendly defaults. The commit timeout is raft's default, 50 ms: the
// leader sends every follower an append that often, idle or not, and at
// 10 ms an idle demo of 7 nodes used 16 % of a core (10 % at 50 ms); the
// cost is that an idle follower learns of the last commit up to 100 ms
// later.
var RaftTiming = node.RaftTiming{Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond,
	LeaderLease: 250 * time.Millisecond, Commit: 50 * time.Millisecond}

// Start creates (or resumes) a local federation and starts every node,
// province first.
func Start(spec Spec, opts node.Options) (*Federation, error) {
	l, err := Create(spec)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(spec.Dir)
	if err != nil {
		return nil, err
	}
	f := &Federation{Dir: dir, Layout: l, opts: opts, nodes: map[string]*node.Node{}}
	for _, ln := range l.Nodes {
		if err := f.StartNode(ln.Name); err != nil {
			f.Stop(context.Background())
			return nil, err
		}
	}
	return f, nil
}

// StartNode starts (or restarts) one node from its configuration.
func (f *Federation) StartNode(name string) error {
	ln, ok := f.Layout.Node(name)
	if !ok {
		return fmt.Errorf("localfed: no node %q in the local federation", name)
	}
	cfg, err := node.LoadConfig(ln.ConfigPath)
	if err != nil {
		return err
	}
	var n *node.Node
	// A port just freed by a stopped node (or a previous run) can take a
	// moment to be reusable.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	poll(ctx, 50*time.Millisecond, func() bool {
		n, err = node.Start(cfg, f.opts)
		return err == nil || !isAddrInUse(err)
	})
	if err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	f.mu.Lock()
	f.nodes[name] = n
	f.mu.Unlock()
	return nil
}

func isAddrInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// StopNode shuts one node down gracefully.
func (f *Federation) StopNode(ctx context.Context, name string) error {
	f.mu.Lock()
	n := f.nodes[name]
	delete(f.nodes, name)
	f.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Shutdown(ctx)
}

// Node returns a running node by name, nil if it is not running.
func (f *Federation) Node(name string) *node.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[name]
}

// Districts returns the names of the district nodes.
func (f *Federation) Districts() []string { return f.Layout.Districts() }

// Province is the name of the province node.
func (f *Federation) Province() string { return f.Layout.Nodes[0].Name }

// WaitReady waits until every running node is ready.
func (f *Federation) WaitReady(ctx context.Context) error {
	err := poll(ctx, 20*time.Millisecond, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, n := range f.nodes {
			if ok, _ := n.Ready(); !ok {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("localfed: the federation is not ready: %w", err)
	}
	return nil
}

// Holders returns how many districts the province's index lists as
// holding something about the subject (read from its local replica).
func (f *Federation) Holders(subject string) (int, error) {
	prov := f.Node(f.Province())
	if prov == nil {
		return 0, errors.New("localfed: the province node is not running")
	}
	return f.holdersAt(prov, subject)
}

// holdersAt counts the districts n's local replica lists as holding
// something about the subject.
func (f *Federation) holdersAt(n *node.Node, subject string) (int, error) {
	key, err := credit.LoadPseudonymKey(filepath.Join(f.Dir, "pseudonym.key"))
	if err != nil {
		return 0, err
	}
	// Under every key version the index may hold the subject under (a key
	// rotation): the merge keeps each district's latest entry.
	ring := keyring.Or(nil, key)
	if k := n.Replica().Keys(); k != nil {
		ring = k
	}
	st := n.Replica().State()
	_, entries, _, err := keyring.Read(context.Background(), func(_ context.Context, p credit.Pseudonym, _ bool) ([]consensus.IndexEntry, uint64, error) {
		return st.Lookup(p)
	}, ring, subject, false)
	if err != nil {
		return 0, err
	}
	held := 0
	for _, e := range entries {
		if e.Holds() {
			held++
		}
	}
	return held, nil
}

// WaitIndexed waits until the index lists the subject (a canonical
// identifier) at n districts or more at every running coordinator node
// still registered (at the province, when it runs): lookups and reports
// read the local replica of the coordinator that gathers them, and a
// city's replica may apply a batch after the province's. A removed
// city's node, still running, no longer follows the index.
func (f *Federation) WaitIndexed(ctx context.Context, subject string, n int) error {
	held, at := 0, ""
	err := poll(ctx, 20*time.Millisecond, func() bool {
		running := 0
		prov := f.Node(f.Province())
		for _, ln := range f.Layout.Nodes {
			if !ln.Role.IsCoordinatorNode() {
				continue
			}
			nd := f.Node(ln.Name)
			if nd == nil {
				continue
			}
			if prov != nil {
				if _, ok := prov.Replica().State().Region(ln.Region); !ok {
					continue
				}
			}
			running++
			var err error
			if held, err = f.holdersAt(nd, subject); err != nil || held < n {
				at = ln.Name
				return false
			}
		}
		at = "any coordinator (none is running)"
		return running > 0
	})
	if err != nil {
		return fmt.Errorf("localfed: the index at %s lists the subject at %d districts, not %d: %w", at, held, n, err)
	}
	return nil
}

// Stop shuts every node down, districts first.
func (f *Federation) Stop(ctx context.Context) error {
	var errs []error
	for i := len(f.Layout.Nodes) - 1; i >= 0; i-- {
		if err := f.StopNode(ctx, f.Layout.Nodes[i].Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// poll calls cond every interval until it returns true (nil) or ctx ends
// (ctx's error).
func poll(ctx context.Context, interval time.Duration, cond func() bool) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
