package systemtest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"credfed/api"
	"credfed/credit"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// TestCoordinatorStateHoldsNoPersonalData looks through everything a city
// node keeps — every Badger key and value, decoded by Badger (the files are
// compressed, so a search of them would prove nothing), every Raft log
// entry and every snapshot — for the raw identifier and the record text of
// a subject that was submitted, indexed and looked up through that city.
func TestCoordinatorStateHoldsNoPersonalData(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	subject := credit.SyntheticPerson(31337, credit.NewDate(1966, 6, 6))
	summary := "在经营场所销售过期食品被查获的完整经过"
	for i, d := range f.Districts() {
		submit(t, f, d, record("P-"+string(rune('a'+i)), subject, "FOOD-DRUG-PENALTY", summary))
	}
	waitIndexed(t, f, subject, 2)

	// The city's coordinator looks the subject up through the city node (a
	// strong read: the city's replica may not have the entries yet).
	ans, err := lookupUntil(t, clientOf(t, f, "quzhou", f.Layout.Coordinators["quzhou"]),
		api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "王五", Reference: "R-9", Consistency: api.ConsistencyStrong})
	if err != nil {
		t.Fatalf("lookup through the city: %v", err)
	}
	found := 0
	for _, d := range ans.Districts {
		for _, r := range d.Records {
			if r.Summary == summary {
				found++
			}
		}
	}
	if found != 2 {
		t.Fatalf("the lookup returned %d records with the summary, want 2: %+v", found, ans)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.StopNode(ctx, "quzhou"); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(f.Dir, "nodes", "quzhou", "data")
	needles := [][]byte{[]byte(subject), []byte(summary)}
	check := func(where string, b []byte) {
		t.Helper()
		for _, n := range needles {
			if bytes.Contains(b, n) {
				t.Fatalf("%s holds personal data (%d bytes matched)", where, len(n))
			}
		}
	}

	// Badger: every key and value of both databases (records and
	// replicated state), decoded.
	db, err := storage.Open(storage.Options{Dir: filepath.Join(data, "db"), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	state, err := storage.OpenState(storage.Options{Dir: filepath.Join(data, "state")})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for name, bdb := range map[string]*badger.DB{"records": db.Badger(), "state": state.Badger()} {
		err := bdb.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.DefaultIteratorOptions)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				item := it.Item()
				check(name+" key "+string(item.Key()[:2]), item.Key())
				v, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				check(name+" value under "+string(item.Key()[:2]), v)
				counts[name+" "+string(item.Key()[:2])]++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	state.Close()
	if counts["records a/"] == 0 || counts["state x/"] < 10 {
		t.Fatalf("scanned %v: the scan looked at nothing", counts)
	}

	// The Raft log, entry by entry.
	meta := &metadb.BoltMetaDB{}
	wal, err := raftwal.Open(filepath.Join(data, "raft", "wal"), raftwal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := wal.FirstIndex()
	last, _ := wal.LastIndex()
	commands := 0
	for i := first; i <= last && last > 0; i++ {
		var l raft.Log
		if err := wal.GetLog(i, &l); err != nil {
			t.Fatalf("log %d: %v", i, err)
		}
		check("raft log entry", l.Data)
		if l.Type == raft.LogCommand {
			commands++
		}
	}
	wal.Close()
	meta.Close()
	if commands == 0 {
		t.Fatal("the Raft log held no command: the scan looked at nothing")
	}
	// Snapshots, if any were taken.
	filepath.Walk(filepath.Join(data, "raft", "snapshots"), func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, err := os.ReadFile(path)
			if err == nil {
				check("snapshot "+filepath.Base(path), b)
			}
		}
		return nil
	})
}
