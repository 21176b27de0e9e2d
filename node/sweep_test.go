package node

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/storage"
)

// testClock is a clock a test moves; every node of a local federation
// shares it through Options.Now (record dates only: certificates and Raft
// keep real time).
type testClock struct{ ns atomic.Int64 }

func (c *testClock) Now() time.Time       { return time.Unix(0, c.ns.Load()) }
func (c *testClock) set(t time.Time)      { c.ns.Store(t.UnixNano()) }
func (c *testClock) setDay(d credit.Date) { c.set(d.Time().Add(12 * time.Hour)) }

// clockAt returns a test clock at noon of day d.
func clockAt(d credit.Date) *testClock {
	c := &testClock{}
	c.setDay(d)
	return c
}

// submitAt submits records (one, or an array) as the district's department
// and fails the test unless every one is accepted.
func submitAt(t *testing.T, f *LocalFederation, district string, body any) {
	t.Helper()
	files := f.Layout.Departments[district]
	var ans submitAnswer
	code := newClient(t, f, &files).do("POST", apiURL(f, district, "/v1/records"), "application/json", body, &ans)
	if code != http.StatusOK {
		t.Fatalf("submit at %s: %d %+v", district, code, ans)
	}
	for _, r := range ans.Results {
		if r.Status != "accepted" {
			t.Fatalf("submit at %s: %+v", district, ans)
		}
	}
}

func TestSweepRefreshesTheIndexAndDeletesAtRetentionEnd(t *testing.T) {
	decided := recentDecision // the decision date record() uses
	clock := clockAt(decided + 5)
	f := startLocalWith(t, LocalSpec{Districts: 2}, Options{Now: clock.Now})
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	subject := credit.SyntheticPerson(5151, credit.NewDate(1979, 8, 1))
	// An ordinary penalty (displayed a year) at one district, a serious one
	// (three years) at the other.
	for d, item := range map[string]string{kecheng: "FOOD-DRUG-PENALTY", xihu: "FOOD-SAFETY-SERIOUS"} {
		submitAt(t, f, d, record("SW-"+d, subject, item, "display sweep"))
	}
	waitIndexed(t, f, subject, 2)

	cat := f.Node(kecheng).rep.State().Catalog()
	ordinary, _ := cat.Item("FOOD-DRUG-PENALTY")
	ends := credit.DisplayUntil(credit.Record{DecidedOn: decided}, ordinary)

	sweep := func(d string, want SweepResult, when string) {
		t.Helper()
		if got, err := f.Node(d).Sweep(context.Background()); err != nil || got != want {
			t.Fatalf("%s sweep %s: %+v, %v; want %+v", d, when, got, err, want)
		}
	}
	// The day before the ordinary penalty's display ends, nothing is due.
	clock.setDay(ends - 1)
	sweep(kecheng, SweepResult{}, "the day before")
	sweep(xihu, SweepResult{}, "the day before")
	// On that day the district holding it queues the subject, once.
	clock.setDay(ends)
	sweep(kecheng, SweepResult{Subjects: 1}, "on the day")
	sweep(kecheng, SweepResult{}, "again on the day")
	sweep(xihu, SweepResult{}, "on the day")

	// The index stops pointing at kecheng; xihu still holds the serious one.
	prov := f.Node("zhejiang")
	p := prov.key.Pseudonym(subject)
	wait.Until(t, 30*time.Second, "kecheng's index entry to stop holding", func() bool {
		entries, _, err := prov.rep.State().Lookup(p)
		if err != nil {
			return false
		}
		holds := map[string]bool{}
		for _, e := range entries {
			holds[e.District] = e.Holds()
		}
		return !holds[f.Node(kecheng).cfg.Region] && holds[f.Node(xihu).cfg.Region]
	})
	var ans lookupAnswer
	lookup := map[string]string{"subject": subject, "purpose": "ADMIN-LICENSING", "user": "李四", "reference": "许可〔2027〕9号"}
	if code := newClient(t, f, &f.Layout.Coordinator).do("POST", apiURL(f, "zhejiang", "/v1/lookups"), "application/json", lookup, &ans); code != http.StatusOK {
		t.Fatalf("lookup: %d %+v", code, ans)
	}
	if len(ans.Districts) != 1 || ans.Districts[0].District != f.Node(xihu).cfg.Region || ans.Districts[0].Status != "ok" || len(ans.Districts[0].Records) != 1 {
		t.Fatalf("lookup after the ordinary penalty's display ended: %+v", ans.Districts)
	}

	// The record stays for the subject and its collector until its
	// retention ends; then the sweep deletes it, audited first.
	kechengDept := f.Layout.Departments[kecheng]
	dept := newClient(t, f, &kechengDept)
	if code := dept.do("GET", apiURL(f, kecheng, "/v1/records/SW-"+kecheng), "", nil, nil); code != http.StatusOK {
		t.Fatalf("the collector's read after the display ended: %d", code)
	}
	retained := credit.RetentionEnd(credit.Record{DecidedOn: decided}, ordinary)
	clock.setDay(retained - 1)
	sweep(kecheng, SweepResult{}, "the day before the retention ends")
	clock.setDay(retained)
	sweep(kecheng, SweepResult{Subjects: 1, Deleted: 1}, "when the retention ends")
	sweep(kecheng, SweepResult{}, "again when the retention ends")
	if code := dept.do("GET", apiURL(f, kecheng, "/v1/records/SW-"+kecheng), "", nil, nil); code != http.StatusNotFound {
		t.Fatalf("the collector's read after the retention ended: %d, want 404", code)
	}
	entries, err := f.Node(kecheng).Store().Audit().BySubject(p.String())
	if err != nil {
		t.Fatal(err)
	}
	var deletion *storage.AuditEntry
	for i := range entries {
		if entries[i].Operation == "record.delete" {
			deletion = &entries[i]
		}
	}
	if deletion == nil || deletion.Reason != "retention_ended" || len(deletion.Records) != 1 || deletion.Institution != DemoDepartment {
		t.Fatalf("no audited deletion at kecheng: %+v", entries)
	}
	if err := f.Node(kecheng).Store().Audit().Verify(); err != nil {
		t.Fatal(err)
	}
	// xihu's serious penalty: its display (three years) has ended by now,
	// and its retention ends with the ordinary one's if the catalog gives
	// both the same retention period.
	serious, _ := cat.Item("FOOD-SAFETY-SERIOUS")
	wantXihu := SweepResult{Subjects: 1}
	if credit.RetentionEnd(credit.Record{DecidedOn: decided}, serious) <= retained {
		wantXihu.Deleted = 1
	}
	sweep(xihu, wantXihu, "when the ordinary penalty's retention ends")
	if n := f.Node(xihu).Store().CountRecords(); n != int64(1-wantXihu.Deleted) {
		t.Fatalf("xihu holds %d records, want %d", n, 1-wantXihu.Deleted)
	}
	wait.Until(t, 30*time.Second, "no district to hold the subject", func() bool {
		entries, _, err := prov.rep.State().Lookup(p)
		if err != nil {
			return false
		}
		for _, e := range entries {
			if e.Holds() {
				return false
			}
		}
		return true
	})
}

