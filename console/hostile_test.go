package console

// A hostile user's, a hostile page's and a hostile peer's attempts on the
// console: each test names what it keeps from happening.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/httpapi"
	"credfed/internal/wait"
)

// newConsoleWith is newTestConsole with another API handler (nil: the
// test API), a changed Config and a handler wrapped around the console;
// it has a coordinator account "coord" too.
func newConsoleWith(t *testing.T, h http.Handler, mod func(*Config), wrap func(http.Handler) http.Handler) *testConsole {
	t.Helper()
	store := OpenStore(filepath.Join(t.TempDir(), "console"))
	clk := newClock(time.Now())
	revs := certs.NewRevocationList()
	if h == nil {
		h = httpapi.New(httpapi.Config{Cluster: cluster{}, Revocations: revs})
	}
	al := &auditLog{}
	cfg := Config{Store: store, API: h, Federation: "t", Region: "zj/hz/xh", NodeName: "西湖区", Audit: al, Now: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	cs, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []Account{{Name: "dept", Role: certs.Department, Institution: "market-supervision"},
		{Name: "ops", Role: certs.Operator, Institution: "credit-center"},
		{Name: "coord", Role: certs.Coordinator, Institution: "development-reform"}} {
		if err := store.Add(a, password, clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
	var handler http.Handler = cs
	if wrap != nil {
		handler = wrap(cs)
	}
	srv := httptest.NewTLSServer(handler)
	t.Cleanup(srv.Close)
	return &testConsole{srv: srv, cs: cs, store: store, audit: al, clock: clk, revs: revs}
}

// linkLogin logs c in with a fresh one-time link of name; it returns the
// status of the login's POST.
func (tc *testConsole) linkLogin(t *testing.T, c *http.Client, name string) int {
	t.Helper()
	path, err := tc.cs.IssueLoginLink(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(path)
	_, page := get(t, c, tc.srv.URL+path)
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the link's login page has no CSRF field:\n%s", page)
	}
	st, _, _ := post(t, c, tc.srv.URL+"/console/login", url.Values{"csrf": {m[1]}, "token": {u.Query().Get("token")}})
	return st
}

// sessionToken is the session's CSRF token, read from a page.
func (tc *testConsole) sessionToken(t *testing.T, c *http.Client) string {
	t.Helper()
	_, page := get(t, c, tc.srv.URL+"/console/federation")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF field on a page after login:\n%s", page)
	}
	return m[1]
}

func (tc *testConsole) sessionCookie(t *testing.T, c *http.Client) string {
	t.Helper()
	u, _ := url.Parse(tc.srv.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == tc.cs.sessionCookie {
			return ck.Value
		}
	}
	t.Fatal("the browser has no session cookie")
	return ""
}

// postFile posts a multipart form with the CSRF token and one file.
func postFile(t *testing.T, c *http.Client, u, csrf, filename string, content []byte, hdr ...string) (int, string) {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("csrf", csrf)
	fw, _ := mw.CreateFormFile("file", filename)
	_, _ = fw.Write(content)
	_ = mw.Close()
	st, page, _ := send(t, c, u, mw.FormDataContentType(), &body, hdr...)
	return st, page
}

// allocated is what f allocates, in bytes (the whole process's, so run
// alone).
func allocated(f func()) uint64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	f()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// An uploaded file is parsed within a small multiple of its size: a line
// of commas made the CSV reader hold a field for every byte (160 times the
// file), a JSON array a value for every element (40 times).
func TestHostileUploadsDoNotAmplifyMemory(t *testing.T) {
	const limit = 32 << 20
	commas := bytes.Repeat([]byte(","), 4<<20)
	array := append(append([]byte("["), bytes.Repeat([]byte("{},"), 1<<20)...), "{}]"...)
	var rows bytes.Buffer
	rows.WriteString("summary\n")
	for range 20001 {
		rows.WriteString("a\n")
	}
	for _, c := range []struct {
		name string
		f    func() error
	}{
		{"records CSV of commas", func() error { _, err := toNDJSON("r.csv", commas); return err }},
		{"records JSON array of a million records", func() error { _, err := toNDJSON("r.json", array); return err }},
		{"records CSV of 20001 rows", func() error { _, err := toNDJSON("r.csv", rows.Bytes()); return err }},
		{"batch CSV of commas", func() error { _, err := readBatchRows(bytes.NewReader(commas)); return err }},
	} {
		var err error
		n := allocated(func() { err = c.f() })
		if err == nil {
			t.Errorf("%s: accepted", c.name)
		}
		if n > limit {
			t.Errorf("%s: %d MiB allocated to refuse it (at most %d MiB)", c.name, n>>20, limit>>20)
		}
	}
	// What the bounds leave alone still converts.
	out, err := toNDJSON("r.json", []byte(`[{"a": 1}, {"b": [1, 2]}]`))
	if err != nil || string(out) != "{\"a\":1}\n{\"b\":[1,2]}\n" {
		t.Errorf("a JSON array of two records: %q, %v", out, err)
	}
	for _, bad := range []string{`[{}`, `[{}] x`, `[{},]`} {
		if _, err := toNDJSON("r.json", []byte(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
	out, err = toNDJSON("r.csv", []byte("summary,decision_number\n\"x, y\",\"1\n2\"\n"))
	if err != nil || string(out) != "{\"decision_number\":\"1\\n2\",\"summary\":\"x, y\"}\n" {
		t.Errorf("a CSV with quoted commas and lines: %q, %v", out, err)
	}
}

// lazyReader is n bytes of 'a', made as they are read, counted.
type lazyReader struct {
	n, read int64
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if l.n == 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), l.n)
	for i := range p[:k] {
		p[i] = 'a'
	}
	l.n -= k
	l.read += k
	return int(k), nil
}

// A POST's body is bounded before its form is read for the CSRF token:
// the bound the upload handlers set came after the form (the whole body,
// to a temporary file) was read.
func TestHostileBodiesAreBoundedBeforeTheFormIsRead(t *testing.T) {
	tc := newTestConsole(t)
	c := tc.browser(t)
	st, csrf := tc.login(t, c, "dept", password)
	if st != http.StatusSeeOther {
		t.Fatalf("login: HTTP %d", st)
	}
	cookie := tc.sessionCookie(t, c)
	for _, p := range []struct {
		path string
		max  int64
	}{{"/console/validate", 1 << 20}, {"/console/records", MaxUpload + 1<<20}} {
		const boundary = "b0undary"
		head := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n" + csrf + "\r\n" +
			"--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.ndjson\"\r\nContent-Type: application/octet-stream\r\n\r\n"
		file := &lazyReader{n: 100 << 20}
		body := io.MultiReader(strings.NewReader(head), file, strings.NewReader("\r\n--"+boundary+"--\r\n"))
		u, _ := url.Parse(tc.srv.URL)
		req := httptest.NewRequest("POST", "https://"+u.Host+p.path, body)
		req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
		req.AddCookie(&http.Cookie{Name: tc.cs.sessionCookie, Value: cookie})
		rec := httptest.NewRecorder()
		tc.cs.ServeHTTP(rec, req)
		if file.read > p.max {
			t.Errorf("POST %s of 100 MiB: %d MiB of it read (at most %d MiB)", p.path, file.read>>20, p.max>>20)
		}
		if rec.Code/100 == 2 {
			t.Errorf("POST %s of 100 MiB: HTTP %d", p.path, rec.Code)
		}
	}
}

// Uploads are handled two at a time; a further one is told to come back.
func TestHostileUploadsWaitForASlot(t *testing.T) {
	tc := newTestConsole(t)
	tc.cs.uploadWait = 0
	c := tc.browser(t)
	_, csrf := tc.login(t, c, "dept", password)
	for range cap(tc.cs.uploads) {
		tc.cs.uploads <- struct{}{}
	}
	busy := message("zh", "error.busy")
	st, body := postFile(t, c, tc.srv.URL+"/console/records", csrf, "r.ndjson", []byte("{}\n"))
	if st != http.StatusServiceUnavailable || !strings.Contains(body, busy) {
		t.Errorf("an upload while two are under way: HTTP %d", st)
	}
	for range cap(tc.cs.uploads) {
		<-tc.cs.uploads
	}
	if _, body := postFile(t, c, tc.srv.URL+"/console/records", csrf, "r.ndjson", []byte("{}\n")); strings.Contains(body, busy) {
		t.Error("an upload with the slots free is told to wait")
	}
}

// Wrong passwords sent all at once are not each checked: the throttle was
// asked before the wait for a hashing slot, and every attempt queued
// there had passed it.
func TestHostileConcurrentLoginsAreThrottled(t *testing.T) {
	var entered atomic.Int32
	tc := newConsoleWith(t, nil, nil, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "POST" && r.URL.Path == "/console/login" {
				entered.Add(1)
			}
			h.ServeHTTP(w, r)
		})
	})
	c := tc.browser(t)
	_, page := get(t, c, tc.srv.URL+"/console/login")
	csrf := csrfField.FindStringSubmatch(page)[1]
	// Both hashing slots held: the attempts gather before any is checked.
	for range cap(tc.cs.hashing) {
		tc.cs.hashing <- struct{}{}
	}
	const n = 12
	statuses := make(chan int, n)
	for i := range n {
		go func() {
			form := url.Values{"csrf": {csrf}, "name": {"dept"}, "password": {fmt.Sprintf("wrong password %d", i)}}
			req, _ := http.NewRequest("POST", tc.srv.URL+"/console/login", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := c.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wait.Until(t, 10*time.Second, "every attempt to arrive", func() bool { return entered.Load() >= n })
	for range cap(tc.cs.hashing) {
		<-tc.cs.hashing
	}
	checked := 0
	for range n {
		switch st := <-statuses; st {
		case http.StatusUnauthorized:
			checked++
		case http.StatusTooManyRequests:
		default:
			t.Errorf("an attempt: HTTP %d", st)
		}
	}
	// Each hashing slot may let one attempt past the last free failure.
	if checked > freeFailures+cap(tc.cs.hashing)-1 {
		t.Errorf("%d wrong passwords sent at once: %d checked (at most %d)", n, checked, freeFailures+cap(tc.cs.hashing)-1)
	}
}

// Failures with many other names do not push out the entry of a name
// being guessed: the throttle dropped the oldest entry when full.
func TestHostileJunkNamesDoNotFlushTheThrottle(t *testing.T) {
	tc := newTestConsole(t)
	tc.cs.throttle.max = 8
	c := tc.browser(t)
	for i := range freeFailures {
		tc.login(t, c, "dept", fmt.Sprintf("wrong password %d", i))
	}
	for i := range tc.cs.throttle.max {
		tc.clock.add(time.Millisecond)
		if st, _ := tc.login(t, c, fmt.Sprintf("junk%d", i), "wrong password"); st != http.StatusUnauthorized {
			t.Fatalf("a junk name: HTTP %d", st)
		}
	}
	if len(tc.cs.throttle.m) > tc.cs.throttle.max {
		t.Errorf("the throttle holds %d names, more than its %d", len(tc.cs.throttle.m), tc.cs.throttle.max)
	}
	if st, _ := tc.login(t, c, "dept", password); st != http.StatusTooManyRequests {
		t.Errorf("the guessed account after %d junk names: HTTP %d, want it still slowed down", tc.cs.throttle.max, st)
	}
}

// A name no account can have is not kept whole by the throttle (a login
// form carries 16 KiB; the throttle keeps 10,000 names).
func TestHostileLongNamesAreNotKeptWhole(t *testing.T) {
	tc := newTestConsole(t)
	if st, _ := tc.login(t, tc.browser(t), strings.Repeat("x", 15000), "wrong password"); st != http.StatusUnauthorized {
		t.Fatalf("a long name: HTTP %d", st)
	}
	if len(tc.cs.throttle.m) != 1 {
		t.Fatalf("the throttle holds %d names", len(tc.cs.throttle.m))
	}
	for k := range tc.cs.throttle.m {
		if len(k) > 64 {
			t.Errorf("the throttle keeps a name of %d bytes", len(k))
		}
	}
}

// Attempts refused by the throttle cost no hash: each one was audited, so
// anyone could write the audit log as fast as they could send.
func TestHostileThrottledAttemptsDoNotFloodTheAudit(t *testing.T) {
	tc := newTestConsole(t)
	c := tc.browser(t)
	for i := range freeFailures {
		tc.login(t, c, "dept", fmt.Sprintf("wrong password %d", i))
	}
	for range 20 {
		if st, _ := tc.login(t, c, "dept", "another guess"); st != http.StatusTooManyRequests {
			t.Fatalf("an attempt within the delay: HTTP %d", st)
		}
	}
	if n := strings.Count(strings.Join(tc.audit.ops(), " "), "console.login:denied:throttled"); n > 2 {
		t.Errorf("20 refused attempts wrote %d audit entries", n)
	}
	// The next delay's first refusal is audited again.
	tc.clock.add(2 * time.Second)
	tc.login(t, c, "dept", "a sixth guess")
	tc.login(t, c, "dept", "a seventh guess")
	if n := strings.Count(strings.Join(tc.audit.ops(), " "), "console.login:denied:throttled"); n != 4 {
		t.Errorf("after a further failure and a refusal: %d throttled entries, want 4", n)
	}
}

// A new password ends the sessions opened with the old one (the password
// may be changed because it leaked).
func TestHostileANewPasswordEndsSessions(t *testing.T) {
	tc := newTestConsole(t)
	c := tc.browser(t)
	tc.login(t, c, "dept", password)
	if err := tc.store.SetPassword("dept", "another long password"); err != nil {
		t.Fatal(err)
	}
	if st, _ := get(t, c, tc.srv.URL+"/console/check"); st != http.StatusSeeOther {
		t.Errorf("a session of the old password: HTTP %d, want the login", st)
	}
}

// A login ends the browser's previous session (a shared computer), not
// only its cookie.
func TestHostileALoginEndsTheBrowsersPreviousSession(t *testing.T) {
	tc := newTestConsole(t)
	c := tc.browser(t)
	_, page := get(t, c, tc.srv.URL+"/console/login")
	csrf := csrfField.FindStringSubmatch(page)[1]
	var old string
	for _, name := range []string{"dept", "ops"} {
		if st, _, _ := post(t, c, tc.srv.URL+"/console/login", url.Values{"csrf": {csrf}, "name": {name}, "password": {password}}); st != http.StatusSeeOther {
			t.Fatalf("login of %s: HTTP %d", name, st)
		}
		if old == "" {
			old = tc.sessionCookie(t, c) // the session the next login replaces
		}
	}
	req, _ := http.NewRequest("GET", tc.srv.URL+"/console/check", nil)
	req.AddCookie(&http.Cookie{Name: tc.cs.sessionCookie, Value: old})
	resp, err := tc.browser(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the session the browser had before it logged in again: HTTP %d, want the login", resp.StatusCode)
	}
	if tc.cs.Sessions() != 1 {
		t.Errorf("%d sessions open, want 1", tc.cs.Sessions())
	}
}

// One account logging in again and again closes its own sessions, not
// everyone's.
func TestHostileOneAccountCannotEvictEveryonesSessions(t *testing.T) {
	tc := newConsoleWith(t, nil, func(c *Config) { c.MaxSessions = 20 }, nil)
	victim := tc.browser(t)
	tc.login(t, victim, "ops", password)
	for i := range 25 {
		if st := tc.linkLogin(t, tc.browser(t), "dept"); st != http.StatusSeeOther {
			t.Fatalf("link login %d: HTTP %d", i, st)
		}
	}
	if st, _ := get(t, victim, tc.srv.URL+"/console/federation"); st != http.StatusOK {
		t.Errorf("another account's session after 25 logins of one account: HTTP %d", st)
	}
	if n := tc.cs.Sessions(); n > maxAccountSessions+1 {
		t.Errorf("%d sessions open", n)
	}
}

// rejectingAPI refuses every record of a submission with a long message.
func rejectingAPI(n, msgLen int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/v1/records" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		ans := api.SubmitAnswer{Results: make([]api.RecordResult, n)}
		msg := strings.Repeat("m", msgLen)
		for i := range ans.Results {
			ans.Results[i] = api.RecordResult{Index: i, Status: "rejected", Error: &api.Error{Code: "bad_request", Message: msg}}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(ans)
	})
}

// What the sessions keep of rejection reports is bounded for them all: it
// was bounded per session only (4 of 8 MiB), and sessions are a thousand.
func TestHostileRejectionReportsAreBoundedAcrossSessions(t *testing.T) {
	tc := newConsoleWith(t, rejectingAPI(10000, 900), nil, nil)
	type upload struct {
		c      *http.Client
		report string
	}
	var ups []upload
	for i := range maxAccountSessions {
		c := tc.browser(t)
		if st := tc.linkLogin(t, c, "dept"); st != http.StatusSeeOther {
			t.Fatalf("link login %d: HTTP %d", i, st)
		}
		st, body := postFile(t, c, tc.srv.URL+"/console/records", tc.sessionToken(t, c), "r.ndjson", []byte("{}\n"), "Accept", "application/json")
		var ans struct{ Report string }
		if err := json.Unmarshal([]byte(body), &ans); err != nil || ans.Report == "" {
			t.Fatalf("upload %d: HTTP %d, %.200s", i, st, body)
		}
		ups = append(ups, upload{c, ans.Report})
	}
	var total int
	for i, u := range ups {
		st, body := get(t, u.c, tc.srv.URL+u.report)
		if st == http.StatusOK {
			total += len(body)
		}
		if i == len(ups)-1 && (st != http.StatusOK || len(body) < 1<<20) {
			t.Errorf("the newest report: HTTP %d, %d bytes", st, len(body))
		}
	}
	if total > maxReportsTotal {
		t.Errorf("the sessions keep %d MiB of reports (at most %d MiB)", total>>20, maxReportsTotal>>20)
	}
}

// A job's results reach the browser as the API sends them: they were read
// whole first (up to 256 MiB, per download), so the first row came only
// after the last.
func TestHostileJobResultsAreStreamed(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	stub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/jobs/j1/results" {
			http.NotFound(w, r)
			return
		}
		enc := json.NewEncoder(w)
		_ = enc.Encode(api.BatchResult{Row: 0, Reference: "=cmd|' /C calc'!A0", Status: "ok"})
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_ = enc.Encode(api.BatchResult{Row: 1, Reference: "r2", Status: "error", Error: &api.Error{Code: "bad_request", Message: "-1+1"}})
	})
	tc := newConsoleWith(t, stub, nil, nil)
	c := tc.browser(t)
	tc.login(t, c, "coord", password)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", tc.srv.URL+"/console/jobs/j1/results", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("the results' first row did not come before the API's last: %v", err)
	}
	defer resp.Body.Close()
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(got.String(), "\n1,") {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("the results' first row did not come before the API's last (%v):\n%s", err, got.String())
		}
	}
	free()
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	got.Write(rest)
	// The API counts rows from 0, the download (a spreadsheet) from 1.
	want := "\ufeffrow,reference,subject,status,lists,measures,complete,error\n1,'=cmd|' /C calc'!A0,,ok,,,,\n2,r2,,error,,,,bad_request: -1+1\n"
	if got.String() != want {
		t.Errorf("the results:\n%s\nwant:\n%s", got.String(), want)
	}
}

