package storage

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// Every benchmark runs with encryption on (as in production) once with the
// small-machine preset and once with badger.DefaultOptions + SyncWrites
// (the baseline; its 256 MiB block cache is what encryption needs).
var benchPresets = []struct {
	name     string
	baseline bool
}{{"small", false}, {"default", true}}

func openBench(b *testing.B, baseline bool) *DB {
	b.Helper()
	return openTest(b, Options{EncryptionKey: testKey(3), baseline: baseline})
}

func benchRecords(prefix string, n, subjects int, next *int) []credit.Record {
	recs := make([]credit.Record, n)
	for i := range recs {
		*next++
		recs[i] = testRecord(fmt.Sprintf("%s%09d", prefix, *next), *next%subjects)
	}
	return recs
}

func reportRecords(b *testing.B, perOp int) {
	b.ReportMetric(float64(b.N*perOp)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkSubmit: one caller submitting batches one after the other; each
// batch is one synced transaction.
func BenchmarkSubmit(b *testing.B) {
	for _, p := range benchPresets {
		for _, batch := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("preset=%s/batch=%d", p.name, batch), func(b *testing.B) {
				db := openBench(b, p.baseline)
				next := 0
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					recs := benchRecords("S", batch, 1<<30, &next)
					b.StartTimer()
					if _, err := db.SubmitRecords(recs); err != nil {
						b.Fatal(err)
					}
				}
				reportRecords(b, batch)
				reportAnonRSS(b)
			})
		}
	}
}

