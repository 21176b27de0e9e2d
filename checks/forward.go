package checks

import (
	"context"
	"errors"
	"time"

	"credfed/api"
	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/lookup"
	"credfed/storage"
)

// forward sends a department's check to the district's coordinators,
// nearest first, until one answers (only an unreachable one is passed
// over), and audits it here under the department.
func (s *Service) forward(ctx context.Context, caller certs.Identity, in api.CheckRequest) (api.CheckAnswer, error) {
	entry := audit.By(caller, "check.forward")
	cat := s.cfg.Catalog()
	entry.Purpose, entry.User, entry.Reference, entry.Authorization = statedOf(cat, in)
	switch {
	case caller.Role != certs.Department:
		return api.CheckAnswer{}, s.refuse(&entry, fault.New(fault.Forbidden, "at a district node, checks are made by its departments (coordinators check at their coordinator node), not with %s %s certificate", article(string(caller.Role)), caller.Role))
	case caller.Region != s.cfg.Self.Region:
		return api.CheckAnswer{}, s.refuse(&entry, fault.New(fault.Forbidden, "a department of %s checks through its own district's node", caller.Region))
	}
	// What the coordinator would refuse anyway is refused here, unsent.
	if cat != nil {
		pl, e := planFor(cat, caller, in.Scenario, in.Purpose, in.User)
		if pl.purpose.Code != "" {
			entry.Purpose = pl.purpose.Code
		}
		if e == nil {
			e = pl.checkRow(in.Reference, in.Authorization)
		}
		if e == nil {
			_, e = s.parse(in.Subject)
		}
		if e != nil {
			return api.CheckAnswer{}, s.refuse(&entry, e)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout+2*time.Second)
	defer cancel()
	var got api.CheckAnswer
	meta := exchange.Meta{Purpose: entry.Purpose, User: in.User, Reference: in.Reference, Authorization: in.Authorization}
	if err := s.callUp(ctx, meta, forwardRequest{Requester: caller, Check: in}, &got); err != nil {
		return api.CheckAnswer{}, s.refuse(&entry, err)
	}
	entry.LookupID, entry.Subject = got.CheckID, got.SubjectPseudonym
	if !exchange.ValidID("lk", entry.LookupID) {
		entry.LookupID = ""
	}
	if _, err := credit.ParsePseudonym(entry.Subject); err != nil {
		entry.Subject = ""
	}
	entry.Decision = storage.DecisionAllowed
	for _, d := range got.Districts {
		for _, r := range d.Records {
			entry.Records = append(entry.Records, r.Ref)
		}
	}
	if err := s.cfg.Audit.Record(entry); err != nil {
		return api.CheckAnswer{}, err
	}
	s.checks.WithLabelValues("allowed").Inc()
	return got, nil
}

// callUp calls OpForward at the coordinators above this district, nearest
// first, until one answers: only those can vouch for its departments and
// portals, and only an unreachable one is passed over. A refusal comes
// back as the fault the caller sees.
func (s *Service) callUp(ctx context.Context, meta exchange.Meta, req forwardRequest, resp any) error {
	peers := consensus.CoordinatorsAbove(s.cfg.Index.Regions(), s.cfg.Self)
	if len(peers) == 0 {
		return fault.New(fault.Unavailable, "no coordinator node above this district is registered to run it")
	}
	var last error
	for _, p := range peers {
		err := s.cfg.Endpoint.Call(ctx, p, OpForward, meta, req, resp)
		if err == nil {
			return nil
		}
		last = err
		if !passOver(err) || ctx.Err() != nil {
			break
		}
	}
	return remoteFault(last)
}

func statedOf(cat *credit.Catalog, in api.CheckRequest) (string, string, string, string) {
	return lookup.StatedFields(cat, in.Purpose, in.User, in.Reference, in.Authorization)
}

// passOver reports whether a coordinator's failure lets the next one be
// asked: it could not be reached, not a refusal.
func passOver(err error) bool {
	var e *exchange.Error
	if errors.As(err, &e) {
		return e.Code == exchange.CodeUnavailable
	}
	return true
}

// remoteFault maps a coordinator's refusal to the fault the department
// sees.
func remoteFault(err error) error {
	var e *exchange.Error
	if errors.As(err, &e) {
		switch e.Code {
		case exchange.CodeForbidden:
			return fault.New(fault.Forbidden, "the coordinator refused: %s", e.Message)
		case exchange.CodeBadRequest:
			return fault.New(fault.BadRequest, "the coordinator refused: %s", e.Message)
		case exchange.CodeTooManyRequests:
			return fault.New(fault.TooManyRequests, "the coordinator refused: %s", e.Message)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fault.Wrap(fault.DeadlineExceeded, err, "the coordinator did not answer in time")
	}
	return fault.Wrap(fault.Unavailable, err, "no coordinator above this district could be reached")
}

// serveForward runs the check a district forwards for one of its
// departments, with the department's identity: the district vouches for
// its departments, bounded per district node.
func (s *Service) serveForward(ctx context.Context, req *exchange.Request) (any, error) {
	var in forwardRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	r := in.Requester
	if in.Classification != nil {
		return s.serveOwnClassification(ctx, req, in)
	}
	if !certs.InRegion(req.Caller.Region, s.cfg.Self.Region) {
		entry := audit.By(r, "check")
		entry.Caller = req.Caller.String()
		_ = s.refuse(&entry, fault.New(fault.Forbidden, "the forwarding district is not below this node"))
		return nil, exchange.Errorf(exchange.CodeForbidden, "%s is not below %s: a district forwards its departments' checks to the coordinators above it", req.Caller.Region, s.cfg.Self.Region)
	}
	if r.Role != certs.Department || r.Federation != s.cfg.Self.Federation || r.Region != req.Caller.Region {
		entry := audit.By(r, "check")
		entry.Caller = req.Caller.String()
		_ = s.refuse(&entry, fault.New(fault.Forbidden, "not a department of the forwarding district"))
		return nil, exchange.Errorf(exchange.CodeForbidden, "the requester is not a department of the forwarding district")
	}
	if !s.nodes.Allow(req.Caller.String()) {
		entry := audit.By(r, "check")
		entry.Caller = req.Caller.String()
		_ = s.refuse(&entry, fault.New(fault.TooManyRequests, "the district forwards too many checks"))
		return nil, exchange.Errorf(exchange.CodeTooManyRequests, "this district forwards more than %g checks per second", float64(s.cfg.ForwardRate))
	}
	via := req.Caller
	got, err := s.run(ctx, r, &via, in.Check)
	if err != nil {
		f := fault.As(err)
		if f == nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "the check could not run")
		}
		return nil, exchange.Errorf(wireCode(f), "%s", f.Message)
	}
	return got, nil
}

