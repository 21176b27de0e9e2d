package storage

import (
	"bytes"
	"container/heap"
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/fxamacker/cbor/v2"

	"credfed/credit"
)

// Newest-recorded-first scans of the records, for the public disclosure
// list (package disclosure).
//
// There is no index by recording time: the committer (records.go) is the
// only writer of record keys and keeps no such family, so NewestRecords
// reads every latest version under r/ once, in one read transaction. A
// value that does not hold one of the wanted catalog items is skipped
// undecoded; of the others it decodes only the head (catalog item, dates,
// district, status) with a lenient mode built once, asks the caller
// whether the head is wanted, and keeps the best limit positions in a
// bounded heap; only those records are decoded whole, at the end. A page costs one pass over r/ and
// O(limit) memory, whatever the number of records.

// TieSize is the size of RecordPosition.Tie.
const TieSize = 16

// MaxNewest bounds the records one NewestRecords call returns.
const MaxNewest = 1000

// RecordPosition is where a record stands in the newest-recorded-first
// order: its first recording time (version 1's RecordedAt, so that a
// correction or a status change does not move it), descending; then its
// district, ascending; then its Tie, ascending. Tie is the first TieSize
// bytes of SHA-256 of "<department>\x00<id>": positions are unique within a
// district and tell nothing of the record's id.
type RecordPosition struct {
	RecordedAt time.Time
	District   string
	Tie        [TieSize]byte
}

// Before reports whether p comes before q in the order (p is newer).
func (p RecordPosition) Before(q RecordPosition) bool {
	if a, b := p.RecordedAt.UnixNano(), q.RecordedAt.UnixNano(); a != b {
		return a > b
	}
	if p.District != q.District {
		return p.District < q.District
	}
	return bytes.Compare(p.Tie[:], q.Tie[:]) < 0
}

// RecordTie is the Tie of the record (department, id).
func RecordTie(department, id string) [TieSize]byte {
	h := sha256.New()
	h.Write([]byte(department))
	h.Write([]byte{0})
	h.Write([]byte(id))
	var t [TieSize]byte
	copy(t[:], h.Sum(nil))
	return t
}

// RecordHead is the part of a record's latest version that NewestRecords
// decides on before decoding the rest.
type RecordHead struct {
	CatalogItem string
	DecidedOn   credit.Date
	District    string
	Status      credit.Status
	Version     int
	// RecordedAt is the latest version's recording time.
	RecordedAt time.Time
}

// Newest is one record of a NewestRecords page and its position.
type Newest struct {
	Record   credit.Record
	Position RecordPosition
}

// recordHead decodes the head of a stored record (credit.Record's CBOR
// keys); the other fields are skipped.
type recordHead struct {
	CatalogItem string        `cbor:"3,keyasint"`
	DecidedOn   credit.Date   `cbor:"6,keyasint"`
	District    string        `cbor:"9,keyasint"`
	Status      credit.Status `cbor:"13,keyasint"`
	Version     int           `cbor:"14,keyasint"`
	RecordedAt  time.Time     `cbor:"16,keyasint"`
}

// headMode is decMode without the refusal of unknown fields, so that a
// head skips what it does not name, and without the tracking of duplicate
// keys, which costs a map per record (the records a page returns are
// decoded again whole, strictly, with decMode); every other limit is the
// same.
var headMode = func() cbor.DecMode {
	do := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyQuiet,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: maxAuditRecords,
		MaxMapPairs:      64,
		UTF8:             cbor.UTF8RejectInvalid,
	}
	m, err := do.DecMode()
	if err != nil {
		panic("storage: cbor head decode mode: " + err.Error())
	}
	return m
}()

// NewestQuery is what NewestRecords is asked.
type NewestQuery struct {
	// After is the position the page starts after (nil: from the newest).
	After *RecordPosition
	// Limit is the most records returned, at most MaxNewest; <= 0 returns
	// nothing.
	Limit int
	// Items, if not empty, are the only catalog items considered: the
	// stored value of a record of another is not decoded at all.
	Items []string
	// Keep, if not nil, decides on a record's head.
	Keep func(RecordHead) bool
}

