package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"credfed/credit"
)

// TestExampleBatchFileIsValid: examples/applicants.csv, which the README's
// tour checks as a batch, parses into 1,000 rows of valid synthetic
// identifiers, each with its reference.
func TestExampleBatchFileIsValid(t *testing.T) {
	rows, err := readBatchFile(filepath.Join("..", "..", "examples", "applicants.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1000 {
		t.Fatalf("%d rows", len(rows))
	}
	opt := credit.ParseOptions{TestOnly: true, Today: credit.TodayAt(time.Now())}
	for i, r := range rows {
		if _, err := credit.ParseSubject(r.Subject, opt); err != nil || r.Reference == "" || r.Authorization == "" {
			t.Fatalf("row %d: %+v: %v", i, r, err)
		}
	}
}

// TestReadBatchFileFormats: the same rows as CSV, NDJSON and a JSON array;
// a CSV without the subject column and a row with an unknown field are
// refused.
func TestReadBatchFileFormats(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s := credit.SyntheticPerson(5, credit.NewDate(1980, 1, 1))
	for name, body := range map[string]string{
		"a.csv":    "\ufeffSubject, Reference\n" + s + ",R-1\n" + s + ",R-2\n",
		"a.ndjson": `{"subject":"` + s + `","reference":"R-1"}` + "\n\n" + `{"subject":"` + s + `","reference":"R-2"}` + "\n",
		"a.json":   `[{"subject":"` + s + `","reference":"R-1"},{"subject":"` + s + `","reference":"R-2"}]`,
	} {
		rows, err := readBatchFile(write(name, body))
		if err != nil || len(rows) != 2 || rows[0].Subject != s || rows[1].Reference != "R-2" {
			t.Errorf("%s: %+v %v", name, rows, err)
		}
	}
	for name, body := range map[string]string{
		"b.csv":    "id,reference\n" + s + ",R\n",
		"b.ndjson": `{"subject":"` + s + `","reference":"R","extra":1}` + "\n",
	} {
		if _, err := readBatchFile(write(name, body)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
