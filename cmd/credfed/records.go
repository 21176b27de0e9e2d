package main

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func recordsCommand() *command {
	return &command{
		name:    "records",
		summary: "Submit records to a district node.",
		sub:     []*command{{name: "submit", summary: "Submit a file of records (JSON, NDJSON or CSV).", run: recordsSubmit}},
	}
}

// submitBatch is how many records go in one request.
const submitBatch = 1000

// sourceRecord is one record of the input file and where it stands.
type sourceRecord struct {
	line int
	raw  json.RawMessage
}

func recordsSubmit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("records submit", "credfed records submit [connection flags] FILE",
		`Submits the records in FILE to a district node with a department's client
certificate; the department of every record is the one in the certificate.
FILE is a JSON object or array, NDJSON (one object per line, .ndjson or
.jsonl), or CSV with a header row naming the fields (.csv):
  id, subject, catalog_item, decision_number, occurred_on, decided_on, summary
Records go in batches of 1000; each is answered accepted, duplicate (already
there with the same content) or rejected with its reason. Resubmitting a
file is safe. Exit status 1 if any record was rejected.

Example (with a running demo):
  credfed records submit --demo credfed-demo --node kecheng records.ndjson`, stderr)
	var cf clientFlags
	cf.register(fs, "department")
	if err := parseFlags(fs, args, 1); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErrorf("records submit needs one FILE")
	}
	hc, api, err := cf.client()
	if err != nil {
		return err
	}
	recs, err := readRecordFile(fs.Arg(0))
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return usageErrorf("%s holds no records", fs.Arg(0))
	}
	progress := newProgress(stderr, len(recs))
	counts := map[string]int{}
	var rejected []string
	for start := 0; start < len(recs); start += submitBatch {
		batch := recs[start:min(start+submitBatch, len(recs))]
		var body bytes.Buffer
		for _, r := range batch {
			body.Write(r.raw)
			body.WriteByte('\n')
		}
		var ans struct {
			Results []struct {
				Index  int    `json:"index"`
				ID     string `json:"id"`
				Status string `json:"status"`
				Error  *struct {
					Code, Message, Field string
				} `json:"error"`
			} `json:"results"`
		}
		if _, err := call(hc, "POST", api+"/v1/records", "application/x-ndjson", body.Bytes(), &ans); err != nil {
			progress.done()
			return fmt.Errorf("after %d of %d records: %w", start, len(recs), err)
		}
		for _, res := range ans.Results {
			counts[res.Status]++
			if res.Status == "rejected" && res.Error != nil && res.Index < len(batch) {
				field := ""
				if res.Error.Field != "" {
					field = " [" + res.Error.Field + "]"
				}
				rejected = append(rejected, fmt.Sprintf("  line %d (id %q): %s%s: %s", batch[res.Index].line, res.ID, res.Error.Code, field, res.Error.Message))
			}
		}
		progress.add(len(batch))
	}
	progress.done()
	fmt.Fprintf(stdout, "%d records: %d accepted, %d duplicate, %d rejected\n", len(recs), counts["accepted"], counts["duplicate"], counts["rejected"])
	for _, r := range rejected {
		fmt.Fprintln(stdout, r)
	}
	if len(rejected) > 0 {
		return fmt.Errorf("%d records rejected", len(rejected))
	}
	return nil
}

// readRecordFile reads records from JSON, NDJSON or CSV, keeping each
// one's line number for the report.
func readRecordFile(path string) ([]sourceRecord, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return readCSV(data)
	case ".ndjson", ".jsonl":
		return readNDJSON(data)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out := make([]sourceRecord, len(items))
		for i, it := range items {
			out[i] = sourceRecord{line: i + 1, raw: it}
		}
		return out, nil
	}
	return readNDJSON(data) // one object, or NDJSON without the extension
}

func readNDJSON(data []byte) ([]sourceRecord, error) {
	var out []sourceRecord
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if !json.Valid(b) {
			return nil, fmt.Errorf("line %d is not a JSON object", line)
		}
		out = append(out, sourceRecord{line: line, raw: append(json.RawMessage(nil), b...)})
	}
	return out, sc.Err()
}

var csvFields = map[string]bool{"id": true, "subject": true, "catalog_item": true, "decision_number": true,
	"occurred_on": true, "decided_on": true, "summary": true}

func readCSV(data []byte) ([]sourceRecord, error) {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))))
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("CSV header: %w", err)
	}
	for _, h := range header {
		if !csvFields[strings.TrimSpace(h)] {
			return nil, fmt.Errorf("CSV header names an unknown field %q", h)
		}
	}
	var out []sourceRecord
	for {
		row, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		line, _ := r.FieldPos(0)
		obj := map[string]string{}
		for i, h := range header {
			if i < len(row) {
				obj[strings.TrimSpace(h)] = row[i]
			}
		}
		raw, _ := json.Marshal(obj)
		out = append(out, sourceRecord{line: line, raw: raw})
	}
	return out, nil
}

// progress draws a bar on a terminal and nothing otherwise.
type progress struct {
	w          io.Writer
	total, n   int
	isTerminal bool
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.isTerminal = true
		}
	}
	return p
}

func (p *progress) add(k int) {
	p.n += k
	if !p.isTerminal {
		return
	}
	const width = 40
	filled := width * p.n / max(p.total, 1)
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d", strings.Repeat("#", filled), strings.Repeat(" ", width-filled), p.n, p.total)
}

func (p *progress) done() {
	if p.isTerminal {
		fmt.Fprintln(p.w)
	}
}
