package exchange

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// A frame is a 4-byte big-endian length followed by that many bytes of one
// CBOR envelope. See docs/exchange.md.
const frameHeaderLen = 4

// DefaultMaxFrame is the default largest frame (envelope) accepted: 4 MiB.
const DefaultMaxFrame = 4 << 20

// Frame errors.
var (
	// errEmptyFrame: a length prefix of zero (no envelope is empty).
	errEmptyFrame = errors.New("exchange: empty frame")
	// errTruncatedFrame: the stream ended inside a frame.
	errTruncatedFrame = errors.New("exchange: truncated frame")
)

// frameTooLargeError is returned when a length prefix exceeds the limit; the
// body has not been read.
type frameTooLargeError struct{ size, max uint32 }

func (e *frameTooLargeError) Error() string {
	return fmt.Sprintf("exchange: frame of %d bytes exceeds the limit of %d", e.size, e.max)
}

// readFrameHeader reads the length prefix and checks it against max.
func readFrameHeader(r io.Reader, max int) (int, error) {
	var h [frameHeaderLen]byte
	if n, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.ErrUnexpectedEOF || (err == io.EOF && n > 0) {
			return 0, errTruncatedFrame
		}
		return 0, err // io.EOF: no frame at all
	}
	size := binary.BigEndian.Uint32(h[:])
	switch {
	case size == 0:
		return 0, errEmptyFrame
	case uint64(size) > uint64(max):
		return 0, &frameTooLargeError{size: size, max: uint32(max)}
	}
	return int(size), nil
}

// readFrameBody reads exactly size bytes into a buffer from the pool.
// It returns io.EOF only if the stream ended cleanly after the frame.
func readFrameBody(r io.Reader, size int) (*buffer, error) {
	b := getBuffer(size)
	b.b = b.b[:size]
	n, err := io.ReadFull(r, b.b)
	if err != nil {
		b.free()
		if n < size {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, errTruncatedFrame
			}
			return nil, err
		}
	}
	return b, nil
}

// readFrame reads one whole frame: header and body. It is what the fuzz
// target exercises and what clients use for answers.
func readFrame(r io.Reader, max int) (*buffer, error) {
	size, err := readFrameHeader(r, max)
	if err != nil {
		return nil, err
	}
	return readFrameBody(r, size)
}

// appendFrameHeader reserves the length prefix at the start of b.b; the
// envelope is then appended and finishFrame fills the prefix in.
func finishFrame(frame []byte) {
	binary.BigEndian.PutUint32(frame[:frameHeaderLen], uint32(len(frame)-frameHeaderLen))
}

// buffer is a pooled byte slice. Frames up to maxPooled bytes come from size
// classes of sync.Pools; larger ones are allocated and dropped.
type buffer struct {
	b     []byte
	class int8 // index into pools, -1 when not pooled
}

const (
	minPooled = 512
	maxPooled = 64 << 10
)

var pools [8]sync.Pool // 512 B, 1 KiB, ... 64 KiB

func classOf(n int) int {
	c, size := 0, minPooled
	for size < n {
		size <<= 1
		c++
	}
	if size > maxPooled {
		return -1
	}
	return c
}

// getBuffer returns a buffer with capacity for at least n bytes and length 0.
func getBuffer(n int) *buffer {
	c := classOf(n)
	if c < 0 {
		return &buffer{b: make([]byte, 0, n), class: -1}
	}
	if v := pools[c].Get(); v != nil {
		b := v.(*buffer)
		b.b = b.b[:0]
		return b
	}
	return &buffer{b: make([]byte, 0, minPooled<<c), class: int8(c)}
}

// free returns the buffer to its pool. The caller must not touch it after.
func (b *buffer) free() {
	if b == nil || b.class < 0 || cap(b.b) != minPooled<<b.class {
		return // not pooled, or grown past its class by an append
	}
	pools[b.class].Put(b)
}

// Write appends p, so that an encoder can write into the buffer.
func (b *buffer) Write(p []byte) (int, error) {
	b.b = append(b.b, p...)
	return len(p), nil
}
