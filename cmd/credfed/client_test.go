package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"credfed/api"
)

// lookupArgs are a complete lookup but for the connection.
var lookupArgs = []string{"lookup", "--subject", exampleSubject, "--purpose", "ADMIN-LICENSING", "--reference", "R-1", "--user", "tester"}

func TestConnectionFlagsWinOverEnvironment(t *testing.T) {
	l := testLayout(t)
	a, b := startFakeNode(t, l), startFakeNode(t, l)
	t.Setenv(api.EnvAddr, a.URL)
	t.Setenv(api.EnvCACert, l.CA)
	t.Setenv(api.EnvClientCert, l.Operator.Cert)
	t.Setenv(api.EnvClientKey, l.Operator.Key)

	// The environment alone.
	if _, e, code := runCLI(t, lookupArgs...); code != 0 {
		t.Fatalf("lookup from the environment: %d %s", code, e)
	}
	if c := a.lastCall(t); c.Caller != l.Operator.Identity || c.Path != "/v1/lookups" {
		t.Fatalf("from the environment: %+v, want a lookup by %s", c, l.Operator.Identity)
	}
	// --addr wins over CREDFED_ADDR, and so does the hidden --api.
	for _, flag := range []string{"--addr", "--api"} {
		before := len(a.Calls())
		if _, e, code := runCLI(t, append(lookupArgs, flag, b.URL)...); code != 0 {
			t.Fatalf("lookup with %s: %d %s", flag, code, e)
		}
		if len(a.Calls()) != before || b.lastCall(t).Caller != l.Operator.Identity {
			t.Fatalf("%s did not win over %s: %d calls at A, B's last %+v", flag, api.EnvAddr, len(a.Calls())-before, b.lastCall(t))
		}
	}
	// --cert and --key win as a pair over the variables.
	if _, e, code := runCLI(t, append(lookupArgs, "--cert", l.Coordinator.Cert, "--key", l.Coordinator.Key)...); code != 0 {
		t.Fatalf("lookup with --cert: %d %s", code, e)
	}
	if c := a.lastCall(t); c.Caller != l.Coordinator.Identity {
		t.Fatalf("--cert did not win: caller %s", c.Caller)
	}
	// A flag's name for a missing file is an error of its own.
	if _, e, code := runCLI(t, append(lookupArgs, "--ca", filepath.Join(t.TempDir(), "none.pem"))...); code != 1 || !strings.Contains(e, "none.pem") {
		t.Fatalf("--ca of a missing file: %d %s", code, e)
	}
}

func TestConnectionUsageErrors(t *testing.T) {
	clearConnectionEnv(t)
	l := testLayout(t)
	f := startFakeNode(t, l)
	dir := writeFakeDemo(t, l, f)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "name the node with --addr and --ca (or CREDFED_ADDR and CREDFED_CACERT)"},
		{[]string{"--addr", f.URL}, "name the node with --addr and --ca"},
		{[]string{"--addr", f.URL, "--ca", l.CA, "--cert", l.Operator.Cert}, "needs both --cert and --key"},
		{[]string{"--demo", dir, "--addr", f.URL}, "leave out --addr"},
		{[]string{"--node", "quzhou"}, "use them with --demo DIR"},
		{[]string{"--as", "operator", "--addr", f.URL, "--ca", l.CA}, "use them with --demo DIR"},
		{[]string{"--demo", dir, "--as", "mayor"}, "--as must be one of coordinator, operator, department, portal"},
		{[]string{"--demo", dir, "--node", "nowhere"}, `the demo has no node "nowhere" (its nodes: zhejiang, quzhou, hangzhou, kecheng, xihu)`},
		{[]string{"--demo", dir, "--node", "kecheng"}, "coordinators look subjects up through a coordinator node"},
		{[]string{"--demo", dir, "--as", "department", "--node", "quzhou"}, "departments belong to districts"},
	}
	for _, c := range cases {
		_, e, code := runCLI(t, append(lookupArgs, c.args...)...)
		if code != 2 || !strings.Contains(e, c.want) {
			t.Errorf("lookup %v: exit %d, stderr %q; want exit 2 with %q", c.args, code, e, c.want)
		}
	}
	if n := len(f.Calls()); n != 0 {
		t.Fatalf("refused command lines reached the node %d times", n)
	}
	if _, e, code := runCLI(t, append(lookupArgs, "--demo", t.TempDir())...); code != 1 || !strings.Contains(e, "credfed demo --dir") {
		t.Fatalf("--demo of a directory without demo.json: %d %s", code, e)
	}
}

func TestDemoCoordinatorOfACity(t *testing.T) {
	clearConnectionEnv(t)
	l := testLayout(t)
	f := startFakeNode(t, l)
	dir := writeFakeDemo(t, l, f)
	city := l.Coordinators["quzhou"].Identity
	if city == "" || city == l.Coordinator.Identity {
		t.Fatalf("the layout has no coordinator of its own for quzhou: %+v", l.Coordinators)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--demo", dir}, l.Coordinator.Identity},
		{[]string{"--demo", dir, "--as", "coordinator", "--node", "quzhou"}, city},
		{[]string{"--demo", dir, "--node", "hangzhou"}, l.Coordinators["hangzhou"].Identity},
		{[]string{"--demo", dir, "--as", "operator", "--node", "xihu"}, l.Operator.Identity},
	} {
		if _, e, code := runCLI(t, append(lookupArgs, c.args...)...); code != 0 {
			t.Fatalf("lookup %v: %d %s", c.args, code, e)
		}
		if got := f.lastCall(t).Caller; got != c.want {
			t.Errorf("lookup %v called as %s, want %s", c.args, got, c.want)
		}
	}
	// Single-dash long flags, as Go's flag package read them, still work.
	if _, e, code := runCLI(t, "lookup", "-demo", dir, "-as=coordinator", "-node", "quzhou", "-subject", exampleSubject,
		"-purpose", "ADMIN-LICENSING", "-reference", "R-1", "-user", "tester"); code != 0 || f.lastCall(t).Caller != city {
		t.Fatalf("single-dash flags: %d %s, caller %s", code, e, f.lastCall(t).Caller)
	}
	var req api.LookupRequest
	if err := json.Unmarshal(f.lastCall(t).Body, &req); err != nil || req.Subject != exampleSubject || req.User != "tester" || req.Reference != "R-1" {
		t.Fatalf("the lookup's body: %+v %v", req, err)
	}
}

