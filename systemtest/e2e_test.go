package systemtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/consensus"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

func TestLookupAcrossDistricts(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	subject := credit.SyntheticPerson(4242, credit.NewDate(1980, 5, 17))
	secret := "罚款人民币五千元的具体事由"
	for i, d := range []string{kecheng, xihu} {
		submit(t, f, d, record(fmt.Sprintf("R-%d", i), subject, "FOOD-DRUG-PENALTY", secret))
	}
	waitIndexed(t, f, subject, 2)

	coord := coordinator(t, f)
	req := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "许可〔2026〕1号"}
	ans, err := coord.Lookup(ctxT(t, 30*time.Second), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Districts) != 2 {
		t.Fatalf("districts %+v", ans.Districts)
	}
	for _, d := range ans.Districts {
		if d.Status != api.DistrictOK || len(d.Records) != 1 || d.Records[0].Department != localfed.Department || d.Records[0].District != d.District {
			t.Fatalf("district %+v", d)
		}
	}

	// One district down: the other's records, and the down one unreachable,
	// within the lookup deadline.
	if err := f.StopNode(ctxT(t, 30*time.Second), xihu); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if ans, err = coord.Lookup(ctxT(t, 30*time.Second), req); err != nil {
		t.Fatalf("lookup with a district down: %v", err)
	}
	if took := time.Since(start); took > time.Duration(f.Node(f.Province()).Config().LookupTimeout)+2*time.Second {
		t.Fatalf("lookup took %v, beyond its deadline", took)
	}
	statuses := map[string]string{}
	for _, d := range ans.Districts {
		statuses[d.District] = d.Status
		if d.Status == api.DistrictOK && len(d.Records) != 1 {
			t.Fatalf("remaining district answered %+v", d)
		}
	}
	if statuses[regionOf(f, kecheng)] != "ok" || (statuses[regionOf(f, xihu)] != "unreachable" && statuses[regionOf(f, xihu)] != "timeout") {
		t.Fatalf("statuses with a district down: %v", statuses)
	}

	// Restarted, it answers again with its records.
	if err := f.StartNode(xihu); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 30*time.Second, "the restarted district to answer again", func() bool {
		ans, err := coord.Lookup(ctxT(t, 30*time.Second), req)
		if err != nil {
			return false
		}
		ok := 0
		for _, d := range ans.Districts {
			if d.Status == api.DistrictOK && len(d.Records) == 1 {
				ok++
			}
		}
		return ok == 2
	})

	// The answering districts audited the lookup (pseudonym only).
	p := pseudonymOf(t, f, subject).String()
	for _, d := range []string{kecheng, xihu} {
		entries, err := f.Node(d).Store().Audit().BySubject(p)
		if err != nil || len(entries) == 0 {
			t.Fatalf("%s audit: %v %v", d, entries, err)
		}
		if entries[0].Operation != "lookup.answer" || entries[0].Decision != storage.DecisionAllowed || len(entries[0].Records) != 1 {
			t.Fatalf("%s audit entry %+v", d, entries[0])
		}
	}
}

// TestCityCoordinatorLooksUpThroughItsCity: every coordinator node has its
// own coordinator in the layout; a city's looks subjects up through the
// city node, and a node serves only the coordinators of its own region (a
// city's node refuses the other city's and the province's).
func TestCityCoordinatorLooksUpThroughItsCity(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	subject := credit.SyntheticPerson(4343, credit.NewDate(1981, 6, 18))
	for i, d := range f.Districts() {
		submit(t, f, d, record(fmt.Sprintf("C-%d", i), subject, "FOOD-DRUG-PENALTY", "s"))
	}
	waitIndexed(t, f, subject, 2)
	req := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "王五", Reference: "R-9", Consistency: api.ConsistencyStrong}
	for _, city := range []string{"quzhou", "hangzhou"} {
		files, ok := f.Layout.Coordinators[city]
		if !ok || files.Cert == "" || files.Cert == f.Layout.Coordinator.Cert {
			t.Fatalf("no coordinator of its own for %s: %+v", city, files)
		}
		ans, err := lookupUntil(t, clientOf(t, f, city, files), req)
		if err != nil || len(ans.Districts) != 2 {
			t.Fatalf("lookup through %s: %+v, %v", city, ans, err)
		}
		other := map[string]string{"quzhou": "hangzhou", "hangzhou": "quzhou"}[city]
		for name, c := range map[string]localfed.ClientFiles{"the other city's": f.Layout.Coordinators[other], "the province's": f.Layout.Coordinator} {
			_, err = clientOf(t, f, city, c).Lookup(ctxT(t, 30*time.Second), req)
			if api.Code(err) != api.CodeForbidden {
				t.Fatalf("%s coordinator at %s: %v, want forbidden", name, city, err)
			}
		}
	}
	if f.Layout.Coordinators[f.Province()] != f.Layout.Coordinator {
		t.Fatalf("the province's entry in coordinators is not the province's coordinator")
	}
}

