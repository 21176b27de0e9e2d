package checks

import (
	"context"
	"strings"
	"time"

	"credfed/api"
	"credfed/audit"
	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/keyring"
	"credfed/lookup"
	"credfed/storage"
)

// ClassificationNote is said with every classification.
const ClassificationNote = "Informational only: no measure follows from a level by itself (measures follow from lists and conditions in a check's scenario)."

// planForPurpose is planFor for a classification: a purpose of the
// catalog the requester's role may use, not the subject's own.
func planForPurpose(cat *credit.Catalog, requester certs.Identity, purpose, user string) (plan, *fault.Error) {
	pl := plan{cat: cat}
	p, ok := cat.Purpose(purpose)
	switch {
	case purpose == "":
		return pl, fault.Field(fault.BadRequest, "purpose", "required: a classification names a purpose of the catalog")
	case !ok:
		return pl, fault.Field(fault.Forbidden, "purpose", "the purpose is not in catalog version %d (GET /v1/catalog lists the purposes)", cat.Version)
	case p.SubjectOwn:
		return pl, fault.Field(fault.Forbidden, "purpose", "purpose %q is the subject's own inquiry, made through a portal", purpose)
	case requester.Role != certs.Coordinator:
		return pl, fault.New(fault.Forbidden, "classifications are asked by coordinators, not with %s %s certificate", article(string(requester.Role)), requester.Role)
	case !p.Admits(string(requester.Role)):
		return pl, fault.Field(fault.Forbidden, "purpose", "purpose %q may not be used by a %s", purpose, requester.Role)
	case strings.TrimSpace(user) == "":
		return pl, fault.Field(fault.BadRequest, "user", "required: the end user who asks")
	}
	if e := lookup.CheckField("user", user); e != nil {
		return pl, e
	}
	pl.purpose = p
	return pl, nil
}

// planOwn is the plan of a subject's own classification, asked through a
// portal: the catalog's subject-own purpose, which sees every record of
// the subject.
func planOwn(cat *credit.Catalog, requester certs.Identity) (plan, *fault.Error) {
	pl := plan{cat: cat, own: true}
	if requester.Role != certs.Portal {
		return pl, fault.New(fault.Forbidden, "a subject's own classification is asked through a portal")
	}
	for _, p := range cat.Purposes {
		if p.SubjectOwn && p.Admits(string(certs.Portal)) {
			pl.purpose = p
			return pl, nil
		}
	}
	return pl, fault.New(fault.Forbidden, "catalog version %d has no subject's own purpose for portals", cat.Version)
}

// MaxAuthentication bounds a portal's real-name authentication reference.
const MaxAuthentication = 256

// checkAuthentication checks how a portal says it verified the person.
func checkAuthentication(v string) *fault.Error {
	if strings.TrimSpace(v) == "" {
		return fault.Field(fault.BadRequest, "authentication", "required: how the portal verified the person's real name")
	}
	if len(v) > MaxAuthentication {
		return fault.Field(fault.BadRequest, "authentication", "must be at most %d bytes, got %d", MaxAuthentication, len(v))
	}
	return lookup.CheckField("authentication", v)
}

// Classify is a subject's classification (integrity points): for a
// coordinator at its coordinator node, under a purpose it may use; for a
// portal at its district's node, the subject's own (forwarded to the
// coordinators above the district). Every district that holds something
// of the subject is asked for what the purpose may see, and the catalog's
// rules give the points. Informational only; audited like a lookup at
// every node it touches.
func (s *Service) Classify(ctx context.Context, caller certs.Identity, in api.ClassificationRequest) (api.Classification, error) {
	if caller.Role == certs.Portal {
		return s.classifyOwn(ctx, caller, in)
	}
	return s.classify(ctx, caller, nil, in)
}

// classifyOwn checks a portal's request at its district, forwards it up the
// tree and audits it here.
func (s *Service) classifyOwn(ctx context.Context, caller certs.Identity, in api.ClassificationRequest) (api.Classification, error) {
	entry := audit.By(caller, "classification.forward")
	entry.Authentication = audit.Bound(in.Authentication, MaxAuthentication)
	switch {
	case s.cfg.Self.Role != certs.District:
		return api.Classification{}, s.refuse(&entry, fault.New(fault.Forbidden, "a portal asks for a subject's own classification at its district's node"))
	case caller.Region != s.cfg.Self.Region:
		return api.Classification{}, s.refuse(&entry, fault.New(fault.Forbidden, "a portal of %s asks through its own district's node", caller.Region))
	case in.Purpose != "" || in.User != "" || in.Reference != "" || in.Authorization != "":
		return api.Classification{}, s.refuse(&entry, fault.New(fault.BadRequest, "a subject's own classification takes the subject and the authentication only"))
	}
	if e := checkAuthentication(in.Authentication); e != nil {
		return api.Classification{}, s.refuse(&entry, e)
	}
	if _, e := s.parse(in.Subject); e != nil {
		return api.Classification{}, s.refuse(&entry, e)
	}
	if !s.portals.Allow(caller.String()) {
		return api.Classification{}, s.refuse(&entry, fault.New(fault.TooManyRequests, "this portal asks for classifications more than once a second"))
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout+2*time.Second)
	defer cancel()
	var got api.Classification
	if err := s.callUp(ctx, exchange.Meta{Authentication: in.Authentication}, forwardRequest{Requester: caller, Classification: &in}, &got); err != nil {
		return api.Classification{}, s.refuse(&entry, err)
	}
	if exchange.ValidID("lk", got.ClassificationID) {
		entry.LookupID = got.ClassificationID
	}
	if ps, err := credit.ParsePseudonym(got.SubjectPseudonym); err == nil {
		entry.Subject = ps.String()
	}
	entry.Decision = storage.DecisionAllowed
	for _, pt := range got.Points {
		entry.Records = append(entry.Records, pt.Record)
	}
	if err := s.cfg.Audit.Record(entry); err != nil {
		return api.Classification{}, err
	}
	s.checks.WithLabelValues("allowed").Inc()
	return got, nil
}

