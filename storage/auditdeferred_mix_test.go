package storage

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestDeferredAndUrgentAppendsMixed: deferred and urgent appends of one to
// three entries from several goroutines, and deferred ones larger than
// maxDeferredEntries, all return, each with the entries it gave in order
// and consecutive seqs; together they are 1..n once each, the store holds
// what each was told, and Verify is happy.
func TestDeferredAndUrgentAppendsMixed(t *testing.T) {
	db := openTest(t, Options{})
	l := db.Audit()
	const workers, rounds = 6, 30
	type result struct {
		refs []string
		out  []AuditEntry
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				n := 1 + (w+r)%3
				if w == 0 && r%10 == 5 {
					n = maxDeferredEntries + 1
				}
				es := make([]AuditEntry, n)
				refs := make([]string, n)
				for i := range es {
					es[i] = lookupEntry(i)
					refs[i] = fmt.Sprintf("w%d-r%d-%d", w, r, i)
					es[i].Reference = refs[i]
				}
				var out []AuditEntry
				var err error
				if (w+r)%2 == 0 || n > maxDeferredEntries {
					out, err = l.AppendDeferred(es...)
				} else {
					out, err = l.Append(es...)
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				results = append(results, result{refs, out})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint64]string{}
	for _, r := range results {
		if len(r.out) != len(r.refs) {
			t.Fatalf("%d entries back for %d", len(r.out), len(r.refs))
		}
		for i, e := range r.out {
			if e.Reference != r.refs[i] || (i > 0 && e.Seq != r.out[i-1].Seq+1) || (i > 0 && e.Prev != r.out[i-1].Hash) {
				t.Fatalf("entry %d of an append: %q seq %d", i, e.Reference, e.Seq)
			}
			if _, dup := seen[e.Seq]; dup {
				t.Fatalf("seq %d given twice", e.Seq)
			}
			seen[e.Seq] = e.Reference
		}
	}
	head, _ := l.Head()
	if int(head) != len(seen) {
		t.Fatalf("head %d, %d entries acknowledged", head, len(seen))
	}
	if err := l.Range(1, 0, func(e AuditEntry) error {
		if seen[e.Seq] != e.Reference {
			return fmt.Errorf("seq %d holds %q, its append was told %q", e.Seq, e.Reference, seen[e.Seq])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
	if l.deferred.Load() != 0 {
		t.Fatalf("%d deferred entries still counted as waiting", l.deferred.Load())
	}
}

// TestCloseRacingDeferredAppends: appends of both kinds run while the store
// closes; each returns, either an error (ErrClosed) or its entries, and
// after a reopen the log is exactly the acknowledged entries.
func TestCloseRacingDeferredAppends(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	l := db.Audit()
	const workers, rounds = 6, 200
	var mu sync.Mutex
	acked := map[uint64][32]byte{}
	started := make(chan struct{}, workers*rounds)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				e := lookupEntry(r)
				var out []AuditEntry
				var err error
				if (w+r)%3 != 0 {
					out, err = l.AppendDeferred(e)
				} else {
					out, err = l.Append(e)
				}
				started <- struct{}{}
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[out[0].Seq] = out[0].Hash
				mu.Unlock()
			}
		})
	}
	for range 20 {
		<-started
	}
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return")
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("an append did not return after Close")
	}
	if len(acked) == 0 || len(acked) == workers*rounds {
		t.Fatalf("%d of %d appends acknowledged: Close raced none of them", len(acked), workers*rounds)
	}
	db = openTest(t, Options{Dir: dir})
	head, _ := db.Audit().Head()
	if int(head) != len(acked) {
		t.Fatalf("head %d after reopen, %d entries acknowledged", head, len(acked))
	}
	if err := db.Audit().Range(1, 0, func(e AuditEntry) error {
		if h, ok := acked[e.Seq]; !ok || h != e.Hash {
			return fmt.Errorf("seq %d in the store is not what its append was told", e.Seq)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Audit().Verify(); err != nil {
		t.Fatal(err)
	}
}
