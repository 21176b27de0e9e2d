package consensus

import (
	"context"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/crypto/chacha20poly1305"

	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
)

// Key rotation (the lifecycle issue's `credfed keys rotate`). A rotation
// makes pseudonym key version n+1 (and the index sealing key derived from
// it) and moves the federation onto it in two phases, each a command an
// operator of the province issues through a coordinator:
//
//  1. CmdKeyInstall carries the new pseudonym key sealed under the index
//     key of the current version n, which only coordinators hold: every
//     coordinator opens it on apply and adds version n+1 to its keyring
//     (seal.go) with the current version still n; a node without the
//     index keys (a district) keeps only the clear record that version
//     n+1 exists. Each coordinator, once it has stored the version
//     durably (its key ring file), reports it with CmdKeyProgress{held}.
//  2. CmdKeySwitch makes n+1 current. It is refused until every joined
//     coordinator has reported holding it: a coordinator that met a batch
//     sealed with a version it does not hold would stop
//     (FSM.applySealedIndexBatch). From the switch on, the leader seals
//     under n+1 and coordinators hand out pseudonyms of n+1 only.
//
// Then each district re-pseudonymizes the subjects it holds (through its
// coordinator, which answers under n+1), republishes every one under its
// new pseudonym and withdraws the old pseudonym's entry in the same group
// (an update whose summary is Withdrawn: the FSM deletes the entry), and
// reports CmdKeyProgress{republished}. Until every joined district has,
// the index may hold a subject under n or n+1, and a coordinator reads
// both (IndexKeys.IndexPseudonyms, from the index floor up); afterwards
// under n+1 only. Version n is kept to open the log entries and snapshots
// sealed under it and, for the audit retention period, to find the audit
// entries written under its pseudonyms (IndexKeys.AuditPseudonyms); it is
// never used for index writes again. A new rotation is refused until the
// last one is complete, so at most two versions are live for the index.
//
// The state keeps, in the clear (every node, districts too):
//
//	x/k/v/<version:be32>          → KeyVersion (CBOR): installed, switched
//	x/k/p/<version:be32><region>  → keyProgressRecord (CBOR): held / republished
//	x/m/keycurrent                → be32: the current version (absent: 1)
//
// and, in the index families (coordinators only; sealed in snapshots):
//
//	x/K/<version:be32>            → KeyInstall (CBOR): the version's key, sealed
//
// so that a coordinator that catches up by snapshot after the install
// (its log truncated past it) still receives the version.
var (
	prefixKeyState    = []byte("x/k/")
	prefixKeyVersion  = []byte("x/k/v/")
	prefixKeyProgress = []byte("x/k/p/")
	prefixKeySealed   = []byte("x/K/")
	keyKeyCurrent     = []byte("x/m/keycurrent")
)

func keyVersionKey(v uint32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), prefixKeyVersion...), v)
}

func keyProgressPrefix(v uint32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), prefixKeyProgress...), v)
}

func keyProgressKey(v uint32, region string) []byte { return append(keyProgressPrefix(v), region...) }

func keySealedKey(v uint32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), prefixKeySealed...), v)
}

// KeyStage is what a node reports of a key version.
type KeyStage string

// Key stages.
const (
	// KeyHeld: a coordinator holds the version, stored durably.
	KeyHeld KeyStage = "held"
	// KeyRepublished: a district republished every subject it holds under
	// the version and withdrew their entries under the older one.
	KeyRepublished KeyStage = "republished"
)

// KeyInstall is the body of CmdKeyInstall: pseudonym key version Version,
// sealed under the index key of version SealedWith (the current one).
//
//	Sealed  nonce (24 bytes) || XChaCha20-Poly1305(the 32-byte pseudonym key) || tag
//
// The additional data is "credfed/pseudonym-key/v1\0" || be32(Version) ||
// be32(SealedWith) || federation.
type KeyInstall struct {
	Version    uint32 `cbor:"1,keyasint"`
	SealedWith uint32 `cbor:"2,keyasint"`
	Sealed     []byte `cbor:"3,keyasint"`
}

// KeySwitch is the body of CmdKeySwitch: make Version current.
type KeySwitch struct {
	Version uint32 `cbor:"1,keyasint"`
}

