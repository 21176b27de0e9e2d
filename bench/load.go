package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"credfed/api"
)

// lookupFunc makes one lookup of subject as worker w and checks the
// answer (both of the subject's districts, with records).
type lookupFunc func(ctx context.Context, w int, subject, reference string) error

// lookupRun is what one closed-loop run of lookups measured.
type lookupRun struct {
	count, errors int
	firstErr      error
	elapsed       time.Duration
	lat           []time.Duration // bounded: latencies beyond maxSamples are not kept
}

// maxSamples bounds the latencies one run keeps.
const maxSamples = 1 << 21

// perLookupTimeout bounds one lookup.
const perLookupTimeout = 30 * time.Second

// runLookups runs workers, each making lookups one after another of
// random subjects until dur has passed (or ctx ends), and returns their
// count, errors and latencies.
func runLookups(ctx context.Context, workers int, dur time.Duration, subjects []string, seed uint64, do lookupFunc) lookupRun {
	var (
		mu  sync.Mutex
		out lookupRun
		wg  sync.WaitGroup
	)
	capEach := maxSamples / workers
	start := time.Now()
	deadline := start.Add(dur)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			lat := make([]time.Duration, 0, min(capEach, 1<<14))
			n, errs := 0, 0
			var first error
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				subject := subjects[rng.IntN(len(subjects))]
				cctx, cancel := context.WithTimeout(ctx, perLookupTimeout)
				t0 := time.Now()
				err := do(cctx, w, subject, fmt.Sprintf("基准查〔%d〕%d-%d号", seed, w, i))
				d := time.Since(t0)
				cancel()
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				n++
				if len(lat) < capEach {
					lat = append(lat, d)
				}
			}
			mu.Lock()
			out.count += n
			out.errors += errs
			if out.firstErr == nil {
				out.firstErr = first
			}
			out.lat = append(out.lat, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	return out
}

// rate is lookups per second, NaN if none succeeded.
func (r lookupRun) rate() float64 {
	if r.count == 0 || r.elapsed <= 0 {
		return math.NaN()
	}
	return float64(r.count) / r.elapsed.Seconds()
}

// p99 is the 99th percentile latency in milliseconds, NaN without samples.
func (r lookupRun) p99() float64 { return percentile(r.lat, 0.99) }

// percentile is the q-quantile of lat in milliseconds (nearest rank).
func percentile(lat []time.Duration, q float64) float64 {
	if len(lat) == 0 {
		return math.NaN()
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return float64(s[i]) / float64(time.Millisecond)
}

// checkAnswer wants both of the subject's districts answered ok, with
// records.
func checkAnswer(a *api.LookupAnswer) error {
	ok := 0
	for _, d := range a.Districts {
		if d.Status == api.DistrictOK && len(d.Records) > 0 {
			ok++
		}
	}
	if ok != 2 {
		statuses := make([]string, len(a.Districts))
		for i, d := range a.Districts {
			statuses[i] = fmt.Sprintf("%s %d records", d.Status, len(d.Records))
		}
		return fmt.Errorf("bench: a lookup answered %d districts with records, want 2 (%v)", ok, statuses)
	}
	return nil
}

// apiLookup is a lookup through an API (credfed's coordinator or the
// central copy's front), one client per worker.
func apiLookup(clients []*api.Client) lookupFunc {
	return func(ctx context.Context, w int, subject, ref string) error {
		a, err := clients[w%len(clients)].Lookup(ctx, api.LookupRequest{Subject: subject, Purpose: Purpose, User: "bench", Reference: ref})
		if err != nil {
			return err
		}
		return checkAnswer(a)
	}
}
