// Package pseudonym is the federation's pseudonymization: coordinators, the
// only nodes holding the pseudonym key, keep it in custody (custody.go:
// registered districts only, rate-limited per district, every request
// audited, districts whose pseudonyms never show up in their index updates
// flagged); every other node resolves its subjects' pseudonyms through a
// Resolver, which caches them and asks the nearest coordinator for the
// rest.
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
	// identifier, a caller it does not serve); asking another would not
	// help.
	ErrRefused = errors.New("pseudonym: refused by the coordinator")
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
// the cache, computed here on a coordinator, or asked of a coordinator
// (the nearest up the region tree first, then the others, then the
// configured ones). Errors match ErrNoCoordinator or ErrRefused.
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
	var last error
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
		if exchange.CodeOf(err) == exchange.CodeTooManyRequests || exchange.CodeOf(err) == exchange.CodeUnavailable {
			continue
		}
		var e *exchange.Error
		msg := "refused"
		if errors.As(err, &e) && e.Message != "" {
			msg = e.Message
		}
		return nil, fmt.Errorf("%w: %s: %s", ErrRefused, peer.Name, msg) // a refusal is the same everywhere
	}
	return nil, fmt.Errorf("%w: %w", ErrNoCoordinator, last)
}

// coordinators lists the coordinators to ask, nearest first, then the
// configured ones.
func (r *Resolver) coordinators() []exchange.Peer {
	var peers []exchange.Peer
	if r.cfg.Registry != nil {
		peers = consensus.CoordinatorPeers(r.cfg.Registry.Regions(), r.cfg.Self)
	}
	seen := map[string]bool{}
	for _, p := range peers {
		seen[p.Addr] = true
	}
	for _, addr := range r.cfg.Coordinators {
		if !seen[addr] {
			peers = append(peers, exchange.Peer{Name: addr, Addr: addr})
		}
	}
	return peers
}
