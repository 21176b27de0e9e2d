package credit

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
)

// PseudonymKeySize is the length of a pseudonym key in bytes.
const PseudonymKeySize = 32

// pseudonymDomain separates credfed's pseudonyms from any other HMAC that
// might ever be computed with the same key; v1 is the scheme's version.
const pseudonymDomain = "credfed/pseudonym/v1\x00"

// PseudonymKey is the secret the coordinators alone hold to turn identifiers
// into index pseudonyms (DESIGN §4). It is never written to the Raft log.
// Its String and GoString are redacted so it cannot leak through fmt.
type PseudonymKey []byte

// NewPseudonymKey returns a fresh random key from crypto/rand.
func NewPseudonymKey() (PseudonymKey, error) {
	k := make(PseudonymKey, PseudonymKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("credit: new pseudonym key: %w", err)
	}
	return k, nil
}

// String returns a fixed placeholder, never the key.
func (k PseudonymKey) String() string { return "PseudonymKey(redacted)" }

// GoString returns a fixed placeholder, never the key.
func (k PseudonymKey) GoString() string { return k.String() }

// Valid reports whether the key has the right length.
func (k PseudonymKey) Valid() bool { return len(k) == PseudonymKeySize }

// LoadPseudonymKey reads a key file: exactly 64 hexadecimal digits (either
// case), optionally surrounded by white space such as a trailing newline.
// Anything else, a short key in particular, is refused with
// ErrBadPseudonymKey. The error never contains the file's content.
func LoadPseudonymKey(path string) (PseudonymKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("credit: load pseudonym key: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) != 2*PseudonymKeySize {
		return nil, fmt.Errorf("%w: %s holds %d characters, not %d", ErrBadPseudonymKey, path, len(b), 2*PseudonymKeySize)
	}
	k := make(PseudonymKey, PseudonymKeySize)
	if _, err := hex.Decode(k, b); err != nil {
		return nil, fmt.Errorf("%w: %s is not hexadecimal", ErrBadPseudonymKey, path)
	}
	return k, nil
}

// WritePseudonymKey writes key to a new file at path as 64 lower-case
// hexadecimal digits and a newline, with mode 0600. It refuses to overwrite
// an existing file (the error matches fs.ErrExist): replacing the key would
// silently orphan every pseudonym in the index.
func WritePseudonymKey(path string, key PseudonymKey) error {
	if !key.Valid() {
		return fmt.Errorf("%w: key has %d bytes", ErrBadPseudonymKey, len(key))
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("credit: write pseudonym key: %w", err)
	}
	data := make([]byte, 0, 2*PseudonymKeySize+1)
	data = hex.AppendEncode(data, key)
	data = append(data, '\n')
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("credit: write pseudonym key: %w", err)
	}
	return nil
}

// Pseudonym returns the subject's pseudonym: HMAC-SHA256 under the key of
// "credfed/pseudonym/v1\x00" followed by the canonical identifier, truncated
// to its first 16 bytes. Pass Subject.ID (canonical form): two spellings of
// one identifier would otherwise get two pseudonyms.
//
// It panics if the key is not 32 bytes long, which NewPseudonymKey and
// LoadPseudonymKey never return: a short key would make pseudonyms
// guessable.
func (k PseudonymKey) Pseudonym(canonicalID string) Pseudonym {
	if !k.Valid() {
		panic("credit: pseudonym key must be 32 bytes")
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(pseudonymDomain))
	m.Write([]byte(canonicalID))
	var p Pseudonym
	copy(p[:], m.Sum(nil))
	return p
}

// Pseudonym is the keyed pseudonym of a subject, the only form in which a
// subject appears in the replicated index and the audit log. Its text form is
// 32 lower-case hexadecimal digits; CBOR carries it as a 16-byte string.
type Pseudonym [16]byte

// ParsePseudonym parses 32 hexadecimal digits (either case).
func ParsePseudonym(s string) (Pseudonym, error) {
	var p Pseudonym
	if len(s) != 2*len(p) {
		return p, ErrBadPseudonym
	}
	if _, err := hex.Decode(p[:], []byte(s)); err != nil {
		return Pseudonym{}, ErrBadPseudonym
	}
	return p, nil
}

// String returns the pseudonym as 32 lower-case hexadecimal digits.
func (p Pseudonym) String() string { return hex.EncodeToString(p[:]) }

// IsZero reports whether p is the zero pseudonym (no subject).
func (p Pseudonym) IsZero() bool { return p == Pseudonym{} }

// MarshalText implements encoding.TextMarshaler.
func (p Pseudonym) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Pseudonym) UnmarshalText(b []byte) error {
	v, err := ParsePseudonym(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// pseudonymCBORHead is the CBOR head of a 16-byte byte string (major type
// 2, length 16).
const pseudonymCBORHead = 0x40 | 16

// MarshalCBOR implements cbor.Marshaler: a byte string of 16 bytes.
func (p Pseudonym) MarshalCBOR() ([]byte, error) {
	b := make([]byte, 0, 1+len(p))
	b = append(b, pseudonymCBORHead)
	return append(b, p[:]...), nil
}

// UnmarshalCBOR implements cbor.Unmarshaler: it takes a byte string of
// exactly 16 bytes in its shortest form and nothing else (a shorter or
// longer string, a tag, another type), with ErrBadPseudonymCBOR.
func (p *Pseudonym) UnmarshalCBOR(b []byte) error {
	if len(b) != 1+len(p) || b[0] != pseudonymCBORHead {
		return ErrBadPseudonymCBOR
	}
	copy(p[:], b[1:])
	return nil
}
