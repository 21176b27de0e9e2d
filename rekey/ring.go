// Package rekey is a node's part in a key rotation (consensus/keys.go
// tells the protocol; `credfed keys rotate` drives it): on a coordinator,
// the key ring file that keeps the pseudonym key versions the rotations
// distributed, and the job that stores each new version in it and then
// reports holding it; on a district, the job that re-pseudonymizes and
// republishes every subject after a switch and reports it, and what the
// publisher asks of the rotation (Publishing).
package rekey

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/fxamacker/cbor/v2"
	"golang.org/x/crypto/chacha20poly1305"

	"credfed/credit"
	"credfed/internal/atomicfile"
)

// The key ring file holds pseudonym key versions 2 and up (version 1 is
// pseudonym_key_file, which rotations never change), in the node's data
// directory, mode 0600:
//
//	"credfed-keyring/1\n" 'p' CBOR{version → key}                  (no encryption key)
//	"credfed-keyring/1\n" 's' nonce(24) XChaCha20-Poly1305(CBOR)   (sealed)
//
// Sealed with a key derived from the node's encryption key (HKDF-SHA256,
// no salt, info "credfed/key-ring/v1"), the header as additional data,
// when the node has one (encryption_key_file), as its databases are. The
// keys never reach a log or an error message.

// FileName is the key ring file's name in the data directory.
const FileName = "pseudonym-keys"

const (
	fileHeader = "credfed-keyring/1\n"
	kindPlain  = 'p'
	kindSealed = 's'
	ringLabel  = "credfed/key-ring/v1"
	maxRing    = 1 << 16
)

// Errors of the key ring file.
var (
	// ErrRingCorrupt: the file is not a key ring, or was changed.
	ErrRingCorrupt = errors.New("rekey: the key ring file is corrupt or was changed")
	// ErrRingKey: the file is sealed and no encryption key, or another,
	// was given.
	ErrRingKey = errors.New("rekey: the key ring file does not open with this node's encryption key")
)

var encMode = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

var decMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF, IndefLength: cbor.IndefLengthForbidden,
		MaxNestedLevels: 4, MaxMapPairs: 1 << 10}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

func ringAEAD(encKey []byte) (interface {
	NonceSize() int
	Seal(dst, nonce, plaintext, ad []byte) []byte
	Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
}, error) {
	k, err := hkdf.Key(sha256.New, encKey, nil, ringLabel, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	return chacha20poly1305.NewX(k)
}

// LoadRing reads the key ring file: the versions ≥ 2 it holds (none if
// there is no file yet).
func LoadRing(path string, encKey []byte) (map[uint32]credit.PseudonymKey, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[uint32]credit.PseudonymKey{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rekey: read the key ring: %w", err)
	}
	if len(data) > maxRing || !bytes.HasPrefix(data, []byte(fileHeader)) || len(data) < len(fileHeader)+1 {
		return nil, ErrRingCorrupt
	}
	body := data[len(fileHeader)+1:]
	switch data[len(fileHeader)] {
	case kindPlain:
	case kindSealed:
		if len(encKey) == 0 {
			return nil, fmt.Errorf("%w: it is sealed, and this node has no encryption_key_file", ErrRingKey)
		}
		a, err := ringAEAD(encKey)
		if err != nil {
			return nil, err
		}
		if len(body) < a.NonceSize() {
			return nil, ErrRingCorrupt
		}
		if body, err = a.Open(nil, body[:a.NonceSize()], body[a.NonceSize():], data[:len(fileHeader)+1]); err != nil {
			return nil, ErrRingKey
		}
	default:
		return nil, ErrRingCorrupt
	}
	var raw map[uint32][]byte
	if err := decMode.Unmarshal(body, &raw); err != nil {
		return nil, ErrRingCorrupt
	}
	out := make(map[uint32]credit.PseudonymKey, len(raw))
	for v, k := range raw {
		if v < 2 || !credit.PseudonymKey(k).Valid() {
			return nil, fmt.Errorf("%w: version %d", ErrRingCorrupt, v)
		}
		out[v] = credit.PseudonymKey(k)
	}
	return out, nil
}

// SaveRing replaces the key ring file with keys (versions ≥ 2), sealed if
// encKey is set, atomically.
func SaveRing(path string, encKey []byte, keys map[uint32]credit.PseudonymKey) error {
	raw := make(map[uint32][]byte, len(keys))
	for v, k := range keys {
		if v < 2 || !k.Valid() {
			return fmt.Errorf("rekey: version %d does not belong in the key ring", v)
		}
		raw[v] = k
	}
	body, err := encMode.Marshal(raw)
	if err != nil {
		return fmt.Errorf("rekey: encode the key ring: %w", err)
	}
	data := []byte(fileHeader)
	if len(encKey) == 0 {
		data = append(append(data, kindPlain), body...)
	} else {
		a, err := ringAEAD(encKey)
		if err != nil {
			return err
		}
		data = append(data, kindSealed)
		nonce := make([]byte, a.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			return err
		}
		ad := append([]byte(nil), data...)
		data = a.Seal(append(data, nonce...), nonce, body, ad)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("rekey: write the key ring: %w", err)
	}
	return nil
}

// Versions returns the versions of a ring, in order.
func Versions(keys map[uint32]credit.PseudonymKey) []uint32 {
	out := make([]uint32, 0, len(keys))
	for v := range keys {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
