package consensus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"credfed/credit"
	"credfed/internal/wait"
)

// TestLinearizability_LeaderKills records a concurrent history of index
// writes (districts' SubmitIndex, one update with an increasing Seq for one
// of a few (pseudonym, district) keys) and strong reads (Replica.Lookup with
// strong set, from every node that is up and keeps the index: the voters
// and a non-voter city; districts keep none) while the
// leader is killed and restarted, and checks it with porcupine against the
// FSM's semantics: per key, a register holding the highest Seq applied (a
// write of s sets it to max(state, s); a read returns the entry's Seq, 0 if
// there is none).
//
// A write refused with ErrNoLeader was certainly not applied (no leader
// took it) and is left out. A write that returns any other error has an
// unknown outcome (a timeout, a lost leadership, a forward that reached a
// leader that then died: the entry may still commit under the next
// leader), so it is recorded as never returning:
// its return time is after the end of the history, and the checker may put
// its effect anywhere after its call, or nowhere visible. A failed read
// constrains nothing and is left out. A checker timeout (porcupine.Unknown)
// is a failure, like Illegal.
//
// By default (CI) the history lasts a few seconds with one leader kill.
// CREDFED_LONG=1 runs minutes with a kill every few seconds
// (CREDFED_LIN_DURATION, a Go duration, overrides the length: e.g.
// CREDFED_LONG=1 CREDFED_LIN_DURATION=10m).
func TestLinearizability_LeaderKills(t *testing.T) {
	long := os.Getenv("CREDFED_LONG") == "1"
	duration, kills := 6*time.Second, 1
	if long {
		duration, kills = 3*time.Minute, 12
		if d, err := time.ParseDuration(os.Getenv("CREDFED_LIN_DURATION")); err == nil && d > 0 {
			duration, kills = d, max(1, int(d/(15*time.Second)))
		}
	}
	// The non-voter city is a non-voter that holds the index (districts,
	// the other non-voters, keep none: they only write).
	c := newCluster(t, clusterOptions{nonVoterCity: true})
	h := newLinHistory()

	// Every node behind a lock: a reader holds it shared while it uses the
	// node's replica, the fault injector exclusively while it stops or
	// starts the node (a closed Badger must not be read).
	paths := make([]string, 0, len(c.nodes))
	for p := range c.nodes {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	handles := make([]*linNode, len(paths))
	var readable []*linNode // the nodes that keep the index
	for i, p := range paths {
		handles[i] = &linNode{n: c.nodes[p], rep: c.nodes[p].rep}
		if c.nodes[p].id.Role.IsCoordinatorNode() {
			readable = append(readable, handles[i])
		}
	}

	const pseudonyms = 4
	districts := []*testNode{c.nodes["zhejiang/quzhou/kecheng"], c.nodes["zhejiang/hangzhou/xihu"]}
	var seqs [2][pseudonyms]atomic.Uint64 // next Seq per key

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writesOK, writesUnknown, writesRefused, readsOK, readsFailed atomic.Int64
	// Writers: three per district, sharing the keys of their district, so
	// that writes of one key race (and a lower Seq may arrive last).
	for d, dn := range districts {
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(d), uint64(w)))
				for {
					select {
					case <-stop:
						return
					default:
					}
					k := rng.IntN(pseudonyms)
					seq := seqs[d][k].Add(1)
					u := update(linPseudonym(k), dn.id.Region, 1+int(seq%5), seq)
					ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
					call := h.now()
					err := dn.rep.SubmitIndex(ctx, []IndexUpdate{u})
					ret := h.now()
					cancel()
					in := linInput{write: true, seq: seq}
					if errors.Is(err, ErrNoLeader) {
						// Certainly not applied (no leader took it): not an
						// operation of the history.
						writesRefused.Add(1)
						if !wait.Pause(stop, time.Duration(10+rng.IntN(20))*time.Millisecond) {
							return
						}
						continue
					}
					if err != nil {
						h.add(3*d+w, linKey{k, d}, in, 0, call, -1, "write failed: "+err.Error())
						writesUnknown.Add(1)
						// Pace retries while there is no leader.
						if !wait.Pause(stop, time.Duration(10+rng.IntN(20))*time.Millisecond) {
							return
						}
						continue
					}
					h.add(3*d+w, linKey{k, d}, in, 0, call, ret, "")
					writesOK.Add(1)
					if !wait.Pause(stop, time.Duration(rng.IntN(4))*time.Millisecond) { // pacing
						return
					}
				}
			}()
		}
	}
	// Readers: strong reads from a random node that is up.
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(100, uint64(r)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := rng.IntN(pseudonyms)
				ln := readable[rng.IntN(len(readable))]
				if h.read(6+r, ln, k, districts, time.Second) {
					readsOK.Add(1)
				} else {
					readsFailed.Add(1)
				}
				if !wait.Pause(stop, time.Duration(rng.IntN(4))*time.Millisecond) { // pacing
					return
				}
			}
		}()
	}

	// The fault schedule: run, kill the leader, wait for a new one, run,
	// restart the old leader, repeat.
	start := time.Now()
	phase := duration / time.Duration(2*kills+1)
	waitUntil := func(d time.Duration) {
		select {
		case <-time.After(time.Until(start.Add(d))):
		case <-t.Context().Done():
		}
	}
	var killed []string
	for i := 0; i < kills; i++ {
		waitUntil(time.Duration(2*i+1) * phase)
		old := c.waitLeader()
		before := writesOK.Load()
		lh := handleOf(handles, old)
		lh.mu.Lock()
		lh.rep = nil
		c.stop(old)
		lh.mu.Unlock()
		killed = append(killed, old.id.Region)
		c.waitFor("a new leader", func() bool { l := c.leader(); return l != nil && l != old })
		c.waitFor("a write acknowledged under the new leader", func() bool { return writesOK.Load() > before })
		waitUntil(time.Duration(2*i+2) * phase)
		lh.mu.Lock()
		c.start(old)
		lh.rep = old.rep
		lh.mu.Unlock()
	}
	waitUntil(duration)
	close(stop)
	wg.Wait()

	// Final reads, after every write ended, from every node: an
	// acknowledged write must be visible everywhere (through a strong
	// read) once the restarted node has caught up.
	for _, ln := range readable {
		for k := 0; k < pseudonyms; k++ {
			c.waitFor("a final strong read on "+ln.n.id.Region, func() bool {
				return h.read(10, ln, k, districts, 2*time.Second)
			})
		}
	}

	t.Logf("history: %v, %d leader kill(s) (%v); writes: %d acknowledged, %d unknown, %d not taken (no leader); strong reads: %d answered, %d failed",
		time.Since(start).Round(time.Millisecond), kills, killed, writesOK.Load(), writesUnknown.Load(), writesRefused.Load(), readsOK.Load(), readsFailed.Load())
	if writesOK.Load() < 50 || readsOK.Load() < 50 {
		t.Fatalf("history too thin to mean anything: %d writes, %d reads acknowledged", writesOK.Load(), readsOK.Load())
	}

	ops := h.operations()
	timeout := 30 * time.Second
	if long {
		timeout = 5 * time.Minute
	}
	checkStart := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, ops, timeout)
	t.Logf("porcupine: %s on %d operations in %v", res, len(ops), time.Since(checkStart).Round(time.Millisecond))
	if res != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("credfed-linearizability-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(linModel, info, path); err == nil {
			t.Logf("visualization: %s", path)
		}
		t.Fatalf("history is not linearizable (porcupine: %s)", res)
	}
}

