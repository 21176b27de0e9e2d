package lifecycle

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"credfed/api"
	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/fault"
	"credfed/internal/keyrate"
	"credfed/storage"
)

// Regions that join themselves (consensus/join.go tells the protocol): an
// operator adds a region and gets a one-time join token; the new node
// presents it here, at the coordinator that issued it, with a CSR; the
// coordinator commits the token's use through Raft, then signs the node's
// first certificate with its intermediate CA.

// JoinSigner signs a joining node's first certificate (enroll.Service).
type JoinSigner interface {
	CanSign() bool
	SignJoin(id certs.Identity, hosts []string, pub *ecdsa.PublicKey, validity time.Duration) ([]*x509.Certificate, error)
}

// Registry is what the region commands read of the replicated registry
// (consensus.State).
type Registry interface {
	Region(path string) (consensus.Region, bool)
	Regions() []consensus.Region
	JoinToken(region string) (consensus.JoinToken, bool, error)
}

// RegionsConfig is what the region commands need beyond Config.
type RegionsConfig struct {
	Registry Registry
	Signer   JoinSigner
	// CA is the federation's root certificate, which the token pins.
	CA *x509.Certificate
	// API is this node's HTTPS base URL, where the tokens it issues are
	// presented.
	API func() string
	// PseudonymKey is the hex of the pseudonym key, handed to a joining
	// coordinator; empty on a node that holds none. PseudonymKeys, if set,
	// returns the key versions rotations added (keys.go), handed over too.
	PseudonymKey  string
	PseudonymKeys func() map[uint32]credit.PseudonymKey
	// NodeValidity is the lifetime of a joining node's first certificate
	// (default 7 days); it renews it itself after.
	NodeValidity time.Duration
}

// Join bounds: a request's host names, and how often one address may try.
const (
	maxJoinHosts = 8
	joinRate     = rate.Limit(1) // per address, burst 5
)

// DefaultNodeValidity is a joining node's first certificate lifetime.
const DefaultNodeValidity = 7 * 24 * time.Hour

func (s *Service) regions() (*RegionsConfig, *fault.Error) {
	if s.cfg.Regions == nil || s.cfg.Regions.Registry == nil {
		return nil, fault.New(fault.Unavailable, "this node does not manage regions")
	}
	return s.cfg.Regions, nil
}

