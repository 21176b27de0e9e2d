package consensus

import (
	"time"

	"github.com/hashicorp/raft"
)

// leaderLoop follows leadership: on gaining it, it applies a barrier so
// that strong reads can trust the commit index of this term, and it keeps
// Raft's configuration in step with the region registry (reconcile).
func (r *Replica) leaderLoop() {
	defer r.wg.Done()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.done:
			return
		case isLeader := <-r.raft.LeaderCh():
			r.metrics.isLeader.Set(b2f(isLeader))
			r.mu.Lock()
			if isLeader {
				ready := make(chan struct{})
				r.leaderReady = ready
				go r.confirmLeadership(ready)
				if !r.state.HoldsIndex() {
					go r.handOver()
				}
			} else {
				r.leaderReady = nil
			}
			r.mu.Unlock()
		case <-r.changed:
			r.reconcile()
		case <-tick.C:
			r.reconcile()
		}
	}
}

// confirmLeadership applies a barrier of the new term and then opens
// strong reads on this leader.
func (r *Replica) confirmLeadership(ready chan struct{}) {
	for attempt := 0; ; attempt++ {
		err := r.await(r.raft.Barrier(10 * time.Second))
		if err == nil {
			close(ready)
			r.reconcile()
			return
		}
		if r.raft.State() != raft.Leader {
			return
		}
		select {
		case <-r.done:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// handOver transfers the leadership of a node that does not hold the index
// keys (a district that the registry made a voter) to another voter: it
// could not seal the index batches districts forward, so while it leads
// the index stands still. It tries every few seconds while it leads.
func (r *Replica) handOver() {
	for r.raft.State() == raft.Leader {
		r.log.Warn("this node leads but does not hold the index key; transferring leadership to a coordinator")
		if err := r.await(r.raft.LeadershipTransfer()); err != nil {
			r.log.Warn("leadership transfer failed; trying again", "error", err)
		}
		select {
		case <-r.done:
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// reconcile makes Raft's configuration match the registry: every region
// with an exchange address is a server (voter or non-voter as registered),
// with its address; servers of removed regions leave. Only the leader
// changes the configuration; this node never removes or demotes itself.
func (r *Replica) reconcile() {
	if r.raft.State() != raft.Leader {
		return
	}
	regions := r.state.Regions()
	if len(regions) == 0 {
		return // not initialized: nothing to compare with
	}
	servers, err := r.Servers()
	if err != nil {
		return
	}
	self := raft.ServerID(r.cfg.Self.Region)
	current := map[raft.ServerID]raft.Server{}
	for _, s := range servers {
		current[s.ID] = s
	}
	wanted := map[raft.ServerID]bool{}
	const timeout = 5 * time.Second
	for _, reg := range regions {
		id := raft.ServerID(reg.Path)
		wanted[id] = true
		if reg.Exchange == "" || id == self {
			continue
		}
		addr := raft.ServerAddress(reg.Exchange)
		s, ok := current[id]
		var f raft.IndexFuture
		switch {
		case ok && s.Address != addr:
			if err := r.await(r.raft.RemoveServer(id, 0, timeout)); err != nil {
				r.log.Warn("reconcile: remove server to change its address", "server", id, "error", err)
				continue
			}
			f = r.add(id, addr, reg.Voter, timeout)
		case !ok:
			f = r.add(id, addr, reg.Voter, timeout)
		case reg.Voter && s.Suffrage != raft.Voter:
			f = r.raft.AddVoter(id, addr, 0, timeout)
		case !reg.Voter && s.Suffrage == raft.Voter:
			f = r.raft.DemoteVoter(id, 0, timeout)
		}
		if f != nil {
			if err := r.await(f); err != nil {
				r.log.Warn("reconcile: configuration change failed", "server", id, "error", err)
			} else {
				r.log.Info("reconcile: configuration changed", "server", id, "voter", reg.Voter, "address", addr)
			}
		}
	}
	for id := range current {
		if !wanted[id] && id != self {
			if err := r.await(r.raft.RemoveServer(id, 0, timeout)); err != nil {
				r.log.Warn("reconcile: remove server", "server", id, "error", err)
			} else {
				r.log.Info("reconcile: removed server of a removed region", "server", id)
			}
		}
	}
}

func (r *Replica) add(id raft.ServerID, addr raft.ServerAddress, voter bool, timeout time.Duration) raft.IndexFuture {
	if voter {
		return r.raft.AddVoter(id, addr, 0, timeout)
	}
	return r.raft.AddNonvoter(id, addr, 0, timeout)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
