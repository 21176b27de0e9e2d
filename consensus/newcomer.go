package consensus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"credfed/certs"
	"credfed/exchange"
)

// A new node has no registry until it has applied the federation's first
// entries, which reach it as raft streams from the leader. Until then it
// cannot tell the federation's voters from any other holder of a province
// or city certificate of the CA, and the first AppendEntries it takes
// decides which federation it belongs to: a thief's city certificate for
// an unregistered region could hand it a forged federation_init making
// the thief a voter and a coordinator, after which the node refuses the
// real leader for good and sends the thief its identifiers. The
// NewcomerGate decides whom such a node takes raft streams from.

// opVoters asks a node for the federation's voters (newcomer.go).
const opVoters = "consensus.voters"

// Bounds of opVoters: a registered node asks it only while it has no
// registry, once every newcomerAskInterval at most.
const (
	maxVoters           = 1024
	newcomerAskInterval = 2 * time.Second
	newcomerAskTimeout  = 5 * time.Second
)

// voterRef names one voter of the federation.
type voterRef struct {
	Region string     `cbor:"1,keyasint"`
	Role   certs.Role `cbor:"2,keyasint"`
}

type votersReply struct {
	Voters []voterRef `cbor:"1,keyasint"`
}

// handleVoters answers the registered voters. The exchange admits only
// registered callers (the node's Admit hook), so a node whose region is
// not registered learns nothing; this node answers unavailable while it
// has no registry itself.
func (r *Replica) handleVoters(ctx context.Context, req *exchange.Request) (any, error) {
	if r.state.Catalog() == nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "this node has not received the federation's region registry yet")
	}
	var out votersReply
	for _, reg := range r.state.Regions() {
		if reg.Voter {
			out.Voters = append(out.Voters, voterRef{Region: reg.Path, Role: reg.Role})
		}
	}
	return out, nil
}

// NewcomerGate admits the raft peers of a node that has no region registry
// yet: coordinator nodes (province, city) whose region contains this
// node's own (its province and its city), and the voters that one of the
// coordinators this node is configured with (node config `coordinators`,
// addresses the operator gave) names, asking it over the exchange. A
// voter that is neither is refused at first and admitted once the answer
// is in (raft redials). Once the registry has arrived the node admits by
// the registry instead (the caller stops asking the gate).
type NewcomerGate struct {
	self         certs.Identity
	ep           *exchange.Endpoint
	coordinators []string
	log          *slog.Logger
	done         <-chan struct{}

	mu      sync.Mutex
	vouched map[certs.Identity]bool
	asking  bool
	askedAt time.Time
}

// NewcomerGate returns the gate of this replica's node, which asks the
// coordinators at the given exchange addresses.
func (r *Replica) NewcomerGate(coordinators []string) *NewcomerGate {
	return &NewcomerGate{self: r.cfg.Self, ep: r.cfg.Endpoint, coordinators: append([]string(nil), coordinators...),
		log: r.log, done: r.done, vouched: map[certs.Identity]bool{}}
}

// Admit decides whether id may open raft streams to a node without a
// registry (exchange.Config.AdmitRaft). It does not wait: a peer not
// known yet is refused, and the configured coordinators are asked in the
// background.
func (g *NewcomerGate) Admit(id certs.Identity) error {
	if id.Federation != g.self.Federation || !id.Role.IsCoordinatorNode() {
		return exchange.Errorf(exchange.CodeForbidden, "this node has no region registry yet and takes raft streams from province and city nodes only")
	}
	if certs.InRegion(g.self.Region, id.Region) {
		return nil // this node's own province or city
	}
	g.mu.Lock()
	ok := g.vouched[id]
	g.mu.Unlock()
	if ok {
		return nil
	}
	g.ask()
	return exchange.Errorf(exchange.CodeForbidden,
		"this node has no region registry yet and takes raft streams only from its own province and city and from the voters its configured coordinators name; %s is not one of them (yet)", id.Region)
}

// ask starts asking the configured coordinators for the voters, unless
// that is running or was done less than newcomerAskInterval ago.
func (g *NewcomerGate) ask() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.asking || len(g.coordinators) == 0 || time.Since(g.askedAt) < newcomerAskInterval {
		return
	}
	g.asking = true
	go func() {
		vouched := g.askCoordinators()
		g.mu.Lock()
		defer g.mu.Unlock()
		g.asking, g.askedAt = false, time.Now()
		if len(vouched) > 0 {
			g.vouched = vouched
		}
	}()
}

// askCoordinators asks every configured coordinator for the voters and
// returns those named by the ones that answered.
func (g *NewcomerGate) askCoordinators() map[certs.Identity]bool {
	ctx, cancel := context.WithTimeout(context.Background(), newcomerAskTimeout)
	defer cancel()
	go func() {
		select {
		case <-g.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	vouched := map[certs.Identity]bool{}
	for _, addr := range g.coordinators {
		voters, err := g.askOne(ctx, addr)
		if err != nil {
			g.log.Debug("a configured coordinator did not name the federation's voters", "coordinator", addr, "error", err)
			continue
		}
		for _, v := range voters {
			vouched[certs.Identity{Federation: g.self.Federation, Role: v.Role, Region: v.Region}] = true
		}
		g.log.Info("learned the federation's voters from a configured coordinator", "coordinator", addr, "voters", len(voters))
	}
	return vouched
}

// askOne asks the coordinator at addr, which must prove to be a
// coordinator node (province or city) of this federation.
func (g *NewcomerGate) askOne(ctx context.Context, addr string) ([]voterRef, error) {
	id, err := g.ep.PeerAt(ctx, addr)
	if err != nil {
		return nil, err
	}
	if id.Federation != g.self.Federation || !id.Role.IsCoordinatorNode() {
		return nil, fmt.Errorf("the node at %s is %s, not a coordinator node", addr, id)
	}
	var rep votersReply
	if err := g.ep.Call(ctx, exchange.Peer{Name: id.Region, Addr: addr, Identity: &id}, opVoters, exchange.Meta{}, struct{}{}, &rep); err != nil {
		return nil, err
	}
	if len(rep.Voters) > maxVoters {
		return nil, fmt.Errorf("%d voters named, more than %d", len(rep.Voters), maxVoters)
	}
	for _, v := range rep.Voters {
		if !v.Role.IsNode() || certs.CheckRegion(v.Region) != nil {
			return nil, fmt.Errorf("a voter that is not a node region")
		}
	}
	return rep.Voters, nil
}
