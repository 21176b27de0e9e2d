package storage

import (
	"testing"

	"credfed/credit"
)

// TestLatestVersionKeptOnce: a submitted record is stored once (under r/,
// no v/ entry); each update moves the superseded version to v/; Versions
// lists every version once, oldest first, also from a store written by
// layout 2 (which kept the latest under v/ too); a resubmission of the
// first version's content is still a duplicate; a deletion leaves no
// version behind.
func TestLatestVersionKeptOnce(t *testing.T) {
	db := openTest(t, Options{})
	v1 := testRecord("K1", 1)
	mustSubmit(t, db, v1, testRecord("K2", 2))
	vp := string(versionPrefix(testDept, "K1"))
	if got := rawKeys(t, db, string([]byte{famVersion, '/'})); len(got) != 0 {
		t.Fatalf("version keys after a submission: %q", got)
	}
	versions := func(want ...int) []credit.Record {
		t.Helper()
		vs, err := db.Versions(testDept, "K1")
		if err != nil {
			t.Fatal(err)
		}
		got := make([]int, len(vs))
		for i, v := range vs {
			got[i] = v.Version
		}
		if len(got) != len(want) {
			t.Fatalf("versions %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("versions %v, want %v", got, want)
			}
		}
		return vs
	}
	versions(1)

	v2 := v1
	v2.Version, v2.Status, v2.Reason = 2, credit.StatusDisputed, "objection"
	if err := db.UpdateRecord(v2); err != nil {
		t.Fatal(err)
	}
	if got := rawKeys(t, db, vp); len(got) != 1 || got[0] != string(versionKey(testDept, "K1", 1)) {
		t.Fatalf("version keys after one update: %q", got)
	}
	vs := versions(1, 2)
	if vs[0].Status != v1.Status || vs[1].Status != credit.StatusDisputed {
		t.Fatalf("versions %+v", vs)
	}
	v3 := v2
	v3.Version, v3.Status, v3.Summary = 3, credit.StatusActive, "corrected summary"
	if err := db.UpdateRecord(v3); err != nil {
		t.Fatal(err)
	}
	if got := rawKeys(t, db, vp); len(got) != 2 {
		t.Fatalf("version keys after two updates: %q", got)
	}
	if vs := versions(1, 2, 3); vs[2].Summary != "corrected summary" {
		t.Fatalf("the latest: %+v", vs[2])
	}

	// As layout 2 left it: the latest under v/ as well.
	setRaw(t, db, versionKey(testDept, "K1", 3), rawValue(t, db, recordKey(testDept, "K1")))
	versions(1, 2, 3)
	v4 := v3
	v4.Version, v4.Summary = 4, "again"
	if err := db.UpdateRecord(v4); err != nil {
		t.Fatal(err)
	}
	versions(1, 2, 3, 4)

	if out := mustSubmit(t, db, v1); out[0] != Duplicate {
		t.Fatalf("the first version again: %v, want Duplicate", out[0])
	}
	other := v1
	other.Summary = "other content"
	if out := mustSubmit(t, db, other); out[0] != Conflict {
		t.Fatalf("other content under the same id: %v, want Conflict", out[0])
	}
	if err := db.DeleteRecord(testDept, "K1"); err != nil {
		t.Fatal(err)
	}
	if got := rawKeys(t, db, vp); len(got) != 0 {
		t.Fatalf("version keys after the deletion: %q", got)
	}
	if vs, err := db.Versions(testDept, "K2"); err != nil || len(vs) != 1 || vs[0].ID != "K2" {
		t.Fatalf("the other record: %+v, %v", vs, err)
	}
}