// serveOwnClassification classifies a subject for a portal of the
// forwarding district (the district vouches for its portals, bounded per
// district node and per portal).
func (s *Service) serveOwnClassification(ctx context.Context, req *exchange.Request, in forwardRequest) (any, error) {
	r := in.Requester
	refuse := func(code exchange.Code, msg string) (any, error) {
		entry := audit.By(r, "classification")
		entry.Caller, entry.Requester = req.Caller.String(), r.String()
		_ = s.refuse(&entry, fault.New(fault.Forbidden, "%s", msg))
		return nil, exchange.Errorf(code, "%s", msg)
	}
	switch {
	case !certs.InRegion(req.Caller.Region, s.cfg.Self.Region):
		return refuse(exchange.CodeForbidden, "the forwarding district is not below this node")
	case r.Role != certs.Portal || r.Federation != s.cfg.Self.Federation || r.Region != req.Caller.Region:
		return refuse(exchange.CodeForbidden, "the requester is not a portal of the forwarding district")
	case !s.nodes.Allow(req.Caller.String()) || !s.portals.Allow(r.String()):
		return refuse(exchange.CodeTooManyRequests, "this district or portal asks too often")
	}
	via := req.Caller
	got, err := s.classify(ctx, r, &via, *in.Classification)
	if err != nil {
		f := fault.As(err)
		if f == nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "the classification could not run")
		}
		return nil, exchange.Errorf(wireCode(f), "%s", f.Message)
	}
	return got, nil
}
