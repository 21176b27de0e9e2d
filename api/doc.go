// Package api is the node's HTTP API as its users see it: the JSON request
// and answer types of every route, the error body, and a Go client. The
// CLI, the tests and the console use it; the server (package httpapi)
// answers with the same types, so no answer is declared twice.
//
// It imports nothing of credfed but the domain vocabulary (credit), so a
// program that only calls nodes does not pull in the node.
package api
