package systemtest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// batchCase is what a row of a mixed batch must get.
type batchCase struct {
	row      api.BatchRow
	errCode  string   // the row fails with this code, or
	measures []string // its check gives these measures (ADMIN-LICENSING)
}

// mixedBatch is n rows of ADMIN-LICENSING checks mixing every case: the
// 10 debtors (restricted), the 10 volunteers (green channel and priority),
// subjects with nothing (green channel), a bad check character and a
// missing reference.
func mixedBatch(n int, debtors, volunteers []string) []batchCase {
	out := make([]batchCase, n)
	for i := range out {
		ref := fmt.Sprintf("批〔2026〕%d号", i)
		switch k := i % 100; {
		case k < 5:
			out[i] = batchCase{row: api.BatchRow{Subject: debtors[i%len(debtors)], Reference: ref}, measures: []string{"STRICT-REVIEW-DEBTOR"}}
		case k < 10:
			out[i] = batchCase{row: api.BatchRow{Subject: volunteers[i%len(volunteers)], Reference: ref}, measures: []string{"GREEN-CHANNEL", "PRIORITY-VOLUNTEER"}}
		case k == 10:
			id := []byte(credit.SyntheticPerson(500000+i, credit.NewDate(1990, 1, 1)))
			if id[17] == '0' {
				id[17] = '1'
			} else {
				id[17] = '0'
			}
			out[i] = batchCase{row: api.BatchRow{Subject: string(id), Reference: ref}, errCode: api.CodeInvalidIdentifier}
		case k == 11:
			out[i] = batchCase{row: api.BatchRow{Subject: credit.SyntheticPerson(600000+i, credit.NewDate(1990, 1, 1))}, errCode: api.CodeBadRequest}
		default:
			out[i] = batchCase{row: api.BatchRow{Subject: credit.SyntheticPerson(700000+i, credit.NewDate(1985, 6, 1)), Reference: ref}, measures: []string{"GREEN-CHANNEL"}}
		}
	}
	return out
}

func batchSubjects() (debtors, volunteers []string) {
	for i := range 10 {
		debtors = append(debtors, credit.SyntheticPerson(8100+i, credit.NewDate(1975, 1, 2)))
		volunteers = append(volunteers, credit.SyntheticPerson(8200+i, credit.NewDate(1998, 3, 4)))
	}
	return debtors, volunteers
}

func batchRecords(debtors, volunteers []string) (debts, vols []api.RecordInput) {
	for i, s := range debtors {
		debts = append(debts, record(fmt.Sprintf("BD-%d", i), s, "DISHONEST-JUDGMENT-DEBTOR", "拒不履行"))
	}
	for i, s := range volunteers {
		vols = append(vols, record(fmt.Sprintf("BV-%d", i), s, "OUTSTANDING-YOUTH-VOLUNTEER", "志愿者"))
	}
	return debts, vols
}

