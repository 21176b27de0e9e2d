package console

// A second hostile review, of what changed since the first: each test
// names what it keeps from happening.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"credfed/api"
)

// An NDJSON file of newlines is split within a small multiple of its
// size: bytes.Split made a slice header of every line, 24 bytes for each
// byte of the file (1.5 GiB for an upload of 64 MiB).
func TestHostile2NDJSONOfNewlinesDoesNotAmplifyMemory(t *testing.T) {
	const size = 8 << 20
	newlines := append([]byte("{}"), bytes.Repeat([]byte("\n"), size)...)
	many := bytes.Repeat([]byte("{}\n\n\n\n\n\n\n\n"), size/10)
	for _, c := range []struct {
		name   string
		body   []byte
		refuse bool
	}{
		{"a record and 8 Mi newlines", newlines, false},
		{"more records than an upload may hold, among newlines", many, true},
	} {
		var err error
		n := allocated(func() { _, err = toNDJSON("r.ndjson", c.body) })
		if (err != nil) != c.refuse {
			t.Errorf("%s: error %v", c.name, err)
		}
		if n > 4*uint64(len(c.body)) {
			t.Errorf("%s: %d MiB allocated for a file of %d MiB", c.name, n>>20, len(c.body)>>20)
		}
	}
	// Lines are still counted from 1, blank ones skipped.
	out, lines, err := toNDJSONLines("r.ndjson", []byte("\n {\"a\":1} \r\n\n{\"b\":2}"))
	if err != nil || string(out) != "{\"a\":1}\n{\"b\":2}\n" || len(lines) != 2 || lines[0] != 2 || lines[1] != 4 {
		t.Errorf("NDJSON with blank lines: %q %v %v", out, lines, err)
	}
}

// A name no account has is audited as a keyed hash: a plain hash of a
// password typed into the name field is found again by hashing a
// dictionary (the audit log is chained: it cannot be scrubbed after).
func TestHostile2UnknownNamesAreNotAuditedAsAPlainHash(t *testing.T) {
	tc := newTestConsole(t)
	const typed = "Tr0ub4dor&3 horse"
	var users []string
	for range 2 {
		tc.login(t, tc.browser(t), typed, "x")
		tc.audit.mu.Lock()
		users = append(users, tc.audit.entries[len(tc.audit.entries)-1].User)
		tc.audit.mu.Unlock()
	}
	if users[0] != users[1] || !strings.HasPrefix(users[0], "unknown:") {
		t.Fatalf("an unknown name audited as %q, then %q", users[0], users[1])
	}
	for _, plain := range []string{"console-account:" + typed, typed} {
		sum := sha256.Sum256([]byte(plain))
		if h := hex.EncodeToString(sum[:]); strings.HasPrefix(h, strings.TrimPrefix(users[0], "unknown:")) {
			t.Errorf("the audit's %q is a plain hash of the name", users[0])
		}
	}
}

// casesAPI answers the records and cases pages and their forms: a
// correction makes version 2, a decision upholds.
func casesAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		p := r.URL.Path
		switch {
		case r.Method == "GET" && p == "/v1/records":
			_ = json.NewEncoder(w).Encode(api.RecordPage{Records: []api.Record{}})
		case r.Method == "GET" && strings.HasPrefix(p, "/v1/records/"):
			_ = json.NewEncoder(w).Encode(api.Record{ID: strings.TrimPrefix(p, "/v1/records/"), Version: 1, Status: "active"})
		case r.Method == "POST" && strings.HasSuffix(p, "/corrections"):
			_ = json.NewEncoder(w).Encode(api.Record{ID: "r1", Version: 2, Status: "active"})
		case r.Method == "GET" && p == "/v1/objections":
			_ = json.NewEncoder(w).Encode(api.Cases{Cases: []api.Case{}})
		case r.Method == "POST" && strings.HasPrefix(p, "/v1/objections/"):
			_ = json.NewEncoder(w).Encode(api.Case{ID: "O-1", Kind: "objection", State: "decided", Outcome: "upheld"})
		default:
			http.NotFound(w, r)
		}
	})
}

// The notice after a correction or a decision is the session's own: a
// link with the redirect's query made the page say, in its status box,
// that a record was corrected or a case decided, and for a case with any
// text a link chose ("O-1 已处理：维持。请致电…").
func TestHostile2ALinkCannotMakeThePageSayWhatWasDone(t *testing.T) {
	tc := newConsoleWith(t, casesAPI(), nil, nil)
	c := tc.browser(t)
	_, csrf := tc.login(t, c, "dept", password)
	phish := "O-9 的异议已撤销。账号异常，请立即致电 400-000-0000 核实"
	for _, u := range []string{
		"/console/cases?" + url.Values{"kind": {"objections"}, "decided": {phish}, "outcome": {"upheld"}}.Encode(),
		"/console/records?id=r1&corrected=7",
	} {
		st, page := get(t, c, tc.srv.URL+u)
		if st != http.StatusOK || strings.Contains(page, `id="notice"`) || strings.Contains(page, "账号异常") {
			t.Errorf("%s: HTTP %d, the page says what was not done:\n%s", u, st, page)
		}
	}
	// What the session did is still said after its redirect, and only to it.
	other := tc.browser(t)
	tc.login(t, other, "dept", password)
	for _, f := range []struct{ form, want string }{
		{"/console/cases/objections/O-1", "O-1"},
		{"/console/records/r1/correct", "第 2 版"},
	} {
		st, _, h := post(t, c, tc.srv.URL+f.form, url.Values{"csrf": {csrf}, "outcome": {"upheld"}, "reason": {"checked"}, "summary": {"s"}})
		if st != http.StatusSeeOther {
			t.Fatalf("%s: HTTP %d", f.form, st)
		}
		loc := h.Get("Location")
		if _, page := get(t, c, tc.srv.URL+loc); !strings.Contains(page, `id="notice"`) || !strings.Contains(page, f.want) {
			t.Errorf("%s: the session's own notice is missing:\n%s", loc, page)
		}
		if _, page := get(t, other, tc.srv.URL+loc); strings.Contains(page, `id="notice"`) {
			t.Errorf("%s: another session is told what this one did", loc)
		}
	}
}

// A login does not wait on an API that does not answer whether it admits
// the identity: it waited for the client's minute. The question is
// bounded (probeWait, a few seconds) and the login goes on.
func TestHostile2ALoginDoesNotWaitOnAStuckAPI(t *testing.T) {
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) }) // before the server's Close, which waits for requests
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/federation" {
			select {
			case <-r.Context().Done():
			case <-stuck:
			}
			return
		}
		http.NotFound(w, r)
	})
	tc := newConsoleWith(t, h, nil, nil)
	if tc.cs.probeWait <= 0 || tc.cs.probeWait > 10*time.Second {
		t.Fatalf("the login's probe waits %v", tc.cs.probeWait)
	}
	tc.cs.probeWait = 200 * time.Millisecond
	c := tc.browser(t)
	_, page := get(t, c, tc.srv.URL+"/console/login")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("the login page has no CSRF field")
	}
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", tc.srv.URL+"/console/login",
			strings.NewReader(url.Values{"csrf": {m[1]}, "name": {"ops"}, "password": {password}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := c.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case st := <-done:
		if st != http.StatusSeeOther {
			t.Errorf("the login with a stuck API: HTTP %d", st)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the login still waits on the API after 15 s")
	}
}