// AddRegion registers a region that has not joined yet and returns a new
// join token for it (an earlier unused one stops working). Only at a
// coordinator that holds a signing CA, since the token is presented here.
func (s *Service) AddRegion(ctx context.Context, caller certs.Identity, req api.RegionAddRequest) (api.RegionAdded, error) {
	entry := audit.By(caller, "region.add")
	entry.Reference = req.Path
	fail := func(e error) (api.RegionAdded, error) { return api.RegionAdded{}, s.refuse(&entry, e) }
	if e := s.check(caller, ""); e != nil {
		return fail(e)
	}
	rc, e := s.regions()
	if e != nil {
		return fail(e)
	}
	if rc.Signer == nil || !rc.Signer.CanSign() {
		return fail(fault.New(fault.Unavailable, "this node holds no signing CA (tls.signer_cert), so it cannot serve the join: add the region at a coordinator that holds one"))
	}
	if err := certs.CheckRegion(req.Path); err != nil {
		return fail(fault.Field(fault.BadRequest, "path", "%s", strings.TrimPrefix(err.Error(), "certs: ")))
	}
	role, err := certs.ParseRole(req.Role)
	if err != nil || !role.IsNode() {
		return fail(fault.Field(fault.BadRequest, "role", "must be province, city or district"))
	}
	if !certs.InRegion(req.Path, s.cfg.Self.Region) || req.Path == s.cfg.Self.Region {
		return fail(fault.Field(fault.Forbidden, "path", "this node serves the joins of regions below it only: add the region at a coordinator above it"))
	}
	if parent, ok := rc.Registry.Region(certs.ParentRegion(req.Path)); ok {
		// The tree is province → city → district (a district may hang off
		// the province directly); nothing hangs off a district, and a city
		// only off a province.
		switch {
		case parent.Role == certs.District:
			return fail(fault.Field(fault.BadRequest, "path", "its parent %s is a district: regions hang off coordinators only", parent.Path))
		case role == certs.City && parent.Role != certs.Province:
			return fail(fault.Field(fault.BadRequest, "path", "a city's parent must be a province, not the %s %s", parent.Role, parent.Path))
		}
	}
	if err := checkLabel(req.Name, 64); err != nil {
		return fail(fault.Field(fault.BadRequest, "name", "%s", err))
	}
	if req.Code != "" && (len(req.Code) != 6 || strings.Trim(req.Code, "0123456789") != "") {
		return fail(fault.Field(fault.BadRequest, "code", "must be the six-digit administrative division code"))
	}
	life := consensus.DefaultJoinTokenLife
	if req.TokenLife != "" {
		d, err := time.ParseDuration(req.TokenLife)
		if err != nil || d < time.Second || d > consensus.MaxJoinTokenLife {
			return fail(fault.Field(fault.BadRequest, "token_life", "must be a duration between 1s and %v", consensus.MaxJoinTokenLife))
		}
		life = d
	}
	tok := api.JoinToken{Federation: s.cfg.Self.Federation, Region: req.Path, Role: string(role), Secret: make([]byte, 32), API: rc.API(), Node: s.cfg.Self.String()}
	if _, err := rand.Read(tok.Secret); err != nil {
		return fail(err)
	}
	tok.CA = rc.CA.Raw
	add := consensus.RegionAdd{Region: consensus.Region{Path: req.Path, Name: req.Name, Role: role, Code: req.Code},
		TokenHash: sha256.Sum256(tok.Secret), Life: life}
	if _, err := s.cfg.Replica.Apply(ctx, consensus.CmdRegionAdd, caller, add); err != nil {
		return fail(commandFault(err))
	}
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return api.RegionAdded{}, err
	}
	expires := time.Now().Add(life).UTC().Truncate(time.Second)
	if bctx, cancel := context.WithTimeout(ctx, 5*time.Second); s.cfg.Replica.ReadBarrier(bctx) == nil {
		if t, ok, err := rc.Registry.JoinToken(req.Path); err == nil && ok {
			expires = t.Expires.UTC()
		}
		cancel()
	} else {
		cancel()
	}
	return api.RegionAdded{Region: req.Path, Role: string(role), Token: tok.String(), Expires: expires}, nil
}

// regionChange runs one operator command on the registry: the caller
// admitted, the command audited, allowed or refused.
func (s *Service) regionChange(caller certs.Identity, operation, path string, do func(rc *RegionsConfig) (api.RegionChanged, error)) (api.RegionChanged, error) {
	entry := audit.By(caller, operation)
	entry.Reference = path
	if e := s.check(caller, ""); e != nil {
		return api.RegionChanged{}, s.refuse(&entry, e)
	}
	rc, e := s.regions()
	if e != nil {
		return api.RegionChanged{}, s.refuse(&entry, e)
	}
	out, err := do(rc)
	if err != nil {
		return api.RegionChanged{}, s.refuse(&entry, err)
	}
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return api.RegionChanged{}, err
	}
	return out, nil
}

// PromoteRegion makes a joined coordinator region a Raft voter; promoting
// a voter again changes nothing.
func (s *Service) PromoteRegion(ctx context.Context, caller certs.Identity, path string) (api.RegionChanged, error) {
	return s.regionChange(caller, "region.promote", path, func(rc *RegionsConfig) (api.RegionChanged, error) {
		r, ok := rc.Registry.Region(path)
		switch {
		case !ok:
			return api.RegionChanged{}, fault.Field(fault.NotFound, "path", "no such region")
		case !r.Role.IsCoordinatorNode():
			return api.RegionChanged{}, fault.Field(fault.BadRequest, "path", "only coordinators (province, city) vote in Raft; districts stay non-voters")
		case r.Exchange == "":
			return api.RegionChanged{}, fault.Field(fault.Conflict, "path", "the region has not joined yet: its node must join before it can vote")
		}
		out := api.RegionChanged{Region: path, Change: "promoted"}
		if r.Voter {
			out.Detail = "already a voter"
			return out, nil
		}
		r.Voter = true
		if _, err := s.cfg.Replica.Apply(ctx, consensus.CmdRegionPut, caller, r); err != nil {
			return api.RegionChanged{}, commandFault(err)
		}
		return out, nil
	})
}

