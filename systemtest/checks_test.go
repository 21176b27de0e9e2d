package systemtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// cityOf is the name of the city node above a district.
func cityOf(t *testing.T, f *localfed.Federation, district string) string {
	t.Helper()
	region := regionOf(f, district)
	for _, n := range f.Layout.Nodes {
		if n.Role == certs.City && certs.InRegion(region, n.Region) {
			return n.Name
		}
	}
	t.Fatalf("no city above %s", district)
	return ""
}

func measureCodes(ans *api.CheckAnswer) []string {
	var out []string
	for _, m := range ans.Measures {
		out = append(out, m.Code)
	}
	return out
}

func listCodes(ans *api.CheckAnswer) []string {
	var out []string
	for _, l := range ans.Lists {
		out = append(out, l.List)
	}
	return out
}

// checkUntil repeats a check while the node answers 503 (no leader known
// yet on a loaded machine) and returns the last answer.
func checkUntil(t *testing.T, c *api.Client, req api.CheckRequest) (*api.CheckAnswer, error) {
	t.Helper()
	var ans *api.CheckAnswer
	var err error
	wait.Until(t, 20*time.Second, "a check that is not 503", func() bool {
		ans, err = c.Check(ctxT(t, 30*time.Second), req)
		return api.Code(err) != api.CodeUnavailable
	})
	return ans, err
}

// auditOps returns the operations of node name's audit entries about the
// subject with the check id (or every id when id is empty).
func auditOf(t *testing.T, f *localfed.Federation, name, subject, id string) []storage.AuditEntry {
	t.Helper()
	entries, err := f.Node(name).Store().Audit().BySubject(pseudonymOf(t, f, subject).String())
	if err != nil {
		t.Fatal(err)
	}
	var out []storage.AuditEntry
	for _, e := range entries {
		if id == "" || e.LookupID == id {
			out = append(out, e)
		}
	}
	return out
}