// NewestRecords returns at most q.Limit of the records of q.Items whose
// head q.Keep admits, in the newest-recorded-first order
// (RecordPosition), starting after q.After. The page is read from one
// snapshot.
func (db *DB) NewestRecords(q NewestQuery) ([]Newest, error) {
	if q.Limit <= 0 {
		return nil, nil
	}
	limit := min(q.Limit, MaxNewest)
	// A record's CBOR holds its catalog item as key 3 followed by the
	// code's text: a record whose value holds none of these patterns is
	// of another item. (One that holds one by chance in its summary is
	// decoded and told apart by its head.)
	var patterns [][]byte
	for _, code := range q.Items {
		b, err := encMode.Marshal(code)
		if err != nil {
			return nil, fmt.Errorf("storage: newest records: %w: catalog item does not encode", ErrInvalidRecord)
		}
		patterns = append(patterns, append([]byte{3}, b...))
	}
	after := q.After
	var out []Newest
	err := db.view(func(txn *badger.Txn) error {
		best := &positionHeap{}
		pfx := prefix(famRecord, 0)
		it := newIterator(txn, pfx)
		defer it.Close()
		for it.Seek(pfx); it.ValidForPrefix(pfx); it.Next() {
			item := it.Item()
			var h recordHead
			var decErr error
			wanted := true
			if err := item.Value(func(v []byte) error {
				if len(patterns) > 0 {
					wanted = slices.ContainsFunc(patterns, func(p []byte) bool { return bytes.Contains(v, p) })
					if !wanted {
						return nil
					}
				}
				decErr = headMode.Unmarshal(v, &h)
				return nil
			}); err != nil {
				return engine(err)
			}
			if !wanted {
				continue
			}
			if decErr != nil {
				return fmt.Errorf("%w: record head does not decode", ErrCorrupt)
			}
			if len(q.Items) > 0 && !slices.Contains(q.Items, h.CatalogItem) {
				continue
			}
			if q.Keep != nil && !q.Keep(RecordHead{CatalogItem: h.CatalogItem, DecidedOn: h.DecidedOn, District: h.District,
				Status: h.Status, Version: h.Version, RecordedAt: h.RecordedAt}) {
				continue
			}
			key := item.KeyCopy(nil)
			dept, id, ok := splitDeptID(key[len(pfx):])
			if !ok {
				return fmt.Errorf("%w: malformed record key", ErrCorrupt)
			}
			first := h.RecordedAt
			if h.Version > 1 {
				v1, found, err := getRecord(txn, versionKey(dept, id, 1))
				if err != nil {
					return err
				}
				if found {
					first = v1.RecordedAt
				}
			}
			pos := RecordPosition{RecordedAt: first, District: h.District, Tie: RecordTie(dept, id)}
			if after != nil && !after.Before(pos) {
				continue
			}
			if best.Len() == limit {
				if !pos.Before((*best)[0].pos) {
					continue
				}
				heap.Pop(best)
			}
			heap.Push(best, positioned{pos: pos, key: key})
		}
		page := []positioned(*best)
		sort.Slice(page, func(i, j int) bool { return page[i].pos.Before(page[j].pos) })
		out = make([]Newest, 0, len(page))
		for _, p := range page {
			rec, found, err := getRecord(txn, p.key)
			if err != nil {
				return err
			}
			if !found {
				return fmt.Errorf("%w: a record vanished from a read snapshot", ErrCorrupt)
			}
			out = append(out, Newest{Record: rec, Position: p.pos})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: newest records: %w", err)
	}
	return out, nil
}

// positioned is a record key and its position.
type positioned struct {
	pos RecordPosition
	key []byte
}

// positionHeap keeps the best positions seen, the last of them (the
// oldest) on top, so that a better one replaces it.
type positionHeap []positioned

func (h positionHeap) Len() int           { return len(h) }
func (h positionHeap) Less(i, j int) bool { return h[j].pos.Before(h[i].pos) }
func (h positionHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *positionHeap) Push(x any)        { *h = append(*h, x.(positioned)) }
func (h *positionHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