func TestLookupRefusalsAreAudited(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	subject := credit.SyntheticPerson(77, credit.NewDate(1990, 1, 1))
	prov := f.Node(f.Province())
	p := pseudonymOf(t, f, subject).String()
	base := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "李四", Reference: "R-1"}
	with := func(change func(*api.LookupRequest)) api.LookupRequest {
		r := base
		change(&r)
		return r
	}
	wrong := subject[:17] + "0"
	if subject[17] == '0' {
		wrong = subject[:17] + "1"
	}
	coord := coordinator(t, f)
	dept := clientOf(t, f, f.Province(), f.Layout.Departments[f.Districts()[0]])
	cases := []struct {
		name   string
		client *api.Client
		req    api.LookupRequest
		status int
		code   string
	}{
		{"unknown purpose", coord, with(func(r *api.LookupRequest) { r.Purpose = "curiosity" }), 403, "forbidden"},
		{"no purpose", coord, with(func(r *api.LookupRequest) { r.Purpose = "" }), 400, "bad_request"},
		{"no reference", coord, with(func(r *api.LookupRequest) { r.Reference = "" }), 400, "bad_request"},
		{"authorization required", coord, with(func(r *api.LookupRequest) { r.Purpose = "CIVIL-SERVICE-RECRUITMENT" }), 403, "forbidden"},
		{"department certificate", dept, base, 403, "forbidden"},
		{"bad consistency", coord, with(func(r *api.LookupRequest) { r.Consistency = "eventual" }), 400, "bad_request"},
		// Limits are checked at the edge, not left to every district.
		{"100 KB reference", coord, with(func(r *api.LookupRequest) { r.Reference = strings.Repeat("案", 100<<10/3) }), 400, "bad_request"},
		{"control character in the user", coord, with(func(r *api.LookupRequest) { r.User = "李‮四" }), 400, "bad_request"},
		{"invalid identifier", coord, with(func(r *api.LookupRequest) { r.Subject = wrong }), 400, "invalid_identifier"},
	}
	for _, c := range cases {
		_, err := c.client.Lookup(ctxT(t, 30*time.Second), c.req)
		se, ok := err.(*api.StatusError)
		if !ok || se.Status != c.status || se.Err.Code != c.code {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// No certificate: unauthenticated.
	if _, err := clientOf(t, f, f.Province(), localfed.ClientFiles{}).Lookup(ctxT(t, 30*time.Second), base); api.Code(err) != api.CodeUnauthenticated {
		t.Errorf("no certificate: %v", err)
	}
	entries, err := prov.Store().Audit().BySubject(p)
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, e := range entries {
		if e.Decision == storage.DecisionDenied {
			denied++
		}
	}
	// Every refusal with a valid subject is registered under its pseudonym.
	if denied != len(cases)-1 {
		t.Fatalf("%d denied lookups audited under the subject, want %d: %+v", denied, len(cases)-1, entries)
	}
	if err := prov.Store().Audit().Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestRecordIntakeRules(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	d0, d1 := f.Districts()[0], f.Districts()[1]
	c := department(t, f, d0)
	ctx := ctxT(t, time.Minute)
	subject := credit.SyntheticPerson(9, credit.NewDate(1975, 2, 3))

	good := record("A-1", subject, "FOOD-DRUG-PENALTY", "s")
	otherDept := record("A-2", subject, "FOOD-DRUG-PENALTY", "s")
	otherDept.Department = "tax"
	unknownItem := record("A-3", subject, "NO-SUCH-ITEM", "s")
	badSubject := record("A-4", subject[:17]+"0", "FOOD-DRUG-PENALTY", "s")
	if subject[17] == '0' {
		badSubject.Subject = subject[:17] + "1"
	}
	realSubject := record("A-5", "11010519491231002X", "FOOD-DRUG-PENALTY", "s") // GB 11643's example: real
	ans, status, err := c.SubmitRecords(ctx, []api.RecordInput{good, otherDept, unknownItem, badSubject, realSubject})
	if err != nil || status != http.StatusMultiStatus {
		t.Fatalf("mixed batch: %d %v", status, err)
	}
	want := []struct{ status, code string }{{"accepted", ""}, {"rejected", "forbidden"}, {"rejected", "unknown_catalog_item"},
		{"rejected", "invalid_identifier"}, {"rejected", "invalid_identifier"}}
	for i, w := range want {
		r := ans.Results[i]
		if r.Status != w.status || (w.code != "" && (r.Error == nil || r.Error.Code != w.code)) {
			t.Errorf("item %d: %+v", i, r)
		}
		if r.Error != nil && strings.Contains(r.Error.Message, subject) {
			t.Errorf("item %d error echoes the identifier: %s", i, r.Error.Message)
		}
	}
	// The demo federation is test-only: a real identifier is refused, and
	// the message says so.
	if e := ans.Results[4].Error; e == nil || !strings.Contains(e.Message, "test-only") {
		t.Errorf("a real identifier in a test-only federation: %+v", ans.Results[4])
	}
	// Idempotent: the same record again is a duplicate; other content a conflict.
	changed := good
	changed.Summary = "other summary"
	ans, status, err = c.SubmitRecords(ctx, []api.RecordInput{good, changed})
	if err != nil || status != http.StatusMultiStatus || ans.Results[0].Status != "duplicate" || ans.Results[1].Status != "rejected" || ans.Results[1].Error.Code != "conflict" {
		t.Fatalf("resubmission: %d %+v %v", status, ans, err)
	}
	// A department of another district may not submit here.
	if _, err := clientOf(t, f, d0, f.Layout.Departments[d1]).Do(ctx, "POST", "/v1/records", "", good, nil); api.Code(err) != api.CodeForbidden {
		t.Fatalf("other district's department: %v", err)
	}
	// Nor at a coordinator node, which keeps no records.
	if _, err := clientOf(t, f, f.Province(), f.Layout.Departments[d0]).Do(ctx, "POST", "/v1/records", "", good, nil); api.Code(err) != api.CodeForbidden {
		t.Fatalf("a department at the province: %v", err)
	}
	// Malformed JSON: a clear error, nothing stored.
	if _, err := c.Do(ctx, "POST", "/v1/records", "application/json", []byte(`[{"id": "X",`), nil); api.Code(err) != api.CodeBadRequest {
		t.Fatalf("malformed: %v", err)
	}
	if n := f.Node(d0).Store().CountRecords(); n != 1 {
		t.Fatalf("%d records stored, want 1", n)
	}
	// The record, its versions, and a correction.
	summary := "corrected summary"
	rec, err := c.Correct(ctx, "A-1", api.Correction{Summary: &summary, Reason: "typo in the decision"})
	if err != nil || rec.Version != 2 || rec.Summary != summary {
		t.Fatalf("correction: %+v %v", rec, err)
	}
	if rec, err = c.Record(ctx, "A-1"); err != nil || rec.Version != 2 || len(rec.Versions) != 2 || rec.DisplayUntil == "" {
		t.Fatalf("get: %+v %v", rec, err)
	}
}

func TestMetricsListener(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	n := f.Node(f.Districts()[0])
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + n.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	// Ready needs a known leader, which a stalled moment can take away.
	wait.Until(t, 20*time.Second, "/readyz to answer ready", func() bool {
		code, body := get("/readyz")
		return code == 200 && body == "ready\n"
	})
	// The jobs have run once at least.
	wait.Until(t, 20*time.Second, "the district's jobs to run", func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, `credfed_job_runs_total{job="publish",result="ok"}`) &&
			strings.Contains(body, `credfed_job_runs_total{job="sweep",result="ok"}`)
	})
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	names := 0
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		names++
		if !strings.HasPrefix(line, "credfed_") {
			t.Fatalf("metric not named credfed_…: %s", line)
		}
	}
	for _, want := range []string{"credfed_consensus_applied_index", "credfed_exchange_", "credfed_go_goroutines", "credfed_node_info",
		"credfed_outbox_pending", "credfed_job_last_success_timestamp_seconds"} {
		if !strings.Contains(body, want) {
			t.Errorf("no %s in /metrics", want)
		}
	}
	if names < 20 {
		t.Fatalf("only %d samples", names)
	}
}

