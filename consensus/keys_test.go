package consensus

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"credfed/certs"
	"credfed/credit"
)

// The key rotation's tests: the keyring, the sealed key, the three
// commands (who may issue them, what each refuses), what districts keep
// of them, and their snapshots.

var (
	testKey2 = credit.PseudonymKey(bytes.Repeat([]byte{0x7a}, 32))
	testKey3 = credit.PseudonymKey(bytes.Repeat([]byte{0x3c}, 32))
	// keyRegions are testRegion with every node joined (an exchange
	// address): a rotation waits for joined nodes only.
	keyRegions = func() []Region {
		out := slices.Clone(testRegion)
		for i := range out {
			out[i].Exchange = fmt.Sprintf("127.0.0.1:%d", 7000+i)
		}
		return out
	}()
)

func initKeyFederation(t *testing.T, fs ...*testFSM) {
	t.Helper()
	for _, f := range fs {
		if err := errOf(f.apply(t, CmdFederationInit, province, provOp, FederationInit{Regions: keyRegions, Catalog: credit.DefaultCatalog()})); err != nil {
			t.Fatal(err)
		}
	}
}

// applyAll applies one command to every FSM (one log, several replicas)
// and returns the results.
func applyAll(t *testing.T, typ CommandType, proposer, actor certs.Identity, body any, fs ...*testFSM) []error {
	t.Helper()
	var out []error
	for _, f := range fs {
		out = append(out, errOf(f.apply(t, typ, proposer, actor, body)))
	}
	return out
}

func mustAll(t *testing.T, errs []error) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
}

func refusedAll(t *testing.T, errs []error, reason error, what string) {
	t.Helper()
	for i, err := range errs {
		if !errors.Is(err, reason) {
			t.Fatalf("%s: replica %d answered %v, want %v", what, i, err, reason)
		}
	}
}

