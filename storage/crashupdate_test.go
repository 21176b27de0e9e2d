package storage

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"credfed/credit"
)

// crashRecords is how many records the update helper keeps changing.
const crashRecords = 16

// TestHelperUpdate is not a test: run by TestCrashKeepsAcknowledgedUpdates
// in a child process, it updates records and acknowledges outbox markers
// until killed, printing "upd <id> <version>" once UpdateRecord has
// returned.
func TestHelperUpdate(t *testing.T) {
	if os.Getenv(helperEnv) != "update" {
		t.Skip("helper process for TestCrashKeepsAcknowledgedUpdates")
	}
	key, _ := hex.DecodeString(os.Getenv(helperKeyEnv))
	db, err := Open(Options{Dir: os.Getenv(helperDirEnv), EncryptionKey: key, GCInterval: -1})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
	}
	deadline := time.Now().Add(60 * time.Second) // never outlive a dead parent for long
	var wg sync.WaitGroup
	// Each worker owns a quarter of the records: their versions are its own.
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for n := 0; time.Now().Before(deadline); n++ {
				i := w + 4*(n%(crashRecords/4))
				id := fmt.Sprintf("U%d", i)
				cur, err := db.Record(testDept, id)
				if errors.Is(err, ErrNotFound) {
					if _, err := db.SubmitRecords([]credit.Record{testRecord(id, i)}); err != nil {
						say("error %v", err)
						os.Exit(3)
					}
					say("upd %s 1", id)
					continue
				}
				if err != nil {
					say("error %v", err)
					os.Exit(3)
				}
				next := cur
				next.Version++
				next.Summary = fmt.Sprintf("version %d", next.Version)
				next.Status = []credit.Status{credit.StatusActive, credit.StatusDisputed}[next.Version%2]
				next.Subject = testSubject(i + 100*(next.Version%3)) // moves between subjects
				next.RecordedAt = time.Time{}
				if err := db.UpdateRecord(next); err != nil {
					say("error %v", err)
					os.Exit(3)
				}
				say("upd %s %d", id, next.Version)
			}
		})
	}
	wg.Go(func() { // the publisher's side: acknowledge what is marked
		for time.Now().Before(deadline) {
			items, err := db.PendingSubjects(5)
			if err == nil {
				err = db.AckOutbox(items)
			}
			if err != nil {
				say("error %v", err)
				os.Exit(3)
			}
		}
	})
	wg.Wait()
	os.Exit(0)
}

// TestCrashKeepsAcknowledgedUpdates kills, twice, a process that updates
// records (moving them between subjects) while acknowledging outbox
// markers, and checks after reopening: every acknowledged version is
// there with every version before it, each once; each subject index
// entry's summary fields are its record's; and the outbox is whole (its
// pages decode, in strictly increasing numbers, and the count kept in
// memory equals their entries).
func TestCrashKeepsAcknowledgedUpdates(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("in the helper process")
	}
	key := testKey(7)
	dir := t.TempDir()
	acked := map[string]int{}
	for round := 0; round < 2; round++ {
		for id, v := range crashUpdates(t, dir, key, 300) {
			acked[id] = max(acked[id], v)
		}
	}
	db := openTest(t, Options{Dir: dir, EncryptionKey: key})
	var subjects []string
	for id, v := range acked {
		vs, err := db.Versions(testDept, id)
		if err != nil {
			t.Fatalf("record %s: %v", id, err)
		}
		if len(vs) < v {
			t.Fatalf("record %s: %d versions, version %d was acknowledged", id, len(vs), v)
		}
		for k, r := range vs {
			if r.Version != k+1 {
				t.Fatalf("record %s: version %d at place %d of %d", id, r.Version, k+1, len(vs))
			}
		}
		subjects = append(subjects, vs[len(vs)-1].Subject)
	}
	sameAsRecords(t, db, subjects)
	entries := pageEntries(t, db) // every page decodes
	if n, _ := db.OutboxLen(); n != len(entries) {
		t.Fatalf("OutboxLen %d, page entries %d", n, len(entries))
	}
	for i := 1; i < len(entries); i++ {
		if entries[i].Seq <= entries[i-1].Seq {
			t.Fatalf("outbox pages overlap: entry %d under %d after %d", i, entries[i].Seq, entries[i-1].Seq)
		}
	}
	if left := rawKeys(t, db, "o/"); len(left) != 0 {
		t.Fatalf("%d markers of the old layout", len(left))
	}
	if len(acked) == 0 {
		t.Fatal("the helper acknowledged nothing: the test proves nothing")
	}
	t.Logf("%d records, %d acknowledged versions at most, %d outbox entries after the kills", len(acked), maxOf(acked), len(entries))
}

func maxOf(m map[string]int) int {
	n := 0
	for _, v := range m {
		n = max(n, v)
	}
	return n
}

// crashUpdates runs the update helper on dir until it has acknowledged at
// least want updates, kills it, and returns the highest version
// acknowledged of each record.
func crashUpdates(t *testing.T, dir string, key []byte, want int) map[string]int {
	t.Helper()
	out := map[string]int{}
	n := 0
	killHelper(t, "TestHelperUpdate", "update", dir, key, func(f []string) {
		if len(f) == 3 && f[0] == "upd" {
			v, _ := strconv.Atoi(f[2])
			out[f[1]] = max(out[f[1]], v)
			n++
		}
	}, func() bool { return n >= want })
	if n < want {
		t.Fatalf("the helper acknowledged %d updates, want %d", n, want)
	}
	return out
}
