// Package lifecycle is the operators' control of the federation through
// Raft: revoking a certificate by serial, suspending and reinstating an
// identity (every node refuses them on every connection within seconds),
// publishing catalog versions, and adding, promoting and removing regions,
// whose new nodes join themselves with a one-time token.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"credfed/api"
	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/fault"
	"credfed/internal/keyrate"
	"credfed/storage"
)

// Replica proposes operator commands (consensus.Replica).
type Replica interface {
	Apply(ctx context.Context, t consensus.CommandType, actor certs.Identity, body any) (any, error)
	// ReadBarrier waits until this node has applied what the leader has
	// committed.
	ReadBarrier(ctx context.Context) error
}

// Config configures the service of one node.
type Config struct {
	Self        certs.Identity
	Replica     Replica
	Revocations *certs.RevocationList
	// Catalog is the replicated catalog, nil before it has arrived.
	Catalog func() *credit.Catalog
	Audit   *audit.Recorder
	// Regions serves region add, promote and remove and the joins of new
	// nodes (regions.go); nil on a node that does not.
	Regions *RegionsConfig
	// Keys serves key rotation (keys.go); nil on a node without the keys.
	Keys *KeysConfig
}

// Service is a node's certificate control.
type Service struct {
	cfg   Config
	joins *keyrate.Limiters[string] // per address
}

// New returns the service.
func New(cfg Config) *Service { return &Service{cfg: cfg, joins: newJoinLimits()} }

// check admits an operator at a coordinator node (operator commands are
// relayed by province and city nodes; the FSM decides which operator may
// change what).
func (s *Service) check(caller certs.Identity, reason string) *fault.Error {
	switch {
	case caller.Role != certs.Operator:
		return fault.New(fault.Forbidden, "certificates are revoked and suspended by operators, not with a %s certificate", caller.Role)
	case !s.cfg.Self.Role.IsCoordinatorNode():
		return fault.New(fault.Forbidden, "operator commands go through a province or city node; this is a %s node", s.cfg.Self.Role)
	}
	if err := certs.CheckReason(reason); err != nil {
		return fault.Field(fault.BadRequest, "reason", "%s", strings.TrimPrefix(err.Error(), "certs: "))
	}
	return nil
}

// Revoke revokes the certificate with the serial (decimal) everywhere.
func (s *Service) Revoke(ctx context.Context, caller certs.Identity, serial, reason string) (api.RevocationList, error) {
	entry := audit.By(caller, "cert.revoke")
	fail := func(e error) (api.RevocationList, error) { return api.RevocationList{}, s.refuse(&entry, e) }
	if e := s.check(caller, reason); e != nil {
		return fail(e)
	}
	norm, err := certs.ParseSerial(serial)
	if err != nil {
		return fail(fault.Field(fault.BadRequest, "serial", "must be the certificate's serial number in decimal (openssl x509 -noout -serial prints it in hex)"))
	}
	entry.Reference = norm
	if _, err := s.cfg.Replica.Apply(ctx, consensus.CmdRevoke, caller, certs.Revocation{Serial: norm, Reason: reason}); err != nil {
		return fail(commandFault(err))
	}
	return s.done(ctx, &entry)
}

// Suspend suspends every certificate of the identity (renewals included).
func (s *Service) Suspend(ctx context.Context, caller certs.Identity, identity, reason string) (api.RevocationList, error) {
	entry := audit.By(caller, "cert.suspend")
	fail := func(e error) (api.RevocationList, error) { return api.RevocationList{}, s.refuse(&entry, e) }
	if e := s.check(caller, reason); e != nil {
		return fail(e)
	}
	id, err := certs.ParseIdentity(identity)
	if err != nil {
		return fail(fault.Field(fault.BadRequest, "identity", "must be an identity URI such as spiffe://FEDERATION/department/REGION/INSTITUTION"))
	}
	entry.Reference = id.String()
	if _, err := s.cfg.Replica.Apply(ctx, consensus.CmdSuspend, caller, certs.Suspension{Identity: id.String(), Reason: reason}); err != nil {
		return fail(commandFault(err))
	}
	return s.done(ctx, &entry)
}

// Unsuspend lifts an identity's suspension.
func (s *Service) Unsuspend(ctx context.Context, caller certs.Identity, identity string) (api.RevocationList, error) {
	entry := audit.By(caller, "cert.unsuspend")
	fail := func(e error) (api.RevocationList, error) { return api.RevocationList{}, s.refuse(&entry, e) }
	if e := s.check(caller, ""); e != nil {
		return fail(e)
	}
	id, err := certs.ParseIdentity(identity)
	if err != nil {
		return fail(fault.Field(fault.BadRequest, "identity", "must be an identity URI such as spiffe://FEDERATION/department/REGION/INSTITUTION"))
	}
	entry.Reference = id.String()
	if _, err := s.cfg.Replica.Apply(ctx, consensus.CmdReinstate, caller, consensus.Reinstate{Identity: id.String()}); err != nil {
		return fail(commandFault(err))
	}
	return s.done(ctx, &entry)
}

