package pseudonym

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/internal/exchangetest"
	"credfed/storage"
)

const fed = "pseudotest"

func endpoint(t *testing.T, ca *certs.CA, id certs.Identity) *exchange.Endpoint {
	return exchangetest.Endpoint(t, ca, id)
}

type registry []consensus.Region

func (r registry) Regions() []consensus.Region { return r }

func (r registry) Region(path string) (consensus.Region, bool) {
	for _, reg := range r {
		if reg.Path == path {
			return reg, true
		}
	}
	return consensus.Region{}, false
}

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
	key       credit.PseudonymKey
	ca        *certs.CA
	city      *exchange.Endpoint
	district  *exchange.Endpoint
	resolver  *Resolver
	cache     *memCache
	db        *storage.DB
	custodian *Custodian
	reg       registry
}

// newSetup is a coordinator (a city) keeping pseudonyms in custody over a
// real endpoint, with its audit log and notes in a real store, and a
// registered district's resolver asking it. change adjusts the custody's
// configuration.
func newSetup(t *testing.T, change func(*CustodyConfig)) *setup {
	t.Helper()
	ca := exchangetest.CA(t, fed)
	key, err := credit.NewPseudonymKey()
	if err != nil {
		t.Fatal(err)
	}
	cityID := certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"}
	districtID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	s := &setup{key: key, ca: ca, city: endpoint(t, ca, cityID), district: endpoint(t, ca, districtID), cache: &memCache{}}
	s.db, err = storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.db.Close() })
	s.reg = registry{{Path: cityID.Region, Role: certs.City, Exchange: s.city.Addr().String()},
		{Path: districtID.Region, Role: certs.District}}
	cfg := CustodyConfig{Key: key, Identifiers: credit.ParseOptions{TestOnly: true}, Registry: s.reg, Store: s.db,
		Audit:   audit.New(s.db.Audit(), cityID.Region, nil, nil, nil),
		Entries: func(credit.Pseudonym) ([]consensus.IndexEntry, error) { return nil, nil }}
	if change != nil {
		change(&cfg)
	}
	s.custodian, err = NewCustodian(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.custodian.Serve(s.city)
	s.resolver = NewResolver(ResolverConfig{Self: districtID, Endpoint: s.district, Cache: s.cache, Registry: s.reg})
	return s
}

