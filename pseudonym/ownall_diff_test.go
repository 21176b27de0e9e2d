package pseudonym

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"credfed/certs"
	"credfed/credit"
	"credfed/storage"
)

// oldOwnAll is OwnAll as it was before PseudonymVersionsOf (009915e^).
func (r *Resolver) oldOwnAll(ctx context.Context, subjects []string) ([][]credit.Pseudonym, error) {
	ps, err := r.Resolve(ctx, subjects)
	if err != nil {
		return nil, err
	}
	out := make([][]credit.Pseudonym, len(subjects))
	vc, ok := r.cfg.Cache.(VersionedCache)
	for i, subject := range subjects {
		out[i] = ps[i : i+1 : i+1]
		if !ok || r.cfg.Key.Valid() || r.cfg.Keys != nil {
			continue
		}
		all, err := vc.PseudonymVersions(subject)
		if err != nil {
			continue
		}
		versions := make([]uint32, 0, len(all))
		for v := range all {
			versions = append(versions, v)
		}
		slices.Sort(versions)
		for k := len(versions) - 1; k >= 0; k-- {
			if p := all[versions[k]]; p != ps[i] {
				out[i] = append(out[i], p)
			}
		}
	}
	return out, nil
}

// onlyVersioned hides PseudonymVersionsOf of a store.
type onlyVersioned struct{ VersionedCache }

// failingBatch is a store whose PseudonymVersionsOf fails.
type failingBatch struct{ *storage.DB }

func (failingBatch) PseudonymVersionsOf([]string) ([]map[uint32]credit.Pseudonym, error) {
	return nil, errors.New("batch read failed")
}

// TestOwnAllAsBefore: OwnAll answers what it answered before
// PseudonymVersionsOf, error or pseudonyms, and leaves the same cache,
// across key-version skews between the district and its coordinator,
// duplicates, a corrupt version key, a failing batch read, a closed store,
// and no coordinator.
func TestOwnAllAsBefore(t *testing.T) {
	k2 := credit.PseudonymKey(bytes.Repeat([]byte{0x44}, 32))
	var ring *keys
	s := newSetup(t, func(c *CustodyConfig) {
		ring = &keys{v: 1, key: map[uint32]credit.PseudonymKey{1: c.Key, 2: k2}}
		c.Keys = ring
		c.DistrictRate, c.RequestRate = 1e6, 1e6
	})
	districtID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	id := func(n int) string { return credit.SyntheticPerson(200+n, credit.NewDate(1980, 1, 1)) }
	a, b, c, d := id(1), id(2), id(3), id(4)
	type state struct {
		name        string
		node, coord uint32
		subjects    []string
		prepare     func(t *testing.T, db *storage.DB)
		wrap        func(db *storage.DB) Cache
		noCoord     bool
		closed      bool
	}
	seed := func(t *testing.T, db *storage.DB) {
		t.Helper()
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(db.PutPseudonymsAt(1, map[string]credit.Pseudonym{a: s.key.Pseudonym(a), b: s.key.Pseudonym(b)}))
		must(db.PutPseudonymsAt(2, map[string]credit.Pseudonym{a: k2.Pseudonym(a), d: k2.Pseudonym(d)}))
	}
	corrupt := func(t *testing.T, db *storage.DB) {
		seed(t, db)
		key := append([]byte("n/"+b), 0, 9)
		if err := db.Badger().Update(func(txn *badger.Txn) error { return txn.Set(key, make([]byte, 16)) }); err != nil {
			t.Fatal(err)
		}
	}
	subjects := []string{a, b, c, d, a, c}
	states := []state{
		{name: "both at 1", node: 1, coord: 1, subjects: subjects, prepare: seed},
		{name: "both at 2", node: 2, coord: 2, subjects: subjects, prepare: seed},
		{name: "coordinator ahead", node: 1, coord: 2, subjects: subjects, prepare: seed},
		{name: "coordinator behind", node: 2, coord: 1, subjects: subjects, prepare: seed},
		{name: "corrupt version key", node: 2, coord: 2, subjects: subjects, prepare: corrupt},
		{name: "failing batch read", node: 2, coord: 2, subjects: subjects, prepare: seed, wrap: func(db *storage.DB) Cache { return failingBatch{db} }},
		{name: "not a VersionsReader", node: 2, coord: 2, subjects: subjects, prepare: seed, wrap: func(db *storage.DB) Cache { return onlyVersioned{db} }},
		{name: "no coordinator, all cached", node: 1, coord: 1, subjects: []string{a, b, a}, prepare: seed, noCoord: true},
		{name: "no coordinator, one missing", node: 2, coord: 2, subjects: []string{a, b}, prepare: seed, noCoord: true},
		{name: "closed store", node: 1, coord: 1, subjects: []string{a}, prepare: seed, closed: true},
		{name: "empty", node: 2, coord: 2, subjects: nil, prepare: seed},
		{name: "invalid subject", node: 1, coord: 1, subjects: []string{a, "x\x00y"}, prepare: seed},
	}
	run := func(t *testing.T, st state, old bool) (string, map[string]map[uint32]credit.Pseudonym) {
		db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		st.prepare(t, db)
		var cache Cache = db
		if st.wrap != nil {
			cache = st.wrap(db)
		}
		ring.switchTo(st.coord)
		var at atomic.Uint32
		at.Store(st.node)
		reg := s.reg
		if st.noCoord {
			reg = registry{{Path: districtID.Region, Role: certs.District}}
		}
		r := NewResolver(ResolverConfig{Self: districtID, Endpoint: s.district, Cache: cache, Registry: reg, Version: at.Load})
		if st.closed {
			db.Close()
		}
		var got [][]credit.Pseudonym
		if old {
			got, err = r.oldOwnAll(ctxT(t), st.subjects)
		} else {
			got, err = r.OwnAll(ctxT(t), st.subjects)
		}
		answer := fmt.Sprintf("%x err=%v", got, err != nil)
		after := map[string]map[uint32]credit.Pseudonym{}
		if !st.closed {
			for _, x := range []string{a, b, c, d} {
				after[x], _ = db.PseudonymVersions(x)
			}
			db.Close()
		}
		return answer, after
	}
	for _, st := range states {
		t.Run(st.name, func(t *testing.T) {
			wantAnswer, wantCache := run(t, st, true)
			gotAnswer, gotCache := run(t, st, false)
			if gotAnswer != wantAnswer {
				t.Errorf("OwnAll = %s\nbefore:  %s", gotAnswer, wantAnswer)
			}
			if fmt.Sprint(gotCache) != fmt.Sprint(wantCache) {
				t.Errorf("cache after = %v\nbefore:  %v", gotCache, wantCache)
			}
		})
	}
}