// TestCheckBeforeADecision: a subject on two serious-dishonesty lists in
// districts B and C gets the civil-service restriction with its legal
// basis from a city coordinator (both lists: art. 26 covers every list),
// and the licensing restrictions when a department of district A checks
// through its district; a red-list volunteer gets the green channel and
// the volunteer's priority; a restriction is a 200; every node the check
// touched audits it under the same id and the asking institution; the
// subject's access log shows it once.
func TestCheckBeforeADecision(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 4}, node.Options{})
	ds := f.Districts()
	debtor := credit.SyntheticPerson(9101, credit.NewDate(1979, 4, 5))
	volunteer := credit.SyntheticPerson(9102, credit.NewDate(1996, 7, 8))
	clean := credit.SyntheticPerson(9103, credit.NewDate(1988, 1, 2))
	submit(t, f, ds[1], record("CK-1", debtor, "DISHONEST-JUDGMENT-DEBTOR", "拒不履行生效判决"))
	submit(t, f, ds[2], record("CK-2", debtor, "FOOD-SAFETY-SERIOUS", "严重食品安全违法"))
	submit(t, f, ds[0], record("CK-3", volunteer, "OUTSTANDING-YOUTH-VOLUNTEER", "优秀青年志愿者"))
	submit(t, f, ds[3], record("CK-4", clean, "VOLUNTEER-SERVICE-RECORD", "志愿服务"))
	waitIndexed(t, f, debtor, 2)
	waitIndexed(t, f, volunteer, 1)
	waitIndexed(t, f, clean, 1)

	// A city coordinator, civil-service recruitment.
	city := cityOf(t, f, ds[0])
	cityCoord := clientOf(t, f, city, f.Layout.Coordinators[city])
	// A strong read: the city's replica may not yet have applied what the
	// province's shows.
	recruit := api.CheckRequest{Subject: debtor, Scenario: "CIVIL-SERVICE-RECRUITMENT", User: "人事处 赵六", Reference: "录〔2026〕1号", Authorization: "AUTH-1",
		Consistency: api.ConsistencyStrong}
	ans, err := checkUntil(t, cityCoord, recruit)
	if err != nil {
		t.Fatalf("a restricted subject's check is an answer, not an error: %v", err)
	}
	if got := listCodes(ans); !slices.Equal(got, []string{"DISHONEST-JUDGMENT-DEBTORS", "MARKET-SERIOUS-DISHONESTY"}) {
		t.Fatalf("lists %v", got)
	}
	for _, l := range ans.Lists {
		if len(l.Records) != 1 || l.Kind != "serious_dishonesty" || l.LegalBasis == "" {
			t.Errorf("list %+v", l)
		}
	}
	var restriction *api.CheckMeasure
	for i, m := range ans.Measures {
		if m.Code == "NO-RECRUITMENT-DISHONESTY" {
			restriction = &ans.Measures[i]
		}
	}
	if restriction == nil || restriction.Kind != "restriction" || !strings.Contains(restriction.LegalBasis, "公务员法") || !strings.Contains(restriction.LegalBasis, "第二十六条") ||
		!slices.Equal(restriction.Lists, []string{"DISHONEST-JUDGMENT-DEBTORS", "MARKET-SERIOUS-DISHONESTY"}) {
		t.Fatalf("the recruitment restriction: %+v (measures %v)", restriction, measureCodes(ans))
	}
	if ans.ThreeYearsClean || !ans.Complete || ans.Purpose != "CIVIL-SERVICE-RECRUITMENT" || len(ans.Districts) != 2 {
		t.Fatalf("check answer %+v", ans)
	}
	for _, d := range ans.Districts {
		if d.Status != api.DistrictOK || len(d.Records) != 1 || d.Records[0].Ref == "" {
			t.Errorf("district %+v", d)
		}
	}
	// Audited under the same id at the city and at both districts.
	if got := auditOf(t, f, city, debtor, ans.CheckID); len(got) != 1 || got[0].Operation != "check" || got[0].Decision != storage.DecisionAllowed || len(got[0].Records) != 2 {
		t.Fatalf("the city's entries of the check: %+v", got)
	}
	for _, d := range ds[1:3] {
		got := auditOf(t, f, d, debtor, ans.CheckID)
		if len(got) != 1 || got[0].Operation != "check.answer" || got[0].Purpose != "CIVIL-SERVICE-RECRUITMENT" || got[0].Reference != recruit.Reference {
			t.Fatalf("%s's entries of the check: %+v", d, got)
		}
	}

	// A department of district A checks through its district, under
	// licensing (a purpose departments may use).
	licensing := api.CheckRequest{Subject: debtor, Scenario: "ADMIN-LICENSING", User: "审批科 钱七", Reference: "许〔2026〕2号", Consistency: api.ConsistencyStrong}
	dept := department(t, f, ds[0])
	dans, err := checkUntil(t, dept, licensing)
	if err != nil {
		t.Fatal(err)
	}
	if got := measureCodes(dans); !slices.Equal(got, []string{"STRICT-REVIEW-DEBTOR", "STRICT-REVIEW-MARKET"}) {
		t.Fatalf("a department's licensing check: measures %v", got)
	}
	forwarded := auditOf(t, f, ds[0], debtor, dans.CheckID)
	if len(forwarded) != 1 || forwarded[0].Operation != "check.forward" || forwarded[0].Role != "department" || forwarded[0].Decision != storage.DecisionAllowed {
		t.Fatalf("the forwarding district's entries: %+v", forwarded)
	}
	inst := forwarded[0].Institution
	if inst == "" {
		t.Fatal("the department's entry names no institution")
	}
	ran := auditOf(t, f, city, debtor, dans.CheckID)
	if len(ran) != 1 || ran[0].Institution != inst || ran[0].Role != "department" || !strings.Contains(ran[0].Caller, regionOf(f, ds[0])) {
		t.Fatalf("the city's entry of the department's check: %+v", ran)
	}
	for _, d := range ds[1:3] {
		got := auditOf(t, f, d, debtor, dans.CheckID)
		if len(got) != 1 || got[0].Institution != inst || got[0].Role != "department" || !strings.Contains(got[0].Requester, regionOf(f, ds[0])) {
			t.Fatalf("%s's entry of the department's check (it names the department, of its district): %+v", d, got)
		}
	}
	// Civil-service recruitment's purpose admits coordinators only.
	if _, err := dept.Check(ctxT(t, 30*time.Second), recruit); api.Code(err) != api.CodeForbidden {
		t.Fatalf("a department's civil-service check: %v, want forbidden", err)
	}
	// A purpose other than the scenario's is refused, and audited.
	bad := licensing
	bad.Purpose = "LAW-ENFORCEMENT"
	if _, err := cityCoord.Check(ctxT(t, 30*time.Second), bad); api.Code(err) != api.CodeBadRequest {
		t.Fatalf("a check under another purpose than its scenario's: %v, want bad_request", err)
	}
	// A department cannot go round its district to the city.
	if _, err := clientOf(t, f, city, f.Layout.Departments[ds[0]]).Check(ctxT(t, 30*time.Second), licensing); api.Code(err) != api.CodeForbidden {
		t.Fatalf("a department at the city node: %v, want forbidden", err)
	}

	// The red-list volunteer: the green channel and priority.
	vans, err := checkUntil(t, cityCoord, api.CheckRequest{Subject: volunteer, Scenario: "ADMIN-LICENSING", User: "u", Reference: "许〔2026〕3号", Consistency: api.ConsistencyStrong})
	if err != nil {
		t.Fatal(err)
	}
	if got := measureCodes(vans); !slices.Equal(got, []string{"GREEN-CHANNEL", "PRIORITY-VOLUNTEER"}) || !vans.ThreeYearsClean {
		t.Fatalf("the volunteer's measures %v, clean %v", got, vans.ThreeYearsClean)
	}
	// A subject with a positive record only: no district need be asked,
	// and the green channel follows.
	cans, err := checkUntil(t, cityCoord, api.CheckRequest{Subject: clean, Scenario: "ADMIN-LICENSING", User: "u", Reference: "许〔2026〕4号", Consistency: api.ConsistencyStrong})
	if err != nil {
		t.Fatal(err)
	}
	if got := measureCodes(cans); !slices.Equal(got, []string{"GREEN-CHANNEL"}) || len(cans.Districts) != 0 {
		t.Fatalf("a clean subject: measures %v, districts %+v", got, cans.Districts)
	}

	// The subject's access log shows each allowed check once.
	log, err := portal(t, f, ds[3]).AccessLog(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: debtor, Authentication: "实名 F-1"})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for _, e := range log.Entries {
		if e.Operation == "check" {
			ids[e.LookupID]++
		}
	}
	if ids[ans.CheckID] != 1 || ids[dans.CheckID] != 1 || len(ids) != 2 {
		t.Fatalf("checks in the access log: %v (entries %+v)", ids, log.Entries)
	}
}

