package consensus

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"credfed/certs"
	"credfed/exchange"
)

// logHolds reports whether any command entry of n's log from index from
// on holds needle.
func logHolds(t *testing.T, n *testNode, from uint64, needle []byte) bool {
	t.Helper()
	last, err := n.rep.logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i <= last; i++ {
		var l raft.Log
		if err := n.rep.logs.GetLog(i, &l); err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
		if l.Type == raft.LogCommand && bytes.Contains(l.Data, needle) {
			return true
		}
	}
	return false
}

// TestCluster_RefusedRelaysStayOutOfTheLog: consensus.apply used to
// propose whatever a registered node relayed and leave the refusal to the
// FSM, after the entry was in every node's log. Commands the FSM would
// refuse — relayed by a city for an operator of another city, for a
// region that does not exist, by a district, proposed on the leader
// itself — are refused with their reason and never reach the log; so are
// bodies over MaxApplyBody. A valid relay still commits.
func TestCluster_RefusedRelaysStayOutOfTheLog(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	leader := c.waitLeader()
	from, _ := leader.rep.logs.LastIndex()
	from++
	quzhou, kecheng := c.nodes["zhejiang/quzhou"], c.nodes["zhejiang/quzhou/kecheng"]
	hzOp := certs.Identity{Federation: fed, Role: certs.Operator, Region: "zhejiang/hangzhou", Institution: "ops"}
	marker := "zhejiang/hangzhou/refused-relay-marker"
	cases := []struct {
		name   string
		via    *testNode
		typ    CommandType
		actor  certs.Identity
		body   any
		reason error
	}{
		{"a city vouching for another city's operator", quzhou, CmdRegionPut, hzOp, Region{Path: marker, Role: certs.District}, ErrForbidden},
		{"a city removing a region that does not exist", quzhou, CmdRegionRemove, cityOp, RegionRemove{Path: "zhejiang/quzhou/refused-relay-marker"}, ErrNotFound},
		{"a district relaying an operator command", kecheng, CmdRegionPut,
			certs.Identity{Federation: fed, Role: certs.Operator, Region: kecheng.id.Region, Institution: "ops"},
			Region{Path: kecheng.id.Region + "-refused-relay-marker", Role: certs.District}, ErrForbidden},
		{"the leader proposing for a non-operator", leader, CmdRegionPut, coordUser, Region{Path: marker, Role: certs.District}, ErrForbidden},
	}
	for _, tc := range cases {
		_, err := apply(t, tc.via, tc.typ, tc.actor, tc.body)
		var re *RefusedError
		if !errors.Is(err, tc.reason) || !errors.As(err, &re) {
			t.Errorf("%s: %v, want a refusal (%v)", tc.name, err, tc.reason)
		}
	}
	// A body over the bound, from a city, straight to the leader.
	big, _ := exchange.Marshal(bytes.Repeat([]byte{'j'}, MaxApplyBody+1))
	var reply applyReply
	err := quzhou.ep.Call(ctxT(t, 10*time.Second), exchange.Peer{Addr: leader.addr}, opApply, exchange.Meta{},
		applyRequest{Type: CmdRegionPut, Actor: cityOp, Body: big}, &reply)
	if !errors.Is(err, exchange.ErrBadRequest) {
		t.Errorf("a body of %d bytes: %v %+v", len(big), err, reply)
	}
	// A valid relay commits, and is the only new command in the log.
	ok := "zhejiang/quzhou/relayed-ok"
	if _, err := apply(t, quzhou, CmdRegionPut, cityOp, Region{Path: ok, Role: certs.District}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		if logHolds(t, n, from, []byte("refused-relay-marker")) || logHolds(t, n, from, []byte("jjjjjjjj")) {
			t.Fatalf("a refused command is in %s's log", n.id.Region)
		}
	}
	if !logHolds(t, leader, from, []byte(ok)) {
		t.Fatal("the valid relay is not in the leader's log")
	}
	var refusedByFSM float64
	for _, n := range c.nodes {
		refusedByFSM += counterValue(t, n, "credfed_consensus_commands_refused_total")
	}
	if refusedByFSM != 0 {
		t.Fatalf("the FSMs refused %v commands: the leader's check let them through", refusedByFSM)
	}
}

// TestCluster_RelayIsRateLimitedPerCaller: a city that sends far more
// relays at once than its burst has the rest answered too_many_requests
// by the rate limit.
func TestCluster_RelayIsRateLimitedPerCaller(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	leader := c.waitLeader()
	var caller *testNode
	for _, p := range []string{"zhejiang/quzhou", "zhejiang/hangzhou", "zhejiang"} {
		if c.nodes[p] != leader {
			caller = c.nodes[p]
			break
		}
	}
	body, _ := exchange.Marshal(RegionRemove{Path: "zhejiang/quzhou/none"})
	var mu sync.Mutex
	var refused, limited int
	var wg sync.WaitGroup
	for i := 0; i < 3*applyBurst; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var reply applyReply
			err := caller.ep.Call(ctxT(t, 20*time.Second), exchange.Peer{Addr: leader.addr}, opApply, exchange.Meta{},
				applyRequest{Type: CmdRegionRemove, Actor: cityOp, Body: body}, &reply)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, exchange.ErrTooManyRequests) && strings.Contains(err.Error(), "rate limit"):
				limited++
			case err == nil && reply.Refused != nil:
				refused++
			}
		}()
	}
	wg.Wait()
	t.Logf("%d relays at once: %d refused by the leader's check, %d by the rate limit", 3*applyBurst, refused, limited)
	if limited == 0 || refused < applyBurst/2 || refused > applyBurst+10 {
		t.Fatalf("%d refused, %d rate limited: want about the burst (%d) through", refused, limited, applyBurst)
	}
}

// counterValue sums the samples of a counter family in n's registry.
func counterValue(t *testing.T, n *testNode, name string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue()
		}
	}
	return v
}
