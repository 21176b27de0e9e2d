package storage

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// BenchmarkSyncedCommit compares the wall time of a synced commit of the
// store with the device flushes under it, in $TMPDIR (it means something
// only on the stores' disk; on tmpfs nothing is flushed): a Badger
// transaction of one small key with SyncWrites (what every audit append
// and record write pays), an append of one small entry to a file with
// fsync, the same into a preallocated file with fdatasync (what a
// write-ahead log's segment pays), and an fsync of a file with
// nothing to write (what Badger adds: with SyncWrites, every write also
// syncs the value log, which holds nothing below the value threshold).
// docs/BENCHMARKS.md, "What the syncs cost a lookup".
//
//	go test ./storage -run XXX -bench SyncedCommit -benchtime 2000x -count 3
func BenchmarkSyncedCommit(b *testing.B) {
	entry := make([]byte, 600) // about an audit entry
	b.Run("badger-txn", func(b *testing.B) {
		db := openBench(b, false)
		key := []byte("z/bench")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			entry[0] = byte(i)
			if err := db.Badger().Update(func(txn *badger.Txn) error { return txn.Set(key, entry) }); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("file-append-fsync", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "log"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := f.Write(entry); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("file-preallocated-fdatasync", func(b *testing.B) {
		// As a segment file of a write-ahead log: written with zeros
		// first, so that an append changes no metadata.
		f, err := os.Create(filepath.Join(b.TempDir(), "segment"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		zeros := make([]byte, 1<<20)
		for range 16 {
			if _, err := f.Write(zeros); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := f.WriteAt(entry, int64(i%(16<<20/len(entry)))*int64(len(entry))); err != nil {
				b.Fatal(err)
			}
			if err := syscall.Fdatasync(int(f.Fd())); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("file-idle-fsync", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "idle"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(entry); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
