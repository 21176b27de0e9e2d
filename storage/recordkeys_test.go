package storage

import (
	"bytes"
	"testing"
)

// TestKeysOfIsTheLayout: the keys SubmitRecords builds ahead in one
// allocation are the layout's own (recordKey, versionKey of version 1,
// subjectKey, idKey, outboxKey), each capped so that appending to one
// cannot write over the next.
func TestKeysOfIsTheLayout(t *testing.T) {
	for _, r := range []struct{ dept, id, subject string }{
		{testDept, "R1", testSubject(1)},
		{"d", "i", "s"},
		{"部门", "记录-1", "主体"},
	} {
		rec := testRecord(r.id, 0)
		rec.Department, rec.Subject = r.dept, r.subject
		k := keysOf(&rec)
		for _, c := range []struct {
			name      string
			got, want []byte
		}{
			{"record", k.record, recordKey(r.dept, r.id)},
			{"version", k.version, versionKey(r.dept, r.id, 1)},
			{"subject", k.subject, subjectKey(r.subject, r.dept, r.id)},
			{"id", k.id, idKey(r.id, r.dept)},
			{"outbox", k.outbox, outboxKey(r.subject)},
		} {
			if !bytes.Equal(c.got, c.want) {
				t.Errorf("%v: %s key %q, want %q", r, c.name, c.got, c.want)
			}
			if cap(c.got) != len(c.got) {
				t.Errorf("%v: %s key has room for %d more bytes", r, c.name, cap(c.got)-len(c.got))
			}
		}
	}
}
