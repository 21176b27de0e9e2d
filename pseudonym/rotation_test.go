package pseudonym

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/storage"
)

// keys is a coordinator's key versions that a test switches.
type keys struct {
	mu  sync.Mutex
	v   uint32
	key map[uint32]credit.PseudonymKey
}

func (k *keys) CurrentPseudonymKey() (uint32, credit.PseudonymKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.v, k.key[k.v]
}

func (k *keys) switchTo(v uint32) {
	k.mu.Lock()
	k.v = v
	k.mu.Unlock()
}

// TestResolveAcrossAKeySwitch: a coordinator answers under its current
// version and says which; a district caches by version, publishes only
// under the version it is at (ResolveAt), and knows its subjects' older
// pseudonyms (Own).
func TestResolveAcrossAKeySwitch(t *testing.T) {
	k2 := credit.PseudonymKey(bytes.Repeat([]byte{0x22}, 32))
	var ring *keys
	s := newSetup(t, func(c *CustodyConfig) {
		ring = &keys{v: 1, key: map[uint32]credit.PseudonymKey{1: c.Key, 2: k2}}
		c.Keys = ring
	})
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var at atomic.Uint32
	at.Store(1)
	districtID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	r := NewResolver(ResolverConfig{Self: districtID, Endpoint: s.district, Cache: db, Registry: s.reg, Version: at.Load})
	a := credit.SyntheticPerson(1, credit.NewDate(1990, 1, 1))
	c := credit.SyntheticPerson(3, credit.NewDate(1992, 3, 3))
	p1 := s.key.Pseudonym(a)
	if got, err := r.ResolveAt(ctxT(t), []string{a}, 1); err != nil || got[0] != p1 {
		t.Fatalf("version 1: %v", err)
	}
	// The coordinator switches; the district has not yet.
	ring.switchTo(2)
	if got, err := r.ResolveAt(ctxT(t), []string{a}, 1); err != nil || got[0] != p1 {
		t.Fatalf("cached under version 1: %v", err)
	}
	if _, err := r.ResolveAt(ctxT(t), []string{c}, 1); !errors.Is(err, ErrOtherVersion) {
		t.Fatalf("a coordinator a version ahead: %v", err)
	}
	if got, err := r.Resolve(ctxT(t), []string{c}); err != nil || got[0] != k2.Pseudonym(c) {
		t.Fatalf("Resolve takes the coordinator's version: %v", err)
	}
	// The district switches too.
	at.Store(2)
	got, err := r.ResolveAt(ctxT(t), []string{a}, 2)
	if err != nil || got[0] != k2.Pseudonym(a) {
		t.Fatalf("version 2: %v", err)
	}
	own, err := r.Own(ctxT(t), a)
	if err != nil || len(own) != 2 || own[0] != k2.Pseudonym(a) || own[1] != p1 {
		t.Fatalf("own pseudonyms %v, %v", own, err)
	}
	if all, _ := db.PseudonymVersions(a); len(all) != 2 {
		t.Fatalf("cached versions %v", all)
	}
}

// TestCustodySettlesNotesOfASupersededVersion: the pseudonyms a district
// asked for before a key switch never show up (it withdraws them as it
// republishes): they do not count against it.
func TestCustodySettlesNotesOfASupersededVersion(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	var switched atomic.Int64
	s := newSetup(t, func(c *CustodyConfig) {
		c.Now = func() time.Time { return time.Unix(0, now.Load()) }
		c.NotesPerSec, c.Window, c.MinChecked = 1000, time.Hour, 1
		c.Entries = func(credit.Pseudonym) ([]consensus.IndexEntry, error) { return nil, nil } // never published
		c.Superseded = func(at time.Time) bool { return switched.Load() != 0 && at.UnixNano() < switched.Load() }
	})
	ids := make([]string, 50)
	for i := range ids {
		ids[i] = credit.SyntheticPerson(100+i, credit.NewDate(1985, 5, 5))
	}
	if _, err := s.resolver.Resolve(ctxT(t), ids); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(time.Minute))
	switched.Store(now.Load())
	now.Add(int64(2 * time.Hour))
	res, err := s.custodian.Check(ctxT(t))
	if err != nil || res.Unmatched != 0 || len(res.Flagged) != 0 {
		t.Fatalf("a rotation's superseded notes flagged the district: %+v %v", res, err)
	}
	// Without the switch the same notes flag it (the test can fail).
	s2 := newSetup(t, func(c *CustodyConfig) {
		c.Now = func() time.Time { return time.Unix(0, now.Load()) }
		c.NotesPerSec, c.Window, c.MinChecked = 1000, time.Hour, 1
		c.Entries = func(credit.Pseudonym) ([]consensus.IndexEntry, error) { return nil, nil }
	})
	if _, err := s2.resolver.Resolve(ctxT(t), ids); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(2 * time.Hour))
	if res, err := s2.custodian.Check(ctxT(t)); err != nil || len(res.Flagged) != 1 {
		t.Fatalf("without a switch: %+v %v", res, err)
	}
}
