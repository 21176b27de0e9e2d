package consensus

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	raftwal "github.com/hashicorp/raft-wal"
)

// BenchmarkLogStore compares the Raft log stores we could use, each syncing
// every StoreLogs call as raft requires: the node's Badger database
// (badgerLog, below), hashicorp/raft-wal and raft-boltdb (bbolt). Entries
// are the size of a small and of a large coalesced index batch; raft hands
// the store one entry at a time under light load and up to
// MaxAppendEntries at once under heavy load.
//
//	go test ./consensus -run '^$' -bench LogStore -benchtime 2000x
func BenchmarkLogStore(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) raft.LogStore
	}{
		{"badger", func(b *testing.B) raft.LogStore {
			db := openBenchBadger(b)
			l, err := newBadgerLog(db)
			if err != nil {
				b.Fatal(err)
			}
			return l
		}},
		{"raft-wal", func(b *testing.B) raft.LogStore {
			w, err := raftwal.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { w.Close() })
			return w
		}},
		{"boltdb", func(b *testing.B) raft.LogStore {
			s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(b.TempDir(), "raft.db")})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
	}
	for _, size := range []int{256, 64 << 10} {
		for _, batch := range []int{1, 64} {
			for _, st := range stores {
				b.Run(fmt.Sprintf("%s/entry=%dB/batch=%d", st.name, size, batch), func(b *testing.B) {
					s := st.open(b)
					data := make([]byte, size)
					logs := make([]*raft.Log, batch)
					next := uint64(1)
					b.SetBytes(int64(size * batch))
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						for j := range logs {
							logs[j] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: data}
							next++
						}
						if err := s.StoreLogs(logs); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
				})
			}
		}
	}
}

// openBenchBadger opens Badger the way a node does: synced writes.
func openBenchBadger(b *testing.B) *badger.DB {
	db, err := badger.Open(badger.DefaultOptions(b.TempDir()).WithLogger(nil).WithSyncWrites(true).
		WithMemTableSize(16 << 20).WithNumMemtables(2).WithBlockCacheSize(16 << 20).WithValueLogFileSize(128 << 20))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}