// TestSweepAfterACatalogDropsAnItem: a new catalog without a record's item
// triggers a rebuild of the markers, and the record is still deleted when
// the retention of the catalog it was accepted under ends.
func TestSweepAfterACatalogDropsAnItem(t *testing.T) {
	decided := recentDecision
	clock := clockAt(decided + 5)
	f := startLocalWith(t, LocalSpec{Districts: 1}, Options{Now: clock.Now})
	district := f.Districts()[0]
	dn := f.Node(district)
	subject := credit.SyntheticPerson(6161, credit.NewDate(1985, 2, 3))
	submitAt(t, f, district, record("DROP-1", subject, "FOOD-DRUG-PENALTY", "catalog change"))
	waitIndexed(t, f, subject, 1)
	if _, err := dn.Sweep(context.Background()); err != nil { // records the markers' catalog version
		t.Fatal(err)
	}
	v1 := dn.rep.State().Catalog()
	item, _ := v1.Item("FOOD-DRUG-PENALTY")

	// Version 2 drops the item (and the classification rules naming it).
	v2 := credit.DefaultCatalog()
	v2.Version = v1.Version + 1
	v2.Items = slices.DeleteFunc(v2.Items, func(it credit.Item) bool { return it.Code == item.Code })
	v2.Rules = slices.DeleteFunc(v2.Rules, func(r credit.ClassificationRule) bool { return r.Item == item.Code })
	op := certs.Identity{Federation: f.Layout.Federation, Role: certs.Operator, Region: "zhejiang", Institution: "ops"}
	ctx, cancelApply := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelApply()
	if _, err := f.Node("zhejiang").rep.Apply(ctx, consensus.CmdCatalogPublish, op, consensus.CatalogPublish{Catalog: v2}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the district to have catalog version 2", func() bool {
		return dn.rep.State().Catalog().Version == v2.Version
	})

	// The sweep rebuilds the markers under the new catalog; nothing is due.
	if got, err := dn.Sweep(context.Background()); err != nil || got != (SweepResult{}) {
		t.Fatalf("sweep after the new catalog: %+v, %v", got, err)
	}
	if v, err := dn.Store().DueVersion(); err != nil || v != strconv.Itoa(v2.Version) {
		t.Fatalf("markers built for catalog %q (%v), want %d", v, err, v2.Version)
	}
	// At the end of the retention of the catalog it was accepted under, the
	// record goes.
	clock.setDay(credit.RetentionEnd(credit.Record{DecidedOn: decided}, item))
	if got, err := dn.Sweep(context.Background()); err != nil || got.Deleted != 1 {
		t.Fatalf("sweep at the retention end: %+v, %v", got, err)
	}
	if n := dn.Store().CountRecords(); n != 0 {
		t.Fatalf("the district still holds %d records", n)
	}
}

