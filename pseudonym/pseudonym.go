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
	"slices"
	"sync"
	"sync/atomic"

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

// maxAsking bounds the requests of one Resolve in flight at once.
const maxAsking = 4

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
	// Version is the key version they were computed under (a key
	// rotation: the coordinator's current one); absent means 1.
	Version uint32 `cbor:"2,keyasint,omitempty"`
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

// VersionedCache is a Cache that keeps pseudonyms by key version
// (storage.DB): a key rotation gives every subject a new pseudonym, and
// the district must know the old one too, to withdraw it from the index
// and to find the audit entries written under it. Pseudonyms and
// PutPseudonyms are its version 1.
type VersionedCache interface {
	Cache
	PseudonymsAt(version uint32, subjects []string) (map[string]credit.Pseudonym, error)
	PutPseudonymsAt(version uint32, ps map[string]credit.Pseudonym) error
	// PseudonymVersions returns the subject's pseudonym under each
	// version cached.
	PseudonymVersions(subject string) (map[uint32]credit.Pseudonym, error)
}

// Keys is a coordinator's pseudonym key versions (*consensus.IndexKeys):
// it pseudonymizes under the current one.
type Keys interface {
	CurrentPseudonymKey() (uint32, credit.PseudonymKey)
}

// ErrOtherVersion: the coordinator answered under another key version than
// the one asked for (it has not applied a key switch yet, or this node has
// not): try again shortly.
var ErrOtherVersion = errors.New("pseudonym: the coordinator answered under another key version")

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
	// coordinators over the exchange. Keys, if set, replaces it: the
	// current version's key.
	Key         credit.PseudonymKey
	Keys        Keys
	Identifiers credit.ParseOptions
	Endpoint    *exchange.Endpoint
	Registry    Registry
	// Coordinators are exchange addresses to ask after the registered
	// coordinators (and before the registry has reached this node).
	Coordinators []string
	// Cache, if set, keeps resolved pseudonyms (by version, if it is a
	// VersionedCache).
	Cache Cache
	// Version, on a node that asks coordinators, is the current key
	// version as its replica has applied it (consensus.State.KeyCurrent);
	// nil is version 1.
	Version func() uint32
	Logger  *slog.Logger
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
//
// They are the pseudonyms under the current key version as this node
// knows it, or, for those a coordinator computed, under the coordinator's
// (a moment apart during a key rotation): what an audit entry names, and
// what a lookup's pseudonyms are matched against (Own). Publishing needs
// the exact version: ResolveAt.
func (r *Resolver) Resolve(ctx context.Context, subjects []string) ([]credit.Pseudonym, error) {
	_, ps, err := r.resolve(ctx, subjects, r.version(), false)
	return ps, err
}

// ResolveAt returns the pseudonyms under key version v, in order, or
// ErrOtherVersion if a coordinator answered under another version (the
// publisher then tries again: it must never publish a subject under a
// version it is not at).
func (r *Resolver) ResolveAt(ctx context.Context, subjects []string, v uint32) ([]credit.Pseudonym, error) {
	_, ps, err := r.resolve(ctx, subjects, v, true)
	return ps, err
}

// Own returns the node's pseudonyms of one subject: under the current
// version first (Resolve), then under the older versions cached. A
// district answering a coordinator checks the pseudonyms sent against
// these, and searches its audit log under each.
func (r *Resolver) Own(ctx context.Context, subject string) ([]credit.Pseudonym, error) {
	all, err := r.OwnAll(ctx, []string{subject})
	if err != nil {
		return nil, err
	}
	return all[0], nil
}

// VersionsReader is a VersionedCache that reads every version of several
// subjects at once (storage.DB): OwnAll then reads each subject once.
type VersionsReader interface {
	PseudonymVersionsOf(subjects []string) ([]map[uint32]credit.Pseudonym, error)
}

