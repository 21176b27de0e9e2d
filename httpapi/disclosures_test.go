package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/disclosure"
	"credfed/storage"
)

type noRegions struct{}

func (noRegions) Regions() []consensus.Region { return nil }

// TestDisclosuresRoute: the list is served without a certificate, masked;
// a bad limit is refused naming it; past the burst of an address the
// answer is 429 with Retry-After, whatever X-Forwarded-For says.
func TestDisclosuresRoute(t *testing.T) {
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cat := credit.DefaultCatalog()
	today := credit.TodayAt(time.Now())
	subject := credit.SyntheticPerson(41, credit.NewDate(1988, 8, 8))
	rec, err := cat.Accept(credit.Record{ID: "P-1", Subject: subject, CatalogItem: "TAX-SERIOUS", DecisionNumber: "税罚〔2026〕1号",
		OccurredOn: today - 9, DecidedOn: today - 3, Summary: "偷税 " + subject, Department: "tax", District: "zhejiang/quzhou/kecheng"},
		time.Now(), credit.ParseOptions{TestMode: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.SubmitRecords([]credit.Record{rec}); err != nil {
		t.Fatal(err)
	}
	svc := disclosure.New(disclosure.Config{Self: certs.Identity{Federation: "t", Role: certs.District, Region: "zhejiang/quzhou/kecheng"},
		Records: db, Registry: noRegions{}, Catalog: func() *credit.Catalog { return cat }, Rate: 0.001, Burst: 3})
	s := New(Config{Cluster: cluster{}, Disclosures: svc})

	get := func(query, forwarded string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/v1/disclosures"+query, nil)
		if forwarded != "" {
			r.Header.Set("X-Forwarded-For", forwarded)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w
	}
	w := get("", "")
	if w.Code != http.StatusOK {
		t.Fatalf("GET without a certificate: %d %s", w.Code, w.Body)
	}
	var page DisclosurePage
	if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 1 || page.Entries[0].Subject != credit.MaskIdentifier(subject) || page.Entries[0].Reason == "" ||
		page.Entries[0].DisplayUntil != credit.DisplayUntil(rec, mustItem(t, cat, "TAX-SERIOUS")).String() || page.Next != "" {
		t.Errorf("page %s", w.Body)
	}
	if strings.Contains(w.Body.String(), subject) || strings.Contains(w.Body.String(), "偷税") {
		t.Errorf("the page holds the identifier or the summary: %s", w.Body)
	}
	if w := get("?limit=abc", ""); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"field":"limit"`) {
		t.Errorf("?limit=abc: %d %s", w.Code, w.Body)
	}
	// Three tokens, one spent (a bad limit is refused before the
	// service): two more, then refused, whatever the header says.
	for i := range 2 {
		if w := get("", "203.0.113.9"); w.Code != http.StatusOK {
			t.Errorf("request %d within the burst: %d %s", i+2, w.Code, w.Body)
		}
	}
	w = get("", "203.0.113.10")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), `"too_many_requests"`) {
		t.Errorf("past the burst: %d %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	// Without a service: unavailable.
	w = httptest.NewRecorder()
	New(Config{Cluster: cluster{}}).ServeHTTP(w, httptest.NewRequest("GET", "/v1/disclosures", nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("no service: %d", w.Code)
	}
}

func mustItem(t *testing.T, cat *credit.Catalog, code string) credit.Item {
	t.Helper()
	it, ok := cat.Item(code)
	if !ok {
		t.Fatalf("no item %s", code)
	}
	return it
}