// KeyProgress is the body of CmdKeyProgress: the proposing node has
// reached Stage for Version.
type KeyProgress struct {
	Version uint32   `cbor:"1,keyasint"`
	Stage   KeyStage `cbor:"2,keyasint"`
}

// KeyVersion is a key version's record in the state (version 1, the key
// the federation started with, has none).
type KeyVersion struct {
	Version     uint32    `cbor:"1,keyasint" json:"version"`
	Installed   time.Time `cbor:"2,keyasint" json:"installed"`
	InstalledBy string    `cbor:"3,keyasint" json:"installed_by"`
	// InstalledIndex and SwitchedIndex are the log indexes of the install
	// and the switch: a version may be dropped only once no retained log
	// entry or snapshot before SwitchedIndex of the next version is left.
	InstalledIndex uint64    `cbor:"4,keyasint" json:"installed_index"`
	Switched       time.Time `cbor:"5,keyasint,omitempty" json:"switched,omitzero"`
	SwitchedBy     string    `cbor:"6,keyasint,omitempty" json:"switched_by,omitempty"`
	SwitchedIndex  uint64    `cbor:"7,keyasint,omitempty" json:"switched_index,omitempty"`
}

type keyProgressRecord struct {
	Stage KeyStage  `cbor:"1,keyasint"`
	At    time.Time `cbor:"2,keyasint"`
}

// pseudonymKeyLabel binds a sealed pseudonym key to its use.
const pseudonymKeyLabel = "credfed/pseudonym-key/v1\x00"

func pseudonymKeyAD(version, sealedWith uint32, federation string) []byte {
	ad := make([]byte, 0, len(pseudonymKeyLabel)+8+len(federation))
	ad = append(ad, pseudonymKeyLabel...)
	ad = binary.BigEndian.AppendUint32(ad, version)
	ad = binary.BigEndian.AppendUint32(ad, sealedWith)
	return append(ad, federation...)
}

// sealedKeySize is the length of KeyInstall.Sealed.
const sealedKeySize = 24 + credit.PseudonymKeySize + 16

// SealPseudonymKey seals key as version for the log: under the current
// index key version (the body of CmdKeyInstall).
func (k *IndexKeys) SealPseudonymKey(version uint32, key credit.PseudonymKey, federation string) (KeyInstall, error) {
	if !key.Valid() {
		return KeyInstall{}, fmt.Errorf("%w: a pseudonym key of %d bytes", credit.ErrBadPseudonymKey, len(key))
	}
	with := k.Current()
	sealed := k.sealAt(with, nil, key, pseudonymKeyAD(version, with, federation))
	return KeyInstall{Version: version, SealedWith: with, Sealed: sealed}, nil
}

// openPseudonymKey opens a sealed pseudonym key.
func (k *IndexKeys) openPseudonymKey(in KeyInstall, federation string) (credit.PseudonymKey, error) {
	if len(in.Sealed) != sealedKeySize {
		return nil, errSealBroken
	}
	plain, err := k.open(in.SealedWith, in.Sealed, pseudonymKeyAD(in.Version, in.SealedWith, federation))
	if err != nil {
		return nil, err
	}
	return credit.PseudonymKey(plain), nil
}

// NewPseudonymKeyRing builds a coordinator's keyring from its pseudonym
// keys by version (1 is the key file's; the others its key ring file's),
// current being the highest until the replicated state says otherwise
// (NewState sets it from the state).
func NewPseudonymKeyRing(keys map[uint32]credit.PseudonymKey) (*IndexKeys, error) {
	k0, ok := keys[1]
	if !ok {
		return nil, errors.New("consensus: a keyring needs pseudonym key version 1 (pseudonym_key_file)")
	}
	ring, err := IndexKeysFromPseudonymKey(k0)
	if err != nil {
		return nil, err
	}
	for v, key := range keys {
		if v == 1 {
			continue
		}
		if err := ring.add(v, key); err != nil {
			return nil, err
		}
	}
	return ring, nil
}

