// Package node composes one credfed node from its configuration: the
// replicated state and Raft (consensus), the exchange, the records
// database (storage), the services (intake, lookup, pseudonym, publish,
// sweep), the audit recorder, the background-job runner and the HTTPS API
// (httpapi), and owns the order in which they start and stop.
package node
