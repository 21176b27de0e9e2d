package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"credfed/api"
)

func recordsCommand() *cobra.Command {
	return groupCommand("records", "Submit records to a district node.", recordsSubmitCommand())
}

// submitBatch is how many records go in one request.
const submitBatch = 1000

func recordsSubmitCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "submit FILE [flags]",
		Short: "Submit a file of records (JSON, NDJSON or CSV).",
		Long: fmt.Sprintf(`Submits the records in FILE to a district node with a department's client
certificate; the department of every record is the one in the certificate.

FILE is a JSON object or an array of them, NDJSON (one object per line), or
CSV whose header row names the columns:
  %s
The format is read from the content, whatever the file's extension, and
named in the report ("read 12 records (CSV) from records.txt"). If any line
cannot be read (a line of NDJSON that is not a JSON object, a CSV row with
the wrong number of fields), every such line is reported with its number
and nothing is submitted (exit status 1): fix the file and submit it again.

Records go in batches of %d; each is answered accepted, duplicate (already
there with the same content) or rejected with its reason, reported with its
line in FILE. Resubmitting a file is safe. Exit status 1 if any record was
rejected. On a terminal, a progress bar shows the rate and the time left.
Sample files are in the repository's examples/ directory.`, csvColumnNames(), submitBatch),
		Example: `  # with a running demo (credfed demo), as the market-supervision department of 柯城区:
  credfed records submit examples/records.ndjson --demo credfed-demo --node kecheng

  # CSV, whatever the file is called, to 西湖区:
  credfed records submit examples/records.csv --demo credfed-demo --node xihu`,
		Args: exactArgs(1, "one FILE"),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's answer to each batch, one JSON object per line")
	conn := addConnectionFlags(cmd, "department")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		path := args[0]
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		recs, format, err := readRecordFile(path)
		var fe *fileError
		if errors.As(err, &fe) {
			return errors.New(fe.describe(", so nothing was submitted"))
		}
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return usageErrorf("%s holds no records", path)
		}
		// With --json, standard output carries only the answers.
		report := cmd.OutOrStdout()
		if asJSON {
			report = cmd.ErrOrStderr()
		}
		fmt.Fprintf(report, "read %d %s (%s) from %s\n", len(recs), plural(len(recs), "record", "records"), format, path)
		return submitRecords(cmd, c, recs, asJSON, report)
	}
	return cmd
}

func submitRecords(cmd *cobra.Command, c *api.Client, recs []sourceRecord, asJSON bool, report io.Writer) error {
	bar := newProgress(cmd.ErrOrStderr(), len(recs), "submitting")
	counts := map[string]int{}
	var rejected []string
	for start := 0; start < len(recs); start += submitBatch {
		batch := recs[start:min(start+submitBatch, len(recs))]
		var body bytes.Buffer
		for _, r := range batch {
			body.Write(r.raw)
			body.WriteByte('\n')
		}
		ans, _, err := c.SubmitNDJSON(cmd.Context(), body.Bytes())
		if err != nil {
			bar.abort()
			if start > 0 {
				return fmt.Errorf("the first %d of %d records were submitted, then: %w", start, len(recs), err)
			}
			return err
		}
		if asJSON {
			// SubmitNDJSON decodes the answer into api.SubmitAnswer, the
			// type the node encodes it from, so this is the answer's JSON.
			line, err := json.Marshal(ans)
			if err != nil {
				return err
			}
			if err := printJSON(cmd.OutOrStdout(), line); err != nil {
				return err
			}
		}
		for _, res := range ans.Results {
			counts[res.Status]++
			if res.Status != api.StatusRejected {
				continue
			}
			where := "a record"
			if res.Index >= 0 && res.Index < len(batch) {
				where = fmt.Sprintf("line %d", batch[res.Index].line)
			}
			why := "no reason given"
			if res.Error != nil {
				why = res.Error.Code
				if res.Error.Field != "" {
					why += " [" + res.Error.Field + "]"
				}
				why += ": " + res.Error.Message
			}
			rejected = append(rejected, fmt.Sprintf("  %s (id %q): %s", where, res.ID, why))
		}
		bar.add(len(batch))
	}
	bar.done()
	fmt.Fprintf(report, "%d %s: %d accepted, %d duplicate, %d rejected\n", len(recs), plural(len(recs), "record", "records"),
		counts[api.StatusAccepted], counts[api.StatusDuplicate], counts[api.StatusRejected])
	for _, r := range rejected {
		fmt.Fprintln(report, r)
	}
	if len(rejected) > 0 {
		return fmt.Errorf("%d %s rejected", len(rejected), plural(len(rejected), "record was", "records were"))
	}
	return nil
}