// TestRecordsAreTheCollectorsAlone: a portal once read any record of its
// district by id with any "authentication" string; records by id are now
// the collecting department's alone.
func TestRecordsAreTheCollectorsAlone(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	dc := department(t, f, d)
	pc := clientOf(t, f, d, f.Layout.Portals[d])
	ctx := ctxT(t, time.Minute)
	subject := credit.SyntheticPerson(606, credit.NewDate(1988, 8, 8))
	submit(t, f, d, record("PR-1", subject, "FOOD-DRUG-PENALTY", "s"))
	for _, path := range []string{"/v1/records/PR-1", "/v1/records/PR-1?authentication=实名认证-0001", "/v1/records/PR-1?authentication=x&department=" + localfed.Department} {
		var rec api.Record
		if _, err := pc.Do(ctx, "GET", path, "", nil, &rec); api.Code(err) != api.CodeForbidden || rec.Summary != "" {
			t.Fatalf("portal GET %s: %v %+v, want forbidden", path, err, rec)
		}
	}
	// Another department of the same district does not see it either: it
	// reads its own records, (its department, id).
	ca := issueUser(t, f, "department", regionOf(f, d), "tax")
	if _, err := clientOf(t, f, d, ca).Record(ctx, "PR-1"); api.Code(err) != api.CodeNotFound {
		t.Fatalf("another department's read: %v, want not_found", err)
	}
	if rec, err := dc.Record(ctx, "PR-1"); err != nil || rec.ID != "PR-1" {
		t.Fatalf("the collector's read: %+v %v", rec, err)
	}
	// A bad date in a correction names its field.
	bad := "2026-02-30"
	_, err := dc.Correct(ctx, "PR-1", api.Correction{DecidedOn: &bad, Reason: "r"})
	if se, ok := err.(*api.StatusError); !ok || se.Status != 400 || se.Err.Field != "decided_on" {
		t.Fatalf("correction with a bad date: %v", err)
	}
	// A known path with another method is 405 with Allow.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig(t, f, f.Layout.Departments[d])}}
	req, _ := http.NewRequestWithContext(ctx, "DELETE", "https://"+f.Node(d).APIAddr()+"/v1/records/PR-1", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
		t.Fatalf("DELETE: %d Allow=%q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if _, err := dc.Do(ctx, "GET", "/v1/nothing", "", nil, nil); api.Code(err) != api.CodeNotFound {
		t.Fatalf("unknown path: %v", err)
	}
}

// TestFederationShowsTheJobs: GET /v1/federation names a district's jobs
// with their state, and their run counts survive a restart.
func TestFederationShowsTheJobs(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	c := department(t, f, d)
	var runs int64
	wait.Until(t, 20*time.Second, "both jobs to have run", func() bool {
		v, err := c.Federation(ctxT(t, 10*time.Second))
		if err != nil {
			return false
		}
		names := map[string]api.JobStatus{}
		for _, j := range v.Jobs {
			names[j.Name] = j
		}
		runs = names["sweep"].Runs
		return names["publish"].Runs > 0 && runs > 0 && names["sweep"].LastSuccess != ""
	})
	if err := f.StopNode(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if err := f.StartNode(d); err != nil {
		t.Fatal(err)
	}
	c = department(t, f, d)
	wait.Until(t, 20*time.Second, "the sweep's runs to count on from before the restart", func() bool {
		v, err := c.Federation(ctxT(t, 10*time.Second))
		if err != nil {
			return false
		}
		for _, j := range v.Jobs {
			if j.Name == "sweep" && j.Runs > runs {
				return true
			}
		}
		return false
	})
}

// TestOnlyCoordinatorsHoldTheIndex: GET /v1/federation says how many index
// entries a node's state holds: a district holds none (the index reaches
// it sealed), a coordinator holds them all.
func TestOnlyCoordinatorsHoldTheIndex(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	d := f.Districts()[0]
	subject := credit.SyntheticPerson(8282, credit.NewDate(1979, 9, 9))
	submit(t, f, d, record("IX-1", subject, "FOOD-DRUG-PENALTY", "s"))
	waitIndexed(t, f, subject, 1)
	v, err := clientOf(t, f, f.Province(), f.Layout.Operator).Federation(ctxT(t, 10*time.Second))
	if err != nil || v.Index.Entries < 1 {
		t.Fatalf("the province's entries: %+v %v", v.Index, err)
	}
	v, err = department(t, f, d).Federation(ctxT(t, 10*time.Second))
	if err != nil || v.Index.Entries != 0 {
		t.Fatalf("the district's entries: %+v %v", v.Index, err)
	}
	if entries, err := entriesAt(t, f, d, subject); !errors.Is(err, consensus.ErrNoIndex) || len(entries) != 0 {
		t.Fatalf("the district's replica answers a lookup of the index: %v %v", entries, err)
	}
}