// A job whose results the API refuses shows the refusal, not an empty
// download.
func TestHostileJobResultsRefusedShowTheRefusal(t *testing.T) {
	stub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: "not_found", Message: "no job <b>j1</b>"}})
	})
	tc := newConsoleWith(t, stub, nil, nil)
	c := tc.browser(t)
	tc.login(t, c, "coord", password)
	st, body := get(t, c, tc.srv.URL+"/console/jobs/j1/results")
	if st != http.StatusNotFound || !strings.Contains(body, "no job &lt;b&gt;j1&lt;/b&gt;") {
		t.Errorf("refused results: HTTP %d\n%s", st, body)
	}
}

// A login link names its account as it was when issued: a new account of
// a removed one's name does not inherit it.
func TestHostileALinkDoesNotOutliveItsAccount(t *testing.T) {
	now := time.Now()
	store, tok := storeWithLink(t, Account{Name: "a", Role: certs.Department, Institution: "tax"}, now)
	if err := store.Remove("a"); err != nil {
		t.Fatal(err)
	}
	if err := store.Add(Account{Name: "a", Role: certs.Operator, Institution: "it"}, password, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if a, err := store.UseLink(tok, now); !errors.Is(err, ErrNoAccount) {
		t.Errorf("the link of a removed account, for a new one of its name: %+v, %v", a.Role, err)
	}
}

// Checked safe: every next and back a hostile link may carry leads to
// this console's host.
func TestHostileRedirectsStayOnTheConsole(t *testing.T) {
	tc := newTestConsole(t)
	base, _ := url.Parse(tc.srv.URL)
	rt := tc.srv.Client().Transport                                 // the answer as sent: a client refuses some Locations before a browser would follow them
	browserURL := strings.NewReplacer("\t", "", "\n", "", "\r", "") // what a browser drops from a URL
	for _, target := range []string{"//evil.example/", "https://evil.example/", "/\\evil.example", "/console/..//evil.example",
		"/console/../..//evil.example", "/console/\t/..//evil.example", "/console/%2e%2e//evil.example", "/console//evil.example",
		"/console/\\/evil.example", "javascript:alert(1)", "/console/../\t/evil.example", "/console/\x00/evil.example"} {
		check := func(what string, resp *http.Response) {
			raw := resp.Header.Get("Location")
			loc, err := base.Parse(browserURL.Replace(raw))
			if err != nil || loc.Host != base.Host || loc.Scheme != "https" || strings.ContainsFunc(raw, func(r rune) bool { return r < 0x20 }) {
				t.Errorf("%s %q: Location %q", what, target, raw)
			}
		}
		req, _ := http.NewRequest("GET", tc.srv.URL+"/console/lang?to=en&back="+url.QueryEscape(target), nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		check("back", resp)
		c := tc.browser(t)
		_, page := get(t, c, tc.srv.URL+"/console/login")
		csrf := csrfField.FindStringSubmatch(page)[1]
		req, _ = http.NewRequest("POST", tc.srv.URL+"/console/login", strings.NewReader(url.Values{"csrf": {csrf}, "name": {"dept"},
			"password": {password}, "next": {target}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, ck := range c.Jar.Cookies(base) {
			req.AddCookie(ck)
		}
		if resp, err = rt.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("login: HTTP %d", resp.StatusCode)
		}
		check("next", resp)
	}
}

// Checked safe: what the API says (region names, error messages) is
// escaped in the page, and the XHR endpoints want the session's token.
func TestHostileTextIsEscapedAndEndpointsWantTheToken(t *testing.T) {
	const evil = `<img src=x onerror=alert(1)>`
	stub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/federation":
			_ = json.NewEncoder(w).Encode(api.Federation{Federation: evil, Regions: []api.Region{{Path: "zj", Name: evil, Role: "province"}}})
		default:
			w.WriteHeader(http.StatusNotFound)
			_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: &api.Error{Code: "not_found", Message: evil}})
		}
	})
	tc := newConsoleWith(t, stub, nil, nil)
	c := tc.browser(t)
	_, csrf := tc.login(t, c, "dept", password)
	for _, p := range []string{"/console/federation", "/console/records?id=" + url.QueryEscape(evil), "/console/cases"} {
		if _, body := get(t, c, tc.srv.URL+p); strings.Contains(body, "<img") {
			t.Errorf("%s shows the API's text unescaped", p)
		}
	}
	for _, hdr := range [][]string{nil, {"X-CSRF-Token", "made-up"}, {"X-CSRF-Token", csrf, "Sec-Fetch-Site", "same-site"},
		{"X-CSRF-Token", csrf, "Origin", "https://127.0.0.1:1"}} {
		if st, _, _ := post(t, c, tc.srv.URL+"/console/validate", url.Values{"subject": {"x"}}, hdr...); st != http.StatusForbidden {
			t.Errorf("POST /console/validate with %v: HTTP %d", hdr, st)
		}
	}
	if st, body, _ := post(t, c, tc.srv.URL+"/console/validate", url.Values{"subject": {"x"}}, "X-CSRF-Token", csrf); st != http.StatusOK || strings.Contains(body, "<") {
		t.Errorf("POST /console/validate with the token: HTTP %d %s", st, body)
	}
}
