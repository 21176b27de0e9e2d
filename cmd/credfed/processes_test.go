package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"credfed/internal/wait"
	"credfed/localfed"
)

// TestNodesAsSeparateProcesses runs a federation the way operators do:
// `credfed demo --init-only` writes the configurations and demo.json, every
// node is its own `credfed node --config` process on loopback (the lines
// the init printed), `credfed demo load` loads the synthetic data through
// the districts' APIs, and the lookups it printed (`--demo DIR`, as the
// province's and each city's coordinator) find records in both districts.
// SIGTERM stops each process cleanly.
func TestNodesAsSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs five processes; skipped with -short")
	}
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "fed")
	out, err := exec.Command(bin, "demo", "--dir", dir, "--districts", "2", "--init-only").CombinedOutput()
	if err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	configs := regexp.MustCompile(`(?m)^  credfed node --config (\S+)$`).FindAllStringSubmatch(string(out), -1)
	if len(configs) != 5 || !strings.Contains(string(out), "credfed demo load --dir "+dir) {
		t.Fatalf("init printed %d node lines:\n%s", len(configs), out)
	}
	d, err := localfed.ReadDemoFile(dir)
	if err != nil || len(d.Nodes) != 5 || d.Showcase != nil || d.Clients.Coordinators["hangzhou"].Cert == "" {
		t.Fatalf("demo.json after --init-only: %+v %v", d, err)
	}
	type proc struct {
		name string
		cmd  *exec.Cmd
	}
	var procs []proc
	for _, m := range configs {
		name := filepath.Base(filepath.Dir(m[1]))
		logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "node", "--config", m[1], "--log-level", "warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, proc{name, cmd})
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
			logf.Close()
			if t.Failed() {
				data, _ := os.ReadFile(logf.Name())
				t.Logf("log of %s:\n%s", name, data)
			}
		})
	}

	// demo load waits for the nodes itself.
	load, err := exec.Command(bin, "demo", "load", "--dir", dir, "--records", "60", "--timeout", "2m").CombinedOutput()
	if err != nil || !strings.Contains(string(load), "loaded 60 synthetic records into 2 districts") {
		t.Fatalf("demo load: %v\n%s", err, load)
	}
	d, err = localfed.ReadDemoFile(dir)
	if err != nil || d.Showcase == nil || !strings.Contains(string(load), "showcase subject "+d.Showcase.Subject) {
		t.Fatalf("demo.json after demo load: %+v %v\n%s", d.Showcase, err, load)
	}
	lookups := printedLookups(t, string(load))
	if len(lookups) != 3 {
		t.Fatalf("demo load printed %d lookups:\n%s", len(lookups), load)
	}
	for _, line := range lookups {
		var last string
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := wait.For(ctx, 100*time.Millisecond, func() bool {
			out, err := exec.Command("sh", "-c", strings.Replace(line, "credfed ", bin+" ", 1)+" --json").Output()
			last = fmt.Sprintf("%v %s", err, out)
			return err == nil && districtsWithRecords(t, out) == 2
		})
		cancel()
		if err != nil {
			t.Fatalf("%s across processes: %s", line, last)
		}
	}
	// A second load loads nothing and says so.
	again, err := exec.Command(bin, "demo", "load", "--dir", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(again), "already in the districts") {
		t.Fatalf("second demo load: %v\n%s", err, again)
	}
	// SIGTERM: each process shuts down gracefully and exits 0.
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s exited with %v", p.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30 s of SIGTERM", p.name)
		}
	}
}
