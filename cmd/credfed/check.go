package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"credfed/api"
)

func checkCommand() *cobra.Command {
	var (
		req     api.CheckRequest
		batch   string
		out     string
		strong  bool
		asJSON  bool
		noWait  bool
		jobID   string
		pollGap time.Duration
	)
	cmd := &cobra.Command{
		Use:   "check --subject ID --scenario CODE --reference REF [flags] | check --batch FILE --scenario CODE [flags]",
		Short: "Check a subject before a decision, or a batch of subjects (应查必查).",
		Long: `Asks for the check a scenario of the catalog requires before a decision (a
civil-service hire, a licence, a settlement...): the lists the subject is on,
with the records behind each, the measures that follow with their legal
basis, and whether the subject has been clean for three years. A
restriction is an answer, not an error. The check runs under the scenario's
purpose (--purpose, when given, must be it).

Coordinators check at their coordinator node; departments at their own
district's node, which forwards the check to its city (only scenarios whose
purpose admits departments, such as ADMIN-LICENSING).

--batch FILE checks many subjects at once (coordinators): FILE is CSV (a
header row naming subject, reference and optionally authorization), NDJSON
(one {"subject","reference","authorization"} per line) or a JSON array of
such rows, at most 100,000. The node checks them as a job, each row audited
like a single check and counted against the querier's quota; the command
shows the job's progress with its rate and time left, then writes one
result per row (NDJSON; "row" counts from 0, the CSV header not counted)
to --out, by default NAME.results.ndjson in the working directory (the
results hold the subjects' records: keep them as such). With --no-wait it
prints the job's id and returns; --job ID follows it later (and writes its
results), as GET /v1/jobs/{id} does.`,
		Example: fmt.Sprintf(`  # a city's coordinator, before a civil-service hire:
  credfed check --demo credfed-demo --as coordinator --node quzhou --subject %[1]s --scenario CIVIL-SERVICE-RECRUITMENT --reference 录〔2026〕1号 --authorization AUTH-1

  # a department of a district, before granting a licence:
  credfed check --demo credfed-demo --as department --node kecheng --subject %[1]s --scenario ADMIN-LICENSING --reference 许〔2026〕2号

  # the 1,000 applicants of examples/applicants.csv at once:
  credfed check --demo credfed-demo --batch examples/applicants.csv --scenario ADMIN-LICENSING`, exampleSubject),
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&req.Subject, "subject", "", "`ID` of the subject: citizen number or unified social credit code")
	fs.StringVar(&req.Scenario, "scenario", "", "scenario `CODE` from the catalog (required)")
	fs.StringVar(&req.Purpose, "purpose", "", "purpose `CODE`: optional, the scenario's when given")
	fs.StringVar(&req.Reference, "reference", "", "case reference (`REF`) the check serves (required without --batch)")
	fs.StringVar(&req.User, "user", "", "end user (`NAME`) on whose behalf the check is made (default $USER, then $LOGNAME, then the OS user)")
	fs.StringVar(&req.Authorization, "authorization", "", "the subject's authorization (`REF`), where the purpose requires one")
	fs.BoolVar(&strong, "strong", false, "read the index through the Raft leader (linearizable)")
	fs.BoolVar(&asJSON, "json", false, "print the API's JSON answer as it is (with --batch: the job)")
	fs.StringVar(&batch, "batch", "", "check the subjects of `FILE` (CSV, NDJSON or a JSON array) as one job")
	fs.StringVar(&out, "out", "", "with --batch: write the results to `FILE` (default FILE.results.ndjson)")
	fs.BoolVar(&noWait, "no-wait", false, "with --batch: print the job and return without waiting for it")
	fs.StringVar(&jobID, "job", "", "follow the batch job `ID` (one sent with --no-wait) and write its results")
	fs.DurationVar(&pollGap, "poll", 500*time.Millisecond, "with --batch: how often to ask for the job's progress")
	_ = fs.MarkHidden("poll")
	conn := addConnectionFlags(cmd, "coordinator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if jobID != "" {
			if batch != "" || req.Subject != "" {
				return usageErrorf("--job follows a job already sent: no --batch or --subject")
			}
			c, err := conn.client()
			if err != nil {
				return err
			}
			defer c.CloseIdle()
			job, err := c.Job(cmd.Context(), jobID)
			if err != nil {
				return err
			}
			if out == "" {
				out = jobID + ".results.ndjson"
			}
			return followJob(cmd, c, job, out, asJSON, pollGap)
		}
		if req.Scenario == "" {
			return usageErrorf("check needs --scenario (GET /v1/catalog lists the scenarios)")
		}
		if req.User == "" {
			req.User = defaultUser(os.Getenv, osUserName)
		}
		if req.User == "" {
			return usageErrorf("--user is required: every check names the end user who asks, and neither $USER, $LOGNAME nor the operating system names one")
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		w := cmd.OutOrStdout()
		if batch != "" {
			if req.Subject != "" || req.Reference != "" {
				return usageErrorf("with --batch, each row names its subject and reference; --subject and --reference are not used")
			}
			rows, err := readBatchFile(batch)
			if err != nil {
				return err
			}
			if out == "" {
				out = strings.TrimSuffix(filepath.Base(batch), filepath.Ext(batch)) + ".results.ndjson"
			}
			return runBatch(cmd, c, api.BatchCheckRequest{Scenario: req.Scenario, Purpose: req.Purpose, User: req.User, Rows: rows}, out, asJSON, noWait, pollGap)
		}
		if req.Subject == "" || req.Reference == "" {
			return usageErrorf("check needs --subject and --reference (or --batch FILE)")
		}
		if strong {
			req.Consistency = api.ConsistencyStrong
		}
		var raw json.RawMessage
		if _, err := c.Do(cmd.Context(), "POST", "/v1/checks", "", req, &raw); err != nil {
			return err
		}
		if asJSON {
			return printJSON(w, raw)
		}
		var ans api.CheckAnswer
		if err := json.Unmarshal(raw, &ans); err != nil {
			return fmt.Errorf("POST /v1/checks: the answer is not a check answer: %w", err)
		}
		return printCheck(w, &ans)
	}
	return cmd
}

