package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/credit"
)

const csvHeader = "id,subject,catalog_item,decision_number,occurred_on,decided_on,summary\n"

func TestReadRecordsDetectsTheFormatFromTheContent(t *testing.T) {
	s := exampleSubject
	obj := func(id string) string {
		return `{"id":"` + id + `","subject":"` + s + `","catalog_item":"MORAL-MODEL","occurred_on":"2026-10-01","decided_on":"2026-11-02"}`
	}
	cases := []struct {
		name, content, format string
		lines                 []int
	}{
		{"records.txt", csvHeader + "A," + s + ",MORAL-MODEL,,2026-10-01,2026-11-02,好人\nB," + s + ",MORAL-MODEL,,2026-10-01,2026-11-02,\"多行\n摘要\"\n", formatCSV, []int{2, 3}},
		{"records", "\xef\xbb\xbf" + csvHeader + "A," + s + ",MORAL-MODEL,,2026-10-01,2026-11-02,x\n,,,,,,\n", formatCSV, []int{2}},
		{"records.csv", "[\n  " + obj("A") + ",\n\n  " + obj("B") + "\n]\n", formatJSON, []int{2, 4}},
		{"records.json", obj("A") + "\n" + obj("B") + "\n\n" + obj("C") + "\n", formatNDJSON, []int{1, 2, 4}},
		{"records.ndjson", obj("A") + "\n", formatNDJSON, []int{1}},
		{"one.json", "\n{\n  \"id\": \"A\",\n  \"subject\": \"" + s + "\"\n}\n", formatJSON, []int{2}},
	}
	for _, c := range cases {
		recs, format, err := readRecords(c.name, []byte(c.content))
		if err != nil || format != c.format || len(recs) != len(c.lines) {
			t.Errorf("%s: %d records as %s, %v; want %d as %s", c.name, len(recs), format, err, len(c.lines), c.format)
			continue
		}
		for i, r := range recs {
			var in api.RecordInput
			if r.line != c.lines[i] || bytes.ContainsRune(r.raw, '\n') || json.Unmarshal(r.raw, &in) != nil || in.Subject != s {
				t.Errorf("%s: record %d at line %d (want %d): %s", c.name, i, r.line, c.lines[i], r.raw)
			}
		}
	}
	// A CSV record carries the fields of api.RecordInput, and an empty
	// decision number is left out.
	recs, _, _ := readRecords("r.txt", []byte(csvHeader+"A,"+s+",MORAL-MODEL,,2026-10-01,2026-11-02, 多行 \n"))
	if got, want := string(recs[0].raw), `{"id":"A","subject":"`+s+`","catalog_item":"MORAL-MODEL","occurred_on":"2026-10-01","decided_on":"2026-11-02","summary":"多行"}`; got != want {
		t.Errorf("CSV record:\n%s\nwant\n%s", got, want)
	}
}

// fileLines returns the line errors of a *fileError.
func fileLines(t *testing.T, err error) []string {
	t.Helper()
	var fe *fileError
	if !errors.As(err, &fe) {
		t.Fatalf("not a *fileError: %v", err)
	}
	var out []string
	for _, l := range fe.lines {
		out = append(out, "line "+strconv.Itoa(l.line)+": "+l.msg)
	}
	return out
}