// done audits a command that committed and answers the list as this node
// has applied it: through a follower, once it has caught up with the
// leader (bounded; the list may lag if the wait runs out).
func (s *Service) done(ctx context.Context, entry *storage.AuditEntry) (api.RevocationList, error) {
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(*entry); err != nil {
		return api.RevocationList{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = s.cfg.Replica.ReadBarrier(ctx)
	return s.List(), nil
}

func (s *Service) refuse(entry *storage.AuditEntry, e error) error {
	entry.Decision, entry.Reason = storage.DecisionDenied, string(fault.KindOf(e))
	if err := s.cfg.Audit.Record(*entry); err != nil {
		return err
	}
	return e
}

// List is the revocation list as this node enforces it.
func (s *Service) List() api.RevocationList {
	snap := s.cfg.Revocations.Snapshot()
	out := api.RevocationList{Version: snap.Version, Revoked: []api.Revoked{}, Suspended: []api.Suspended{}}
	for _, r := range snap.Revocations {
		out.Revoked = append(out.Revoked, api.Revoked{Serial: r.Serial, Reason: r.Reason, At: r.At.UTC()})
	}
	for _, x := range snap.Suspensions {
		sus := api.Suspended{Identity: x.Identity, Reason: x.Reason, At: x.At.UTC()}
		if !x.IssuedBefore.IsZero() {
			b := x.IssuedBefore.UTC()
			sus.IssuedBefore = &b
		}
		out.Suspended = append(out.Suspended, sus)
	}
	return out
}

// commandFault maps the outcome of an operator command.
func commandFault(err error) error {
	msg := strings.TrimPrefix(err.Error(), "consensus: ")
	var re *consensus.RefusedError
	if errors.As(err, &re) {
		msg = re.Message // the reason is the fault's kind
	}
	switch {
	case errors.Is(err, consensus.ErrForbidden):
		return fault.Wrap(fault.Forbidden, err, "%s", msg)
	case errors.Is(err, consensus.ErrInvalid):
		return fault.Wrap(fault.BadRequest, err, "%s", msg)
	case errors.Is(err, consensus.ErrNotFound):
		return fault.Wrap(fault.NotFound, err, "%s", msg)
	case errors.Is(err, consensus.ErrConflict):
		return fault.Wrap(fault.Conflict, err, "%s", msg)
	case errors.Is(err, consensus.ErrOutcomeUnknown):
		return fault.Wrap(fault.Unavailable, err, "the command's outcome is unknown (a leader change): look at GET /v1/revocations and send it again if it is not there; it is safe to repeat")
	case errors.Is(err, context.DeadlineExceeded):
		return fault.Wrap(fault.DeadlineExceeded, err, "the command did not commit in time; it is safe to repeat")
	}
	return fault.Wrap(fault.Unavailable, err, "the command could not be committed (no Raft leader reachable); it is safe to repeat")
}

// maxConflictsShown bounds the conflicts a refusal names.
const maxConflictsShown = 20

// PublishCatalog publishes the next catalog version through Raft (an
// operator of the province): it must validate, be the current version plus
// one, and strand no record (credit.StrandingConflicts). Records keep the
// version they were collected under.
func (s *Service) PublishCatalog(ctx context.Context, caller certs.Identity, next *credit.Catalog) (api.CatalogApplied, error) {
	entry := audit.By(caller, "catalog.publish")
	fail := func(e error) (api.CatalogApplied, error) { return api.CatalogApplied{}, s.refuse(&entry, e) }
	if e := s.check(caller, ""); e != nil {
		return fail(e)
	}
	cur := s.cfg.Catalog()
	if cur == nil {
		return api.CatalogApplied{}, fault.New(fault.Unavailable, "this node has not received the federation's catalog yet")
	}
	if next == nil {
		return fail(fault.New(fault.BadRequest, "no catalog in the body"))
	}
	entry.Reference = fmt.Sprintf("version %d", next.Version)
	if next.Version != cur.Version+1 {
		return fail(fault.Field(fault.Conflict, "version", "the next catalog is version %d (the current one is %d), not %d", cur.Version+1, cur.Version, next.Version))
	}
	if err := next.Validate(); err != nil {
		return fail(fault.Wrap(fault.BadRequest, err, "the catalog does not validate: %v", err))
	}
	if cs := credit.StrandingConflicts(cur, next); len(cs) > 0 {
		var b strings.Builder
		for i, c := range cs {
			if i == maxConflictsShown {
				fmt.Fprintf(&b, "; and %d more", len(cs)-i)
				break
			}
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "item %s, %s: %s", c.Item, c.Field, c.Message)
		}
		return fail(fault.New(fault.Conflict, "version %d would strand records collected under version %d (credfed catalog diff lists them): %s", next.Version, cur.Version, b.String()))
	}
	changes := credit.DiffCatalogs(cur, next)
	if _, err := s.cfg.Replica.Apply(ctx, consensus.CmdCatalogPublish, caller, consensus.CatalogPublish{Catalog: next}); err != nil {
		return fail(commandFault(err))
	}
	entry.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(entry); err != nil {
		return api.CatalogApplied{}, err
	}
	return api.CatalogApplied{Version: next.Version, Changes: changes}, nil
}
