package checks

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"credfed/api"
	"credfed/audit"
	"credfed/storage"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
)

var today = credit.TodayAt(time.Now())

func rec(district, id, item string, decided credit.Date) credit.Record {
	return credit.Record{District: district, Department: "dept", ID: id, Subject: "S", CatalogItem: item, DecidedOn: decided, Status: credit.StatusActive}
}

// TestAssembleListsMeasuresAndClean: the lists come from the records the
// purpose may see, the measures from the scenario, and three-years-clean
// is not granted when a district that may hold a bad record did not
// answer.
func TestAssembleListsMeasuresAndClean(t *testing.T) {
	cat := credit.DefaultCatalog()
	pl, e := planFor(cat, certs.Identity{Role: certs.Coordinator}, "ADMIN-LICENSING", "", "u")
	if e != nil {
		t.Fatal(e)
	}
	codes := func(r *pending) ([]string, []string, bool, bool) {
		a := r.assemble(pl, today)
		var ls, ms []string
		for _, l := range a.Lists {
			ls = append(ls, l.List)
		}
		for _, m := range a.Measures {
			ms = append(ms, m.Code)
		}
		return ls, ms, a.ThreeYearsClean, a.Complete
	}
	// A volunteer: red list, green channel.
	r := &pending{parts: []part{{region: "a", status: exchange.StatusOK, records: []credit.Record{rec("a", "1", "OUTSTANDING-YOUTH-VOLUNTEER", today-3)}}}}
	if ls, ms, clean, complete := codes(r); !slices.Equal(ls, []string{"YOUTH-VOLUNTEER-RED"}) || !slices.Equal(ms, []string{"GREEN-CHANNEL", "PRIORITY-VOLUNTEER"}) || !clean || !complete {
		t.Errorf("volunteer: %v %v %v %v", ls, ms, clean, complete)
	}
	// A debtor: the restriction, not clean.
	r = &pending{parts: []part{{region: "a", status: exchange.StatusOK, records: []credit.Record{rec("a", "1", "DISHONEST-JUDGMENT-DEBTOR", today-3)}}}}
	if ls, ms, clean, _ := codes(r); !slices.Equal(ls, []string{"DISHONEST-JUDGMENT-DEBTORS"}) || !slices.Equal(ms, []string{"STRICT-REVIEW-DEBTOR"}) || clean {
		t.Errorf("debtor: %v %v %v", ls, ms, clean)
	}
	// A volunteer whose other district, holding a negative record, is
	// down: incomplete, and no green channel.
	r = &pending{parts: []part{
		{region: "a", status: exchange.StatusOK, records: []credit.Record{rec("a", "1", "OUTSTANDING-YOUTH-VOLUNTEER", today-3)}},
		{region: "b", status: exchange.StatusUnreachable, summary: credit.IndexSummary{Negative: 1}},
	}}
	if _, ms, clean, complete := codes(r); slices.Contains(ms, "GREEN-CHANNEL") || clean || complete {
		t.Errorf("with a district down: %v clean %v complete %v", ms, clean, complete)
	}
	// A district down that holds only a red-list record: the green
	// channel still follows from what was seen (no bad record can be
	// missing), the answer is incomplete.
	r = &pending{parts: []part{{region: "b", status: exchange.StatusTimeout, summary: credit.IndexSummary{Positive: 1, OnRedList: true}}}}
	if _, ms, clean, complete := codes(r); !slices.Contains(ms, "GREEN-CHANNEL") || !clean || complete {
		t.Errorf("a red-list district down: %v clean %v complete %v", ms, clean, complete)
	}
}

// TestNeededAsksOnlyWhatACheckUses: a district whose entry holds only
// positive records off every list is not asked.
func TestNeededAsksOnlyWhatACheckUses(t *testing.T) {
	for _, c := range []struct {
		s    credit.IndexSummary
		want bool
	}{
		{credit.IndexSummary{Positive: 2}, false},
		{credit.IndexSummary{Positive: 1, OnRedList: true}, true},
		{credit.IndexSummary{Negative: 1}, true},
		{credit.IndexSummary{Negative: 1, Serious: 1, OnDishonestyList: true}, true},
		{credit.IndexSummary{HasDisputed: true}, true},
		{credit.IndexSummary{}, false},
	} {
		if got := needed(consensus.IndexEntry{Summary: c.s}); got != c.want {
			t.Errorf("%+v: needed %v, want %v", c.s, got, c.want)
		}
	}
}