func TestReadRecordsReportsEveryBadLine(t *testing.T) {
	good := `{"id":"A","subject":"` + exampleSubject + `","catalog_item":"MORAL-MODEL","occurred_on":"2026-10-01","decided_on":"2026-11-02"}`
	cases := []struct {
		name, content string
		format        string
		want          []string
	}{
		{"bad.ndjson", good + "\n" + good + "\nxyz\n" + good + "\n[1, 2]\n{\"id\": \n\"just a string\"\n" + good + " trailing\n", formatNDJSON, []string{
			"line 3: not a JSON object: invalid character 'x' looking for beginning of value",
			"line 5: not a JSON object: a JSON array",
			"line 6: not a JSON object: unexpected end of JSON input",
			"line 7: not a JSON object: a JSON string",
			"line 8: not a JSON object: invalid character 't' after top-level value",
		}},
		{"bad.csv", csvHeader + "A,1,2,3,4,5,6\nB,1,2,3,4\nC,1,2,3,4,5,6,7,8\nD,\"unterminated,1,2,3,4,5\n", formatCSV, []string{
			"line 3: 5 fields, but the header names 7 columns",
			"line 4: 9 fields, but the header names 7 columns",
			`line 5: extraneous or missing " in quoted-field`,
		}},
		{"header.txt", "id,subject,catalog_itme,occurred_on,decided_on\n", formatCSV, []string{
			`line 1: the CSV header names an unknown column "catalog_itme" (not JSON either: it does not start with [ or {); the columns are id, subject, catalog_item, decision_number, occurred_on, decided_on, summary`,
		}},
		{"short.csv", "id,subject,catalog_item,decided_on\n", formatCSV, []string{`line 1: the CSV header has no column "occurred_on"`}},
		{"array.json", "[\n" + good + ",\n  42,\n" + good + "\n]", formatJSON, []string{"line 3: element 2 of the array is not a JSON object: a JSON number"}},
		{"broken.json", "[\n" + good + ",\n  {\"id\": x}\n]", formatJSON, []string{
			"line 3: element 2 of the array is not JSON: invalid character 'x' looking for beginning of value (the rest of the file cannot be read)",
		}},
		{"pretty.json", "{\n  \"id\": \"A\",\n  \"subject\" \"x\"\n}\n", formatJSON, []string{
			"line 3: not a JSON object: invalid character '\"' after object key",
		}},
	}
	for _, c := range cases {
		recs, format, err := readRecords(c.name, []byte(c.content))
		if recs != nil || format != c.format || err == nil {
			t.Errorf("%s: %d records as %s, err %v", c.name, len(recs), format, err)
			continue
		}
		if got := fileLines(t, err); strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("%s: reported\n  %s\nwant\n  %s", c.name, strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
		}
	}
}

func TestRecordsSubmitReadsCSVNamedTxt(t *testing.T) {
	clearConnectionEnv(t)
	l := testLayout(t)
	f := startFakeNode(t, l)
	dir := writeFakeDemo(t, l, f)
	path := filepath.Join(t.TempDir(), "records.txt")
	content := csvHeader + "T-1," + exampleSubject + ",MORAL-MODEL,,2026-10-01,2026-11-02,好人\n" +
		"T-2," + exampleSubject + ",NO-SUCH-ITEM,罚〔2026〕1号,2026-10-01,2026-11-02,坏行\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	out, e, code := runCLI(t, "records", "submit", path, "--demo", dir, "--node", "kecheng")
	if code != 1 || !strings.Contains(e, "1 record was rejected") {
		t.Fatalf("records submit: exit %d, stderr %q", code, e)
	}
	for _, want := range []string{"read 2 records (CSV) from " + path, "2 records: 1 accepted, 0 duplicate, 1 rejected",
		`line 3 (id "T-2"): unknown_catalog_item [catalog_item]: catalog item is not in catalog version 1`} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
	var first api.RecordInput
	if err := json.Unmarshal(bytes.SplitN(f.lastCall(t).Body, []byte("\n"), 2)[0], &first); err != nil || first.ID != "T-1" || first.Summary != "好人" {
		t.Fatalf("the node received %s (%v)", f.lastCall(t).Body, err)
	}
	// Standard error is not a terminal: no progress bar.
	if strings.Contains(e, "records/s") || strings.Contains(e, "\r") {
		t.Fatalf("a progress bar was drawn on a non-terminal: %q", e)
	}
}

