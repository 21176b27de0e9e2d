package storage

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"credfed/credit"
)

func TestSubmitAndRead(t *testing.T) {
	db := openTest(t, Options{})
	a, b, c := testRecord("A1", 1), testRecord("A2", 1), testRecord("A3", 2)
	c.Department = "tax"
	out := mustSubmit(t, db, a, b, c)
	for i, o := range out {
		if o != Accepted {
			t.Fatalf("outcome %d = %v, want accepted", i, o)
		}
	}
	got, err := db.Record(testDept, "A1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.SameContent(a) || got.Version != 1 || got.Status != credit.StatusActive || got.RecordedAt.IsZero() {
		t.Fatalf("Record = %+v", got)
	}
	if _, err := db.Record("tax", "A1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Record(other department) err = %v, want ErrNotFound", err)
	}
	bySubj, err := db.RecordsBySubject(testSubject(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(bySubj) != 2 || bySubj[0].ID != "A1" || bySubj[1].ID != "A2" {
		t.Fatalf("RecordsBySubject = %v", ids(bySubj))
	}
	// A subject whose number is a prefix of another's must not match it.
	if r, err := db.RecordsBySubject(testSubject(1)[:17]); err != nil || len(r) != 0 {
		t.Fatalf("RecordsBySubject(prefix) = %v, %v", ids(r), err)
	}
	// Many at once, in any order, read as one by one; a bad subject is its
	// own error and does not stop the others.
	many := []string{testSubject(2), testSubject(1)[:17], "", testSubject(1), testSubject(77), testSubject(2)}
	recs, errs, err := db.RecordsBySubjects(many)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range many {
		one, oneErr := db.RecordsBySubject(s)
		if (oneErr != nil) != (errs[i] != nil) || len(one) != len(recs[i]) {
			t.Fatalf("subject %d: many %v %v, one %v %v", i, ids(recs[i]), errs[i], ids(one), oneErr)
		}
		for k := range one {
			if !one[k].SameContent(recs[i][k]) || one[k].Version != recs[i][k].Version {
				t.Fatalf("subject %d record %d differs", i, k)
			}
		}
	}
	if errs[2] == nil || len(recs[3]) != 2 {
		t.Fatalf("the empty subject must be an error and subject 1 hold 2 records: %v %v", errs[2], ids(recs[3]))
	}
	vs, err := db.Versions(testDept, "A2")
	if err != nil || len(vs) != 1 || vs[0].Version != 1 {
		t.Fatalf("Versions = %v, %v", vs, err)
	}
	if n := db.CountRecords(); n != 3 {
		t.Fatalf("CountRecords = %d, want 3", n)
	}
	items, err := db.PendingSubjects(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || items[0].Subject != testSubject(1) || items[1].Subject != testSubject(2) {
		t.Fatalf("PendingSubjects = %+v", items)
	}
}

func ids(rs []credit.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Department+"/"+r.ID)
	}
	return out
}

func TestSubmitDuplicateAndConflict(t *testing.T) {
	db := openTest(t, Options{})
	a := testRecord("D1", 1)
	other := a
	other.Summary = "something else"
	// Within one batch the second submission is judged against the first.
	out := mustSubmit(t, db, a, a, other)
	if !slices.Equal(out, []Outcome{Accepted, Duplicate, Conflict}) {
		t.Fatalf("outcomes = %v", out)
	}
	if out[2].Err() != ErrConflict || out[1].Err() != nil {
		t.Fatalf("Err() = %v, %v", out[1].Err(), out[2].Err())
	}
	// Fields outside SameContent (status, recorded time) do not matter.
	again := a
	again.Status = credit.StatusDisputed
	if out := mustSubmit(t, db, again, other); !slices.Equal(out, []Outcome{Duplicate, Conflict}) {
		t.Fatalf("resubmission outcomes = %v", out)
	}
	// After a correction, the original submission is still a duplicate.
	v2 := a
	v2.Version, v2.Summary, v2.Reason = 2, "corrected summary", "typo"
	if err := db.UpdateRecord(v2); err != nil {
		t.Fatal(err)
	}
	if out := mustSubmit(t, db, a, other); !slices.Equal(out, []Outcome{Duplicate, Conflict}) {
		t.Fatalf("after correction outcomes = %v", out)
	}
	if n := db.CountRecords(); n != 1 {
		t.Fatalf("CountRecords = %d, want 1", n)
	}
	if got, _ := db.Record(testDept, "D1"); got.Summary != "corrected summary" || got.Version != 2 {
		t.Fatalf("latest = %+v", got)
	}
}

