// Package credit is the vocabulary and the rules of personal public credit
// information: identifiers and their check characters, pseudonyms, the
// catalog of record kinds with its purposes, lists, scenarios and
// classification rules, records and their versions, and the pure functions
// that decide display, retention, repair and objection deadlines.
//
// It depends on nothing else of credfed's; every other package speaks it.
package credit
