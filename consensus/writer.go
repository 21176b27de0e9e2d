package consensus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/dgraph-io/badger/v4"
)

// writer applies a batch of log entries to Badger, within one generation
// of the state: its callers use logical keys (state.go), which it maps to
// the generation's. Each command's writes are staged in memory and reach
// the transaction only when the command succeeds (keep), so a refused
// command changes nothing (drop). Reads see staged writes first. A
// transaction that grows too big is committed and a new one started: a
// replay after a crash in between re-applies the entry whose writes were
// split, which is harmless because every command is idempotent on the
// state it leaves.
type writer struct {
	db     *badger.DB
	gen    *generation
	txn    *badger.Txn
	staged map[string]stagedValue
}

type stagedValue struct {
	val     []byte
	deleted bool
}

func newWriter(db *badger.DB, g *generation) *writer {
	return &writer{db: db, gen: g, txn: db.NewTransaction(true), staged: map[string]stagedValue{}}
}

// get returns the value of key (a copy) and whether it exists.
func (w *writer) get(key []byte) ([]byte, bool) {
	if s, ok := w.staged[string(key)]; ok {
		return s.val, !s.deleted
	}
	item, err := w.txn.Get(w.gen.key(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false
	}
	if err != nil {
		panic(fmt.Sprintf("consensus: read %q: %v", key, err))
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		panic(fmt.Sprintf("consensus: read %q: %v", key, err))
	}
	return v, true
}

func (w *writer) has(key []byte) bool {
	_, ok := w.get(key)
	return ok
}

// getCBOR decodes the value of key into v and reports whether it existed.
func (w *writer) getCBOR(key []byte, v any) bool {
	b, ok := w.get(key)
	if !ok {
		return false
	}
	if err := decMode.Unmarshal(b, v); err != nil {
		panic(fmt.Sprintf("consensus: state key %q is corrupt: %v", key, err))
	}
	return true
}

func (w *writer) getUint(key []byte) uint64 {
	b, ok := w.get(key)
	if !ok {
		return 0
	}
	switch len(b) {
	case 8:
		return binary.BigEndian.Uint64(b)
	case 4:
		return uint64(binary.BigEndian.Uint32(b))
	}
	panic(fmt.Sprintf("consensus: state key %q holds %d bytes", key, len(b)))
}

func (w *writer) set(key, val []byte) { w.staged[string(key)] = stagedValue{val: val} }

func (w *writer) setCBOR(key []byte, v any) {
	b, err := encMode.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("consensus: encode state %q: %v", key, err))
	}
	w.set(key, b)
}

func (w *writer) setUint(key []byte, v uint64) { w.set(key, binary.BigEndian.AppendUint64(nil, v)) }

func (w *writer) setUint32(key []byte, v uint32) { w.set(key, binary.BigEndian.AppendUint32(nil, v)) }

func (w *writer) delete(key []byte) { w.staged[string(key)] = stagedValue{deleted: true} }

// put writes straight into the transaction, past the staging: for writes
// that can no longer be refused (an authorized index group, the applied
// index), which are most of the log. The key must not be staged.
func (w *writer) put(key, val []byte) {
	key = w.gen.key(key)
	for {
		err := w.txn.Set(key, val)
		if errors.Is(err, badger.ErrTxnTooBig) {
			w.renew()
			continue
		}
		if err != nil {
			panic(fmt.Sprintf("consensus: write state: %v", err))
		}
		return
	}
}

// scanKeys calls fn for every existing key under prefix, staged writes
// included, in key order.
func (w *writer) scanKeys(prefix []byte, fn func(key []byte)) {
	seen := map[string]bool{}
	var keys []string
	it := w.txn.NewIterator(badger.IteratorOptions{Prefix: w.gen.key(prefix)})
	for it.Rewind(); it.Valid(); it.Next() {
		k := string(w.gen.logical(it.Item().Key()))
		seen[k] = true
		if s, ok := w.staged[k]; ok && s.deleted {
			continue
		}
		keys = append(keys, k)
	}
	it.Close()
	for k, s := range w.staged {
		if !s.deleted && !seen[k] && bytes.HasPrefix([]byte(k), prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fn([]byte(k))
	}
}

// keep moves the staged writes of a successful command into the
// transaction.
func (w *writer) keep() {
	keys := make([]string, 0, len(w.staged))
	for k := range w.staged {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic order, not that Badger cares
	for _, k := range keys {
		s := w.staged[k]
		key := w.gen.key([]byte(k))
		for {
			var err error
			if s.deleted {
				err = w.txn.Delete(key)
			} else {
				err = w.txn.Set(key, s.val)
			}
			if errors.Is(err, badger.ErrTxnTooBig) {
				w.renew()
				continue
			}
			if err != nil {
				panic(fmt.Sprintf("consensus: stage write: %v", err))
			}
			break
		}
	}
	clear(w.staged)
}

// drop forgets the staged writes of a refused command.
func (w *writer) drop() { clear(w.staged) }

// renew commits the transaction and starts a new one.
func (w *writer) renew() {
	if err := w.txn.Commit(); err != nil {
		panic(fmt.Sprintf("consensus: commit state: %v", err))
	}
	w.txn = w.db.NewTransaction(true)
}

// commit keeps anything staged and commits the transaction.
func (w *writer) commit() error {
	w.keep()
	return w.txn.Commit()
}

// discard releases the transaction (after commit it is a no-op).
func (w *writer) discard() { w.txn.Discard() }