func sealV2(t *testing.T, keys *IndexKeys) KeyInstall {
	t.Helper()
	in, err := keys.SealPseudonymKey(2, testKey2, fed)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestKeyRing_VersionsAndPseudonyms(t *testing.T) {
	ring, err := NewPseudonymKeyRing(map[uint32]credit.PseudonymKey{1: testPseudonymKey, 2: testKey2})
	if err != nil {
		t.Fatal(err)
	}
	id := credit.SyntheticPerson(7, credit.NewDate(1980, 1, 2))
	p1, p2 := credit.PseudonymKey(testPseudonymKey).Pseudonym(id), testKey2.Pseudonym(id)
	if ring.Current() != 1 || ring.Pseudonym(id) != p1 || !reflect.DeepEqual(ring.Versions(), []uint32{1, 2}) {
		t.Fatalf("a ring is current at version 1 until the state switches it: %v", ring)
	}
	if got := ring.IndexPseudonyms(id); !reflect.DeepEqual(got, []credit.Pseudonym{p1}) {
		t.Fatalf("index pseudonyms before the switch %v (a version not current is not used yet)", got)
	}
	if err := ring.setCurrent(2); err != nil {
		t.Fatal(err)
	}
	// The switch applied, the state's floor not yet in the keyring (it is
	// after the commit): the index still holds the subjects under version
	// 1, so it is read under both (a lookup of a subject no district had
	// republished yet found nothing: TestKeyRotationUnderLookupLoad).
	if got := ring.IndexPseudonyms(id); !reflect.DeepEqual(got, []credit.Pseudonym{p1, p2}) {
		t.Fatalf("index pseudonyms between the switch and the floor %v, want both versions", got)
	}
	ring.setFloor(1)
	if got := ring.IndexPseudonyms(id); !reflect.DeepEqual(got, []credit.Pseudonym{p1, p2}) || ring.Pseudonym(id) != p2 {
		t.Fatalf("mid-rotation index pseudonyms %v, current %v", got, ring.Pseudonym(id))
	}
	ring.setFloor(2)
	if got := ring.IndexPseudonyms(id); !reflect.DeepEqual(got, []credit.Pseudonym{p2}) {
		t.Fatalf("after the rotation the index is read under version 2 only, got %v", got)
	}
	// A restore widens, never narrows (FSM.widenKeys).
	ring.lowerFloor(0)
	ring.lowerFloor(3)
	if got := ring.IndexPseudonyms(id); !reflect.DeepEqual(got, []credit.Pseudonym{p2}) {
		t.Fatalf("a floor lowered to 0 or raised to 3: %v", got)
	}
	ring.lowerFloor(1)
	if got := ring.IndexPseudonyms(id); !reflect.DeepEqual(got, []credit.Pseudonym{p1, p2}) {
		t.Fatalf("a floor lowered to 1: %v", got)
	}
	ring.setFloor(2)
	if got := ring.AuditPseudonyms(id); !reflect.DeepEqual(got, []credit.Pseudonym{p1, p2}) {
		t.Fatalf("audit pseudonyms %v: the audit log is searched under every retained version", got)
	}
	// Adding again is idempotent; another key for a held version is not.
	if err := ring.add(2, testKey2); err != nil {
		t.Fatal(err)
	}
	if err := ring.add(2, testKey3); err == nil {
		t.Fatal("a second key for version 2 was taken")
	}
	if err := ring.add(3, testKey3[:16]); !errors.Is(err, credit.ErrBadPseudonymKey) {
		t.Fatalf("a short key: %v", err)
	}
	if err := ring.setCurrent(9); !errors.Is(err, errUnknownIndexKey) {
		t.Fatalf("current set to a version not held: %v", err)
	}
	if _, err := NewPseudonymKeyRing(map[uint32]credit.PseudonymKey{2: testKey2}); err == nil {
		t.Fatal("a ring without version 1")
	}
	// A clone moves on its own.
	c := ring.clone()
	if err := c.add(3, testKey3); err != nil || ring.holds(3) || !c.holds(3) {
		t.Fatalf("clone shares its versions: %v", err)
	}
	if s := fmt.Sprintf("%v %+v %#v", ring, ring, ring.pseudonym[2]); strings.Contains(s, fmt.Sprintf("%x", []byte(testKey2))) || strings.Contains(s, string(testKey2)) {
		t.Fatal("the ring prints key material")
	}
}

func TestSealedPseudonymKey_OpensOnlyAsSealed(t *testing.T) {
	in := sealV2(t, testIndexKeys)
	if in.SealedWith != 1 || in.Version != 2 || len(in.Sealed) != sealedKeySize || bytes.Contains(in.Sealed, testKey2) {
		t.Fatalf("sealed %+v", in)
	}
	got, err := testIndexKeys.openPseudonymKey(in, fed)
	if err != nil || !bytes.Equal(got, testKey2) {
		t.Fatalf("open: %v", err)
	}
	for name, bad := range map[string]KeyInstall{
		"flipped byte":   func() KeyInstall { b := in; b.Sealed = slices.Clone(in.Sealed); b.Sealed[30] ^= 1; return b }(),
		"other version":  {Version: 3, SealedWith: 1, Sealed: in.Sealed},
		"unknown sealer": {Version: 2, SealedWith: 5, Sealed: in.Sealed},
		"cut":            {Version: 2, SealedWith: 1, Sealed: in.Sealed[:40]},
	} {
		if _, err := testIndexKeys.openPseudonymKey(bad, fed); err == nil {
			t.Errorf("%s opened", name)
		}
	}
	if _, err := testIndexKeys.openPseudonymKey(in, "other"); err == nil {
		t.Error("opened under another federation")
	}
	if _, err := testIndexKeys.SealPseudonymKey(2, testKey2[:31], fed); !errors.Is(err, credit.ErrBadPseudonymKey) {
		t.Errorf("sealed a short key: %v", err)
	}
}

// TestKeyRotation_Commands walks a rotation through the FSM of a
// coordinator and of a district applying the same log: who may issue each
// step, what each refuses until its time, what the district keeps.
func TestKeyRotation_Commands(t *testing.T) {
	a, d := newTestFSM(t), newDistrictFSM(t)
	initKeyFederation(t, a, d)
	in := sealV2(t, a.state.Keys())

	// Only an operator of the province, through a coordinator node.
	refusedAll(t, applyAll(t, CmdKeyInstall, city, cityOp, in, a, d), ErrForbidden, "a city's operator")
	refusedAll(t, applyAll(t, CmdKeyInstall, kecheng, provOp, in, a, d), ErrForbidden, "relayed by a district")
	refusedAll(t, applyAll(t, CmdKeyInstall, province, coordUser, in, a, d), ErrForbidden, "a coordinator user")
	refusedAll(t, applyAll(t, CmdKeyInstall, province, provOp, KeyInstall{Version: 3, SealedWith: 1, Sealed: in.Sealed}, a, d), ErrInvalid, "a version that is not the next")
	refusedAll(t, applyAll(t, CmdKeyInstall, province, provOp, KeyInstall{Version: 2, SealedWith: 1, Sealed: in.Sealed[:8]}, a, d), ErrInvalid, "a short seal")
	// The leader's check refuses a key that does not open (it would stop
	// every coordinator); nothing is proposed.
	bad := in
	bad.Sealed = slices.Clone(in.Sealed)
	bad.Sealed[40] ^= 1
	if err := a.check(commandOf(t, CmdKeyInstall, province, provOp, bad)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("check of a key that does not open: %v", err)
	}
	if a.state.Keys().holds(2) {
		t.Fatal("refused installs added a version")
	}

	mustAll(t, applyAll(t, CmdKeyInstall, province, provOp, in, a, d))
	refusedAll(t, applyAll(t, CmdKeyInstall, province, provOp, in, a, d), ErrConflict, "the same version again")
	if !a.state.Keys().holds(2) || a.state.Keys().Current() != 1 || a.state.KeyCurrent() != 1 {
		t.Fatalf("after the install the coordinator holds version 2, current 1: %v", a.state.Keys())
	}
	if d.state.Keys() != nil || d.state.KeyCurrent() != 1 {
		t.Fatal("the district holds keys")
	}
	checkNoKey(t, d, testKey2)

	// The switch waits for every joined coordinator.
	errs := applyAll(t, CmdKeySwitch, province, provOp, KeySwitch{Version: 2}, a, d)
	refusedAll(t, errs, ErrConflict, "a switch before the coordinators hold the version")
	if !strings.Contains(errs[0].Error(), "zhejiang/quzhou") || !strings.Contains(errs[0].Error(), "2 coordinators") {
		t.Fatalf("the refusal names whom it waits for: %v", errs[0])
	}
	refusedAll(t, applyAll(t, CmdKeyProgress, kecheng, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyHeld}, a, d), ErrForbidden, "a district holding a key")
	refusedAll(t, applyAll(t, CmdKeyProgress, province, certs.Identity{}, KeyProgress{Version: 3, Stage: KeyHeld}, a, d), ErrNotFound, "held, of a version not installed")
	refusedAll(t, applyAll(t, CmdKeyProgress, province, certs.Identity{}, KeyProgress{Version: 2, Stage: "done"}, a, d), ErrInvalid, "an unknown stage")
	refusedAll(t, applyAll(t, CmdKeyProgress, certs.Identity{Federation: fed, Role: certs.City, Region: "zhejiang/hangzhou"}, certs.Identity{},
		KeyProgress{Version: 2, Stage: KeyHeld}, a, d), ErrForbidden, "an unregistered node")
	mustAll(t, applyAll(t, CmdKeyProgress, province, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyHeld}, a, d))
	mustAll(t, applyAll(t, CmdKeyProgress, province, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyHeld}, a, d)) // again: no change
	st := keyStatusOf(t, a)
	if v := st.Versions[1]; v.Phase != KeyPhaseInstalling || !reflect.DeepEqual(v.AwaitingHold, []string{city.Region}) || !reflect.DeepEqual(v.Held, []string{province.Region}) {
		t.Fatalf("status while installing %+v", v)
	}
	refusedAll(t, applyAll(t, CmdKeySwitch, province, provOp, KeySwitch{Version: 2}, a, d), ErrConflict, "a switch with the city not holding")
	mustAll(t, applyAll(t, CmdKeyProgress, city, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyHeld}, a, d))
	if v := keyStatusOf(t, a).Versions[1]; v.Phase != KeyPhaseInstalled {
		t.Fatalf("phase once every coordinator holds it: %+v", v)
	}
	refusedAll(t, applyAll(t, CmdKeySwitch, province, cityOp, KeySwitch{Version: 2}, a, d), ErrForbidden, "a switch by a city's operator")
	refusedAll(t, applyAll(t, CmdKeySwitch, province, provOp, KeySwitch{Version: 3}, a, d), ErrNotFound, "a switch to a version not installed")
	refusedAll(t, applyAll(t, CmdKeyProgress, kecheng, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyRepublished}, a, d), ErrConflict, "republished before the switch")

	mustAll(t, applyAll(t, CmdKeySwitch, province, provOp, KeySwitch{Version: 2}, a, d))
	mustAll(t, applyAll(t, CmdKeySwitch, province, provOp, KeySwitch{Version: 2}, a, d)) // again: no change
	if a.state.Keys().Current() != 2 || a.state.KeyCurrent() != 2 || d.state.KeyCurrent() != 2 || a.state.KeyFloor() != 1 {
		t.Fatalf("after the switch: ring %v, current %d/%d, floor %d", a.state.Keys(), a.state.KeyCurrent(), d.state.KeyCurrent(), a.state.KeyFloor())
	}
	id := credit.SyntheticPerson(8, credit.NewDate(1990, 3, 4))
	if got := a.state.Keys().IndexPseudonyms(id); len(got) != 2 {
		t.Fatalf("mid-rotation a coordinator reads both versions: %v", got)
	}
	// A new index batch is sealed under version 2 and still opens.
	if res := a.applySealed(t, a.state.Keys(), IndexBatch{Groups: []IndexGroup{{Proposer: kecheng,
		Updates: []IndexUpdate{update(testKey2.Pseudonym(id), kecheng.Region, 1, 5)}}}}).(IndexResult); res.Errs[0] != nil {
		t.Fatal(res.Errs[0])
	}

	// Each district reports its republishing, of the current version only.
	refusedAll(t, applyAll(t, CmdKeyProgress, province, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyRepublished}, a, d), ErrForbidden, "a coordinator republishing")
	refusedAll(t, applyAll(t, CmdKeyProgress, kecheng, certs.Identity{}, KeyProgress{Version: 1, Stage: KeyRepublished}, a, d), ErrConflict, "republished under an old version")
	mustAll(t, applyAll(t, CmdKeyProgress, kecheng, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyRepublished}, a, d))
	// No new rotation until the last is complete.
	in3, err := a.state.Keys().SealPseudonymKey(3, testKey3, fed)
	if err != nil {
		t.Fatal(err)
	}
	errs = applyAll(t, CmdKeyInstall, province, provOp, in3, a, d)
	refusedAll(t, errs, ErrConflict, "a rotation before the last is complete")
	if !strings.Contains(errs[0].Error(), qujiang.Region) {
		t.Fatalf("the refusal names the district it waits for: %v", errs[0])
	}
	mustAll(t, applyAll(t, CmdKeyProgress, qujiang, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyRepublished}, a, d))
	if a.state.KeyFloor() != 2 || d.state.KeyFloor() != 2 || len(a.state.Keys().IndexPseudonyms(id)) != 1 {
		t.Fatalf("after every district republished: floor %d/%d", a.state.KeyFloor(), d.state.KeyFloor())
	}
	st = keyStatusOf(t, a)
	if st.Current != 2 || st.IndexFloor != 2 || st.Versions[0].Phase != KeyPhaseRetired || st.Versions[1].Phase != KeyPhaseCurrent ||
		st.Versions[1].InstalledBy != provOp.String() || st.Versions[1].SwitchedIndex == 0 {
		t.Fatalf("status after the rotation %+v", st)
	}
	if dst := keyStatusOf(t, d); !reflect.DeepEqual(dst, st) {
		t.Fatalf("the district's status %+v differs from the coordinator's %+v", dst, st)
	}
	// The next rotation seals under version 2.
	if in3.SealedWith != 2 {
		t.Fatalf("version 3 sealed with %d", in3.SealedWith)
	}
	mustAll(t, applyAll(t, CmdKeyInstall, province, provOp, in3, a, d))
	if !a.state.Keys().holds(3) {
		t.Fatal("version 3 not installed")
	}
	checkNoKey(t, d, testKey2, testKey3)
}

