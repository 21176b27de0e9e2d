package systemtest

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"credfed/api"
	"credfed/credit"
	"credfed/localfed"
	"credfed/node"
)

// TestBenchBatchCheckAgainstSingleChecks measures a batch check of N
// subjects (default 100,000) spread over 4 districts, every one with a
// record, against the same subjects checked one at a time (16 clients),
// in interleaved rounds on one in-process federation. It runs only with
// CREDFED_BENCH=1 (docs/BENCHMARKS.md gives the command); it reports and
// never fails on a figure.
func TestBenchBatchCheckAgainstSingleChecks(t *testing.T) {
	if os.Getenv("CREDFED_BENCH") != "1" {
		t.Skip("a benchmark: set CREDFED_BENCH=1 to run it (docs/BENCHMARKS.md)")
	}
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("CREDFED_BENCH_SUBJECTS")); err == nil && v > 0 {
		n = v
	}
	f := startFed(t, localfed.Spec{Districts: 4}, node.Options{})
	ds := f.Districts()
	subjects := make([]string, n)
	byDistrict := map[string][]api.RecordInput{}
	for i := range subjects {
		subjects[i] = credit.SyntheticPerson(1_000_000+i, credit.NewDate(1960+i%40, time.Month(1+i%12), 1+i%28))
		item := "FOOD-DRUG-PENALTY"
		switch i % 10 {
		case 0:
			item = "DISHONEST-JUDGMENT-DEBTOR"
		case 1:
			item = "OUTSTANDING-YOUTH-VOLUNTEER"
		}
		d := ds[i%len(ds)]
		byDistrict[d] = append(byDistrict[d], record(fmt.Sprintf("BB-%d", i), subjects[i], item, "bench"))
	}
	load := time.Now()
	var wg sync.WaitGroup
	for d, recs := range byDistrict {
		wg.Go(func() {
			c := department(t, f, d)
			for i := 0; i < len(recs); i += 1000 {
				if _, _, err := c.SubmitRecords(ctxT(t, 60*time.Second), recs[i:min(i+1000, len(recs))]); err != nil {
					t.Errorf("submit at %s: %v", d, err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("submitted %d records in %v", n, time.Since(load))
	// Each district publishes its outbox in order: its last subject
	// indexed, all of its subjects are.
	for _, recs := range byDistrict {
		if err := f.WaitIndexed(ctxT(t, 10*time.Minute), recs[len(recs)-1].Subject, 1); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("loaded %d subjects over %d districts in %v", n, len(ds), time.Since(load))
	coord := coordinator(t, f)
	rows := make([]api.BatchRow, n)
	for i, s := range subjects {
		rows[i] = api.BatchRow{Subject: s, Reference: fmt.Sprintf("B-%d", i)}
	}
	batch := func(rows []api.BatchRow) float64 {
		start := time.Now()
		job, err := coord.SubmitBatch(ctxT(t, 120*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "bench", Rows: rows})
		if err != nil {
			t.Fatal(err)
		}
		j := waitJob(t, coord, job.ID, 20*time.Minute)
		if j.Status != "done" || j.Failed != 0 {
			t.Fatalf("job %+v", j)
		}
		return float64(len(rows)) / time.Since(start).Seconds()
	}
	singles := func(rows []api.BatchRow, clients int) float64 {
		if len(rows) == 0 {
			return 1
		}
		start := time.Now()
		var wg sync.WaitGroup
		next := make(chan api.BatchRow)
		for range clients {
			wg.Go(func() {
				for r := range next {
					if _, err := coord.Check(ctxT(t, 30*time.Second), api.CheckRequest{Subject: r.Subject, Scenario: "ADMIN-LICENSING", User: "bench", Reference: r.Reference}); err != nil {
						t.Errorf("check: %v", err)
					}
				}
			})
		}
		for _, r := range rows {
			next <- r
		}
		close(next)
		wg.Wait()
		return float64(len(rows)) / time.Since(start).Seconds()
	}
	if p := os.Getenv("CREDFED_BENCH_CPUPROFILE"); p != "" {
		pf, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			t.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); pf.Close() }()
	}
	// Interleaved: the full batch, then a sample of singles, three rounds.
	sample := min(n, 5000)
	if os.Getenv("CREDFED_BENCH_BATCH_ONLY") == "1" { // profiling the batch alone
		sample = 0
	}
	for round := 1; round <= 3; round++ {
		b := batch(rows)
		s := singles(rows[:sample], 16)
		t.Logf("round %d: batch of %d subjects %.0f subjects/s; one at a time (16 clients, %d subjects) %.0f subjects/s; ratio %.1f×", round, n, b, sample, s, b/s)
	}
}
