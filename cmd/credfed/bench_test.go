package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"credfed/bench"
)

// TestBenchQuickEndToEnd runs `credfed bench --quick` as a user would
// (cut to one short round): seven node processes, the throwaway
// PostgreSQL cluster and the front process, then checks the JSON: every
// figure the issue names, both sides measured, each ratio oriented as its
// figure says, and nothing left behind in the temporary directory.
func TestBenchQuickEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs seven node processes and PostgreSQL; skipped with -short")
	}
	if _, err := bench.FindPostgres(); err != nil {
		t.Skipf("the bench's baseline needs PostgreSQL: %v", err)
	}
	bin := buildBinary(t)
	tmp := t.TempDir()
	// The postgres user must reach the cluster's directory under it.
	for _, d := range []string{tmp, filepath.Dir(tmp)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench", "--quick", "--json", "--rounds", "1", "--subjects", "300",
		"--duration", "1s", "--intake", "2000")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("credfed bench: %v\n%s", err, stderr.String())
	}
	var res bench.Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, stdout.String())
	}
	if res.Topology.Mode != "processes" || res.Topology.Nodes != 7 || res.Topology.Districts != 4 || res.Topology.Baseline == "" ||
		res.Machine.CPUs < 1 || len(res.Skipped) != 0 {
		t.Errorf("topology %+v, machine %+v, skipped %v", res.Topology, res.Machine, res.Skipped)
	}
	want := []string{"lookup_c1", "lookup_c1_p99", "lookup_c64", "lookup_c64_p99", "lookup_c1_direct", "lookup_c1_direct_p99",
		"lookup_c64_direct", "lookup_c64_direct_p99", "cpu_per_lookup", "intake", "intake_insert", "intake_indexed", "index_lag",
		"rss_district_peak", "rss_nodes_peak"}
	got := map[string]bench.Figure{}
	for _, f := range res.Figures {
		got[f.Name] = f
	}
	for _, name := range want {
		f, ok := got[name]
		if !ok {
			t.Errorf("no figure %s", name)
			continue
		}
		if f.Value <= 0 || f.Unit == "" || f.DataSize == "" || f.Rounds != 1 {
			t.Errorf("%s: %+v", name, f)
		}
		if name == "index_lag" {
			continue // no baseline: the central copy's rows are visible at commit
		}
		if f.BaselineValue == nil || f.Ratio == nil || f.Baseline == "" {
			t.Errorf("%s has no baseline: %+v", name, f)
			continue
		}
		// One round: the ratio is that round's, oriented so that above 1
		// means credfed does better.
		want := f.Value / *f.BaselineValue
		if !f.HigherIsBetter {
			want = *f.BaselineValue / f.Value
		}
		if math.Abs(*f.Ratio-want) > 1e-6*want {
			t.Errorf("%s: ratio %v, want %v (value %v, baseline %v, higher is better %v)", name, *f.Ratio, want, f.Value, *f.BaselineValue, f.HigherIsBetter)
		}
		if strings.HasPrefix(name, "lookup") || strings.HasPrefix(name, "intake") {
			if !strings.Contains(f.Durability, "synchronous_commit=on") || !strings.Contains(f.Durability, "synced") {
				t.Errorf("%s: durability %q does not say what was synced", name, f.Durability)
			}
		}
	}
	if f := got["lookup_c1"]; f.HigherIsBetter != true || got["cpu_per_lookup"].HigherIsBetter {
		t.Errorf("orientation: lookup_c1 higher is better %v, cpu_per_lookup %v", f.HigherIsBetter, got["cpu_per_lookup"].HigherIsBetter)
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range left {
		if strings.HasPrefix(e.Name(), "credfed-bench-") {
			names = append(names, e.Name())
		}
	}
	if len(names) > 0 {
		t.Errorf("the bench left %v in its temporary directory", names)
	}
}

// TestBenchRefusesBadFlags: out-of-bounds settings are usage errors
// naming the flag, before anything starts.
func TestBenchRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--rounds", "0x"}, {"bench", "--rounds", "99"}, {"bench", "--subjects", "3"},
		{"bench", "--processes", "--in-process"}, {"bench", "--in-process", "--profile", "/tmp/x"}, {"bench", "--intake", "10"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)\n%s", args, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "--") {
			t.Errorf("%v: the error names no flag: %s", args, stderr.String())
		}
	}
}

// TestBenchTableFooterFollowsTheBaseline: the table's footer explains
// ratios only when a baseline ran; without one it says so, and the
// durability lines name only what credfed synced.
func TestBenchTableFooterFollowsTheBaseline(t *testing.T) {
	one := 1.0
	fig := func(durability string, ratio *float64) bench.Figure {
		return bench.Figure{Name: "lookup_c1", Value: 400, Unit: "lookups/s", Durability: durability, Rounds: 1, Values: []float64{400},
			Ratio: ratio, BaselineValue: ratio, HigherIsBetter: true}
	}
	for _, c := range []struct {
		name, baseline, durability string
		ratio                      *float64
		want, not                  []string
	}{
		{"with a baseline", "PostgreSQL 15", "credfed: synced; central copy: synced too", &one,
			[]string{"ratio: above 1 means credfed does better", "central copy: synced too"}, []string{"no baseline"}},
		{"without", "", "credfed: synced", nil,
			[]string{"no baseline: credfed's figures alone", "credfed: synced"}, []string{"ratio: above 1", "central copy"}},
	} {
		res := &bench.Result{Topology: bench.Topology{Baseline: c.baseline}, Figures: []bench.Figure{fig(c.durability, c.ratio)}}
		var out bytes.Buffer
		if err := writeBench(&out, bench.Config{Rounds: 1}, res); err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s: the table lacks %q:\n%s", c.name, w, out.String())
			}
		}
		for _, n := range c.not {
			if strings.Contains(out.String(), n) {
				t.Errorf("%s: the table says %q:\n%s", c.name, n, out.String())
			}
		}
	}
}