// TestIndexWithdrawal: a withdrawal deletes the entry, counts nothing, and
// an older update does not undo it.
func TestIndexWithdrawal(t *testing.T) {
	f := newTestFSM(t)
	initKeyFederation(t, f)
	old, cur := pseudo(1), pseudo(2)
	group := func(us ...IndexUpdate) any {
		return f.apply(t, CmdIndexBatch, province, certs.Identity{}, IndexBatch{Groups: []IndexGroup{{Proposer: kecheng, Updates: us}}})
	}
	group(update(old, kecheng.Region, 2, 3))
	withdraw := IndexUpdate{Pseudonym: old, District: kecheng.Region, Summary: credit.IndexSummary{Withdrawn: true}, Seq: 7}
	if res := group(update(cur, kecheng.Region, 2, 7), withdraw).(IndexResult); res.Errs[0] != nil {
		t.Fatal(res.Errs[0])
	}
	if e := lookupOf(t, f.state, old); len(e) != 0 {
		t.Fatalf("withdrawn entry still there: %+v", e)
	}
	if e := lookupOf(t, f.state, cur); len(e) != 1 || e[0].Summary.Negative != 2 {
		t.Fatalf("republished entry %+v", e)
	}
	// Withdrawing again, or an older update, changes nothing.
	group(withdraw)
	group(update(old, kecheng.Region, 2, 5))
	if e := lookupOf(t, f.state, old); len(e) != 1 {
		// An older update (seq 5 < 7) finds no entry to compare with: it
		// is written. The district never sends one (it publishes under the
		// current version only); this pins the documented behaviour.
		t.Fatalf("an older update after a withdrawal: %+v", e)
	}
	bad := withdraw
	bad.Seq, bad.Summary.Negative = 9, 1
	if res := group(bad).(IndexResult); !errors.Is(res.Errs[0], ErrInvalid) {
		t.Fatalf("a withdrawal that counts records: %v", res.Errs[0])
	}
}

