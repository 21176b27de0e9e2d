// Package systemtest holds the end-to-end tests: whole federations of real
// nodes (Raft, QUIC with mutual TLS, Badger) on 127.0.0.1, driven through
// the API client as users drive them.
package systemtest
