package systemtest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/api"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// TestConcurrentLookupsAreBatchedAndEachRegistered: many lookups at once
// through the province reach the districts in batches (lookup.batch), over
// the real exchange; every lookup gets exactly its subject's records from
// both districts, and each district registers every lookup once, under its
// lookup id and the subject's pseudonym.
func TestConcurrentLookupsAreBatchedAndEachRegistered(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	const subjects, lookups, clients = 24, 192, 48
	subject := func(i int) string { return credit.SyntheticPerson(7100+i, credit.NewDate(1981, 3, 9)) }
	for _, d := range []string{kecheng, xihu} {
		var recs []api.RecordInput
		for i := range subjects {
			recs = append(recs, record(fmt.Sprintf("B-%d", i), subject(i), "FOOD-DRUG-PENALTY", "批量"))
		}
		submit(t, f, d, recs...)
	}
	for i := range subjects {
		waitIndexed(t, f, subject(i), 2)
	}
	coord := coordinator(t, f)
	ids := make([]string, lookups)
	concurrently(t, lookups, clients, func(i int) error {
		s := subject(i % subjects)
		ans, err := coord.Lookup(ctxT(t, 60*time.Second), api.LookupRequest{Subject: s, Purpose: "ADMIN-LICENSING", User: "张三", Reference: fmt.Sprintf("R-%d", i)})
		if err != nil {
			return fmt.Errorf("lookup %d: %w", i, err)
		}
		ids[i] = ans.LookupID
		if len(ans.Districts) != 2 {
			return fmt.Errorf("lookup %d: %d districts", i, len(ans.Districts))
		}
		for _, d := range ans.Districts {
			if d.Status != api.DistrictOK || len(d.Records) != 1 || d.Records[0].ID != fmt.Sprintf("B-%d", i%subjects) || d.Records[0].Subject != s {
				return fmt.Errorf("lookup %d of subject %d: %+v", i, i%subjects, d)
			}
		}
		return nil
	})
	for _, d := range []string{kecheng, xihu} {
		n := f.Node(d)
		byID := map[string]storage.AuditEntry{}
		err := n.Store().Audit().Range(1, 0, func(e storage.AuditEntry) error {
			if e.Operation != "lookup.answer" {
				return nil
			}
			if _, dup := byID[e.LookupID]; dup {
				return fmt.Errorf("lookup %s registered twice", e.LookupID)
			}
			byID[e.LookupID] = e
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		for i, id := range ids {
			e, ok := byID[id]
			if !ok || e.Decision != storage.DecisionAllowed || e.Reference != fmt.Sprintf("R-%d", i) ||
				e.Subject != pseudonymOf(t, f, subject(i%subjects)).String() || len(e.Records) != 1 {
				t.Fatalf("%s: lookup %d (%s) registered as %+v (found %v)", d, i, id, e, ok)
			}
		}
		if got := counterOf(t, n, "credfed_exchange_server_requests_total", map[string]string{"op": "lookup.batch", "code": "ok"}); got == 0 {
			t.Errorf("%s answered no batch of the %d lookups from %d clients at once", d, lookups, clients)
		}
	}
}

// concurrently runs fn(0) … fn(n-1) on the given number of goroutines
// and fails the test with every error they return.
func concurrently(t *testing.T, n, workers int, fn func(i int) error) {
	t.Helper()
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// counterOf sums a counter of a node's registry over the series with the
// given labels.
func counterOf(t *testing.T, n *node.Node, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestBatchedLookupsThroughADistrictKilledMidBurst: while 48 clients look
// up subjects held by two districts, one district's process is killed
// (SIGKILL). No lookup hangs past its deadline or fails as a whole; every
// answer holds only its own subject's records; the killed district's part
// is unreachable or timed out (or answered, before the kill), the other's
// always answered. Restarted, the district answers the next burst in
// batches again.
func TestBatchedLookupsThroughADistrictKilledMidBurst(t *testing.T) {
	pf := startProcFedSpec(t, localfed.Spec{Districts: 2}, nil)
	l := pf.layout
	kecheng, xihu := l.Districts()[0], l.Districts()[1]
	const subjects = 24
	subject := func(i int) string { return credit.SyntheticPerson(7300+i, credit.NewDate(1982, 4, 2)) }
	for _, d := range []string{kecheng, xihu} {
		var recs []api.RecordInput
		for i := range subjects {
			recs = append(recs, record(fmt.Sprintf("K-%d", i), subject(i), "FOOD-DRUG-PENALTY", "杀"))
		}
		if _, _, err := pf.client(d, l.Departments[d]).SubmitRecords(ctxT(t, 30*time.Second), recs); err != nil {
			t.Fatal(err)
		}
	}
	coord := pf.client(l.Nodes[0].Name, l.Coordinator)
	region := func(name string) string { n, _ := l.Node(name); return n.Region }
	lookup := func(i int) (*api.LookupAnswer, error) {
		return coord.Lookup(ctxT(t, 30*time.Second), api.LookupRequest{Subject: subject(i % subjects), Purpose: "ADMIN-LICENSING", User: "张三", Reference: fmt.Sprintf("K-%d", i)})
	}
	wait.Until(t, 60*time.Second, "every subject indexed at both districts", func() bool {
		for i := range subjects {
			ans, err := lookup(i)
			if err != nil || len(ans.Districts) != 2 {
				return false
			}
		}
		return true
	})
	batches := func() float64 {
		resp, err := http.Get("http://" + l.Nodes[0].Metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "credfed_lookup_district_request_lookups_count "); ok {
				var n float64
				fmt.Sscan(v, &n)
				return n
			}
		}
		return 0
	}
	var done atomic.Int32
	burst := func(n int, during func(done int), check func(i int, ans *api.LookupAnswer) error) {
		t.Helper()
		done.Store(0)
		concurrently(t, n, 48, func(i int) error {
			start := time.Now()
			ans, err := lookup(i)
			if took := time.Since(start); took > 15*time.Second {
				return fmt.Errorf("lookup %d took %v", i, took)
			}
			if err != nil {
				return fmt.Errorf("lookup %d: %w", i, err)
			}
			if err := check(i, ans); err != nil {
				return err
			}
			if during != nil {
				during(int(done.Add(1)))
			}
			return nil
		})
	}
	own := func(i int, d api.DistrictResult) error {
		if len(d.Records) != 1 || d.Records[0].Subject != subject(i%subjects) || d.Records[0].ID != fmt.Sprintf("K-%d", i%subjects) || d.Records[0].District != d.District {
			return fmt.Errorf("lookup %d: %s answered %+v", i, d.District, d.Records)
		}
		return nil
	}
	var once sync.Once
	killed := make(chan struct{})
	burst(240, func(done int) {
		if done == 60 {
			once.Do(func() { pf.kill(xihu); close(killed) })
		}
	}, func(i int, ans *api.LookupAnswer) error {
		for _, d := range ans.Districts {
			switch {
			case d.Status == api.DistrictOK:
				if err := own(i, d); err != nil {
					return err
				}
			case d.District == region(xihu) && (d.Status == "unreachable" || d.Status == "timeout"):
			default:
				return fmt.Errorf("lookup %d: %s %s (%s)", i, d.District, d.Status, d.Error)
			}
		}
		return nil
	})
	select {
	case <-killed:
	default:
		t.Fatal("the burst ended before the kill")
	}
	pf.start(xihu)
	pf.waitReady(xihu)
	before := batches()
	wait.Until(t, 60*time.Second, "the restarted district to answer", func() bool {
		ans, err := lookup(0)
		if err != nil {
			return false
		}
		for _, d := range ans.Districts {
			if d.Status != api.DistrictOK {
				return false
			}
		}
		return true
	})
	burst(120, nil, func(i int, ans *api.LookupAnswer) error {
		if len(ans.Districts) != 2 {
			return fmt.Errorf("lookup %d: %d districts", i, len(ans.Districts))
		}
		for _, d := range ans.Districts {
			if d.Status != api.DistrictOK {
				return fmt.Errorf("lookup %d after the restart: %s %s (%s)", i, d.District, d.Status, d.Error)
			}
			if err := own(i, d); err != nil {
				return err
			}
		}
		return nil
	})
	if after := batches(); after-before >= 2*120 {
		t.Errorf("%v requests for 120 lookups of 2 districts each: none went in a batch after the restart", after-before)
	}
}
