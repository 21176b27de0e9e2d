package storage

import (
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"testing"

	"credfed/credit"
)

// convertStopEnv names, for TestHelperConvert, the conversion transaction
// after which it stops ("<step> <n>", counted in its own process).
const convertStopEnv = "CREDFED_STORAGE_CONVERT_STOP"

// TestHelperConvert is not a test: run by TestCrashDuringTheUpgrade in a
// child process, it opens a store of an older layout with conversion
// batches of 100, prints "committed <step> <n>" after each conversion
// transaction, and stops after the one convertStopEnv names until it is
// killed.
func TestHelperConvert(t *testing.T) {
	if os.Getenv(helperEnv) != "convert" {
		t.Skip("helper process for TestCrashDuringTheUpgrade")
	}
	convertBatch = 100
	stop := os.Getenv(convertStopEnv)
	counts := map[string]int{}
	convertCommitted = func(step string) {
		counts[step]++
		at := fmt.Sprintf("%s %d", step, counts[step])
		fmt.Println("committed", at)
		if at == stop {
			select {} // until the parent's SIGKILL
		}
	}
	key, _ := hex.DecodeString(os.Getenv(helperKeyEnv))
	if _, err := Open(Options{Dir: os.Getenv(helperDirEnv), EncryptionKey: key, GCInterval: -1}); err != nil {
		fmt.Println("open failed:", err)
		os.Exit(2)
	}
	fmt.Println("error: the conversion ended before", stop)
	os.Exit(3)
}

// TestCrashDuringTheUpgrade kills a process twice while it converts the
// outbox of a layout-1 or layout-3 store into pages (after a transaction
// of the step that gives layout 1's markers their O/ entries, and after
// transactions that write pages), then opens the store: every marker is
// an entry, with its number, in order, once; nothing of the old families
// is left; the count equals the entries; the layout is 4.
func TestCrashDuringTheUpgrade(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("in the helper process")
	}
	for layout, stops := range map[string][]string{"1": {"order 1", "pages 3"}, "3": {"pages 2", "pages 5"}} {
		t.Run("layout="+layout, func(t *testing.T) {
			key := testKey(6)
			dir := t.TempDir()
			db := openTest(t, Options{Dir: dir, EncryptionKey: key})
			for from := 0; from < 1000; from += 250 {
				var recs []credit.Record
				for i := from; i < from+250; i++ {
					recs = append(recs, testRecord(fmt.Sprintf("CV%d", i), i))
				}
				mustSubmit(t, db, recs...)
			}
			want := toOldOutbox(t, db, layout)
			if len(want) != 1000 {
				t.Fatalf("%d old markers", len(want))
			}
			db.Close()
			for _, stop := range stops {
				t.Setenv(convertStopEnv, stop)
				reached := false
				killHelper(t, "TestHelperConvert", "convert", dir, key, func(f []string) {
					reached = reached || (len(f) == 3 && f[0] == "committed" && f[1]+" "+f[2] == stop)
				}, func() bool { return reached })
				if !reached {
					t.Fatalf("the helper did not reach %q", stop)
				}
			}
			db = openTest(t, Options{Dir: dir, EncryptionKey: key})
			if got := mustPending(t, db); !slices.Equal(got, want) {
				t.Fatalf("after the crashes and an opening: %d entries, want the %d markers in order", len(got), len(want))
			}
			entries := pageEntries(t, db)
			for i := 1; i < len(entries); i++ {
				if entries[i].Seq <= entries[i-1].Seq {
					t.Fatalf("pages overlap at entry %d", i)
				}
			}
			if n, _ := db.OutboxLen(); n != len(want) || len(entries) != len(want) {
				t.Fatalf("OutboxLen %d, %d page entries, want %d", n, len(entries), len(want))
			}
			if o, O := rawKeys(t, db, "o/"), rawKeys(t, db, "O/"); len(o)+len(O) != 0 {
				t.Fatalf("left of the old families: %d o/, %d O/", len(o), len(O))
			}
			if v := rawValue(t, db, metaLayoutKey); string(v) != layoutVersion {
				t.Fatalf("layout %q", v)
			}
		})
	}
}