// TestThreeYearsCleanAtTheBoundary: a bad record decided on day D keeps
// the green channel away until three years after D, and gives it back on
// that day.
func TestThreeYearsCleanAtTheBoundary(t *testing.T) {
	today := credit.TodayAt(time.Now())
	clock := clockAt(today)
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{Now: clock.Now})
	ds := f.Districts()
	subject := credit.SyntheticPerson(9201, credit.NewDate(1970, 3, 4))
	decided := today - 10
	rec := record("TB-1", subject, "TAX-SERIOUS", "重大税收违法")
	rec.DecidedOn, rec.OccurredOn = decided.String(), (decided - 5).String()
	submit(t, f, ds[0], rec)
	waitIndexed(t, f, subject, 1)
	coord := coordinator(t, f)
	req := api.CheckRequest{Subject: subject, Scenario: "ADMIN-LICENSING", User: "u", Reference: "R-1"}
	boundary := decided.AddMonths(36)
	for _, c := range []struct {
		day   credit.Date
		clean bool
	}{{today, false}, {boundary - 1, false}, {boundary, true}} {
		clock.setDay(c.day)
		ans, err := checkUntil(t, coord, req)
		if err != nil {
			t.Fatal(err)
		}
		green := slices.Contains(measureCodes(ans), "GREEN-CHANNEL")
		if ans.ThreeYearsClean != c.clean || green != c.clean {
			t.Errorf("on %s (decided %s): three_years_clean %v, green channel %v; want %v", c.day, decided, ans.ThreeYearsClean, green, c.clean)
		}
	}
}

// TestCheckReportsWhatItCouldNotAsk: with a listed subject's district
// down, the check still answers (200), incomplete, names what the index
// says the district holds, and grants no green channel on what it could
// not see.
func TestCheckReportsWhatItCouldNotAsk(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	ds := f.Districts()
	subject := credit.SyntheticPerson(9301, credit.NewDate(1980, 5, 6))
	submit(t, f, ds[1], record("CU-1", subject, "DISHONEST-JUDGMENT-DEBTOR", "x"))
	waitIndexed(t, f, subject, 1)
	if err := f.StopNode(ctxT(t, 30*time.Second), ds[1]); err != nil {
		t.Fatal(err)
	}
	ans, err := checkUntil(t, coordinator(t, f), api.CheckRequest{Subject: subject, Scenario: "ADMIN-LICENSING", User: "u", Reference: "R"})
	if err != nil {
		t.Fatal(err)
	}
	if ans.Complete || ans.ThreeYearsClean || len(ans.Unconfirmed) == 0 || !strings.Contains(strings.Join(ans.Unconfirmed, " "), "serious-dishonesty") ||
		len(ans.Districts) != 1 || ans.Districts[0].Status == api.DistrictOK {
		t.Fatalf("a check with its district down: %+v", ans)
	}
	if slices.Contains(measureCodes(ans), "GREEN-CHANNEL") {
		t.Fatal("the green channel granted on what could not be seen")
	}
}

