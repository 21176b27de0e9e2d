// Package pseudonym is the federation's pseudonymization: coordinators, the
// only nodes holding the pseudonym key, keep it in custody (custody.go:
// registered districts only, rate-limited per district, every request
// audited, districts whose pseudonyms never show up in their index updates
// flagged); every other node resolves its subjects' pseudonyms through a
// Resolver, which caches them and asks its nearest coordinator for the
// rest (the next one up its region tree only if that one does not answer).
package pseudonym

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
)

// Op is the exchange operation coordinators serve: canonical identifiers
// in, their pseudonyms out, in order.
const Op = "pseudonymize"

// MaxBatch bounds the identifiers of one request.
const MaxBatch = 1000

// Errors.
var (
	// ErrNoCoordinator: no coordinator could be asked (none known, or none
	// answered). Nothing is wrong with the identifiers; try again later.
	ErrNoCoordinator = errors.New("pseudonym: no coordinator answered")
	// ErrRefused: a coordinator refused the request (an invalid
	// identifier; a caller that none of those asked serves); asking
	// again would not help.
	ErrRefused = errors.New("pseudonym: refused by the coordinator")
	// ErrRateLimited: the coordinator's limit of this district's
	// identifiers is reached. The limit is the district's, not the
	// coordinator's: try again later, not elsewhere.
	ErrRateLimited = errors.New("pseudonym: the district's identifiers per second are used up")
)

type request struct {
	IDs []string `cbor:"1,keyasint"`
}

type reply struct {
	Pseudonyms []credit.Pseudonym `cbor:"1,keyasint"`
}

// compute pseudonymizes with the key. An invalid identifier is refused by
// its position, never by its value.
func compute(key credit.PseudonymKey, ids []string, opt credit.ParseOptions) ([]credit.Pseudonym, error) {
	out := make([]credit.Pseudonym, len(ids))
	for i, id := range ids {
		s, err := credit.ParseSubject(id, opt)
		if err != nil {
			var ie *credit.IdentifierError
			msg := "not a valid identifier"
			if errors.As(err, &ie) {
				msg = ie.Message
			}
			return nil, fmt.Errorf("identifier %d: %s", i, msg)
		}
		out[i] = key.Pseudonym(s.ID)
	}
	return out, nil
}

// Cache keeps pseudonyms a node resolved (storage.DB implements it). A
// failed write only costs a coordinator round trip later.
type Cache interface {
	Pseudonyms(subjects []string) (map[string]credit.Pseudonym, error)
	PutPseudonyms(map[string]credit.Pseudonym) error
}

// Registry is the region registry (consensus.State implements it): where a
// Resolver finds the coordinators and custody the registered districts.
type Registry interface {
	// Regions returns the registry.
	Regions() []consensus.Region
	// Region returns one region, if registered.
	Region(path string) (consensus.Region, bool)
}

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	// Self is this node's identity; its region decides which coordinators
	// are nearest.
	Self certs.Identity
	// Key, on a coordinator, computes pseudonyms here; empty asks
	// coordinators over the exchange.
	Key         credit.PseudonymKey
	Identifiers credit.ParseOptions
	Endpoint    *exchange.Endpoint
	Registry    Registry
	// Coordinators are exchange addresses to ask after the registered
	// coordinators (and before the registry has reached this node).
	Coordinators []string
	// Cache, if set, keeps resolved pseudonyms.
	Cache  Cache
	Logger *slog.Logger
}

// Resolver returns pseudonyms of canonical identifiers.
type Resolver struct {
	cfg ResolverConfig
	log *slog.Logger
}

// NewResolver returns a resolver.
func NewResolver(cfg ResolverConfig) *Resolver {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Resolver{cfg: cfg, log: log}
}