// checkResults holds every row of a finished job to its case, and returns
// the check ids of the rows that ran.
func checkResults(t *testing.T, cases []batchCase, results []api.BatchResult) map[string]bool {
	t.Helper()
	if len(results) != len(cases) {
		t.Fatalf("%d results for %d rows", len(results), len(cases))
	}
	ids := map[string]bool{}
	bad := 0
	for i, r := range results {
		c := cases[i]
		if r.Row != i {
			t.Fatalf("result %d is of row %d", i, r.Row)
		}
		var got string
		switch {
		case c.errCode != "":
			if r.Status != "error" || r.Error == nil || r.Error.Code != c.errCode || r.Check != nil {
				got = fmt.Sprintf("%+v", r)
			}
		case r.Status != "ok" || r.Check == nil:
			got = fmt.Sprintf("%+v", r)
		default:
			ms := measureCodes(r.Check)
			if !slices.Equal(ms, c.measures) || !r.Check.Complete || strings.Contains(r.Subject, c.row.Subject) {
				got = fmt.Sprintf("measures %v complete %v subject %q", ms, r.Check.Complete, r.Subject)
			}
			if ids[r.Check.CheckID] {
				got = "a check id given twice"
			}
			ids[r.Check.CheckID] = true
		}
		if got != "" {
			if bad++; bad <= 5 {
				t.Errorf("row %d (%+v, want %q %v): %s", i, c.row, c.errCode, c.measures, got)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d rows of %d wrong", bad, len(cases))
	}
	return ids
}

// auditedChecks returns the check ids of a node's allowed "check" entries
// and the number of its refused ones.
func auditedChecks(t *testing.T, db *storage.DB) (map[string]bool, int) {
	t.Helper()
	ids := map[string]bool{}
	denied := 0
	head, _ := db.Audit().Head()
	if err := db.Audit().Range(1, head, func(e storage.AuditEntry) error {
		if e.Operation == "check" {
			if e.Decision == storage.DecisionAllowed {
				ids[e.LookupID] = true
			} else {
				denied++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ids, denied
}

func waitJob(t *testing.T, c *api.Client, id string, d time.Duration) *api.Job {
	t.Helper()
	var job *api.Job
	wait.Until(t, d, "the batch job to finish", func() bool {
		j, err := c.Job(ctxT(t, 10*time.Second), id)
		if err == nil {
			job = j
		}
		return err == nil && (j.Status == "done" || j.Status == "failed")
	})
	return job
}

// TestBatchCheckGivesEveryRowItsAnswer: 10,000 rows mixing every case each
// get the right answer, every row is in the coordinator's audit log under
// its own check id, and the job reports its progress.
func TestBatchCheckGivesEveryRowItsAnswer(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 4}, node.Options{})
	ds := f.Districts()
	debtors, volunteers := batchSubjects()
	debts, vols := batchRecords(debtors, volunteers)
	submit(t, f, ds[1], debts...)
	submit(t, f, ds[2], vols...)
	for _, s := range append(slices.Clone(debtors), volunteers...) {
		waitIndexed(t, f, s, 1)
	}
	cases := mixedBatch(10_000, debtors, volunteers)
	rows := make([]api.BatchRow, len(cases))
	for i, c := range cases {
		rows[i] = c.row
	}
	coord := coordinator(t, f)
	start := time.Now()
	job, err := coord.SubmitBatch(ctxT(t, 60*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "审批科", Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	if job.Rows != len(rows) || (job.Status != "queued" && job.Status != "running") {
		t.Fatalf("the job as queued: %+v", job)
	}
	job = waitJob(t, coord, job.ID, 3*time.Minute)
	t.Logf("10,000 rows checked in %v (job rate %.0f rows/s)", time.Since(start), job.Rate)
	if job.Status != "done" || job.Done != len(rows) || job.Failed != 2*len(rows)/100 {
		t.Fatalf("the finished job: %+v", job)
	}
	results, err := coord.JobResults(ctxT(t, 60*time.Second), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	ids := checkResults(t, cases, results)
	audited, denied := auditedChecks(t, f.Node(f.Province()).Store())
	for id := range ids {
		if !audited[id] {
			t.Fatalf("row check %s is not in the coordinator's audit log", id)
		}
	}
	if denied < job.Failed {
		t.Fatalf("%d refused rows audited, %d rows failed", denied, job.Failed)
	}
	// The districts audited the rows they answered, under the same ids.
	dist, _ := auditedDistrictChecks(t, f.Node(ds[1]).Store())
	for i, r := range results {
		if cases[i].measures != nil && cases[i].measures[0] == "STRICT-REVIEW-DEBTOR" && !dist[r.Check.CheckID] {
			t.Fatalf("row %d's check is not in %s's audit log", i, ds[1])
		}
	}
	// The results and the job are the submitter's alone.
	other := clientOf(t, f, f.Province(), f.Layout.Coordinators[cityOf(t, f, ds[0])])
	if _, err := other.Job(ctxT(t, 10*time.Second), job.ID); api.Code(err) != api.CodeNotFound {
		t.Fatalf("another coordinator reads the job: %v", err)
	}
	if _, err := clientOf(t, f, f.Province(), f.Layout.Operator).JobResults(ctxT(t, 10*time.Second), job.ID); api.Code(err) == "" {
		t.Fatal("an operator reads the results (the subjects' records)")
	}
	if j, err := clientOf(t, f, f.Province(), f.Layout.Operator).Job(ctxT(t, 10*time.Second), job.ID); err != nil || j.Done != job.Done {
		t.Fatalf("an operator's view of the job: %+v, %v", j, err)
	}
}

func auditedDistrictChecks(t *testing.T, db *storage.DB) (map[string]bool, int) {
	t.Helper()
	ids := map[string]bool{}
	n := 0
	head, _ := db.Audit().Head()
	if err := db.Audit().Range(1, head, func(e storage.AuditEntry) error {
		if e.Operation == "check.answer" && e.Decision == storage.DecisionAllowed {
			ids[e.LookupID] = true
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ids, n
}

// TestQuerierOverQuotaIsRefusedAndFlagged: with a quota of 160 licensing
// checks a day, a batch of 150 rows under one case reference runs (and is
// flagged as screening), the next batch of 20 is refused whole with the
// reset time, single checks run up to the quota and are refused past it;
// GET /v1/audit/queriers shows the counts, the quota and the flag.
func TestQuerierOverQuotaIsRefusedAndFlagged(t *testing.T) {
	dir := t.TempDir()
	l, err := localfed.Create(localfed.Spec{Dir: dir, Districts: 2})
	if err != nil {
		t.Fatal(err)
	}
	prov, _ := l.Node(l.Nodes[0].Name)
	cfgFile, err := os.OpenFile(prov.ConfigPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(cfgFile, "queriers:\n  quotas:\n    - {purpose: ADMIN-LICENSING, limit: 160, per: 24h}\n")
	cfgFile.Close()
	f := startFed(t, localfed.Spec{Dir: dir, Districts: 2}, node.Options{})
	coord := coordinator(t, f)
	var rows []api.BatchRow
	for i := range 150 {
		rows = append(rows, api.BatchRow{Subject: credit.SyntheticPerson(910000+i, credit.NewDate(1980, 1, 1)), Reference: "筛查-1"})
	}
	job, err := coord.SubmitBatch(ctxT(t, 30*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u", Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	if j := waitJob(t, coord, job.ID, time.Minute); j.Status != "done" {
		t.Fatalf("job %+v", j)
	}
	_, err = coord.SubmitBatch(ctxT(t, 30*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "u", Rows: rows[:20]})
	if api.Code(err) != api.CodeTooManyRequests || !strings.Contains(err.Error(), "T16:00:00Z") {
		t.Fatalf("a batch over quota: %v, want too_many_requests with the reset time (midnight in Shanghai)", err)
	}
	req := api.CheckRequest{Subject: rows[0].Subject, Scenario: "ADMIN-LICENSING", User: "u", Reference: "R-single"}
	for i := range 10 {
		if _, err := checkUntil(t, coord, req); err != nil {
			t.Fatalf("check %d within the quota: %v", i+1, err)
		}
	}
	if _, err := coord.Check(ctxT(t, 30*time.Second), req); api.Code(err) != api.CodeTooManyRequests {
		t.Fatalf("the check past the quota: %v", err)
	}
	var q api.Queriers
	if _, err := clientOf(t, f, f.Province(), f.Layout.Operator).Do(ctxT(t, 10*time.Second), "GET", "/v1/audit/queriers", "", nil, &q); err != nil {
		t.Fatal(err)
	}
	if len(q.Institutions) != 1 {
		t.Fatalf("queriers %+v", q)
	}
	inst := q.Institutions[0]
	flagged := false
	for _, fl := range inst.Flags {
		flagged = flagged || fl.Flag == api.FlagDistinctSubjects
	}
	if inst.Admitted != 160 || inst.Refused != 21 || len(inst.Quotas) != 1 || inst.Quotas[0].Used != 160 || !flagged {
		t.Fatalf("the querier's account: %+v", inst)
	}
}

// TestBatchCheckResumesAfterTheNodeIsKilled: a city node checking a batch
// of 10,000 rows is killed (SIGKILL) mid-job; restarted, it resumes from
// the last chunk it kept and finishes with every row answered once, and
// right.
func TestBatchCheckResumesAfterTheNodeIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs the federation as processes; not in -short")
	}
	var city string
	pf := startProcFedWith(t, 2, func(l localfed.Layout) {
		for _, n := range l.Nodes {
			if n.Role == "city" && city == "" {
				city = n.Name
				// Small chunks, so that the kill lands between two of many.
				cf, err := os.OpenFile(n.ConfigPath, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprint(cf, "checks:\n  batch_chunk_rows: 100\n")
				cf.Close()
			}
		}
	})
	ds := pf.layout.Districts()
	debtors, volunteers := batchSubjects()
	debts, vols := batchRecords(debtors, volunteers)
	for d, recs := range map[string][]api.RecordInput{ds[0]: debts, ds[1]: vols} {
		ans, _, err := pf.client(d, pf.layout.Departments[d]).SubmitRecords(ctxT(t, 30*time.Second), recs)
		if err != nil || len(ans.Results) != len(recs) {
			t.Fatalf("submit at %s: %+v %v", d, ans, err)
		}
	}
	coord := pf.client(city, pf.layout.Coordinators[city])
	// Wait until the city's index shows every listed subject.
	wait.Until(t, 60*time.Second, "the city to index the listed subjects", func() bool {
		for _, s := range append(slices.Clone(debtors), volunteers...) {
			a, err := coord.Check(ctxT(t, 10*time.Second), api.CheckRequest{Subject: s, Scenario: "ADMIN-LICENSING", User: "u", Reference: "probe"})
			if err != nil || len(a.Districts) == 0 {
				return false
			}
		}
		return true
	})
	cases := mixedBatch(10_000, debtors, volunteers)
	rows := make([]api.BatchRow, len(cases))
	for i, c := range cases {
		rows[i] = c.row
	}
	job, err := coord.SubmitBatch(ctxT(t, 60*time.Second), api.BatchCheckRequest{Scenario: "ADMIN-LICENSING", User: "审批科", Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	var before *api.Job
	wait.Until(t, 60*time.Second, "the job to be part done", func() bool {
		j, err := coord.Job(ctxT(t, 5*time.Second), job.ID)
		if err == nil && j.Done > 0 {
			before = j
		}
		return before != nil
	})
	pf.kill(city)
	if before.Done >= before.Rows {
		t.Fatalf("the job finished before the kill (%+v): the test proves nothing", before)
	}
	pf.start(city)
	pf.waitReady(city)
	coord = pf.client(city, pf.layout.Coordinators[city])
	done := waitJob(t, coord, job.ID, 3*time.Minute)
	if done.Status != "done" || done.Done != len(rows) {
		t.Fatalf("the resumed job: %+v (before the kill: %d done)", done, before.Done)
	}
	results, err := coord.JobResults(ctxT(t, 60*time.Second), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	ids := checkResults(t, cases, results)
	t.Logf("killed at %d of %d rows; resumed and finished with %d checks", before.Done, len(rows), len(ids))
	// Every row that ran is in the city's audit log, the rows of the chunk
	// the kill cut short too (run again: checked twice, audited twice).
	pf.kill(city)
	ln, _ := pf.layout.Node(city)
	cfg, err := node.LoadConfig(ln.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(storage.Options{Dir: filepath.Join(cfg.DataDir, "db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	audited, _ := auditedChecks(t, db)
	for id := range ids {
		if !audited[id] {
			t.Fatalf("row check %s is not in the city's audit log", id)
		}
	}
}
