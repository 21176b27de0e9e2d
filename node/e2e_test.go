package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"credfed/certs"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/storage"
)

var fastRaft = RaftTiming{Heartbeat: 300 * time.Millisecond, Election: 300 * time.Millisecond,
	LeaderLease: 150 * time.Millisecond, Commit: 5 * time.Millisecond}

func testLogger() *slog.Logger {
	if os.Getenv("CREDFED_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startLocal runs a local federation for a test and stops it at the end.
func startLocal(t *testing.T, spec LocalSpec) *LocalFederation {
	t.Helper()
	return startLocalWith(t, spec, Options{})
}

// startLocalWith is startLocal with options (a test clock); the logger and
// Raft timing are the tests' own.
func startLocalWith(t *testing.T, spec LocalSpec, opts Options) *LocalFederation {
	t.Helper()
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	opts.Logger, opts.RaftTiming = testLogger(), fastRaft
	f, err := StartLocal(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		f.Stop(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

// apiClient calls a node's API with a client certificate (or none).
type apiClient struct {
	t    *testing.T
	http *http.Client
}

func newClient(t *testing.T, f *LocalFederation, files *ClientFiles) *apiClient {
	t.Helper()
	pool, err := certs.LoadPool(f.Layout.CA)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if files != nil {
		pair, err := certs.LoadKeyPair(files.Cert, files.Key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return &apiClient{t: t, http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}}
}

// do sends a request and decodes the JSON answer into out (if not nil).
func (c *apiClient) do(method, url, contentType string, body any, out any) int {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

func apiURL(f *LocalFederation, name, path string) string {
	return "https://" + f.Node(name).APIAddr() + path
}

type submitAnswer struct {
	Results []struct {
		Index  int    `json:"index"`
		ID     string `json:"id"`
		Status string `json:"status"`
		Error  *struct {
			Code, Message, Field string
		} `json:"error"`
	} `json:"results"`
}

type lookupAnswer struct {
	SubjectPseudonym string `json:"subject_pseudonym"`
	Districts        []struct {
		District string `json:"district"`
		Status   string `json:"status"`
		Error    string `json:"error"`
		Records  []struct {
			ID         string `json:"id"`
			Status     string `json:"status"`
			Department string `json:"department"`
			Summary    string `json:"summary"`
		} `json:"records"`
	} `json:"districts"`
	Error *struct{ Code, Message, Field string } `json:"error"`
}

// recentDecision is the decision date of the records tests submit: a few
// days ago, so that they are displayed whenever the tests run (every item
// is displayed for months at least); fixed dates would age out of their
// display periods and break the tests a year later.
var recentDecision = credit.TodayAt(time.Now()) - 4

func record(id, subject, item, summary string) map[string]string {
	return map[string]string{"id": id, "subject": subject, "catalog_item": item,
		"decision_number": fmt.Sprintf("浙市监罚〔%d〕%s", recentDecision.Time().Year(), id),
		"occurred_on":     (recentDecision - 8).String(), "decided_on": recentDecision.String(), "summary": summary}
}

// waitIndexed waits until the coordinator's index lists the subject at n
// districts.
func waitIndexed(t *testing.T, f *LocalFederation, subject string, n int) {
	t.Helper()
	prov := f.Node("zhejiang")
	p := prov.key.Pseudonym(subject)
	wait.Until(t, 30*time.Second, fmt.Sprintf("the index to list the subject at %d districts", n), func() bool {
		entries, _, err := prov.rep.State().Lookup(p)
		held := 0
		for _, e := range entries {
			if e.Holds() {
				held++
			}
		}
		return err == nil && held >= n
	})
}

func TestLookupAcrossDistricts(t *testing.T) {
	f := startLocal(t, LocalSpec{Districts: 2})
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	subject := credit.SyntheticPerson(4242, credit.NewDate(1980, 5, 17))
	secret := "罚款人民币五千元的具体事由"

	for i, d := range []string{kecheng, xihu} {
		files := f.Layout.Departments[d]
		var ans submitAnswer
		code := newClient(t, f, &files).do("POST", apiURL(f, d, "/v1/records"), "application/json",
			[]any{record(fmt.Sprintf("R-%d", i), subject, "FOOD-DRUG-PENALTY", secret)}, &ans)
		if code != http.StatusOK || len(ans.Results) != 1 || ans.Results[0].Status != "accepted" {
			t.Fatalf("submit at %s: %d %+v", d, code, ans)
		}
	}
	waitIndexed(t, f, subject, 2)

	coord := newClient(t, f, &f.Layout.Coordinator)
	lookup := map[string]string{"subject": subject, "purpose": "ADMIN-LICENSING", "user": "张三",
		"reference": "许可〔2026〕1号"}
	var ans lookupAnswer
	if code := coord.do("POST", apiURL(f, "zhejiang", "/v1/lookups"), "application/json", lookup, &ans); code != http.StatusOK {
		t.Fatalf("lookup: %d %+v", code, ans)
	}
	if len(ans.Districts) != 2 {
		t.Fatalf("districts %+v", ans.Districts)
	}
	for _, d := range ans.Districts {
		if d.Status != "ok" || len(d.Records) != 1 || d.Records[0].Department != DemoDepartment {
			t.Fatalf("district %+v", d)
		}
	}

	// One district down: the other's records, and the down one unreachable,
	// within the lookup deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.StopNode(ctx, xihu); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ans = lookupAnswer{}
	if code := coord.do("POST", apiURL(f, "zhejiang", "/v1/lookups"), "application/json", lookup, &ans); code != http.StatusOK {
		t.Fatalf("lookup with a district down: %d", code)
	}
	if took := time.Since(start); took > time.Duration(f.Node("zhejiang").cfg.LookupTimeout)+2*time.Second {
		t.Fatalf("lookup took %v, beyond its deadline", took)
	}
	statuses := map[string]string{}
	for _, d := range ans.Districts {
		statuses[d.District] = d.Status
		if d.Status == "ok" && len(d.Records) != 1 {
			t.Fatalf("remaining district answered %+v", d)
		}
	}
	if statuses["zhejiang/quzhou/"+kecheng] != "ok" || (statuses["zhejiang/hangzhou/"+xihu] != "unreachable" && statuses["zhejiang/hangzhou/"+xihu] != "timeout") {
		t.Fatalf("statuses with a district down: %v", statuses)
	}

	// Restarted, it answers again with its records.
	if err := f.StartNode(xihu); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 30*time.Second, "the restarted district to answer again", func() bool {
		ans = lookupAnswer{}
		coord.do("POST", apiURL(f, "zhejiang", "/v1/lookups"), "application/json", lookup, &ans)
		ok := 0
		for _, d := range ans.Districts {
			if d.Status == "ok" && len(d.Records) == 1 {
				ok++
			}
		}
		return ok == 2
	})

	// The answering districts audited the lookup (pseudonym only).
	p := f.Node("zhejiang").key.Pseudonym(subject).String()
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

func TestLookupRefusalsAreAudited(t *testing.T) {
	f := startLocal(t, LocalSpec{Districts: 1})
	subject := credit.SyntheticPerson(77, credit.NewDate(1990, 1, 1))
	prov := f.Node("zhejiang")
	p := prov.key.Pseudonym(subject).String()
	url := apiURL(f, "zhejiang", "/v1/lookups")
	base := map[string]string{"subject": subject, "purpose": "ADMIN-LICENSING", "user": "李四", "reference": "R-1"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range base {
			m[a] = b
		}
		m[k] = v
		return m
	}
	dept := f.Layout.Departments[f.Districts()[0]]
	wrong := subject[:17] + "0"
	if subject[17] == '0' {
		wrong = subject[:17] + "1"
	}
	cases := []struct {
		name   string
		client *apiClient
		body   map[string]string
		status int
		code   string
	}{
		{"unknown purpose", newClient(t, f, &f.Layout.Coordinator), with("purpose", "curiosity"), 403, "forbidden"},
		{"no purpose", newClient(t, f, &f.Layout.Coordinator), with("purpose", ""), 400, "bad_request"},
		{"no reference", newClient(t, f, &f.Layout.Coordinator), with("reference", ""), 400, "bad_request"},
		{"authorization required", newClient(t, f, &f.Layout.Coordinator), with("purpose", "CIVIL-SERVICE-RECRUITMENT"), 403, "forbidden"},
		{"department certificate", newClient(t, f, &dept), base, 403, "forbidden"},
		{"invalid identifier", newClient(t, f, &f.Layout.Coordinator), with("subject", wrong), 400, "invalid_identifier"},
	}
	for _, c := range cases {
		var ans lookupAnswer
		if got := c.client.do("POST", url, "application/json", c.body, &ans); got != c.status || ans.Error == nil || ans.Error.Code != c.code {
			t.Errorf("%s: %d %+v", c.name, got, ans.Error)
		}
	}
	// No certificate: unauthenticated.
	if got := newClient(t, f, nil).do("POST", url, "application/json", base, nil); got != http.StatusUnauthorized {
		t.Errorf("no certificate: %d", got)
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
	f := startLocal(t, LocalSpec{Districts: 2})
	d0, d1 := f.Districts()[0], f.Districts()[1]
	files := f.Layout.Departments[d0]
	c := newClient(t, f, &files)
	url := apiURL(f, d0, "/v1/records")
	subject := credit.SyntheticPerson(9, credit.NewDate(1975, 2, 3))

	good := record("A-1", subject, "FOOD-DRUG-PENALTY", "s")
	otherDept := record("A-2", subject, "FOOD-DRUG-PENALTY", "s")
	otherDept["department"] = "tax"
	unknownItem := record("A-3", subject, "NO-SUCH-ITEM", "s")
	badSubject := record("A-4", subject[:17]+"0", "FOOD-DRUG-PENALTY", "s")
	if subject[17] == '0' {
		badSubject["subject"] = subject[:17] + "1"
	}
	var ans submitAnswer
	code := c.do("POST", url, "application/json", []any{good, otherDept, unknownItem, badSubject}, &ans)
	if code != http.StatusMultiStatus {
		t.Fatalf("mixed batch: %d", code)
	}
	want := []struct{ status, code string }{{"accepted", ""}, {"rejected", "forbidden"}, {"rejected", "unknown_catalog_item"}, {"rejected", "invalid_identifier"}}
	for i, w := range want {
		r := ans.Results[i]
		if r.Status != w.status || (w.code != "" && (r.Error == nil || r.Error.Code != w.code)) {
			t.Errorf("item %d: %+v", i, r)
		}
		if r.Error != nil && strings.Contains(r.Error.Message, subject) {
			t.Errorf("item %d error echoes the identifier: %s", i, r.Error.Message)
		}
	}
	// Idempotent: the same record again is a duplicate; other content a conflict.
	ans = submitAnswer{}
	changed := record("A-1", subject, "FOOD-DRUG-PENALTY", "other summary")
	if code := c.do("POST", url, "application/x-ndjson", ndjson(t, good, changed), &ans); code != http.StatusMultiStatus ||
		ans.Results[0].Status != "duplicate" || ans.Results[1].Status != "rejected" || ans.Results[1].Error.Code != "conflict" {
		t.Fatalf("resubmission: %d %+v", code, ans)
	}
	// A department of another district may not submit here.
	otherFiles := f.Layout.Departments[d1]
	var e struct{ Error struct{ Code string } }
	if code := newClient(t, f, &otherFiles).do("POST", url, "application/json", good, &e); code != http.StatusForbidden {
		t.Fatalf("other district's department: %d %+v", code, e)
	}
	// Malformed JSON: a clear error, nothing stored.
	if code := c.do("POST", url, "application/json", `[{"id": "X",`, &e); code != http.StatusBadRequest || e.Error.Code != "bad_request" {
		t.Fatalf("malformed: %d %+v", code, e)
	}
	if n := f.Node(d0).Store().CountRecords(); n != 1 {
		t.Fatalf("%d records stored, want 1", n)
	}
	// The record, its versions, and a correction.
	var rec struct {
		Status   string `json:"status"`
		Version  int    `json:"version"`
		Versions []struct {
			Version int `json:"version"`
		} `json:"versions"`
	}
	if code := c.do("POST", apiURL(f, d0, "/v1/records/A-1/corrections"), "application/json",
		map[string]string{"summary": "corrected summary", "reason": "typo in the decision"}, &rec); code != http.StatusOK || rec.Version != 2 {
		t.Fatalf("correction: %d %+v", code, rec)
	}
	if code := c.do("GET", apiURL(f, d0, "/v1/records/A-1"), "", nil, &rec); code != http.StatusOK || rec.Version != 2 || len(rec.Versions) != 2 {
		t.Fatalf("get: %d %+v", code, rec)
	}
}

func ndjson(t *testing.T, items ...any) []byte {
	var b bytes.Buffer
	for _, it := range items {
		data, err := json.Marshal(it)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func TestMetricsListener(t *testing.T) {
	f := startLocal(t, LocalSpec{Districts: 1})
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
	for _, want := range []string{"credfed_consensus_applied_index", "credfed_exchange_", "credfed_go_goroutines", "credfed_node_info"} {
		if !strings.Contains(body, want) {
			t.Errorf("no %s in /metrics", want)
		}
	}
	if names < 20 {
		t.Fatalf("only %d samples", names)
	}
}

func TestPortalReadsAreAuditedAndErrorsAreTyped(t *testing.T) {
	f := startLocal(t, LocalSpec{Districts: 1})
	d := f.Districts()[0]
	dept := f.Layout.Departments[d]
	portalFiles := f.Layout.Portals[d]
	dc, pc := newClient(t, f, &dept), newClient(t, f, &portalFiles)
	subject := credit.SyntheticPerson(606, credit.NewDate(1988, 8, 8))
	var ans submitAnswer
	if code := dc.do("POST", apiURL(f, d, "/v1/records"), "application/json", record("PR-1", subject, "FOOD-DRUG-PENALTY", "s"), &ans); code != 200 {
		t.Fatalf("submit: %d", code)
	}
	var e struct{ Error struct{ Code, Field string } }
	// A portal must say how it verified the subject.
	if code := pc.do("GET", apiURL(f, d, "/v1/records/PR-1"), "", nil, &e); code != 400 || e.Error.Field != "authentication" {
		t.Fatalf("portal read without authentication: %d %+v", code, e)
	}
	if code := pc.do("GET", apiURL(f, d, "/v1/records/NOPE?authentication=A-1"), "", nil, &e); code != 404 || e.Error.Code != "not_found" {
		t.Fatalf("portal read of an unknown record: %d %+v", code, e)
	}
	var rec struct{ ID, Status string }
	if code := pc.do("GET", apiURL(f, d, "/v1/records/PR-1?authentication=实名认证-0001"), "", nil, &rec); code != 200 || rec.ID != "PR-1" {
		t.Fatalf("portal read: %d %+v", code, rec)
	}
	p := f.Node("zhejiang").key.Pseudonym(subject).String()
	entries, err := f.Node(d).Store().Audit().BySubject(p)
	if err != nil || len(entries) != 1 || entries[0].Operation != "record.read" || entries[0].Authentication != "实名认证-0001" {
		t.Fatalf("portal read audit: %+v %v", entries, err)
	}
	// A bad date in a correction names its field.
	if code := dc.do("POST", apiURL(f, d, "/v1/records/PR-1/corrections"), "application/json",
		map[string]string{"decided_on": "2026-02-30", "reason": "r"}, &e); code != 400 || e.Error.Field != "decided_on" {
		t.Fatalf("correction with a bad date: %d %+v", code, e)
	}
	// A known path with another method is 405 with Allow.
	req, _ := http.NewRequest("DELETE", apiURL(f, d, "/v1/records/PR-1"), nil)
	resp, err := dc.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
		t.Fatalf("DELETE: %d Allow=%q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if code := dc.do("GET", apiURL(f, d, "/v1/nothing"), "", nil, &e); code != 404 || e.Error.Code != "not_found" {
		t.Fatalf("unknown path: %d %+v", code, e)
	}
}