// OwnAll is Own of several subjects. From a VersionsReader it reads each
// subject's pseudonyms under every version at once, and resolves only
// those without one under the current version; otherwise it resolves them
// together, then reads each one's older versions.
func (r *Resolver) OwnAll(ctx context.Context, subjects []string) ([][]credit.Pseudonym, error) {
	vc, versioned := r.cfg.Cache.(VersionedCache)
	if r.cfg.Key.Valid() || r.cfg.Keys != nil || !versioned {
		// A coordinator computes under the current key; a cache of one
		// version has no older ones.
		ps, err := r.Resolve(ctx, subjects)
		if err != nil {
			return nil, err
		}
		out := make([][]credit.Pseudonym, len(subjects))
		for i := range subjects {
			out[i] = ps[i : i+1 : i+1]
		}
		return out, nil
	}
	var all []map[uint32]credit.Pseudonym
	if vr, ok := r.cfg.Cache.(VersionsReader); ok {
		var err error
		if all, err = vr.PseudonymVersionsOf(subjects); err != nil || len(all) != len(subjects) {
			all = nil // resolved as below
		}
	}
	current := make([]credit.Pseudonym, len(subjects))
	var missing []string
	var at []int
	if all != nil {
		v := r.version()
		for i, s := range subjects {
			p, ok := all[i][v]
			if !ok {
				missing, at = append(missing, s), append(at, i)
				continue
			}
			current[i] = p
		}
	} else {
		missing = subjects
		at = make([]int, len(subjects))
		for i := range at {
			at[i] = i
		}
	}
	if len(missing) > 0 {
		ps, err := r.Resolve(ctx, missing)
		if err != nil {
			return nil, err
		}
		for k, i := range at {
			current[i] = ps[k]
		}
	}
	out := make([][]credit.Pseudonym, len(subjects))
	for i, subject := range subjects {
		var older map[uint32]credit.Pseudonym
		if all != nil {
			older = all[i]
		} else {
			var err error
			if older, err = vc.PseudonymVersions(subject); err != nil {
				older = nil // the current one is enough to answer; older ones only widen the match
			}
		}
		out[i] = withOlder(current[i], older)
	}
	return out, nil
}

// withOlder is current, then the other pseudonyms of all, newest version
// first.
func withOlder(current credit.Pseudonym, all map[uint32]credit.Pseudonym) []credit.Pseudonym {
	out := []credit.Pseudonym{current}
	versions := make([]uint32, 0, len(all))
	for v := range all {
		versions = append(versions, v)
	}
	slices.Sort(versions)
	for k := len(versions) - 1; k >= 0; k-- {
		if p := all[versions[k]]; p != current {
			out = append(out, p)
		}
	}
	return out
}

func (r *Resolver) version() uint32 {
	if r.cfg.Version != nil {
		if v := r.cfg.Version(); v > 0 {
			return v
		}
	}
	return 1
}

