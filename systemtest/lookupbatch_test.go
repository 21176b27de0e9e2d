package systemtest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"credfed/api"
	"credfed/credit"
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
	var wg sync.WaitGroup
	errs := make(chan error, lookups)
	next := make(chan int, lookups)
	for i := range lookups {
		next <- i
	}
	close(next)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				s := subject(i % subjects)
				ans, err := coord.Lookup(ctxT(t, 60*time.Second), api.LookupRequest{Subject: s, Purpose: "ADMIN-LICENSING", User: "张三", Reference: fmt.Sprintf("R-%d", i)})
				if err != nil {
					errs <- fmt.Errorf("lookup %d: %w", i, err)
					continue
				}
				ids[i] = ans.LookupID
				if len(ans.Districts) != 2 {
					errs <- fmt.Errorf("lookup %d: %d districts", i, len(ans.Districts))
					continue
				}
				for _, d := range ans.Districts {
					if d.Status != api.DistrictOK || len(d.Records) != 1 || d.Records[0].ID != fmt.Sprintf("B-%d", i%subjects) || d.Records[0].Subject != s {
						errs <- fmt.Errorf("lookup %d of subject %d: %+v", i, i%subjects, d)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
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
