package checks

import (
	"context"
	"credfed/audit"
	"slices"

	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/keyring"
	"credfed/lookup"
	"credfed/storage"
)

// answer is a district's side of a check: it checks the request again
// (the catalog is replicated, so both ends decide alike), registers every
// subject in its audit log, and returns for each what the scenario's
// purpose may see today.
//
// The requester may be a coordinator of the asking node or a department of
// a district below it (whose check its district forwarded): the asking
// node vouches for both, as for a lookup. Each entry names the subject by
// the pseudonym this district holds for it when it holds records of it,
// never by the one sent (see lookup's answer).
func (s *Service) answer(ctx context.Context, req *exchange.Request) (any, error) {
	var in districtRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if len(in.Subjects) == 0 || len(in.Subjects) > MaxSubjectsPerCall {
		return nil, exchange.Errorf(exchange.CodeBadRequest, "a check names 1 to %d subjects", MaxSubjectsPerCall)
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "catalog not replicated yet")
	}
	m := req.Meta
	op := "check.answer"
	if in.Classify {
		op = "classification.answer"
	}
	base := storage.AuditEntry{Caller: req.Caller.String(), Role: string(in.Requester.Role), Institution: in.Requester.Institution,
		Operation: op, District: s.cfg.Self.Region, Requester: in.Requester.String()}
	base.Purpose, base.User, _, _ = lookup.StatedFields(cat, m.Purpose, m.User, "", "")
	now := s.cfg.Now()
	today := credit.TodayAt(now)
	entries := make([]storage.AuditEntry, len(in.Subjects))
	out := districtReply{Answers: make([]subjectAnswer, len(in.Subjects))}
	for i, q := range in.Subjects {
		e := base
		if exchange.ValidID("lk", q.CheckID) {
			e.LookupID = q.CheckID
		}
		_, _, e.Reference, e.Authorization = lookup.StatedFields(cat, "", "", q.Reference, q.Authorization)
		if !q.Pseudonym.IsZero() {
			e.Subject = q.Pseudonym.String()
		}
		entries[i] = e
	}
	record := func() (any, error) {
		if err := s.cfg.Audit.Record(entries[0], entries[1:]...); err != nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "audit log unavailable")
		}
		for _, e := range entries {
			s.answered.WithLabelValues(e.Decision).Inc()
		}
		return out, nil
	}
	// The request as a whole: who asks, under which scenario.
	var common *fault.Error
	switch {
	case in.Requester.Federation != s.cfg.Self.Federation || !certs.InRegion(in.Requester.Region, req.Caller.Region):
		common = fault.New(fault.Forbidden, "the requester is not a user of the asking node")
	case in.Classify && in.Requester.Role == certs.Portal:
		// A subject's own classification: the city vouches for the portal
		// of a district below it, which authenticated the person.
		var pl plan
		pl, common = planOwn(cat, in.Requester)
		switch {
		case common != nil:
		case m.Purpose != pl.purpose.Code:
			common = fault.Field(fault.BadRequest, "purpose", "a subject's own classification runs under purpose %s", pl.purpose.Code)
		case len(in.Subjects) != 1:
			common = fault.New(fault.BadRequest, "a subject's own classification names one subject")
		default:
			common = checkAuthentication(m.Authentication)
		}
		if common == nil {
			entries[0].Authentication = audit.Bound(m.Authentication, MaxAuthentication)
			return s.answerSubjects(ctx, pl, in.Subjects, entries, &out, today, record)
		}
	case in.Classify:
		var pl plan
		if pl, common = planForPurpose(cat, in.Requester, m.Purpose, m.User); common == nil {
			return s.answerSubjects(ctx, pl, in.Subjects, entries, &out, today, record)
		}
	default:
		var pl plan
		pl, common = planFor(cat, in.Requester, in.Scenario, m.Purpose, m.User)
		if common == nil && m.Purpose != pl.scenario.Purpose {
			common = fault.Field(fault.BadRequest, "purpose", "a check in scenario %s runs under purpose %s", pl.scenario.Code, pl.scenario.Purpose)
		}
		if common == nil {
			return s.answerSubjects(ctx, pl, in.Subjects, entries, &out, today, record)
		}
	}
	code := wireCode(common)
	for i := range entries {
		entries[i].Decision, entries[i].Reason = storage.DecisionDenied, string(code)
	}
	if _, err := record(); err != nil {
		return nil, err
	}
	return nil, exchange.Errorf(code, "%s", common.Message)
}

