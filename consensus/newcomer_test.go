package consensus

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/storage"
)

// dialLayer is a raft.StreamLayer over an endpoint that only dials: what
// an attacker holding a node certificate builds.
type dialLayer struct{ ep *exchange.Endpoint }

func (l dialLayer) Accept() (net.Conn, error) { return l.ep.RaftListener().Accept() }
func (l dialLayer) Close() error              { return l.ep.RaftListener().Close() }
func (l dialLayer) Addr() net.Addr            { return l.ep.Addr() }
func (l dialLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.ep.DialRaft(ctx, string(addr))
}

// endpointOf starts an exchange endpoint with a certificate of c's CA.
func (c *testCluster) endpointOf(t *testing.T, id certs.Identity, admitRaft func(certs.Identity) error) *exchange.Endpoint {
	t.Helper()
	is, err := c.ca.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := exchange.New(exchange.Config{Certificate: is.TLSCertificate(), Verifier: certs.NewVerifier(c.ca.Cert, fed, nil),
		Addr: "127.0.0.1:0", Registerer: prometheus.NewRegistry(), AdmitRaft: admitRaft})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// TestNewcomerGate_ForgedFirstEntryFromAnUnregisteredCity: a new district
// node, before any registry reached it, admits raft streams as the node
// does (NewcomerGate until its registry arrives). An unregistered city's
// certificate sends it a forged federation_init that would make the
// thief a voter: refused, nothing applied. The gate admits the node's own
// province and city at once, another city once the configured
// coordinator has named it a voter, and never the thief. Registered, the
// node joins the real federation with the leader on another city.
func TestNewcomerGate_ForgedFirstEntryFromAnUnregisteredCity(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	quzhou, hangzhou := c.nodes["zhejiang/quzhou"], c.nodes["zhejiang/hangzhou"]

	// The new node.
	self := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/qujiang"}
	var rep atomic.Pointer[Replica]
	var gate atomic.Pointer[NewcomerGate]
	ep := c.endpointOf(t, self, func(id certs.Identity) error {
		r, g := rep.Load(), gate.Load()
		switch {
		case r == nil || g == nil:
			return exchange.Errorf(exchange.CodeUnavailable, "starting")
		case r.State().Catalog() != nil:
			return nil // the registry decides from here on (the node's peerAdmission)
		}
		return g.Admit(id)
	})
	dir := t.TempDir()
	st, err := storage.OpenState(storage.Options{Dir: filepath.Join(dir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r, err := Open(Config{Self: self, Advertise: ep.Addr().String(), Dir: filepath.Join(dir, "raft"), DB: st.Badger(), Endpoint: ep,
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	g := r.NewcomerGate([]string{quzhou.addr})
	gate.Store(g)
	rep.Store(r)

	// Before it has a registry, the new node names no voters.
	var vr votersReply
	if err := quzhou.ep.Call(ctxT(t, 5*time.Second), exchange.Peer{Addr: ep.Addr().String()}, opVoters, exchange.Meta{}, struct{}{}, &vr); !errors.Is(err, exchange.ErrUnavailable) {
		t.Fatalf("a node without a registry named voters: %+v %v", vr, err)
	}

	// The thief's forged first entry.
	rogueID := certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/rogue"}
	thief := c.endpointOf(t, rogueID, nil)
	data, err := EncodeCommand(CmdFederationInit, Envelope{Proposer: province, At: time.Now().UTC()}, FederationInit{Catalog: credit.DefaultCatalog(),
		Regions: []Region{{Path: "zhejiang", Role: certs.Province, Voter: true}, {Path: "zhejiang/quzhou", Role: certs.City},
			{Path: "zhejiang/rogue", Role: certs.City, Voter: true, Exchange: thief.Addr().String()},
			{Path: self.Region, Role: certs.District, Exchange: ep.Addr().String()}}})
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransport(dialLayer{thief}, 1, 5*time.Second, io.Discard)
	defer trans.Close()
	forge := func() error {
		req := raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(rogueID.Region), Addr: []byte(thief.Addr().String())},
			Term:      1, LeaderCommitIndex: 1,
			Entries: []*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}},
		}
		var resp raft.AppendEntriesResponse
		return trans.AppendEntries(raft.ServerID(self.Region), raft.ServerAddress(ep.Addr().String()), &req, &resp)
	}
	if err := forge(); err == nil {
		t.Fatal("the new node took the thief's AppendEntries")
	}

	// The gate: its province and city at once; hangzhou once quzhou has
	// named it; the thief never.
	for _, id := range []certs.Identity{province, city} {
		if err := g.Admit(id); err != nil {
			t.Fatalf("%s: %v", id.Region, err)
		}
	}
	c.waitFor("the configured coordinator to name hangzhou a voter", func() bool { return g.Admit(hangzhou.id) == nil })
	for _, id := range []certs.Identity{rogueID, kecheng, {Federation: "other", Role: certs.Province, Region: "zhejiang"}} {
		if err := g.Admit(id); err == nil {
			t.Fatalf("the gate admitted %s", id)
		}
	}
	if err := forge(); err == nil {
		t.Fatal("the new node took the thief's AppendEntries once it knew the voters")
	}
	if len(r.State().Regions()) != 0 || r.State().Applied() != 0 {
		t.Fatalf("the forged entry was applied: %d regions, applied %d", len(r.State().Regions()), r.State().Applied())
	}

	// Registered, with the leader on hangzhou (not the node's own city),
	// the node joins the real federation.
	if l := c.waitLeader(); l != hangzhou {
		if err := l.rep.raft.LeadershipTransferToServer(raft.ServerID(hangzhou.id.Region), raft.ServerAddress(hangzhou.addr)).Error(); err != nil {
			t.Logf("leadership transfer to hangzhou: %v (the join runs with %s leading)", err, l.id.Region)
		}
	}
	if _, err := apply(t, quzhou, CmdRegionPut, cityOp, Region{Path: self.Region, Role: certs.District, Exchange: ep.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the new node to hold the real registry", func() bool {
		_, ok := r.State().Region("zhejiang/hangzhou")
		return ok
	})
	if _, ok := r.State().Region("zhejiang/rogue"); ok {
		t.Fatal("the thief is in the new node's registry")
	}
	t.Logf("joined with %s leading", c.waitLeader().id.Region)
}
