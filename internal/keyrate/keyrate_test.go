package keyrate

import "testing"

func TestAllowPerKeyAndBounded(t *testing.T) {
	l := New[string](0.001, 2, 2)
	if !l.Allow("a") || !l.Allow("a") || l.Allow("a") {
		t.Fatal("key a: want two tokens, then a refusal")
	}
	if !l.Allow("b") {
		t.Fatal("key b has its own bucket")
	}
	// Two keys held, neither full again: a third is refused, not let in.
	if l.Allow("c") {
		t.Fatal("a third key was admitted beyond the bound")
	}
	if l.Len() != 2 {
		t.Fatalf("%d keys held, want 2", l.Len())
	}
	// A bucket full again is forgotten to make room (a rate so high that
	// it refills at once).
	m := New[int](1e9, 1, 1)
	if !m.Allow(1) || !m.Allow(2) || m.Len() != 1 {
		t.Fatalf("a full bucket was not forgotten for a new key (%d keys)", m.Len())
	}
}