func TestRecordsSubmitWithABadLineSubmitsNothing(t *testing.T) {
	clearConnectionEnv(t)
	l := testLayout(t)
	f := startFakeNode(t, l)
	dir := writeFakeDemo(t, l, f)
	path := filepath.Join(t.TempDir(), "records.ndjson")
	good := `{"id":"N-1","subject":"` + exampleSubject + `","catalog_item":"MORAL-MODEL","occurred_on":"2026-10-01","decided_on":"2026-11-02"}`
	if err := os.WriteFile(path, []byte(good+"\n"+good+"\nxyz\n"+good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, e, code := runCLI(t, "records", "submit", path, "--demo", dir)
	want := "records.ndjson (NDJSON): 1 line cannot be read, so nothing was submitted:\n  line 3: not a JSON object: invalid character 'x' looking for beginning of value"
	if code != 1 || !strings.Contains(e, want) {
		t.Fatalf("exit %d, stderr:\n%s\nwant:\n%s", code, e, want)
	}
	if n := len(f.Calls()); n != 0 {
		t.Fatalf("%d requests reached the node", n)
	}
}

func TestProgressBarShowsRateAndTimeLeft(t *testing.T) {
	var buf bytes.Buffer
	bar := newBar(&buf, 3000, "submitting", 0)
	if err := bar.Add(1000); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "submitting") || !strings.Contains(out, "1000/3000") || !strings.Contains(out, "records/s") ||
		!regexp.MustCompile(`\[\d+s:\d+s\]`).MatchString(out) {
		t.Fatalf("the bar lacks the count, the rate or the time left: %q", out)
	}
	if p := newProgress(&buf, 10, "x"); p.bar != nil {
		t.Fatal("a progress bar on a buffer")
	}
}

// TestSampleRecordFiles reads examples/ with the command's reader and
// checks every record against the default catalog as a test-only
// federation would. Whether the samples are still displayed depends on the
// day the test runs: that is logged, never a failure (a test must not
// start failing on a date).
func TestSampleRecordFiles(t *testing.T) {
	cat := credit.DefaultCatalog()
	now := time.Now()
	today := credit.TodayAt(now)
	ids := map[string]string{}
	for name, format := range map[string]string{"records.json": formatJSON, "records.ndjson": formatNDJSON, "records.csv": formatCSV} {
		path := filepath.Join("..", "..", "examples", name)
		recs, got, err := readRecordFile(path)
		if err != nil || got != format || len(recs) < 3 {
			t.Fatalf("%s: %d records as %s, %v", name, len(recs), got, err)
		}
		for _, r := range recs {
			var in api.RecordInput
			dec := json.NewDecoder(bytes.NewReader(r.raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&in); err != nil {
				t.Fatalf("%s line %d: %v", name, r.line, err)
			}
			if other, dup := ids[in.ID]; dup {
				t.Errorf("%s line %d: id %s is also in %s", name, r.line, in.ID, other)
			}
			ids[in.ID] = name
			occurred, err1 := credit.ParseDate(in.OccurredOn)
			decided, err2 := credit.ParseDate(in.DecidedOn)
			if err := errors.Join(err1, err2); err != nil {
				t.Fatalf("%s line %d: %v", name, r.line, err)
			}
			rec := credit.Record{ID: in.ID, Subject: in.Subject, CatalogItem: in.CatalogItem, DecisionNumber: in.DecisionNumber,
				OccurredOn: occurred, DecidedOn: decided, Summary: in.Summary,
				Department: "market-supervision", District: "zhejiang/quzhou/kecheng"}
			if _, err := cat.Accept(rec, now, credit.ParseOptions{TestOnly: true}); err != nil {
				t.Errorf("%s line %d (%s): refused: %v", name, r.line, in.ID, err)
				continue
			}
			it, _ := cat.Item(in.CatalogItem)
			if until := it.DisplayPeriod.AddTo(decided); until <= today {
				t.Logf("%s line %d (%s): no longer displayed since %s; lookups will not show it: give the samples newer dates", name, r.line, in.ID, until)
			}
			if it.DisplayPeriod.AddTo(decided) < decided.AddMonths(36) {
				t.Errorf("%s line %d (%s): %s is displayed for %v, less than three years", name, r.line, in.ID, it.Code, it.DisplayPeriod)
			}
		}
	}
}