// printCheck prints a check: the lists, the measures, the districts.
func printCheck(w io.Writer, ans *api.CheckAnswer) error {
	fmt.Fprintf(w, "check %s, scenario %s (%s), purpose %s\n", ans.CheckID, ans.Scenario, ans.ScenarioName, ans.Purpose)
	clean := "no"
	if ans.ThreeYearsClean {
		clean = "yes"
	}
	fmt.Fprintf(w, "three years without a bad record: %s\n", clean)
	if !ans.Complete {
		fmt.Fprintln(w, "INCOMPLETE: not every district the index names answered:")
		for _, u := range ans.Unconfirmed {
			fmt.Fprintln(w, "  "+u)
		}
	}
	fmt.Fprintln(w)
	if len(ans.Lists) == 0 {
		fmt.Fprintln(w, "on no list")
	} else {
		var rows [][]string
		for _, l := range ans.Lists {
			var refs []string
			for _, r := range l.Records {
				refs = append(refs, r.Ref)
			}
			rows = append(rows, []string{l.List, l.Name, l.Kind, strings.Join(refs, " ")})
		}
		if err := writeTable(w, "", []string{"LIST", "NAME", "KIND", "RECORDS"}, rows); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	if len(ans.Measures) == 0 {
		fmt.Fprintln(w, "no measure follows in this scenario")
	} else {
		var rows [][]string
		for _, m := range ans.Measures {
			because := strings.Join(m.Lists, " ")
			if m.Condition != "" {
				because = m.Condition
			}
			rows = append(rows, []string{m.Kind, m.Code, m.Text, m.LegalBasis, because})
		}
		if err := writeTable(w, "", []string{"KIND", "MEASURE", "TEXT", "LEGAL BASIS", "BECAUSE"}, rows); err != nil {
			return err
		}
	}
	if len(ans.Districts) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	var rows [][]string
	for _, d := range ans.Districts {
		rows = append(rows, []string{d.District, d.Name, d.Status, strconv.Itoa(len(d.Records)), d.Error})
	}
	return writeTable(w, "", []string{"DISTRICT", "NAME", "STATUS", "RECORDS", "NOTE"}, rows)
}

// runBatch submits the batch, follows its job with a progress bar, and
// writes the results.
func runBatch(cmd *cobra.Command, c *api.Client, in api.BatchCheckRequest, out string, asJSON, noWait bool, gap time.Duration) error {
	w := cmd.OutOrStdout()
	job, err := c.SubmitBatch(cmd.Context(), in)
	if err != nil {
		return err
	}
	if noWait {
		if asJSON {
			return printJSONValue(w, job)
		}
		fmt.Fprintf(w, "job %s: %d rows queued; follow it with credfed check --job %s\n", job.ID, job.Rows, job.ID)
		return nil
	}
	return followJob(cmd, c, job, out, asJSON, gap)
}

// followJob shows a job's progress until it ends, then writes its results.
func followJob(cmd *cobra.Command, c *api.Client, job *api.Job, out string, asJSON bool, gap time.Duration) error {
	ctx := cmd.Context()
	w, ew := cmd.OutOrStdout(), cmd.ErrOrStderr()
	var bar *progressbar.ProgressBar
	if isTerminal(ew) {
		bar = newBarOf(ew, job.Rows, "checking", "rows", 100*time.Millisecond)
	}
	t := time.NewTicker(gap)
	defer t.Stop()
	for job.Status == "queued" || job.Status == "running" {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		j, err := c.Job(ctx, job.ID)
		if err != nil {
			if api.Code(err) == api.CodeUnavailable {
				continue // the node restarting: the job resumes there
			}
			if bar != nil {
				_ = bar.Clear()
			}
			return err
		}
		job = j
		if bar != nil {
			_ = bar.Set(job.Done)
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	if job.Status != "done" {
		return fmt.Errorf("job %s %s: %s", job.ID, job.Status, job.Error)
	}
	f, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	bw := bufio.NewWriter(f)
	if _, err := c.JobResultsTo(ctx, job.ID, bw); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return err
	}
	if asJSON {
		return printJSONValue(w, job)
	}
	restricted, incentives, incomplete := summarize(out)
	fmt.Fprintf(w, "job %s: %d rows checked (%d failed) at %.0f rows/s: %d with a restriction, %d with an incentive, %d incomplete; results in %s\n",
		job.ID, job.Done, job.Failed, job.Rate, restricted, incentives, incomplete, out)
	return nil
}

// summarize counts the rows of a results file with a restriction, with an
// incentive, and whose check was incomplete.
func summarize(path string) (restricted, incentives, incomplete int) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReader(f))
	for dec.More() {
		var r api.BatchResult
		if dec.Decode(&r) != nil {
			return
		}
		if r.Check == nil {
			continue
		}
		var rs, in bool
		for _, m := range r.Check.Measures {
			rs = rs || m.Kind == "restriction"
			in = in || m.Kind == "incentive"
		}
		if rs {
			restricted++
		}
		if in {
			incentives++
		}
		if !r.Check.Complete {
			incomplete++
		}
	}
	return
}

