package storage

import (
	"testing"
)

// TestIndexCacheHoldsTheIndexes: with encryption on, a table index not in
// the cache is read and decrypted again at every read that touches its
// table. With the default cache, reads after the first of each table find
// its index cached; with a cache too small for the indexes (as the 16 MiB
// preset was for a district of 3 M records), nearly every read misses.
func TestIndexCacheHoldsTheIndexes(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 40,000 records twice (-short)")
	}
	misses := func(cache int64) (uint64, uint64, int) {
		dir := t.TempDir()
		db, err := Open(Options{Dir: dir, EncryptionKey: testKey(3), GCInterval: -1, IndexCacheSize: cache})
		if err != nil {
			t.Fatal(err)
		}
		next := 0
		for range 40 {
			mustSubmit(t, db, benchRecords("R", 1000, 40_000, &next)...)
		}
		if err := db.Close(); err != nil { // the memtables become tables
			t.Fatal(err)
		}
		db = openTest(t, Options{Dir: dir, EncryptionKey: testKey(3), IndexCacheSize: cache})
		tables := len(db.raw.Tables())
		_, before := db.IndexCacheCounts()
		for i := range 2000 {
			recs, err := db.RecordsBySubject(testSubject(i * 19 % 40_000))
			if err != nil || len(recs) != 1 {
				t.Fatalf("subject %d: %d records, %v", i, len(recs), err)
			}
		}
		hits, after := db.IndexCacheCounts()
		return after - before, hits, tables
	}
	small, _, tables := misses(64 << 10)
	big, hits, _ := misses(0)
	if hits < 2000 {
		t.Fatalf("%d index cache hits counted over 2,000 reads with the default cache", hits)
	}
	t.Logf("%d tables: %d index cache misses with 64 KiB, %d with the default", tables, small, big)
	if tables < 2 {
		t.Fatalf("%d tables: the test needs the records in several tables", tables)
	}
	if big > uint64(4*tables) || small < 20*big+100 {
		t.Fatalf("index cache misses over 2,000 reads of %d tables: %d with the default, %d with 64 KiB", tables, big, small)
	}
}
