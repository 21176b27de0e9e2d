// Package node composes one credfed node — storage, the exchange, Raft and
// the local HTTPS API — and owns the order in which they start and stop.
// It serves the local users (departments, coordinators, portals,
// operators), answers other nodes' lookups, drains the outbox into the
// replicated index and exposes the node's metrics.
package node
