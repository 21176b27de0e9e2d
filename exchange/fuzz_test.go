package exchange

import (
	"bytes"
	"reflect"
	"testing"
)

func frameSeeds(t interface{ Fatal(...any) }) [][]byte {
	req, _ := encMode.Marshal(requestEnvelope{Version: 1, Op: "lookup", ID: 9, TimeoutMS: 1500,
		Meta: Meta{Purpose: "recruitment", User: "u"}, Body: []byte{0xa1, 0x01, 0x02}})
	resp, _ := encMode.Marshal(responseEnvelope{Version: 1, ID: 9, Error: &wireError{Code: "forbidden", Message: "no"}})
	return [][]byte{
		rawFrame(req), rawFrame(resp), rawFrame(nil), {0, 0, 0}, {0xff, 0xff, 0xff, 0xff, 1},
		{0, 0, 0, 10, 1, 2}, append(rawFrame(req), 0, 0, 0, 1, 0), req, resp,
		{0xbf, 0x01, 0x01, 0xff}, {0xa2, 0x01, 0x01, 0x01, 0x01}, deepArray(20),
	}
}

// FuzzReadFrame: any byte stream either yields a frame within the limit
// that re-encodes to the same bytes, or a clean error; never a panic or an
// allocation beyond the limit.
func FuzzReadFrame(f *testing.F) {
	for _, s := range frameSeeds(f) {
		f.Add(s)
	}
	const max = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		buf, err := readFrame(bytes.NewReader(data), max)
		if err != nil {
			return
		}
		defer buf.free()
		if len(buf.b) == 0 || len(buf.b) > max {
			t.Fatalf("frame of %d bytes accepted", len(buf.b))
		}
		if !bytes.Equal(rawFrame(buf.b), data[:4+len(buf.b)]) {
			t.Fatal("frame does not re-encode to its input")
		}
	})
}

// FuzzDecodeEnvelope: any bytes either decode into an envelope that
// survives an encode/decode round trip, or are refused with a typed error.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range frameSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req requestEnvelope
		if err := decodeRequest(data, &req); err == nil {
			again, err := encMode.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			var req2 requestEnvelope
			if err := decodeRequest(again, &req2); err != nil || !reflect.DeepEqual(normalize(req), normalize(req2)) {
				t.Fatalf("round trip: %v\n%#v\n%#v", err, req, req2)
			}
		} else if CodeOf(err) != CodeBadRequest {
			t.Fatalf("untyped error %v", err)
		}
		var resp responseEnvelope
		_ = decodeResponse(data, &resp)
		var v any
		_ = Unmarshal(data, &v)
	})
}

func normalize(r requestEnvelope) requestEnvelope {
	if len(r.Body) == 0 {
		r.Body = nil
	}
	return r
}
