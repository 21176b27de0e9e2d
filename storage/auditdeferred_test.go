package storage

import (
	"testing"
	"time"
)

// waitFor waits until cond holds, checking it every millisecond, and
// fails the test at a 10 s deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

type appended struct {
	out []AuditEntry
	err error
}

func appendDeferredAsync(l *AuditLog, es ...AuditEntry) chan appended {
	ch := make(chan appended, 1)
	go func() {
		out, err := l.AppendDeferred(es...)
		ch <- appended{out, err}
	}()
	return ch
}

func receive(t *testing.T, ch chan appended) appended {
	t.Helper()
	select {
	case a := <-ch:
		if a.err != nil {
			t.Fatal(a.err)
		}
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("a deferred append did not return")
	}
	return appended{}
}

// A deferred append waits for the next append and is committed with it, in
// one synced transaction, chained before it.
func TestDeferredAppendSharesTheNextCommit(t *testing.T) {
	db := openTest(t, Options{})
	l := db.Audit()
	l.window.Store(int64(time.Hour)) // only another append commits it
	appendN(t, l, 1)
	before := l.commits.Load()
	ch := appendDeferredAsync(l, lookupEntry(1))
	waitFor(t, "the deferred entry to wait", func() bool { return l.deferred.Load() == 1 })
	if n := l.commits.Load(); n != before {
		t.Fatalf("a deferred entry was committed alone (%d commits)", n-before)
	}
	urgent, err := l.Append(lookupEntry(2))
	if err != nil {
		t.Fatal(err)
	}
	late := receive(t, ch)
	if n := l.commits.Load() - before; n != 1 {
		t.Fatalf("%d commits for a deferred and an urgent append, want 1", n)
	}
	if late.out[0].Seq != 2 || urgent[0].Seq != 3 || urgent[0].Prev != late.out[0].Hash {
		t.Fatalf("chain: deferred %d, urgent %d (prev %x, want %x)", late.out[0].Seq, urgent[0].Seq, urgent[0].Prev, late.out[0].Hash)
	}
	if l.deferred.Load() != 0 {
		t.Fatalf("%d deferred entries still counted as waiting", l.deferred.Load())
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
}

// With nothing else appended, a deferred append is committed alone once
// its window ends, and survives a reopen.
func TestDeferredAppendAloneIsCommittedAndDurable(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	out, err := db.Audit().AppendDeferred(lookupEntry(0), lookupEntry(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[1].Seq != 2 {
		t.Fatalf("deferred append returned %+v", out)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, Options{Dir: dir})
	if seq, h := db.Audit().Head(); seq != 2 || h != out[1].Hash {
		t.Fatalf("head after reopen = %d %x, want 2 %x", seq, h, out[1].Hash)
	}
	var got []AuditEntry
	if err := db.Audit().Range(1, 2, func(e AuditEntry) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Reference != "case-0" || got[1].Reference != "case-1" {
		t.Fatalf("after reopen: %+v", got)
	}
}

// Deferred entries wait within maxDeferredEntries: an append that would
// pass it is committed at once, with those waiting (the window is an hour:
// a deferred append that waited for it would not return).
func TestDeferredEntriesAreBounded(t *testing.T) {
	db := openTest(t, Options{})
	l := db.Audit()
	l.window.Store(int64(time.Hour))
	first := appendDeferredAsync(l, lookupEntry(0))
	waitFor(t, "the first deferred entry to wait", func() bool { return l.deferred.Load() == 1 })
	before := l.commits.Load()
	big := make([]AuditEntry, maxDeferredEntries)
	for i := range big {
		big[i] = lookupEntry(i + 1)
	}
	over := appendDeferredAsync(l, big...)
	a, b := receive(t, first), receive(t, over)
	if a.out[0].Seq != 1 || b.out[0].Seq != 2 || b.out[len(b.out)-1].Seq != uint64(maxDeferredEntries+1) {
		t.Fatalf("seqs: first %d, then %d..%d", a.out[0].Seq, b.out[0].Seq, b.out[len(b.out)-1].Seq)
	}
	if l.commits.Load() == before {
		t.Fatal("nothing committed")
	}
	if l.deferred.Load() != 0 {
		t.Fatalf("%d deferred entries still counted as waiting", l.deferred.Load())
	}
}

// Closing the store while a deferred append waits: Close waits for the
// operations in progress, the deferred append among them, so it returns
// once the entry is committed (its window, 5 ms), and the entry is in the
// store after.
func TestCloseWaitsForWhatIsDeferred(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	l := db.Audit()
	ch := appendDeferredAsync(l, lookupEntry(7))
	waitFor(t, "the deferred entry to be taken", func() bool { return l.deferred.Load() == 1 || l.commits.Load() == 1 })
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	a := receive(t, ch)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	db = openTest(t, Options{Dir: dir})
	if seq, _ := db.Audit().Head(); seq != 1 || a.out[0].Seq != 1 {
		t.Fatalf("head after reopen = %d, the deferred entry's seq %d; want 1", seq, a.out[0].Seq)
	}
}
