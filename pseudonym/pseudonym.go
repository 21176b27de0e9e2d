// Package pseudonym is the federation's pseudonymization: coordinators, the
// only nodes holding the pseudonym key, serve it over the exchange; every
// other node resolves its subjects' pseudonyms through a Resolver, which
// caches them and asks the nearest coordinator for the rest.
package pseudonym

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

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

// DefaultRate is the requests per second each caller may send (bursts of
// twice as many).
const DefaultRate = 50

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

// ServeConfig is what a coordinator needs to serve pseudonyms.
type ServeConfig struct {
	Key credit.PseudonymKey
	// Identifiers are the identifier rules of the federation (test mode).
	Identifiers credit.ParseOptions
	// Rate limits each caller's requests per second (default DefaultRate).
	Rate       float64
	Registerer prometheus.Registerer
}

// Serve registers Op on a coordinator's endpoint. Requests are limited in
// size and rate per caller and counted by caller role; identifiers are
// never logged.
func Serve(ep *exchange.Endpoint, cfg ServeConfig) error {
	if !cfg.Key.Valid() {
		return errors.New("pseudonym: Serve needs the pseudonym key")
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	served := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "credfed_pseudonyms_served_total", Help: "Identifiers this coordinator pseudonymized for other nodes, by caller role.",
	}, []string{"role"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(served); err != nil {
			return fmt.Errorf("pseudonym: %w", err)
		}
	}
	opt := cfg.Identifiers
	ep.Handle(Op, func(ctx context.Context, req *exchange.Request) (any, error) {
		var in request
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		if len(in.IDs) == 0 || len(in.IDs) > MaxBatch {
			return nil, exchange.Errorf(exchange.CodeBadRequest, "a request holds 1 to %d identifiers, not %d", MaxBatch, len(in.IDs))
		}
		out, err := compute(cfg.Key, in.IDs, opt)
		if err != nil {
			return nil, exchange.Errorf(exchange.CodeBadRequest, "%v", err)
		}
		served.WithLabelValues(string(req.Caller.Role)).Add(float64(len(out)))
		return reply{Pseudonyms: out}, nil
	}, exchange.RateLimit(cfg.Rate, int(2*cfg.Rate)), exchange.MaxBody(MaxBatch*64))
	return nil
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

// Registry is where a Resolver finds the coordinators (consensus.State
// implements it).
type Registry interface {
	// Regions returns the region registry.
	Regions() []consensus.Region
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

// coordinators lists the coordinators to ask, nearest first.
func (r *Resolver) coordinators() []exchange.Peer {
	self := r.cfg.Self.Region
	var regs []consensus.Region
	if r.cfg.Registry != nil {
		for _, reg := range r.cfg.Registry.Regions() {
			if reg.Role.IsCoordinatorNode() && reg.Exchange != "" {
				regs = append(regs, reg)
			}
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
