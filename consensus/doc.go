// Package consensus keeps the small state the federation agrees on — the
// index of which districts hold something about a subject, the region
// registry, the catalog and the certificate revocation list — in
// hashicorp/raft, with the state itself in a Badger database of the node.
//
// # Replicated state
//
// The FSM (fsm.go) is thin: it decodes each log entry, looks its type up
// in the command table (commands.go), whose entry decodes the body and
// asks authz.go whether the entry's proposer may issue it, and writes
// through a staging writer (writer.go) so that a refused command changes
// nothing. The state (state.go) lives under the x/ family of the node's
// state database (storage.OpenState: no sync per write, since the Raft
// log and snapshots are the durable record), so an index replica is
// bounded by disk, not RAM: index entries keyed by (pseudonym, district)
// holding only counts and flags (credit.IndexSummary), the region
// registry, every catalog version, revocations and suspensions, and the
// applied index. Snapshots (snapshot.go) stream the live state from a
// pinned read view, with logical keys, the index section sealed.
//
// The state on disk is a generation (generation.go, DESIGN.md): a
// restore writes the snapshot into a new generation beside the live one,
// checks its SHA-256 trailer and count, makes it durable (flushing
// Badger's pending memtables, then db.Sync: the database runs without
// SyncWrites), and only then switches the one pointer key x/_/live to it,
// in a transaction of its own, synced; the old generation is dropped
// after that, once no read holds it, and any generation but the live one
// is dropped at open. A crash at any point leaves the old state or the
// new one, never a mix, and a corrupt snapshot leaves the old state
// untouched. State written before generations existed opens as
// generation 0. Raft does not restore a snapshot on start (the state is
// on disk); Open restores one only if the state is older than the newest
// snapshot.
//
// # The sealed index
//
// Only coordinators (the nodes holding the pseudonym key) keep the index.
// The leader, always a coordinator, seals every index batch before it
// proposes it (CmdSealedIndexBatch, seal.go): XChaCha20-Poly1305 under an
// index key derived from the pseudonym key (HKDF-SHA256, label
// "credfed/index-seal/v1"), kept in a versioned keyring (IndexKeys; a key
// rotation adds a version, installed on every coordinator before it
// becomes the one that seals: keys.go), with the command
// type, key version and federation as additional data, its plaintext
// padded to a power of two of at least 1 KiB so that its length does not
// tell what it says. A replayed sealed batch changes nothing: updates are absolute and carry the district's
// sequence number. A district (no key) skips sealed batches, keeps none of
// the index (not even ciphertext, and no watermark: its publisher numbers
// updates from its own outbox), restores snapshots without their sealed
// section and stores them without it too (keyless.go: a leader's
// InstallSnapshot stream is rewritten on its way to disk), and drops an
// index an older binary left in its state; it keeps
// the registry, the catalog and the revocations. A coordinator opens the
// batches on apply: one that does not open, or is sealed with a key
// version it does not hold, stops its FSM (corruption, or a key to
// install: skipping it would lose entries unnoticed). A leader without the
// key (a district the registry made a voter) hands leadership over.
// State.IndexEntries (metric credfed_index_entries) is 0 on a district.
//
// # Encryption at rest
//
// With Config.EncryptionKey (the node's encryption_key_file) each Raft log
// entry's data and extensions are encrypted (atrest.go: XChaCha20-Poly1305,
// the entry's index, term and type as additional data), and so is every
// snapshot file (sealed 1 MiB chunks, the last one carrying the stream's
// length), with keys derived from the node key (HKDF-SHA256, labels
// "credfed/raft-log/v1" and "credfed/raft-snapshot/v1"). A log written
// without a key stays readable after one is configured: entries from the
// index recorded then (sealed, in raft-wal's stable store) must be
// encrypted; earlier ones may be plain. Snapshot files written without a
// key stay readable until newer ones replace them.
//
// # Commands
//
// A log entry is one type byte, then a CBOR envelope {proposer, actor, at,
// body} (command.go). Types are numbered and append-only; a type with the
// IgnoreUnknown bit may be skipped by an older binary, any other unknown
// type stops the FSM. The proposer is the node that handed the command to
// the leader, as the leader verified it over mTLS; the actor is the user
// that node vouches for.
//
// Everything about a type is in one entry of the command table
// (commands.go, registerCommand): its name, how to decode, authorize and
// apply it, whether a node may relay it to the leader, and which caches
// it invalidates (registry, catalog, revocations; a registry change also
// makes the leader reconcile Raft's configuration at once). A test fails
// if a CommandType constant has no entry, or no snapshot/restore test.
//
//	type                body              who may issue it
//	sealed_index_batch  SealedIndexBatch  the leader's batcher; inside, each group: a registered
//	                                      district, for its own entries only
//	index_batch         IndexBatch        as above, in the clear (logs written before the seal)
//	region_put          Region            an operator of the region or above, relayed by a registered
//	region_remove       RegionRemove      coordinator node (province or city) of the operator's region
//	suspend             certs.Suspension  or above
//	reinstate           Reinstate
//	catalog_publish     CatalogPublish    an operator of a province region (next version only)
//	revoke              certs.Revocation  an operator of a province region
//	federation_init     FederationInit    a province node, once, for a registry that includes it
//	audit_anchor        AuditAnchor       any registered node, for its own region's audit log only,
//	                                      forward only (consensus.anchor; anchor.go)
//
// A refused command is answered with a *RefusedError (ErrForbidden,
// ErrInvalid, ErrConflict or ErrNotFound) that reaches the proposer,
// across the exchange if it was forwarded. The leader runs a command's
// applier against its state before it proposes it (FSM.check), so a
// command refused at that moment never enters the log.
//
// # Writes
//
// Followers forward writes to the leader over the exchange (forward.go):
// consensus.apply for operator commands (from province and city nodes
// only, bodies of at most MaxApplyBody, rate-limited per caller),
// consensus.index for a district's index updates, consensus.anchor for
// a node's audit head (any node role, rate-limited). The leader's batcher (batcher.go) coalesces the updates
// that arrive while earlier entries are in flight into one log entry, so
// the disk syncs per update fall as load rises. Index updates are
// absolute, with the district's sequence number: a retried or late update
// is ignored, so forwarding is idempotent. Each district's highest applied
// sequence number (its watermark) is replicated too: an update above it is
// newer than its entry and is written without reading it, and since a
// district's outbox drains in sequence order, that is nearly every update. A district writes each accepted
// record and its outbox marker in one synced Badger write (storage), and
// its publisher (package publish) drains the outbox through SubmitIndex,
// retrying across leader changes and restarts, so an acknowledged record
// always reaches the index.
//
// # Reads
//
// Lookup reads the local replica by default and returns the applied index
// it reflects, so callers know how stale it may be. Every local read
// resolves the live generation once and reads within it (State.acquire),
// so a read that overlaps a restore sees the old state or the new one.
// With strong set it is linearizable: the leader records its commit
// index, confirms its leadership with a quorum (VerifyLeader, never a
// lease), and the reader waits until its own replica has applied the last
// entry at or below that index that the FSM sees (ReadIndex; a new leader
// serves these only after a barrier of its term). Raft's own entries — a
// new leader's no-op, barriers — never reach the FSM and change no state,
// so waiting for them (as strong reads did) hung every strong read on an
// idle federation after an election until the next write
// (Replica.readTarget). Non-voters read the same way through the leader.
// A district keeps no index: its Lookup answers ErrNoIndex (its read
// barrier works).
//
// # Membership
//
// Coordinators are voters, districts non-voters. The registry decides:
// the leader reconciles Raft's configuration with it (leader.go) — adding
// a registered region's node as voter or non-voter, changing its address,
// promoting or demoting it, removing the node of a removed region. A new
// federation starts with Bootstrap on a province node. A node that has no
// registry yet takes raft streams only from its own province and city and
// from the voters its configured coordinators name (NewcomerGate,
// newcomer.go): the first entry it takes decides its federation.
//
// # Transport and log
//
// Raft runs over the exchange's QUIC stream layer (ALPN credfed-raft/1) on
// the node's one UDP port, mutually authenticated with node certificates
// (transport.go). The log and stable store are raft-wal files, the log
// encrypted at rest with a node key and its last entries cached in memory
// (raft.LogCache); Badger and bbolt were measured slower for raft's synced
// appends (docs/BENCHMARKS.md).
//
// Raft and raft-wal log through an hclog.Logger that writes slog records
// (raftlog.go): hclog levels map onto slog's, key/value arguments become
// attributes. A clean stop logs no ERROR: a closing replica first tells
// the voters (consensus.presence, presence.go), which then log the
// failures to reach it at debug until it announces that it is back, and
// the failures of its own closing transport are debug too; a node that
// vanishes without announcing it is still an ERROR.
package consensus
