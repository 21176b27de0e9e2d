package httpapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/intake"
	"credfed/storage"
)

// listFixture is a district node's API over mutual TLS with the real
// records service and store, and clients of several identities.
type listFixture struct {
	srv     *httptest.Server
	db      *storage.DB
	clients map[string]*tls.Config
}

const listDistrict = "zhejiang/quzhou/kecheng"

func newListFixture(t *testing.T) *listFixture {
	t.Helper()
	ca, err := certs.NewCA("list", 0)
	if err != nil {
		t.Fatal(err)
	}
	nodeID := certs.Identity{Federation: "list", Role: certs.District, Region: listDistrict}
	node, err := ca.Issue(certs.IssueRequest{Identity: nodeID, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cat := credit.DefaultCatalog()
	svc := intake.New(intake.Config{Self: nodeID, Store: db, Catalog: func() *credit.Catalog { return cat },
		Identifiers: credit.ParseOptions{TestMode: true}})
	h := New(Config{Cluster: cluster{}, Records: svc, Lookups: noLookups{}})
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = certs.NewVerifier(ca.Cert, "list", nil).ServerConfig(node.TLSCertificate(), certs.OptionalClientCert, "http/1.1")
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	f := &listFixture{srv: srv, db: db, clients: map[string]*tls.Config{"none": {RootCAs: pool, MinVersion: tls.VersionTLS13}}}
	for name, id := range map[string]certs.Identity{
		// A and B: two departments of the same district.
		"A": {Role: certs.Department, Region: listDistrict, Institution: "market-supervision"},
		"B": {Role: certs.Department, Region: listDistrict, Institution: "tax"},
		// A's namesake in another district.
		"A-elsewhere": {Role: certs.Department, Region: "zhejiang/quzhou/qujiang", Institution: "market-supervision"},
		"portal":      {Role: certs.Portal, Region: listDistrict, Institution: "portal"},
		"coordinator": {Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: "credit-office"},
	} {
		id.Federation = "list"
		is, err := ca.Issue(certs.IssueRequest{Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		f.clients[name] = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{is.TLSCertificate()}, MinVersion: tls.VersionTLS13}
	}
	return f
}

func (f *listFixture) client(t *testing.T, who string) *api.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: f.clients[who]}
	t.Cleanup(tr.CloseIdleConnections)
	return api.NewClientTransport(f.srv.URL, tr, 30*time.Second)
}

// raw sends GET /v1/records?query as who and returns the status and body.
func (f *listFixture) raw(t *testing.T, who, method, query string) (int, []byte) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: f.clients[who]}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, f.srv.URL+"/v1/records"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// all reads every page of q as the client and returns the records.
func all(t *testing.T, c *api.Client, q api.RecordQuery) ([]api.Record, int) {
	t.Helper()
	var out []api.Record
	for pages := 1; ; pages++ {
		p, err := c.Records(context.Background(), q)
		if err != nil {
			t.Fatalf("Records(%+v): %v", q, err)
		}
		if p.Records == nil {
			t.Fatal("the page's records are null, want an array")
		}
		out = append(out, p.Records...)
		if p.Next == "" {
			return out, pages
		}
		if pages > 50 || p.Next <= q.After {
			t.Fatalf("Records: page %d, next %q after %q", pages, p.Next, q.After)
		}
		q.After = p.Next
	}
}

