package systemtest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// datedRecord is a record decided on a given day.
func datedRecord(id, subject, item string, decided credit.Date) api.RecordInput {
	return api.RecordInput{ID: id, Subject: subject, CatalogItem: item, DecisionNumber: "罚〔2026〕" + id,
		OccurredOn: (decided - 5).String(), DecidedOn: decided.String(), Summary: "处罚事由"}
}

// refOf finds the ref of record id in a lookup answer.
func lookupRecord(t *testing.T, ans *api.LookupAnswer, id string) (api.Record, bool) {
	t.Helper()
	for _, d := range ans.Districts {
		for _, r := range d.Records {
			if r.ID == id {
				return r, true
			}
		}
	}
	return api.Record{}, false
}

// TestObjectionFiledAnywhereResolvedByTheCollector: an objection filed at
// district A's portal about a record of district B reaches B; the record is
// disputed in lookups and in the index meanwhile; the deadline is counted in
// working days over the National Day holiday and its make-up Saturday;
// another department of B cannot resolve it; the collector corrects it and
// learns who looked while it was disputed.
func TestObjectionFiledAnywhereResolvedByTheCollector(t *testing.T) {
	filed := credit.NewDate(2026, 9, 30) // a Wednesday, before the National Day holiday
	clock := clockAt(filed)
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{Now: clock.Now})
	a, b := f.Districts()[0], f.Districts()[1]
	subject := credit.SyntheticPerson(901, credit.NewDate(1982, 4, 5))
	submit(t, f, b, datedRecord("OBJ-1", subject, "FOOD-DRUG-PENALTY", filed-10))
	waitIndexed(t, f, subject, 1)

	coord := coordinator(t, f)
	licensing := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "王五", Reference: "许可〔2026〕3号"}
	ans, err := lookupUntil(t, coord, licensing)
	if err != nil {
		t.Fatal(err)
	}
	rec, ok := lookupRecord(t, ans, "OBJ-1")
	if !ok || rec.Ref == "" || rec.Status != "active" {
		t.Fatalf("lookup before the objection: %+v", ans)
	}

	pa := portal(t, f, a)
	auth := "实名认证 FACE-901"
	req := api.CaseRequest{Subject: subject, Record: rec.Ref, Reason: "处罚决定已被撤销", Evidence: []string{"行政复议决定书 2026-123"}, Authentication: auth}
	// Naming a record of another subject or a district that holds nothing
	// of the subject: not found, and nothing changes.
	other := credit.SyntheticPerson(902, credit.NewDate(1982, 4, 5))
	if _, err := pa.File(ctxT(t, 30*time.Second), "objections", api.CaseRequest{Subject: other, Record: rec.Ref, Reason: "x", Authentication: auth}); api.Code(err) != api.CodeNotFound {
		t.Errorf("an objection about another subject's record: %v, want not_found", err)
	}
	ob, err := pa.File(ctxT(t, 30*time.Second), "objections", req)
	if err != nil {
		t.Fatal(err)
	}
	// 15 working days after Wed 30 Sep 2026: 1–7 Oct are the holiday, Sat
	// 10 Oct is a make-up working day: 8, 9, 10, 12–16, 19–23, 26, 27 Oct.
	if ob.State != "open" || ob.Deadline != "2026-10-27" || ob.Record != rec.Ref {
		t.Fatalf("objection %+v, want open with deadline 2026-10-27", ob)
	}
	if _, err := pa.File(ctxT(t, 30*time.Second), "objections", req); api.Code(err) != api.CodeConflict {
		t.Errorf("a second objection of the same record: %v, want conflict", err)
	}

	// Disputed in lookups, and flagged in the index.
	ans, err = lookupUntil(t, coord, licensing)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := lookupRecord(t, ans, "OBJ-1"); r.Status != "disputed" {
		t.Errorf("lookup during the objection shows %q, want disputed", r.Status)
	}
	wait.Until(t, 30*time.Second, "the index to flag the dispute", func() bool {
		es, err := entriesAt(t, f, f.Province(), subject)
		return err == nil && len(es) == 1 && es[0].Summary.HasDisputed
	})

	// An investigation looks while the record is disputed: the collector
	// is told to notify it, the subject does not learn of it yet.
	city := "hangzhou"
	investigator := clientOf(t, f, city, f.Layout.Coordinators[city])
	if _, err := lookupUntil(t, investigator, api.LookupRequest{Subject: subject, Purpose: "LAW-ENFORCEMENT", User: "侦查员", Reference: "案〔2026〕5号"}); err != nil {
		t.Fatal(err)
	}

	// The collector sees it; another department of B does not decide it.
	dept := department(t, f, b)
	open, err := dept.Cases(ctxT(t, 30*time.Second), "objections", "open")
	if err != nil || len(open.Cases) != 1 || open.Cases[0].ID != ob.ID {
		t.Fatalf("open objections %+v, %v", open, err)
	}
	tax := clientOf(t, f, b, issueUser(t, f, "department", regionOf(f, b), "tax-bureau"))
	if _, err := tax.Decide(ctxT(t, 30*time.Second), "objections", ob.ID, api.CaseDecision{Outcome: "revoked", Reason: "x"}); api.Code(err) != api.CodeForbidden {
		t.Errorf("another department's resolution: %v, want forbidden", err)
	}
	if _, err := department(t, f, a).Decide(ctxT(t, 30*time.Second), "objections", ob.ID, api.CaseDecision{Outcome: "revoked", Reason: "x"}); err == nil {
		t.Error("a department of another district resolved the objection")
	}

	// Past the deadline it is overdue.
	clock.setDay(credit.NewDate(2026, 10, 28))
	overdue, err := dept.Cases(ctxT(t, 30*time.Second), "objections", "overdue")
	if err != nil || len(overdue.Cases) != 1 || !overdue.Cases[0].Overdue {
		t.Fatalf("overdue objections %+v, %v", overdue, err)
	}

	summary := "处罚金额更正为五百元"
	res, err := dept.Decide(ctxT(t, 30*time.Second), "objections", ob.ID,
		api.CaseDecision{Outcome: "corrected", Reason: "复核后更正", Correction: &api.Correction{Summary: &summary}})
	if err != nil {
		t.Fatal(err)
	}
	if res.State != "decided" || res.Outcome != "corrected" || res.Version != 3 || len(res.Notify) == 0 {
		t.Fatalf("resolution %+v, want decided, corrected, version 3, with the institutions to notify", res)
	}
	if len(res.NotifyConfidential) != 1 || res.NotifyConfidential[0] != regionOf(f, city)+"/"+localfed.CoordinatorInstitution {
		t.Errorf("confidential notices %v, want the investigating city's coordinator", res.NotifyConfidential)
	}
	for _, who := range res.Notify {
		if strings.HasPrefix(who, regionOf(f, city)+"/") {
			t.Errorf("the investigation's lookup is among the notices the subject sees: %v", res.Notify)
		}
	}
	if _, err := dept.Decide(ctxT(t, 30*time.Second), "objections", ob.ID, api.CaseDecision{Outcome: "upheld", Reason: "again"}); api.Code(err) != api.CodeConflict {
		t.Errorf("a second resolution: %v, want conflict", err)
	}
	got, err := pa.Case(ctxT(t, 30*time.Second), "objections", ob.ID)
	if err != nil || got.State != "decided" || got.Outcome != "corrected" {
		t.Fatalf("the subject follows the objection: %+v, %v", got, err)
	}
	if len(got.NotifyConfidential) != 0 {
		t.Errorf("the portal sees the confidential notices: %v", got.NotifyConfidential)
	}
	ans, err = lookupUntil(t, coord, licensing)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := lookupRecord(t, ans, "OBJ-1"); r.Status != "active" || r.Summary != summary {
		t.Errorf("after the correction the lookup shows %+v", r)
	}
}

