package bench

import (
	"fmt"
	"math"
	"strings"
)

// Args are the command-line flags of `credfed bench front` for the
// configuration.
func (c FrontConfig) Args() []string {
	return []string{"--listen", c.Listen, "--ca", c.CA, "--cert", c.Cert, "--key", c.Key, "--federation", c.Federation,
		"--dsn", c.DSN, "--pool", fmt.Sprint(c.Pool)}
}

func (r *run) topology() Topology {
	t := Topology{Mode: r.fed.mode(), Nodes: len(r.fed.layout.Nodes), Districts: len(r.fed.layout.Districts()), Data: r.data.String()}
	var names []string
	for _, n := range r.fed.layout.Nodes {
		names = append(names, fmt.Sprintf("%s %s", n.Role, n.Name))
	}
	how := "every node its own `credfed node` process (hashicorp/raft's default timing)"
	if t.Mode == "in-process" {
		how = "all nodes in the bench's process"
	}
	t.Summary = fmt.Sprintf("%d nodes on 127.0.0.1, %s: %s; encryption at rest on; lookups by the province's coordinator at %s; intake at %s",
		t.Nodes, how, strings.Join(names, ", "), r.province, r.intakeAt.Name)
	if r.pg != nil {
		front := "its own process (`credfed bench front`)"
		if t.Mode == "in-process" {
			front = "in the bench's process"
		}
		t.Baseline = fmt.Sprintf("PostgreSQL %s, one cluster on 127.0.0.1 (fsync=on, synchronous_commit=on, wal_sync_method=%s, shared_buffers=256MB, max_wal_size=4GB): "+
			"one records table, primary key (district, department, id), indexed by subject; an audit row per lookup, in the statement that reads, "+
			"and per submitted batch, in its transaction; prepared statements; pgxpool sized to the concurrency (1 or %d). "+
			"The front: net/http, TLS 1.3 + mutual TLS with certificates of the federation's CA, JSON as credfed's API, a pool of %d, in %s",
			r.pg.version, r.pg.walSync, LookupClients, LookupClients, front)
	}
	return t
}