// add adds pseudonym key version v (and its index key); adding a version
// again with the same key changes nothing, with another key is an error.
func (k *IndexKeys) add(v uint32, key credit.PseudonymKey) error {
	if v == 0 {
		return errors.New("consensus: key version 0 is not a version")
	}
	if !key.Valid() {
		return fmt.Errorf("%w: version %d has %d bytes", credit.ErrBadPseudonymKey, v, len(key))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if have, ok := k.pseudonym[v]; ok {
		if string(have) != string(key) {
			return fmt.Errorf("consensus: pseudonym key version %d is held already with another key: the key ring and the replicated state disagree", v)
		}
		return nil
	}
	ik, err := DeriveIndexKey(key)
	if err != nil {
		return err
	}
	a, err := chacha20poly1305.NewX(ik)
	if err != nil {
		return err
	}
	if k.pseudonym == nil {
		k.pseudonym = map[uint32]credit.PseudonymKey{}
	}
	k.pseudonym[v] = append(credit.PseudonymKey(nil), key...)
	k.aeads[v] = a
	return nil
}

// holds reports whether the keyring holds version v.
func (k *IndexKeys) holds(v uint32) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	_, ok := k.aeads[v]
	return ok
}

// setCurrent makes v, which the keyring holds, the version that seals.
// A keyring that has no index floor yet (no switch before this one) gets
// the version current until now as its floor: the districts have not
// republished under v, and until the state's floor reaches the keyring
// (reloadKeys, after the commit) the index holds the subjects under the
// older version alone, which IndexPseudonyms must go on naming.
func (k *IndexKeys) setCurrent(v uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.aeads[v]; !ok {
		return fmt.Errorf("%w: version %d is current, and this coordinator does not hold it", errUnknownIndexKey, v)
	}
	if k.floor == 0 && v > k.current {
		k.floor = k.current
	}
	k.current = v
	return nil
}

func (k *IndexKeys) setFloor(v uint32) {
	k.mu.Lock()
	k.floor = v
	k.mu.Unlock()
}

// lowerFloor makes v the floor if it is below the one in effect (the
// current version when none is set).
func (k *IndexKeys) lowerFloor(v uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	eff := k.floor
	if eff == 0 || eff > k.current {
		eff = k.current
	}
	if v > 0 && v < eff {
		k.floor = v
	}
}

// clone returns a keyring of its own with the same keys (each replica
// moves its keyring as it applies the log).
func (k *IndexKeys) clone() *IndexKeys {
	k.mu.RLock()
	defer k.mu.RUnlock()
	c := &IndexKeys{current: k.current, floor: k.floor, aeads: map[uint32]cipher.AEAD{}, pseudonym: map[uint32]credit.PseudonymKey{}}
	for v, a := range k.aeads {
		c.aeads[v] = a
	}
	for v, p := range k.pseudonym {
		c.pseudonym[v] = p
	}
	return c
}

// PseudonymKey returns pseudonym key version v, if the keyring holds it
// (the key ring file's writer; never logged).
func (k *IndexKeys) PseudonymKey(v uint32) (credit.PseudonymKey, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	p, ok := k.pseudonym[v]
	return p, ok
}

// CurrentPseudonymKey returns the current version and its pseudonym key
// (nil if the keyring was built from index keys alone).
func (k *IndexKeys) CurrentPseudonymKey() (uint32, credit.PseudonymKey) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current, k.pseudonym[k.current]
}

// Pseudonym is the subject's pseudonym under the current version.
func (k *IndexKeys) Pseudonym(canonicalID string) credit.Pseudonym {
	_, key := k.CurrentPseudonymKey()
	return key.Pseudonym(canonicalID)
}

// IndexPseudonyms returns the subject's pseudonyms under which the index
// may hold its entries, oldest version first, the current one last: every
// version held from the index floor (the oldest version not every district
// has republished away from) to the current one.
func (k *IndexKeys) IndexPseudonyms(canonicalID string) []credit.Pseudonym {
	k.mu.RLock()
	defer k.mu.RUnlock()
	floor := k.floor
	if floor == 0 || floor > k.current {
		floor = k.current
	}
	return k.pseudonymsLocked(canonicalID, floor)
}

// AuditPseudonyms returns the subject's pseudonyms under every version the
// keyring holds up to the current one, oldest first: the audit log names
// subjects by the pseudonym of the version current when it wrote them.
func (k *IndexKeys) AuditPseudonyms(canonicalID string) []credit.Pseudonym {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.pseudonymsLocked(canonicalID, 1)
}