func TestSubmitRefusesBadRecords(t *testing.T) {
	db := openTest(t, Options{InMemory: true})
	cases := map[string]func(*credit.Record){
		"empty department": func(r *credit.Record) { r.Department = "" },
		"empty id":         func(r *credit.Record) { r.ID = "" },
		"NUL in id":        func(r *credit.Record) { r.ID = "a\x00b" },
		"empty subject":    func(r *credit.Record) { r.Subject = "" },
		"long department":  func(r *credit.Record) { r.Department = strings.Repeat("d", 300) },
		"version 2":        func(r *credit.Record) { r.Version = 2 },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			good, bad := testRecord("OK", 1), testRecord("BAD", 2)
			mutate(&bad)
			_, err := db.SubmitRecords([]credit.Record{good, bad})
			if !errors.Is(err, ErrInvalidRecord) {
				t.Fatalf("err = %v, want ErrInvalidRecord", err)
			}
			if strings.Contains(err.Error(), testSubject(2)) {
				t.Fatalf("error names the subject: %v", err)
			}
			if _, err := db.Record(testDept, "OK"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("a refused batch stored a record: %v", err)
			}
		})
	}
	if _, err := db.RecordsBySubject("a\x00b"); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("RecordsBySubject(NUL): %v", err)
	}
	if _, err := db.Record(testDept, ""); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("Record(empty id): %v", err)
	}
	big := testRecord("BIG", 1)
	big.Summary = strings.Repeat("x", 2<<20)
	if _, err := db.SubmitRecords([]credit.Record{big}); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("2 MiB record: err = %v, want ErrRecordTooLarge", err)
	}
}

func TestUpdateRecord(t *testing.T) {
	db := openTest(t, Options{})
	a := testRecord("U1", 1)
	mustSubmit(t, db, a)
	before, _ := db.PendingSubjects(0)

	v2 := a
	v2.Version, v2.Subject, v2.Reason = 2, testSubject(7), "wrong subject"
	if err := db.UpdateRecord(v2); err != nil {
		t.Fatal(err)
	}
	if r, _ := db.RecordsBySubject(testSubject(1)); len(r) != 0 {
		t.Fatalf("old subject still indexed: %v", ids(r))
	}
	if r, _ := db.RecordsBySubject(testSubject(7)); len(r) != 1 || r[0].Version != 2 {
		t.Fatalf("new subject index = %v", r)
	}
	after, _ := db.PendingSubjects(0)
	seqs := map[string]uint64{}
	for _, it := range after {
		seqs[it.Subject] = it.Seq
	}
	// Both subjects marked again, above the first marker (which stays
	// beside them until it is acknowledged).
	if len(seqs) != 2 || seqs[testSubject(1)] <= before[0].Seq || seqs[testSubject(7)] <= before[0].Seq {
		t.Fatalf("outbox after subject change = %+v (before %+v)", after, before)
	}

	v3 := v2
	v3.Version, v3.Status, v3.Reason = 3, credit.StatusDisputed, "objection"
	if err := db.UpdateRecord(v3); err != nil {
		t.Fatal(err)
	}
	vs, err := db.Versions(testDept, "U1")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 || vs[0].Version != 1 || vs[0].Subject != testSubject(1) || vs[2].Status != credit.StatusDisputed {
		t.Fatalf("Versions = %+v", vs)
	}
	stale := v3 // version 3 again
	if err := db.UpdateRecord(stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale version: err = %v, want ErrConflict", err)
	}
	skip := v3
	skip.Version = 5
	if err := db.UpdateRecord(skip); !errors.Is(err, ErrConflict) {
		t.Fatalf("skipped version: err = %v, want ErrConflict", err)
	}
	missing := testRecord("NOPE", 1)
	missing.Version = 2
	if err := db.UpdateRecord(missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing record: err = %v, want ErrNotFound", err)
	}
	if n := db.CountRecords(); n != 1 {
		t.Fatalf("CountRecords = %d, want 1", n)
	}
}

