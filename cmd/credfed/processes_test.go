package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"credfed/credit"
	"credfed/internal/wait"
	"credfed/node"
)

// TestNodesAsSeparateProcesses runs a federation the way operators do:
// `credfed demo --init-only` writes the configurations, then every node is
// its own `credfed node --config` process on loopback. A record submitted
// at each district is found by a coordinator's lookup; SIGTERM stops each
// process cleanly.
func TestNodesAsSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs five processes; skipped with -short")
	}
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "fed")
	if out, err := exec.Command(bin, "demo", "--dir", dir, "--districts", "2", "--init-only").CombinedOutput(); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	layout, err := node.CreateLocal(node.LocalSpec{Dir: dir}) // reads the existing layout
	if err != nil {
		t.Fatal(err)
	}
	var procs []*exec.Cmd
	for _, n := range layout.Nodes {
		logf, err := os.Create(filepath.Join(t.TempDir(), n.Name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "node", "--config", n.ConfigPath, "--log-level", "warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
			logf.Close()
			if t.Failed() {
				data, _ := os.ReadFile(logf.Name())
				t.Logf("log of %s:\n%s", n.Name, data)
			}
		})
	}
	// Every node becomes ready (leader known, catalog replicated).
	for _, n := range layout.Nodes {
		waitHTTP(t, "http://"+n.Metrics+"/readyz", 60*time.Second)
	}

	subject := credit.SyntheticPerson(5150, credit.NewDate(1970, 7, 7))
	d := demoFile{CA: layout.CA}
	for i, n := range layout.Nodes {
		if n.Role != "district" {
			continue
		}
		files := layout.Departments[n.Name]
		hc := demoHTTPClient(t, d, demoCert{files.Cert, files.Key})
		decided := credit.TodayAt(time.Now()) - 3 // within the display period whenever the test runs
		body := fmt.Sprintf(`{"id":"P-%d","subject":"%s","catalog_item":"FOOD-DRUG-PENALTY","decision_number":"罚〔2026〕%d号","occurred_on":"%s","decided_on":"%s","summary":"多进程测试"}`,
			i, subject, i, (decided - 2).String(), decided.String())
		resp, err := hc.Post("https://"+n.API+"/v1/records", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("submit at %s: %d %s", n.Name, resp.StatusCode, out)
		}
	}
	hc := demoHTTPClient(t, d, demoCert{layout.Coordinator.Cert, layout.Coordinator.Key})
	lookup, _ := json.Marshal(map[string]string{"subject": subject, "purpose": "ADMIN-LICENSING", "user": "t", "reference": "MP-1"})
	var last string
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = wait.For(ctx, 100*time.Millisecond, func() bool {
		resp, err := hc.Post("https://"+layout.Nodes[0].API+"/v1/lookups", "application/json", bytes.NewReader(lookup))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, out)
		return resp.StatusCode == 200 && districtsWithRecords(t, out) == 2
	})
	if err != nil {
		t.Fatalf("lookup across processes: %s", last)
	}
	// SIGTERM: each process shuts down gracefully and exits 0.
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- procs[i].Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s exited with %v", layout.Nodes[i].Name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30 s of SIGTERM", layout.Nodes[i].Name)
		}
	}
}

// waitHTTP polls url until it answers 200 or the timeout passes.
func waitHTTP(t *testing.T, url string, timeout time.Duration) {
	t.Helper()
	wait.Until(t, timeout, url+" to answer 200", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}
