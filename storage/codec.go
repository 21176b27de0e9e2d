package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"credfed/credit"
)

// encMode and decMode are built once and shared (both are safe for
// concurrent use).
//
// Encoding is Core Deterministic (sorted keys, shortest forms, no indefinite
// lengths) so that an audit entry hashes the same on every node and every
// run. Times are RFC 3339 strings with nanoseconds, which round-trip exactly
// (the default integer seconds would silently truncate).
//
// Decoding of stored data is strict even though we wrote it: bounded nesting,
// arrays and maps, duplicate keys and indefinite lengths refused, no tags,
// unknown fields refused (a field this build does not know means the data
// was written by something else).
var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	eo := cbor.CoreDetEncOptions()
	eo.Time = cbor.TimeRFC3339Nano
	eo.TimeTag = cbor.EncTagNone
	var err error
	if encMode, err = eo.EncMode(); err != nil {
		panic("storage: cbor encode mode: " + err.Error())
	}
	do := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  maxAuditRecords,
		MaxMapPairs:       64,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}
	if decMode, err = do.DecMode(); err != nil {
		panic("storage: cbor decode mode: " + err.Error())
	}
}

func encodeRecord(r *credit.Record) ([]byte, error) {
	b, err := encMode.Marshal(r)
	if err != nil {
		// The cbor error names a Go type, never a value.
		return nil, fmt.Errorf("%w: encode: %v", ErrInvalidRecord, err)
	}
	return b, nil
}

func decodeRecord(b []byte) (credit.Record, error) {
	var r credit.Record
	if err := decMode.Unmarshal(b, &r); err != nil {
		return credit.Record{}, fmt.Errorf("%w: record does not decode", ErrCorrupt)
	}
	return r, nil
}

// The value of a subject index entry s/<subject>\x00<department>\x00<id>
// is the record's summary fields (credit.Record.SummaryFields) in a fixed
// binary form: factsTag, the decision date (be32), the status's length (one
// byte), the status, then the catalog item to the end. A publisher reads
// these instead of the record to compute its subject's summary. An entry
// written before the value existed is empty, and its record is read.
const factsTag = 1

// encodeFacts returns the subject index value of r (empty if its status
// does not fit in the length byte: the record is then read instead).
func encodeFacts(r *credit.Record) []byte {
	if len(r.Status) > 255 {
		return []byte{}
	}
	b := make([]byte, 0, 6+len(r.Status)+len(r.CatalogItem))
	b = append(b, factsTag)
	b = binary.BigEndian.AppendUint32(b, uint32(r.DecidedOn))
	b = append(b, byte(len(r.Status)))
	b = append(b, r.Status...)
	return append(b, r.CatalogItem...)
}

// decodeFacts decodes a subject index value; ok is false for an empty one
// (read the record instead).
func decodeFacts(b []byte) (_ credit.Record, ok bool, err error) {
	if len(b) == 0 {
		return credit.Record{}, false, nil
	}
	if len(b) < 6 || b[0] != factsTag || len(b) < 6+int(b[5]) {
		return credit.Record{}, false, fmt.Errorf("%w: a subject index entry does not decode", ErrCorrupt)
	}
	n := int(b[5])
	return credit.Record{
		DecidedOn:   credit.Date(int32(binary.BigEndian.Uint32(b[1:5]))),
		Status:      credit.Status(b[6 : 6+n]),
		CatalogItem: string(b[6+n:]),
	}, true, nil
}
