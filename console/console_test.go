package console

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/httpapi"
)

// cluster is the API's view of the node: enough for the pages that read
// the federation and the catalog.
type cluster struct{}

func (cluster) Federation(context.Context) (api.Federation, error) {
	return api.Federation{Federation: "t", Node: api.NodeStatus{Name: "西湖区", Role: "district", Region: "zj/hz/xh", Ready: true, Status: "ready"},
		Regions: []api.Region{{Path: "zj", Name: "浙江省", Role: "province"}, {Path: "zj/hz", Name: "杭州市", Role: "city"}, {Path: "zj/hz/xh", Name: "西湖区", Role: "district"}}}, nil
}
func (cluster) Catalog() *credit.Catalog { return credit.DefaultCatalog() }

// auditLog keeps what the console audits.
type auditLog struct {
	mu      sync.Mutex
	entries []Event
	fail    atomic.Bool
}

func (a *auditLog) Record(e Event) error {
	if a.fail.Load() {
		return errors.New("disk full")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entries = append(a.entries, e)
	return nil
}

func (a *auditLog) ops() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.entries {
		out = append(out, e.Operation+":"+e.Decision+":"+e.Reason)
	}
	return out
}

type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }

type testConsole struct {
	srv   *httptest.Server
	cs    *Server
	store *Store
	audit *auditLog
	clock *clock
	revs  *certs.RevocationList
}

const password = "correct horse battery"

// newTestConsole is a console over the real API handler (the cluster
// above), with the accounts dept, ops and coord (newConsoleWith).
func newTestConsole(t *testing.T) *testConsole {
	t.Helper()
	return newConsoleWith(t, nil, nil, nil)
}

// browser is an HTTP client with its own cookies that does not follow
// redirects.
func (tc *testConsole) browser(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := *tc.srv.Client() // a copy: the server's client is shared
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// get returns the status and body of a page.
func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values, hdr ...string) (int, string, http.Header) {
	t.Helper()
	return send(t, c, u, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), hdr...)
}

// send POSTs body with its content type and the headers hdr (name,
// value, …) and returns the answer's status, body and header.
func send(t *testing.T, c *http.Client, u, contentType string, body io.Reader, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", u, body)
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// login logs in with a password and returns the session's CSRF token.
func (tc *testConsole) login(t *testing.T, c *http.Client, name, pw string) (int, string) {
	t.Helper()
	_, page := get(t, c, tc.srv.URL+"/console/login")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the login page has no CSRF field:\n%s", page)
	}
	st, body, _ := post(t, c, tc.srv.URL+"/console/login", url.Values{"csrf": {m[1]}, "name": {name}, "password": {pw}})
	if st != http.StatusSeeOther {
		return st, body
	}
	_, page = get(t, c, tc.srv.URL+"/console/federation")
	m = csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("a page after login has no CSRF field:\n%s", page)
	}
	return st, m[1]
}

func TestPasswordHashes(t *testing.T) {
	h1, _ := HashPassword(password)
	h2, _ := HashPassword(password)
	if h1 == h2 || !strings.HasPrefix(h1, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hashes %q, %q: want argon2id with fresh salts", h1, h2)
	}
	if !VerifyPassword(h1, password) || VerifyPassword(h1, password+"x") || VerifyPassword("$argon2id$v=19$m=999999999,t=1,p=1$AA$AA", password) {
		t.Fatal("VerifyPassword accepts a wrong password or absurd parameters, or refuses the right one")
	}
}

func TestBadAccountsAreRefusedAndChangeNothing(t *testing.T) {
	store := OpenStore(t.TempDir())
	now := time.Now()
	if err := store.Add(Account{Name: "a", Role: certs.Department, Institution: "tax"}, password, now); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(store.Dir(), "accounts.json"))
	for _, c := range []struct {
		a    Account
		pw   string
		want error
	}{
		{Account{Name: "a", Role: certs.Department, Institution: "tax"}, password, ErrExists},
		{Account{Name: "b", Role: certs.Portal, Institution: "tax"}, password, ErrBadAccount},
		{Account{Name: "b", Role: certs.District, Institution: "tax"}, password, ErrBadAccount},
		{Account{Name: "b", Role: certs.Department}, password, ErrBadAccount},
		{Account{Name: "b c", Role: certs.Department, Institution: "tax"}, password, ErrBadAccount},
		{Account{Name: "b", Role: certs.Department, Institution: "tax"}, "short", ErrBadAccount},
	} {
		if err := store.Add(c.a, c.pw, now); !errors.Is(err, c.want) {
			t.Errorf("Add(%+v): %v, want %v", c.a, err, c.want)
		}
	}
	after, _ := os.ReadFile(filepath.Join(store.Dir(), "accounts.json"))
	if string(before) != string(after) {
		t.Error("a refused account changed the file")
	}
	if strings.Contains(string(after), password) {
		t.Error("the accounts file holds the password")
	}
}

