package lookup

import (
	"context"
	"errors"
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

const fed = "lookuptest"

func endpoint(t *testing.T, ca *certs.CA, id certs.Identity) *exchange.Endpoint {
	return exchangetest.Endpoint(t, ca, id)
}

// oneEntry is an index naming one district as holding the subject.
type oneEntry struct{ region consensus.Region }

func (o oneEntry) Lookup(ctx context.Context, p credit.Pseudonym, strong bool) ([]consensus.IndexEntry, uint64, error) {
	return []consensus.IndexEntry{{District: o.region.Path, Summary: credit.IndexSummary{Negative: 1}, Seq: 1, Index: 7}}, 7, nil
}

func (o oneEntry) Region(path string) (consensus.Region, bool) {
	return o.region, path == o.region.Path
}

// TestAnswerNamingAnotherDistrictIsDropped: a district (here a hostile
// one, behind a real endpoint with its own node certificate) answers a
// lookup with records that name another district. The coordinator shows
// none of them, marks that district's part as an error, and its audit
// entry registers no record as seen.
func TestAnswerNamingAnotherDistrictIsDropped(t *testing.T) {
	ca := exchangetest.CA(t, fed)
	cityID := certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"}
	kechengID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	city := endpoint(t, ca, cityID)
	hostile := endpoint(t, ca, kechengID)
	subject := credit.SyntheticPerson(99, credit.NewDate(1985, 1, 2))
	cat := credit.DefaultCatalog()
	today := credit.TodayAt(time.Now())
	forged := func(district string) credit.Record {
		r, err := cat.Accept(credit.Record{ID: "F-1", Subject: subject, CatalogItem: "FOOD-DRUG-PENALTY", DecisionNumber: "X〔2026〕1",
			OccurredOn: today - 10, DecidedOn: today - 5, Summary: "forged", Department: "market-supervision", District: district},
			time.Now(), credit.ParseOptions{TestMode: true})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	claim := "zhejiang/hangzhou/xihu" // what the hostile district says its records are
	var honest atomic.Bool
	hostile.Handle(Op, func(ctx context.Context, req *exchange.Request) (any, error) {
		if honest.Load() {
			return reply{Records: []credit.Record{forged(kechengID.Region)}}, nil
		}
		return reply{Records: []credit.Record{forged(kechengID.Region), forged(claim)}}, nil
	})

	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := credit.NewPseudonymKey()
	if err != nil {
		t.Fatal(err)
	}
	svc := New(Config{Self: cityID, Key: key, Identifiers: credit.ParseOptions{TestMode: true},
		Index:    oneEntry{consensus.Region{Path: kechengID.Region, Name: "柯城区", Role: certs.District, Exchange: hostile.Addr().String()}},
		Endpoint: city, Catalog: func() *credit.Catalog { return cat }, Audit: audit.New(db.Audit(), cityID.Region, nil, nil, nil)})
	user := certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: "credit-office"}
	ans, err := svc.Lookup(context.Background(), user, Request{Subject: subject, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Districts) != 1 {
		t.Fatalf("districts %+v", ans.Districts)
	}
	part := ans.Districts[0]
	if part.Status != exchange.StatusError || len(part.Records) != 0 || part.Error == "" {
		t.Fatalf("the hostile district's part: %+v", part)
	}
	entries, err := db.Audit().BySubject(key.Pseudonym(subject).String())
	if err != nil || len(entries) != 1 {
		t.Fatalf("audit %+v %v", entries, err)
	}
	if e := entries[0]; e.Decision != storage.DecisionAllowed || len(e.Records) != 0 {
		t.Fatalf("the audit entry registers records of a dropped answer: %+v", e)
	}

	// An honest answer (its own records only) is shown.
	honest.Store(true)
	ans, err = svc.Lookup(context.Background(), user, Request{Subject: subject, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-2"})
	if err != nil || ans.Districts[0].Status != exchange.StatusOK || len(ans.Districts[0].Records) != 1 {
		t.Fatalf("honest answer: %+v %v", ans, err)
	}
}

// TestAuditFailureRefusesTheLookup: a lookup whose audit entry cannot be
// written is not answered.
func TestAuditFailureRefusesTheLookup(t *testing.T) {
	key, err := credit.NewPseudonymKey()
	if err != nil {
		t.Fatal(err)
	}
	cityID := certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"}
	cat := credit.DefaultCatalog()
	svc := New(Config{Self: cityID, Key: key, Identifiers: credit.ParseOptions{TestMode: true},
		Index: oneEntry{}, Catalog: func() *credit.Catalog { return cat }, Audit: audit.New(failingLog{}, cityID.Region, nil, nil, nil)})
	user := certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: "credit-office"}
	subject := credit.SyntheticPerson(98, credit.NewDate(1985, 1, 2))
	_, err = svc.Lookup(context.Background(), user, Request{Subject: subject, Purpose: "curiosity", User: "张三", Reference: "R-1"})
	if !errors.Is(err, audit.ErrUnavailable) && (err == nil || err.Error() != audit.ErrUnavailable.Error()) {
		t.Fatalf("a refused lookup whose audit fails: %v", err)
	}
}

type failingLog struct{}

func (failingLog) Append(...storage.AuditEntry) ([]storage.AuditEntry, error) {
	return nil, errors.New("disk full")
}

// TestDistrictAuditsUnderItsOwnPseudonym: a coordinator that sends another
// subject's pseudonym (to keep the lookup out of this subject's access
// log) is refused, and the district's audit entry names the subject by the
// pseudonym the district holds for it.
func TestDistrictAuditsUnderItsOwnPseudonym(t *testing.T) {
	ca := exchangetest.CA(t, fed)
	cityID := certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"}
	kechengID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	city := endpoint(t, ca, cityID)
	district := endpoint(t, ca, kechengID)
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := credit.NewPseudonymKey()
	if err != nil {
		t.Fatal(err)
	}
	resolve := func(ctx context.Context, ids []string) ([]credit.Pseudonym, error) {
		out := make([]credit.Pseudonym, len(ids))
		for i, id := range ids {
			out[i] = key.Pseudonym(id)
		}
		return out, nil
	}
	cat := credit.DefaultCatalog()
	New(Config{Self: kechengID, Identifiers: credit.ParseOptions{TestMode: true}, Endpoint: district, Records: db,
		Resolve: resolve, Catalog: func() *credit.Catalog { return cat }, Audit: audit.New(db.Audit(), kechengID.Region, nil, nil, nil)})
	subject := credit.SyntheticPerson(61, credit.NewDate(1980, 1, 1))
	other := credit.SyntheticPerson(62, credit.NewDate(1980, 1, 1))
	user := certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: "credit-office"}
	meta := exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"}
	ask := func(p credit.Pseudonym) error {
		var rep reply
		return city.Call(context.Background(), exchange.Peer{Addr: district.Addr().String()}, Op, meta,
			request{Subject: subject, Pseudonym: p, Requester: user}, &rep)
	}
	if err := ask(key.Pseudonym(other)); !errors.Is(err, exchange.ErrBadRequest) {
		t.Fatalf("a lookup with another subject's pseudonym: %v", err)
	}
	if err := ask(key.Pseudonym(subject)); err != nil {
		t.Fatalf("an honest lookup: %v", err)
	}
	mine, err := db.Audit().BySubject(key.Pseudonym(subject).String())
	if err != nil || len(mine) != 2 || mine[0].Decision != storage.DecisionDenied || mine[1].Decision != storage.DecisionAllowed {
		t.Fatalf("the subject's entries: %+v %v", mine, err)
	}
	if theirs, _ := db.Audit().BySubject(key.Pseudonym(other).String()); len(theirs) != 0 {
		t.Fatalf("entries under the pseudonym the caller sent: %+v", theirs)
	}
}