// TestKeyInstall_DoesNotOpenStopsACoordinator: a sealed key that reaches a
// coordinator's log and does not open is corruption (the leader checked
// it opens): the FSM stops, as for a sealed index batch.
func TestKeyInstall_DoesNotOpenStopsACoordinator(t *testing.T) {
	f := newTestFSM(t)
	initKeyFederation(t, f)
	in := sealV2(t, f.state.Keys())
	in.Sealed[30] ^= 1
	defer func() {
		if p := recover(); p == nil || !strings.Contains(fmt.Sprint(p), "corrupt") {
			t.Fatalf("panic %v", p)
		}
	}()
	f.apply(t, CmdKeyInstall, province, provOp, in)
}

func commandOf(t *testing.T, typ CommandType, proposer, actor certs.Identity, body any) Command {
	t.Helper()
	data, err := EncodeCommand(typ, Envelope{Proposer: proposer, Actor: actor, At: joinAt}, body)
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeCommand(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keyStatusOf(t *testing.T, f *testFSM) KeyStatus {
	t.Helper()
	st, err := f.state.KeyStatus()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// checkNoKey checks that no key or value of f's database holds any of the
// keys, or the index keys derived from them, raw or in hex.
func checkNoKey(t *testing.T, f *testFSM, keys ...credit.PseudonymKey) {
	t.Helper()
	var needles [][]byte
	for _, k := range keys {
		ik, _ := DeriveIndexKey(k)
		needles = append(needles, k, ik, []byte(fmt.Sprintf("%x", []byte(k))), []byte(fmt.Sprintf("%x", ik)))
	}
	seen := 0
	err := f.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if bytes.HasPrefix(k, prefixKeySealed) {
				t.Errorf("a node without the index keys keeps the sealed key %q", k)
			}
			for _, n := range needles {
				if bytes.Contains(k, n) || bytes.Contains(v, n) {
					t.Errorf("key material under %q", k)
				}
			}
			seen++
		}
		return nil
	})
	if err != nil || seen < 5 {
		t.Fatalf("scanned %d keys: %v", seen, err)
	}
}

