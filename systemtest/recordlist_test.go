package systemtest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/localfed"
	"credfed/node"
)

// TestRecordListShowsOnlyTheDepartmentsOwn: at a district node, GET
// /v1/records and the console's Records page list the calling
// department's records only — another department of the same district
// never shows, even with the same ids — in pages; a portal or a
// coordinator is refused; a bad limit or cursor is a typed 400 that
// changes nothing; ids are escaped on the page.
func TestRecordListShowsOnlyTheDepartmentsOwn(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	ctx := ctxT(t, 2*time.Minute)
	a := department(t, f, district)
	b := clientOf(t, f, district, issueUser(t, f, "department", regionOf(f, district), "tax-bureau"))

	// A: 101 records and one whose id is markup; B: records of its own,
	// one with an id A uses too.
	odd := `<b>&"A-x`
	var aRecs []api.RecordInput
	for i := range 101 {
		aRecs = append(aRecs, record(fmt.Sprintf("A-%03d", i), credit.SyntheticPerson(i, credit.NewDate(1985, 5, 5)), "FOOD-DRUG-PENALTY", "A 的摘要"))
	}
	aRecs = append(aRecs, record(odd, credit.SyntheticPerson(500, credit.NewDate(1985, 5, 5)), "FOOD-DRUG-PENALTY", "A 的摘要"))
	submit(t, f, district, aRecs...)
	bRecs := []api.RecordInput{
		record("A-000", credit.SyntheticPerson(900, credit.NewDate(1975, 1, 1)), "FOOD-DRUG-PENALTY", "B-ONLY"),
		record("B-1", credit.SyntheticPerson(901, credit.NewDate(1975, 1, 1)), "FOOD-DRUG-PENALTY", "B-ONLY"),
	}
	if ans, status, err := b.SubmitRecords(ctx, bRecs); err != nil || status != http.StatusOK {
		t.Fatalf("B submits: %d %v %+v", status, err, ans)
	}

	list := func(c *api.Client, q api.RecordQuery) []api.Record {
		t.Helper()
		var out []api.Record
		for pages := 0; ; pages++ {
			p, err := c.Records(ctx, q)
			if err != nil {
				t.Fatalf("Records(%+v): %v", q, err)
			}
			out = append(out, p.Records...)
			if p.Next == "" {
				return out
			}
			if pages > 20 {
				t.Fatal("more than 20 pages")
			}
			q.After = p.Next
		}
	}
	gotA := list(a, api.RecordQuery{Limit: 40})
	if len(gotA) != len(aRecs) || gotA[0].ID != odd {
		t.Fatalf("A lists %d records (first %q), want %d (first %q)", len(gotA), gotA[0].ID, len(aRecs), odd)
	}
	for _, r := range gotA {
		if r.Department != localfed.Department || r.Summary == "B-ONLY" {
			t.Fatalf("A's list holds %+v", r)
		}
	}
	gotB := list(b, api.RecordQuery{})
	if got := []string{gotB[0].ID, gotB[len(gotB)-1].ID}; len(gotB) != 2 || !slices.Equal(got, []string{"A-000", "B-1"}) ||
		gotB[0].Department != "tax-bureau" || gotB[0].Summary != "B-ONLY" {
		t.Fatalf("B lists %+v", gotB)
	}

	// Other roles at the district node are refused.
	for name, files := range map[string]localfed.ClientFiles{"portal": f.Layout.Portals[district], "coordinator": f.Layout.Coordinator} {
		_, err := clientOf(t, f, district, files).Records(ctx, api.RecordQuery{})
		if api.Code(err) != api.CodeForbidden {
			t.Errorf("a %s lists records: %v, want forbidden", name, err)
		}
	}
	// Bad queries: typed 400 naming the parameter; nothing changes.
	for _, c := range []struct {
		q     api.RecordQuery
		field string
	}{
		{api.RecordQuery{Limit: 501}, "limit"}, {api.RecordQuery{Limit: -1}, "limit"},
		{api.RecordQuery{After: strings.Repeat("x", 129)}, "after"}, {api.RecordQuery{Status: "gone"}, "status"},
	} {
		_, err := a.Records(ctx, c.q)
		var se *api.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusBadRequest || se.Err.Code != api.CodeBadRequest || se.Err.Field != c.field {
			t.Errorf("%+v: %v, want 400 bad_request on %s", c.q, err, c.field)
		}
	}
	if again := list(a, api.RecordQuery{Limit: 40}); !reflect.DeepEqual(again, gotA) {
		t.Fatal("A's records changed after the refused queries")
	}

	// The console's Records page, as A's officer.
	accs, err := localfed.ConsoleAccounts(f.Dir, f.Layout)
	if err != nil {
		t.Fatal(err)
	}
	var acc localfed.ConsoleAccount
	for _, x := range accs {
		if x.Role == string(certs.Department) && x.Node == district {
			acc = x
		}
	}
	if acc.Name == "" {
		t.Fatalf("no department console account at %s: %+v", district, accs)
	}
	base := "https://" + f.Node(district).APIAddr()
	browser := consoleLogin(t, f, base, acc)
	page := func(path string) (int, string) {
		resp, err := browser.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	st, body := page("/console/records")
	if st != http.StatusOK || !strings.Contains(body, `id="record-list"`) {
		t.Fatalf("the Records page: %d\n%s", st, body)
	}
	if strings.Contains(body, odd) || !strings.Contains(body, html.EscapeString(odd)) ||
		!strings.Contains(body, `href="/console/records?id=%3cb%3e%26%22A-x"`) {
		t.Fatalf("the odd id is not escaped as text and as a link:\n%s", body)
	}
	if strings.Contains(body, "B-ONLY") || strings.Contains(body, "B-1") {
		t.Fatal("the Records page shows B's records")
	}
	next := regexp.MustCompile(`id="list-next" href="([^"]+)"`).FindStringSubmatch(body)
	if next == nil {
		t.Fatal("the first page of 102 records has no next page link")
	}
	// Page after page to the last, which has no next link and ends with A-100.
	pages := 1
	for next != nil && pages < 20 {
		st, body = page(html.UnescapeString(next[1]))
		if st != http.StatusOK || strings.Contains(body, ">A-000<") || strings.Contains(body, "B-ONLY") {
			t.Fatalf("page %d (%s): %d\n%s", pages+1, next[1], st, body)
		}
		pages++
		next = regexp.MustCompile(`id="list-next" href="([^"]+)"`).FindStringSubmatch(body)
	}
	if next != nil || !strings.Contains(body, "A-100") || pages < 2 {
		t.Fatalf("after %d pages the last (next link %v) does not end the list:\n%s", pages, next != nil, body)
	}
	if st, body = page("/console/records?status=gone"); st != http.StatusBadRequest || strings.Contains(body, `id="record-list"`) {
		t.Fatalf("a bad status filter: %d\n%s", st, body)
	}
}

// consoleLogin logs in to the console at base with the account's
// password and returns the browser (cookies, no client certificate).
func consoleLogin(t *testing.T, f *localfed.Federation, base string, acc localfed.ConsoleAccount) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	pool, err := certs.LoadPool(f.Layout.CA)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	t.Cleanup(c.CloseIdleConnections)
	resp, err := c.Get(base + "/console/login")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("the login page has no CSRF field:\n%s", b)
	}
	resp, err = c.PostForm(base+"/console/login", url.Values{"csrf": {m[1]}, "name": {acc.Name}, "password": {acc.Password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("console login: HTTP %d", resp.StatusCode)
	}
	return c
}
