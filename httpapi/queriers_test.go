package httpapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
)

// regionCluster is a cluster whose node is of region.
type regionCluster struct {
	cluster
	region string
}

func (c regionCluster) Federation(ctx context.Context) (api.Federation, error) {
	return api.Federation{Node: api.NodeStatus{Region: c.region}}, nil
}

type fakeQueriers struct{ rep api.Queriers }

func (f fakeQueriers) Report() api.Queriers { return f.rep }

// TestQueriersRoute: GET /v1/audit/queriers answers the operators and
// coordinators of the node's region or above it, and no one else.
func TestQueriersRoute(t *testing.T) {
	ca, err := certs.NewCA("q", 0)
	if err != nil {
		t.Fatal(err)
	}
	cert := func(role certs.Role, region string) *x509.Certificate {
		is, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: "q", Role: role, Region: region, Institution: "office"}})
		if err != nil {
			t.Fatal(err)
		}
		return is.Cert
	}
	rep := api.Queriers{At: "2026-12-01T02:00:00Z", Institutions: []api.Querier{{Institution: "bank-a", Queries: 7,
		Purposes: map[string]uint64{"credit-check": 7}, Quotas: []api.QuotaUsage{{Limit: 10, Per: "24h", Used: 7, ResetsAt: "2026-12-01T16:00:00Z"}},
		Flags: []api.QuerierFlag{{Flag: api.FlagOffHours, Since: "2026-12-01T14:00:00Z", At: "2026-12-01T14:00:00Z", Count: 1, Observed: 1, Threshold: 1, Basis: 1}}}}}
	s := New(Config{Cluster: regionCluster{region: "zhejiang/quzhou"}, Queriers: fakeQueriers{rep}})
	get := func(s *Server, c *x509.Certificate) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/v1/audit/queriers", nil)
		if c != nil {
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w
	}
	for _, c := range []struct {
		name string
		cert *x509.Certificate
	}{
		{"the province's operator", cert(certs.Operator, "zhejiang")},
		{"the city's coordinator", cert(certs.Coordinator, "zhejiang/quzhou")},
	} {
		w := get(s, c.cert)
		var got api.Queriers
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &got) != nil {
			t.Fatalf("%s: %d %s", c.name, w.Code, w.Body)
		}
		if len(got.Institutions) != 1 || got.Institutions[0].Quotas[0].ResetsAt != "2026-12-01T16:00:00Z" || got.Institutions[0].Flags[0].Flag != "off_hours" {
			t.Errorf("%s: %s", c.name, w.Body)
		}
	}
	for _, c := range []struct {
		name string
		cert *x509.Certificate
		code int
	}{
		{"no certificate", nil, http.StatusUnauthorized},
		{"a department", cert(certs.Department, "zhejiang/quzhou"), http.StatusForbidden},
		{"another city's operator", cert(certs.Operator, "zhejiang/hangzhou"), http.StatusForbidden},
		{"a district's coordinator", cert(certs.Coordinator, "zhejiang/quzhou/kecheng"), http.StatusForbidden},
	} {
		if w := get(s, c.cert); w.Code != c.code {
			t.Errorf("%s: %d %s, want %d", c.name, w.Code, w.Body, c.code)
		}
	}
	// A node without queriers refuses; an empty account is an empty list.
	if w := get(New(Config{Cluster: regionCluster{region: "zhejiang/quzhou"}}), cert(certs.Operator, "zhejiang")); w.Code != http.StatusForbidden {
		t.Errorf("no queriers: %d %s", w.Code, w.Body)
	}
	empty := New(Config{Cluster: regionCluster{region: "zhejiang/quzhou"}, Queriers: fakeQueriers{}})
	if w := get(empty, cert(certs.Operator, "zhejiang")); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"institutions":[]`) {
		t.Errorf("empty: %d %s", w.Code, w.Body)
	}
}

// TestRetryAfterOfARefusal: a refusal that says how long to wait sets
// Retry-After to it in whole seconds, rounded up; one that does not keeps
// the default.
func TestRetryAfterOfARefusal(t *testing.T) {
	s := New(Config{Cluster: cluster{}})
	var wait time.Duration
	h := s.router([]route{{method: "GET", pattern: "/x", access: publicAccess, handle: func(w http.ResponseWriter, r *http.Request, c caller) error {
		e := fault.New(fault.TooManyRequests, "over quota")
		e.RetryAfter = wait
		return e
	}}})
	for _, c := range []struct {
		wait time.Duration
		want string
	}{{14 * time.Hour, "50400"}, {1500 * time.Millisecond, "2"}, {time.Millisecond, "1"}, {0, retryAfter}} {
		wait = c.wait
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/x", nil))
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != c.want {
			t.Errorf("wait %v: %d Retry-After %q, want %q", c.wait, w.Code, w.Header().Get("Retry-After"), c.want)
		}
	}
}
