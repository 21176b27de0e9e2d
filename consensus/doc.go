// Package consensus keeps the small state the federation agrees on — the
// index of which districts hold something about a subject, the region
// registry, the catalog and the certificate revocation list — in
// hashicorp/raft, with the state itself in the node's Badger database.
package consensus