// restoredWith snapshots a and restores it into a fresh coordinator
// holding keys, and checks the whole state came across.
func restoredWith(t *testing.T, a *testFSM, keys *IndexKeys) *testFSM {
	t.Helper()
	data := snapshotBytes(t, a)
	db := openTestDB(t, t.TempDir())
	t.Cleanup(func() { db.Close() })
	b := newTestFSMWith(t, db, keys)
	if err := b.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if got, want := dumpState(t, b.db), dumpState(t, a.db); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored state differs: %d keys, want %d", len(got), len(want))
	}
	return b
}

// switchedToV2 is a federation's FSM that installed version 2, every
// coordinator holding it, and switched to it.
func switchedToV2(t *testing.T) *testFSM {
	t.Helper()
	a := newTestFSM(t)
	initKeyFederation(t, a)
	installV2(t, a)
	for _, n := range []certs.Identity{province, city} {
		a.apply(t, CmdKeyProgress, n, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyHeld})
	}
	if err := errOf(a.apply(t, CmdKeySwitch, province, provOp, KeySwitch{Version: 2})); err != nil {
		t.Fatal(err)
	}
	return a
}

func installV2(t *testing.T, fs ...*testFSM) {
	t.Helper()
	mustAll(t, applyAll(t, CmdKeyInstall, province, provOp, sealV2(t, fs[0].state.Keys()), fs...))
}

