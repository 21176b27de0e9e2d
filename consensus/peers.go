package consensus

import (
	"sort"
	"strings"

	"credfed/certs"
	"credfed/exchange"
)

// CoordinatorPeers returns the coordinator nodes of the registry that a
// node of self's region asks for what only coordinators hold (pseudonyms,
// the index): its ancestors first, nearest first (a district's city, then
// its province), then the other coordinators, nearest up the tree first.
// Regions without an exchange address are left out.
func CoordinatorPeers(regions []Region, self certs.Identity) []exchange.Peer {
	var regs []Region
	for _, reg := range regions {
		if reg.Role.IsCoordinatorNode() && reg.Exchange != "" && reg.Path != self.Region {
			regs = append(regs, reg)
		}
	}
	sort.SliceStable(regs, func(i, j int) bool {
		ai, aj := certs.InRegion(self.Region, regs[i].Path), certs.InRegion(self.Region, regs[j].Path)
		if ai != aj {
			return ai
		}
		return strings.Count(regs[i].Path, "/") > strings.Count(regs[j].Path, "/")
	})
	peers := make([]exchange.Peer, len(regs))
	for i, reg := range regs {
		id := reg.Identity(self.Federation)
		peers[i] = exchange.Peer{Name: reg.Path, Addr: reg.Exchange, Identity: &id}
	}
	return peers
}

// CoordinatorsAbove is CoordinatorPeers kept to self's ancestors, nearest
// first: the coordinators that may vouch for self's users (a district's
// departments and portals), and so the only ones a district forwards
// their requests to.
func CoordinatorsAbove(regions []Region, self certs.Identity) []exchange.Peer {
	var out []exchange.Peer
	for _, p := range CoordinatorPeers(regions, self) {
		if certs.InRegion(self.Region, p.Name) {
			out = append(out, p)
		}
	}
	return out
}