func idsOf(rs []api.Record) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// TestRecordListIsTheCallersOwn: GET /v1/records lists the calling
// department's records only — never another department's of the same
// district, even where the ids are the same or the query names it —
// pages and filters them, shows each as GET /v1/records/{id} does, and
// refuses other roles and bad queries with typed errors that change
// nothing.
func TestRecordListIsTheCallersOwn(t *testing.T) {
	f := newListFixture(t)
	ctx := context.Background()
	today := credit.TodayAt(time.Now())
	in := func(id, item, summary string, n int) api.RecordInput {
		return api.RecordInput{ID: id, Subject: credit.SyntheticPerson(n, credit.NewDate(1980, 1, 1)), CatalogItem: item,
			DecisionNumber: "罚〔2026〕" + id, OccurredOn: (today - 9).String(), DecidedOn: (today - 3).String(), Summary: summary}
	}
	// A's records, and B's interleaved in id order, some with A's ids.
	var aRecs, bRecs []api.RecordInput
	for i := range 7 {
		item := "FOOD-DRUG-PENALTY"
		if i%2 == 1 {
			item = "TAX-SERIOUS"
		}
		aRecs = append(aRecs, in(fmt.Sprintf("R-%02d", 2*i), item, "A 的记录", i))
	}
	bRecs = append(bRecs, in("R-00", "TAX-SERIOUS", "B-ONLY shared id", 100), in("R-03", "TAX-SERIOUS", "B-ONLY", 101),
		in("R-07", "FOOD-DRUG-PENALTY", "B-ONLY", 102), in("R-99", "TAX-SERIOUS", "B-ONLY", 103))
	for who, recs := range map[string][]api.RecordInput{"A": aRecs, "B": bRecs} {
		ans, status, err := f.client(t, who).SubmitRecords(ctx, recs)
		if err != nil || status != http.StatusOK {
			t.Fatalf("submit as %s: %d %v %+v", who, status, err, ans)
		}
	}
	// One of A's records is disputed (a later version).
	cur, err := f.db.Record("market-supervision", "R-04")
	if err != nil {
		t.Fatal(err)
	}
	next, err := credit.Transition(cur, credit.StatusDisputed, "objection filed", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.db.UpdateRecord(next); err != nil {
		t.Fatal(err)
	}

	a, b := f.client(t, "A"), f.client(t, "B")
	wantA := []string{"R-00", "R-02", "R-04", "R-06", "R-08", "R-10", "R-12"}
	wantB := []string{"R-00", "R-03", "R-07", "R-99"}
	gotA, pages := all(t, a, api.RecordQuery{Limit: 3})
	if !slices.Equal(idsOf(gotA), wantA) || pages != 3 {
		t.Fatalf("A in pages of 3: %v in %d pages, want %v in 3", idsOf(gotA), pages, wantA)
	}
	for _, r := range gotA {
		if r.Department != "market-supervision" || r.District != listDistrict || strings.Contains(r.Summary, "B-ONLY") || r.Versions != nil {
			t.Fatalf("A's list holds %+v", r)
		}
		// Shown as GET /v1/records/{id} shows it, without the versions.
		one, err := a.Record(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		one.Versions = nil
		if !reflect.DeepEqual(*one, r) {
			t.Fatalf("the list shows\n%+v\nGET /v1/records/%s shows\n%+v", r, r.ID, *one)
		}
		if r.DisplayUntil == "" || r.Ref == "" {
			t.Fatalf("record %s has no display_until or ref", r.ID)
		}
	}
	gotB, _ := all(t, b, api.RecordQuery{})
	if !slices.Equal(idsOf(gotB), wantB) {
		t.Fatalf("B: %v, want %v", idsOf(gotB), wantB)
	}
	for _, r := range gotB {
		if r.Department != "tax" || !strings.Contains(r.Summary, "B-ONLY") {
			t.Fatalf("B's list holds %+v", r)
		}
	}

	// Nothing in the query reaches another department's records: unknown
	// parameters naming B are ignored, a cursor at one of B's ids goes on
	// with A's.
	for _, q := range []string{"?department=tax", "?department=tax&district=" + url.QueryEscape(listDistrict), "?institution=tax&after=R-00",
		"?after=R-03", "?after=R-98&limit=500", "?item=TAX-SERIOUS&after=R-06"} {
		st, body := f.raw(t, "A", "GET", q)
		var p api.RecordPage
		if st != http.StatusOK || json.Unmarshal(body, &p) != nil {
			t.Fatalf("A %s: %d %s", q, st, body)
		}
		if strings.Contains(string(body), "B-ONLY") || strings.Contains(string(body), `"tax"`) {
			t.Fatalf("A %s sees B's records: %s", q, body)
		}
		for _, r := range p.Records {
			if !slices.Contains(wantA, r.ID) {
				t.Fatalf("A %s: record %s", q, r.ID)
			}
		}
	}
	if p, err := a.Records(ctx, api.RecordQuery{After: "R-03"}); err != nil || idsOf(p.Records)[0] != "R-04" {
		t.Fatalf("A after R-03: %v, %v", idsOf(p.Records), err)
	}

	// Filters.
	if got, _ := all(t, a, api.RecordQuery{Item: "TAX-SERIOUS", Limit: 1}); !slices.Equal(idsOf(got), []string{"R-02", "R-06", "R-10"}) {
		t.Fatalf("A's TAX-SERIOUS: %v", idsOf(got))
	}
	if got, _ := all(t, a, api.RecordQuery{Status: "disputed"}); !slices.Equal(idsOf(got), []string{"R-04"}) || got[0].Status != "disputed" || got[0].Version != 2 {
		t.Fatalf("A's disputed: %+v", got)
	}
	if got, _ := all(t, b, api.RecordQuery{Status: "disputed"}); len(got) != 0 {
		t.Fatalf("B's disputed: %v, want none (A's is not B's)", idsOf(got))
	}

	// Other roles, other districts, no certificate: refused, typed.
	for who, want := range map[string]struct {
		status int
		code   string
	}{
		"portal":      {http.StatusForbidden, api.CodeForbidden},
		"coordinator": {http.StatusForbidden, api.CodeForbidden},
		"A-elsewhere": {http.StatusForbidden, api.CodeForbidden},
		"none":        {http.StatusUnauthorized, api.CodeUnauthenticated},
	} {
		st, body := f.raw(t, who, "GET", "")
		var eb api.ErrorBody
		if st != want.status || json.Unmarshal(body, &eb) != nil || eb.Error == nil || eb.Error.Code != want.code {
			t.Errorf("%s: %d %s, want %d %s", who, st, body, want.status, want.code)
		}
		if strings.Contains(string(body), "R-0") {
			t.Errorf("%s's refusal shows records: %s", who, body)
		}
	}

	// Bad queries: 400 naming the parameter, never repeating what was
	// sent (an identifier put there by mistake), and nothing changes.
	before, _ := all(t, a, api.RecordQuery{})
	count := f.db.CountRecords()
	secret := credit.SyntheticPerson(7, credit.NewDate(1990, 2, 2))
	for _, c := range []struct{ query, field string }{
		{"?limit=0", "limit"}, {"?limit=501", "limit"}, {"?limit=-1", "limit"}, {"?limit=" + secret, "limit"},
		{"?limit=", "limit"}, {"?limit=1e2", "limit"}, {"?limit=99999999999999999999", "limit"},
		{"?after=" + strings.Repeat(secret, 8), "after"}, {"?after=" + secret + "%00", "after"},
		{"?item=" + secret + "%00", "item"}, {"?item=" + strings.Repeat(secret, 20), "item"},
		{"?status=" + secret, "status"}, {"?status=ACTIVE", "status"},
	} {
		st, body := f.raw(t, "A", "GET", c.query)
		var eb api.ErrorBody
		if st != http.StatusBadRequest || json.Unmarshal(body, &eb) != nil || eb.Error == nil ||
			eb.Error.Code != api.CodeBadRequest || eb.Error.Field != c.field {
			t.Errorf("%s: %d %s, want 400 bad_request on %s", c.query, st, body, c.field)
		}
		if strings.Contains(string(body), secret) || strings.Contains(string(body), "R-0") {
			t.Errorf("%s: the refusal repeats the query or shows records: %s", c.query, body)
		}
	}
	after, _ := all(t, a, api.RecordQuery{})
	if !reflect.DeepEqual(before, after) || f.db.CountRecords() != count {
		t.Fatalf("refused queries changed the records: %d → %d records", count, f.db.CountRecords())
	}

	// The path's other methods: POST submits (above), others are 405.
	if st, _ := f.raw(t, "A", "DELETE", ""); st != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE /v1/records: %d, want 405", st)
	}
}