// classify runs a classification at a coordinator node: for one of its
// coordinators (via nil), or for a portal of the district via.
func (s *Service) classify(ctx context.Context, caller certs.Identity, via *certs.Identity, in api.ClassificationRequest) (api.Classification, error) {
	entry := audit.By(caller, "classification")
	if via != nil {
		entry.Caller, entry.Requester = via.String(), caller.String()
	}
	entry.LookupID = exchange.NewID("lk")
	cat := s.cfg.Catalog()
	entry.Purpose, entry.User, entry.Reference, entry.Authorization = lookup.StatedFields(cat, in.Purpose, in.User, in.Reference, in.Authorization)
	entry.Authentication = audit.Bound(in.Authentication, MaxAuthentication)
	key := s.ring()
	switch {
	case !s.cfg.Self.Role.IsCoordinatorNode() || key == nil:
		return api.Classification{}, s.refuse(&entry, fault.New(fault.Forbidden, "classifications are made at coordinator nodes (province, city); this is a %s node", s.cfg.Self.Role))
	case via == nil && !certs.InRegion(caller.Region, s.cfg.Self.Region):
		return api.Classification{}, s.refuse(&entry, fault.New(fault.Forbidden, "a coordinator of %s asks through its own node", caller.Region))
	case cat == nil:
		return api.Classification{}, fault.New(fault.Unavailable, "this node has not received the federation's catalog yet")
	}
	var pl plan
	var e *fault.Error
	if via != nil {
		pl, e = planOwn(cat, caller)
		if e == nil {
			entry.Purpose = pl.purpose.Code
			e = checkAuthentication(in.Authentication)
		}
	} else {
		pl, e = planForPurpose(cat, caller, in.Purpose, in.User)
		if e == nil {
			e = pl.checkRow(in.Reference, in.Authorization)
		}
	}
	if e != nil {
		return api.Classification{}, s.refuse(&entry, e)
	}
	sub, e := s.parse(in.Subject)
	if e != nil {
		return api.Classification{}, s.refuse(&entry, e)
	}
	p := key.Pseudonym(sub.ID)
	entry.Subject = p.String()
	if s.cfg.Quotas != nil && !pl.own {
		if err := s.cfg.Quotas.Admit(institutionOf(caller), pl.purpose.Code, 1); err != nil {
			return api.Classification{}, s.refuse(&entry, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	live, entries, _, err := keyring.Read(ctx, s.cfg.Index.Lookup, key, sub.ID, false)
	if err != nil {
		return api.Classification{}, indexFault(err)
	}
	row := &pending{query: subjectQuery{Subject: sub.ID, Pseudonym: p, Reference: in.Reference, Authorization: in.Authorization, CheckID: entry.LookupID,
		Pseudonyms: live}}
	var held []consensusEntry
	for _, ie := range entries {
		if ie.Holds() {
			held = append(held, ie)
		}
	}
	row.routeAll(held, s.cfg.Index, s.cfg.Self.Federation)
	s.ask(ctx, caller, pl, in.User, []*pending{row}, in.Authentication)
	today := credit.TodayAt(s.cfg.Now())
	out := api.Classification{ClassificationID: entry.LookupID, SubjectPseudonym: p.String(), Note: ClassificationNote, Complete: true, Points: []api.ClassificationPoint{}, Districts: []api.DistrictResult{}}
	var recs []credit.Record
	for _, pt := range row.parts {
		d := api.DistrictResult{District: pt.region, Name: pt.name, Status: string(pt.status), Error: pt.err, Records: []api.Record{}}
		if pt.status != exchange.StatusOK {
			out.Complete = false
		} else {
			recs = append(recs, pt.records...)
			for _, r := range pt.records {
				d.Records = append(d.Records, api.RecordOf(r, cat))
			}
		}
		out.Districts = append(out.Districts, d)
	}
	c := cat.Classify(recs, pl.purpose, today)
	out.Level, out.LevelName, out.Total = c.Level, c.LevelName, c.Total
	byID := map[string]credit.Record{}
	for _, r := range recs {
		byID[r.Department+"\x00"+r.ID] = r
	}
	for _, pnt := range c.Points {
		ref := pnt.Record
		if r, ok := byID[pnt.Department+"\x00"+pnt.Record]; ok {
			ref = credit.RefOf(r.District, r).String()
		}
		out.Points = append(out.Points, api.ClassificationPoint{Points: pnt.Points, Record: ref, Rule: pnt.Rule, LegalBasis: pnt.LegalBasis,
			Decayed: pnt.Decayed, Capped: pnt.Capped})
	}
	entry.Decision, entry.Records = storage.DecisionAllowed, row.refs()
	if err := s.cfg.Audit.Record(entry, row.notes(entry)...); err != nil {
		return api.Classification{}, err
	}
	if s.cfg.Quotas != nil && !pl.own {
		s.cfg.Quotas.Observe(institutionOf(caller), pl.purpose.Code, entry.Subject, in.Reference, 1)
	}
	s.checks.WithLabelValues("allowed").Inc()
	return out, nil
}