func TestDeleteRecord(t *testing.T) {
	db := openTest(t, Options{})
	a, keep := testRecord("X1", 1), testRecord("X2", 1)
	mustSubmit(t, db, a, keep)
	v2 := a
	v2.Version, v2.Subject = 2, testSubject(3)
	if err := db.UpdateRecord(v2); err != nil {
		t.Fatal(err)
	}
	if err := db.AckOutbox(mustPending(t, db)); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteRecord(testDept, "X1"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Record(testDept, "X1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Record after delete: %v", err)
	}
	if _, err := db.Versions(testDept, "X1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Versions after delete: %v", err)
	}
	for _, fam := range []string{"r/", "v/", "s/", "i/"} {
		for _, k := range rawKeys(t, db, fam) {
			if strings.Contains(k, "X1") {
				t.Errorf("key left behind: %q", k)
			}
		}
	}
	if r, _ := db.RecordsBySubject(testSubject(1)); len(r) != 1 || r[0].ID != "X2" {
		t.Fatalf("other record of the subject: %v", ids(r))
	}
	// Both subjects the record ever had are marked for an index update.
	pending := mustPending(t, db)
	subjects := []string{}
	for _, p := range pending {
		subjects = append(subjects, p.Subject)
	}
	slices.Sort(subjects)
	if len(subjects) != 2 || subjects[0] != testSubject(1) || subjects[1] != testSubject(3) {
		t.Fatalf("outbox after delete = %+v", pending)
	}
	if n := db.CountRecords(); n != 1 {
		t.Fatalf("CountRecords = %d, want 1", n)
	}
	if err := db.DeleteRecord(testDept, "X1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// The id can be used again afterwards.
	if out := mustSubmit(t, db, a); out[0] != Accepted {
		t.Fatalf("resubmission after delete = %v", out[0])
	}
}

