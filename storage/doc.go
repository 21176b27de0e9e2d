// Package storage is a node's durable state in one Badger v4 database:
// personal public credit records with their versions and indexes, the
// outbox of pending index updates, the tamper-evident audit log and the
// district's cache of pseudonyms; and, in a second database (StateDB), the
// replicated state of the Raft FSM.
//
// # Key layout (version 5)
//
// One Badger DB per node. Every key starts with a one-byte family and '/'
// (the audit head is "a!head", outside the "a/" range). Textual parts are
// separated by a NUL byte, which no part may contain (ErrInvalidRecord);
// numbers are big-endian so that keys sort numerically. The layout version
// is stored under m/layout and checked by Open (ErrLayoutVersion).
//
//	r/<department>\x00<id>                     → latest version, CBOR credit.Record
//	v/<department>\x00<id>\x00<version:be32>   → a superseded version, CBOR credit.Record (layout 2 also kept the latest here)
//	s/<subject>\x00<department>\x00<id>        → the latest version's summary fields (codec.go: encodeFacts), or empty: subject index (latest subject only)
//	P/<last seq:be64>                          → an outbox page: subjects that need an index update, each with its seq (outbox.go)
//	a/<seq:be64>                               → CBOR AuditEntry (with Seq, Prev, Hash)
//	a!head                                     → CBOR {seq, hash} of the last audit entry
//	A/<pseudonym>\x00<seq:be64>                → empty: audit entries by subject pseudonym
//	e/<day:be32, offset 2^31><subject>         → empty: due marker, a display or retention period of the subject's ends that day (due.go)
//	j/<job name>                               → a background job's status and progress (jobs.go)
//	u/<district>\x00<at:be64><pseudonym:16>     → empty: a pseudonym a coordinator handed to a district, until checked (custody.go)
//	U/<district>                               → CBOR Custody: that district's pseudonymization counts and flag
//	m/layout                                   → "5" (layouts 1–3 kept the outbox as o/<subject> → seq and O/<seq> → subject; 5 added the audit journal)
//	m/due                                      → the catalog version the due markers were built with
//	m/oseq                                     → be64: last outbox sequence number handed out
//	m/records                                  → be64: number of records (CountRecords)
//	m/restores                                 → CBOR []RestoreMarker: the restores that made this store, oldest first (backup.go)
//	n/<subject>                                → 16 bytes: the subject's pseudonym (pseudonyms.go)
//
// The replicated state (Raft FSM) is in a second Badger database beside
// this one, a StateDB (state.go), tuned for a single writer whose writes the
// Raft log can rebuild; its only family is owned by the consensus package:
//
//	x/…   index entries, regions, catalog versions, revocations, the
//	      applied index (layout in consensus/state.go)
//
// Reserved for later issues:
//
//	b/…   objections
//	p/…   repair applications
//
// The Raft log and stable store are not in Badger: they are in raft-wal
// files beside the database (consensus/), which measured about twice as
// fast for raft's synced appends (docs/BENCHMARKS.md).
//
// A record's subject is the raw identifier (the district holds its own
// records); the audit log and its A/ index hold only pseudonyms, and the
// outbox's subjects are pseudonymized by a coordinator before anything
// leaves the district. Values are CBOR in one Core Deterministic encode
// mode and one strict, bounded decode mode, both built once (codec.go).
//
// # Durability
//
// An acknowledged write survives a crash and a power loss. Badger runs with
// SyncWrites: a commit returns only after the memtable's write-ahead log
// (and the value log, for values above the value threshold) has been
// msync'ed to disk, and on restart Badger replays the WAL. SubmitRecords,
// UpdateRecord, DeleteRecord and AckOutbox therefore return only once their
// transaction is on stable storage; AuditLog.Append once its entries are
// in the audit journal, flushed with fdatasync (see "Audit log"). (SyncWrites=false plus
// DB.Sync after each batch is not equivalent: Sync flushes only the current
// memtable's WAL, and a write that landed in a memtable rotated out just
// before would ride on an unsynced WAL until that memtable is flushed.)
//
// Note that Badger logs, and does not return, an error from syncing the
// value log (value.go), while it returns the WAL's. The preset's value
// threshold (16 KiB) keeps records and audit entries in the WAL and LSM
// tree, so their durability errors reach the caller.
//
// # Group commit
//
// A sync costs far more than the write it protects. Badger merges
// concurrent commits into one write but still syncs the WAL once per
// transaction, so this package coalesces itself: every record write
// (SubmitRecords, UpdateRecord, DeleteRecord) is queued to one committer
// goroutine, which takes everything waiting, plans it in one transaction
// (reads see the writes planned before them, so two submissions of the same
// key in one group are told apart correctly) and commits it with a single
// sync, then answers every caller. Audit appends do the same through one
// appender goroutine, into the audit journal (below, "Audit log", for how
// its groups are split). A record group or a large batch that would exceed
// half of Badger's transaction limit (15 % of the memtable size) is split into
// several transactions, each synced before anyone is answered; so on an
// error some records of a batch may be stored, and resubmitting is safe
// (they come back as duplicates). A record that does not fit in a
// transaction on its own is refused (ErrRecordTooLarge). The committer is
// the only writer of r/, v/, s/ and the outbox sequence, so its
// transactions do not conflict; it only adds outbox pages, which only
// AckOutbox changes afterwards.
//
// # Outbox
//
// Every record change marks its subject in the outbox in the same
// transaction as the change: an entry with a new, strictly increasing
// sequence number in a page of that transaction (outbox.go), one entry a
// subject a transaction. The publisher (package publish) reads
// PendingSubjects, recomputes each subject's index summary from the current
// records and proposes it through Raft, then calls AckOutbox with the
// entries it read, which removes them; an entry of a later change, in a
// later page, stays. Entries are absolute,
// not deltas, so a repeated or late drain is harmless, and an acknowledged
// record always reaches the index, whatever crashes or elections happen.
//
// # Audit log
//
// Entry n is stored under a/<n> with Prev = Hash of entry n-1 (zero for
// n = 1) and Hash = SHA-256(Prev || CBOR(entry without Hash)). Verify walks
// the chain and names the first changed, removed or reordered entry
// (*AuditTamperError). Someone who can write the data directory and removes
// the newest entries together with a rewound a!head leaves a valid shorter
// chain: catching that needs the audit heads anchored elsewhere (the
// heads anchored in Raft, anchors.go), not here.
//
// An append is acknowledged once its entries are in the audit journal
// (credfed-audit.journal beside Badger's files, 8 MiB, auditjournal.go):
// one fdatasync of a preallocated file, where a synced Badger commit syncs
// two files. A group is flushed in parts of at most a quarter of the
// journal, and an entry larger than that is refused (ErrAuditEntry). The
// appender moves everything pending into a/, A/ and a!head, in synced
// commits within the transaction budget, once 512 entries or 1 MiB are
// pending, when the journal is full, before any reader of the log (Range,
// BySubject, Page, Verify, the anchor checks, WriteBackup, Badger()) looks,
// after 100 ms without an append, and at Close, which then empties the
// journal; Open moves what a crash left in it before it returns. A journal
// write or move that fails refuses every later append and read of the log
// until the node restarts (the entries are in the journal, for that
// start). With an encryption key the journal is sealed under a key derived
// from it; a frame that does not authenticate, or a journal whose entries
// do not chain on from the store's head, refuses the Open (ErrCorrupt)
// before anything is moved.
//
// # Backup and restore
//
// WriteBackup streams every key of the store from one read transaction as
// an encrypted, chunked, authenticated file (backupfile.go: AES-256-GCM
// under a per-file key derived from the encryption-at-rest key); Restore
// loads one into an absent or empty directory beside the store's and
// renames it into place once every chunk authenticated and the audit chain
// verifies, marks every subject for publishing (outbox numbers restart
// above the restore's time in nanoseconds) and records a RestoreMarker,
// on which CheckAnchorsReport accepts a chain that ends before its anchors
// (backup.go, anchors.go).
//
// # Tuning
//
// Open uses a small-machine preset instead of Badger's defaults, which
// assume a big server (5 × 64 MiB memtables, a 256 MiB block cache, an
// unbounded index cache, 1 GiB value-log files): 3 × 16 MiB memtables,
// 32 MiB block cache, 128 MiB index cache, 16 KiB value threshold, 64 MiB
// value-log files (GC reclaims in smaller steps; the active file is never
// reclaimed), 2 compactors (the minimum that keeps L0 compacting),
// NumVersionsToKeep 1, SyncWrites on. Both caches are required, not just
// advised: with encryption Badger panics in Open without a block cache and
// at the first memtable flush without an index cache, so Open sets both
// whatever the preset. docs/BENCHMARKS.md compares the preset with the
// defaults.
//
// # Logging
//
// Nothing this package logs or returns contains an identifier or record
// content. Badger's own warnings and errors are bridged to the slog.Logger
// with their arguments redacted except numbers, and Badger errors from
// operations on keys are returned with their text withheld (they can quote
// a key); errors.Is and errors.As still reach them.
package storage
