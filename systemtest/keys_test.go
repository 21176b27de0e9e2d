package systemtest

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"credfed/api"
	"credfed/consensus"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/rekey"
	"credfed/storage"
)

// TestKeyRotationUnderLookupLoad is the lifecycle issue's "a key rotation
// under lookup load loses no lookup", on a federation of real nodes
// (Badger, Raft, QUIC, mTLS): a coordinator looks subjects up without
// pause while an operator of the province rotates the pseudonym key, and
// every lookup succeeds with both districts' records; afterwards the index
// holds the subjects under their new pseudonyms only, and a subject's
// access log still lists the lookups made before the rotation. On the same
// federation, the refusals: operators of a city, coordinators and district
// nodes cannot rotate, and a district holds the new key nowhere, neither
// in its replicated state nor in its Raft log.
func TestKeyRotationUnderLookupLoad(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	ds := f.Districts()
	prov := f.Province()
	const subjects = 12
	var ids []string
	for i := range subjects {
		id := credit.SyntheticPerson(9100+i, credit.NewDate(1970+i, 3, 4))
		ids = append(ids, id)
		for j, d := range ds {
			submit(t, f, d, record(fmt.Sprintf("K-%d-%d", i, j), id, "FOOD-DRUG-PENALTY", "处罚事由"))
		}
	}
	for _, id := range ids {
		waitIndexed(t, f, id, 2)
	}
	coord := coordinator(t, f)
	ask := func(ctx context.Context, id, ref string) error {
		ans, err := coord.Lookup(ctx, api.LookupRequest{Subject: id, Purpose: "ADMIN-LICENSING", User: "张三", Reference: ref})
		if err != nil {
			return err
		}
		ok := 0
		for _, d := range ans.Districts {
			if d.Status == api.DistrictOK && len(d.Records) == 1 {
				ok++
			}
		}
		if ok != 2 || len(ans.Districts) != 2 {
			return fmt.Errorf("an incomplete answer: %+v", ans.Districts)
		}
		return nil
	}
	if err := ask(ctxT(t, 30*time.Second), ids[0], "before-rotation"); err != nil {
		t.Fatal(err)
	}

	// Who may not rotate: nothing changes.
	op := clientOf(t, f, prov, f.Layout.Operator)
	cityOp := issueUser(t, f, "operator", regionOf(f, "quzhou"), "city-ops")
	for name, c := range map[string]*api.Client{
		"a city's operator at the city":         clientOf(t, f, "quzhou", cityOp),
		"a city's operator at the province":     clientOf(t, f, prov, cityOp),
		"the province's operator at a district": clientOf(t, f, ds[0], f.Layout.Operator),
		"a coordinator":                         coord,
	} {
		if _, err := c.RotateKeys(ctxT(t, 30*time.Second), api.KeyRotateRequest{Wait: "2s"}); api.Code(err) != api.CodeForbidden {
			t.Errorf("%s: rotate answered %v, want forbidden", name, err)
		}
	}
	if st, err := op.KeyStatus(ctxT(t, 30*time.Second)); err != nil || st.Current != 1 || len(st.Versions) != 1 {
		t.Fatalf("after the refusals: %+v, %v", st, err)
	}

	// Lookups without pause from the province's coordinator, bounded in
	// count and time, each noted with the province's key versions when it
	// started.
	type outcome struct {
		err            error
		current, floor uint32
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		stop     atomic.Bool
		done     = make(chan struct{})
	)
	provState := f.Node(prov).Replica().State()
	go func() {
		defer close(done)
		deadline := time.Now().Add(90 * time.Second)
		for i := 0; i < 20000 && !stop.Load() && time.Now().Before(deadline); i++ {
			cur, floor := provState.KeyCurrent(), provState.KeyFloor()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := ask(ctx, ids[i%subjects], fmt.Sprintf("during-%d", i))
			cancel()
			mu.Lock()
			outcomes = append(outcomes, outcome{err, cur, floor})
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { stop.Store(true); <-done })

	var st *api.KeyStatus
	wait.Until(t, 60*time.Second, "the rotation to switch to version 2", func() bool {
		var err error
		st, err = op.RotateKeys(ctxT(t, 60*time.Second), api.KeyRotateRequest{Wait: "20s"})
		if err != nil {
			t.Logf("rotate: %v", err)
			return false
		}
		return st.Current == 2
	})
	if st.Step != "switched" || st.Versions[1].InstalledBy == "" {
		t.Fatalf("the rotation's answer %+v", st)
	}
	wait.Until(t, 60*time.Second, "every district to republish under version 2", func() bool {
		var err error
		st, err = op.KeyStatus(ctxT(t, 30*time.Second))
		return err == nil && st.IndexFloor == 2 && st.Versions[1].Phase == consensus.KeyPhaseCurrent
	})
	if got := st.Versions[1].Republished; len(got) != 2 || st.Versions[0].Phase != consensus.KeyPhaseRetired {
		t.Fatalf("status after the rotation %+v", st)
	}
	// A few more lookups after it, then stop.
	mu.Lock()
	after := len(outcomes)
	mu.Unlock()
	wait.Until(t, 30*time.Second, "lookups after the rotation", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(outcomes) >= after+2*subjects
	})
	stop.Store(true)
	<-done
	during, failed := 0, 0
	for _, o := range outcomes {
		if o.err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("a lookup (key version %d, floor %d) failed: %v", o.current, o.floor, o.err)
			}
		}
		if o.current == 2 && o.floor == 1 {
			during++
		}
	}
	if failed > 0 || len(outcomes) < 3*subjects {
		t.Fatalf("%d of %d lookups failed or were incomplete", failed, len(outcomes))
	}
	if during == 0 {
		t.Fatalf("none of %d lookups ran while the districts republished: the test proves nothing", len(outcomes))
	}
	t.Logf("%d lookups, %d of them while the districts republished, none failed", len(outcomes), during)

	// The index holds the subjects under version 2 only, at every
	// coordinator.
	k2, ok := f.Node(prov).Replica().Keys().PseudonymKey(2)
	if !ok {
		t.Fatal("the province does not hold version 2")
	}
	v1 := func(id string) credit.Pseudonym { return pseudonymOf(t, f, id) }
	for _, c := range []string{prov, "quzhou", "hangzhou"} {
		state := f.Node(c).Replica().State()
		wait.Until(t, 10*time.Second, c+" to have applied the republishing", func() bool { return state.KeyFloor() == 2 })
		for _, id := range ids {
			old, _, err := state.Lookup(v1(id))
			cur, _, err2 := state.Lookup(k2.Pseudonym(id))
			if err != nil || err2 != nil || len(old) != 0 || len(cur) != 2 || !cur[0].Holds() || !cur[1].Holds() {
				t.Fatalf("%s: entries under the old pseudonym %+v, under the new %+v (%v %v)", c, old, cur, err, err2)
			}
		}
		// Every coordinator stored version 2 in its key ring file.
		ring, err := rekey.LoadRing(filepath.Join(f.Dir, "nodes", c, "data", rekey.FileName), nil)
		if err != nil || !bytes.Equal(ring[2], k2) {
			t.Fatalf("%s: key ring file %v, %v", c, rekey.Versions(ring), err)
		}
	}
	if err := ask(ctxT(t, 30*time.Second), ids[0], "after-rotation"); err != nil {
		t.Fatal(err)
	}
	// A record submitted now is indexed under version 2 only.
	fresh := credit.SyntheticPerson(9300, credit.NewDate(1988, 8, 8))
	submit(t, f, ds[0], record("K-fresh", fresh, "FOOD-DRUG-PENALTY", "处罚事由"))
	waitIndexed(t, f, fresh, 1)
	if old, _, err := f.Node(prov).Replica().State().Lookup(v1(fresh)); err != nil || len(old) != 0 {
		t.Fatalf("a new record indexed under the old pseudonym: %+v %v", old, err)
	}

	// A coordinator restarted after the rotation comes back at version 2
	// (its keyring from the key file and the key ring file, the current
	// version from its state) and looks up as before.
	if err := f.StopNode(ctxT(t, 30*time.Second), "hangzhou"); err != nil {
		t.Fatal(err)
	}
	if err := f.StartNode("hangzhou"); err != nil {
		t.Fatal(err)
	}
	if k := f.Node("hangzhou").Replica().Keys(); k.Current() != 2 || !slices.Equal(k.Versions(), []uint32{1, 2}) {
		t.Fatalf("the restarted city's keyring: %v", k)
	}
	ans, err := lookupUntil(t, clientOf(t, f, "hangzhou", f.Layout.Coordinators["hangzhou"]),
		api.LookupRequest{Subject: ids[1], Purpose: "ADMIN-LICENSING", User: "王五", Reference: "after-restart"})
	if err != nil || len(ans.Districts) != 2 || ans.SubjectPseudonym != k2.Pseudonym(ids[1]).String() {
		t.Fatalf("a lookup through the restarted city: %+v, %v", ans, err)
	}

	// The access log still lists the lookup made before the rotation
	// (registered under the old pseudonym at the province and at both
	// districts), and the one after it.
	log, err := portal(t, f, ds[0]).AccessLog(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: ids[0], Authentication: "实名认证 FACE-2026-002"})
	if err != nil {
		t.Fatal(err)
	}
	if len(log.Incomplete) > 0 {
		t.Fatalf("access log incomplete: %v", log.Incomplete)
	}
	seen := map[string][]string{}
	for _, e := range log.Entries {
		seen[e.Reference] = e.Districts
	}
	regions := []string{regionOf(f, ds[0]), regionOf(f, ds[1])}
	slices.Sort(regions)
	for _, ref := range []string{"before-rotation", "after-rotation"} {
		got := slices.Clone(seen[ref])
		slices.Sort(got)
		if !slices.Equal(got, regions) {
			t.Fatalf("the access log lists %q with districts %v, want %v (%d entries)", ref, seen[ref], regions, len(log.Entries))
		}
	}

	// A district holds the new key nowhere: not in its replicated state
	// (it kept the clear record of version 2, and no sealed copy), not in
	// its Raft log (the install is there, sealed).
	ik2, err := consensus.DeriveIndexKey(k2)
	if err != nil {
		t.Fatal(err)
	}
	needles := [][]byte{k2, ik2, []byte(hex.EncodeToString(k2)), []byte(hex.EncodeToString(ik2))}
	if err := f.StopNode(ctxT(t, 30*time.Second), ds[1]); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(f.Dir, "nodes", ds[1], "data")
	state, err := storage.OpenState(storage.Options{Dir: filepath.Join(data, "state")})
	if err != nil {
		t.Fatal(err)
	}
	records, sealed, scanned := 0, 0, 0
	err = state.Badger().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			scanned++
			for _, n := range needles {
				if bytes.Contains(k, n) || bytes.Contains(v, n) {
					t.Errorf("the district's state holds the new key (under %q)", k[:min(len(k), 6)])
				}
			}
			switch {
			case bytes.HasPrefix(k, []byte("x/k/v/")) || bytes.Contains(k, []byte("/k/v/")):
				records++
			case bytes.HasPrefix(k, []byte("x/K/")) || bytes.Contains(k, []byte("/K/")):
				sealed++
			}
		}
		return nil
	})
	state.Close()
	if err != nil {
		t.Fatal(err)
	}
	if records == 0 || sealed != 0 || scanned < 10 {
		t.Fatalf("the district's state: %d key version records (want 1), %d sealed keys (want 0), %d keys scanned", records, sealed, scanned)
	}
	meta := &metadb.BoltMetaDB{}
	wal, err := raftwal.Open(filepath.Join(data, "raft", "wal"), raftwal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := wal.FirstIndex()
	last, _ := wal.LastIndex()
	installs := 0
	for i := first; i <= last && last > 0; i++ {
		var l raft.Log
		if err := wal.GetLog(i, &l); err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
		for _, n := range needles {
			if bytes.Contains(l.Data, n) {
				t.Errorf("the district's Raft log entry %d holds the new key", i)
			}
		}
		if l.Type == raft.LogCommand && len(l.Data) > 0 && consensus.CommandType(l.Data[0]) == consensus.CmdKeyInstall {
			installs++
		}
	}
	wal.Close()
	meta.Close()
	if installs != 1 {
		t.Fatalf("the district's Raft log holds %d key installs, want 1: the scan looked at nothing", installs)
	}
}
