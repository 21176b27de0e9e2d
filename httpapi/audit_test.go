package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"credfed/fault"
)

// TestAuditQuery: GET /v1/audit's parameters, and the refusal of each bad
// one, naming the parameter and never repeating an identifier.
func TestAuditQuery(t *testing.T) {
	p := strings.Repeat("ab", 16)
	r := httptest.NewRequest("GET", "/v1/audit?from=2026-12-01T08:00:00%2B08:00&to=2026-12-02T00:00:00Z&operation=lookup.answer&institution=hr&pseudonym="+p+"&cursor=41&limit=1000", nil)
	q, err := auditQueryOf(r)
	if err != nil {
		t.Fatal(err)
	}
	if !q.From.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) || !q.To.Equal(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)) ||
		q.Operation != "lookup.answer" || q.Institution != "hr" || q.Pseudonym != p || q.After != 41 || q.Limit != 1000 {
		t.Fatalf("query %+v", q)
	}
	if q, err := auditQueryOf(httptest.NewRequest("GET", "/v1/audit", nil)); err != nil || q.Limit != DefaultAuditLimit || q.After != 0 {
		t.Fatalf("no parameters: %+v %v", q, err)
	}
	id := "990000198001010013"
	for _, c := range []struct{ query, field string }{
		{"from=yesterday", "from"},
		{"to=2026-12-01", "to"},
		{"from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "to"},
		{"limit=0", "limit"},
		{"limit=1001", "limit"},
		{"limit=ten", "limit"},
		{"cursor=-1", "cursor"},
		{"cursor=abc", "cursor"},
		{"pseudonym=" + id, "pseudonym"},
		{"pseudonym=" + strings.ToUpper(p), "pseudonym"},
		{"operation=" + strings.Repeat("x", maxAuditParam+1), "operation"},
	} {
		_, err := auditQueryOf(httptest.NewRequest("GET", "/v1/audit?"+c.query, nil))
		e := fault.As(err)
		if e == nil || e.Kind != fault.BadRequest || e.Field != c.field || strings.Contains(e.Error(), id) {
			t.Errorf("%s: %v, want bad_request about %s", c.query, err, c.field)
		}
	}
}