// RemoveRegion removes a region that has none below it: in one Raft entry
// the region leaves the registry (so its node leaves Raft and its index
// entries are no longer read) and every certificate of its node identity
// issued until then is suspended, renewals included; the node of a region
// added again at the path gets new certificates, which the suspension
// does not touch. Its records stay on its own disk. A region removed
// already says so and changes nothing; one never registered is not found.
func (s *Service) RemoveRegion(ctx context.Context, caller certs.Identity, path string) (api.RegionChanged, error) {
	return s.regionChange(caller, "region.remove", path, func(rc *RegionsConfig) (api.RegionChanged, error) {
		if err := certs.CheckRegion(path); err != nil {
			return api.RegionChanged{}, fault.Field(fault.BadRequest, "path", "%s", strings.TrimPrefix(err.Error(), "certs: "))
		}
		out := api.RegionChanged{Region: path, Change: "removed"}
		r, ok := rc.Registry.Region(path)
		switch {
		case !ok && s.removedAlready(path):
			out.Detail = "removed already"
			return out, nil
		case !ok:
			return api.RegionChanged{}, fault.Field(fault.NotFound, "path", "no such region (never added, or removed before its node was suspended)")
		case path == s.cfg.Self.Region:
			return api.RegionChanged{}, fault.Field(fault.Forbidden, "path", "a node does not remove its own region: ask a coordinator above it")
		}
		if below := regionsBelow(rc.Registry, path); below > 0 {
			return api.RegionChanged{}, fault.Field(fault.Conflict, "path", "the region still has %d regions below it: remove them first", below)
		}
		if _, err := s.cfg.Replica.Apply(ctx, consensus.CmdRegionRemove, caller, consensus.RegionRemove{Path: path, SuspendNode: true}); err != nil {
			return api.RegionChanged{}, commandFault(err)
		}
		out.Detail = "every certificate issued until now to " + r.Identity(s.cfg.Self.Federation).String() + " suspended"
		return out, nil
	})
}

// removedAlready says whether a region's removal suspended its node.
func (s *Service) removedAlready(path string) bool {
	if s.cfg.Revocations == nil {
		return false
	}
	for _, x := range s.cfg.Revocations.Snapshot().Suspensions {
		if id, err := certs.ParseIdentity(x.Identity); err == nil && id.Role.IsNode() && id.Region == path && x.Reason == consensus.RegionRemovedReason {
			return true
		}
	}
	return false
}

// regionsBelow counts the registered regions below path.
func regionsBelow(reg Registry, path string) int {
	n := 0
	for _, r := range reg.Regions() {
		if r.Path != path && certs.InRegion(r.Path, path) {
			n++
		}
	}
	return n
}

// CA is the federation's root certificate, PEM.
func (s *Service) CA() (string, error) {
	if s.cfg.Regions == nil || s.cfg.Regions.CA == nil {
		return "", fault.New(fault.Unavailable, "this node does not serve the CA")
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.cfg.Regions.CA.Raw})), nil
}

