package consensus

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"

	"credfed/credit"
)

// The sealed index (issue 9). Districts forward their index updates to the
// leader, which is always a coordinator (only voters lead, and a leader
// without the index key hands leadership over: leader.go). The leader
// seals each index batch with a key only coordinators hold before it
// proposes it, so the Raft log of a district holds ciphertext it cannot
// read; the index section of a snapshot is sealed the same way. A node
// without the key (a district) skips sealed batches and keeps nothing of
// the index; a coordinator opens them on apply.
//
// The AEAD is XChaCha20-Poly1305 (golang.org/x/crypto/chacha20poly1305):
// its 192-bit nonces are drawn at random for every seal, with no bound on
// how many messages one key may seal (AES-GCM's 96-bit random nonces are
// good for 2^32 messages per key, which a long-lived federation proposing
// one entry per forward could approach).

// IndexKeys is the keyring that seals the index: key versions, each a
// 32-byte XChaCha20-Poly1305 key, and the current version, which seals.
// Older versions are kept to open the log entries and snapshots sealed
// with them. Only coordinators hold it.
//
// Rotation (the lifecycle issue's `credfed keys rotate`) adds a version:
// version n+1 is derived from the new pseudonym key (DeriveIndexKey) and
// installed on every coordinator first, with the current version still
// n; only then does the current version move to n+1 (a coordinator that
// meets a batch sealed with a version it does not hold stops: see
// FSM.applySealedIndexBatch). A version may be dropped only once no log
// entry and no snapshot sealed with it is left on any node.
//
// A keyring built from pseudonym keys (IndexKeysFromPseudonymKey) also
// holds them, by version, for the services that pseudonymize (keys.go);
// the FSM adds the versions that `credfed keys rotate` distributes and
// moves the current version at the switch, so an IndexKeys changes while
// it is in use: its methods are safe for concurrent use.
type IndexKeys struct {
	mu      sync.RWMutex
	current uint32
	aeads   map[uint32]cipher.AEAD
	// pseudonym holds the pseudonym key of each version it was built from
	// (none for a keyring built from index keys alone).
	pseudonym map[uint32]credit.PseudonymKey
	// floor is the oldest version under which the index may still hold
	// entries (keys.go, KeyStatus.IndexFloor); 0 is the current version.
	floor uint32
}

// indexKeyLabel is the HKDF info that derives the index sealing key from
// a pseudonym key.
const indexKeyLabel = "credfed/index-seal/v1"

// DeriveIndexKey derives the index sealing key of one key version from
// that version's pseudonym key: HKDF-SHA256, no salt, info
// "credfed/index-seal/v1", 32 bytes. The pseudonym key itself never seals
// anything, and knowing the sealing key does not give the pseudonym key.
func DeriveIndexKey(pseudonymKey []byte) ([]byte, error) {
	if len(pseudonymKey) < 32 {
		return nil, fmt.Errorf("consensus: a pseudonym key of %d bytes is too short to derive the index key", len(pseudonymKey))
	}
	return hkdf.Key(sha256.New, pseudonymKey, nil, indexKeyLabel, chacha20poly1305.KeySize)
}

// NewIndexKeys builds a keyring from keys by version; current must be one
// of them. Version 0 is not a version.
func NewIndexKeys(current uint32, keys map[uint32][]byte) (*IndexKeys, error) {
	if _, ok := keys[current]; !ok || current == 0 {
		return nil, fmt.Errorf("consensus: the current index key version %d is not in the keyring", current)
	}
	k := &IndexKeys{current: current, aeads: map[uint32]cipher.AEAD{}, pseudonym: map[uint32]credit.PseudonymKey{}}
	for v, key := range keys {
		if v == 0 {
			return nil, errors.New("consensus: index key version 0 is not a version")
		}
		a, err := chacha20poly1305.NewX(key)
		if err != nil {
			return nil, fmt.Errorf("consensus: index key version %d: %w", v, err)
		}
		k.aeads[v] = a
	}
	return k, nil
}

// IndexKeysFromPseudonymKey is the keyring of a coordinator today: one
// version, 1, derived from the node's pseudonym key.
func IndexKeysFromPseudonymKey(pseudonymKey []byte) (*IndexKeys, error) {
	key, err := DeriveIndexKey(pseudonymKey)
	if err != nil {
		return nil, err
	}
	k, err := NewIndexKeys(1, map[uint32][]byte{1: key})
	if err != nil {
		return nil, err
	}
	k.pseudonym[1] = append(credit.PseudonymKey(nil), pseudonymKey...)
	return k, nil
}

// Current returns the version that seals.
func (k *IndexKeys) Current() uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current
}