var _ = fmt.Sprint

// TestClassificationPointsNameTheirRecordAndRule: a subject with a debtor
// record in one district (-30) and a volunteer record in another (+10)
// totals -20, level C; every point names its record's ref, its rule and
// the rule's legal basis, the answer says it is informational, and the
// points sum to the total. Through a portal at the subject's district the
// same classification comes back (the subject's own, forwarded to the
// city), audited at every hop; a portal at the city node, or without its
// authentication, is refused.
func TestClassificationPointsNameTheirRecordAndRule(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	ds := f.Districts()
	subject := credit.SyntheticPerson(9401, credit.NewDate(1977, 8, 9))
	submit(t, f, ds[0], record("CL-1", subject, "DISHONEST-JUDGMENT-DEBTOR", "x"))
	submit(t, f, ds[1], record("CL-2", subject, "OUTSTANDING-YOUTH-VOLUNTEER", "y"))
	waitIndexed(t, f, subject, 2)
	check := func(c *api.Classification) {
		t.Helper()
		sum := 0
		rules := map[string]string{}
		for _, p := range c.Points {
			sum += p.Points
			if p.LegalBasis == "" || !strings.Contains(p.Record, "/") {
				t.Errorf("point %+v", p)
			}
			rules[p.Rule] = p.Record
		}
		if c.Level != "C" || c.Total != -20 || sum != c.Total || !c.Complete || !strings.Contains(c.Note, "no measure follows") ||
			rules["P-DISHONEST-DEBTOR"] != regionOf(f, ds[0])+"/"+localfed.Department+"/CL-1" || rules["P-YOUTH-VOLUNTEER"] != regionOf(f, ds[1])+"/"+localfed.Department+"/CL-2" {
			t.Fatalf("classification %+v", c)
		}
	}
	var got *api.Classification
	var err error
	coord := coordinator(t, f)
	wait.Until(t, 20*time.Second, "a classification that is not 503", func() bool {
		got, err = coord.Classify(ctxT(t, 30*time.Second), api.ClassificationRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: "R-C"})
		return api.Code(err) != api.CodeUnavailable
	})
	if err != nil {
		t.Fatal(err)
	}
	check(got)

	p := portal(t, f, ds[0])
	own, err := p.Classify(ctxT(t, 30*time.Second), api.ClassificationRequest{Subject: subject, Authentication: "实名 F-9"})
	if err != nil {
		t.Fatal(err)
	}
	check(own)
	for name, e := range map[string]string{ds[0]: "classification.forward", cityOf(t, f, ds[0]): "classification", ds[1]: "classification.answer"} {
		var found int
		for _, en := range auditOf(t, f, name, subject, own.ClassificationID) {
			if en.Operation == e && en.Decision == storage.DecisionAllowed && en.Role == "portal" && en.Authentication != "" {
				found++
			}
		}
		if found != 1 {
			t.Fatalf("%s has %d %s entries of the portal's classification: %+v", name, found, e, auditOf(t, f, name, subject, own.ClassificationID))
		}
	}
	if _, err := clientOf(t, f, cityOf(t, f, ds[0]), f.Layout.Portals[ds[0]]).Classify(ctxT(t, 30*time.Second), api.ClassificationRequest{Subject: subject, Authentication: "a"}); api.Code(err) != api.CodeForbidden {
		t.Fatalf("a portal at the city node: %v", err)
	}
	if _, err := p.Classify(ctxT(t, 30*time.Second), api.ClassificationRequest{Subject: subject}); api.Code(err) != api.CodeBadRequest {
		t.Fatalf("a portal without authentication: %v", err)
	}
	if _, err := department(t, f, ds[0]).Classify(ctxT(t, 30*time.Second), api.ClassificationRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: "R"}); api.Code(err) != api.CodeForbidden {
		t.Fatalf("a department's classification: %v", err)
	}
}
