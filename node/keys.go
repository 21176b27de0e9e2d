package node

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/keyring"
	"credfed/lifecycle"
	"credfed/pseudonym"
	"credfed/publish"
	"credfed/rekey"
	"credfed/storage"
)

// Key rotation's wiring (consensus/keys.go tells the protocol, rekey the
// node's part): a coordinator's keyring is its pseudonym key file
// (version 1) and its key ring file (the versions rotations distributed,
// in the data directory, sealed with the node's encryption key when it has
// one); the replicated state then adds what it holds sealed and sets the
// current version. The services that pseudonymize read the replica's
// keyring, which the FSM moves as it applies the log.

// keyRingPath is the coordinator's key ring file.
func (n *Node) keyRingPath() string { return filepath.Join(n.cfg.DataDir, rekey.FileName) }

// indexKeys builds a coordinator's keyring from its pseudonym key file and
// its key ring file (nil on a node without the pseudonym key).
func (n *Node) indexKeys(encKey []byte) (*consensus.IndexKeys, error) {
	if !n.key.Valid() {
		return nil, nil
	}
	stored, err := rekey.LoadRing(n.keyRingPath(), encKey)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	keys := map[uint32]credit.PseudonymKey{1: n.key}
	for v, k := range stored {
		keys[v] = k
	}
	ring, err := consensus.NewPseudonymKeyRing(keys)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return ring, nil
}

// ring is the replica's keyring as the services see it (nil on a node
// without the keys).
func (n *Node) ring() keyring.Ring {
	if k := n.rep.Keys(); k != nil {
		return k
	}
	return nil
}

// pseudonymKeys is the replica's keyring as the resolver and custody see
// it (nil on a node without the keys).
func (n *Node) pseudonymKeys() pseudonym.Keys {
	if k := n.rep.Keys(); k != nil {
		return k
	}
	return nil
}

// startKeyRotation starts the node's part in key rotations: on a
// coordinator, the job that stores new versions in the key ring file and
// reports them; on a district, the job that republishes every subject
// after a switch.
func (n *Node) startKeyRotation(encKey []byte) error {
	state := n.rep.State()
	switch {
	case n.rep.Keys() != nil:
		n.rekeyCoordinator = rekey.NewCoordinator(rekey.CoordinatorConfig{Self: n.cfg.Identity(), Keys: n.rep.Keys(), State: state,
			Reporter: n.rep, Path: n.keyRingPath(), EncryptionKey: encKey, Logger: n.log})
		return n.jobs.Start(n.rekeyCoordinator.Job())
	case n.cfg.Role == certs.District:
		d, err := rekey.NewDistrict(rekey.DistrictConfig{Self: n.cfg.Identity(), State: state, Reporter: n.rep, Store: n.db,
			Wake: func() { n.jobs.Wake(publish.JobName) }, Logger: n.log})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		n.rekeyDistrict = d
		return n.jobs.Start(d.Job())
	}
	return nil
}

// keysConfig is what the lifecycle service needs to rotate keys (nil on a
// node without them).
func (n *Node) keysConfig() *lifecycle.KeysConfig {
	k := n.rep.Keys()
	if k == nil {
		return nil
	}
	return &lifecycle.KeysConfig{Keys: k, Status: n.rep.State().KeyStatus, Wake: func() { n.jobs.Wake(rekey.JobName) }}
}

// rotation is what a district's publisher needs across key versions (nil
// elsewhere).
func (n *Node) rotation() *publish.Rotation {
	if n.rekeyDistrict == nil {
		return nil
	}
	return &publish.Rotation{Versions: n.rekeyDistrict, ResolveAt: n.names.ResolveAt, CachedAt: n.db.PseudonymsAt}
}

// rotatedKeys is the replica's key versions, for a joining coordinator
// (lifecycle.RegionsConfig.PseudonymKeys).
func (n *Node) rotatedKeys() map[uint32]credit.PseudonymKey {
	k := n.rep.Keys()
	if k == nil {
		return nil
	}
	out := map[uint32]credit.PseudonymKey{}
	for _, v := range k.Versions() {
		if key, ok := k.PseudonymKey(v); ok {
			out[v] = key
		}
	}
	return out
}

// writeJoinedKeyRing stores the key versions a joining coordinator
// received in its key ring file (merged with what the file holds).
func writeJoinedKeyRing(cfg Config, keys map[string]string) error {
	if len(keys) == 0 {
		return nil
	}
	var encKey []byte
	if cfg.EncryptionKeyFile != "" {
		var err error
		if encKey, err = storage.LoadEncryptionKey(cfg.EncryptionKeyFile); err != nil {
			return fmt.Errorf("node: encryption_key_file: %w", err)
		}
	}
	path := filepath.Join(cfg.DataDir, rekey.FileName)
	ring, err := rekey.LoadRing(path, encKey)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	for vs, hx := range keys {
		v, err := strconv.ParseUint(vs, 10, 32)
		k, herr := hex.DecodeString(hx)
		if err != nil || herr != nil || v < 2 || len(k) != credit.PseudonymKeySize {
			return fmt.Errorf("%w: the coordinator sent an invalid pseudonym key version", ErrJoin)
		}
		if have, ok := ring[uint32(v)]; ok && !bytes.Equal(have, k) {
			return fmt.Errorf("%w: the key ring file holds another key version %d than the federation's", ErrJoin, v)
		}
		ring[uint32(v)] = credit.PseudonymKey(k)
	}
	return rekey.SaveRing(path, encKey, ring)
}