// audited returns the coordinator's pseudonymize entries.
func (s *setup) audited(t *testing.T) []storage.AuditEntry {
	t.Helper()
	var out []storage.AuditEntry
	seq, _ := s.db.Audit().Head()
	if err := s.db.Audit().Range(1, seq, func(e storage.AuditEntry) error {
		if e.Operation == "pseudonymize" {
			out = append(out, e)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestResolveAsksTheCoordinatorAndCaches(t *testing.T) {
	s := newSetup(t, nil)
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
	s := newSetup(t, nil)
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

// TestRateLimitedPerCaller: far above the request rate (2/s, burst 4),
// some calls are refused and none is served unboundedly.
func TestRateLimitedPerCaller(t *testing.T) {
	s := newSetup(t, func(c *CustodyConfig) { c.RequestRate = 2 })
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

// TestCustodyRefusesUnregisteredCallers: a node certificate of a region
// outside the registry, a coordinator and a district of another role are
// refused, and every refusal is in the coordinator's audit log.
func TestCustodyRefusesUnregisteredCallers(t *testing.T) {
	s := newSetup(t, nil)
	id := credit.SyntheticPerson(1, credit.NewDate(1990, 1, 1))
	for _, who := range []certs.Identity{
		{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/ghost"}, // not registered
		{Federation: fed, Role: certs.City, Region: "zhejiang/hangzhou"},         // a coordinator
	} {
		ep := endpoint(t, s.ca, who)
		var rep reply
		err := ep.Call(ctxT(t), exchange.Peer{Addr: s.city.Addr().String()}, Op, exchange.Meta{}, request{IDs: []string{id}}, &rep)
		if !errors.Is(err, exchange.ErrForbidden) || len(rep.Pseudonyms) != 0 {
			t.Fatalf("%s: %v %v", who, err, rep.Pseudonyms)
		}
	}
	entries := s.audited(t)
	if len(entries) != 2 || entries[0].Decision != storage.DecisionDenied || entries[0].District != "zhejiang/quzhou/ghost" || entries[0].Count != 1 {
		t.Fatalf("audit %+v", entries)
	}
}

// TestCustodyAuditsAndLimitsPerDistrict: every request is audited with the
// district, the count and the pseudonyms; a district's identifiers per
// second are bounded whatever the number of requests.
func TestCustodyAuditsAndLimitsPerDistrict(t *testing.T) {
	s := newSetup(t, func(c *CustodyConfig) { c.DistrictRate = 5 }) // burst: one full request
	ids := make([]string, MaxBatch)
	for i := range ids {
		ids[i] = credit.SyntheticPerson(100+i, credit.NewDate(1990, 1, 1))
	}
	if _, err := s.resolver.Resolve(ctxT(t), ids); err != nil {
		t.Fatal(err)
	}
	entries := s.audited(t)
	if len(entries) != 1 || entries[0].Decision != storage.DecisionAllowed || entries[0].Count != MaxBatch || len(entries[0].Pseudonyms) != MaxBatch ||
		entries[0].Pseudonyms[7] != s.key.Pseudonym(ids[7]).String() || entries[0].District != "zhejiang/quzhou/kecheng" {
		t.Fatalf("audit of an allowed request: %+v", entries)
	}
	_, err := s.resolver.Resolve(ctxT(t), []string{credit.SyntheticPerson(5000, credit.NewDate(1990, 1, 1))})
	if err == nil || !strings.Contains(err.Error(), "identifiers a second") {
		t.Fatalf("past the district's rate: %v", err)
	}
	if e := s.audited(t); len(e) != 2 || e[1].Decision != storage.DecisionDenied || e[1].Reason != "too_many_requests" {
		t.Fatalf("audit of the refusal: %+v", e)
	}
}

// TestCustodyFlagsADistrictThatSweeps: a district that asks for pseudonyms
// of subjects it never publishes is flagged once the window has passed; a
// district whose pseudonyms show up in its index entries is not.
func TestCustodyFlagsADistrictThatSweeps(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	published := map[credit.Pseudonym]bool{}
	var mu sync.Mutex
	s := newSetup(t, func(c *CustodyConfig) {
		c.Now = func() time.Time { return time.Unix(0, now.Load()) }
		c.NotesPerSec, c.Window = 1000, time.Hour
		c.Entries = func(p credit.Pseudonym) ([]consensus.IndexEntry, error) {
			mu.Lock()
			defer mu.Unlock()
			if published[p] {
				return []consensus.IndexEntry{{District: "zhejiang/quzhou/kecheng", Summary: credit.IndexSummary{Negative: 1}}}, nil
			}
			return nil, nil
		}
	})
	batch := func(from int) []string {
		ids := make([]string, 100)
		for i := range ids {
			ids[i] = credit.SyntheticPerson(from+i, credit.NewDate(1985, 5, 5))
		}
		return ids
	}
	// An honest intake: every subject it pseudonymizes is published.
	honest := batch(1)
	ps, err := s.resolver.Resolve(ctxT(t), honest)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for _, p := range ps {
		published[p] = true
	}
	mu.Unlock()
	now.Add(int64(2 * time.Hour))
	res, err := s.custodian.Check(ctxT(t))
	if err != nil || res.Checked == 0 || res.Unmatched != 0 || len(res.Flagged) != 0 {
		t.Fatalf("check of an honest intake: %+v %v", res, err)
	}
	// A sweep: pseudonyms of subjects it never publishes.
	if _, err := s.resolver.Resolve(ctxT(t), batch(10_000)); err != nil {
		t.Fatal(err)
	}
	// Not before the window has passed.
	if res, err := s.custodian.Check(ctxT(t)); err != nil || res.Checked != 0 {
		t.Fatalf("check within the window: %+v %v", res, err)
	}
	now.Add(int64(2 * time.Hour))
	res, err = s.custodian.Check(ctxT(t))
	if err != nil || len(res.Flagged) != 1 || res.Flagged[0] != "zhejiang/quzhou/kecheng" || res.Unmatched < DefaultMinChecked {
		t.Fatalf("check of a sweep: %+v %v", res, err)
	}
	accts, err := s.custodian.Accounts(ctxT(t))
	if err != nil || len(accts) != 1 || accts[0].Issued != 200 || accts[0].FlaggedAt.IsZero() || accts[0].Unmatched != uint64(res.Unmatched) {
		t.Fatalf("accounts %+v %v", accts, err)
	}
}
