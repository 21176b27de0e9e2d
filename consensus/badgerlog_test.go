package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// badgerLog is a raft.LogStore and raft.StableStore kept in a Badger
// database, the baseline that BenchmarkLogStore measures raft-wal against
// (raft-wal won: see docs/BENCHMARKS.md). Each StoreLogs call is one Badger
// transaction, synced before it returns, so one disk sync covers every entry
// raft hands over at once (raft batches up to MaxAppendEntries).
//
// The first and last indexes are cached in memory: raft asks for them on
// every append.
type badgerLog struct {
	db   *badger.DB
	sync bool // call db.Sync after writes (the database does not sync itself)

	mu          sync.Mutex
	first, last uint64
}

// newBadgerLog returns the Raft log and stable store kept in bdb. If bdb does
// not sync its writes itself (SyncWrites off), every write is followed by an
// explicit sync: raft requires its log and term to be durable.
func newBadgerLog(bdb *badger.DB) (*badgerLog, error) {
	l := &badgerLog{db: bdb, sync: !bdb.Opts().SyncWrites}
	err := bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: raftLogPrefix()})
		defer it.Close()
		it.Rewind()
		if !it.Valid() {
			return nil
		}
		l.first = binary.BigEndian.Uint64(it.Item().Key()[2:])
		rit := txn.NewIterator(badger.IteratorOptions{Prefix: raftLogPrefix(), Reverse: true})
		defer rit.Close()
		rit.Seek(raftLogKey(^uint64(0)))
		if rit.Valid() {
			l.last = binary.BigEndian.Uint64(rit.Item().Key()[2:])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("raft log: %w", err)
	}
	return l, nil
}

func raftLogPrefix() []byte { return []byte{'l', '/'} }

func raftLogKey(i uint64) []byte { return binary.BigEndian.AppendUint64(raftLogPrefix(), i) }

func raftStableKey(k []byte) []byte { return append([]byte{'k', '/'}, k...) }

// FirstIndex implements raft.LogStore.
func (l *badgerLog) FirstIndex() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first, nil
}

// LastIndex implements raft.LogStore.
func (l *badgerLog) LastIndex() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, nil
}

// GetLog implements raft.LogStore.
func (l *badgerLog) GetLog(index uint64, out *raft.Log) error {
	return l.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(raftLogKey(index))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return raft.ErrLogNotFound
		}
		if err != nil {
			return fmt.Errorf("raft log get %d: %w", index, err)
		}
		return item.Value(func(v []byte) error { return decodeBadgerLog(v, out) })
	})
}

// StoreLog implements raft.LogStore.
func (l *badgerLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore: all entries in one synced write.
func (l *badgerLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	wb := l.db.NewWriteBatch()
	defer wb.Cancel()
	for _, log := range logs {
		if err := wb.Set(raftLogKey(log.Index), encodeBadgerLog(log)); err != nil {
			return fmt.Errorf("raft log store: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("raft log store: %w", err)
	}
	if err := l.syncIfNeeded(); err != nil {
		return err
	}
	l.mu.Lock()
	if l.first == 0 || logs[0].Index < l.first {
		l.first = logs[0].Index
	}
	if last := logs[len(logs)-1].Index; last > l.last {
		l.last = last
	}
	l.mu.Unlock()
	return nil
}

// DeleteRange implements raft.LogStore (inclusive range).
func (l *badgerLog) DeleteRange(min, max uint64) error {
	wb := l.db.NewWriteBatch()
	defer wb.Cancel()
	for i := min; i <= max && i != 0; i++ {
		if err := wb.Delete(raftLogKey(i)); err != nil {
			return fmt.Errorf("raft log delete: %w", err)
		}
		if i == max {
			break
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("raft log delete: %w", err)
	}
	if err := l.syncIfNeeded(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case min <= l.first && max >= l.last:
		l.first, l.last = 0, 0
	case min <= l.first:
		l.first = max + 1
	case max >= l.last:
		l.last = min - 1
	}
	return nil
}

// Set implements raft.StableStore.
func (l *badgerLog) Set(key, val []byte) error {
	err := l.db.Update(func(txn *badger.Txn) error { return txn.Set(raftStableKey(key), val) })
	if err != nil {
		return fmt.Errorf("raft stable set: %w", err)
	}
	return l.syncIfNeeded()
}

// Get implements raft.StableStore; a missing key is an empty value.
func (l *badgerLog) Get(key []byte) ([]byte, error) {
	var out []byte
	err := l.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(raftStableKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		out, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raft stable get: %w", err)
	}
	return out, nil
}

// SetUint64 implements raft.StableStore.
func (l *badgerLog) SetUint64(key []byte, val uint64) error {
	return l.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 implements raft.StableStore; a missing key is 0.
func (l *badgerLog) GetUint64(key []byte) (uint64, error) {
	v, err := l.Get(key)
	if err != nil || len(v) == 0 {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raft stable %q: %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (l *badgerLog) syncIfNeeded() error {
	if !l.sync {
		return nil
	}
	if err := l.db.Sync(); err != nil {
		return fmt.Errorf("raft log sync: %w", err)
	}
	return nil
}

// The log encoding: version byte, then uvarint index, term, type, appended
// time (unix ns, zero if unset), and length-prefixed data and extensions.
const raftLogEncoding = 1

func encodeBadgerLog(l *raft.Log) []byte {
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+len(l.Data)+len(l.Extensions)+2*binary.MaxVarintLen64)
	b = append(b, raftLogEncoding)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.AppendVarint(b, at)
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	return append(b, l.Extensions...)
}

var errBadgerLogCorrupt = errors.New("raft log entry is corrupt")

func decodeBadgerLog(b []byte, l *raft.Log) error {
	if len(b) < 1 || b[0] != raftLogEncoding {
		return errBadgerLogCorrupt
	}
	b = b[1:]
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	var ok bool
	if l.Index, ok = next(); !ok {
		return errBadgerLogCorrupt
	}
	if l.Term, ok = next(); !ok || len(b) < 1 {
		return errBadgerLogCorrupt
	}
	l.Type = raft.LogType(b[0])
	b = b[1:]
	at, n := binary.Varint(b)
	if n <= 0 {
		return errBadgerLogCorrupt
	}
	b = b[n:]
	l.AppendedAt = time.Time{}
	if at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	for _, dst := range []*[]byte{&l.Data, &l.Extensions} {
		size, ok := next()
		if !ok || uint64(len(b)) < size {
			return errBadgerLogCorrupt
		}
		*dst = nil
		if size > 0 {
			*dst = append([]byte(nil), b[:size]...)
		}
		b = b[size:]
	}
	return nil
}
