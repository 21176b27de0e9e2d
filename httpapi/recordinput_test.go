package httpapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"credfed/api"
	"credfed/fault"
)

// recordInputCases are submitted lines of every shape: the ones the fast
// path reads and the ones it must leave to encoding/json.
var recordInputCases = []string{
	// Read by the fast path.
	`{"id":"A","subject":"990000198001010013","catalog_item":"FOOD-DRUG-PENALTY","decision_number":"X","occurred_on":"2026-01-01","decided_on":"2026-01-02","summary":"s"}`,
	` { "id" : "A" , "summary" : "大" } `,
	"{\"id\":\"A\",\r\n\t\"department\":\"d\",\"district\":\"x\"}\n",
	`{}`,
	`{"summary":""}`,
	`{"summary":"日本語 and ascii ✓"}`,
	`{"summary":"a \"quoted\" word\\ \/ \b\f\n\r\t"}`,
	`{"summary":"\u00e9\u003c\u0000\uFFFD大\u5927"}`,
	`{"i\u0064":"A"}`,
	// Left to encoding/json.
	`{"id":"A","id":"B"}`,
	`{"ID":"A"}`,
	`{"Summary":"A"}`,
	`{"summary":"\ud800"}`,
	`{"summary":"\ud83d\ude00"}`,
	`{"summary":"\x41"}`,
	`{"summary":"\u12"}`,
	`{"summary":"\u12g4"}`,
	`{"summary":"\`,
	"{\"summary\":\"a\\u00e9\xff\"}",
	"{\"summary\":\"a\\n\x01\"}",
	"{\"summary\":\"bad \xff utf8\"}",
	"{\"summary\":\"tab\tinside\"}",
	`{"summary":null}`,
	`{"summary":1}`,
	`{"summary":true}`,
	`{"summary":{"a":"b"}}`,
	`{"summary":["a"]}`,
	`{"nickname":"A"}`,
	`{"id":"A",}`,
	`{"id":"A"`,
	`{"id":"A" "subject":"B"}`,
	`{"id" "A"}`,
	`{"id":"A"} {"id":"B"}`,
	`{"id":"A"} x`,
	`{"id":"A"}}`,
	`{"id":"A"},`,
	`["id"]`,
	`"id"`,
	``,
	`{`,
	`{"`,
	`{"id`,
	`{"id":`,
	`{"id":"`,
	"\ufeff{\"id\":\"A\"}",
	`{,}`,
	`{"id":'A'}`,
}

// nFast is how many of recordInputCases, the first, the fast path reads.
const nFast = 9

// TestFastRecordInputAgrees: whatever the fast path reads, encoding/json
// (as the edge always read records) reads the same and accepts; the
// common shapes are read by the fast path.
func TestFastRecordInputAgrees(t *testing.T) {
	fast := 0
	for i, c := range recordInputCases {
		got, ok := fastRecordInput([]byte(c))
		want, err := decodeRecordInput([]byte(c))
		if ok {
			fast++
			if err != nil {
				t.Errorf("%q: fast path read it, encoding/json refused it: %v", c, err)
			} else if got != want {
				t.Errorf("%q: fast path read %+v, encoding/json %+v", c, got, want)
			}
		}
		if i < nFast && !ok {
			t.Errorf("%q: not read by the fast path", c)
		}
		if i >= nFast && ok {
			t.Errorf("%q: read by the fast path, which must leave it to encoding/json", c)
		}
	}
	if fast != nFast {
		t.Errorf("fast path read %d cases, want %d", fast, nFast)
	}
	// What clients send: the API's own encoding of a record.
	for _, b := range [][]byte{recordJSON("A", "s"), recordJSON("B", "x < y & 大")} {
		if _, ok := fastRecordInput(b); !ok {
			t.Errorf("%s: not read by the fast path", b)
		}
	}
}

// TestFastRecordInputKnowsEveryField: every field of api.RecordInput is a
// string the fast path reads under its JSON name (a field it did not know
// would only send every record naming it the slow way).
func TestFastRecordInputKnowsEveryField(t *testing.T) {
	rt := reflect.TypeOf(api.RecordInput{})
	for i := range rt.NumField() {
		f := rt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Type.Kind() != reflect.String {
			t.Errorf("field %s is a %s, not a string", f.Name, f.Type)
			continue
		}
		var in api.RecordInput
		p, _ := recordInputField(&in, []byte(name))
		if p == nil {
			t.Errorf("field %s (%q) unknown to the fast path", f.Name, name)
			continue
		}
		*p = "v"
		if reflect.ValueOf(in).Field(i).String() != "v" {
			t.Errorf("%q sets another field than %s", name, f.Name)
		}
	}
}

// TestSubmissionRefusalsUnchanged: a refused line gets the refusal the
// edge gave before the fast path (encoding/json's, as a typed fault).
func TestSubmissionRefusalsUnchanged(t *testing.T) {
	for _, c := range []struct{ line, field, msg string }{
		{`{"nickname":"A"}`, "nickname", `unknown field "nickname"`},
		{`{"summary":1}`, "summary", "field summary must be a string"},
		{`{"id":"A"`, "", "request body ends in the middle of a JSON value"},
		{`{"id":"A",}`, "", "malformed JSON at byte 11"},
		{`{"id":"A"} {"id":"B"}`, "", "followed by more"},
		{`{"id":"A","occurred_on":"2026-01-01"}`, "decided_on", "required (YYYY-MM-DD)"},
		{`{"id":"A","occurred_on":"2026-02-30","decided_on":"2026-01-01"}`, "occurred_on", "must be a real day"},
	} {
		sub := submission([]byte(c.line))
		e := fault.As(sub.Err)
		if e == nil || e.Kind != fault.BadRequest || e.Field != c.field || !strings.Contains(e.Message, c.msg) {
			t.Errorf("%s: refused with %#v, want a bad request on %q saying %q", c.line, sub.Err, c.field, c.msg)
		}
	}
}

// FuzzFastRecordInput: the fast path never reads a line otherwise than
// encoding/json does.
func FuzzFastRecordInput(f *testing.F) {
	for _, c := range recordInputCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := fastRecordInput(b)
		if !ok {
			return
		}
		want, err := decodeRecordInput(bytes.Clone(b))
		if err != nil {
			t.Fatalf("%q: fast path read it, encoding/json refused it: %v", b, err)
		}
		if got != want {
			t.Fatalf("%q: fast path read %+v, encoding/json %+v", b, got, want)
		}
		var again api.RecordInput
		if err := json.Unmarshal(b, &again); err != nil || again != got {
			t.Fatalf("%q: json.Unmarshal reads %+v, %v", b, again, err)
		}
	})
}
