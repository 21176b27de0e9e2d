package main

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestTuneNodeGC: without GOGC, or with an empty one, a node runs at
// nodeGCPercent; an operator's GOGC (off, 80: as Go's runtime read it at
// start) is kept.
func TestTuneNodeGC(t *testing.T) {
	before := debug.SetGCPercent(-1)
	debug.SetGCPercent(before)
	t.Cleanup(func() { debug.SetGCPercent(before) })

	if v, set := os.LookupEnv("GOGC"); set {
		t.Setenv("GOGC", v) // restored after the test
	}
	os.Unsetenv("GOGC")
	debug.SetGCPercent(100)
	if got := tuneNodeGC(); got != nodeGCPercent {
		t.Errorf("GOGC unset: tuneNodeGC() = %d, want %d", got, nodeGCPercent)
	}
	if p := debug.SetGCPercent(100); p != nodeGCPercent {
		t.Errorf("GOGC unset: the runtime's target is %d, want %d", p, nodeGCPercent)
	}

	t.Setenv("GOGC", "") // empty: Go's runtime reads 100, and it is no choice
	debug.SetGCPercent(100)
	if got := tuneNodeGC(); got != nodeGCPercent {
		t.Errorf("GOGC empty: tuneNodeGC() = %d, want %d", got, nodeGCPercent)
	}

	t.Setenv("GOGC", "off")
	debug.SetGCPercent(-1) // what the runtime would have read from GOGC=off
	if got := tuneNodeGC(); got != -1 {
		t.Errorf("GOGC=off: tuneNodeGC() = %d, want -1 (kept off)", got)
	}

	t.Setenv("GOGC", "80")
	debug.SetGCPercent(80) // what the runtime would have read from GOGC=80
	if got := tuneNodeGC(); got != 80 {
		t.Errorf("GOGC=80: tuneNodeGC() = %d, want 80", got)
	}
	if p := debug.SetGCPercent(80); p != 80 {
		t.Errorf("GOGC=80: the runtime's target is %d, want it kept", p)
	}
}