// Join serves a new node's join: the token must be the region's live one,
// unused and unexpired (each refusal says which); its use is committed
// through Raft before the certificate is signed, so it works once. from is
// the caller's network address (rate limited). Allowed or refused, it is
// audited.
func (s *Service) Join(ctx context.Context, from string, req api.JoinRequest) (api.JoinAnswer, error) {
	entry := storage.AuditEntry{Operation: "region.join"}
	fail := func(e error) (api.JoinAnswer, error) { return api.JoinAnswer{}, s.refuse(&entry, e) }
	if !s.joins.Allow(from) {
		return fail(fault.New(fault.TooManyRequests, "too many joins from this address; wait a little"))
	}
	rc, e := s.regions()
	if e != nil {
		return fail(e)
	}
	tok, err := api.ParseJoinToken(req.Token)
	if err != nil {
		return fail(fault.Field(fault.BadRequest, "token", "not a credfed join token (credfed region add prints one)"))
	}
	entry.Reference = tok.Region
	if tok.Federation != s.cfg.Self.Federation {
		return fail(fault.Field(fault.BadRequest, "token", "the token is not for a node of this federation"))
	}
	// The role comes from the registry: the token's travels in the clear.
	reg, ok := rc.Registry.Region(tok.Region)
	if !ok {
		// Added a moment ago at another coordinator: this one may not
		// have applied it yet.
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if s.cfg.Replica.ReadBarrier(bctx) == nil {
			reg, ok = rc.Registry.Region(tok.Region)
		}
		cancel()
	}
	if !ok {
		return fail(fault.Field(fault.NotFound, "token", "the token's region is not registered (removed since?)"))
	}
	role := reg.Role
	if tok.Role != string(role) {
		return fail(fault.Field(fault.Forbidden, "token", "the token is not the region's: the region is a %s", role))
	}
	id := certs.Identity{Federation: tok.Federation, Role: role, Region: tok.Region}
	if err := id.Validate(); err != nil {
		return fail(fault.Field(fault.BadRequest, "token", "the token names no valid region"))
	}
	entry.Caller, entry.Role = id.String(), string(role)
	if rc.Signer == nil || !rc.Signer.CanSign() {
		return fail(fault.New(fault.Unavailable, "this node holds no signing CA: present the token at the coordinator that issued it"))
	}
	if role.IsCoordinatorNode() && rc.PseudonymKey == "" {
		return fail(fault.New(fault.Unavailable, "this node holds no pseudonym key to hand to a joining coordinator"))
	}
	pub, err := certs.ParseCSR([]byte(req.CSR))
	if err != nil {
		return fail(fault.Field(fault.BadRequest, "csr", "%s", strings.TrimPrefix(err.Error(), "certs: ")))
	}
	hosts, e := joinHosts(req)
	if e != nil {
		return fail(e)
	}
	j := consensus.Join{Region: tok.Region, TokenHash: sha256.Sum256(tok.Secret), Exchange: req.Exchange, API: req.API}
	if _, err := s.cfg.Replica.Apply(ctx, consensus.CmdJoin, id, j); err != nil {
		var re *consensus.RefusedError
		if errors.As(err, &re) && errors.Is(err, consensus.ErrExpired) {
			return fail(fault.Wrap(fault.Forbidden, err, "%s", re.Message))
		}
		return fail(commandFault(err))
	}
	validity := rc.NodeValidity
	if validity <= 0 {
		validity = DefaultNodeValidity
	}
	chain, err := rc.Signer.SignJoin(id, hosts, pub, validity)
	if err != nil {
		return fail(fault.Wrap(fault.Internal, err, "the certificate could not be signed; the token is used: add the region again"))
	}
	entry.Decision = storage.DecisionAllowed
	entry.Count = len(hosts)
	if err := s.cfg.Audit.Record(entry); err != nil {
		return api.JoinAnswer{}, err
	}
	out := api.JoinAnswer{Region: tok.Region, Certificate: string(certs.ChainPEM(chain[0], chain[1:]))}
	out.CA, _ = s.CA()
	if role.IsCoordinatorNode() {
		out.PseudonymKey, out.PseudonymKeys = rc.PseudonymKey, rc.rotatedKeys()
	}
	return out, nil
}

// joinHosts checks the addresses a joining node gives and returns the host
// names of its certificate: the exchange address's host, then the others.
func joinHosts(req api.JoinRequest) ([]string, *fault.Error) {
	host, port, err := net.SplitHostPort(req.Exchange)
	if err != nil || host == "" || port == "" {
		return nil, fault.Field(fault.BadRequest, "exchange", "must be the node's exchange address, host:port")
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return nil, fault.Field(fault.BadRequest, "exchange", "must be an address other nodes can reach, not a wildcard")
	}
	if req.API != "" {
		if u, err := url.Parse(req.API); err != nil || u.Scheme != "https" || u.Host == "" || len(req.API) > 256 {
			return nil, fault.Field(fault.BadRequest, "api", "must be the node's HTTPS base URL")
		}
	}
	if len(req.Hosts) > maxJoinHosts {
		return nil, fault.Field(fault.BadRequest, "hosts", "at most %d host names", maxJoinHosts)
	}
	out := []string{host}
	for _, h := range req.Hosts {
		if h == host {
			continue
		}
		if net.ParseIP(h) == nil && !validDNSName(h) {
			return nil, fault.Field(fault.BadRequest, "hosts", "each must be a DNS name or an IP address")
		}
		out = append(out, h)
	}
	return out, nil
}

func validDNSName(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// checkLabel bounds a display name and keeps it visible text.
func checkLabel(s string, max int) error {
	if len([]rune(s)) > max {
		return errors.New("too long")
	}
	if s != audit.Bound(s, max*4) {
		return errors.New("must be visible text")
	}
	return nil
}

// newJoinLimits bounds the joins one address may try.
func newJoinLimits() *keyrate.Limiters[string] { return keyrate.New[string](joinRate, 5, 10_000) }
