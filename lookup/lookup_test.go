package lookup

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
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

	db, key := storeAndKey(t)
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
	if err != nil || len(entries) != 2 {
		t.Fatalf("audit %+v %v", entries, err)
	}
	if e := entries[0]; e.Operation != "lookup" || e.Decision != storage.DecisionAllowed || len(e.Records) != 0 {
		t.Fatalf("the audit entry registers records of a dropped answer: %+v", e)
	}
	if n := entries[1]; n.Operation != "lookup.forged_answer" || n.District != kechengID.Region || n.Caller != kechengID.String() ||
		n.Decision != storage.DecisionDenied || n.Reference != "R-1" || len(n.Records) != 0 {
		t.Fatalf("the note of the forged answer: %+v", n)
	}
	if got := testutil.ToFloat64(svc.forged.WithLabelValues(kechengID.Region)); got != 1 {
		t.Fatalf("forged answers counted: %v", got)
	}

	// An honest answer (its own records only) is shown.
	honest.Store(true)
	ans, err = svc.Lookup(context.Background(), user, Request{Subject: subject, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-2"})
	if err != nil || ans.Districts[0].Status != exchange.StatusOK || len(ans.Districts[0].Records) != 1 {
		t.Fatalf("honest answer: %+v %v", ans, err)
	}
	// Its entry (durable before the answer) names who asked and why; the
	// outcome entry that follows names the record returned.
	svc.Wait()
	entries, err = db.Audit().BySubject(key.Pseudonym(subject).String())
	if err != nil {
		t.Fatal(err)
	}
	var asked, outcome *storage.AuditEntry
	for i, e := range entries {
		if e.LookupID == ans.LookupID && e.Operation == "lookup" {
			asked = &entries[i]
		}
		if e.LookupID == ans.LookupID && e.Operation == OperationRecords {
			outcome = &entries[i]
		}
	}
	if asked == nil || asked.Reference != "R-2" || asked.User != "张三" || len(asked.Records) != 0 {
		t.Fatalf("the lookup's entry: %+v", asked)
	}
	if outcome == nil || len(outcome.Records) != 1 || outcome.Records[0] != kechengID.Region+"/market-supervision/F-1" || outcome.Reference != "R-2" {
		t.Fatalf("the outcome entry: %+v", outcome)
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
	db, key := storeAndKey(t)
	var resolved atomic.Int64
	resolve := func(ctx context.Context, ids []string) ([]credit.Pseudonym, error) {
		resolved.Add(int64(len(ids)))
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
	stranger := credit.SyntheticPerson(63, credit.NewDate(1980, 1, 1)) // the district holds nothing of them
	today := credit.TodayAt(time.Now())
	rec, err := cat.Accept(credit.Record{ID: "A-1", Subject: subject, CatalogItem: "FOOD-DRUG-PENALTY", DecisionNumber: "X〔2026〕1",
		OccurredOn: today - 10, DecidedOn: today - 5, Summary: "s", Department: "market-supervision", District: kechengID.Region},
		time.Now(), credit.ParseOptions{TestMode: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.SubmitRecords([]credit.Record{rec}); err != nil {
		t.Fatal(err)
	}
	user := certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: "credit-office"}
	meta := exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"}
	ask := func(subject string, p credit.Pseudonym) (reply, error) {
		var rep reply
		err := city.Call(context.Background(), exchange.Peer{Addr: district.Addr().String()}, Op, meta,
			request{Subject: subject, Pseudonym: p, Requester: user}, &rep)
		return rep, err
	}
	if _, err := ask(subject, key.Pseudonym(other)); !errors.Is(err, exchange.ErrBadRequest) {
		t.Fatalf("a lookup with another subject's pseudonym: %v", err)
	}
	if _, err := ask(subject, credit.Pseudonym{}); !errors.Is(err, exchange.ErrBadRequest) {
		t.Fatalf("a lookup with a zero pseudonym: %v", err)
	}
	if rep, err := ask(subject, key.Pseudonym(subject)); err != nil || len(rep.Records) != 1 {
		t.Fatalf("an honest lookup: %+v, %v", rep, err)
	}
	mine, err := db.Audit().BySubject(key.Pseudonym(subject).String())
	if err != nil || len(mine) != 3 || mine[0].Decision != storage.DecisionDenied || mine[1].Decision != storage.DecisionDenied ||
		mine[2].Decision != storage.DecisionAllowed || len(mine[2].Records) != 1 {
		t.Fatalf("the subject's entries: %+v %v", mine, err)
	}
	if theirs, _ := db.Audit().BySubject(key.Pseudonym(other).String()); len(theirs) != 0 {
		t.Fatalf("entries under the pseudonym the caller sent: %+v", theirs)
	}
	if n := resolved.Load(); n != 3 {
		t.Fatalf("%d pseudonyms resolved for 3 lookups of a subject the district holds records of", n)
	}

	// Of a subject it holds nothing of, the district resolves nothing (a
	// lookup sent to it does not count against it in custody), answers no
	// records and audits under the pseudonym sent.
	if rep, err := ask(stranger, key.Pseudonym(stranger)); err != nil || len(rep.Records) != 0 {
		t.Fatalf("a lookup of a subject the district holds nothing of: %+v, %v", rep, err)
	}
	if n := resolved.Load(); n != 3 {
		t.Fatalf("the district resolved a pseudonym for a subject it holds nothing of (%d resolutions)", n)
	}
	if e, _ := db.Audit().BySubject(key.Pseudonym(stranger).String()); len(e) != 1 || e[0].Decision != storage.DecisionAllowed {
		t.Fatalf("the stranger's entries: %+v", e)
	}
}

// manyEntries is an index naming every one of its districts as holding
// the subject.
type manyEntries []consensus.Region

func (m manyEntries) Lookup(ctx context.Context, p credit.Pseudonym, strong bool) ([]consensus.IndexEntry, uint64, error) {
	var out []consensus.IndexEntry
	for _, r := range m {
		out = append(out, consensus.IndexEntry{District: r.Path, Summary: credit.IndexSummary{Negative: 1}, Seq: 1, Index: 7})
	}
	return out, 7, nil
}

func (m manyEntries) Region(path string) (consensus.Region, bool) {
	for _, r := range m {
		if r.Path == path {
			return r, true
		}
	}
	return consensus.Region{}, false
}

// TestForgedAndPhantomAnswers: of two districts the index names, one
// answers with a record of its own district about another person (a
// forged answer: dropped, counted and noted), the other with no records
// (a phantom answer: what a district that planted its index entry to be
// sent the lookup answers; counted by district and noted).
func TestForgedAndPhantomAnswers(t *testing.T) {
	ca := exchangetest.CA(t, fed)
	cityID := certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"}
	kechengID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	qujiangID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/qujiang"}
	city := endpoint(t, ca, cityID)
	kecheng, qujiang := endpoint(t, ca, kechengID), endpoint(t, ca, qujiangID)
	subject := credit.SyntheticPerson(71, credit.NewDate(1985, 1, 2))
	other := credit.SyntheticPerson(72, credit.NewDate(1985, 1, 2))
	cat := credit.DefaultCatalog()
	today := credit.TodayAt(time.Now())
	rec, err := cat.Accept(credit.Record{ID: "O-1", Subject: other, CatalogItem: "FOOD-DRUG-PENALTY", DecisionNumber: "X〔2026〕1",
		OccurredOn: today - 10, DecidedOn: today - 5, Summary: "another person's", Department: "market-supervision", District: kechengID.Region},
		time.Now(), credit.ParseOptions{TestMode: true})
	if err != nil {
		t.Fatal(err)
	}
	kecheng.Handle(Op, func(ctx context.Context, req *exchange.Request) (any, error) {
		return reply{Records: []credit.Record{rec}}, nil
	})
	qujiang.Handle(Op, func(ctx context.Context, req *exchange.Request) (any, error) {
		return reply{Records: []credit.Record{}}, nil
	})
	db, key := storeAndKey(t)
	reg := prometheus.NewRegistry()
	svc := New(Config{Self: cityID, Key: key, Identifiers: credit.ParseOptions{TestMode: true},
		Index: manyEntries{{Path: kechengID.Region, Role: certs.District, Exchange: kecheng.Addr().String()},
			{Path: qujiangID.Region, Role: certs.District, Exchange: qujiang.Addr().String()}},
		Endpoint: city, Catalog: func() *credit.Catalog { return cat }, Audit: audit.New(db.Audit(), cityID.Region, nil, nil, nil), Registerer: reg})
	user := certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: "credit-office"}
	for i := 1; i <= 2; i++ {
		ans, err := svc.Lookup(context.Background(), user, Request{Subject: subject, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"})
		if err != nil {
			t.Fatal(err)
		}
		if len(ans.Districts) != 2 || ans.Districts[0].Status != exchange.StatusError || len(ans.Districts[0].Records) != 0 ||
			ans.Districts[1].Status != exchange.StatusOK || len(ans.Districts[1].Records) != 0 {
			t.Fatalf("answer: %+v", ans.Districts)
		}
		if got := testutil.ToFloat64(svc.phantom.WithLabelValues(qujiangID.Region)); got != float64(i) {
			t.Fatalf("phantom answers of qujiang after %d lookups: %v", i, got)
		}
		if got := testutil.ToFloat64(svc.forged.WithLabelValues(kechengID.Region)); got != float64(i) {
			t.Fatalf("forged answers of kecheng after %d lookups: %v", i, got)
		}
	}
	if got := testutil.ToFloat64(svc.phantom.WithLabelValues(kechengID.Region)); got != 0 {
		t.Fatalf("a forged answer counted as a phantom one: %v", got)
	}
	entries, err := db.Audit().BySubject(key.Pseudonym(subject).String())
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, e := range entries {
		ops[e.Operation]++
		if e.Operation == "lookup.phantom_answer" && (e.District != qujiangID.Region || e.Caller != qujiangID.String() || e.Purpose != "ADMIN-LICENSING") {
			t.Errorf("phantom note: %+v", e)
		}
		if len(e.Records) != 0 {
			t.Errorf("an entry registers a record as seen: %+v", e)
		}
	}
	if ops["lookup"] != 2 || ops["lookup.phantom_answer"] != 2 || ops["lookup.forged_answer"] != 2 {
		t.Fatalf("entries by operation: %v", ops)
	}
}

// TestRefusedLookupKeepsNoRefusedInput: a refused lookup's audit entry
// keeps no field the edge refused (too long, not text), and the refusal
// echoes neither an unknown purpose nor the refused field.
func TestRefusedLookupKeepsNoRefusedInput(t *testing.T) {
	db, key := storeAndKey(t)
	cityID := certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"}
	cat := credit.DefaultCatalog()
	svc := New(Config{Self: cityID, Key: key, Identifiers: credit.ParseOptions{TestMode: true},
		Index: oneEntry{}, Catalog: func() *credit.Catalog { return cat }, Audit: audit.New(db.Audit(), cityID.Region, nil, nil, nil)})
	user := certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: "credit-office"}
	portal := certs.Identity{Federation: fed, Role: certs.Portal, Region: "zhejiang/quzhou/kecheng", Institution: "portal"}
	subject := credit.SyntheticPerson(97, credit.NewDate(1985, 1, 2))
	long := strings.Repeat("案", 2000) + "\u202e"
	for _, c := range []struct {
		who  certs.Identity
		req  Request
		kind fault.Kind
	}{
		{user, Request{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: long}, fault.BadRequest},
		{user, Request{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u\u00ad", Reference: "r"}, fault.BadRequest},
		{user, Request{Subject: subject, Purpose: subject, User: "u", Reference: "r"}, fault.Forbidden},
		{user, Request{Subject: subject, Purpose: strings.Repeat("P", 100), User: "u", Reference: "r"}, fault.Forbidden},
		{portal, Request{Subject: subject, Purpose: long, User: long, Reference: long, Authorization: long}, fault.Forbidden},
	} {
		_, err := svc.Lookup(context.Background(), c.who, c.req)
		var fe *fault.Error
		if !errors.As(err, &fe) || fe.Kind != c.kind {
			t.Fatalf("%+v: %v, want %s", c.req, err, c.kind)
		}
		if strings.Contains(fe.Message, subject) || strings.Contains(fe.Message, "案案") || strings.Contains(fe.Message, "PPP") {
			t.Errorf("the refusal echoes the input: %s", fe.Message)
		}
	}
	entries, err := db.Audit().BySubject(key.Pseudonym(subject).String())
	if err != nil || len(entries) != 5 {
		t.Fatalf("entries %d, %v", len(entries), err)
	}
	for _, e := range entries {
		if e.Decision != storage.DecisionDenied {
			t.Errorf("allowed: %+v", e)
		}
		for _, v := range []string{e.User, e.Purpose, e.Reference, e.Authorization} {
			if len(v) > MaxFieldLength || strings.ContainsAny(v, "\u202e\u00ad") || strings.Contains(v, subject) {
				t.Errorf("the refused lookup's entry keeps a refused field (%d bytes)", len(v))
			}
		}
	}
	if e := entries[0]; e.User != "u" || e.Purpose != "ADMIN-LICENSING" || e.Reference != "" {
		t.Errorf("the entry of a lookup refused for its reference: user %q, purpose %q, reference of %d bytes", e.User, e.Purpose, len(e.Reference))
	}
}
