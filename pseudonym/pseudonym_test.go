package pseudonym

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
)

const fed = "pseudotest"

func endpoint(t *testing.T, ca *certs.CA, id certs.Identity) *exchange.Endpoint {
	t.Helper()
	is, err := ca.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := exchange.New(exchange.Config{Certificate: is.TLSCertificate(), Verifier: certs.NewVerifier(ca.Cert, fed, nil),
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

type registry []consensus.Region

func (r registry) Regions() []consensus.Region { return r }

type memCache struct {
	mu sync.Mutex
	m  map[string]credit.Pseudonym
}

func (c *memCache) Pseudonyms(subjects []string) (map[string]credit.Pseudonym, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]credit.Pseudonym{}
	for _, s := range subjects {
		if p, ok := c.m[s]; ok {
			out[s] = p
		}
	}
	return out, nil
}

func (c *memCache) PutPseudonyms(ps map[string]credit.Pseudonym) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]credit.Pseudonym{}
	}
	for s, p := range ps {
		c.m[s] = p
	}
	return nil
}

type setup struct {
	key      credit.PseudonymKey
	city     *exchange.Endpoint
	district *exchange.Endpoint
	resolver *Resolver
	cache    *memCache
}

// newSetup is a coordinator (a city) serving pseudonyms over a real
// endpoint, and a district's resolver asking it.
func newSetup(t *testing.T, serve ServeConfig) *setup {
	t.Helper()
	ca, err := certs.NewCA(fed, 0)
	if err != nil {
		t.Fatal(err)
	}
	key, err := credit.NewPseudonymKey()
	if err != nil {
		t.Fatal(err)
	}
	cityID := certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"}
	districtID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	s := &setup{key: key, city: endpoint(t, ca, cityID), district: endpoint(t, ca, districtID), cache: &memCache{}}
	serve.Key = key
	if err := Serve(s.city, serve); err != nil {
		t.Fatal(err)
	}
	s.resolver = NewResolver(ResolverConfig{Self: districtID, Endpoint: s.district, Cache: s.cache,
		Registry: registry{{Path: cityID.Region, Role: certs.City, Exchange: s.city.Addr().String()}}})
	return s
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestResolveAsksTheCoordinatorAndCaches(t *testing.T) {
	s := newSetup(t, ServeConfig{Identifiers: credit.ParseOptions{TestOnly: true}})
	a := credit.SyntheticPerson(1, credit.NewDate(1990, 1, 1))
	b := credit.SyntheticPerson(2, credit.NewDate(1991, 2, 2))
	got, err := s.resolver.Resolve(ctxT(t), []string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != s.key.Pseudonym(a) || got[1] != s.key.Pseudonym(b) {
		t.Fatal("pseudonyms differ from the coordinators' key")
	}
	// With the coordinator gone, cached subjects still resolve and the
	// others say no coordinator answered.
	s.city.Close()
	if got, err := s.resolver.Resolve(ctxT(t), []string{b}); err != nil || got[0] != s.key.Pseudonym(b) {
		t.Fatalf("cached: %v", err)
	}
	c := credit.SyntheticPerson(3, credit.NewDate(1992, 3, 3))
	if _, err := s.resolver.Resolve(ctxT(t), []string{c}); !errors.Is(err, ErrNoCoordinator) {
		t.Fatalf("uncached without a coordinator: %v", err)
	}
}

// TestRefusalsNameThePositionNotTheIdentifier: an invalid identifier, and
// a real one at a test-only coordinator, are refused by position.
func TestRefusalsNameThePositionNotTheIdentifier(t *testing.T) {
	s := newSetup(t, ServeConfig{Identifiers: credit.ParseOptions{TestOnly: true}})
	good := credit.SyntheticPerson(5, credit.NewDate(1990, 1, 1))
	for _, bad := range []string{"110105194912310021", "11010519491231002X"} { // bad check character; real
		_, err := s.resolver.Resolve(ctxT(t), []string{good, bad})
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "identifier 1") {
			t.Fatalf("%s: %v", bad[:6], err)
		}
		if strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), good) {
			t.Fatalf("the refusal echoes an identifier: %v", err)
		}
	}
}

// TestRateLimitedPerCaller: far above the rate (2/s, burst 4), some calls
// are refused and none is served unboundedly.
func TestRateLimitedPerCaller(t *testing.T) {
	s := newSetup(t, ServeConfig{Identifiers: credit.ParseOptions{TestMode: true}, Rate: 2})
	id := credit.SyntheticPerson(1, credit.NewDate(1990, 1, 1))
	refused := 0
	for i := 0; i < 20; i++ {
		var rep reply
		err := s.district.Call(ctxT(t), exchange.Peer{Addr: s.city.Addr().String()}, Op, exchange.Meta{}, request{IDs: []string{id}}, &rep)
		if errors.Is(err, exchange.ErrTooManyRequests) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if refused == 0 {
		t.Fatal("20 requests at once above a rate of 2/s were all served")
	}
	// Oversized and empty requests are refused.
	for _, n := range []int{0, MaxBatch + 1} {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = id
		}
		var rep reply
		err := s.district.Call(ctxT(t), exchange.Peer{Addr: s.city.Addr().String()}, Op, exchange.Meta{}, request{IDs: ids}, &rep)
		if err == nil {
			t.Fatalf("a request of %d identifiers was served", n)
		}
	}
}
