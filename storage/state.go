package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// StateDB is the database of a node's replicated state: the Raft FSM's
// index, registry, catalog and revocations (the x/ family, owned by the
// consensus package). It is a Badger instance of its own, beside the
// records' database, because its writes differ in kind:
//
//   - every write can be rebuilt from the Raft log, which raft-wal syncs
//     on each append, and from snapshots, which raft syncs: the state
//     needs no sync of its own (SyncWrites off). A process crash loses
//     nothing (the operating system keeps the written pages); after a
//     power loss the state may be behind, and the consensus package
//     replays the log from the applied index the state recorded, or
//     restores the newest snapshot if the state is older than it;
//   - it has one writer, the FSM, applying one batch at a time: conflict
//     detection is wasted work (DetectConflicts off);
//   - it is written in large batches (thousands of index entries per
//     log entry): larger memtables.
//
// Encryption at rest is the same as the records' (Options.EncryptionKey).
type StateDB struct {
	raw *badger.DB
}

// State preset: two 32 MiB memtables, the records preset's caches.
const presetStateMemTableSize = 32 << 20

// OpenState opens (creating if needed) the state database in opts.Dir.
// Encryption errors are those of Open.
func OpenState(opts Options) (*StateDB, error) {
	if !opts.InMemory && opts.Dir == "" {
		return nil, errors.New("storage: open state: Options.Dir is required")
	}
	if len(opts.EncryptionKey) > 0 && !validKeyLen(len(opts.EncryptionKey)) {
		return nil, fmt.Errorf("storage: open state: %w", ErrBadKey)
	}
	bo := opts.badgerOptions().
		WithSyncWrites(false).
		WithDetectConflicts(false).
		WithMemTableSize(presetStateMemTableSize).
		WithNumMemtables(2)
	raw, err := badger.Open(bo)
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, classifyKeyMismatch(opts, err)
		}
		return nil, fmt.Errorf("storage: open state: %w", err)
	}
	return &StateDB{raw: raw}, nil
}

// IndexCacheCounts returns the hits and misses of the state's index cache
// since it opened (Options.IndexCacheSize).
func (s *StateDB) IndexCacheCounts() (hits, misses uint64) { return indexCacheCounts(s.raw) }

// Badger returns the database for the consensus package's FSM.
func (s *StateDB) Badger() *badger.DB { return s.raw }

// Close syncs and closes the database.
func (s *StateDB) Close() error {
	if err := s.raw.Sync(); err != nil {
		s.raw.Close()
		return fmt.Errorf("storage: close state: %w", err)
	}
	return s.raw.Close()
}
