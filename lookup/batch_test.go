package lookup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"credfed/audit"
	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/internal/wait"
	"credfed/storage"
)

// district is a real district's lookup service (storage, audit, endpoint)
// holding one record of each of subjects, and a city endpoint to call it.
type districtFixture struct {
	db       *storage.DB
	key      credit.PseudonymKey
	city     *exchange.Endpoint
	district *exchange.Endpoint
	id       certs.Identity
	user     certs.Identity
	// ownAll counts the batched resolutions; failOwnAll makes them fail.
	ownAll     atomic.Int32
	failOwnAll atomic.Bool
	// ownAllIDs counts the subjects asked of them.
	ownAllIDs atomic.Int32
}

func newDistrict(t *testing.T, log audit.Log, subjects ...string) *districtFixture {
	t.Helper()
	ca := newCA(t)
	f := &districtFixture{
		id:   certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"},
		user: certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: "credit-office"},
	}
	f.city = endpoint(t, ca, certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"})
	f.district = endpoint(t, ca, f.id)
	var err error
	if f.db, err = storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.db.Close() })
	if f.key, err = credit.NewPseudonymKey(); err != nil {
		t.Fatal(err)
	}
	if log == nil {
		log = f.db.Audit()
	}
	cat := credit.DefaultCatalog()
	resolve := func(ctx context.Context, ids []string) ([]credit.Pseudonym, error) {
		out := make([]credit.Pseudonym, len(ids))
		for i, id := range ids {
			out[i] = f.key.Pseudonym(id)
		}
		return out, nil
	}
	ownAll := func(ctx context.Context, ids []string) ([][]credit.Pseudonym, error) {
		f.ownAll.Add(1)
		f.ownAllIDs.Add(int32(len(ids)))
		if f.failOwnAll.Load() {
			return nil, errors.New("no coordinator")
		}
		ps, _ := resolve(ctx, ids)
		out := make([][]credit.Pseudonym, len(ps))
		for i := range ps {
			out[i] = ps[i : i+1]
		}
		return out, nil
	}
	New(Config{Self: f.id, Identifiers: credit.ParseOptions{TestMode: true}, Endpoint: f.district, Records: f.db,
		Resolve: resolve, OwnAll: ownAll, Catalog: func() *credit.Catalog { return cat }, Audit: audit.New(log, f.id.Region, nil, nil, nil)})
	today := credit.TodayAt(time.Now())
	var recs []credit.Record
	for i, s := range subjects {
		r, err := cat.Accept(credit.Record{ID: fmt.Sprintf("A-%d", i), Subject: s, CatalogItem: "FOOD-DRUG-PENALTY", DecisionNumber: "X〔2026〕1",
			OccurredOn: today - 10, DecidedOn: today - 5, Summary: "s", Department: "market-supervision", District: f.id.Region},
			time.Now(), credit.ParseOptions{TestMode: true})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if len(recs) > 0 {
		if _, err := f.db.SubmitRecords(recs); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// storeAndKey opens a store for a test's audit log and makes a pseudonym
// key.
func storeAndKey(t *testing.T) (*storage.DB, credit.PseudonymKey) {
	t.Helper()
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := credit.NewPseudonymKey()
	if err != nil {
		t.Fatal(err)
	}
	return db, key
}

var sharedCA struct {
	once sync.Once
	ca   *certs.CA
	err  error
}

func newCA(t *testing.T) *certs.CA {
	sharedCA.once.Do(func() { sharedCA.ca, sharedCA.err = certs.NewCA(fed, 0) })
	if sharedCA.err != nil {
		t.Fatal(sharedCA.err)
	}
	return sharedCA.ca
}

func (f *districtFixture) peer() exchange.Peer {
	return exchange.Peer{Name: f.id.Region, Addr: f.district.Addr().String(), Identity: &f.id}
}

func (f *districtFixture) entries(t *testing.T) []storage.AuditEntry {
	t.Helper()
	var out []storage.AuditEntry
	if err := f.db.Audit().Range(1, 0, func(e storage.AuditEntry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBatchDecidesEachLookupAsAlone: a batch of lookups, honest and
// hostile ones mixed (another subject's pseudonym, a requester who is not
// the asking node's user, an invalid identifier, a subject the district
// holds nothing of, an unknown purpose), is answered item by item exactly
// as each lookup is answered alone — the same records, the same refusals —
// and registers one audit entry per lookup, under its own lookup id.
func TestBatchDecidesEachLookupAsAlone(t *testing.T) {
	a := credit.SyntheticPerson(81, credit.NewDate(1980, 1, 1))
	b := credit.SyntheticPerson(82, credit.NewDate(1980, 1, 1))
	stranger := credit.SyntheticPerson(83, credit.NewDate(1980, 1, 1))
	f := newDistrict(t, nil, a, b)
	meta := func(i int) exchange.Meta {
		return exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1", LookupID: exchange.NewID("lk")}
	}
	outsider := certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang/hangzhou", Institution: "credit-office"}
	items := []batchItem{
		{Request: request{Subject: a, Pseudonym: f.key.Pseudonym(a), Requester: f.user}, Meta: meta(0)},
		{Request: request{Subject: b, Pseudonym: f.key.Pseudonym(a), Requester: f.user}, Meta: meta(1)},
		{Request: request{Subject: a, Pseudonym: f.key.Pseudonym(a), Requester: outsider}, Meta: meta(2)},
		{Request: request{Subject: "not-an-id", Requester: f.user}, Meta: meta(3)},
		{Request: request{Subject: stranger, Pseudonym: f.key.Pseudonym(stranger), Requester: f.user}, Meta: meta(4)},
		{Request: request{Subject: b, Pseudonym: f.key.Pseudonym(b), Requester: f.user}, Meta: exchange.Meta{Purpose: "CURIOSITY", User: "张三", Reference: "R-1"}},
		{Request: request{Subject: b, Pseudonym: f.key.Pseudonym(b), Requester: f.user}, Meta: meta(6)},
	}
	var rep batchReply
	if err := f.city.Call(context.Background(), f.peer(), OpBatch, exchange.Meta{}, batchRequest{Items: items}, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Items) != len(items) {
		t.Fatalf("%d answers to %d lookups", len(rep.Items), len(items))
	}
	if n := f.ownAll.Load(); n != 1 {
		t.Fatalf("the batch resolved its subjects' pseudonyms in %d calls, want 1", n)
	}
	batched := f.entries(t)
	if len(batched) != len(items) {
		t.Fatalf("%d audit entries for a batch of %d lookups", len(batched), len(items))
	}
	wantCode := []exchange.Code{"", exchange.CodeBadRequest, exchange.CodeForbidden, exchange.CodeBadRequest, "", exchange.CodeForbidden, ""}
	for i, it := range items {
		var alone reply
		err := f.city.Call(context.Background(), f.peer(), Op, it.Meta, it.Request, &alone)
		got := rep.Items[i]
		if got.Code != exchange.CodeOf(err) || got.Code != wantCode[i] {
			t.Fatalf("lookup %d: batched %q (%s), alone %v, want %q", i, got.Code, got.Message, err, wantCode[i])
		}
		if err != nil {
			if got.Message != err.(*exchange.Error).Message {
				t.Errorf("lookup %d: batched refusal %q, alone %q", i, got.Message, err.(*exchange.Error).Message)
			}
			continue
		}
		if len(got.Records) != len(alone.Records) {
			t.Fatalf("lookup %d: %d records batched, %d alone", i, len(got.Records), len(alone.Records))
		}
		for k := range got.Records {
			if got.Records[k].ID != alone.Records[k].ID || got.Records[k].Subject != it.Request.Subject {
				t.Fatalf("lookup %d: batched record %+v, alone %+v", i, got.Records[k], alone.Records[k])
			}
		}
	}
	all := f.entries(t)
	if len(all) != 2*len(items) {
		t.Fatalf("%d entries after the batch and %d lookups alone", len(all), len(items))
	}
	for i, e := range batched {
		alone := all[len(items)+i]
		if e.Operation != "lookup.answer" || e.Decision != alone.Decision || e.Reason != alone.Reason || e.Subject != alone.Subject ||
			e.LookupID != items[i].Meta.LookupID || !slices.Equal(e.Records, alone.Records) || e.Requester != alone.Requester {
			t.Errorf("lookup %d: batched entry %+v\nalone %+v", i, e, alone)
		}
	}
	if all[1].Subject != f.key.Pseudonym(b).String() {
		t.Errorf("a lookup sending another subject's pseudonym is registered under %s, not the subject's own", all[1].Subject)
	}
}

// TestBatchAnswersWhenResolvingTogetherFails: when the pseudonyms of a
// batch's subjects cannot be resolved together, each is resolved alone and
// the lookups are answered.
func TestBatchAnswersWhenResolvingTogetherFails(t *testing.T) {
	a := credit.SyntheticPerson(88, credit.NewDate(1980, 1, 1))
	b := credit.SyntheticPerson(89, credit.NewDate(1980, 1, 1))
	f := newDistrict(t, nil, a, b)
	f.failOwnAll.Store(true)
	meta := exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"}
	items := []batchItem{{Request: request{Subject: a, Pseudonym: f.key.Pseudonym(a), Requester: f.user}, Meta: meta},
		{Request: request{Subject: b, Pseudonym: f.key.Pseudonym(b), Requester: f.user}, Meta: meta}}
	var rep batchReply
	if err := f.city.Call(context.Background(), f.peer(), OpBatch, exchange.Meta{}, batchRequest{Items: items}, &rep); err != nil {
		t.Fatal(err)
	}
	for i, r := range rep.Items {
		if r.Code != "" || len(r.Records) != 1 || r.Records[0].Subject != items[i].Request.Subject {
			t.Fatalf("lookup %d: %+v", i, r)
		}
	}
	if got := f.entries(t); len(got) != 2 || got[0].Subject != f.key.Pseudonym(a).String() || got[1].Subject != f.key.Pseudonym(b).String() {
		t.Fatalf("entries: %+v", got)
	}
}

// TestBatchBoundsAndRoles: an empty batch, one over MaxBatch and one from
// a district's certificate are refused, and register nothing.
func TestBatchBoundsAndRoles(t *testing.T) {
	a := credit.SyntheticPerson(84, credit.NewDate(1980, 1, 1))
	f := newDistrict(t, nil, a)
	item := batchItem{Request: request{Subject: a, Pseudonym: f.key.Pseudonym(a), Requester: f.user},
		Meta: exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"}}
	for _, n := range []int{0, MaxBatch + 1} {
		var rep batchReply
		err := f.city.Call(context.Background(), f.peer(), OpBatch, exchange.Meta{}, batchRequest{Items: slices.Repeat([]batchItem{item}, n)}, &rep)
		if !errors.Is(err, exchange.ErrBadRequest) {
			t.Fatalf("a batch of %d: %v", n, err)
		}
	}
	other := endpoint(t, newCA(t), certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/qujiang"})
	var rep batchReply
	if err := other.Call(context.Background(), f.peer(), OpBatch, exchange.Meta{}, batchRequest{Items: []batchItem{item}}, &rep); exchange.CodeOf(err) != exchange.CodeForbidden {
		t.Fatalf("a batch from a district's certificate: %v", err)
	}
	if got := f.entries(t); len(got) != 0 {
		t.Fatalf("refused batches registered %d entries", len(got))
	}
}

// TestBatchAuditFailureAnswersNothing: when the district cannot write the
// batch's entries, no lookup of it is answered.
func TestBatchAuditFailureAnswersNothing(t *testing.T) {
	a := credit.SyntheticPerson(85, credit.NewDate(1980, 1, 1))
	f := newDistrict(t, failingLog{}, a)
	item := batchItem{Request: request{Subject: a, Pseudonym: f.key.Pseudonym(a), Requester: f.user},
		Meta: exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"}}
	var rep batchReply
	err := f.city.Call(context.Background(), f.peer(), OpBatch, exchange.Meta{}, batchRequest{Items: []batchItem{item, item}}, &rep)
	if exchange.CodeOf(err) != exchange.CodeUnavailable || len(rep.Items) != 0 {
		t.Fatalf("a batch whose audit fails: %+v, %v", rep, err)
	}
}

// TestBatchReplyBudget: the lookups that do not fit a reply are left
// unanswered and unregistered (Alone), for the coordinator to send alone.
func TestBatchReplyBudget(t *testing.T) {
	a := credit.SyntheticPerson(86, credit.NewDate(1980, 1, 1))
	b := credit.SyntheticPerson(87, credit.NewDate(1980, 1, 1))
	f := newDistrict(t, nil, a, b)
	defer func(n int64) { batchReplyBudget.Store(n) }(batchReplyBudget.Load())
	batchReplyBudget.Store(1)
	items := []batchItem{
		{Request: request{Subject: a, Pseudonym: f.key.Pseudonym(a), Requester: f.user}, Meta: exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"}},
		{Request: request{Subject: b, Pseudonym: f.key.Pseudonym(b), Requester: f.user}, Meta: exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"}},
		{Request: request{Subject: b, Pseudonym: f.key.Pseudonym(a), Requester: f.user}, Meta: exchange.Meta{Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"}},
	}
	var rep batchReply
	if err := f.city.Call(context.Background(), f.peer(), OpBatch, exchange.Meta{}, batchRequest{Items: items}, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Items) != 3 || len(rep.Items[0].Records) != 1 || rep.Items[0].Alone || !rep.Items[1].Alone || len(rep.Items[1].Records) != 0 ||
		rep.Items[2].Code != exchange.CodeBadRequest {
		t.Fatalf("answers over a 1-byte budget: %+v", rep.Items)
	}
	got := f.entries(t)
	if len(got) != 2 || got[0].Subject != f.key.Pseudonym(a).String() || got[1].Decision != storage.DecisionDenied {
		t.Fatalf("entries: %+v (the lookup left unanswered must not be registered)", got)
	}
}

// gatedDistrict is a district endpoint whose lookups alone (Op) wait for a
// gate, so that a coordinator's later lookups queue and go in batches; its
// batches are answered by answerBatch (nil: Op only, an older node).
type gatedDistrict struct {
	id      certs.Identity
	ep      *exchange.Endpoint
	gate    chan struct{}
	alone   atomic.Int32
	mu      sync.Mutex
	batches []int
}

func recordOf(t *testing.T, district, subject string) credit.Record {
	cat := credit.DefaultCatalog()
	today := credit.TodayAt(time.Now())
	r, err := cat.Accept(credit.Record{ID: "G-" + subject[len(subject)-6:], Subject: subject, CatalogItem: "FOOD-DRUG-PENALTY", DecisionNumber: "X〔2026〕1",
		OccurredOn: today - 10, DecidedOn: today - 5, Summary: "s", Department: "market-supervision", District: district},
		time.Now(), credit.ParseOptions{TestMode: true})
	if err != nil {
		t.Error(err)
	}
	return r
}

func newGated(t *testing.T, answerBatch func(in batchRequest) batchReply) *gatedDistrict {
	g := &gatedDistrict{id: certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}, gate: make(chan struct{})}
	g.ep = endpoint(t, newCA(t), g.id)
	g.ep.Handle(Op, func(ctx context.Context, req *exchange.Request) (any, error) {
		var in request
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		g.alone.Add(1)
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, exchange.Errorf(exchange.CodeDeadlineExceeded, "gate")
		}
		return reply{Records: []credit.Record{recordOf(t, g.id.Region, in.Subject)}}, nil
	})
	if answerBatch != nil {
		g.ep.Handle(OpBatch, func(ctx context.Context, req *exchange.Request) (any, error) {
			var in batchRequest
			if err := req.Decode(&in); err != nil {
				return nil, err
			}
			g.mu.Lock()
			g.batches = append(g.batches, len(in.Items))
			g.mu.Unlock()
			return answerBatch(in), nil
		})
	}
	return g
}

// honestBatch answers every lookup of a batch with a record of its subject.
func honestBatch(t *testing.T, district string) func(batchRequest) batchReply {
	return func(in batchRequest) batchReply {
		out := batchReply{Items: make([]batchResult, len(in.Items))}
		for i, it := range in.Items {
			out.Items[i].Records = []credit.Record{recordOf(t, district, it.Request.Subject)}
		}
		return out
	}
}

func coordinator(t *testing.T, g *gatedDistrict, timeout time.Duration) *Service {
	city := endpoint(t, newCA(t), certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/quzhou"})
	db, key := storeAndKey(t)
	cat := credit.DefaultCatalog()
	return New(Config{Self: city.Identity(), Key: key, Identifiers: credit.ParseOptions{TestMode: true}, Timeout: timeout,
		Index:    manyEntries{{Path: g.id.Region, Role: certs.District, Exchange: g.ep.Addr().String()}},
		Endpoint: city, Catalog: func() *credit.Catalog { return cat }, Audit: audit.New(db.Audit(), "zhejiang/quzhou", nil, nil, nil)})
}

// busy starts lookups of n subjects (numbered from first) and returns
// their answers, once all have returned, on the channel.
func busy(t *testing.T, ctx context.Context, svc *Service, first, n int) (subjects []string, done chan []District) {
	user := certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang/quzhou", Institution: "credit-office"}
	done = make(chan []District, 1)
	out := make([]District, n)
	var wg sync.WaitGroup
	for i := range n {
		s := credit.SyntheticPerson(first+i, credit.NewDate(1980, 1, 1))
		subjects = append(subjects, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ans, err := svc.Lookup(ctx, user, Request{Subject: s, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "R-1"})
			if err != nil {
				out[i] = District{Status: exchange.StatusError, Error: err.Error()}
				return
			}
			out[i] = ans.Districts[0]
		}()
	}
	go func() { wg.Wait(); done <- out }()
	return subjects, done
}

func (b *batcher) waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, q := range b.queues {
		n += len(q.waiting)
	}
	return n
}

// queueBehindGate fills the batches in flight to g with lookups alone that
// wait at its gate, then queues n more; it returns the subjects of both.
func queueBehindGate(t *testing.T, svc *Service, g *gatedDistrict, n int) ([]string, chan []District, []string, chan []District) {
	return queueBehindGateCtx(t, context.Background(), svc, g, n)
}

func queueBehindGateCtx(t *testing.T, ctx context.Context, svc *Service, g *gatedDistrict, n int) ([]string, chan []District, []string, chan []District) {
	first, firstDone := busy(t, context.Background(), svc, 1000, maxBatchesInFlight)
	wait.Until(t, 10*time.Second, "the first lookups at the gate", func() bool { return g.alone.Load() == maxBatchesInFlight })
	later, laterDone := busy(t, ctx, svc, 2000, n)
	wait.Until(t, 10*time.Second, "the later lookups queued", func() bool { return svc.batch.waiting() == n })
	return first, firstDone, later, laterDone
}

func checkOwn(t *testing.T, what string, subjects []string, got []District) {
	t.Helper()
	for i, d := range got {
		if d.Status != exchange.StatusOK || len(d.Records) != 1 || d.Records[0].Subject != subjects[i] {
			t.Fatalf("%s lookup %d: %+v", what, i, d)
		}
	}
}

func recv(t *testing.T, ch chan []District) []District {
	t.Helper()
	select {
	case got := <-ch:
		return got
	case <-time.After(30 * time.Second):
		t.Fatal("lookups did not return in 30 s")
		return nil
	}
}

func (g *gatedDistrict) sizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.batches)
}

// TestCoordinatorBatchesWhileBusy: lookups that arrive while a district's
// batches are all in flight wait, and go together when one returns; each
// gets its own subject's answer, and the idle queue is dropped.
func TestCoordinatorBatchesWhileBusy(t *testing.T) {
	g := newGated(t, honestBatch(t, "zhejiang/quzhou/kecheng"))
	svc := coordinator(t, g, 10*time.Second)
	first, firstDone, later, laterDone := queueBehindGate(t, svc, g, 20)
	close(g.gate)
	checkOwn(t, "first", first, recv(t, firstDone))
	checkOwn(t, "later", later, recv(t, laterDone))
	sizes := g.sizes()
	total := 0
	for _, n := range sizes {
		total += n
	}
	if total != 20 || slices.Max(sizes) < 2 || g.alone.Load() != maxBatchesInFlight {
		t.Fatalf("batches %v, %d lookups alone: the 20 queued lookups should have gone in batches", sizes, g.alone.Load())
	}
	if got := testutil.CollectAndCount(svc.batches); got != 1 {
		t.Fatalf("%d batch size series", got)
	}
	m := &dto.Metric{}
	if err := svc.batches.Write(m); err != nil {
		t.Fatal(err)
	}
	if h := m.GetHistogram(); h.GetSampleCount() != uint64(maxBatchesInFlight+len(sizes)) || h.GetSampleSum() != float64(maxBatchesInFlight+20) {
		t.Fatalf("batch size histogram: %d requests, %v lookups; want %d and %d", h.GetSampleCount(), h.GetSampleSum(), maxBatchesInFlight+len(sizes), maxBatchesInFlight+20)
	}
	wait.Until(t, 5*time.Second, "the idle queue dropped", func() bool {
		svc.batch.mu.Lock()
		defer svc.batch.mu.Unlock()
		return len(svc.batch.queues) == 0
	})
}

// TestCoordinatorChecksEachBatchAnswer: a hostile district that swaps two
// answers of a batch has both dropped as answers about another subject
// (and counted as forged), the others kept; one that answers a batch with
// fewer answers than lookups has none of them shown.
func TestCoordinatorChecksEachBatchAnswer(t *testing.T) {
	district := "zhejiang/quzhou/kecheng"
	var short atomic.Bool
	g := newGated(t, func(in batchRequest) batchReply {
		out := honestBatch(t, district)(in)
		if short.Load() {
			out.Items = out.Items[1:]
			return out
		}
		out.Items[0], out.Items[1] = out.Items[1], out.Items[0]
		return out
	})
	svc := coordinator(t, g, 10*time.Second)
	first, firstDone, later, laterDone := queueBehindGate(t, svc, g, 10)
	close(g.gate)
	checkOwn(t, "first", first, recv(t, firstDone))
	got := recv(t, laterDone)
	if sizes := g.sizes(); len(sizes) != 1 {
		t.Fatalf("batches %v: the test needs the 10 lookups in one", sizes)
	}
	swapped := 0
	for i, d := range got {
		switch {
		case d.Status == exchange.StatusError && len(d.Records) == 0 && d.Error == "the district answered with records of another subject":
			swapped++
		case d.Status == exchange.StatusOK && len(d.Records) == 1 && d.Records[0].Subject == later[i]:
		default:
			t.Fatalf("lookup %d: %+v", i, d)
		}
	}
	if swapped != 2 {
		t.Fatalf("%d answers dropped, want the 2 swapped ones", swapped)
	}

	short.Store(true)
	g.gate = make(chan struct{})
	g.alone.Store(0)
	first, firstDone, _, laterDone = queueBehindGate(t, svc, g, 10)
	close(g.gate)
	checkOwn(t, "first", first, recv(t, firstDone))
	for i, d := range recv(t, laterDone) {
		if d.Status != exchange.StatusError || len(d.Records) != 0 {
			t.Fatalf("lookup %d of a batch answered short: %+v", i, d)
		}
	}
}

// TestCoordinatorSendsAloneWhatABatchLeft: the lookups a district leaves
// out of a batch's reply (Alone) are sent again alone, and answered.
func TestCoordinatorSendsAloneWhatABatchLeft(t *testing.T) {
	district := "zhejiang/quzhou/kecheng"
	g := newGated(t, func(in batchRequest) batchReply {
		out := honestBatch(t, district)(in)
		for i := 1; i < len(out.Items); i += 2 {
			out.Items[i] = batchResult{Alone: true}
		}
		return out
	})
	svc := coordinator(t, g, 10*time.Second)
	first, firstDone, later, laterDone := queueBehindGate(t, svc, g, 10)
	close(g.gate)
	checkOwn(t, "first", first, recv(t, firstDone))
	checkOwn(t, "later", later, recv(t, laterDone))
	if n := g.alone.Load(); n != maxBatchesInFlight+5 {
		t.Fatalf("%d lookups alone, want %d (the first and the 5 left out of the batch)", n, maxBatchesInFlight+5)
	}
}

// TestCoordinatorFallsBackToAlone: a district that does not serve OpBatch
// (an older node) gets every lookup alone, and answers all.
func TestCoordinatorFallsBackToAlone(t *testing.T) {
	g := newGated(t, nil)
	svc := coordinator(t, g, 10*time.Second)
	first, firstDone, later, laterDone := queueBehindGate(t, svc, g, 12)
	close(g.gate)
	checkOwn(t, "first", first, recv(t, firstDone))
	checkOwn(t, "later", later, recv(t, laterDone))
	if n := g.alone.Load(); n != maxBatchesInFlight+12 {
		t.Fatalf("%d lookups alone, want all %d", n, maxBatchesInFlight+12)
	}
}

// TestLookupWaitingForABusyDistrictEnds: a lookup queued behind a
// district whose batches are all in flight ends at its deadline, as a
// timeout of that district, while the district still holds the others;
// it is not sent once they return.
func TestLookupWaitingForABusyDistrictEnds(t *testing.T) {
	g := newGated(t, honestBatch(t, "zhejiang/quzhou/kecheng"))
	svc := coordinator(t, g, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	first, firstDone, _, laterDone := queueBehindGateCtx(t, ctx, svc, g, 3)
	for _, d := range recv(t, laterDone) {
		if d.Status != exchange.StatusTimeout {
			t.Fatalf("a lookup behind a district that does not answer: %+v", d)
		}
	}
	if n := g.alone.Load(); n != maxBatchesInFlight {
		t.Fatalf("%d lookups at the district, want the %d first", n, maxBatchesInFlight)
	}
	close(g.gate)
	checkOwn(t, "first", first, recv(t, firstDone))
	if got := g.sizes(); len(got) != 0 || g.alone.Load() != maxBatchesInFlight {
		t.Fatalf("batches %v, %d alone: lookups sent after they ended", got, g.alone.Load())
	}
}

// TestCoordinatorRemembersAnOlderNodeWhileIdle: a district that does not
// serve OpBatch is sent lookups alone for a minute, also when its queue
// went idle (and was dropped) in between: the next burst is not first
// sent as a batch only to be refused again.
func TestCoordinatorRemembersAnOlderNodeWhileIdle(t *testing.T) {
	g := newGated(t, nil)
	svc := coordinator(t, g, 10*time.Second)
	batched := func() uint64 { // requests of more than one lookup tried
		m := &dto.Metric{}
		if err := svc.batches.Write(m); err != nil {
			t.Fatal(err)
		}
		h := m.GetHistogram()
		return h.GetSampleCount() - h.GetBucket()[0].GetCumulativeCount() // bucket 0: le=1
	}
	first, firstDone, later, laterDone := queueBehindGate(t, svc, g, 6)
	close(g.gate)
	checkOwn(t, "first", first, recv(t, firstDone))
	checkOwn(t, "later", later, recv(t, laterDone))
	tried := batched()
	if tried == 0 {
		t.Fatal("no batch was tried: the test needs the district's refusal of one")
	}
	wait.Until(t, 5*time.Second, "the idle queue dropped", func() bool {
		svc.batch.mu.Lock()
		defer svc.batch.mu.Unlock()
		return len(svc.batch.queues) == 0
	})
	g.gate = make(chan struct{})
	g.alone.Store(0)
	first, firstDone, later, laterDone = queueBehindGate(t, svc, g, 6)
	close(g.gate)
	checkOwn(t, "first", first, recv(t, firstDone))
	checkOwn(t, "later", later, recv(t, laterDone))
	if n := batched(); n != tried {
		t.Fatalf("%d batches tried after the district refused one less than %v ago, want none", n-tried, olderNodeFor)
	}
}
