package node

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"credfed/credit"
	"credfed/internal/wait"
)

// testClock is a clock a test moves; every node of a local federation
// shares it through Options.Now (record dates only: certificates and Raft
// keep real time).
type testClock struct{ ns atomic.Int64 }

func (c *testClock) Now() time.Time       { return time.Unix(0, c.ns.Load()) }
func (c *testClock) set(t time.Time)      { c.ns.Store(t.UnixNano()) }
func (c *testClock) setDay(d credit.Date) { c.set(d.Time().Add(12 * time.Hour)) }

func TestDisplaySweepRefreshesTheIndex(t *testing.T) {
	decided := recentDecision // the decision date record() uses
	clock := &testClock{}
	clock.setDay(decided + 5)
	f, err := StartLocal(LocalSpec{Dir: t.TempDir(), Districts: 2}, Options{Logger: testLogger(), RaftTiming: fastRaft, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		f.Stop(ctx)
	})
	ready, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.WaitReady(ready); err != nil {
		t.Fatal(err)
	}
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	subject := credit.SyntheticPerson(5151, credit.NewDate(1979, 8, 1))
	// An ordinary penalty (displayed a year) at one district, a serious one
	// (three years) at the other.
	for d, item := range map[string]string{kecheng: "FOOD-DRUG-PENALTY", xihu: "FOOD-SAFETY-SERIOUS"} {
		files := f.Layout.Departments[d]
		var ans submitAnswer
		code := newClient(t, f, &files).do("POST", apiURL(f, d, "/v1/records"), "application/json",
			record("SW-"+d, subject, item, "display sweep"), &ans)
		if code != http.StatusOK || ans.Results[0].Status != "accepted" {
			t.Fatalf("submit at %s: %d %+v", d, code, ans)
		}
	}
	waitIndexed(t, f, subject, 2)

	cat := f.Node(kecheng).rep.State().Catalog()
	ordinary, _ := cat.Item("FOOD-DRUG-PENALTY")
	ends := credit.DisplayUntil(credit.Record{DecidedOn: decided}, ordinary)

	// The day before the ordinary penalty's display ends, nothing is due.
	clock.setDay(ends - 1)
	for _, d := range []string{kecheng, xihu} {
		if n, err := f.Node(d).SweepDisplay(context.Background()); err != nil || n != 0 {
			t.Fatalf("%s sweep the day before: %d, %v", d, n, err)
		}
	}
	// On that day the district holding it queues the subject, once.
	clock.setDay(ends)
	if n, err := f.Node(kecheng).SweepDisplay(context.Background()); err != nil || n != 1 {
		t.Fatalf("kecheng sweep on the day: %d, %v", n, err)
	}
	if n, err := f.Node(kecheng).SweepDisplay(context.Background()); err != nil || n != 0 {
		t.Fatalf("kecheng second sweep: %d, %v", n, err)
	}
	if n, err := f.Node(xihu).SweepDisplay(context.Background()); err != nil || n != 0 {
		t.Fatalf("xihu sweep on the day: %d, %v", n, err)
	}

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
}
