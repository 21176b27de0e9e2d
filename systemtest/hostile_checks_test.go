package systemtest

// Hostile tests of the checks capability (POST /v1/checks, batches, jobs,
// classifications, the exchange operations "check" and "check.forward",
// and the statistics of checks). Each test is named after an attack and
// asserts the guarantee it attacks: it passes when the defence holds. A
// test whose attack works is kept, skipped with "DEFECT: ..." so that the
// suite stays green until the defect is fixed.

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/checks"
	"credfed/credit"
	"credfed/exchange"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// Wire bodies of the check operations, as the checks package encodes them
// (its types are unexported): an attacker speaking the exchange directly
// writes them by hand too.
type hcSubjectQuery struct {
	Subject       string           `cbor:"1,keyasint"`
	Pseudonym     credit.Pseudonym `cbor:"2,keyasint"`
	Reference     string           `cbor:"3,keyasint,omitempty"`
	Authorization string           `cbor:"4,keyasint,omitempty"`
	CheckID       string           `cbor:"5,keyasint,omitempty"`
}

type hcDistrictRequest struct {
	Requester certs.Identity   `cbor:"1,keyasint"`
	Scenario  string           `cbor:"2,keyasint"`
	Subjects  []hcSubjectQuery `cbor:"3,keyasint"`
	Classify  bool             `cbor:"4,keyasint,omitempty"`
}

type hcSubjectAnswer struct {
	Records []credit.Record `cbor:"1,keyasint"`
	Code    exchange.Code   `cbor:"2,keyasint,omitempty"`
	Error   string          `cbor:"3,keyasint,omitempty"`
}

type hcDistrictReply struct {
	Answers []hcSubjectAnswer `cbor:"1,keyasint"`
}

type hcForwardRequest struct {
	Requester certs.Identity   `cbor:"1,keyasint"`
	Check     api.CheckRequest `cbor:"2,keyasint"`
}

// hcDefect skips a test whose attack works (a defect, described by msg),
// unless CREDFED_RUN_DEFECTS is set: then it runs, and fails while the
// defect is there.
func hcDefect(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CREDFED_RUN_DEFECTS") == "" {
		t.Skip("DEFECT: " + msg)
	}
}

