package main

import (
	"os"
	"runtime/debug"
)

// nodeGCPercent is the Go garbage collector's target (GOGC) of the
// processes that run nodes (credfed node, credfed demo) when GOGC is not
// set: the heap may grow 25 % over what is live before a collection
// instead of Go's 100 %. Most of a busy node's heap is Badger's large
// byte buffers (memtable arenas, table builders), which are cheap to
// mark, so collecting sooner costs little CPU: in the bench it lowered
// an ingesting district's peak by about 40 % with no measurable change in
// the CPU per lookup, and intake within the runs' noise (docs/BENCHMARKS.md,
// "The node's GC target").
const nodeGCPercent = 25

// tuneNodeGC sets nodeGCPercent unless the operator chose a GOGC (an
// empty GOGC, which Go reads as 100, is no choice: a unit file's
// "Environment=GOGC=" should not undo the target). It returns the target
// in force afterwards (-1 for GOGC=off).
func tuneNodeGC() int {
	if os.Getenv("GOGC") != "" {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p
	}
	debug.SetGCPercent(nodeGCPercent)
	return nodeGCPercent
}
