// Package bench is `credfed bench`: it builds a federation on 127.0.0.1 and
// a central PostgreSQL copy of the same data, and measures lookups, intake,
// CPU and memory of both in interleaved rounds, so that a noisy machine
// moves both sides alike.
package bench