// TestLinearizability_CheckerCatchesStaleRead makes sure the model and the
// history plumbing can fail: a read that misses an acknowledged write, or
// sees a write that was never issued, is illegal.
func TestLinearizability_CheckerCatchesStaleRead(t *testing.T) {
	k := linKey{0, 0}
	w := func(seq uint64, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: linInput{key: k, write: true, seq: seq}, Call: call, Return: ret}
	}
	r := func(seq uint64, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: linInput{key: k}, Output: seq, Call: call, Return: ret}
	}
	cases := []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"ok", []porcupine.Operation{w(1, 0, 10), r(1, 11, 12), w(3, 13, 20), w(2, 14, 21), r(3, 22, 23)}, porcupine.Ok},
		{"stale read after ack", []porcupine.Operation{w(1, 0, 10), w(2, 11, 20), r(1, 21, 22)}, porcupine.Illegal},
		{"read goes back", []porcupine.Operation{w(1, 0, 10), w(2, 1, 100), r(2, 20, 21), r(1, 22, 23)}, porcupine.Illegal},
		{"lower seq does not lower", []porcupine.Operation{w(5, 0, 10), w(2, 11, 20), r(2, 21, 22)}, porcupine.Illegal},
		{"unknown write may apply late", []porcupine.Operation{w(4, 0, 1<<40), r(0, 1, 2), r(4, 3, 4)}, porcupine.Ok},
		{"never issued", []porcupine.Operation{w(1, 0, 10), r(7, 11, 12)}, porcupine.Illegal},
	}
	for _, tc := range cases {
		if got := porcupine.CheckOperationsTimeout(linModel, tc.ops, 5*time.Second); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// linKey is one index entry: pseudonym number and district number.
type linKey struct{ p, d int }

type linInput struct {
	key   linKey
	write bool
	seq   uint64 // written Seq (writes)
}

// linModel: per key, the highest Seq applied.
var linModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[linKey][]porcupine.Operation{}
		var keys []linKey
		for _, op := range history {
			k := op.Input.(linInput).key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return uint64(0) },
	Step: func(state, input, output any) (bool, any) {
		st, in := state.(uint64), input.(linInput)
		if in.write {
			return true, max(st, in.seq)
		}
		return output.(uint64) == st, st
	},
	Hash: func(state any) uint64 { return state.(uint64) },
	DescribeOperation: func(input, output any) string {
		in := input.(linInput)
		if in.write {
			return "write " + strconv.FormatUint(in.seq, 10)
		}
		return fmt.Sprintf("read → %d", output)
	},
}