func mustPending(t testing.TB, db *DB) []OutboxItem {
	t.Helper()
	items, err := db.PendingSubjects(0)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

// TestLargeBatchIsSplit submits more than a transaction holds and more
// than a memtable holds, encrypted: the batch is split, the memtables are
// flushed to encrypted tables (which needs Badger's index cache) and read
// back after a reopen.
func TestLargeBatchIsSplit(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, EncryptionKey: testKey(4), GCInterval: -1}
	db, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	recs := make([]credit.Record, n)
	for i := range recs {
		recs[i] = testRecord(fmt.Sprintf("L%05d", i), i%500)
		recs[i].Summary = strings.Repeat("s", 2000)
	}
	// ~20 MB of values: far beyond one transaction (budget ≈ 1.2 MB) and
	// one 16 MiB memtable.
	if int64(n*2*2000) < 10*db.budgetBytes {
		t.Fatalf("batch too small to need splitting")
	}
	out := mustSubmit(t, db, recs...)
	for i, o := range out {
		if o != Accepted {
			t.Fatalf("outcome %d = %v", i, o)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, opts)
	if got := db.CountRecords(); got != n {
		t.Fatalf("CountRecords = %d, want %d", got, n)
	}
	// Every subject marked, once in each transaction that wrote one of
	// its records.
	pending := mustPending(t, db)
	marked := map[string]bool{}
	for _, it := range pending {
		marked[it.Subject] = true
	}
	if l, _ := db.OutboxLen(); len(marked) != 500 || l != len(pending) || l > n {
		t.Fatalf("OutboxLen = %d, %d entries of %d subjects; want 500 subjects", l, len(pending), len(marked))
	}
	for _, id := range []string{"L00000", "L02500", "L04999"} {
		if r, err := db.Record(testDept, id); err != nil || r.ID != id || len(r.Summary) != 2000 {
			t.Fatalf("Record(%s) = %v", id, err)
		}
	}
	if rs, err := db.RecordsBySubject(testSubject(7)); err != nil || len(rs) != n/500 {
		t.Fatalf("RecordsBySubject = %d records, %v", len(rs), err)
	}
}

func TestConcurrentSubmit(t *testing.T) {
	db := openTest(t, Options{})
	const workers, each = 32, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := map[string]int{}
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				// Workers w and w^1 submit the same ids: each must be
				// accepted exactly once and be a duplicate otherwise.
				id := fmt.Sprintf("C%02d-%02d", w/2, i)
				out, err := db.SubmitRecords([]credit.Record{testRecord(id, w/2)})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if out[0] == Accepted {
					accepted[id]++
				} else if out[0] != Duplicate {
					errs <- fmt.Errorf("outcome %v", out[0])
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(accepted) != workers/2*each {
		t.Fatalf("%d ids accepted, want %d", len(accepted), workers/2*each)
	}
	for id, n := range accepted {
		if n != 1 {
			t.Fatalf("%s accepted %d times", id, n)
		}
	}
	if got := db.CountRecords(); got != workers/2*each {
		t.Fatalf("CountRecords = %d", got)
	}
}

func TestReopenKeepsCountersAndSequence(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.SubmitRecords([]credit.Record{testRecord("R1", 1), testRecord("R2", 2)}); err != nil {
		t.Fatal(err)
	}
	first, _ := db.PendingSubjects(0)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, Options{Dir: dir})
	if got := db.CountRecords(); got != 2 {
		t.Fatalf("CountRecords after reopen = %d", got)
	}
	mustSubmit(t, db, testRecord("R3", 1))
	after := mustPending(t, db)
	// Sequence order: the two entries before the reopening, then subject
	// 1 again, above them.
	if len(after) != 3 || after[0] != first[0] || after[1] != first[1] || after[2].Subject != testSubject(1) || after[2].Seq <= first[1].Seq {
		t.Fatalf("outbox seq went back after reopen: before %+v, after %+v", first, after)
	}
}

func TestClosedDB(t *testing.T) {
	db := openTest(t, Options{InMemory: true})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SubmitRecords([]credit.Record{testRecord("Z", 1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("SubmitRecords after Close: %v", err)
	}
	if _, err := db.Record(testDept, "Z"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after Close: %v", err)
	}
	if _, err := db.Audit().Append(AuditEntry{Operation: "lookup", Decision: DecisionAllowed}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if err := db.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

func TestPseudonymCache(t *testing.T) {
	db := openTest(t, Options{Dir: t.TempDir()})
	subj := credit.SyntheticPerson(7, credit.NewDate(1985, 3, 1))
	other := credit.SyntheticPerson(8, credit.NewDate(1985, 3, 1))
	got, err := db.Pseudonyms([]string{subj, other})
	if err != nil || len(got) != 0 {
		t.Fatalf("empty cache: %v %v", got, err)
	}
	p := credit.Pseudonym{1, 2, 3}
	if err := db.PutPseudonyms(map[string]credit.Pseudonym{subj: p}); err != nil {
		t.Fatal(err)
	}
	got, err = db.Pseudonyms([]string{subj, other})
	if err != nil || len(got) != 1 || got[subj] != p {
		t.Fatalf("cache: %v %v", got, err)
	}
	if err := db.PutPseudonyms(map[string]credit.Pseudonym{"": p}); err == nil {
		t.Fatal("empty subject cached")
	}
}

func TestOutboxDrainsInSequenceOrder(t *testing.T) {
	db := openTest(t, Options{Dir: t.TempDir()})
	// Subjects marked in the order 3, 1, 2, then 3 again: each change is
	// an entry of its own, in the order of the changes.
	order := []int{3, 1, 2, 3}
	for i, n := range order {
		mustSubmit(t, db, testRecord(fmt.Sprintf("S%d", i), n))
	}
	got := mustPending(t, db)
	if len(got) != len(order) {
		t.Fatalf("pending %+v", got)
	}
	for i, n := range order {
		if got[i].Subject != testSubject(n) || (i > 0 && got[i].Seq <= got[i-1].Seq) {
			t.Fatalf("pending not in sequence order: %+v", got)
		}
	}
	if err := db.AckOutbox(got[:2]); err != nil {
		t.Fatal(err)
	}
	if rest := mustPending(t, db); len(rest) != 2 || rest[0] != got[2] || rest[1] != got[3] {
		t.Fatalf("after ack: %+v", rest)
	}
	if n, _ := db.OutboxLen(); n != 2 {
		t.Fatalf("OutboxLen %d", n)
	}
}