// answerSubjects answers each subject of an admitted request.
func (s *Service) answerSubjects(ctx context.Context, pl plan, subjects []subjectQuery, entries []storage.AuditEntry, out *districtReply, today credit.Date, record func() (any, error)) (any, error) {
	opt := s.cfg.Identifiers
	opt.Today = today
	recsOf := make([][]credit.Record, len(subjects))
	var holding []string
	var holdingAt []int
	for i, q := range subjects {
		if e := pl.checkRow(q.Reference, q.Authorization); e != nil {
			refuseRow(&entries[i], &out.Answers[i], e)
			continue
		}
		sub, err := credit.ParseSubject(q.Subject, opt)
		if err != nil {
			refuseRow(&entries[i], &out.Answers[i], fault.Field(fault.BadRequest, "subject", "invalid subject identifier"))
			continue
		}
		recs, err := s.cfg.Records.RecordsBySubject(sub.ID)
		if err != nil {
			return nil, exchange.Errorf(exchange.CodeInternal, "records unavailable")
		}
		recsOf[i] = recs
		if len(recs) > 0 {
			holding = append(holding, sub.ID)
			holdingAt = append(holdingAt, i)
		}
	}
	if len(holding) > 0 {
		own, err := s.cfg.Resolve(ctx, holding)
		if err != nil || len(own) != len(holding) {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "the check cannot be registered now (no pseudonym for the audit); nothing was answered")
		}
		for j, i := range holdingAt {
			entries[i].Subject = own[j].String()
			if subjects[i].Pseudonym != own[j] && !s.ownAtAnotherVersion(ctx, subjects[i], holding[j]) {
				refuseRow(&entries[i], &out.Answers[i], fault.New(fault.BadRequest, "the pseudonym sent is not the subject's"))
				recsOf[i] = nil
			}
		}
	}
	for i := range subjects {
		if entries[i].Decision == storage.DecisionDenied {
			continue
		}
		shown := []credit.Record{}
		for _, r := range recsOf[i] {
			it, ok := pl.cat.Item(r.CatalogItem)
			if ok && credit.IsDisplayable(r, it, today, pl.purpose) {
				shown = append(shown, r)
			}
		}
		if len(shown) > MaxRecordsPerSubject {
			slices.SortFunc(shown, func(a, b credit.Record) int { return int(b.DecidedOn) - int(a.DecidedOn) })
			shown = shown[:MaxRecordsPerSubject]
		}
		for _, r := range shown {
			entries[i].Records = append(entries[i].Records, r.Department+"/"+r.ID)
		}
		out.Answers[i].Records = shown
		entries[i].Decision = storage.DecisionAllowed
	}
	return record()
}

func refuseRow(e *storage.AuditEntry, a *subjectAnswer, f *fault.Error) {
	code := wireCode(f)
	e.Decision, e.Reason = storage.DecisionDenied, string(code)
	a.Code, a.Error = code, f.Message
}

// wireCode maps a refusal onto the exchange's codes.
func wireCode(e *fault.Error) exchange.Code {
	switch e.Kind {
	case fault.BadRequest, fault.InvalidIdentifier:
		return exchange.CodeBadRequest
	case fault.Forbidden, fault.Unauthenticated:
		return exchange.CodeForbidden
	case fault.TooManyRequests:
		return exchange.CodeTooManyRequests
	}
	return exchange.CodeUnavailable
}

// ownAtAnotherVersion reports whether a subject's pseudonyms sent are the
// district's own at another key version than the one it resolved (a key
// rotation: the coordinator or this district is a moment behind the
// other).
func (s *Service) ownAtAnotherVersion(ctx context.Context, q subjectQuery, subject string) bool {
	if s.cfg.Own == nil || len(q.Pseudonyms) == 0 {
		return false
	}
	own, err := s.cfg.Own(ctx, subject)
	return err == nil && keyring.Matches(keyring.All(q.Pseudonym, q.Pseudonyms), own)
}
