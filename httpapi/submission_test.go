package httpapi

import (
	"strings"
	"testing"

	"credfed/fault"
)

// TestSubmissionRefusals: a refused line gets encoding/json's refusal as
// a typed fault, naming the field where there is one.
func TestSubmissionRefusals(t *testing.T) {
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