// linPseudonym is the pseudonym of key number k.
func linPseudonym(k int) credit.Pseudonym { return pseudo(byte(0xa0 + k)) }

// linNode is a node's replica as the load goroutines may use it: nil while
// the node is down.
type linNode struct {
	n   *testNode
	mu  sync.RWMutex
	rep *Replica
}

func handleOf(hs []*linNode, n *testNode) *linNode {
	for _, h := range hs {
		if h.n == n {
			return h
		}
	}
	panic("unknown node")
}

// linHistory collects operations with call and return times in
// nanoseconds since its start (monotonic clock).
type linHistory struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	notes []string
}

func newLinHistory() *linHistory { return &linHistory{start: time.Now()} }

func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

// add records an operation; ret < 0 means the outcome is unknown.
func (h *linHistory) add(client int, k linKey, in linInput, out uint64, call, ret int64, note string) {
	in.key = k
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret, Metadata: note})
}

// read does one strong read of pseudonym k on ln and records one read
// operation per district key. It reports whether the read was answered.
func (h *linHistory) read(client int, ln *linNode, k int, districts []*testNode, timeout time.Duration) bool {
	ln.mu.RLock()
	defer ln.mu.RUnlock()
	if ln.rep == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	call := h.now()
	entries, _, err := ln.rep.Lookup(ctx, linPseudonym(k), true)
	ret := h.now()
	if err != nil {
		return false
	}
	for d, dn := range districts {
		var seq uint64
		for _, e := range entries {
			if e.District == dn.id.Region {
				seq = e.Seq
			}
		}
		h.add(client, linKey{k, d}, linInput{}, seq, call, ret, "strong read on "+ln.n.id.Region)
	}
	return true
}

// operations returns the history for porcupine: writes of unknown outcome
// return after everything else.
func (h *linHistory) operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	var end int64
	for _, op := range h.ops {
		end = max(end, op.Call, op.Return)
	}
	out := make([]porcupine.Operation, len(h.ops))
	for i, op := range h.ops {
		if op.Return < 0 {
			op.Return = end + 1
		}
		out[i] = op
	}
	return out
}