// storeWithLink is a store holding the account a, and a login link for
// it good for an hour from now.
func storeWithLink(t *testing.T, a Account, now time.Time) (*Store, string) {
	t.Helper()
	store := OpenStore(t.TempDir())
	if err := store.Add(a, password, now); err != nil {
		t.Fatal(err)
	}
	tok, err := store.IssueLink(a.Name, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	return store, tok
}

func TestALoginLinkWorksOnce(t *testing.T) {
	now := time.Now()
	store, tok := storeWithLink(t, Account{Name: "a", Role: certs.Operator, Institution: "it"}, now)
	var wins, used atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch _, err := store.UseLink(tok, now); {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, ErrTokenUsed):
				used.Add(1)
			default:
				t.Errorf("UseLink: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || used.Load() != 7 {
		t.Fatalf("8 uses of one link: %d logged in, %d told it was used", wins.Load(), used.Load())
	}
	old, _ := store.IssueLink("a", time.Minute, now)
	if _, err := store.UseLink(old, now.Add(2*time.Minute)); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("an expired link: %v", err)
	}
	if _, err := store.UseLink(tok+"x", now); !errors.Is(err, ErrTokenUnknown) {
		t.Errorf("an unknown link: %v", err)
	}
	if _, err := store.IssueLink("nobody", time.Hour, now); !errors.Is(err, ErrNoAccount) {
		t.Errorf("a link for no account: %v", err)
	}
}

func TestRepeatedFailedLoginsAreSlowedAndFlagged(t *testing.T) {
	tc := newTestConsole(t)
	c := tc.browser(t)
	for i := range freeFailures {
		if st, _ := tc.login(t, c, "dept", "wrong password "+string(rune('a'+i))); st != http.StatusUnauthorized {
			t.Fatalf("failed login %d: HTTP %d", i+1, st)
		}
	}
	// Now even the right password waits out the delay, unchecked.
	st, body := tc.login(t, c, "dept", password)
	if st != http.StatusTooManyRequests || !strings.Contains(body, "秒后再试") {
		t.Fatalf("the login after %d failures: HTTP %d", freeFailures, st)
	}
	tc.clock.add(2 * time.Second)
	if st, _ := tc.login(t, c, "dept", password); st != http.StatusSeeOther {
		t.Fatalf("the right password once the delay has passed: HTTP %d", st)
	}
	ops := strings.Join(tc.audit.ops(), " ")
	if strings.Count(ops, "console.login:denied:bad_password") != freeFailures-1 || !strings.Contains(ops, "console.login:denied:throttled") ||
		!strings.Contains(ops, "console.login:allowed:") {
		t.Errorf("the audit of the logins: %s", ops)
	}
	// A name no account has is audited as a hash: it may be a password
	// typed into the wrong field.
	tc.login(t, tc.browser(t), "my secret password", "x")
	tc.audit.mu.Lock()
	last := tc.audit.entries[len(tc.audit.entries)-1]
	tc.audit.mu.Unlock()
	if !strings.HasPrefix(last.User, "unknown:") || strings.Contains(last.User, "secret") {
		t.Errorf("an unknown name audited as %q", last.User)
	}
	// Another account is not slowed by this one's failures.
	if st, _ := tc.login(t, tc.browser(t), "ops", password); st != http.StatusSeeOther {
		t.Errorf("another account's login: HTTP %d", st)
	}
}