// Resolve returns the pseudonyms of canonical identifiers, in order: from
// the cache, computed here on a coordinator, or asked of a coordinator up
// the node's region tree, nearest first, then of the configured ones; the
// next is asked only when one does not answer. Errors match
// ErrNoCoordinator, ErrRateLimited or ErrRefused.
func (r *Resolver) Resolve(ctx context.Context, subjects []string) ([]credit.Pseudonym, error) {
	if r.cfg.Key.Valid() {
		return compute(r.cfg.Key, subjects, r.cfg.Identifiers)
	}
	cached := map[string]credit.Pseudonym{}
	if r.cfg.Cache != nil {
		var err error
		if cached, err = r.cfg.Cache.Pseudonyms(subjects); err != nil {
			return nil, err
		}
	}
	var missing []string
	for _, s := range subjects {
		if _, ok := cached[s]; !ok {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		fresh := make(map[string]credit.Pseudonym, len(missing))
		for start := 0; start < len(missing); start += MaxBatch {
			part := missing[start:min(start+MaxBatch, len(missing))]
			ps, err := r.ask(ctx, part)
			if err != nil {
				return nil, err
			}
			for i, s := range part {
				fresh[s], cached[s] = ps[i], ps[i]
			}
		}
		if r.cfg.Cache != nil {
			if err := r.cfg.Cache.PutPseudonyms(fresh); err != nil {
				r.log.Warn("caching pseudonyms failed", "error_type", fmt.Sprintf("%T", err))
			}
		}
	}
	out := make([]credit.Pseudonym, len(subjects))
	for i, s := range subjects {
		out[i] = cached[s]
	}
	return out, nil
}

func (r *Resolver) ask(ctx context.Context, ids []string) ([]credit.Pseudonym, error) {
	peers := r.coordinators()
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w: none is known yet", ErrNoCoordinator)
	}
	var last, forbidden error
	for _, peer := range peers {
		var rep reply
		err := r.cfg.Endpoint.Call(ctx, peer, Op, exchange.Meta{}, request{IDs: ids}, &rep)
		if err == nil {
			if len(rep.Pseudonyms) == len(ids) {
				return rep.Pseudonyms, nil
			}
			last = fmt.Errorf("coordinator %s answered %d pseudonyms for %d identifiers", peer.Name, len(rep.Pseudonyms), len(ids))
			continue
		}
		last = err
		switch exchange.StatusOf(err) {
		case exchange.StatusUnreachable, exchange.StatusTimeout:
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %w", ErrNoCoordinator, err)
			}
			continue // the next coordinator
		}
		var e *exchange.Error
		msg := "refused"
		if errors.As(err, &e) && e.Message != "" {
			msg = e.Message
		}
		switch exchange.CodeOf(err) {
		case exchange.CodeUnavailable:
			continue
		case exchange.CodeTooManyRequests:
			// Not the next coordinator: the limit is the district's.
			return nil, fmt.Errorf("%w: %s: %s", ErrRateLimited, peer.Name, msg)
		case exchange.CodeForbidden:
			// A configured coordinator that is not this node's (before
			// the registry has arrived): the next may be.
			forbidden = fmt.Errorf("%w: %s: %s", ErrRefused, peer.Name, msg)
			continue
		}
		return nil, fmt.Errorf("%w: %s: %s", ErrRefused, peer.Name, msg) // a refusal is the same everywhere
	}
	if forbidden != nil {
		return nil, forbidden
	}
	return nil, fmt.Errorf("%w: %w", ErrNoCoordinator, last)
}

// coordinators lists the coordinators to ask: the registered ones up the
// node's region tree, nearest first, then the configured ones that are
// not registered elsewhere in the tree (the others would refuse it).
func (r *Resolver) coordinators() []exchange.Peer {
	var peers []exchange.Peer
	seen := map[string]bool{}
	if r.cfg.Registry != nil {
		for _, p := range consensus.CoordinatorPeers(r.cfg.Registry.Regions(), r.cfg.Self) {
			if p.Identity != nil && certs.InRegion(r.cfg.Self.Region, p.Identity.Region) {
				peers = append(peers, p)
			}
			seen[p.Addr] = true
		}
	}
	for _, addr := range r.cfg.Coordinators {
		if !seen[addr] {
			seen[addr] = true
			peers = append(peers, exchange.Peer{Name: addr, Addr: addr})
		}
	}
	return peers
}
