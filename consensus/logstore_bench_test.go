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
// (badgerLog, below), hashicorp/raft-wal (plain, and encrypted at rest as
// a node with an encryption key runs it) and raft-boltdb (bbolt). Entries
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
		// raft-wal behind the encryption at rest of issue 9 (atrest.go),
		// as a node with an encryption key runs it.
		{"raft-wal-encrypted", func(b *testing.B) raft.LogStore {
			w, err := raftwal.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { w.Close() })
			l, err := newEncryptedLog(w, testNodeKey)
			if err != nil {
				b.Fatal(err)
			}
			return l
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

// BenchmarkLogEncryption: the CPU cost of the encryption at rest alone
// (atrest.go), without a disk: StoreLogs into a store that keeps nothing
// but the last batch, then GetLog of each entry, per entry size. Metric:
// MB/s of entry data encrypted and decrypted.
//
//	go test ./consensus -run '^$' -bench LogEncryption
func BenchmarkLogEncryption(b *testing.B) {
	for _, size := range []int{256, 64 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("entry=%dB", size), func(b *testing.B) {
			mem := &lastBatchStore{}
			l, err := newEncryptedLog(mem, testNodeKey)
			if err != nil {
				b.Fatal(err)
			}
			data := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			var out raft.Log
			for i := 0; i < b.N; i++ {
				if err := l.StoreLogs([]*raft.Log{{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
					b.Fatal(err)
				}
				if err := l.GetLog(uint64(i+1), &out); err != nil || len(out.Data) != size {
					b.Fatal(err)
				}
			}
		})
	}
}

// lastBatchStore is a log store that keeps only the last batch stored (a
// benchmark's disk-less inner store).
type lastBatchStore struct {
	logs   []*raft.Log
	stable map[string][]byte
}

func (s *lastBatchStore) FirstIndex() (uint64, error) { return 0, nil }
func (s *lastBatchStore) LastIndex() (uint64, error)  { return 0, nil }
func (s *lastBatchStore) GetLog(i uint64, out *raft.Log) error {
	for _, l := range s.logs {
		if l.Index == i {
			*out = *l
			return nil
		}
	}
	return raft.ErrLogNotFound
}
func (s *lastBatchStore) StoreLog(l *raft.Log) error         { return s.StoreLogs([]*raft.Log{l}) }
func (s *lastBatchStore) StoreLogs(logs []*raft.Log) error   { s.logs = logs; return nil }
func (s *lastBatchStore) DeleteRange(uint64, uint64) error   { return nil }
func (s *lastBatchStore) IsMonotonic() bool                  { return true }
func (s *lastBatchStore) Set(k, v []byte) error              { s.stableMap()[string(k)] = v; return nil }
func (s *lastBatchStore) Get(k []byte) ([]byte, error)       { return s.stableMap()[string(k)], nil }
func (s *lastBatchStore) SetUint64(k []byte, v uint64) error { return nil }
func (s *lastBatchStore) GetUint64(k []byte) (uint64, error) { return 0, nil }
func (s *lastBatchStore) stableMap() map[string][]byte {
	if s.stable == nil {
		s.stable = map[string][]byte{}
	}
	return s.stable
}
