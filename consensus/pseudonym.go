package consensus

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
)

// opPseudonymize is served by coordinators, the only nodes that hold the
// pseudonym key: a district sends canonical identifiers and gets their
// pseudonyms back. Rate-limited per caller, counted in metrics by caller
// role; the identifiers are never logged.
const opPseudonymize = "pseudonymize"

// MaxPseudonymBatch bounds the identifiers of one pseudonymize request.
const MaxPseudonymBatch = 1000

type pseudonymizeRequest struct {
	IDs []string `cbor:"1,keyasint"`
}

type pseudonymizeReply struct {
	Pseudonyms []credit.Pseudonym `cbor:"1,keyasint"`
}

func (r *Replica) handlePseudonymize(ctx context.Context, req *exchange.Request) (any, error) {
	var in pseudonymizeRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if len(in.IDs) == 0 || len(in.IDs) > MaxPseudonymBatch {
		return nil, exchange.Errorf(exchange.CodeBadRequest, "a request holds 1 to %d identifiers, not %d", MaxPseudonymBatch, len(in.IDs))
	}
	out, err := r.pseudonymizeLocal(in.IDs)
	if err != nil {
		return nil, exchange.Errorf(exchange.CodeBadRequest, "%v", err)
	}
	r.metrics.pseudonymized.WithLabelValues(string(req.Caller.Role)).Add(float64(len(out)))
	return pseudonymizeReply{Pseudonyms: out}, nil
}

// pseudonymizeLocal computes pseudonyms with this node's key. An invalid
// identifier is refused by position, never by value.
func (r *Replica) pseudonymizeLocal(ids []string) ([]credit.Pseudonym, error) {
	opt := credit.ParseOptions{TestMode: r.cfg.TestMode}
	out := make([]credit.Pseudonym, len(ids))
	for i, id := range ids {
		s, err := credit.ParseSubject(id, opt)
		if err != nil {
			return nil, fmt.Errorf("identifier %d: %v", i, err)
		}
		out[i] = r.cfg.PseudonymKey.Pseudonym(s.ID)
	}
	return out, nil
}

// HasPseudonymKey reports whether this node computes pseudonyms itself.
func (r *Replica) HasPseudonymKey() bool { return r.cfg.PseudonymKey.Valid() }

// Pseudonymize returns the pseudonyms of canonical identifiers: computed
// here on a coordinator, asked of a coordinator elsewhere (the nearest one
// up the region tree first, then the others, then the configured ones).
func (r *Replica) Pseudonymize(ctx context.Context, ids []string) ([]credit.Pseudonym, error) {
	if r.HasPseudonymKey() {
		return r.pseudonymizeLocal(ids)
	}
	out := make([]credit.Pseudonym, 0, len(ids))
	for start := 0; start < len(ids); start += MaxPseudonymBatch {
		end := min(start+MaxPseudonymBatch, len(ids))
		ps, err := r.askCoordinators(ctx, ids[start:end])
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	return out, nil
}

func (r *Replica) askCoordinators(ctx context.Context, ids []string) ([]credit.Pseudonym, error) {
	var lastErr error = fmt.Errorf("%w: no coordinator known to pseudonymize", ErrNoLeader)
	for _, peer := range r.coordinatorPeers() {
		var reply pseudonymizeReply
		err := r.cfg.Endpoint.Call(ctx, peer, opPseudonymize, exchange.Meta{}, pseudonymizeRequest{IDs: ids}, &reply)
		if err == nil {
			if len(reply.Pseudonyms) != len(ids) {
				lastErr = fmt.Errorf("consensus: coordinator %s answered %d pseudonyms for %d identifiers", peer.Name, len(reply.Pseudonyms), len(ids))
				continue
			}
			return reply.Pseudonyms, nil
		}
		lastErr = err
		switch exchange.StatusOf(err) {
		case exchange.StatusUnreachable, exchange.StatusTimeout:
			if ctx.Err() != nil {
				return nil, err
			}
			continue // try the next coordinator
		}
		return nil, fromWire(err) // a refusal is the same everywhere
	}
	return nil, lastErr
}

// coordinatorPeers lists the coordinators to ask, nearest first.
func (r *Replica) coordinatorPeers() []exchange.Peer {
	self := r.cfg.Self.Region
	var regs []Region
	for _, reg := range r.state.Regions() {
		if reg.Role.IsCoordinatorNode() && reg.Exchange != "" {
			regs = append(regs, reg)
		}
	}
	// Ancestors of this region first, deepest (nearest) first.
	sort.SliceStable(regs, func(i, j int) bool {
		ai, aj := certs.InRegion(self, regs[i].Path), certs.InRegion(self, regs[j].Path)
		if ai != aj {
			return ai
		}
		return strings.Count(regs[i].Path, "/") > strings.Count(regs[j].Path, "/")
	})
	peers := make([]exchange.Peer, 0, len(regs)+len(r.cfg.Coordinators))
	seen := map[string]bool{}
	for _, reg := range regs {
		id := reg.Identity(r.cfg.Self.Federation)
		peers = append(peers, exchange.Peer{Name: reg.Path, Addr: reg.Exchange, Identity: &id})
		seen[reg.Exchange] = true
	}
	for _, addr := range r.cfg.Coordinators {
		if !seen[addr] {
			peers = append(peers, exchange.Peer{Name: addr, Addr: addr})
		}
	}
	return peers
}