// TestSweepGoesOnPastASubjectThatFails: a subject whose records cannot be
// read keeps its markers and is reported, and the others are swept.
func TestSweepGoesOnPastASubjectThatFails(t *testing.T) {
	clock := clockAt(recentDecision + 5)
	f := startLocalWith(t, LocalSpec{Districts: 1}, Options{Now: clock.Now})
	district := f.Districts()[0]
	dn := f.Node(district)
	broken := credit.SyntheticPerson(7171, credit.NewDate(1990, 6, 6))
	fine := credit.SyntheticPerson(7272, credit.NewDate(1991, 7, 7))
	submitAt(t, f, district, []any{record("BRK-1", broken, "FOOD-DRUG-PENALTY", "x"), record("FIN-1", fine, "FOOD-DRUG-PENALTY", "y")})
	waitIndexed(t, f, broken, 1)
	waitIndexed(t, f, fine, 1)
	// Damage one subject: its subject index now names a missing record.
	if err := dn.Store().Badger().Update(func(txn *badger.Txn) error {
		return txn.Delete([]byte("r/" + DemoDepartment + "\x00BRK-1"))
	}); err != nil {
		t.Fatal(err)
	}

	cat := dn.rep.State().Catalog()
	item, _ := cat.Item("FOOD-DRUG-PENALTY")
	clock.setDay(credit.DisplayUntil(credit.Record{DecidedOn: recentDecision}, item))
	got, err := dn.Sweep(context.Background())
	if !errors.Is(err, storage.ErrCorrupt) || got.Subjects != 1 || got.Failed != 1 {
		t.Fatalf("sweep with one damaged subject: %+v, %v", got, err)
	}
	// The other subject was refreshed: its entry stops holding.
	prov := f.Node("zhejiang")
	wait.Until(t, 30*time.Second, "the sound subject's entry to stop holding", func() bool {
		entries, _, err := prov.rep.State().Lookup(prov.key.Pseudonym(fine))
		return err == nil && len(entries) == 1 && !entries[0].Holds()
	})
	// The damaged one keeps its marker for the next sweep.
	if again, err := dn.Sweep(context.Background()); !errors.Is(err, storage.ErrCorrupt) || again.Failed != 1 || again.Subjects != 0 {
		t.Fatalf("second sweep: %+v, %v", again, err)
	}

	// Nor does it hold the outbox back: a new record of the damaged subject
	// is marked first, one of the sound subject after it, and the sound one
	// reaches the index while the damaged one stays marked.
	today := credit.TodayAt(clock.Now())
	for _, r := range []map[string]string{record("BRK-2", broken, "FOOD-DRUG-PENALTY", "x"), record("FIN-2", fine, "FOOD-DRUG-PENALTY", "y")} {
		r["occurred_on"], r["decided_on"] = (today - 3).String(), (today - 1).String()
		submitAt(t, f, district, r)
	}
	wait.Until(t, 30*time.Second, "the sound subject's new record in the index", func() bool {
		entries, _, err := prov.rep.State().Lookup(prov.key.Pseudonym(fine))
		return err == nil && len(entries) == 1 && entries[0].Summary.Negative == 1
	})
	// The district acknowledges its outbox once the leader answered, a
	// moment after the province applied the entry.
	wait.Until(t, 30*time.Second, "the damaged subject alone in the outbox", func() bool {
		pending, err := dn.Store().PendingSubjects(0)
		return err == nil && len(pending) == 1 && pending[0].Subject == broken
	})
}
