package consensus

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"credfed/exchange"
)

// Presence. Raft logs every failed RPC to a peer at ERROR, and a peer that
// stops cleanly (a restart, an upgrade, the federation shutting down)
// makes the leader fail heartbeats and appends to it, and a candidate its
// vote requests, until it is back. So a replica that closes first tells
// the voters (the only servers that send raft RPCs) that it is stopping
// (consensus.presence), and they log the transport failures naming it at
// debug (raftLogPolicy); one that opens tells them it is up, and they log
// them at ERROR again. Both announcements are best effort: a voter that
// misses the stop logs errors, as for a crash; one that misses the start
// goes back to errors once stoppedPeerGrace has passed.

type presenceRequest struct {
	Up bool `cbor:"1,keyasint"`
}

// upAnnounceTimeout bounds the announcement at start, which runs in the
// background.
const upAnnounceTimeout = 5 * time.Second

// announceUp tells the voters, in the background, that this node is up.
// stopTimeout is what announceStop may take later.
func (r *Replica) announceUp(stopTimeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), upAnnounceTimeout)
	r.cancelUp, r.upDone, r.stopAnnounceTimeout = cancel, make(chan struct{}), stopTimeout
	go func() {
		defer close(r.upDone)
		defer cancel()
		r.announce(ctx, true)
	}()
}

// announceStop tells the voters that this node is stopping, and returns
// once they have all answered or the timeout given to announceUp has
// passed.
func (r *Replica) announceStop() {
	r.cancelUp()
	<-r.upDone // so that a late "up" cannot overtake the "stopping"
	ctx, cancel := context.WithTimeout(context.Background(), r.stopAnnounceTimeout)
	defer cancel()
	r.announce(ctx, false)
}

// announce tells every other voter of Raft's configuration, in parallel,
// whether this node is up.
func (r *Replica) announce(ctx context.Context, up bool) {
	f := r.raft.GetConfiguration() // answered locally, without raft's loop
	if f.Error() != nil {
		return
	}
	self := raft.ServerID(r.cfg.Self.Region)
	var wg sync.WaitGroup
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter || s.ID == self {
			continue
		}
		peer := exchange.Peer{Name: string(s.ID), Addr: string(s.Address)}
		if reg, ok := r.state.Region(string(s.ID)); ok {
			id := reg.Identity(r.cfg.Self.Federation)
			peer.Identity = &id
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.cfg.Endpoint.Call(ctx, peer, opPresence, exchange.Meta{}, presenceRequest{Up: up}, nil); err != nil {
				r.log.Debug("presence not announced", "peer", s.ID, "up", up, "error", err)
			}
		}()
	}
	wg.Wait()
}

// handlePresence records a peer's announcement.
func (r *Replica) handlePresence(ctx context.Context, req *exchange.Request) (any, error) {
	var in presenceRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	id := raft.ServerID(req.Caller.Region)
	if in.Up {
		if r.policy.peerBack(id) {
			r.log.Info("peer is back after its announced stop", "peer", id)
		}
		return nil, nil
	}
	var addr raft.ServerAddress
	if f := r.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.ID == id {
				addr = s.Address
			}
		}
	}
	if reg, ok := r.state.Region(req.Caller.Region); ok && addr == "" {
		addr = raft.ServerAddress(reg.Exchange)
	}
	r.policy.peerStopping(id, addr)
	r.log.Info("peer announced a clean stop; raft's failures to reach it are logged at debug until it is back", "peer", id)
	return nil, nil
}