// A coordinator that catches up by snapshot after an install (its log
// truncated past it) receives the new version from the state; a district
// keeps the clear record only.
func TestFSM_SnapshotRestore_KeyInstall(t *testing.T) {
	a := newTestFSM(t)
	initKeyFederation(t, a)
	installV2(t, a)
	b := restoredCopy(t, a)
	if got, ok := b.state.Keys().PseudonymKey(2); !ok || !bytes.Equal(got, testKey2) || b.state.Keys().Current() != 1 {
		t.Fatalf("restored coordinator holds %v (current %d)", ok, b.state.Keys().Current())
	}
	if got, want := keyStatusOf(t, b), keyStatusOf(t, a); !reflect.DeepEqual(got, want) {
		t.Fatalf("status %+v, want %+v", got, want)
	}
	d := newDistrictFSM(t)
	if err := d.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
		t.Fatal(err)
	}
	if st := keyStatusOf(t, d); len(st.Versions) != 2 || st.Versions[1].Version != 2 {
		t.Fatalf("district status %+v", st)
	}
	checkNoKey(t, d, testKey2)
}

func TestFSM_SnapshotRestore_KeyProgress(t *testing.T) {
	a := newTestFSM(t)
	initKeyFederation(t, a)
	installV2(t, a)
	for _, n := range []certs.Identity{province, city} {
		if err := errOf(a.apply(t, CmdKeyProgress, n, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyHeld})); err != nil {
			t.Fatal(err)
		}
	}
	b := restoredCopy(t, a)
	if st := keyStatusOf(t, b); st.Versions[1].Phase != KeyPhaseInstalled || len(st.Versions[1].Held) != 2 {
		t.Fatalf("restored progress %+v", st.Versions[1])
	}
	// And the restored replica may switch.
	if err := errOf(b.apply(t, CmdKeySwitch, province, provOp, KeySwitch{Version: 2})); err != nil {
		t.Fatal(err)
	}
}

// After the switch a snapshot is sealed under version 2: a coordinator
// holding version 2 restores it and is current at 2; one holding version 1
// only cannot open it (which is why the switch waits for every
// coordinator).
func TestFSM_SnapshotRestore_KeySwitch(t *testing.T) {
	a := switchedToV2(t)
	a.apply(t, CmdKeyProgress, kecheng, certs.Identity{}, KeyProgress{Version: 2, Stage: KeyRepublished})
	both, err := NewPseudonymKeyRing(map[uint32]credit.PseudonymKey{1: testPseudonymKey, 2: testKey2})
	if err != nil {
		t.Fatal(err)
	}
	b := restoredWith(t, a, both)
	if b.state.Keys().Current() != 2 || b.state.KeyCurrent() != 2 || b.state.KeyFloor() != 1 {
		t.Fatalf("restored: ring %v, current %d, floor %d", b.state.Keys(), b.state.KeyCurrent(), b.state.KeyFloor())
	}
	if got, want := keyStatusOf(t, b), keyStatusOf(t, a); !reflect.DeepEqual(got, want) {
		t.Fatalf("status %+v, want %+v", got, want)
	}
	old := newTestFSM(t)
	if err := old.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); !errors.Is(err, errUnknownIndexKey) {
		t.Fatalf("a coordinator without version 2 restored a snapshot sealed under it: %v", err)
	}
	d := newDistrictFSM(t)
	if err := d.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil || d.state.KeyCurrent() != 2 {
		t.Fatalf("district restore: %v, current %d", err, d.state.KeyCurrent())
	}
}
