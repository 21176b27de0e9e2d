package httpapi

import (
	"bytes"
	"testing"
)

// An NDJSON line of two records, or a record and more text, is refused:
// the line's first record was taken and the rest dropped unsaid, so that
// an upload said "1 accepted" of a line that held two.
func TestHostile2ALineHoldsOneRecord(t *testing.T) {
	one := recordJSON("A", "s")
	for _, line := range [][]byte{
		bytes.Join([][]byte{one, recordJSON("B", "s")}, []byte(" ")),
		append(append([]byte{}, one...), " x"...),
		append(append([]byte{}, one...), "}"...),
	} {
		if sub := submission(line); sub.Err == nil {
			t.Errorf("%s: read as one record %q", line, sub.Record.ID)
		}
	}
	if sub := submission(append(append([]byte{}, one...), " \t"...)); sub.Err != nil || sub.Record.ID != "A" {
		t.Errorf("a record and blanks: %+v", sub.Err)
	}
}
