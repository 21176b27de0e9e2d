package storage

import (
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