func (k *IndexKeys) pseudonymsLocked(canonicalID string, from uint32) []credit.Pseudonym {
	var vs []uint32
	for v := range k.pseudonym {
		if v >= from && v <= k.current {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	out := make([]credit.Pseudonym, len(vs))
	for i, v := range vs {
		out[i] = k.pseudonym[v].Pseudonym(canonicalID)
	}
	return out
}

// currentKeyVersion is the current key version in w (1 before any switch).
func currentKeyVersion(w *writer) uint32 {
	if v := w.getUint(keyKeyCurrent); v > 0 {
		return uint32(v)
	}
	return 1
}

// latestKeyVersion is the highest version installed in w (1 if none was).
func latestKeyVersion(w *writer) uint32 {
	latest := uint32(1)
	w.scanKeys(prefixKeyVersion, func(k []byte) {
		if v := binary.BigEndian.Uint32(k[len(prefixKeyVersion):]); v > latest {
			latest = v
		}
	})
	return latest
}

// reported lists the regions that reported stage for v.
func reported(w *writer, v uint32, stage KeyStage) map[string]bool {
	out := map[string]bool{}
	pfx := keyProgressPrefix(v)
	w.scanKeys(pfx, func(k []byte) {
		var rec keyProgressRecord
		if w.getCBOR(k, &rec) && rec.Stage == stage {
			out[string(k[len(pfx):])] = true
		}
	})
	return out
}

// awaiting returns the joined regions (with an exchange address: a node
// runs there) that the predicate selects and that have not reported.
func awaiting(regions []Region, want func(Region) bool, done map[string]bool) []string {
	var out []string
	for _, r := range regions {
		if want(r) && r.Exchange != "" && !done[r.Path] {
			out = append(out, r.Path)
		}
	}
	sort.Strings(out)
	return out
}

func isCoordinatorRegion(r Region) bool { return r.Role.IsCoordinatorNode() }
func isDistrictRegion(r Region) bool    { return r.Role == certs.District }

// registryIn reads the registry staged in w.
func registryIn(w *writer) []Region {
	var out []Region
	w.scanKeys(prefixRegion, func(k []byte) {
		var r Region
		if w.getCBOR(k, &r) {
			out = append(out, r)
		}
	})
	return out
}

// listed shows at most a few region paths.
func listed(paths []string) string {
	const most = 10
	if len(paths) > most {
		return strings.Join(paths[:most], ", ") + fmt.Sprintf(" and %d more", len(paths)-most)
	}
	return strings.Join(paths, ", ")
}

// applyKeyInstall applies a CmdKeyInstall: an operator of a province
// region, relayed by a coordinator; the next version, sealed with the
// current one, while no other rotation is under way. A coordinator opens
// the key, keeps it sealed in the state and adds it to its keyring; a
// district keeps the clear record only.
func (f *FSM) applyKeyInstall(w *writer, c Command, in KeyInstall, index uint64) error {
	if err := f.authorizeFederationOperator(w, c); err != nil {
		return err
	}
	cur, latest := currentKeyVersion(w), latestKeyVersion(w)
	switch {
	case latest > cur:
		return refuse(ErrConflict, "key version %d is installed and not current yet: finish that rotation (credfed keys rotate) before installing another", latest)
	case in.Version <= latest:
		return refuse(ErrConflict, "key version %d is installed already (the current version is %d)", in.Version, cur)
	case in.Version != latest+1:
		return refuse(ErrInvalid, "the next key version is %d, not %d", latest+1, in.Version)
	case in.SealedWith != cur:
		return refuse(ErrInvalid, "a new key is sealed with the current index key version %d, not %d", cur, in.SealedWith)
	case len(in.Sealed) != sealedKeySize:
		return refuse(ErrInvalid, "a sealed pseudonym key is %d bytes, not %d", sealedKeySize, len(in.Sealed))
	}
	if cur > 1 {
		if left := awaiting(registryIn(w), isDistrictRegion, reported(w, cur, KeyRepublished)); len(left) > 0 {
			return refuse(ErrConflict, "the rotation to key version %d is not complete: %d districts have not republished under it (%s); remove a district that is gone for good",
				cur, len(left), listed(left))
		}
	}
	if keys := f.state.keys; keys != nil {
		key, err := keys.openPseudonymKey(in, f.federation)
		switch {
		case err != nil && f.checking:
			// The leader checks before proposing: what does not open here
			// would stop every coordinator.
			return refuse(ErrInvalid, "the new key does not open with index key version %d", in.SealedWith)
		case errors.Is(err, errUnknownIndexKey):
			panic(fmt.Sprintf("consensus: log entry %d: key version %d %v; install that index key version on this coordinator and restart it", index, in.Version, err))
		case err != nil:
			panic(fmt.Sprintf("consensus: log entry %d is corrupt: sealed pseudonym key version %d: %v", index, in.Version, err))
		}
		if !f.checking {
			// Now, not after the commit: a later entry of this batch may be
			// sealed with it.
			if err := keys.add(in.Version, key); err != nil {
				panic(fmt.Sprintf("consensus: log entry %d: %v", index, err))
			}
		}
		w.setCBOR(keySealedKey(in.Version), in)
	}
	w.setCBOR(keyVersionKey(in.Version), KeyVersion{Version: in.Version, Installed: c.At, InstalledBy: c.Actor.String(), InstalledIndex: index})
	return nil
}

// applyKeySwitch applies a CmdKeySwitch: an operator of a province region
// makes the installed next version current once every joined coordinator
// holds it. Switching to the current version again changes nothing.
func (f *FSM) applyKeySwitch(w *writer, c Command, s KeySwitch, index uint64) error {
	if err := f.authorizeFederationOperator(w, c); err != nil {
		return err
	}
	cur := currentKeyVersion(w)
	var rec KeyVersion
	switch {
	case s.Version == cur:
		return nil
	case !w.getCBOR(keyVersionKey(s.Version), &rec):
		return refuse(ErrNotFound, "key version %d is not installed", s.Version)
	case s.Version != cur+1:
		return refuse(ErrConflict, "the current key version is %d: the switch is to version %d only", cur, cur+1)
	}
	if left := awaiting(registryIn(w), isCoordinatorRegion, reported(w, s.Version, KeyHeld)); len(left) > 0 {
		return refuse(ErrConflict, "key version %d is not held yet by %d coordinators (%s): they report it once they have stored it",
			s.Version, len(left), listed(left))
	}
	if keys := f.state.keys; keys != nil && !f.checking {
		if err := keys.setCurrent(s.Version); err != nil {
			panic(fmt.Sprintf("consensus: log entry %d: %v; install that key version on this coordinator and restart it", index, err))
		}
	}
	rec.Switched, rec.SwitchedBy, rec.SwitchedIndex = c.At, c.Actor.String(), index
	w.setCBOR(keyVersionKey(s.Version), rec)
	w.setUint32(keyKeyCurrent, s.Version)
	return nil
}

// applyKeyProgress applies a CmdKeyProgress: a registered coordinator node
// holds an installed version, or a registered district node republished
// under the current one. Reporting again changes nothing.
func (f *FSM) applyKeyProgress(w *writer, c Command, p KeyProgress) error {
	n := c.Proposer
	if n.Federation != f.federation || !n.Role.IsNode() {
		return refuse(ErrForbidden, "only nodes report key progress, not %s", describe(n))
	}
	var r Region
	if !w.getCBOR(regionKey(n.Region), &r) || r.Role != n.Role {
		return refuse(ErrForbidden, "node %s is not registered", n.Region)
	}
	switch p.Stage {
	case KeyHeld:
		if !n.Role.IsCoordinatorNode() {
			return refuse(ErrForbidden, "only coordinators hold pseudonym keys, not %s", n)
		}
		if !w.has(keyVersionKey(p.Version)) {
			return refuse(ErrNotFound, "key version %d is not installed", p.Version)
		}
	case KeyRepublished:
		if n.Role != certs.District {
			return refuse(ErrForbidden, "only districts republish their subjects, not %s", n)
		}
		if cur := currentKeyVersion(w); p.Version != cur || cur == 1 {
			return refuse(ErrConflict, "key version %d is not the version a district republishes under (the current version is %d)", p.Version, cur)
		}
	default:
		return refuse(ErrInvalid, "unknown key stage %q", p.Stage)
	}
	key := keyProgressKey(p.Version, n.Region)
	var old keyProgressRecord
	if w.getCBOR(key, &old) && old.Stage == p.Stage {
		return nil
	}
	w.setCBOR(key, keyProgressRecord{Stage: p.Stage, At: c.At})
	return nil
}

// keyCache is what the state keeps in memory of the key versions.
type keyCache struct {
	current uint32
	floor   uint32
}

// reloadKeys reads the key versions of the live generation and brings the
// keyring in line: versions it lacks are opened from their sealed copies
// (a coordinator that caught up by snapshot), the current version and the
// index floor set (only once the state records a switch: before that the
// keyring keeps the version it was built with). On the FSM's goroutine,
// after a commit or a restore, and when the replica opens.
func (f *FSM) reloadKeys() error {
	g, _ := f.state.acquire()
	defer g.release()
	return f.loadKeys(g, false)
}

// widenKeys brings the keyring to a restored generation g before g is
// installed, while reads still use the generation it replaces: the
// keyring gains g's versions and, if g's is newer, its current version,
// and keeps the lower of the two floors, so that it names the
// pseudonyms of both generations' entries until reloadKeys, after the
// install, sets g's exactly. A failure is left to that reloadKeys to
// report.
func (f *FSM) widenKeys(g *generation) {
	if err := f.loadKeys(g, true); err != nil {
		f.log.Warn("restore: the keyring could not be brought to the restored state before its install", "error", err)
	}
}

// loadKeys is reloadKeys from generation g; widen is widenKeys's.
func (f *FSM) loadKeys(g *generation, widen bool) error {
	s := f.state
	var st KeyStatus
	var switched bool
	var sealed []KeyInstall
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if st, err = readKeyStatus(txn, g, s.Regions()); err != nil {
			return err
		}
		cur, err := getUint(txn, g.key(keyKeyCurrent))
		if err != nil {
			return err
		}
		switched = cur > 0
		if s.keys == nil {
			return nil
		}
		return scan(txn, g.key(prefixKeySealed), func(_, v []byte) error {
			var in KeyInstall
			if err := decMode.Unmarshal(v, &in); err != nil {
				return err
			}
			sealed = append(sealed, in)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("consensus: load key versions: %w", err)
	}
	if k := s.keys; k != nil {
		// In version order: each was sealed with an older one.
		sort.Slice(sealed, func(i, j int) bool { return sealed[i].Version < sealed[j].Version })
		for _, in := range sealed {
			if k.holds(in.Version) {
				continue
			}
			key, err := k.openPseudonymKey(in, f.federation)
			if err != nil {
				return fmt.Errorf("consensus: key version %d in the state: %w", in.Version, err)
			}
			if err := k.add(in.Version, key); err != nil {
				return err
			}
		}
		switch {
		case switched && widen:
			if cur, _ := k.CurrentPseudonymKey(); st.Current > cur {
				if err := k.setCurrent(st.Current); err != nil {
					return fmt.Errorf("consensus: %w", err)
				}
			}
			k.lowerFloor(st.IndexFloor)
		case switched:
			if err := k.setCurrent(st.Current); err != nil {
				return fmt.Errorf("consensus: %w; install that key version on this coordinator and restart it", err)
			}
			k.setFloor(st.IndexFloor)
		}
	}
	if !widen {
		s.keyState.Store(&keyCache{current: st.Current, floor: st.IndexFloor})
	}
	return nil
}

// KeyCurrent returns the current pseudonym key version (1 before any
// rotation), as this replica has applied it; districts publish under it.
func (s *State) KeyCurrent() uint32 {
	if c := s.keyState.Load(); c != nil && c.current > 0 {
		return c.current
	}
	return 1
}

// KeyFloor returns the oldest key version under which the index may still
// hold entries.
func (s *State) KeyFloor() uint32 {
	if c := s.keyState.Load(); c != nil && c.floor > 0 {
		return c.floor
	}
	return s.KeyCurrent()
}

// Keys returns this replica's keyring (nil on a node without the index
// keys). The FSM moves it as it applies the log: the services read the
// current version and the live ones from it.
func (s *State) Keys() *IndexKeys { return s.keys }

// KeyStatus is the federation's key versions and the rotation's progress,
// as this replica has applied them.
type KeyStatus struct {
	// Current is the version that seals and pseudonymizes.
	Current uint32 `json:"current"`
	// IndexFloor is the oldest version under which the index may still
	// hold entries: Current once every district has republished under it.
	IndexFloor uint32 `json:"index_floor"`
	// Versions are every version, oldest first.
	Versions []KeyVersionStatus `json:"versions"`
}

// KeyVersionStatus is one version's part of KeyStatus.
type KeyVersionStatus struct {
	KeyVersion
	// Phase is installing (not every coordinator holds it), installed
	// (every coordinator does; not current yet), republishing (current;
	// not every district has republished under it), current (complete),
	// or retired (an older version: kept to open what was sealed under
	// it and to find audit entries written under its pseudonyms).
	Phase string `json:"phase"`
	// Held are the coordinators that hold it; AwaitingHold the joined
	// ones that have not reported it yet.
	Held         []string `json:"held,omitempty"`
	AwaitingHold []string `json:"awaiting_hold,omitempty"`
	// Republished are the districts that republished under it;
	// AwaitingRepublish the joined ones that have not yet.
	Republished       []string `json:"republished,omitempty"`
	AwaitingRepublish []string `json:"awaiting_republish,omitempty"`
}

// Key phases.
const (
	KeyPhaseInstalling   = "installing"
	KeyPhaseInstalled    = "installed"
	KeyPhaseRepublishing = "republishing"
	KeyPhaseCurrent      = "current"
	KeyPhaseRetired      = "retired"
)

// KeyStatus returns the key versions and the rotation's progress.
func (s *State) KeyStatus() (KeyStatus, error) {
	g, _ := s.acquire()
	defer g.release()
	var st KeyStatus
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		st, err = readKeyStatus(txn, g, s.Regions())
		return err
	})
	if err != nil {
		return KeyStatus{}, fmt.Errorf("consensus: key status: %w", err)
	}
	return st, nil
}

func readKeyStatus(txn *badger.Txn, g *generation, regions []Region) (KeyStatus, error) {
	cur, err := getUint(txn, g.key(keyKeyCurrent))
	if err != nil {
		return KeyStatus{}, err
	}
	st := KeyStatus{Current: max(uint32(cur), 1)}
	versions := []KeyVersion{{Version: 1}}
	if err := scan(txn, g.key(prefixKeyVersion), func(_, v []byte) error {
		var rec KeyVersion
		if err := decMode.Unmarshal(v, &rec); err != nil {
			return err
		}
		versions = append(versions, rec)
		return nil
	}); err != nil {
		return KeyStatus{}, err
	}
	for _, rec := range versions {
		held, republished := map[string]bool{}, map[string]bool{}
		pfx := g.key(keyProgressPrefix(rec.Version))
		if err := scan(txn, pfx, func(k, v []byte) error {
			var p keyProgressRecord
			if err := decMode.Unmarshal(v, &p); err != nil {
				return err
			}
			region := string(k[len(pfx):])
			if _, ok := regionIn(regions, region); !ok {
				return nil // removed since
			}
			switch p.Stage {
			case KeyHeld:
				held[region] = true
			case KeyRepublished:
				republished[region] = true
			}
			return nil
		}); err != nil {
			return KeyStatus{}, err
		}
		vs := KeyVersionStatus{KeyVersion: rec, Held: sortedKeys(held), Republished: sortedKeys(republished)}
		if rec.Version > 1 {
			vs.AwaitingHold = awaiting(regions, isCoordinatorRegion, held)
			if rec.Version <= st.Current {
				vs.AwaitingRepublish = awaiting(regions, isDistrictRegion, republished)
			}
		}
		switch {
		case rec.Version < st.Current:
			vs.Phase = KeyPhaseRetired
		case rec.Version == st.Current && len(vs.AwaitingRepublish) > 0:
			vs.Phase = KeyPhaseRepublishing
		case rec.Version == st.Current:
			vs.Phase = KeyPhaseCurrent
		case len(vs.AwaitingHold) > 0:
			vs.Phase = KeyPhaseInstalling
		default:
			vs.Phase = KeyPhaseInstalled
		}
		st.Versions = append(st.Versions, vs)
	}
	st.IndexFloor = st.Current
	if st.Current > 1 {
		for _, vs := range st.Versions {
			if vs.Version == st.Current && len(vs.AwaitingRepublish) > 0 {
				st.IndexFloor = st.Current - 1
			}
		}
	}
	return st, nil
}

func regionIn(regions []Region, path string) (Region, bool) {
	for _, r := range regions {
		if r.Path == path {
			return r, true
		}
	}
	return Region{}, false
}

func sortedKeys(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The exchange operation by which a node that does not lead reports its
// key progress to the leader: open to every node role (districts report
// too; consensus.apply is for coordinators relaying operators), the
// reporting node being the caller as the exchange verified it.
const (
	opKeyProgress       = "consensus.keyprogress"
	maxKeyProgressBody  = 64
	keyProgressRate     = 1
	keyProgressBurst    = 10
	keyProgressDeadline = 10 * time.Second
)

type keyProgressReply = anchorReply

func (r *Replica) registerKeyHandler() {
	r.cfg.Endpoint.Handle(opKeyProgress, r.handleKeyProgress,
		exchange.AllowRoles(certs.Province, certs.City, certs.District),
		exchange.MaxBody(maxKeyProgressBody), exchange.Timeout(keyProgressDeadline),
		exchange.RateLimit(keyProgressRate, keyProgressBurst))
}

func (r *Replica) handleKeyProgress(ctx context.Context, req *exchange.Request) (any, error) {
	if !r.IsLeader() {
		return keyProgressReply{NotLeader: true}, nil
	}
	var in KeyProgress
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	index, err := r.proposeNodeCommand(ctx, CmdKeyProgress, req.Caller, in)
	if w := toWire(err); w != nil {
		return keyProgressReply{Refused: w}, nil
	}
	switch {
	case errors.Is(err, ErrOutcomeUnknown):
		return keyProgressReply{Unknown: true}, nil
	case notTaken(err):
		return keyProgressReply{NotLeader: true}, nil
	case err != nil:
		return nil, toExchange(err)
	}
	return keyProgressReply{Index: index}, nil
}

// proposeNodeCommand proposes, on the leader, a command a node issues on
// its own (no actor), checked first as the FSM will apply it, and returns
// the log index it was applied at.
func (r *Replica) proposeNodeCommand(ctx context.Context, t CommandType, proposer certs.Identity, body any) (uint64, error) {
	return r.proposeOwn(ctx, t, proposer, body, keyProgressDeadline)
}

// proposeOwn is proposeNodeCommand with the deadline of its Raft apply
// (when ctx has none).
func (r *Replica) proposeOwn(ctx context.Context, t CommandType, proposer certs.Identity, body any, deadline time.Duration) (uint64, error) {
	data, err := EncodeCommand(t, Envelope{Proposer: proposer, At: nowUTC()}, body)
	if err != nil {
		return 0, err
	}
	cmd, err := DecodeCommand(data)
	if err != nil {
		return 0, err
	}
	if err := r.precheck(ctx, cmd); err != nil {
		return 0, err
	}
	f := r.raft.Apply(data, timeoutOf(ctx, deadline))
	if err := r.await(f); err != nil {
		return 0, raftError(err)
	}
	if e, ok := f.Response().(error); ok && e != nil {
		return 0, e
	}
	return f.Index(), nil
}

// SubmitKeyProgress reports that this node reached stage for key version
// v, through the leader, and returns once this replica has applied it. A
// refusal is a *RefusedError; ErrOutcomeUnknown may be retried (a report
// applied already is taken again without change).
func (r *Replica) SubmitKeyProgress(ctx context.Context, v uint32, stage KeyStage) error {
	var index uint64
	in := KeyProgress{Version: v, Stage: stage}
	if r.IsLeader() {
		var err error
		if index, err = r.proposeNodeCommand(ctx, CmdKeyProgress, r.cfg.Self, in); err != nil {
			return err
		}
	} else {
		var reply keyProgressReply
		if err := r.callLeader(ctx, opKeyProgress, in, &reply); err != nil {
			return err
		}
		if err := leaderOutcome(reply.Refused, reply.Unknown, reply.NotLeader); err != nil {
			return err
		}
		index = reply.Index
	}
	return r.waitApplied(ctx, index)
}

// Keys returns this replica's keyring (nil on a node without the index
// keys): the FSM adds installed versions to it and moves its current
// version at the switch.
func (r *Replica) Keys() *IndexKeys { return r.state.keys }

// remove deletes key straight in the transaction, past the staging, as
// put writes (an authorized index group's withdrawal). The key must not
// be staged.
func (w *writer) remove(key []byte) {
	key = w.gen.key(key)
	for {
		err := w.txn.Delete(key)
		if errors.Is(err, badger.ErrTxnTooBig) {
			w.renew()
			continue
		}
		if err != nil {
			panic(fmt.Sprintf("consensus: write state: %v", err))
		}
		return
	}
}
