package disclosure

import (
	"encoding/base64"
	"time"

	"credfed/exchange"
	"credfed/fault"
	"credfed/storage"
)

// A cursor is the place of the last entry of a page
// (storage.RecordPosition): its first recording time in nanoseconds, its
// district and its tie (a digest of department and id, never the id). It
// travels as base64url (no padding) of a CBOR map, version first, and is
// opaque to clients. Any place is a valid cursor: it only says where the
// next page starts.
type cursor struct {
	Version  int    `cbor:"1,keyasint"`
	At       int64  `cbor:"2,keyasint"`
	District string `cbor:"3,keyasint"`
	Tie      []byte `cbor:"4,keyasint"`
}

const (
	cursorVersion = 1
	// maxCursor bounds a cursor's text (a district path has at most a few
	// hundred bytes).
	maxCursor         = 512
	maxCursorDistrict = 256
)

func cursorOf(p storage.RecordPosition) cursor {
	return cursor{Version: cursorVersion, At: p.RecordedAt.UnixNano(), District: p.District, Tie: p.Tie[:]}
}

// position checks the cursor and returns its place.
func (c cursor) position() (storage.RecordPosition, error) {
	switch {
	case c.Version != cursorVersion:
		return storage.RecordPosition{}, errCursor
	case len(c.Tie) != storage.TieSize, c.District == "", len(c.District) > maxCursorDistrict:
		return storage.RecordPosition{}, errCursor
	}
	p := storage.RecordPosition{RecordedAt: time.Unix(0, c.At).UTC(), District: c.District}
	copy(p.Tie[:], c.Tie)
	return p, nil
}

var errCursor = fault.Field(fault.BadRequest, "cursor", "not a cursor of this list: pass the \"next\" of the previous page as it is")

func encodeCursor(p storage.RecordPosition) string {
	b, err := exchange.Marshal(cursorOf(p))
	if err != nil {
		// A struct of an int, a string and bytes always encodes.
		panic("disclosure: cursor does not encode: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor reads a cursor; "" is the first page (nil).
func decodeCursor(s string) (*storage.RecordPosition, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > maxCursor {
		return nil, errCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errCursor
	}
	var c cursor
	if err := exchange.Unmarshal(b, &c); err != nil {
		return nil, errCursor
	}
	p, err := c.position()
	if err != nil {
		return nil, err
	}
	return &p, nil
}
