// Package node composes one credfed node — storage, the exchange, Raft and
// the local HTTPS API — and owns the order in which they start and stop.
// It serves the local users (departments, coordinators, portals,
// operators), answers other nodes' lookups and exposes the node's metrics.
//
// A district node also runs two background jobs: the publisher, which
// drains the outbox into the replicated index (consensus.Publisher), and
// the sweep (sweep.go), which queues a subject for an index refresh when
// one of its records stops being displayed, and deletes records whose
// retention period has ended.
package node
