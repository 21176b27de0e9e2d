package consensus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// Generations of the replicated state (DESIGN.md, "Snapshot restore").
// Bookkeeping keys live under x/_/, which no logical key uses:
//
//	x/_/live            → be64: the live generation (absent: generation 0)
//	x/_/g/<n:be64>/…    → generation n ≥ 1: logical key x/<rest> at x/_/g/<n>/<rest>
//	x/_/flush/          → nothing, ever: syncState drops it to flush memtables
var (
	prefixReserved    = []byte("x/_/")
	keyLive           = []byte("x/_/live")
	prefixFlush       = []byte("x/_/flush/")
	prefixGenerations = []byte("x/_/g/")
	// afterReserved is the first key after every key under x/_/.
	afterReserved = []byte("x/_0")
)

// families are generation 0's key families: generation 0 is stored at
// the logical keys, so dropping it means dropping each of these.
var families = [][]byte{prefixAnchor, prefixCatalog, prefixEntry, prefixJoinToken, prefixKeySealed, prefixKeyState, prefixMeta, prefixRegion, prefixRevocation, prefixWatermark}

// generation is one complete copy of the replicated state on disk.
type generation struct {
	n    uint64
	root []byte // x/ for generation 0, x/_/g/<n>/ otherwise
	// readers counts the reads that resolved to this generation and have
	// not finished (State.acquire): a generation that has been replaced
	// is dropped only once none is left.
	readers atomic.Int64
}

func newGeneration(n uint64) *generation {
	if n == 0 {
		return &generation{root: prefixState}
	}
	root := binary.BigEndian.AppendUint64(append([]byte(nil), prefixGenerations...), n)
	return &generation{n: n, root: append(root, '/')}
}

// key returns where the logical key (under x/) is stored in g.
func (g *generation) key(logical []byte) []byte {
	if g.n == 0 {
		return logical
	}
	k := make([]byte, 0, len(g.root)+len(logical)-len(prefixState))
	return append(append(k, g.root...), logical[len(prefixState):]...)
}

// logical returns the logical key of a key stored in g (a new slice).
func (g *generation) logical(physical []byte) []byte {
	k := make([]byte, 0, len(prefixState)+len(physical)-len(g.root))
	return append(append(k, prefixState...), physical[len(g.root):]...)
}

// prefixes are what DropPrefix must drop to remove g.
func (g *generation) prefixes() [][]byte {
	if g.n == 0 {
		return families
	}
	return [][]byte{g.root}
}

// release ends a read of g begun by State.acquire.
func (g *generation) release() { g.readers.Add(-1) }

// validLogical reports whether a key read from a snapshot may be restored:
// under x/, outside the bookkeeping.
func validLogical(k []byte) bool {
	return bytes.HasPrefix(k, prefixState) && !bytes.HasPrefix(k, prefixReserved)
}

// liveGeneration reads the pointer.
func liveGeneration(txn *badger.Txn) (uint64, error) {
	item, err := txn.Get(keyLive)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n uint64
	err = item.Value(func(b []byte) error {
		if len(b) != 8 {
			return fmt.Errorf("%s holds %d bytes", keyLive, len(b))
		}
		n = binary.BigEndian.Uint64(b)
		return nil
	})
	return n, err
}

// storedGenerations lists the generations ≥ 1 that have keys on disk,
// seeking from one to the next (it reads one key per generation), and
// whether generation 0 has any.
func storedGenerations(txn *badger.Txn) (gens []uint64, zero bool) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixGenerations})
	defer it.Close()
	for it.Rewind(); it.Valid(); {
		k := it.Item().Key()
		if len(k) < len(prefixGenerations)+8 {
			it.Next() // not a generation's key; cannot be written, but skip it
			continue
		}
		n := binary.BigEndian.Uint64(k[len(prefixGenerations):])
		gens = append(gens, n)
		if n == ^uint64(0) {
			break
		}
		it.Seek(newGeneration(n + 1).root)
	}
	for _, f := range families {
		fi := txn.NewIterator(badger.IteratorOptions{Prefix: f})
		fi.Rewind()
		zero = zero || fi.Valid()
		fi.Close()
	}
	return gens, zero
}

// syncState makes every write committed so far durable, power loss
// included. With SyncWrites off, db.Sync alone is not enough: it syncs the
// active memtable's WAL and the value log, but a memtable that filled up
// and waits for its flush has a WAL that Badger never syncs, and a large
// restore leaves several. DropPrefix first flushes every such memtable
// into synced tables (recorded in the synced manifest), and only then
// looks for keys to drop: called with a prefix under which nothing is
// ever written, it is that flush alone (badger v4 db.go, prepareToDrop).
// db.Sync then covers the active memtable and the value log.
func syncState(db *badger.DB) error {
	if err := db.DropPrefix(prefixFlush); err != nil {
		return err
	}
	return db.Sync()
}