func (r *run) figures() []Figure {
	pgv := ""
	if r.pg != nil {
		pgv = " " + strings.Fields(r.pg.version + " ?")[0]
	}
	frontName := "PostgreSQL" + pgv + " behind the HTTPS + mTLS + JSON front"
	directName := "PostgreSQL" + pgv + " over SQL (pgxpool)"
	walSync := "fdatasync"
	if r.pg != nil {
		walSync = r.pg.walSync
	}
	lookupDur := "credfed: the coordinator's audit entry of the lookup and each holding district's audit entry synced to disk (the node's audit journal, fdatasync) before the answer"
	intakeDur := "credfed: a batch is acknowledged once its records and their outbox entries are in a synced Badger commit and, after it, the batch's audit entry in the node's audit journal (fdatasync)"
	raftDur := "; credfed's index updates committed through Raft (raft-wal appends synced on a quorum of voters) and applied at the province"
	if r.pg != nil { // what the central copy synced, when there is one
		lookupDur += "; central copy: the lookup's audit row inserted in the statement that reads the records, committed with synchronous_commit=on, fsync=on (WAL " + walSync + ") before the answer"
		intakeDur += "; central copy: a batch is one transaction (its rows and an audit row of their ids) committed with synchronous_commit=on, fsync=on (WAL " + walSync + ")"
		raftDur += "; the central copy's rows are visible at commit"
	}
	indexDur := intakeDur + raftDur
	lookupData := r.data.String() + "; subjects drawn at random among those in 2 districts; purpose " + Purpose
	intakeData := fmt.Sprintf("%s records of new subjects per round into one district (%s), %d clients at once, batches of %d, on top of the loaded data",
		thousands(int64(r.cfg.Intake)), r.intakeAt.Name, r.cfg.IntakeClients, IntakeBatch)
	type spec struct {
		figureSpec
		credfed string // the figure whose credfed values these are
	}
	specs := []spec{
		{figureSpec{"lookup_c1", "lookups/s", frontName, lookupData + "; 1 client", lookupDur, true, "PG+front"}, "lookup_c1"},
		{figureSpec{"lookup_c1_p99", "ms", frontName, lookupData + "; 1 client", lookupDur, false, "PG+front"}, "lookup_c1_p99"},
		{figureSpec{"lookup_c64", "lookups/s", frontName, lookupData + "; 64 clients", lookupDur, true, "PG+front"}, "lookup_c64"},
		{figureSpec{"lookup_c64_p99", "ms", frontName, lookupData + "; 64 clients", lookupDur, false, "PG+front"}, "lookup_c64_p99"},
		{figureSpec{"lookup_c1_direct", "lookups/s", directName, lookupData + "; 1 client", lookupDur, true, "PG SQL"}, "lookup_c1"},
		{figureSpec{"lookup_c1_direct_p99", "ms", directName, lookupData + "; 1 client", lookupDur, false, "PG SQL"}, "lookup_c1_p99"},
		{figureSpec{"lookup_c64_direct", "lookups/s", directName, lookupData + "; 64 clients", lookupDur, true, "PG SQL"}, "lookup_c64"},
		{figureSpec{"lookup_c64_direct_p99", "ms", directName, lookupData + "; 64 clients", lookupDur, false, "PG SQL"}, "lookup_c64_p99"},
	}
	if !r.cfg.InProcess {
		specs = append(specs, spec{figureSpec{"cpu_per_lookup", "µs", "PostgreSQL" + pgv + " + the front (all their processes)",
			lookupData + fmt.Sprintf("; 64 clients; credfed: utime+stime of all %d node processes over the lookup_c64 measurement ÷ lookups", len(r.fed.layout.Nodes)), lookupDur, false, "PG+front"}, "cpu_per_lookup"})
	}
	specs = append(specs,
		spec{figureSpec{"intake", "records/s", "PostgreSQL" + pgv + " COPY", intakeData, intakeDur, true, "PG COPY"}, "intake"},
		spec{figureSpec{"intake_insert", "records/s", "PostgreSQL" + pgv + " INSERT … SELECT FROM unnest", intakeData, intakeDur, true, "PG INSERT"}, "intake"},
		spec{figureSpec{"intake_indexed", "records/s", "PostgreSQL" + pgv + " COPY (visible at commit)", intakeData + "; until the province's index shows every record", indexDur, true, "PG COPY"}, "intake_indexed"},
		spec{figureSpec{"index_lag", "s", "", intakeData + "; from the last acknowledgement until the province's index shows every record", indexDur, false, ""}, "index_lag"},
	)
	var out []Figure
	for _, s := range specs {
		if r.pg == nil && s.name != s.credfed {
			continue // the same credfed values against a baseline there is not
		}
		var base []float64
		if r.pg != nil && s.baseline != "" {
			base = r.bases[s.name]
		}
		f := newFigure(s.figureSpec, r.values[s.credfed], base)
		f.Note = r.notes[s.name]
		if r.pg == nil {
			f.Baseline = ""
		}
		out = append(out, f)
	}
	if !r.cfg.InProcess {
		out = append(out, r.memoryFigures()...)
	}
	return out
}

// memoryFigures are the peaks of resident memory: the intake district's
// and all nodes' (VmHWM) against the PostgreSQL cluster's PSS (and the
// front's RSS), sampled each second.
func (r *run) memoryFigures() []Figure {
	mib := func(kib int64) float64 { return float64(kib) / 1024 }
	district, _ := statusKiB(r.fed.pid(r.intakeAt.Name), "VmHWM")
	var all int64
	for _, pid := range r.fed.pids() {
		v, _ := statusKiB(pid, "VmHWM")
		all += v
	}
	data := fmt.Sprintf("after loading %s and %d rounds of lookups and intake (%s records into %s per round)",
		r.data.String(), r.cfg.Rounds, thousands(int64(r.cfg.Intake)), r.intakeAt.Name)
	var pg, pgFront []float64
	pgName, allName := "", ""
	if r.pg != nil {
		pg, pgFront = []float64{mib(r.pgPeakKiB.Load())}, []float64{mib(r.pgFrontPeakKiB.Load())}
		pgName = "PostgreSQL " + strings.Fields(r.pg.version)[0] + " cluster, all processes (PSS: shared buffers counted once), peak of 1 s samples"
		allName = "PostgreSQL " + strings.Fields(r.pg.version)[0] + " cluster (PSS) + the front (RSS), peak of 1 s samples"
	}
	return []Figure{
		newFigure(figureSpec{"rss_district_peak", "MiB", pgName, data + "; credfed: VmHWM of the " + r.intakeAt.Name + " district process", "", false, "PG PSS"},
			[]float64{nonzero(mib(district))}, pg),
		newFigure(figureSpec{"rss_nodes_peak", "MiB", allName, data + fmt.Sprintf("; credfed: the sum of the %d node processes' VmHWM", len(r.fed.layout.Nodes)), "", false, "PG PSS+front"},
			[]float64{nonzero(mib(all))}, pgFront),
	}
}

func nonzero(v float64) float64 {
	if v <= 0 {
		return math.NaN()
	}
	return v
}