func TestFormsWithoutTheSessionTokenAreRefused(t *testing.T) {
	tc := newTestConsole(t)
	c := tc.browser(t)
	st, csrf := tc.login(t, c, "dept", password)
	if st != http.StatusSeeOther {
		t.Fatalf("login: HTTP %d", st)
	}
	form := url.Values{"subject": {"990001199001011234"}, "scenario": {"ADMIN-LICENSING"}, "reference": {"x"}}
	if st, _, _ := post(t, c, tc.srv.URL+"/console/check", form); st != http.StatusForbidden {
		t.Errorf("a check without the CSRF token: HTTP %d", st)
	}
	form.Set("csrf", csrf)
	if st, _, _ := post(t, c, tc.srv.URL+"/console/check", form, "Sec-Fetch-Site", "cross-site"); st != http.StatusForbidden {
		t.Errorf("a check from another site: HTTP %d", st)
	}
	if st, _, _ := post(t, c, tc.srv.URL+"/console/check", form, "Origin", "https://evil.example"); st != http.StatusForbidden {
		t.Errorf("a check from another origin: HTTP %d", st)
	}
	if st, _, _ := post(t, c, tc.srv.URL+"/console/logout", url.Values{}); st != http.StatusForbidden {
		t.Errorf("a logout without the CSRF token: HTTP %d", st)
	}
	// A login form posted without its cookie's token.
	if st, _, _ := post(t, tc.browser(t), tc.srv.URL+"/console/login", url.Values{"name": {"dept"}, "password": {password}, "csrf": {"made-up-token-made-up-token"}}); st != http.StatusForbidden {
		t.Errorf("a login without the login form's token: HTTP %d", st)
	}
}

func TestPagesAdmitTheirRolesOnly(t *testing.T) {
	tc := newTestConsole(t)
	anon := tc.browser(t)
	if st, _ := get(t, anon, tc.srv.URL+"/console/check"); st != http.StatusSeeOther {
		t.Errorf("a page without a session: HTTP %d, want a redirect to the login", st)
	}
	dept := tc.browser(t)
	tc.login(t, dept, "dept", password)
	for path, want := range map[string]int{"/console/check": 200, "/console/federation": 200, "/console/audit": 403, "/console/stats": 403, "/console/batch": 403} {
		if st, _ := get(t, dept, tc.srv.URL+path); st != want {
			t.Errorf("a department opening %s: HTTP %d, want %d", path, st, want)
		}
	}
	ops := tc.browser(t)
	tc.login(t, ops, "ops", password)
	for path, want := range map[string]int{"/console/check": 403, "/console/records": 403, "/console/cases": 403} {
		if st, _ := get(t, ops, tc.srv.URL+path); st != want {
			t.Errorf("an operator opening %s: HTTP %d, want %d", path, st, want)
		}
	}
	// The API refuses what the role may not see, whatever the page asks:
	// the revocation list is an operator's.
	st, body := get(t, ops, tc.srv.URL+"/console/federation")
	if st != 200 || !strings.Contains(body, `id="revocations"`) {
		t.Errorf("an operator's federation page: HTTP %d, revocations shown %v", st, strings.Contains(body, `id="revocations"`))
	}
	if _, body := get(t, dept, tc.srv.URL+"/console/federation"); strings.Contains(body, `id="revocations"`) {
		t.Error("a department sees the revocation list")
	}
}