// hcCount counts node name's audit entries that keep returns true for.
func hcCount(t *testing.T, f *localfed.Federation, name string, keep func(storage.AuditEntry) bool) int {
	t.Helper()
	db := f.Node(name).Store()
	head, _ := db.Audit().Head()
	n := 0
	if err := db.Audit().Range(1, head, func(e storage.AuditEntry) error {
		if keep(e) {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// hcDenied keeps the refused entries of one of the operations.
func hcDenied(ops ...string) func(storage.AuditEntry) bool {
	return func(e storage.AuditEntry) bool {
		if e.Decision != storage.DecisionDenied {
			return false
		}
		for _, op := range ops {
			if e.Operation == op {
				return true
			}
		}
		return false
	}
}

// hcJobs counts the batch jobs node name keeps.
func hcJobs(t *testing.T, f *localfed.Federation, name string) int {
	t.Helper()
	n := 0
	if err := f.Node(name).Store().Batches(func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func hcIdentity(t *testing.T, files localfed.ClientFiles) certs.Identity {
	t.Helper()
	id, err := certs.ParseIdentity(files.Identity)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// hcMessage is the message of an API or exchange refusal.
func hcMessage(err error) string {
	var se *api.StatusError
	if errors.As(err, &se) {
		return se.Err.Message + " (field " + se.Err.Field + ")"
	}
	var we *exchange.Error
	if errors.As(err, &we) {
		return we.Message
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// appendConfig appends YAML to node name's configuration file before the
// federation starts.
func appendConfig(t *testing.T, l localfed.Layout, name, yaml string) {
	t.Helper()
	n, ok := l.Node(name)
	if !ok {
		t.Fatalf("no node %s", name)
	}
	cf, err := os.OpenFile(n.ConfigPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	if _, err := fmt.Fprint(cf, yaml); err != nil {
		t.Fatal(err)
	}
}

// queriersAt is GET /v1/audit/queriers at node name, by institution.
func queriersAt(t *testing.T, f *localfed.Federation, name string) map[string]api.Querier {
	t.Helper()
	var q api.Queriers
	if _, err := clientOf(t, f, name, f.Layout.Operator).Do(ctxT(t, 10*time.Second), "GET", "/v1/audit/queriers", "", nil, &q); err != nil {
		t.Fatal(err)
	}
	// By account (region/institution) and by institution name alone.
	out := map[string]api.Querier{}
	for _, i := range q.Institutions {
		out[i.Institution] = i
		out[i.Institution[strings.LastIndexByte(i.Institution, '/')+1:]] = i
	}
	return out
}

func quotaUsed(q api.Querier) int {
	n := 0
	for _, u := range q.Quotas {
		n += u.Used
	}
	return n
}

// TestHostileCheckDepartmentOutsideItsDistrictIsRefusedAndAudited: a
// department's certificate is taken to another district's node, to its
// city's node, to the province's and to the other city's; and a district
// node speaks check.forward itself, claiming a department of another
// district, a coordinator, a requester of another federation. Every one is
// refused, nothing of the subject is answered, and each refusal is in the
// audit log of the node asked.
func TestHostileCheckDepartmentOutsideItsDistrictIsRefusedAndAudited(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	ds := f.Districts()
	a, b := ds[0], ds[1] // kecheng (quzhou), xihu (hangzhou)
	subject := credit.SyntheticPerson(77001, credit.NewDate(1971, 2, 3))
	submit(t, f, a, record("HC-DEP-1", subject, "DISHONEST-JUDGMENT-DEBTOR", "拒不履行"))
	waitIndexed(t, f, subject, 1)
	req := api.CheckRequest{Subject: subject, Scenario: "ADMIN-LICENSING", User: "审批科 甲", Reference: "许〔2026〕HC1号"}
	// The control: through its own district, the check runs.
	if ans, err := checkUntil(t, department(t, f, a), req); err != nil || len(ans.Lists) == 0 {
		t.Fatalf("the department's own check: %+v, %v", ans, err)
	}
	deptA := f.Layout.Departments[a]
	for _, at := range []string{b, cityOf(t, f, a), cityOf(t, f, b), f.Province()} {
		before := hcCount(t, f, at, hcDenied("check", "check.forward"))
		ans, err := clientOf(t, f, at, deptA).Check(ctxT(t, 30*time.Second), req)
		if api.Code(err) != api.CodeForbidden {
			t.Errorf("%s's department at %s: %v, want forbidden", a, at, err)
		}
		if ans != nil && (len(ans.Lists) > 0 || len(ans.Districts) > 0) {
			t.Errorf("%s's department at %s got an answer: %+v", a, at, ans)
		}
		if got := hcCount(t, f, at, hcDenied("check", "check.forward")); got != before+1 {
			t.Errorf("%s's department at %s: %d refusals audited there, want 1", a, at, got-before)
		}
	}

	// District b's own node forges forwards.
	ep := bareEndpoint(t, f, nodeCertificate(t, f, b))
	idA := hcIdentity(t, deptA)
	idB := hcIdentity(t, f.Layout.Departments[b])
	coordB := certs.Identity{Federation: f.Layout.Federation, Role: certs.Coordinator, Region: regionOf(f, b), Institution: localfed.CoordinatorInstitution}
	foreign := idB
	foreign.Federation = "elsewhere"
	portalB := hcIdentity(t, f.Layout.Portals[b])
	for _, c := range []struct {
		name      string
		requester certs.Identity
		to        string
	}{
		{"a department of district a, to a's city", idA, cityOf(t, f, a)},
		{"a department of district a, to b's own city", idA, cityOf(t, f, b)},
		{"a department of district a, to the province", idA, f.Province()},
		{"a coordinator of b's region", coordB, cityOf(t, f, b)},
		{"a portal of b", portalB, cityOf(t, f, b)},
		{"b's department of another federation", foreign, cityOf(t, f, b)},
	} {
		before := hcCount(t, f, c.to, hcDenied("check"))
		var got api.CheckAnswer
		err := ep.Call(ctxT(t, 15*time.Second), peerOf(t, f, c.to), checks.OpForward,
			exchange.Meta{Purpose: "ADMIN-LICENSING", User: req.User, Reference: req.Reference}, hcForwardRequest{Requester: c.requester, Check: req}, &got)
		if !errors.Is(err, exchange.ErrForbidden) {
			t.Errorf("%s: %v, want forbidden", c.name, err)
		}
		if len(got.Lists) > 0 || len(got.Districts) > 0 || got.CheckID != "" {
			t.Errorf("%s: an answer %+v", c.name, got)
		}
		if n := hcCount(t, f, c.to, hcDenied("check")); n != before+1 {
			t.Errorf("%s: %d refusals audited at %s, want 1", c.name, n-before, c.to)
		}
	}
	// A node certificate of a district nobody registered is not let in.
	rogue := bareEndpoint(t, f, issueNode(t, f, certs.District, "zhejiang/hangzhou/rogue"))
	rogueDept := certs.Identity{Federation: f.Layout.Federation, Role: certs.Department, Region: "zhejiang/hangzhou/rogue", Institution: localfed.Department}
	var got api.CheckAnswer
	err := rogue.Call(ctxT(t, 15*time.Second), peerOf(t, f, cityOf(t, f, b)), checks.OpForward,
		exchange.Meta{Purpose: "ADMIN-LICENSING", User: req.User, Reference: req.Reference}, hcForwardRequest{Requester: rogueDept, Check: req}, &got)
	if !errors.Is(err, exchange.ErrForbidden) || got.CheckID != "" {
		t.Errorf("an unregistered district's forward: %+v, %v, want forbidden", got, err)
	}
}

// TestHostileCheckForwardedToACoordinatorNotAboveTheDistrictIsRefused: a
// district's node forwards its own department's check to the other city's
// node, which is not above it. That city cannot vouch for the department
// to any district (each refuses a requester outside the asking node's
// region), so the check cannot run there: it must be refused, not run,
// counted against a quota and audited at a node that does not serve the
// district.
func TestHostileCheckForwardedToACoordinatorNotAboveTheDistrictIsRefused(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	ds := f.Districts()
	a, b := ds[0], ds[1]
	subject := credit.SyntheticPerson(77002, credit.NewDate(1972, 3, 4))
	submit(t, f, b, record("HC-FW-1", subject, "DISHONEST-JUDGMENT-DEBTOR", "拒不履行"))
	waitIndexed(t, f, subject, 1)
	req := api.CheckRequest{Subject: subject, Scenario: "ADMIN-LICENSING", User: "审批科 乙", Reference: "许〔2026〕HC2号"}
	ep := bareEndpoint(t, f, nodeCertificate(t, f, b))
	idB := hcIdentity(t, f.Layout.Departments[b])
	elsewhere := cityOf(t, f, a)
	allowedBefore := hcCount(t, f, elsewhere, func(e storage.AuditEntry) bool {
		return e.Operation == "check" && e.Decision == storage.DecisionAllowed
	})
	var got api.CheckAnswer
	err := ep.Call(ctxT(t, 20*time.Second), peerOf(t, f, elsewhere), checks.OpForward,
		exchange.Meta{Purpose: "ADMIN-LICENSING", User: req.User, Reference: req.Reference}, hcForwardRequest{Requester: idB, Check: req}, &got)
	if !errors.Is(err, exchange.ErrForbidden) {
		t.Errorf("%s's department's check forwarded to %s: %v (answer: complete %v, districts %+v, unconfirmed %v), want forbidden",
			b, elsewhere, err, got.Complete, got.Districts, got.Unconfirmed)
	}
	if n := hcCount(t, f, elsewhere, func(e storage.AuditEntry) bool {
		return e.Operation == "check" && e.Decision == storage.DecisionAllowed
	}); n != allowedBefore {
		t.Errorf("%s ran %d checks for a department of a district not below it", elsewhere, n-allowedBefore)
	}
}

// TestHostileCheckCityAskingADistrictOutsideTheRulesGetsNothing: a city
// node speaks the district's "check" operation itself: for a requester
// that is not its user (another city's coordinator, another city's
// department, a portal, another federation's), under a scenario whose
// purpose does not admit the requester's role, with a purpose in Meta
// other than the scenario's or none, as a classification for a department
// or under the subject's own purpose, with another subject's pseudonym,
// and with too many subjects. The district answers no record to any of them,
// and audits each under the subject's own pseudonym.
func TestHostileCheckCityAskingADistrictOutsideTheRulesGetsNothing(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	ds := f.Districts()
	a, b := ds[0], ds[1]
	city := cityOf(t, f, a)
	subject := credit.SyntheticPerson(77003, credit.NewDate(1973, 4, 5))
	other := credit.SyntheticPerson(77004, credit.NewDate(1973, 4, 5))
	submit(t, f, a, record("HC-CT-1", subject, "DISHONEST-JUDGMENT-DEBTOR", "拒不履行"))
	waitIndexed(t, f, subject, 1)
	own, wrong := pseudonymOf(t, f, subject), pseudonymOf(t, f, other)
	ep := bareEndpoint(t, f, nodeCertificate(t, f, city))
	fed := f.Layout.Federation
	coord := certs.Identity{Federation: fed, Role: certs.Coordinator, Region: regionOf(f, city), Institution: localfed.CoordinatorInstitution}
	otherCoord := coord
	otherCoord.Region = regionOf(f, cityOf(t, f, b))
	deptA := hcIdentity(t, f.Layout.Departments[a])
	deptB := hcIdentity(t, f.Layout.Departments[b])
	portalA := hcIdentity(t, f.Layout.Portals[a])
	foreign := coord
	foreign.Federation = "elsewhere"
	row := hcSubjectQuery{Subject: subject, Pseudonym: own, Reference: "R-HC3", Authorization: "AUTH-HC3"}
	lic := exchange.Meta{Purpose: "ADMIN-LICENSING", User: "审批科 丙"}
	type tc struct {
		name string
		meta exchange.Meta
		req  hcDistrictRequest
		ok   bool // the call succeeds (a row may still be refused)
	}
	cases := []tc{
		{"the control: the city's own coordinator", lic, hcDistrictRequest{Requester: coord, Scenario: "ADMIN-LICENSING", Subjects: []hcSubjectQuery{row}}, true},
		{"another city's coordinator", lic, hcDistrictRequest{Requester: otherCoord, Scenario: "ADMIN-LICENSING", Subjects: []hcSubjectQuery{row}}, false},
		{"another city's department", lic, hcDistrictRequest{Requester: deptB, Scenario: "ADMIN-LICENSING", Subjects: []hcSubjectQuery{row}}, false},
		{"a portal", lic, hcDistrictRequest{Requester: portalA, Scenario: "ADMIN-LICENSING", Subjects: []hcSubjectQuery{row}}, false},
		{"another federation's coordinator", lic, hcDistrictRequest{Requester: foreign, Scenario: "ADMIN-LICENSING", Subjects: []hcSubjectQuery{row}}, false},
		{"a department under a coordinators-only scenario", exchange.Meta{Purpose: "CIVIL-SERVICE-RECRUITMENT", User: "u"},
			hcDistrictRequest{Requester: deptA, Scenario: "CIVIL-SERVICE-RECRUITMENT", Subjects: []hcSubjectQuery{row}}, false},
		{"Meta's purpose other than the scenario's", exchange.Meta{Purpose: "LAW-ENFORCEMENT", User: "u"},
			hcDistrictRequest{Requester: coord, Scenario: "ADMIN-LICENSING", Subjects: []hcSubjectQuery{row}}, false},
		{"Meta without a purpose", exchange.Meta{User: "u"}, hcDistrictRequest{Requester: coord, Scenario: "ADMIN-LICENSING", Subjects: []hcSubjectQuery{row}}, false},
		{"no scenario", lic, hcDistrictRequest{Requester: coord, Subjects: []hcSubjectQuery{row}}, false},
		{"no end user", exchange.Meta{Purpose: "ADMIN-LICENSING"}, hcDistrictRequest{Requester: coord, Scenario: "ADMIN-LICENSING", Subjects: []hcSubjectQuery{row}}, false},
		{"a classification for a department", lic, hcDistrictRequest{Requester: deptA, Classify: true, Subjects: []hcSubjectQuery{row}}, false},
		{"a classification under the subject's own purpose", exchange.Meta{Purpose: "SELF-INQUIRY", User: "u"},
			hcDistrictRequest{Requester: coord, Classify: true, Subjects: []hcSubjectQuery{row}}, false},
		{"a row without a reference", lic, hcDistrictRequest{Requester: coord, Scenario: "ADMIN-LICENSING",
			Subjects: []hcSubjectQuery{{Subject: subject, Pseudonym: own}}}, true},
		{"another subject's pseudonym", lic, hcDistrictRequest{Requester: coord, Scenario: "ADMIN-LICENSING",
			Subjects: []hcSubjectQuery{{Subject: subject, Pseudonym: wrong, Reference: "R-HC3"}}}, true},
		{"a zero pseudonym", lic, hcDistrictRequest{Requester: coord, Scenario: "ADMIN-LICENSING",
			Subjects: []hcSubjectQuery{{Subject: subject, Reference: "R-HC3"}}}, true},
	}
	before, err := f.Node(a).Store().Audit().BySubject(own.String())
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		var rep hcDistrictReply
		err := ep.Call(ctxT(t, 15*time.Second), peerOf(t, f, a), checks.Op, c.meta, c.req, &rep)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v (want the call to succeed: %v)", c.name, err, c.ok)
		}
		recs := 0
		for _, an := range rep.Answers {
			recs += len(an.Records)
		}
		switch {
		case i == 0 && recs == 0:
			t.Fatalf("the control got no record: %+v %v", rep, err)
		case i > 0 && recs > 0:
			t.Errorf("%s: %d records answered", c.name, recs)
		case i > 0 && c.ok && (len(rep.Answers) != 1 || rep.Answers[0].Code == ""):
			t.Errorf("%s: the row is not refused: %+v", c.name, rep.Answers)
		}
		if strings.Contains(hcMessage(err), subject) {
			t.Errorf("%s: the refusal repeats the identifier", c.name)
		}
	}
	after, err := f.Node(a).Store().Audit().BySubject(own.String())
	if err != nil {
		t.Fatal(err)
	}
	allowed := 0
	for _, e := range after[len(before):] {
		if e.Decision == storage.DecisionAllowed {
			allowed++
		}
	}
	if got := len(after) - len(before); got != len(cases) || allowed != 1 {
		t.Errorf("%d of %d asks audited at %s under the subject's own pseudonym, %d allowed (want 1)", got, len(cases), a, allowed)
	}
	if e, _ := f.Node(a).Store().Audit().BySubject(wrong.String()); len(e) > 0 {
		t.Errorf("%d entries at %s under the pseudonym the city sent instead", len(e), a)
	}

	// One subject more than MaxSubjectsPerCall: refused whole, nothing answered.
	many := make([]hcSubjectQuery, checks.MaxSubjectsPerCall+1)
	for i := range many {
		many[i] = row
	}
	var rep hcDistrictReply
	err = ep.Call(ctxT(t, 15*time.Second), peerOf(t, f, a), checks.Op, lic, hcDistrictRequest{Requester: coord, Scenario: "ADMIN-LICENSING", Subjects: many}, &rep)
	if !errors.Is(err, exchange.ErrBadRequest) || len(rep.Answers) > 0 {
		t.Errorf("too many subjects: %d answers, %v; want bad_request", len(rep.Answers), err)
	}
	// A district cannot ask another district.
	dep := bareEndpoint(t, f, nodeCertificate(t, f, b))
	err = dep.Call(ctxT(t, 15*time.Second), peerOf(t, f, a), checks.Op, lic, hcDistrictRequest{Requester: deptB, Scenario: "ADMIN-LICENSING", Subjects: []hcSubjectQuery{row}}, &rep)
	if !errors.Is(err, exchange.ErrForbidden) || len(rep.Answers) > 0 {
		t.Errorf("a district asking another district: %v, want forbidden", err)
	}
}

// TestHostileCheckJobsAreTheSubmittersAlone: a coordinator's batch job is
// read by another institution's coordinator at the same node, by another
// region's coordinator, by the submitter at another node, by a department
// and a portal, by an operator (progress only), and by guessed ids and path
// tricks: none gets the results, and none learns that the job exists.
func TestHostileCheckJobsAreTheSubmittersAlone(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	prov := f.Province()
	city := cityOf(t, f, district)
	subject := credit.SyntheticPerson(77005, credit.NewDate(1974, 5, 6))
	submit(t, f, district, record("HC-JB-1", subject, "DISHONEST-JUDGMENT-DEBTOR", "拒不履行"))
	waitIndexed(t, f, subject, 1)
	owner := coordinator(t, f)
	job, err := owner.SubmitBatch(ctxT(t, 30*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "审批科 丁",
		Rows: []api.BatchRow{{Subject: subject, Reference: "R-JB-1"}, {Subject: credit.SyntheticPerson(77006, credit.NewDate(1974, 5, 6)), Reference: "R-JB-2"}}})
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, owner, job.ID, time.Minute); j.Status != "done" {
		t.Fatalf("job %+v", j)
	}
	res, err := owner.JobResults(ctxT(t, 30*time.Second), job.ID)
	if err != nil || len(res) != 2 || res[0].Check == nil || len(res[0].Check.Lists) == 0 {
		t.Fatalf("the owner's results: %+v, %v", res, err)
	}

	sameRegion := issueUser(t, f, "coordinator", regionOf(f, prov), "audit-office")
	for _, c := range []struct {
		name  string
		at    string
		files localfed.ClientFiles
		code  string
	}{
		{"another institution's coordinator of the same region", prov, sameRegion, api.CodeNotFound},
		{"a city's coordinator at the province node", prov, f.Layout.Coordinators[city], api.CodeNotFound},
		{"the submitter at the city node", city, f.Layout.Coordinator, api.CodeNotFound},
		{"a department", prov, f.Layout.Departments[district], api.CodeForbidden},
		{"a portal", prov, f.Layout.Portals[district], api.CodeForbidden},
	} {
		cl := clientOf(t, f, c.at, c.files)
		if j, err := cl.Job(ctxT(t, 10*time.Second), job.ID); api.Code(err) != c.code {
			t.Errorf("%s reads the job: %+v, %v; want %s", c.name, j, err, c.code)
		}
		if r, err := cl.JobResults(ctxT(t, 10*time.Second), job.ID); api.Code(err) != c.code || len(r) > 0 {
			t.Errorf("%s reads the results: %d lines, %v; want %s", c.name, len(r), err, c.code)
		}
	}
	op := clientOf(t, f, prov, f.Layout.Operator)
	if r, err := op.JobResults(ctxT(t, 10*time.Second), job.ID); api.Code(err) == "" || len(r) > 0 {
		t.Errorf("an operator reads the results: %d lines, %v", len(r), err)
	}
	// Guessed ids and path tricks.
	flip := []byte(job.ID)
	if flip[len(flip)-1] == 'a' {
		flip[len(flip)-1] = 'b'
	} else {
		flip[len(flip)-1] = 'a'
	}
	other := clientOf(t, f, prov, sameRegion)
	for _, path := range []string{
		"/v1/jobs/" + string(flip), "/v1/jobs/" + strings.ToUpper(job.ID), "/v1/jobs/" + job.ID + "%2F..%2F" + job.ID,
		"/v1/jobs/..%2F" + job.ID, "/v1/jobs/job-", "/v1/jobs/" + job.ID + "%00", "/v1/jobs/" + job.ID + "/results/..",
		"/v1/jobs/" + job.ID + "/./results", "/v1/jobs//" + job.ID + "/results",
	} {
		// (The owner may be redirected to its own job by a path that
		// cleans to it; another institution never gets a 200.)
		status, err := other.Do(ctxT(t, 10*time.Second), "GET", path, "", nil, nil)
		if err == nil || status == http.StatusOK {
			t.Errorf("the other institution GET %s: %d", path, status)
		}
		if api.Code(err) == api.CodeForbidden {
			t.Errorf("GET %s says forbidden, not not_found: whose jobs exist leaks", path)
		}
		if _, err := owner.Do(ctxT(t, 10*time.Second), "GET", path, "", nil, nil); strings.Contains(hcMessage(err), subject) {
			t.Errorf("the owner's GET %s: a refusal holding the identifier", path)
		}
	}
	// Only coordinators submit.
	for _, files := range []localfed.ClientFiles{f.Layout.Departments[district], f.Layout.Portals[district], f.Layout.Operator} {
		before := hcJobs(t, f, prov)
		_, err := clientOf(t, f, prov, files).SubmitBatch(ctxT(t, 10*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u",
			Rows: []api.BatchRow{{Subject: subject, Reference: "R"}}})
		if api.Code(err) != api.CodeForbidden || hcJobs(t, f, prov) != before {
			t.Errorf("%s submits a batch: %v", files.Identity, err)
		}
	}
	// A coordinator may not submit at a district node either.
	if _, err := clientOf(t, f, district, f.Layout.Coordinator).SubmitBatch(ctxT(t, 10*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u",
		Rows: []api.BatchRow{{Subject: subject, Reference: "R"}}}); api.Code(err) == "" {
		t.Error("a batch accepted by a district node")
	}
}

// TestHostileCheckBadBatchBodiesChangeNothing: batches over 100,000 rows
// (JSON, NDJSON, CSV), a CSV without its header or with a header only,
// NDJSON with an unknown field (named by an identifier) or not an object,
// rows over the row bound, a body over the size bound, a CSV body that is
// JSON, and bad common fields: each is a typed bad request whose message
// repeats no identifier, and none creates a job or takes from the quota.
func TestHostileCheckBadBatchBodiesChangeNothing(t *testing.T) {
	dir := t.TempDir()
	l, err := localfed.Create(localfed.Spec{Dir: dir, Districts: 1})
	if err != nil {
		t.Fatal(err)
	}
	appendConfig(t, l, l.Nodes[0].Name, "queriers:\n  quotas:\n    - {purpose: ADMIN-LICENSING, limit: 500000, per: 24h}\n")
	f := startFed(t, localfed.Spec{Dir: dir, Districts: 1}, node.Options{})
	prov := f.Province()
	coord := coordinator(t, f)
	subject := credit.SyntheticPerson(77007, credit.NewDate(1975, 6, 7))
	q := "?scenario=ADMIN-LICENSING&user=u"
	var csvBig, ndBig bytes.Buffer
	csvBig.WriteString("subject,reference\n")
	jsonRows := make([]api.BatchRow, checks.MaxBatchRows+1)
	for i := range jsonRows {
		jsonRows[i] = api.BatchRow{Subject: "x", Reference: "r"}
		csvBig.WriteString("x,r\n")
		ndBig.WriteString(`{"subject":"x","reference":"r"}` + "\n")
	}
	huge := strings.Repeat("a", 33<<20)
	cases := []struct {
		name, ctype, query string
		body               any
		anyClientError     bool // the size bound answers as it may (400 or 413)
	}{
		{"JSON, 100,001 rows", "application/json", "", api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u", Rows: jsonRows}, false},
		{"NDJSON, 100,001 rows", "application/x-ndjson", q, ndBig.Bytes(), false},
		{"CSV, 100,001 rows", "text/csv", q, csvBig.Bytes(), false},
		{"CSV without a header", "text/csv", q, []byte(subject + ",R-1\n" + subject + ",R-2\n"), false},
		{"CSV with a header only", "text/csv", q, []byte("subject,reference\n"), false},
		{"CSV that is JSON", "text/csv", q, []byte(`{"rows":[{"subject":"` + subject + `","reference":"r"}]}`), false},
		{"CSV with a row over 4 KiB", "text/csv", q, []byte("subject,reference\n" + subject + "," + strings.Repeat("r", 5000) + "\n"), false},
		{"CSV with an unterminated quote", "text/csv", q, []byte("subject,reference\n\"" + subject + ",r\n"), false},
		{"NDJSON with an unknown field named by an identifier", "application/x-ndjson", q, []byte(`{"subject":"x","reference":"r","` + subject + `":1}` + "\n"), false},
		{"NDJSON with an unknown field", "application/x-ndjson", q, []byte(`{"subject":"x","reference":"r","extra":1}` + "\n"), false},
		{"NDJSON that is an array", "application/x-ndjson", q, []byte(`[{"subject":"` + subject + `","reference":"r"}]` + "\n"), false},
		{"NDJSON with a number for the subject", "application/x-ndjson", q, []byte(`{"subject":110101,"reference":"r"}` + "\n"), false},
		{"NDJSON with an empty body", "application/x-ndjson", q, []byte("\n\n"), false},
		{"a body over 32 MiB", "text/csv", q, []byte("subject,reference\n" + subject + "," + huge + "\n"), true},
		{"JSON with an unknown scenario named by an identifier", "application/json", "", api.BatchCheckRequest{Scenario: subject, User: "u", Rows: []api.BatchRow{{Subject: subject, Reference: "r"}}}, false},
		{"JSON under a purpose other than the scenario's", "application/json", "", api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", Purpose: "LAW-ENFORCEMENT", User: "u", Rows: []api.BatchRow{{Subject: subject, Reference: "r"}}}, false},
		{"JSON without an end user", "application/json", "", api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", Rows: []api.BatchRow{{Subject: subject, Reference: "r"}}}, false},
		{"JSON with an identifier as the user, invisible characters in it", "application/json", "", api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: subject + "\u202e", Rows: []api.BatchRow{{Subject: subject, Reference: "r"}}}, false},
		{"JSON with no rows", "application/json", "", api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u", Rows: []api.BatchRow{}}, false},
		{"NDJSON without the scenario", "application/x-ndjson", "?user=u", []byte(`{"subject":"x","reference":"r"}` + "\n"), false},
		{"JSON with two values", "application/json", "", []byte(`{"scenario":"ADMIN-LICENSING","user":"u","rows":[{"subject":"x","reference":"r"}]}{"rows":[]}`), false},
	}
	for _, c := range cases {
		status, err := coord.Do(ctxT(t, 120*time.Second), "POST", "/v1/checks/batch"+c.query, c.ctype, c.body, nil)
		switch {
		case c.anyClientError && (status < 400 || status >= 500):
			t.Errorf("%s: %d %v, want a 4xx", c.name, status, err)
		case !c.anyClientError && api.Code(err) != api.CodeBadRequest:
			t.Errorf("%s: %d %v, want bad_request", c.name, status, err)
		}
		if strings.Contains(hcMessage(err), subject) {
			t.Errorf("%s: the refusal repeats the identifier: %s", c.name, strings.ReplaceAll(hcMessage(err), subject, "<id>"))
		}
		if n := hcJobs(t, f, prov); n != 0 {
			t.Fatalf("%s: %d jobs kept", c.name, n)
		}
	}
	if acc, ok := queriersAt(t, f, prov)[localfed.CoordinatorInstitution]; ok && (quotaUsed(acc) != 0 || acc.Admitted != 0) {
		t.Errorf("refused batches took from the quota: %+v", acc)
	}
	// The control: a good batch of two rows is a job and takes two.
	job, err := coord.SubmitBatch(ctxT(t, 30*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u",
		Rows: []api.BatchRow{{Subject: subject, Reference: "R-1"}, {Subject: subject, Reference: "R-2"}}})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, coord, job.ID, time.Minute)
	if acc := queriersAt(t, f, prov)[localfed.CoordinatorInstitution]; quotaUsed(acc) != 2 {
		t.Errorf("a batch of two took %d from the quota: %+v", quotaUsed(acc), acc)
	}
}

// TestHostileCheckNDJSONRowOverTheRowBoundIsRefused: a row of an NDJSON
// batch is bounded to httpapi.MaxBatchRowBytes (4 KiB), like a CSV row.
func TestHostileCheckNDJSONRowOverTheRowBoundIsRefused(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	coord := coordinator(t, f)
	for _, n := range []int{5 << 10, 60 << 10} {
		line := `{"subject":"x","reference":"` + strings.Repeat("r", n) + `"}` + "\n"
		_, err := coord.Do(ctxT(t, 30*time.Second), "POST", "/v1/checks/batch?scenario=ADMIN-LICENSING&user=u", "application/x-ndjson", []byte(line), nil)
		if api.Code(err) != api.CodeBadRequest {
			t.Errorf("an NDJSON row of %d bytes: %v, want bad_request", len(line), err)
		}
	}
	if n := hcJobs(t, f, f.Province()); n != 0 {
		t.Errorf("%d jobs kept for rows over the bound", n)
	}
}

// TestHostileCheckNDJSONLineHoldingTwoRowsIsRefused: an NDJSON line is one
// JSON object; a line holding two, or an object followed by anything, is
// refused, not cut to its first object (the second row would vanish from
// the batch without a word).
func TestHostileCheckNDJSONLineHoldingTwoRowsIsRefused(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	coord := coordinator(t, f)
	s1 := credit.SyntheticPerson(77008, credit.NewDate(1976, 7, 8))
	s2 := credit.SyntheticPerson(77009, credit.NewDate(1976, 7, 8))
	for _, body := range []string{
		`{"subject":"` + s1 + `","reference":"r1"}{"subject":"` + s2 + `","reference":"r2"}` + "\n",
		`{"subject":"` + s1 + `","reference":"r1"} garbage` + "\n",
	} {
		var job api.Job
		_, err := coord.Do(ctxT(t, 30*time.Second), "POST", "/v1/checks/batch?scenario=ADMIN-LICENSING&user=u", "application/x-ndjson", []byte(body), &job)
		if api.Code(err) != api.CodeBadRequest {
			t.Errorf("NDJSON line %q: %v (job of %d rows), want bad_request", strings.ReplaceAll(strings.ReplaceAll(body, s1, "<s1>"), s2, "<s2>"), err, job.Rows)
		}
	}
}

// TestHostileCheckQuotaHoldsAcrossSinglesBatchesClassificationsAndForwards:
// with a quota of 10 licensing queries a day at the province, a batch of 6
// runs, a batch of 5 is refused whole and takes nothing, a classification
// and three single checks take the rest, and then a single check, a
// classification and a one-row batch are refused (each refusal audited);
// at the city, a department's forwarded checks are held to the
// department's own quota, refused past it at both hops and audited at
// both, and the city's coordinator keeps its own.
func TestHostileCheckQuotaHoldsAcrossSinglesBatchesClassificationsAndForwards(t *testing.T) {
	dir := t.TempDir()
	l, err := localfed.Create(localfed.Spec{Dir: dir, Districts: 2})
	if err != nil {
		t.Fatal(err)
	}
	provName := l.Nodes[0].Name
	appendConfig(t, l, provName, "queriers:\n  quotas:\n    - {purpose: ADMIN-LICENSING, limit: 10, per: 24h}\n")
	var cityName string
	for _, n := range l.Nodes {
		if n.Role == certs.City && cityName == "" && certs.InRegion(regionOfLayout(l, l.Districts()[0]), n.Region) {
			cityName = n.Name
		}
	}
	appendConfig(t, l, cityName, "queriers:\n  quotas:\n    - {purpose: ADMIN-LICENSING, limit: 2, per: 24h}\n")
	f := startFed(t, localfed.Spec{Dir: dir, Districts: 2}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(77010, credit.NewDate(1977, 8, 9))
	coord := coordinator(t, f)
	rows := func(n int) []api.BatchRow {
		out := make([]api.BatchRow, n)
		for i := range out {
			out[i] = api.BatchRow{Subject: credit.SyntheticPerson(771000+i, credit.NewDate(1980, 1, 1)), Reference: fmt.Sprintf("Q-%d", i)}
		}
		return out
	}
	batch := func(n int) (*api.Job, error) {
		return coord.SubmitBatch(ctxT(t, 30*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u", Rows: rows(n)})
	}
	used := func() int { return quotaUsed(queriersAt(t, f, provName)[localfed.CoordinatorInstitution]) }
	job, err := batch(6)
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, coord, job.ID, time.Minute); j.Status != "done" {
		t.Fatalf("job %+v", j)
	}
	deniedBatches := hcCount(t, f, provName, hcDenied(checks.JobKind))
	if _, err := batch(5); api.Code(err) != api.CodeTooManyRequests {
		t.Fatalf("a batch past the quota: %v", err)
	}
	if got := used(); got != 6 {
		t.Errorf("a refused batch took from the quota: %d used, want 6", got)
	}
	if hcJobs(t, f, provName) != 1 {
		t.Errorf("a refused batch is kept as a job")
	}
	classify := api.ClassificationRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: "C-1"}
	if _, err := coord.Classify(ctxT(t, 30*time.Second), classify); err != nil {
		t.Fatalf("a classification within the quota: %v", err)
	}
	single := api.CheckRequest{Subject: subject, Scenario: "ADMIN-LICENSING", User: "u", Reference: "S-1"}
	for i := range 3 {
		if _, err := checkUntil(t, coord, single); err != nil {
			t.Fatalf("single check %d within the quota: %v", i+1, err)
		}
	}
	if got := used(); got != 10 {
		t.Errorf("%d used after a batch of 6, a classification and 3 checks; want 10", got)
	}
	deniedChecks := hcCount(t, f, provName, hcDenied("check"))
	deniedClass := hcCount(t, f, provName, hcDenied("classification"))
	if _, err := coord.Check(ctxT(t, 30*time.Second), single); api.Code(err) != api.CodeTooManyRequests {
		t.Errorf("a check past the quota: %v", err)
	}
	if _, err := coord.Classify(ctxT(t, 30*time.Second), classify); api.Code(err) != api.CodeTooManyRequests {
		t.Errorf("a classification past the quota: %v", err)
	}
	if _, err := batch(1); api.Code(err) != api.CodeTooManyRequests {
		t.Errorf("a one-row batch past the quota: %v", err)
	}
	if got := used(); got != 10 {
		t.Errorf("%d used after the refusals, want 10", got)
	}
	if hcCount(t, f, provName, hcDenied("check")) != deniedChecks+1 || hcCount(t, f, provName, hcDenied("classification")) != deniedClass+1 ||
		hcCount(t, f, provName, hcDenied(checks.JobKind)) != deniedBatches+2 {
		t.Errorf("the refusals over quota are not each audited")
	}

	// The department's forwarded checks at its city (quota 2).
	dept := department(t, f, district)
	for i := range 2 {
		if _, err := checkUntil(t, dept, single); err != nil {
			t.Fatalf("the department's check %d: %v", i+1, err)
		}
	}
	cityDenied := hcCount(t, f, cityName, hcDenied("check"))
	distDenied := hcCount(t, f, district, hcDenied("check.forward"))
	if _, err := dept.Check(ctxT(t, 30*time.Second), single); api.Code(err) != api.CodeTooManyRequests {
		t.Errorf("the department's check past its quota: %v, want too_many_requests", err)
	}
	if hcCount(t, f, cityName, hcDenied("check")) != cityDenied+1 || hcCount(t, f, district, hcDenied("check.forward")) != distDenied+1 {
		t.Errorf("the department's refusal is not audited at both hops")
	}
	// The city's own coordinator is not held to the department's count.
	if _, err := checkUntil(t, clientOf(t, f, cityName, f.Layout.Coordinators[cityName]), single); err != nil {
		t.Errorf("the city coordinator's check after the department's quota ran out: %v", err)
	}
	deptInst := hcIdentity(t, f.Layout.Departments[district]).Institution
	if acc := queriersAt(t, f, cityName)[deptInst]; quotaUsed(acc) != 2 || acc.Refused != 1 {
		t.Errorf("the department's account at the city: %+v", acc)
	}
}

func regionOfLayout(l localfed.Layout, name string) string {
	n, _ := l.Node(name)
	return n.Region
}

// TestHostileCheckStatsCannotBeDifferencedBetweenCityAndProvince: a city's
// coordinator makes 5 licensing checks at its city's node and 2 at the
// province's (which admits coordinators of its whole region). GET
// /v1/stats at the city publishes 5 for the row (city, credit-office); if
// the province publishes that same row summed over both nodes (7), the 2
// is given back by a subtraction. No count from 1 to 4 may be recovered by
// differencing what two nodes publish.
func TestHostileCheckStatsCannotBeDifferencedBetweenCityAndProvince(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	district := f.Districts()[0]
	city := cityOf(t, f, district)
	subject := credit.SyntheticPerson(77011, credit.NewDate(1978, 9, 10))
	submit(t, f, district, record("HC-ST-1", subject, "DISHONEST-JUDGMENT-DEBTOR", "拒不履行"))
	waitIndexed(t, f, subject, 1)
	req := api.CheckRequest{Subject: subject, Scenario: "ADMIN-LICENSING", User: "u", Reference: "ST-1"}
	atCity := clientOf(t, f, city, f.Layout.Coordinators[city])
	atProv := clientOf(t, f, f.Province(), f.Layout.Coordinators[city])
	for range 5 {
		if _, err := checkUntil(t, atCity, req); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := checkUntil(t, atProv, req); err != nil {
			t.Fatalf("a city coordinator's check at the province node: %v", err)
		}
	}
	cst, err := atCity.Stats(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	pst, err := coordinator(t, f).Stats(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cells := func(u api.UsageStats) map[string]api.Cell {
		out := map[string]api.Cell{}
		for _, r := range u.Institutions {
			for i, c := range r.Counts {
				out[r.Region+"|"+r.Institution+"|"+u.Purposes[i].Purpose] = c
			}
			out[r.Region+"|"+r.Institution+"|total"] = r.Total
		}
		return out
	}
	cc, pc := cells(cst.Checks), cells(pst.Checks)
	found := false
	for k, c := range cc {
		p, ok := pc[k]
		if !ok || c.Suppressed || p.Suppressed || c.Value == nil || p.Value == nil {
			continue
		}
		found = found || strings.Contains(k, "ADMIN-LICENSING")
		if d := *p.Value - *c.Value; d > 0 && d < 5 {
			t.Errorf("checks %s: the city publishes %d, the province %d: %d recovered by subtraction", k, *c.Value, *p.Value, d)
		}
	}
	if !found {
		t.Logf("the city's row is not published at both nodes (city %+v, province %+v)", cst.Checks, pst.Checks)
	}
}

// TestHostileCheckRowsAreNotKeptOnceTheJobIsDone: a batch's rows hold the
// subjects' raw identifiers; they are needed while the job runs (to resume
// after a crash), not after. Once the job is done, its results (masked
// subjects) are what is kept.
func TestHostileCheckRowsAreNotKeptOnceTheJobIsDone(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	coord := coordinator(t, f)
	subject := credit.SyntheticPerson(77012, credit.NewDate(1979, 10, 11))
	job, err := coord.SubmitBatch(ctxT(t, 30*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u",
		Rows: []api.BatchRow{{Subject: subject, Reference: "R-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, coord, job.ID, time.Minute); j.Status != "done" {
		t.Fatalf("job %+v", j)
	}
	raw, err := f.Node(f.Province()).Store().BatchRows(job.ID, 0)
	if !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("the done job's rows are kept (%d bytes, the identifier in them: %v)", len(raw), bytes.Contains(raw, []byte(subject)))
	}
}

// TestHostileCheckErrorsLogsAndMetricsHoldNoIdentifier: identifiers are
// put where checks do not expect them (scenario, purpose, consistency,
// user and reference with invisible characters, a subject one check digit
// off, a CSV batch whose scenario is an identifier, batch rows with bad
// subjects); no refusal, no batch result, no log line and no metric holds
// an identifier, and a batch result shows the subject masked only.
func TestHostileCheckErrorsLogsAndMetricsHoldNoIdentifier(t *testing.T) {
	logs := &lockedBuffer{}
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	district := f.Districts()[0]
	city := cityOf(t, f, district)
	subject := credit.SyntheticPerson(77013, credit.NewDate(1965, 3, 9))
	nearMiss := subject[:17] + map[bool]string{true: "1", false: "0"}[subject[17] == '0']
	submit(t, f, district, record("HC-PV-1", subject, "DISHONEST-JUDGMENT-DEBTOR", "拒不履行"))
	waitIndexed(t, f, subject, 1)
	needles := map[string]string{"the subject": subject, "the subject one digit off": nearMiss}
	var messages []string
	note := func(err error) {
		if m := hcMessage(err); m != "" {
			messages = append(messages, m)
		}
	}
	coord := coordinator(t, f)
	dept := department(t, f, district)
	cityCoord := clientOf(t, f, city, f.Layout.Coordinators[city])
	base := api.CheckRequest{Subject: subject, Scenario: "ADMIN-LICENSING", User: "u", Reference: "PV-1"}
	var reqs []api.CheckRequest
	for _, mut := range []func(*api.CheckRequest){
		func(r *api.CheckRequest) { r.Subject = nearMiss },
		func(r *api.CheckRequest) { r.Scenario = subject },
		func(r *api.CheckRequest) { r.Purpose = subject },
		func(r *api.CheckRequest) { r.Consistency = subject },
		func(r *api.CheckRequest) { r.User = subject + "\u202e" },
		func(r *api.CheckRequest) { r.Reference = subject + "\x00" },
		func(r *api.CheckRequest) { r.Reference = strings.Repeat(subject, 20) },
		func(r *api.CheckRequest) { r.Authorization = "\u200b" + subject },
		func(r *api.CheckRequest) { r.Scenario = "CIVIL-SERVICE-RECRUITMENT"; r.Authorization = "" },
	} {
		r := base
		mut(&r)
		reqs = append(reqs, r)
	}
	for _, r := range reqs {
		for _, cl := range []*api.Client{coord, dept, cityCoord} {
			_, err := cl.Check(ctxT(t, 30*time.Second), r)
			if err == nil {
				t.Errorf("a check with a bad field was answered: %+v", r)
			}
			note(err)
		}
	}
	for _, r := range []api.ClassificationRequest{
		{Subject: nearMiss, Purpose: "ADMIN-LICENSING", User: "u", Reference: "r"},
		{Subject: subject, Purpose: subject, User: "u", Reference: "r"},
		{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: subject + "\u202e"},
	} {
		_, err := coord.Classify(ctxT(t, 30*time.Second), r)
		note(err)
	}
	_, err := coord.Do(ctxT(t, 30*time.Second), "POST", "/v1/checks/batch?scenario="+subject+"&user=u", "text/csv", []byte("subject,reference\n"+subject+",r\n"), nil)
	note(err)
	job, err := coord.SubmitBatch(ctxT(t, 30*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u", Rows: []api.BatchRow{
		{Subject: nearMiss, Reference: "r1"}, {Subject: subject, Reference: "r2"}, {Subject: subject, Reference: "", Authorization: subject + "\u202e"},
		{Subject: subject + "\u202e", Reference: "r4"}, {Subject: " " + nearMiss + " ", Reference: "r5"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, coord, job.ID, time.Minute)
	results, err := coord.JobResults(ctxT(t, 30*time.Second), job.ID)
	if err != nil || len(results) != 5 {
		t.Fatalf("results %+v, %v", results, err)
	}
	for _, r := range results {
		if r.Error != nil {
			messages = append(messages, r.Error.Message)
		}
		for what, n := range needles {
			if strings.Contains(r.Subject, n) {
				t.Errorf("row %d's result shows %s unmasked: %q", r.Row, what, r.Subject)
			}
		}
	}
	if results[1].Status != "ok" || results[1].Subject == "" {
		t.Errorf("the good row: %+v", results[1])
	}
	metrics := allMetrics(t, f)
	all := logs.String()
	broken := leaks(all, metrics, messages, needles)
	if len(broken) > 0 {
		t.Fatal(strings.Join(broken, "\n"))
	}
	if len(messages) < 20 {
		t.Fatalf("only %d refusals collected: the test proves little", len(messages))
	}
}

// TestHostileCheckJobsStayWithinMaxJobs: a coordinator submits more
// batches than a requester may keep; the node keeps at most
// MaxJobsPerRequester of its jobs, drops its oldest finished ones, and
// another coordinator's finished job is not pushed out by them. Nor may
// one requester hold more than MaxPendingPerRequester jobs unfinished.
func TestHostileCheckJobsStayWithinMaxJobs(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	coord := coordinator(t, f)
	prov := f.Province()
	row := func(i int) []api.BatchRow {
		return []api.BatchRow{{Subject: credit.SyntheticPerson(772000+i, credit.NewDate(1981, 1, 1)), Reference: "M"}}
	}
	// Another coordinator's job, finished first (the oldest of all).
	var other *api.Client
	for name, files := range f.Layout.Coordinators {
		if name != prov {
			other = clientOf(t, f, prov, files)
			break
		}
	}
	otherJob, err := other.SubmitBatch(ctxT(t, 30*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u", Rows: row(999)})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, other, otherJob.ID, time.Minute)
	var ids []string
	for i := range checks.MaxJobsPerRequester + 3 {
		job, err := coord.SubmitBatch(ctxT(t, 30*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u", Rows: row(i)})
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		ids = append(ids, job.ID)
		if j := waitJob(t, coord, job.ID, time.Minute); j.Status != "done" {
			t.Fatalf("job %d: %+v", i, j)
		}
		if n := hcJobs(t, f, prov); n > checks.MaxJobsPerRequester+1 {
			t.Fatalf("after %d batches the node keeps %d jobs (%d per requester, and the other's)", i+1, n, checks.MaxJobsPerRequester)
		}
	}
	for i, id := range ids {
		_, err := coord.Job(ctxT(t, 10*time.Second), id)
		kept := err == nil
		if want := i >= len(ids)-checks.MaxJobsPerRequester; kept != want {
			t.Errorf("job %d of %d: kept %v, want %v (%v)", i, len(ids), kept, want, err)
		}
	}
	if _, err := other.Job(ctxT(t, 10*time.Second), otherJob.ID); err != nil {
		t.Errorf("another coordinator's job was pushed out: %v", err)
	}
}

// TestHostileCheckForwardedDepartmentCannotSpendACoordinatorsQuota: a
// district node vouches for its departments, names included; it forwards
// checks for a "department" whose institution is named like the city's
// coordinators' ("credit-office"). The city's quota for its coordinators
// must not be spent by them: a department of a district is not the city's
// coordinator, whatever its institution is called.
func TestHostileCheckForwardedDepartmentCannotSpendACoordinatorsQuota(t *testing.T) {
	dir := t.TempDir()
	l, err := localfed.Create(localfed.Spec{Dir: dir, Districts: 1})
	if err != nil {
		t.Fatal(err)
	}
	district := l.Districts()[0]
	var city string
	for _, n := range l.Nodes {
		if n.Role == certs.City && certs.InRegion(regionOfLayout(l, district), n.Region) {
			city = n.Name
		}
	}
	appendConfig(t, l, city, "queriers:\n  quotas:\n    - {purpose: ADMIN-LICENSING, limit: 2, per: 24h}\n")
	f := startFed(t, localfed.Spec{Dir: dir, Districts: 1}, node.Options{})
	subject := credit.SyntheticPerson(77014, credit.NewDate(1966, 4, 10))
	req := api.CheckRequest{Subject: subject, Scenario: "ADMIN-LICENSING", User: "u", Reference: "QK-1"}
	ep := bareEndpoint(t, f, nodeCertificate(t, f, district))
	posing := certs.Identity{Federation: f.Layout.Federation, Role: certs.Department, Region: regionOf(f, district), Institution: localfed.CoordinatorInstitution}
	for i := range 2 {
		var got api.CheckAnswer
		err := ep.Call(ctxT(t, 20*time.Second), peerOf(t, f, city), checks.OpForward,
			exchange.Meta{Purpose: "ADMIN-LICENSING", User: req.User, Reference: req.Reference}, hcForwardRequest{Requester: posing, Check: req}, &got)
		if err != nil {
			t.Fatalf("forward %d: %v", i+1, err)
		}
	}
	if _, err := checkUntil(t, clientOf(t, f, city, f.Layout.Coordinators[city]), req); err != nil {
		t.Errorf("the city's coordinator, after a district's department named like it checked twice: %v (its quota was spent by the department)", err)
	}
}