func TestFlagsAfterThePositionalArgument(t *testing.T) {
	clearConnectionEnv(t)
	l := testLayout(t)
	f := startFakeNode(t, l)
	dir := writeFakeDemo(t, l, f)
	out, e, code := runCLI(t, "records", "submit", filepath.Join("..", "..", "examples", "records.ndjson"), "--demo", dir, "--node", "xihu")
	if code != 0 {
		t.Fatalf("records submit FILE --demo …: %d %s", code, e)
	}
	c := f.lastCall(t)
	if c.Path != "/v1/records" || c.Caller != l.Departments["xihu"].Identity || strings.Count(string(c.Body), "\n") != 3 {
		t.Fatalf("the submission: %s by %s:\n%s", c.Path, c.Caller, c.Body)
	}
	if !strings.Contains(out, "read 3 records (NDJSON) from") || !strings.Contains(out, "3 records: 3 accepted, 0 duplicate, 0 rejected") {
		t.Fatalf("records submit reported:\n%s", out)
	}
	// The department of the first district by default.
	if _, e, code := runCLI(t, "records", "submit", "--demo", dir, filepath.Join("..", "..", "examples", "records.csv")); code != 0 {
		t.Fatalf("records submit --demo … FILE: %d %s", code, e)
	}
	if got := f.lastCall(t).Caller; got != l.Departments["kecheng"].Identity {
		t.Fatalf("default department: %s", got)
	}
}

func TestLookupUserFallsBack(t *testing.T) {
	clearConnectionEnv(t)
	l := testLayout(t)
	f := startFakeNode(t, l)
	dir := writeFakeDemo(t, l, f)
	orig := osUserName
	t.Cleanup(func() { osUserName = orig })
	args := []string{"lookup", "--demo", dir, "--subject", exampleSubject, "--purpose", "ADMIN-LICENSING", "--reference", "R-2"}
	user := func() string {
		t.Helper()
		var req api.LookupRequest
		if err := json.Unmarshal(f.lastCall(t).Body, &req); err != nil {
			t.Fatal(err)
		}
		return req.User
	}
	for _, c := range []struct{ env, logname, osUser, flag, want string }{
		{"alice", "bob", "carol", "", "alice"},
		{"", "bob", "carol", "", "bob"},
		{"", "", "carol", "", "carol"},
		{"alice", "bob", "carol", "dave", "dave"},
	} {
		t.Setenv("USER", c.env)
		t.Setenv("LOGNAME", c.logname)
		osUserName = func() string { return c.osUser }
		a := args
		if c.flag != "" {
			a = append(append([]string(nil), args...), "--user", c.flag)
		}
		if _, e, code := runCLI(t, a...); code != 0 {
			t.Fatalf("%+v: %d %s", c, code, e)
		}
		if got := user(); got != c.want {
			t.Errorf("USER=%q LOGNAME=%q OS user %q --user %q: the lookup names %q, want %q", c.env, c.logname, c.osUser, c.flag, got, c.want)
		}
	}
	// Nobody known: --user is required, and nothing is asked.
	t.Setenv("USER", "")
	t.Setenv("LOGNAME", "")
	osUserName = func() string { return "" }
	before := len(f.Calls())
	_, e, code := runCLI(t, args...)
	if code != 2 || !strings.Contains(e, "--user is required") || len(f.Calls()) != before {
		t.Fatalf("without any user: exit %d, %d calls, stderr %q", code, len(f.Calls())-before, e)
	}
	// The real fallback knows who runs the test (os/user), when the
	// system does.
	if u := orig(); u != "" && defaultUser(func(string) string { return "" }, orig) != u {
		t.Fatalf("defaultUser does not fall back to the OS user %q", u)
	}
}

func TestJSONIsTheAnswerAsSent(t *testing.T) {
	clearConnectionEnv(t)
	l := testLayout(t)
	f := startFakeNode(t, l)
	dir := writeFakeDemo(t, l, f)
	f.lookupAnswer = []byte(`{"subject_pseudonym":"p-1",  "future_field":{"kept":true},"index":{"consistency":"local","applied_index":3},"districts":[]}`)
	out, e, code := runCLI(t, append(lookupArgs, "--demo", dir, "--json")...)
	if code != 0 || out != string(f.lookupAnswer)+"\n" {
		t.Fatalf("lookup --json: %d %s\n%q", code, e, out)
	}
	f.federation = api.Federation{Federation: "demo", Node: api.NodeStatus{Name: "浙江省", Role: "province"}}
	out, e, code = runCLI(t, "federation", "status", "--demo", dir, "--json")
	var got api.Federation
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Node.Name != "浙江省" {
		t.Fatalf("federation status --json: %d %s\n%s", code, e, out)
	}
	out, _, code = runCLI(t, "records", "submit", "--demo", dir, "--json", filepath.Join("..", "..", "examples", "records.json"))
	var ans api.SubmitAnswer
	if code != 0 || json.Unmarshal([]byte(out), &ans) != nil || len(ans.Results) != 3 {
		t.Fatalf("records submit --json: %d\n%s", code, out)
	}
}
