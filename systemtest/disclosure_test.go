package systemtest

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/localfed"
	"credfed/node"
)

// disclosurePage is GET /v1/disclosures as a client reads it.
type disclosurePage struct {
	Entries []struct {
		Subject        string `json:"subject"`
		CatalogItem    string `json:"catalog_item"`
		Reason         string `json:"reason"`
		LegalBasis     string `json:"legal_basis"`
		DecisionNumber string `json:"decision_number"`
		District       string `json:"district"`
		Department     string `json:"department"`
		DecidedOn      string `json:"decided_on"`
		DisplayUntil   string `json:"display_until"`
		Status         string `json:"status"`
		RecordedAt     string `json:"recorded_at"`
	} `json:"entries"`
	Next      string `json:"next"`
	Districts []struct {
		District string `json:"district"`
		Status   string `json:"status"`
	} `json:"districts"`
}

// publicClient is an HTTPS client of the federation's nodes with no client
// certificate.
func publicClient(t *testing.T, f *localfed.Federation) *http.Client {
	t.Helper()
	pool, err := certs.LoadPool(f.Layout.CA)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// identifierShape is anything that looks like an 18-character identifier:
// 17 digits and a digit or X, or 18 characters of the unified social
// credit code's alphabet starting with its registration digits.
var identifierShape = regexp.MustCompile(`[0-9]{17}[0-9Xx]|[0-9A-HJ-NP-RTUWXY]{2}[0-9]{6}[0-9A-HJ-NP-RTUWXY]{10}`)

// getDisclosures reads one page at node name; it fails the test unless
// the answer is 200 and holds no identifier of ids, nor anything shaped
// like one.
func getDisclosures(t *testing.T, c *http.Client, f *localfed.Federation, name, query string, ids ...string) disclosurePage {
	t.Helper()
	status, body, _ := getPublic(t, c, f, name, query)
	if status != http.StatusOK {
		t.Fatalf("GET /v1/disclosures%s at %s: %d %s", query, name, status, body)
	}
	for _, id := range ids {
		if strings.Contains(body, id) {
			t.Fatalf("the page at %s holds the identifier %s", name, credit.MaskIdentifier(id))
		}
	}
	if m := identifierShape.FindString(body); m != "" {
		t.Fatalf("the page at %s holds something shaped like an identifier: %s", name, credit.MaskIdentifier(m))
	}
	var p disclosurePage
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func getPublic(t *testing.T, c *http.Client, f *localfed.Federation, name, query string) (int, string, http.Header) {
	t.Helper()
	n := f.Node(name)
	if n == nil {
		t.Fatalf("node %s is not running", name)
	}
	resp, err := c.Get("https://" + n.APIAddr() + "/v1/disclosures" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func decisions(p disclosurePage) string {
	var out []string
	for _, e := range p.Entries {
		out = append(out, e.DecisionNumber)
	}
	return strings.Join(out, " ")
}

// TestDisclosureListAcrossTheFederation: serious records of public items
// are listed without a client certificate, masked, newest recorded first,
// at their district and at the province (gathered over the exchange), and
// a city lists its own districts only; no page holds an identifier; paging
// with the cursor returns every entry once; a disputed record is shown as
// such, a revoked one and one past its display period are gone; past its
// burst a client address is answered 429.
func TestDisclosureListAcrossTheFederation(t *testing.T) {
	today := credit.TodayAt(time.Now())
	clock := clockAt(today)
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{Now: clock.Now})
	d1, d2 := f.Districts()[0], f.Districts()[1]
	s1 := credit.SyntheticPerson(951, credit.NewDate(1975, 2, 3))
	s2 := credit.SyntheticPerson(952, credit.NewDate(1984, 7, 8))
	s3 := credit.SyntheticPerson(953, credit.NewDate(1991, 11, 12))

	// Recorded a minute apart: D2-WAGE is the newest, D1-FOOD the oldest.
	noon := clock.Now()
	at := func(min int) { clock.set(noon.Add(time.Duration(min) * time.Minute)) }
	at(1)
	submit(t, f, d1, datedRecord("D1-FOOD", s1, "FOOD-SAFETY-SERIOUS", today-30), datedRecord("D1-ORD", s1, "FOOD-DRUG-PENALTY", today-30))
	at(2)
	submit(t, f, d2, datedRecord("D2-TAX", s2, "TAX-SERIOUS", today-20), datedRecord("D2-TRAFFIC", s2, "TRAFFIC-SERIOUS", today-20))
	at(3)
	submit(t, f, d1, datedRecord("D1-PROD", s3, "PRODUCTION-SAFETY-SERIOUS", today-10))
	at(4)
	submit(t, f, d2, datedRecord("D2-WAGE", s3, "WAGE-ARREARS-SERIOUS", today-5))
	ids := []string{s1, s2, s3}

	c := publicClient(t, f)
	p := getDisclosures(t, c, f, d1, "", ids...)
	if got := decisions(p); got != "罚〔2026〕D1-PROD 罚〔2026〕D1-FOOD" {
		t.Fatalf("district %s lists %q", d1, got)
	}
	e := p.Entries[1]
	if e.Subject != s1[:6]+"***********"+s1[17:] || e.CatalogItem != "FOOD-SAFETY-SERIOUS" || e.Reason != "食品安全严重违法失信行为" ||
		!strings.Contains(e.LegalBasis, "食品安全法") || e.District != regionOf(f, d1) || e.Department != localfed.Department ||
		e.DecidedOn != (today-30).String() || e.DisplayUntil != (today-30).AddMonths(36).String() || e.Status != "active" || e.RecordedAt == "" {
		t.Errorf("entry %+v", e)
	}

	province := f.Province()
	all := "罚〔2026〕D2-WAGE 罚〔2026〕D1-PROD 罚〔2026〕D2-TAX 罚〔2026〕D1-FOOD"
	p = getDisclosures(t, c, f, province, "", ids...)
	if got := decisions(p); got != all {
		t.Fatalf("the province lists %q, want %q", got, all)
	}
	if p.Next != "" || len(p.Districts) != 2 || p.Districts[0].Status != "ok" || p.Districts[1].Status != "ok" {
		t.Errorf("province page: next %q, districts %+v", p.Next, p.Districts)
	}
	// A city lists the districts of its region only.
	for _, n := range f.Layout.Nodes {
		if n.Role != certs.City || !certs.InRegion(regionOf(f, d1), n.Region) || certs.InRegion(regionOf(f, d2), n.Region) {
			continue
		}
		if got := decisions(getDisclosures(t, c, f, n.Name, "", ids...)); got != "罚〔2026〕D1-PROD 罚〔2026〕D1-FOOD" {
			t.Errorf("city %s lists %q", n.Name, got)
		}
	}

	// Paging: every entry once, in order.
	var paged []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		q := "?limit=1"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		p := getDisclosures(t, c, f, province, q, ids...)
		if len(p.Entries) > 1 {
			t.Fatalf("a page of limit 1 holds %d entries", len(p.Entries))
		}
		if got := decisions(p); got != "" {
			paged = append(paged, got)
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if got := strings.Join(paged, " "); got != all {
		t.Errorf("paged: %q, want %q", got, all)
	}
	for _, q := range []string{"?cursor=not-a-cursor", "?limit=0", "?limit=201", "?limit=x"} {
		if status, body, _ := getPublic(t, c, f, province, q); status != http.StatusBadRequest || !strings.Contains(body, `"bad_request"`) {
			t.Errorf("GET /v1/disclosures%s: %d %s, want 400 bad_request", q, status, body)
		}
	}

	// An objection: disputed, still listed as such. Revoked: gone.
	waitIndexed(t, f, s2, 1)
	auth := "实名认证 FACE-952"
	ob, err := portal(t, f, d2).File(ctxT(t, 30*time.Second), "objections", api.CaseRequest{Subject: s2,
		Record: regionOf(f, d2) + "/" + localfed.Department + "/D2-TAX", Reason: "处罚决定已被撤销", Evidence: []string{"复议决定 1"}, Authentication: auth})
	if err != nil {
		t.Fatal(err)
	}
	p = getDisclosures(t, c, f, province, "", ids...)
	if decisions(p) != all || p.Entries[2].Status != "disputed" {
		t.Errorf("during the objection the province lists %q, D2-TAX as %q", decisions(p), p.Entries[2].Status)
	}
	if _, err := department(t, f, d2).Decide(ctxT(t, 30*time.Second), "objections", ob.ID, api.CaseDecision{Outcome: "revoked", Reason: "复核撤销"}); err != nil {
		t.Fatal(err)
	}
	if got := decisions(getDisclosures(t, c, f, province, "", ids...)); got != "罚〔2026〕D2-WAGE 罚〔2026〕D1-PROD 罚〔2026〕D1-FOOD" {
		t.Errorf("after the revocation the province lists %q", got)
	}

	// The day D1-FOOD's display period ends, it leaves the list.
	clock.setDay((today - 30).AddMonths(36) - 1)
	if got := decisions(getDisclosures(t, c, f, province, "", ids...)); !strings.Contains(got, "D1-FOOD") {
		t.Errorf("the last day of D1-FOOD's display period the province lists %q", got)
	}
	clock.setDay((today - 30).AddMonths(36))
	if got := decisions(getDisclosures(t, c, f, province, "", ids...)); got != "罚〔2026〕D2-WAGE 罚〔2026〕D1-PROD" {
		t.Errorf("after D1-FOOD's display period the province lists %q", got)
	}

	// Rate limit per client address.
	limited := false
	for i := 0; i < 200 && !limited; i++ {
		status, body, h := getPublic(t, c, f, d1, "")
		switch status {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			limited = true
			if !strings.Contains(body, `"too_many_requests"`) || h.Get("Retry-After") == "" {
				t.Errorf("429 answer: %s, Retry-After %q", body, h.Get("Retry-After"))
			}
		default:
			t.Fatalf("request %d: %d %s", i, status, body)
		}
	}
	if !limited {
		t.Error("200 requests in a row from one address were never refused 429")
	}
}
