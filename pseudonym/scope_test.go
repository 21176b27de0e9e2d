package pseudonym

import (
	"context"
	"errors"
	"strings"
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

// tree is a province and two cities keeping pseudonyms in custody, each
// over a real endpoint with its own store, and a district of the first
// city, all registered.
type tree struct {
	key                        credit.PseudonymKey
	ca                         *certs.CA
	reg                        registry
	district                   *exchange.Endpoint
	districtID                 certs.Identity
	province, quzhou, hangzhou *coordinatorNode
}

type coordinatorNode struct {
	ep  *exchange.Endpoint
	db  *storage.DB
	cus *Custodian
}

func (c *coordinatorNode) peer() exchange.Peer {
	id := c.ep.Identity()
	return exchange.Peer{Name: id.Region, Addr: c.ep.Addr().String(), Identity: &id}
}

// audited returns the coordinator's pseudonymize audit entries.
func (c *coordinatorNode) audited(t *testing.T) []storage.AuditEntry {
	t.Helper()
	var out []storage.AuditEntry
	seq, _ := c.db.Audit().Head()
	if seq == 0 {
		return nil
	}
	if err := c.db.Audit().Range(1, seq, func(e storage.AuditEntry) error {
		if e.Operation == "pseudonymize" {
			out = append(out, e)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func newTree(t *testing.T, districtRate float64) *tree {
	t.Helper()
	tr := &tree{ca: exchangetest.CA(t, fed)}
	var err error
	if tr.key, err = credit.NewPseudonymKey(); err != nil {
		t.Fatal(err)
	}
	ids := map[string]certs.Identity{
		"zhejiang":          {Federation: fed, Role: certs.Province, Region: "zhejiang"},
		"zhejiang/quzhou":   {Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"},
		"zhejiang/hangzhou": {Federation: fed, Role: certs.City, Region: "zhejiang/hangzhou"},
	}
	eps := map[string]*exchange.Endpoint{}
	for path, id := range ids {
		eps[path] = endpoint(t, tr.ca, id)
		tr.reg = append(tr.reg, consensus.Region{Path: path, Role: id.Role, Exchange: eps[path].Addr().String()})
	}
	tr.districtID = certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	tr.district = endpoint(t, tr.ca, tr.districtID)
	tr.reg = append(tr.reg, consensus.Region{Path: tr.districtID.Region, Role: certs.District},
		consensus.Region{Path: "zhejiang/hangzhou/xihu", Role: certs.District})
	start := func(path string) *coordinatorNode {
		db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		cus, err := NewCustodian(CustodyConfig{Key: tr.key, Identifiers: credit.ParseOptions{TestOnly: true}, Registry: tr.reg, Store: db,
			Audit: audit.New(db.Audit(), path, nil, nil, nil), DistrictRate: districtRate,
			Entries: func(credit.Pseudonym) ([]consensus.IndexEntry, error) { return nil, nil }})
		if err != nil {
			t.Fatal(err)
		}
		cus.Serve(eps[path])
		return &coordinatorNode{ep: eps[path], db: db, cus: cus}
	}
	tr.province, tr.quzhou, tr.hangzhou = start("zhejiang"), start("zhejiang/quzhou"), start("zhejiang/hangzhou")
	return tr
}

func synthIDs(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = credit.SyntheticPerson(from+i, credit.NewDate(1975, 6, 6))
	}
	return out
}

// TestCustodyServesADistrictOnlyUpItsRegionTree: a district asking every
// coordinator gets its full rate from its city, a tenth of it from its
// province, and nothing from another city: what it gets does not grow
// with the coordinators it can reach.
func TestCustodyServesADistrictOnlyUpItsRegionTree(t *testing.T) {
	tr := newTree(t, 5) // the city: 5/s, a burst of one full request; the province: 0.5/s, a burst of 5
	call := func(c *coordinatorNode, n, from int) (int, error) {
		var rep reply
		err := tr.district.Call(ctxT(t), c.peer(), Op, exchange.Meta{}, request{IDs: synthIDs(from, n)}, &rep)
		return len(rep.Pseudonyms), err
	}
	if _, err := call(tr.hangzhou, 1, 1); !errors.Is(err, exchange.ErrForbidden) || !strings.Contains(err.Error(), "its own region only") {
		t.Fatalf("another city: %v", err)
	}
	if got, err := call(tr.quzhou, MaxBatch, 1000); err != nil || got != MaxBatch {
		t.Fatalf("the district's city: %d, %v", got, err)
	}
	if _, err := call(tr.province, MaxBatch, 3000); !errors.Is(err, exchange.ErrTooManyRequests) {
		t.Fatalf("a full request at the province: %v", err)
	}
	if got, err := call(tr.province, 5, 5000); err != nil || got != 5 {
		t.Fatalf("the province's fallback burst: %d, %v", got, err)
	}
	if _, err := call(tr.province, 5, 6000); !errors.Is(err, exchange.ErrTooManyRequests) || !strings.Contains(err.Error(), "identifiers a second") {
		t.Fatalf("past the province's fallback rate: %v", err)
	}
	h := tr.hangzhou.audited(t)
	if len(h) != 1 || h[0].Decision != storage.DecisionDenied || h[0].Reason != string(exchange.CodeForbidden) || len(h[0].Pseudonyms) != 0 {
		t.Fatalf("the other city's audit: %+v", h)
	}
	if p := tr.province.audited(t); len(p) != 3 || p[1].Decision != storage.DecisionAllowed || p[1].Count != 5 {
		t.Fatalf("the province's audit: %+v", p)
	}
}

// TestResolverDoesNotFailOverWhenRateLimited: a district's resolver asks
// its city; past the district's rate it says so and asks no one else; the
// province is asked only once the city does not answer, and another city
// never.
func TestResolverDoesNotFailOverWhenRateLimited(t *testing.T) {
	tr := newTree(t, 5)
	r := NewResolver(ResolverConfig{Self: tr.districtID, Endpoint: tr.district, Registry: tr.reg,
		Coordinators: []string{tr.hangzhou.peer().Addr, tr.quzhou.peer().Addr}}) // configured: all of them
	got, err := r.Resolve(ctxT(t), synthIDs(1, MaxBatch))
	if err != nil || got[3] != tr.key.Pseudonym(synthIDs(1, MaxBatch)[3]) {
		t.Fatalf("the first batch: %v", err)
	}
	if _, err := r.Resolve(ctxT(t), synthIDs(5000, 1)); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("past the district's rate: %v", err)
	}
	if n := len(tr.province.audited(t)); n != 0 {
		t.Fatalf("the resolver failed over to the province on a rate limit (%d requests)", n)
	}
	tr.quzhou.ep.Close()
	// The call to the closed city may wait out the exchange's dial
	// timeout before the province is asked.
	down, cancelDown := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelDown()
	if got, err := r.Resolve(down, synthIDs(6000, 2)); err != nil || got[1] != tr.key.Pseudonym(synthIDs(6000, 2)[1]) {
		t.Fatalf("with the city down: %v", err)
	}
	if p := tr.province.audited(t); len(p) != 1 || p[0].Decision != storage.DecisionAllowed || p[0].Count != 2 {
		t.Fatalf("the province's audit: %+v", p)
	}
	tr.province.ep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // a dial of a closed port waits out its deadline
	defer cancel()
	if _, err := r.Resolve(ctx, synthIDs(7000, 1)); !errors.Is(err, ErrNoCoordinator) {
		t.Fatalf("with the city and the province down: %v", err)
	}
	if h := tr.hangzhou.audited(t); len(h) != 0 {
		t.Fatalf("the resolver asked another city: %+v", h)
	}
	var asked []string
	for _, p := range r.coordinators() {
		asked = append(asked, p.Name)
	}
	if strings.Join(asked, " ") != "zhejiang/quzhou zhejiang" {
		t.Fatalf("the resolver asks %v, want its city, then its province", asked)
	}
}

// TestResolverWithoutARegistryTriesTheConfiguredCoordinators: before the
// registry has reached it, a district asks the configured coordinators in
// turn; another city's refusal does not stop it.
func TestResolverWithoutARegistryTriesTheConfiguredCoordinators(t *testing.T) {
	tr := newTree(t, 5)
	r := NewResolver(ResolverConfig{Self: tr.districtID, Endpoint: tr.district,
		Coordinators: []string{tr.hangzhou.peer().Addr, tr.quzhou.peer().Addr}})
	got, err := r.Resolve(ctxT(t), synthIDs(1, 3))
	if err != nil || got[2] != tr.key.Pseudonym(synthIDs(1, 3)[2]) {
		t.Fatalf("%v", err)
	}
	if h := tr.hangzhou.audited(t); len(h) != 1 || h[0].Decision != storage.DecisionDenied {
		t.Fatalf("the other city's audit: %+v", h)
	}
	// Only other cities configured: refused, not "no coordinator".
	r = NewResolver(ResolverConfig{Self: tr.districtID, Endpoint: tr.district, Coordinators: []string{tr.hangzhou.peer().Addr}})
	if _, err := r.Resolve(ctxT(t), synthIDs(10, 1)); !errors.Is(err, ErrRefused) {
		t.Fatalf("only another city: %v", err)
	}
}

// TestCustodyCountsOnlyEntriesThatHoldSomething: a district that hides a
// sweep behind empty index entries, which no lookup reaches, is flagged
// all the same.
func TestCustodyCountsOnlyEntriesThatHoldSomething(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	s := newSetup(t, func(c *CustodyConfig) {
		c.Now = func() time.Time { return time.Unix(0, now.Load()) }
		c.NotesPerSec, c.Window = 1000, time.Hour
		c.Entries = func(credit.Pseudonym) ([]consensus.IndexEntry, error) {
			return []consensus.IndexEntry{{District: "zhejiang/quzhou/kecheng", Seq: 1}}, nil // an empty entry for each
		}
	})
	if _, err := s.resolver.Resolve(ctxT(t), synthIDs(1, 100)); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(2 * time.Hour))
	res, err := s.custodian.Check(ctxT(t))
	if err != nil || len(res.Flagged) != 1 || res.Flagged[0] != "zhejiang/quzhou/kecheng" || res.Unmatched != res.Checked || res.Checked < DefaultMinChecked {
		t.Fatalf("a sweep hidden behind empty entries: %+v %v", res, err)
	}
}

// TestResolverAsksInParallelParts: a resolve of more identifiers than a
// request holds, and of more parts than go out at once (maxAsking), is
// asked in parts; every pseudonym comes back in the place of its
// identifier, each part a request the coordinator audited.
func TestResolverAsksInParallelParts(t *testing.T) {
	tr := newTree(t, 1000) // bursts of ten seconds: ten full requests
	r := NewResolver(ResolverConfig{Self: tr.districtID, Endpoint: tr.district, Registry: tr.reg,
		Coordinators: []string{tr.quzhou.peer().Addr}})
	ids := synthIDs(1, 5*MaxBatch+17) // six parts: more than maxAsking
	got, err := r.Resolve(ctxT(t), ids)
	if err != nil || len(got) != len(ids) {
		t.Fatalf("%d pseudonyms, %v", len(got), err)
	}
	for i, id := range ids {
		if got[i] != tr.key.Pseudonym(id) {
			t.Fatalf("pseudonym %d is not its identifier's", i)
		}
	}
	a := tr.quzhou.audited(t)
	counted := 0
	for _, e := range a {
		counted += e.Count
	}
	if len(a) != 6 || counted != len(ids) {
		t.Fatalf("the city audited %d requests of %d identifiers, want 6 of %d", len(a), counted, len(ids))
	}
}
