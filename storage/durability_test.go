package storage

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"credfed/credit"
)

// Environment of the helper process.
const (
	helperEnv    = "CREDFED_STORAGE_HELPER"
	helperDirEnv = "CREDFED_STORAGE_DIR"
	helperKeyEnv = "CREDFED_STORAGE_KEY"
)

// TestHelperIngest is not a test: run by TestCrashKeepsAcknowledgedWrites
// in a child process, it ingests until killed and prints a line after each
// acknowledgement: "rec <id> <subject n>" once SubmitRecords has returned,
// "audit <seq>" once Append has returned.
func TestHelperIngest(t *testing.T) {
	if os.Getenv(helperEnv) != "ingest" {
		t.Skip("helper process for TestCrashKeepsAcknowledgedWrites")
	}
	var key []byte
	if k := os.Getenv(helperKeyEnv); k != "" {
		key, _ = hex.DecodeString(k)
	}
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
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; time.Now().Before(deadline); b++ {
				recs := make([]credit.Record, 5)
				for i := range recs {
					subj := w*1_000_000 + b
					recs[i] = testRecord(fmt.Sprintf("crash-%d-%d-%d", w, b, i), subj)
				}
				out, err := db.SubmitRecords(recs)
				if err != nil {
					say("error %v", err)
					os.Exit(3)
				}
				for i, r := range recs {
					if out[i] == Accepted {
						say("rec %s %d", r.ID, w*1_000_000+b)
					}
				}
				e := lookupEntry(b)
				e.Reference = recs[0].ID
				ae, err := db.Audit().Append(e)
				if err != nil {
					say("error %v", err)
					os.Exit(3)
				}
				say("audit %d", ae[0].Seq)
			}
		}()
	}
	wg.Wait()
	os.Exit(0)
}

// TestCrashKeepsAcknowledgedWrites kills an ingesting process with SIGKILL
// and checks that every record and audit entry it acknowledged is there
// after reopening, with the record's outbox marker. SIGKILL loses the
// process, not the page cache, so it proves the write path acknowledges
// only committed data; surviving a power loss rests on SyncWrites (doc.go).
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("in the helper process")
	}
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			var key []byte
			if encrypted {
				key = testKey(9)
			}
			dir := t.TempDir()
			// Two crashes in a row: recovery of a recovered directory too.
			var recs map[string]int
			var maxAudit uint64
			for round := 0; round < 2; round++ {
				r, a := crashIngest(t, dir, key, 500)
				if recs == nil {
					recs = map[string]int{}
				}
				for id, s := range r {
					recs[id] = s
				}
				maxAudit = max(maxAudit, a)
			}
			db := openTest(t, Options{Dir: dir, EncryptionKey: key})
			pending := map[string]bool{}
			for _, it := range mustPending(t, db) {
				pending[it.Subject] = true
			}
			for id, subj := range recs {
				r, err := db.Record(testDept, id)
				if err != nil {
					t.Fatalf("acknowledged record %s lost: %v", id, err)
				}
				if r.Subject != testSubject(subj) {
					t.Fatalf("record %s has subject %s", id, r.Subject)
				}
				if !pending[testSubject(subj)] {
					t.Fatalf("outbox marker of acknowledged record %s lost", id)
				}
			}
			if db.CountRecords() < int64(len(recs)) {
				t.Fatalf("CountRecords = %d < %d acknowledged", db.CountRecords(), len(recs))
			}
			if seq, _ := db.Audit().Head(); seq < maxAudit {
				t.Fatalf("audit head %d < acknowledged %d", seq, maxAudit)
			}
			if err := db.Audit().Verify(); err != nil {
				t.Fatalf("audit chain after crashes: %v", err)
			}
			t.Logf("%d records and %d audit entries acknowledged before the kills", len(recs), maxAudit)
		})
	}
}

// crashIngest runs the helper on dir until it has acknowledged at least
// want records, kills it, and returns every acknowledgement it printed.
func crashIngest(t *testing.T, dir string, key []byte, want int) (map[string]int, uint64) {
	t.Helper()
	recs := map[string]int{}
	var maxAudit uint64
	killHelper(t, "TestHelperIngest", "ingest", dir, key, func(f []string) {
		switch {
		case len(f) == 3 && f[0] == "rec":
			n, _ := strconv.Atoi(f[2])
			recs[f[1]] = n
		case len(f) == 2 && f[0] == "audit":
			s, _ := strconv.ParseUint(f[1], 10, 64)
			maxAudit = max(maxAudit, s)
		}
	}, func() bool { return len(recs) >= want })
	if len(recs) < want {
		t.Fatalf("helper acknowledged only %d records before the deadline", len(recs))
	}
	return recs, maxAudit
}

// killHelper runs the helper test named test (with helperEnv = mode) on
// dir, hands each line it prints, split into fields, to record until
// enough says so (or the helper ends, or 30 s pass), then kills it with
// SIGKILL, hands on the lines it printed before dying (acknowledgements
// too), and checks it died of the kill. A line of the helper's errors
// fails the test.
func killHelper(t *testing.T, test, mode, dir string, key []byte, record func(fields []string), enough func() bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperDirEnv+"="+dir, helperKeyEnv+"="+hex.EncodeToString(key))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	take := func(line string) {
		if strings.HasPrefix(line, "error") || strings.HasPrefix(line, "open failed") {
			t.Errorf("helper: %s", line)
			return
		}
		record(strings.Fields(line))
	}
	timeout := time.After(30 * time.Second)
wait:
	for !enough() {
		select {
		case line, ok := <-lines:
			if !ok {
				break wait
			}
			take(line)
		case <-timeout:
			break wait
		}
	}
	cmd.Process.Kill() // SIGKILL
	for line := range lines {
		take(line)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper ended with %v, want killed", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want killed by SIGKILL", err)
	}
}
