package consensus

import (
	"bytes"
	"io"
	"testing"

	"credfed/certs"
	"credfed/credit"
)

// TestRestoreKeyringCoversTheRestoredState: a coordinator whose log was
// truncated past a key switch and a district's republishing catches up by
// snapshot. State.restore installs the new generation (reads use it)
// before FSM.Restore's reloadKeys: in between, a keyring still at version
// 1 read the subject under version 1 alone while the index held it under
// version 2 alone, and a lookup missed the district (review). The keyring
// is widened to the restored state before the install (FSM.widenKeys).
func TestRestoreKeyringCoversTheRestoredState(t *testing.T) {
	a := switchedToV2(t)
	id := credit.SyntheticPerson(7, credit.NewDate(1980, 1, 2))
	p1, p2 := credit.PseudonymKey(testPseudonymKey).Pseudonym(id), testKey2.Pseudonym(id)
	withdraw := IndexUpdate{Pseudonym: p1, District: kecheng.Region, Summary: credit.IndexSummary{Withdrawn: true}, Seq: 7}
	res := a.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: []IndexUpdate{update(p2, kecheng.Region, 2, 7), withdraw}}}})
	if r, ok := res.(IndexResult); !ok || len(r.Errs) == 0 || r.Errs[0] != nil {
		t.Fatalf("republish: %+v", res)
	}
	if len(lookupOf(t, a.state, p2)) != 1 || len(lookupOf(t, a.state, p1)) != 0 {
		t.Fatal("setup: the subject is not under version 2 alone")
	}
	data := snapshotBytes(t, a)

	both, err := NewPseudonymKeyRing(map[uint32]credit.PseudonymKey{1: testPseudonymKey, 2: testKey2})
	if err != nil {
		t.Fatal(err)
	}
	db := openTestDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	b := newTestFSMWith(t, db, both)
	missed := false
	b.state.failpoint = func(s restoreStep) error {
		if s != stepSwitchSync {
			return nil
		}
		if len(lookupOf(t, b.state, p2)) != 1 {
			t.Error("at switch-sync reads do not use the new generation")
		}
		found := 0
		for _, p := range b.state.Keys().IndexPseudonyms(id) { // what keyring.Read reads, before and after
			found += len(lookupOf(t, b.state, p))
		}
		missed = found == 0
		return nil
	}
	if err := b.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if missed {
		t.Fatalf("between the restored state's install and reloadKeys a lookup under the ring's index pseudonyms %v finds no district (the index holds the subject under version 2 only)", b.state.Keys().Versions())
	}
}
