package consensus

import "fmt"

// The command table: everything the package knows about a command type is
// registered here, in one place (the way Consul's FSM registers one
// applier per message type). A new command type is a constant in
// command.go, its applier, and one registerCommand call below;
// TestCommandTable_EveryTypeRegistered fails if the call is forgotten.
//
// The FSM looks its entries up in applyCommand, the leader's relay
// handler (consensus.apply) asks whether a node may relay the type, and
// ApplyBatch and Replica.onApplied act on the effects: caches to reload
// and whether the leader must reconcile Raft's configuration.
func init() {
	registerCommand(CmdIndexBatch, commandSpec{
		name:  "index_batch",
		apply: (*FSM).applyIndexBatch,
	})
	registerCommand(CmdSealedIndexBatch, commandSpec{
		// Proposed by the leader's batcher only, sealed (seal.go); a node
		// without the index key skips it.
		name:  "sealed_index_batch",
		apply: (*FSM).applySealedIndexBatch,
	})
	registerCommand(CmdRegionPut, commandSpec{
		name:    "region_put",
		apply:   decodedAt((*FSM).applyRegionPut),
		relay:   true,
		effects: reloadRegistry | registryChanged,
	})
	registerCommand(CmdRegionRemove, commandSpec{
		name:    "region_remove",
		apply:   decoded((*FSM).applyRegionRemove),
		relay:   true,
		effects: reloadRegistry | registryChanged | reloadRevocations,
	})
	registerCommand(CmdCatalogPublish, commandSpec{
		name:    "catalog_publish",
		apply:   decoded((*FSM).applyCatalogPublish),
		relay:   true,
		effects: reloadCatalog,
	})
	registerCommand(CmdRevoke, commandSpec{
		name:    "revoke",
		apply:   decoded((*FSM).applyRevoke),
		relay:   true,
		effects: reloadRevocations,
	})
	registerCommand(CmdSuspend, commandSpec{
		name:    "suspend",
		apply:   decoded((*FSM).applySuspend),
		relay:   true,
		effects: reloadRevocations,
	})
	registerCommand(CmdReinstate, commandSpec{
		name:    "reinstate",
		apply:   decoded((*FSM).applyReinstate),
		relay:   true,
		effects: reloadRevocations,
	})
	registerCommand(CmdAuditAnchor, commandSpec{
		// Not relayable: a node proposes its own anchors through
		// consensus.anchor (anchor.go), which names the caller as proposer.
		name:  "audit_anchor",
		apply: decoded((*FSM).applyAuditAnchor),
	})
	registerCommand(CmdRegionAdd, commandSpec{
		name:    "region_add",
		apply:   decodedAt((*FSM).applyRegionAdd),
		relay:   true,
		effects: reloadRegistry | registryChanged,
	})
	registerCommand(CmdJoin, commandSpec{
		// Relayed by the coordinator that serves the join, which the FSM
		// holds to be above the region.
		name:    "join",
		apply:   decoded((*FSM).applyJoin),
		relay:   true,
		effects: reloadRegistry | registryChanged,
	})
	// Key rotation (keys.go).
	registerCommand(CmdKeyInstall, commandSpec{
		name:    "key_install",
		apply:   decodedAt((*FSM).applyKeyInstall),
		relay:   true,
		effects: reloadKeys,
	})
	registerCommand(CmdKeySwitch, commandSpec{
		name:    "key_switch",
		apply:   decodedAt((*FSM).applyKeySwitch),
		relay:   true,
		effects: reloadKeys,
	})
	registerCommand(CmdKeyProgress, commandSpec{
		// Not relayable: a node reports its own progress through
		// consensus.keyprogress (keys.go), which names the caller as
		// proposer.
		name:    "key_progress",
		apply:   decoded((*FSM).applyKeyProgress),
		effects: reloadKeys,
	})
	registerCommand(CmdFederationInit, commandSpec{
		// Not relayable: only the province node that bootstraps the
		// federation proposes it, as leader.
		name:    "federation_init",
		apply:   decoded((*FSM).applyInit),
		effects: reloadRegistry | reloadCatalog | registryChanged,
	})
}

// commandSpec is one command type's entry in the table.
type commandSpec struct {
	// name labels metrics and messages (CommandType.String).
	name string
	// apply decodes the command's body, authorizes it from the envelope
	// and the replicated state, and stages its writes in w. It returns the
	// command's result: nil, a *RefusedError (the staged writes dropped,
	// so a refused command changes nothing), or IndexResult. It panics on
	// corruption (a body the leader itself built that does not decode).
	apply func(f *FSM, w *writer, c Command, index uint64) any
	// relay says whether a node may hand the command to the leader on an
	// operator's behalf (the consensus.apply operation).
	relay bool
	// effects are what must follow once a batch holding the command is
	// committed (refused or not).
	effects effect
}

// effect is a set of things to do after a batch is committed.
type effect uint8

const (
	// reloadRegistry, reloadCatalog and reloadRevocations reload the
	// in-memory copies of the region registry, the current catalog and
	// the live revocation list from the state.
	reloadRegistry effect = 1 << iota
	reloadCatalog
	reloadRevocations
	// registryChanged tells the leader to reconcile Raft's configuration
	// with the registry now rather than at its next tick.
	registryChanged
	// reloadKeys brings the keyring and the cached key versions in line
	// with the state (FSM.reloadKeys; also after registry changes, which
	// change who a rotation waits for).
	reloadKeys

	reloadAll = reloadRegistry | reloadCatalog | reloadRevocations
)

// commands is the table, by type byte.
var commands [256]*commandSpec

// registerCommand adds a command type to the table; registering a type
// twice, or without a name or an applier, is a programming error.
func registerCommand(t CommandType, spec commandSpec) {
	if commands[t] != nil {
		panic(fmt.Sprintf("consensus: command type %d registered twice", uint8(t)))
	}
	if spec.name == "" || spec.apply == nil {
		panic(fmt.Sprintf("consensus: command type %d registered without a name or an applier", uint8(t)))
	}
	commands[t] = &spec
}

// commandFor returns the table entry of t, nil for a type this binary does
// not know.
func commandFor(t CommandType) *commandSpec { return commands[t] }

// decodedAt is decoded for an applier that needs the entry's log index.
func decodedAt[B any](apply func(f *FSM, w *writer, c Command, body B, index uint64) error) func(*FSM, *writer, Command, uint64) any {
	return func(f *FSM, w *writer, c Command, index uint64) any {
		var body B
		if err := decodeBody(c, &body); err != nil {
			return f.refused(w, c, refuse(ErrInvalid, "%s body does not decode", c.Type))
		}
		return f.refused(w, c, apply(f, w, c, body, index))
	}
}

// decoded adapts the applier of one decoded body B to the table: a body
// that does not decode was proposed by a buggy or hostile node and is
// refused (ErrInvalid), not corruption, since the envelope itself decoded;
// a refused command's staged writes are dropped.
func decoded[B any](apply func(f *FSM, w *writer, c Command, body B) error) func(*FSM, *writer, Command, uint64) any {
	return func(f *FSM, w *writer, c Command, _ uint64) any {
		var body B
		if err := decodeBody(c, &body); err != nil {
			return f.refused(w, c, refuse(ErrInvalid, "%s body does not decode", c.Type))
		}
		return f.refused(w, c, apply(f, w, c, body))
	}
}