// BenchmarkSubmitConcurrent: 64 goroutines each submitting single records,
// which the committer coalesces (group commit).
func BenchmarkSubmitConcurrent(b *testing.B) {
	for _, p := range benchPresets {
		b.Run("preset="+p.name+"/goroutines=64", func(b *testing.B) {
			db := openBench(b, p.baseline)
			var next atomic.Int64
			b.SetParallelism(64 / max(1, runtimeProcs()))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := int(next.Add(1))
					r := testRecord(fmt.Sprintf("P%09d", n), n)
					if _, err := db.SubmitRecords([]credit.Record{r}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRecords(b, 1)
		})
	}
}

// BenchmarkGroupCommit compares the committer with what Badger does on its
// own: 64 goroutines each committing their own synced transaction with the
// same reads and writes as an accepted record (Badger merges them into one
// write but syncs the WAL once per transaction).
func BenchmarkGroupCommit(b *testing.B) {
	b.Run("committer", func(b *testing.B) {
		db := openBench(b, false)
		var next atomic.Int64
		b.SetParallelism(64 / max(1, runtimeProcs()))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				n := int(next.Add(1))
				if _, err := db.SubmitRecords([]credit.Record{testRecord(fmt.Sprintf("G%09d", n), n)}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportRecords(b, 1)
	})
	b.Run("txn-per-caller", func(b *testing.B) {
		db := openBench(b, false)
		var next atomic.Int64
		b.SetParallelism(64 / max(1, runtimeProcs()))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				n := int(next.Add(1))
				r := testRecord(fmt.Sprintf("G%09d", n), n)
				r.RecordedAt = r.RecordedAt.UTC()
				enc, _ := encodeRecord(&r)
				err := db.Badger().Update(func(txn *badger.Txn) error {
					if _, err := txn.Get(recordKey(r.Department, r.ID)); err != badger.ErrKeyNotFound {
						return fmt.Errorf("unexpected: %v", err)
					}
					for _, kv := range [][2][]byte{
						{recordKey(r.Department, r.ID), enc},
						{subjectKey(r.Subject, r.Department, r.ID), encodeFacts(&r)},
						{outboxKey(r.Subject), be64(uint64(n))},
					} {
						if err := txn.Set(kv[0], kv[1]); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		reportRecords(b, 1)
	})
}

// BenchmarkRecordsBySubject: point reads of one subject's records (4 each)
// in a store of 50,000 records, more than either preset's memtables hold
// after flushing, read at random.
func BenchmarkRecordsBySubject(b *testing.B) {
	const records, subjects = 50_000, 12_500
	for _, p := range benchPresets {
		b.Run("preset="+p.name, func(b *testing.B) {
			db := openBench(b, p.baseline)
			next := 0
			for next < records {
				if _, err := db.SubmitRecords(benchRecords("R", 1000, subjects, &next)); err != nil {
					b.Fatal(err)
				}
			}
			rng := rand.New(rand.NewPCG(1, 2))
			b.ResetTimer()
			got := 0
			for i := 0; i < b.N; i++ {
				rs, err := db.RecordsBySubject(testSubject(rng.IntN(subjects)))
				if err != nil {
					b.Fatal(err)
				}
				got += len(rs)
			}
			if got != 4*b.N {
				b.Fatalf("read %d records in %d lookups", got, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
			reportRecords(b, 4)
			reportAnonRSS(b)
		})
	}
}

// runtimeProcs is GOMAXPROCS: RunParallel starts parallelism × GOMAXPROCS
// goroutines.
func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// reportAnonRSS reports the process's anonymous resident memory (Go heap,
// Badger's memtable arenas and caches; not the mmapped table and log files,
// which the kernel can drop) on Linux.
func reportAnonRSS(b *testing.B) {
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err == nil {
				b.ReportMetric(float64(kb)/1024, "anon-MiB")
			}
		}
	}
}

// BenchmarkSubmitDue: the cost of the sweep's due marker (one per record)
// on intake (small preset, batches of 1,000): the same submissions with and
// without Options.Boundaries, in one run.
func BenchmarkSubmitDue(b *testing.B) {
	for _, due := range []bool{false, true} {
		b.Run(fmt.Sprintf("markers=%v", due), func(b *testing.B) {
			opts := Options{EncryptionKey: testKey(3)}
			if due {
				opts.Boundaries = tenDays // one day per record, as the node's
			}
			db := openTest(b, opts)
			next := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				recs := benchRecords("D", 1000, 1<<30, &next)
				for j := range recs {
					recs[j].DecidedOn += credit.Date(next % 365) // spread the due days
				}
				b.StartTimer()
				if _, err := db.SubmitRecords(recs); err != nil {
					b.Fatal(err)
				}
			}
			reportRecords(b, 1000)
		})
	}
}

// BenchmarkReleaseDue: a sweep releasing the markers of 10,000 subjects
// (DueSubjects then ReleaseDue, 10 synced transactions of at most 1,024
// markers, each marking its subjects in the outbox).
func BenchmarkReleaseDue(b *testing.B) {
	const subjects = 10000
	db := openTest(b, Options{EncryptionKey: testKey(3), Boundaries: tenDays})
	next := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		recs := benchRecords("R", subjects, 1<<30, &next)
		if _, err := db.SubmitRecords(recs); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		n, err := releaseThrough(db, recs[0].DecidedOn+10)
		if err != nil || n != subjects {
			b.Fatalf("released %d, %v", n, err)
		}
	}
	b.ReportMetric(float64(b.N*subjects)/b.Elapsed().Seconds(), "subjects/s")
}

// benchAuditEntry is a coordinator's lookup entry as lookup.Service and
// audit.Recorder fill it (caller, requester's role and institution, stated
// fields, lookup id, pseudonym, node), with two record ids.
func benchAuditEntry(n int) AuditEntry {
	return AuditEntry{
		Node:          "tianjin",
		Caller:        "spiffe://credfed.test/coordinator/tianjin/city-credit-office",
		Role:          "coordinator",
		Institution:   "city-credit-office",
		User:          "u-17",
		Operation:     "lookup",
		Purpose:       "recruitment",
		Reference:     "case-" + strconv.Itoa(n),
		Authorization: "auth-2026-0001",
		Subject:       pseudonym(n % 1000),
		Records:       []string{"A1-000001", "A1-000002"},
		Decision:      DecisionAllowed,
		LookupID:      "lk-" + strconv.Itoa(n),
	}
}

// BenchmarkAuditAppend: 64 goroutines each appending one lookup entry at a
// time (the appender chains and commits every waiting entry in one synced
// transaction); ns/op is per entry, and so is cpu-ns/op, the process's CPU
// time (user and system, every goroutine's and Badger's): ns/op is mostly
// waiting for the sync.
func BenchmarkAuditAppend(b *testing.B) {
	for _, p := range benchPresets {
		b.Run("preset="+p.name+"/goroutines=64", func(b *testing.B) {
			db := openBench(b, p.baseline)
			l := db.Audit()
			var next atomic.Int64
			b.SetParallelism(64 / max(1, runtimeProcs()))
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := l.Append(benchAuditEntry(int(next.Add(1)))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			reportCPU(b, cpu)
			if seq, _ := l.Head(); seq != uint64(next.Load()) {
				b.Fatalf("head at %d after %d appends", seq, next.Load())
			}
		})
	}
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time since since per op as cpu-ns/op.
func reportCPU(b *testing.B, since time.Duration) {
	if now := processCPU(); now > 0 && since > 0 {
		b.ReportMetric(float64(now-since)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkAuditScan: the bulk reads of the audit log (Range, Verify) over
// 20,000 entries, as a reviewer's export or a verification walks it.
func BenchmarkAuditScan(b *testing.B) {
	db := openBench(b, false)
	l := db.Audit()
	const n = 20000
	for i := 0; i < n; i += 500 {
		batch := make([]AuditEntry, 500)
		for k := range batch {
			batch[k] = benchAuditEntry(i + k)
		}
		if _, err := l.Append(batch...); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("range", func(b *testing.B) {
		b.ReportAllocs()
		cpu := processCPU()
		for b.Loop() {
			count := 0
			if err := l.Range(1, 0, func(AuditEntry) error { count++; return nil }); err != nil || count != n {
				b.Fatalf("range: %d entries, %v", count, err)
			}
		}
		reportCPU(b, cpu)
	})
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		cpu := processCPU()
		for b.Loop() {
			if err := l.Verify(); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu)
	})
}