// resolve is Resolve at version v; exact refuses pseudonyms a coordinator
// computed under another version.
func (r *Resolver) resolve(ctx context.Context, subjects []string, v uint32, exact bool) (uint32, []credit.Pseudonym, error) {
	if r.cfg.Keys != nil {
		cur, key := r.cfg.Keys.CurrentPseudonymKey()
		if exact && cur != v {
			return cur, nil, fmt.Errorf("%w: %d, not %d", ErrOtherVersion, cur, v)
		}
		ps, err := compute(key, subjects, r.cfg.Identifiers)
		return cur, ps, err
	}
	if r.cfg.Key.Valid() {
		ps, err := compute(r.cfg.Key, subjects, r.cfg.Identifiers)
		return 1, ps, err
	}
	cached := map[string]credit.Pseudonym{}
	if r.cfg.Cache != nil {
		var err error
		if cached, err = r.cachedAt(v, subjects); err != nil {
			return v, nil, err
		}
	}
	var missing []string
	for _, s := range subjects {
		if _, ok := cached[s]; !ok {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		// The requests of MaxBatch go out together (a publisher's pass of
		// 2,000 subjects is two): each waits mostly for the coordinator's
		// synced custody and audit writes, not for CPU.
		type answer struct {
			ids []string // the part asked (nil: not asked)
			ver uint32
			ps  []credit.Pseudonym
			err error
		}
		parts := (len(missing) + MaxBatch - 1) / MaxBatch
		answers := make([]answer, parts)
		slots := make(chan struct{}, maxAsking)
		var failed atomic.Bool
		var wg sync.WaitGroup
		for k := range parts {
			part := missing[k*MaxBatch : min((k+1)*MaxBatch, len(missing))]
			slots <- struct{}{}
			if failed.Load() {
				// A part failed, so the resolve does: a part asked now
				// would only spend the district's rate (a part that did
				// fail is among those asked: its error is returned).
				<-slots
				break
			}
			a := &answers[k]
			a.ids = part
			wg.Go(func() {
				defer func() { <-slots }()
				if a.ver, a.ps, a.err = r.ask(ctx, a.ids); a.err != nil {
					failed.Store(true)
				}
			})
		}
		wg.Wait()
		// Every part answered is kept, also when another failed: the
		// coordinator handed it out (audited, counted against the
		// district's rate), and the next attempt asks only the rest.
		fresh := map[uint32]map[string]credit.Pseudonym{}
		var other, first error
		for _, a := range answers {
			if a.ids == nil {
				continue
			}
			if a.err != nil {
				if first == nil {
					first = a.err
				}
				continue
			}
			if a.ver != v && exact {
				other = fmt.Errorf("%w: %d, not %d", ErrOtherVersion, a.ver, v)
			}
			if fresh[a.ver] == nil {
				fresh[a.ver] = map[string]credit.Pseudonym{}
			}
			for i, s := range a.ids {
				fresh[a.ver][s], cached[s] = a.ps[i], a.ps[i]
			}
		}
		if r.cfg.Cache != nil {
			for ver, ps := range fresh {
				if err := r.putAt(ver, ps); err != nil {
					r.log.Warn("caching pseudonyms failed", "error_type", fmt.Sprintf("%T", err))
				}
			}
		}
		if first != nil {
			return v, nil, first
		}
		if other != nil {
			return v, nil, other
		}
	}
	out := make([]credit.Pseudonym, len(subjects))
	for i, s := range subjects {
		out[i] = cached[s]
	}
	return v, out, nil
}

func (r *Resolver) cachedAt(v uint32, subjects []string) (map[string]credit.Pseudonym, error) {
	if vc, ok := r.cfg.Cache.(VersionedCache); ok {
		return vc.PseudonymsAt(v, subjects)
	}
	if v != 1 {
		return map[string]credit.Pseudonym{}, nil // a cache of version 1 only
	}
	return r.cfg.Cache.Pseudonyms(subjects)
}

func (r *Resolver) putAt(v uint32, ps map[string]credit.Pseudonym) error {
	if vc, ok := r.cfg.Cache.(VersionedCache); ok {
		return vc.PutPseudonymsAt(v, ps)
	}
	if v != 1 {
		return nil
	}
	return r.cfg.Cache.PutPseudonyms(ps)
}

// ask asks the coordinators for the pseudonyms of ids and returns the key
// version they were computed under with them.
func (r *Resolver) ask(ctx context.Context, ids []string) (uint32, []credit.Pseudonym, error) {
	ps, v, err := r.askPeers(ctx, ids)
	return max(v, 1), ps, err
}

func (r *Resolver) askPeers(ctx context.Context, ids []string) ([]credit.Pseudonym, uint32, error) {
	peers := r.coordinators()
	if len(peers) == 0 {
		return nil, 0, fmt.Errorf("%w: none is known yet", ErrNoCoordinator)
	}
	var last, forbidden error
	for _, peer := range peers {
		var rep reply
		err := r.cfg.Endpoint.Call(ctx, peer, Op, exchange.Meta{}, request{IDs: ids}, &rep)
		if err == nil {
			if len(rep.Pseudonyms) == len(ids) {
				return rep.Pseudonyms, rep.Version, nil
			}
			last = fmt.Errorf("coordinator %s answered %d pseudonyms for %d identifiers", peer.Name, len(rep.Pseudonyms), len(ids))
			continue
		}
		last = err
		switch exchange.StatusOf(err) {
		case exchange.StatusUnreachable, exchange.StatusTimeout:
			if ctx.Err() != nil {
				return nil, 0, fmt.Errorf("%w: %w", ErrNoCoordinator, err)
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
			return nil, 0, fmt.Errorf("%w: %s: %s", ErrRateLimited, peer.Name, msg)
		case exchange.CodeForbidden:
			// A configured coordinator that is not this node's (before
			// the registry has arrived): the next may be.
			forbidden = fmt.Errorf("%w: %s: %s", ErrRefused, peer.Name, msg)
			continue
		}
		return nil, 0, fmt.Errorf("%w: %s: %s", ErrRefused, peer.Name, msg) // a refusal is the same everywhere
	}
	if forbidden != nil {
		return nil, 0, forbidden
	}
	return nil, 0, fmt.Errorf("%w: %w", ErrNoCoordinator, last)
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