// maxBatchFile bounds a batch file read into memory.
const maxBatchFile = 32 << 20

// readBatchFile reads a batch's rows: CSV (by the .csv extension or a
// first line without "{" or "["), a JSON array, or NDJSON.
func readBatchFile(path string) ([]api.BatchRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBatchFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxBatchFile {
		return nil, fmt.Errorf("%s is larger than %d MiB (a batch is at most 100,000 rows)", path, maxBatchFile>>20)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	switch {
	case len(trimmed) > 0 && trimmed[0] == '[':
		var rows []api.BatchRow
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rows); err != nil {
			return nil, fmt.Errorf("%s: not a JSON array of rows: %w", path, err)
		}
		return rows, nil
	case len(trimmed) > 0 && trimmed[0] == '{':
		var rows []api.BatchRow
		sc := bufio.NewScanner(bytes.NewReader(trimmed))
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for line := 1; sc.Scan(); line++ {
			b := bytes.TrimSpace(sc.Bytes())
			if len(b) == 0 {
				continue
			}
			var r api.BatchRow
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&r); err != nil {
				return nil, fmt.Errorf("%s line %d: not a row: %w", path, line, err)
			}
			rows = append(rows, r)
		}
		return rows, sc.Err()
	}
	cr := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\ufeff"))))
	cr.FieldsPerRecord = -1
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: a CSV batch starts with a header row subject,reference[,authorization]: %w", path, err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	si, ok1 := col["subject"]
	ri, ok2 := col["reference"]
	ai, hasAuth := col["authorization"]
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("%s: the CSV header must name subject and reference (and optionally authorization)", path)
	}
	var rows []api.BatchRow
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		get := func(i int) string {
			if i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		r := api.BatchRow{Subject: get(si), Reference: get(ri)}
		if hasAuth {
			r.Authorization = get(ai)
		}
		rows = append(rows, r)
	}
}