// TestRepairTooEarlyThenApproved: a repair request before the item's
// minimum publicity period is refused naming the day; not-repairable items
// are refused naming the rule; after the period the collector approves it
// and ordinary purposes no longer see the record.
func TestRepairTooEarlyThenApproved(t *testing.T) {
	day := credit.TodayAt(time.Now())
	clock := clockAt(day)
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{Now: clock.Now})
	d := f.Districts()[0]
	subject := credit.SyntheticPerson(903, credit.NewDate(1979, 8, 9))
	submit(t, f, d, datedRecord("REP-1", subject, "FOOD-DRUG-PENALTY", day-10), datedRecord("REP-2", subject, "CIVIL-SERVANT-SANCTION", day-10))
	waitIndexed(t, f, subject, 1)
	ref := func(id string) string { return regionOf(f, d) + "/" + localfed.Department + "/" + id }

	p := portal(t, f, d)
	req := api.CaseRequest{Subject: subject, Record: ref("REP-1"), Grounds: "volunteer_service", Reason: "社区志愿服务 120 小时",
		Evidence: []string{"志愿服务证明 V-1"}, Authentication: "实名认证 FACE-903"}
	_, err := p.File(ctxT(t, 30*time.Second), "repairs", req)
	if api.Code(err) != api.CodeTooEarly {
		t.Fatalf("repair before the minimum publicity period: %v, want too_early", err)
	}
	from := credit.Date(day - 10).AddMonths(3).String()
	var se *api.StatusError
	if !errors.As(err, &se) || !strings.Contains(se.Err.Message, from) {
		t.Errorf("too_early should name the day %s: %v", from, err)
	}
	notRepairable := req
	notRepairable.Record = ref("REP-2")
	if _, err := p.File(ctxT(t, 30*time.Second), "repairs", notRepairable); api.Code(err) != api.CodeForbidden {
		t.Errorf("repair of a non-repairable item: %v, want forbidden", err)
	}

	clock.setDay(credit.Date(day - 10).AddMonths(3))
	rp, err := p.File(ctxT(t, 30*time.Second), "repairs", req)
	if err != nil {
		t.Fatal(err)
	}
	dept := department(t, f, d)
	res, err := dept.Decide(ctxT(t, 30*time.Second), "repairs", rp.ID, api.CaseDecision{Outcome: "approved", Reason: "符合修复条件"})
	if err != nil || res.Outcome != "approved" {
		t.Fatalf("approval %+v, %v", res, err)
	}
	coord := coordinator(t, f)
	ans, err := lookupUntil(t, coord, api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "赵六", Reference: "许可〔2026〕9号"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := lookupRecord(t, ans, "REP-1"); ok {
		t.Errorf("a repaired record is still shown to an ordinary purpose: %+v", ans)
	}
	// An objection to the repaired record does not show it again.
	if _, err := p.File(ctxT(t, 30*time.Second), "objections", api.CaseRequest{Subject: subject, Record: ref("REP-1"),
		Reason: "金额有误", Authentication: "实名认证 FACE-903"}); err != nil {
		t.Fatal(err)
	}
	ans, err = lookupUntil(t, coord, api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "赵六", Reference: "许可〔2026〕10号"})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := lookupRecord(t, ans, "REP-1"); ok {
		t.Errorf("an objection brought a repaired record back to ordinary purposes: %+v", r)
	}
	// The subject still sees it, as repaired.
	_, rep, err := p.Report(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: subject, Authentication: "实名认证 FACE-903"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, dist := range rep.Districts {
		for _, r := range dist.Records {
			if r.ID == "REP-1" {
				found = r.Status == "repaired"
			}
		}
	}
	if !found {
		t.Errorf("the subject's report does not show the repaired record: %+v", rep.Districts)
	}
	// Every record change is in the district's audit log: the submission
	// (ids, not content) and the repair's decision.
	log := f.Node(d).Store().Audit()
	head, _ := log.Head()
	ops := map[string][]string{}
	if err := log.Range(1, head, func(e storage.AuditEntry) error {
		ops[e.Operation] = append(ops[e.Operation], e.Records...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ops["record.submit"], " "); !strings.Contains(got, localfed.Department+"/REP-1") || !strings.Contains(got, localfed.Department+"/REP-2") {
		t.Errorf("record.submit entries name %q", got)
	}
	if got := ops["repair.decide"]; len(got) != 1 || got[0] != localfed.Department+"/REP-1" {
		t.Errorf("repair.decide entries name %q", got)
	}
}