// Versions returns the versions the keyring holds, in order.
func (k *IndexKeys) Versions() []uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]uint32, 0, len(k.aeads))
	for v := range k.aeads {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// String never shows key material.
func (k *IndexKeys) String() string {
	return fmt.Sprintf("IndexKeys(versions %v, current %d)", k.Versions(), k.Current())
}

// errUnknownIndexKey: something was sealed with a key version this node
// does not hold.
var errUnknownIndexKey = errors.New("sealed with an index key version this node does not hold")

// errSealBroken: a sealed message does not open with the key of its
// version (corrupt or tampered with).
var errSealBroken = errors.New("sealed data does not open: corrupt or tampered with")

// seal appends nonce || AEAD(plaintext) under the current version to dst
// and returns it with the version.
func (k *IndexKeys) seal(dst, plaintext, ad []byte) ([]byte, uint32) {
	v := k.Current()
	return k.sealAt(v, dst, plaintext, ad), v
}

// sealAt is seal under version v, which the keyring holds (a caller that
// binds the version in ad reads Current once and seals with it, so that a
// switch in between cannot seal under another version than ad names).
func (k *IndexKeys) sealAt(v uint32, dst, plaintext, ad []byte) []byte {
	k.mu.RLock()
	a := k.aeads[v]
	k.mu.RUnlock()
	if a == nil {
		panic(fmt.Sprintf("consensus: sealing with index key version %d, which the keyring does not hold", v))
	}
	n := len(dst)
	dst = slices.Grow(dst, a.NonceSize()+len(plaintext)+a.Overhead())
	dst = dst[:n+a.NonceSize()]
	if _, err := rand.Read(dst[n:]); err != nil {
		panic(fmt.Sprintf("consensus: random nonce: %v", err))
	}
	return a.Seal(dst, dst[n:], plaintext, ad)
}

// open opens nonce || ciphertext sealed with version v.
func (k *IndexKeys) open(v uint32, sealed, ad []byte) ([]byte, error) {
	k.mu.RLock()
	a, ok := k.aeads[v]
	k.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: version %d (this node holds %v)", errUnknownIndexKey, v, k.Versions())
	}
	if len(sealed) < a.NonceSize()+a.Overhead() {
		return nil, errSealBroken
	}
	out, err := a.Open(nil, sealed[:a.NonceSize()], sealed[a.NonceSize():], ad)
	if err != nil {
		return nil, errSealBroken
	}
	return out, nil
}

// SealedIndexBatch is the body of CmdSealedIndexBatch: an IndexBatch,
// CBOR-encoded as a CmdIndexBatch body is, then sealed.
//
//	Version  the index key version that sealed it
//	Sealed   nonce (24 bytes) || XChaCha20-Poly1305 ciphertext and tag
//
// The additional data binds what must not be swapped: the label
// "credfed/index-batch/v1", the command type byte, the key version and
// the federation. The log index and term are not known before proposing,
// so they cannot be bound; a sealed batch replayed at another index (by a
// leader, the only node that proposes) changes nothing, because index
// updates are absolute and carry the district's sequence number: an
// update whose Seq is not above the entry's is ignored, so applying an old
// batch again is a no-op, as a retried forward is today.
type SealedIndexBatch struct {
	Version uint32 `cbor:"1,keyasint"`
	Sealed  []byte `cbor:"2,keyasint"`
}

const sealedBatchLabel = "credfed/index-batch/v1\x00"

func sealedBatchAD(t CommandType, version uint32, federation string) []byte {
	ad := make([]byte, 0, len(sealedBatchLabel)+1+4+len(federation))
	ad = append(ad, sealedBatchLabel...)
	ad = append(ad, byte(t))
	ad = binary.BigEndian.AppendUint32(ad, version)
	return append(ad, federation...)
}

// minSealedBatchPlain is the smallest padded plaintext of a sealed index
// batch: about twenty updates fit in it, so a batch of one update is as
// long as a batch of twenty.
const minSealedBatchPlain = 1 << 10

// paddedBatchSize is the length a batch plaintext of n bytes is padded to:
// the smallest power of two that holds it, at least minSealedBatchPlain.
// The ciphertext's length then tells the number of updates only to within
// a factor of two, and nothing of what they say (a serious-list flag, a
// positive record, a longer region path), at the cost of at most twice
// the bytes in the log.
func paddedBatchSize(n int) int {
	size := minSealedBatchPlain
	for size < n {
		size <<= 1
	}
	return size
}

// sealBatch seals an index batch for the log: the CBOR batch, padded with
// zero bytes to paddedBatchSize, then sealed.
func (k *IndexKeys) sealBatch(b IndexBatch, federation string) (SealedIndexBatch, error) {
	plain, err := encMode.Marshal(b)
	if err != nil {
		return SealedIndexBatch{}, fmt.Errorf("consensus: encode index batch: %w", err)
	}
	plain = append(plain, make([]byte, paddedBatchSize(len(plain))-len(plain))...)
	v := k.Current()
	sealed := k.sealAt(v, nil, plain, sealedBatchAD(CmdSealedIndexBatch, v, federation))
	return SealedIndexBatch{Version: v, Sealed: sealed}, nil
}

// openBatch opens a sealed index batch: one CBOR IndexBatch, then only
// zero bytes (the padding; none in batches sealed before it was added).
func (k *IndexKeys) openBatch(s SealedIndexBatch, federation string) (IndexBatch, error) {
	plain, err := k.open(s.Version, s.Sealed, sealedBatchAD(CmdSealedIndexBatch, s.Version, federation))
	if err != nil {
		return IndexBatch{}, err
	}
	var b IndexBatch
	rest, err := decMode.UnmarshalFirst(plain, &b)
	if err != nil {
		return IndexBatch{}, fmt.Errorf("consensus: a sealed index batch that opens does not decode: %w", err)
	}
	for _, c := range rest {
		if c != 0 {
			return IndexBatch{}, errors.New("consensus: a sealed index batch that opens has data after its batch")
		}
	}
	return b, nil
}

// Chunks of the sealed index section of a snapshot (snapshot.go). Each
// chunk's additional data is the label, the snapshot's random id, the key
// version, the chunk's number and whether it is the last one, so chunks
// cannot be reordered, dropped, cut off at the end or spliced in from
// another snapshot.
const sealedChunkLabel = "credfed/snapshot-index/v1\x00"

func sealedChunkAD(id []byte, version uint32, n uint64, final bool) []byte {
	ad := make([]byte, 0, len(sealedChunkLabel)+len(id)+4+8+1)
	ad = append(ad, sealedChunkLabel...)
	ad = append(ad, id...)
	ad = binary.BigEndian.AppendUint32(ad, version)
	ad = binary.BigEndian.AppendUint64(ad, n)
	if final {
		return append(ad, 1)
	}
	return append(ad, 0)
}
