package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"credfed/api"
)

// Formats of a record file, as `records submit` names them.
const (
	formatJSON   = "JSON"
	formatNDJSON = "NDJSON"
	formatCSV    = "CSV"
)

// sourceRecord is one record of a record file: the line it starts on and
// the JSON object sent for it (compact, on one line).
type sourceRecord struct {
	line int
	raw  json.RawMessage
}

// lineError is why one line of a record file cannot be read.
type lineError struct {
	line int
	msg  string
}

// fileError lists every line of a record file that cannot be read.
type fileError struct {
	name, format string
	lines        []lineError
}

func (e *fileError) Error() string { return e.describe("") }

// describe is the error's text with what follows from it (", so …") after
// the count of lines.
func (e *fileError) describe(consequence string) string {
	var b strings.Builder
	n := len(e.lines)
	fmt.Fprintf(&b, "%s (%s): %d %s cannot be read%s", e.name, e.format, n, plural(n, "line", "lines"), consequence)
	if consequence != "" {
		b.WriteByte(':')
	}
	for _, l := range e.lines {
		fmt.Fprintf(&b, "\n  line %d: %s", l.line, l.msg)
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// csvColumns are the columns a CSV header may name, in the order the help
// lists them, with the field of api.RecordInput each fills.
var csvColumns = []struct {
	name     string
	required bool
	field    func(*api.RecordInput) *string
}{
	{"id", true, func(r *api.RecordInput) *string { return &r.ID }},
	{"subject", true, func(r *api.RecordInput) *string { return &r.Subject }},
	{"catalog_item", true, func(r *api.RecordInput) *string { return &r.CatalogItem }},
	{"decision_number", false, func(r *api.RecordInput) *string { return &r.DecisionNumber }},
	{"occurred_on", true, func(r *api.RecordInput) *string { return &r.OccurredOn }},
	{"decided_on", true, func(r *api.RecordInput) *string { return &r.DecidedOn }},
	{"summary", false, func(r *api.RecordInput) *string { return &r.Summary }},
}

func csvColumnNames() string {
	var names []string
	for _, c := range csvColumns {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}

// readRecordFile reads the records of a file (see readRecords).
func readRecordFile(path string) ([]sourceRecord, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	return readRecords(path, data)
}

// readRecords reads records from the content of a file named name, whose
// format it detects from the content, whatever the name's extension: a
// JSON array of objects or one JSON object (the content starts with [ or
// {, and is one JSON document), NDJSON (one object per line), or CSV whose
// header row names the columns. It returns the format it read; every line
// that cannot be read is in a *fileError, and then no record is returned.
func readRecords(name string, data []byte) ([]sourceRecord, string, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, "", nil
	}
	switch trimmed[0] {
	case '[':
		return readJSONArray(name, data)
	case '{':
		// One object, possibly over several lines, or NDJSON. An object
		// whose first line is only "{" is a pretty-printed document: its
		// syntax errors are reported as such, not line by line.
		if json.Valid(data) {
			recs, format, err := readJSONObject(name, data)
			ext := strings.ToLower(filepath.Ext(name))
			if (ext == ".ndjson" || ext == ".jsonl") && !bytes.Contains(bytes.TrimSpace(data), []byte("\n")) {
				format = formatNDJSON // one line of NDJSON is also one JSON object
			}
			return recs, format, err
		}
		first, _, _ := bytes.Cut(trimmed, []byte("\n"))
		if string(bytes.TrimSpace(first)) == "{" {
			return readJSONObject(name, data)
		}
		return readNDJSON(name, data)
	}
	return readCSV(name, data)
}

// lineAt is the line (from 1) of byte offset off in data.
func lineAt(data []byte, off int64) int {
	off = min(max(off, 0), int64(len(data)))
	return 1 + bytes.Count(data[:off], []byte("\n"))
}

// compactObject checks that raw is a JSON object and returns it on one
// line; the error says what it is instead.
func compactObject(raw []byte) (json.RawMessage, error) {
	var v json.RawMessage
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	if v[0] != '{' {
		return nil, fmt.Errorf("a JSON %s", jsonKind(v[0]))
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func jsonKind(first byte) string {
	switch first {
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func readJSONObject(name string, data []byte) ([]sourceRecord, string, error) {
	start := int64(len(data) - len(bytes.TrimLeft(data, " \t\r\n")))
	raw, err := compactObject(data)
	if err != nil {
		line := lineAt(data, start)
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line = lineAt(data, se.Offset)
		}
		return nil, formatJSON, &fileError{name, formatJSON, []lineError{{line, "not a JSON object: " + err.Error()}}}
	}
	return []sourceRecord{{line: lineAt(data, start), raw: raw}}, formatJSON, nil
}

func readJSONArray(name string, data []byte) ([]sourceRecord, string, error) {
	fail := func(line int, format string, args ...any) ([]sourceRecord, string, error) {
		return nil, formatJSON, &fileError{name, formatJSON, []lineError{{line, fmt.Sprintf(format, args...)}}}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // the opening [
		return fail(1, "not a JSON array: %v", err)
	}
	var out []sourceRecord
	var bad []lineError
	for dec.More() {
		// The element starts after the comma and spaces that follow the
		// previous one.
		off := dec.InputOffset()
		for off < int64(len(data)) && bytes.IndexByte([]byte(" \t\r\n,"), data[off]) >= 0 {
			off++
		}
		line := lineAt(data, off)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fail(line, "element %d of the array is not JSON: %v (the rest of the file cannot be read)", len(out)+len(bad)+1, err)
		}
		obj, err := compactObject(raw)
		if err != nil {
			bad = append(bad, lineError{line, fmt.Sprintf("element %d of the array is not a JSON object: %v", len(out)+len(bad)+1, err)})
			continue
		}
		out = append(out, sourceRecord{line: line, raw: obj})
	}
	if _, err := dec.Token(); err != nil { // the closing ]
		return fail(lineAt(data, dec.InputOffset()), "the array does not end: %v", err)
	}
	if rest := bytes.TrimSpace(data[dec.InputOffset():]); len(rest) > 0 {
		return fail(lineAt(data, dec.InputOffset()), "text after the end of the array")
	}
	if len(bad) > 0 {
		return nil, formatJSON, &fileError{name, formatJSON, bad}
	}
	return out, formatJSON, nil
}

func readNDJSON(name string, data []byte) ([]sourceRecord, string, error) {
	var out []sourceRecord
	var bad []lineError
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		obj, err := compactObject(line)
		if err != nil {
			bad = append(bad, lineError{i + 1, "not a JSON object: " + err.Error()})
			continue
		}
		out = append(out, sourceRecord{line: i + 1, raw: obj})
	}
	if len(bad) > 0 {
		return nil, formatNDJSON, &fileError{name, formatNDJSON, bad}
	}
	return out, formatNDJSON, nil
}

func readCSV(name string, data []byte) ([]sourceRecord, string, error) {
	fail := func(lines ...lineError) ([]sourceRecord, string, error) {
		return nil, formatCSV, &fileError{name, formatCSV, lines}
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1 // the count is checked below, with the line
	header, err := r.Read()
	if err != nil {
		return fail(lineError{1, fmt.Sprintf("not JSON (it does not start with [ or {), and not a CSV header: %v", err)})
	}
	fields := make([]func(*api.RecordInput) *string, len(header))
	seen := map[string]bool{}
	var bad []lineError
	for i, h := range header {
		h = strings.TrimSpace(h)
		for _, c := range csvColumns {
			if c.name == h {
				fields[i] = c.field
			}
		}
		switch {
		case fields[i] == nil:
			bad = append(bad, lineError{1, fmt.Sprintf("the CSV header names an unknown column %q (not JSON either: it does not start with [ or {); the columns are %s", h, csvColumnNames())})
		case seen[h]:
			bad = append(bad, lineError{1, fmt.Sprintf("the CSV header names the column %q twice", h)})
		}
		seen[h] = true
	}
	for _, c := range csvColumns {
		if c.required && !seen[c.name] && len(bad) == 0 {
			bad = append(bad, lineError{1, fmt.Sprintf("the CSV header has no column %q", c.name)})
		}
	}
	if len(bad) > 0 {
		return fail(bad...)
	}
	var out []sourceRecord
	for {
		row, err := r.Read()
		if err == io.EOF {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			bad = append(bad, lineError{pe.StartLine, pe.Err.Error()})
			continue
		}
		if err != nil {
			return nil, formatCSV, err
		}
		line, _ := r.FieldPos(0)
		if len(row) != len(header) {
			bad = append(bad, lineError{line, fmt.Sprintf("%d fields, but the header names %d columns", len(row), len(header))})
			continue
		}
		var rec api.RecordInput
		empty := true
		for i, v := range row {
			v = strings.TrimSpace(v)
			*fields[i](&rec) = v
			empty = empty && v == ""
		}
		if empty {
			continue // a row of empty cells, as spreadsheets export
		}
		raw, err := json.Marshal(rec)
		if err != nil {
			return nil, formatCSV, err
		}
		out = append(out, sourceRecord{line: line, raw: raw})
	}
	if len(bad) > 0 {
		return fail(bad...)
	}
	return out, formatCSV, nil
}