func TestASessionEndsWithItsAccountOrItsIdentity(t *testing.T) {
	tc := newTestConsole(t)
	c := tc.browser(t)
	tc.login(t, c, "dept", password)
	if st, _ := get(t, c, tc.srv.URL+"/console/check"); st != 200 {
		t.Fatalf("logged in: HTTP %d", st)
	}
	// Suspending the identity refuses the account's calls at once.
	id := Account{Role: certs.Department, Institution: "market-supervision"}.Identity("t", "zj/hz/xh")
	if err := tc.revs.Suspend(certs.Suspension{Identity: id.String(), Reason: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if st, body := get(t, c, tc.srv.URL+"/console/check"); st != http.StatusUnauthorized || !strings.Contains(body, "suspended") {
		t.Errorf("a suspended identity's page: HTTP %d", st)
	}
	if st, body := tc.login(t, tc.browser(t), "dept", password); st != http.StatusForbidden || !strings.Contains(body, "暂停") {
		t.Errorf("a suspended identity logging in: HTTP %d", st)
	}
	tc.revs.Reinstate(id.String())
	// Disabling the account ends the session.
	if err := tc.store.SetDisabled("dept", true); err != nil {
		t.Fatal(err)
	}
	if st, _ := get(t, c, tc.srv.URL+"/console/check"); st != http.StatusSeeOther {
		t.Errorf("a disabled account's session: HTTP %d, want the login", st)
	}
	if st, _ := tc.login(t, c, "dept", password); st != http.StatusUnauthorized {
		t.Errorf("a disabled account logging in: HTTP %d", st)
	}
	// An idle session ends.
	o := tc.browser(t)
	tc.login(t, o, "ops", password)
	tc.clock.add(31 * time.Minute)
	if st, _ := get(t, o, tc.srv.URL+"/console/federation"); st != http.StatusSeeOther {
		t.Errorf("a session idle for 31 minutes: HTTP %d", st)
	}
}

func TestALoginThatCannotBeAuditedDoesNotHappen(t *testing.T) {
	tc := newTestConsole(t)
	tc.audit.fail.Store(true)
	c := tc.browser(t)
	if st, _ := tc.login(t, c, "dept", password); st != http.StatusServiceUnavailable {
		t.Errorf("a login whose audit fails: HTTP %d", st)
	}
	if tc.cs.Sessions() != 0 {
		t.Error("a session opened without its audit entry")
	}
}

func TestSecurityHeaders(t *testing.T) {
	tc := newTestConsole(t)
	resp, err := tc.browser(t).Get(tc.srv.URL + "/console/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, ck := range resp.Cookies() {
		if !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || !strings.HasPrefix(ck.Name, "__Host-") {
			t.Errorf("cookie %s: secure %v, httponly %v, samesite %v", ck.Name, ck.Secure, ck.HttpOnly, ck.SameSite)
		}
	}
}

// Every template's text has both languages, and no template has an
// inline script or style (the CSP would block it).
func TestTemplatesUseKnownMessagesAndNoInlineCode(t *testing.T) {
	key := regexp.MustCompile(`\.Tf? "([a-z_.]+)"`)
	ents, _ := templateFS.ReadDir("templates")
	for _, e := range ents {
		b, _ := templateFS.ReadFile("templates/" + e.Name())
		for _, m := range key.FindAllStringSubmatch(string(b), -1) {
			if _, ok := messages[m[1]]; !ok {
				t.Errorf("%s: no message %q", e.Name(), m[1])
			}
		}
		s := string(b)
		if regexp.MustCompile(`<script>|<script [^s]|\sstyle="|\son[a-z]+="`).MatchString(s) {
			t.Errorf("%s has an inline script, style or handler", e.Name())
		}
	}
	for k, m := range messages {
		if m[0] == "" || m[1] == "" {
			t.Errorf("message %q lacks a language", k)
		}
	}
}

// TestARemovedRegionsAccountsAreOut: an account acts in its node's region;
// once the region leaves the registry, the API refuses the account on its
// next page, as it refuses the region's certificates, and at login.
func TestARemovedRegionsAccountsAreOut(t *testing.T) {
	var removed atomic.Bool
	h := httpapi.New(httpapi.Config{Cluster: cluster{}, Registered: func(string) bool { return !removed.Load() }})
	tc := newConsoleWith(t, h, nil, nil)
	c := tc.browser(t)
	if st, _ := tc.login(t, c, "dept", password); st != http.StatusSeeOther {
		t.Fatalf("login while registered: HTTP %d", st)
	}
	if st, _ := get(t, c, tc.srv.URL+"/console/check"); st != http.StatusOK {
		t.Fatalf("a page while registered: HTTP %d", st)
	}
	removed.Store(true)
	if st, body := get(t, c, tc.srv.URL+"/console/check"); st != http.StatusUnauthorized || !strings.Contains(body, "not registered") {
		t.Errorf("an open session after its region's removal: HTTP %d", st)
	}
	if st, _ := tc.login(t, tc.browser(t), "ops", password); st != http.StatusForbidden {
		t.Errorf("a login after the region's removal: HTTP %d", st)
	}
}