// TestPlanForRefusesWhatTheScenarioDoesNotAdmit: a purpose other than the
// scenario's, a role the purpose does not admit, an unknown scenario, no
// end user; each a typed refusal naming its field.
func TestPlanForRefusesWhatTheScenarioDoesNotAdmit(t *testing.T) {
	cat := credit.DefaultCatalog()
	coord, dept := certs.Identity{Role: certs.Coordinator}, certs.Identity{Role: certs.Department}
	for _, c := range []struct {
		who                     certs.Identity
		scenario, purpose, user string
		kind                    fault.Kind
		field                   string
	}{
		{coord, "ADMIN-LICENSING", "LAW-ENFORCEMENT", "u", fault.BadRequest, "purpose"},
		{dept, "CIVIL-SERVICE-RECRUITMENT", "", "u", fault.Forbidden, "scenario"},
		{coord, "NO-SUCH", "", "u", fault.BadRequest, "scenario"},
		{coord, "", "", "u", fault.BadRequest, "scenario"},
		{coord, "ADMIN-LICENSING", "", " ", fault.BadRequest, "user"},
		{certs.Identity{Role: certs.Portal}, "ADMIN-LICENSING", "", "u", fault.Forbidden, ""},
	} {
		_, e := planFor(cat, c.who, c.scenario, c.purpose, c.user)
		if e == nil || e.Kind != c.kind || e.Field != c.field {
			t.Errorf("%s %q %q %q: %v, want %s on %q", c.who.Role, c.scenario, c.purpose, c.user, e, c.kind, c.field)
		}
	}
	if pl, e := planFor(cat, dept, "ADMIN-LICENSING", "ADMIN-LICENSING", "u"); e != nil || pl.purpose.Code != "ADMIN-LICENSING" {
		t.Errorf("a department's licensing check: %v", e)
	}
	// Civil-service recruitment needs the subject's authorization.
	pl, _ := planFor(cat, coord, "CIVIL-SERVICE-RECRUITMENT", "", "u")
	if e := pl.checkRow("R", ""); e == nil || e.Field != "authorization" {
		t.Errorf("no authorization: %v", e)
	}
	if e := pl.checkRow("", "A"); e == nil || e.Field != "reference" {
		t.Errorf("no reference: %v", e)
	}
}

// TestBatchPendingJobsAreBoundedPerRequester: with no worker running, a
// requester's third unfinished job is refused (too many requests), another
// requester's is not, and the node as a whole holds at most MaxPending.
func TestBatchPendingJobsAreBoundedPerRequester(t *testing.T) {
	db, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := credit.NewPseudonymKey()
	if err != nil {
		t.Fatal(err)
	}
	cat := credit.DefaultCatalog()
	self := certs.Identity{Federation: "f", Role: certs.Province, Region: "zhejiang"}
	s := New(Config{Self: self, Key: key, Catalog: func() *credit.Catalog { return cat },
		Audit: audit.New(db.Audit(), self.Region, time.Now, slog.New(slog.DiscardHandler), nil), Batches: db})
	req := api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u", Rows: []api.BatchRow{{Subject: "x", Reference: "r"}}}
	coord := func(i int) certs.Identity {
		return certs.Identity{Federation: "f", Role: certs.Coordinator, Region: "zhejiang", Institution: fmt.Sprintf("office-%d", i)}
	}
	for i := range MaxPendingPerRequester {
		if _, err := s.SubmitBatch(context.Background(), coord(0), req); err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
	}
	if _, err := s.SubmitBatch(context.Background(), coord(0), req); fault.KindOf(err) != fault.TooManyRequests {
		t.Fatalf("a requester's job past its share: %v", err)
	}
	n := MaxPendingPerRequester
	for i := 1; n < MaxPending; i++ {
		for range MaxPendingPerRequester {
			if n == MaxPending {
				break
			}
			if _, err := s.SubmitBatch(context.Background(), coord(i), req); err != nil {
				t.Fatalf("requester %d: %v", i, err)
			}
			n++
		}
	}
	if _, err := s.SubmitBatch(context.Background(), coord(99), req); fault.KindOf(err) != fault.TooManyRequests {
		t.Fatalf("a job past the node's MaxPending: %v", err)
	}
}
