package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"credfed/certs"
	"credfed/credit"
	"credfed/internal/wait"
)

// buildBinary compiles credfed into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "credfed")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// demoProcess is a running `credfed demo`.
type demoProcess struct {
	cmd    *exec.Cmd
	stdout *bytes.Buffer
	lines  chan string
}

// startDemo runs the binary's demo and waits for "credfed demo ready".
func startDemo(t *testing.T, bin, dir string, args ...string) *demoProcess {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"demo", "--dir", dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &demoProcess{cmd: cmd, stdout: &bytes.Buffer{}, lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.After(3 * time.Minute)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("demo exited before it was ready:\n%s\nstderr:\n%s", p.stdout, stderr.String())
			}
			p.stdout.WriteString(line + "\n")
			if line == "credfed demo ready" {
				return p
			}
		case <-deadline:
			t.Fatalf("demo not ready after 3 minutes:\n%s\nstderr:\n%s", p.stdout, stderr.String())
		}
	}
}

// stop interrupts the demo and waits for it to exit cleanly.
func (p *demoProcess) stop(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo exited with %v", err)
		}
	case <-time.After(60 * time.Second):
		p.cmd.Process.Kill()
		t.Error("demo did not stop within 60 s of SIGINT")
	}
}

func TestDemoBinaryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a whole federation; skipped with -short")
	}
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "demo")
	p := startDemo(t, bin, dir, "--districts", "2", "--records", "200")
	if !strings.Contains(p.stdout.String(), "loaded 200 synthetic records") {
		t.Fatalf("first start did not load the data:\n%s", p.stdout)
	}
	var d demoFile
	data, err := os.ReadFile(filepath.Join(dir, "demo.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Nodes) != 5 || d.Nodes[0].Role != "province" || d.Showcase == nil || len(d.Clients.Department) != 2 {
		t.Fatalf("demo.json: %s", data)
	}

	// The printed curl line, run as printed, returns records from more than
	// one district.
	if curl, err := exec.LookPath("curl"); err == nil {
		line := printedCurl(t, p.stdout.String())
		out, err := exec.Command("sh", "-c", strings.Replace(line, "curl ", curl+" -sS --fail ", 1)).Output()
		if err != nil {
			t.Fatalf("printed curl line failed: %v\n%s", err, line)
		}
		if n := districtsWithRecords(t, out); n < 2 {
			t.Fatalf("printed curl line returned records from %d districts: %s", n, out)
		}
	}
	// The same lookup with the certificates demo.json names.
	hc := demoHTTPClient(t, d, d.Clients.Coordinator)
	body, _ := json.Marshal(map[string]string{"subject": d.Showcase.Subject, "purpose": "ADMIN-LICENSING", "user": "test", "reference": "T-1"})
	resp, err := hc.Post(d.Nodes[0].API+"/v1/lookups", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || districtsWithRecords(t, out) != 2 {
		t.Fatalf("lookup: %d %s", resp.StatusCode, out)
	}

	// The client commands against the running demo.
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("lookup", "--demo", dir, "--subject", d.Showcase.Subject, "--purpose", "ADMIN-LICENSING", "--user", "t", "--reference", "T-2"); err != nil ||
		strings.Count(out, ": ok, 1 records") != 2 {
		t.Fatalf("credfed lookup: %v\n%s", err, out)
	}
	// The province asked need not lead (a stalled moment on a loaded machine
	// moves leadership to a city), but some node must, and the province
	// knows which.
	knowsLeader := regexp.MustCompile(`raft (Leader|Follower), term \d+, leader zhejiang[^ ,]*,`)
	var status string
	wait.Until(t, 20*time.Second, "federation status to name a leader", func() bool {
		out, err := run("federation", "status", "--demo", dir)
		status = out
		return err == nil && knowsLeader.MatchString(out)
	})
	if strings.Count(status, "nonvoter") != 2 {
		t.Fatalf("credfed federation status lists %d non-voters, want 2:\n%s", strings.Count(status, "nonvoter"), status)
	}
	district := d.Nodes[len(d.Nodes)-1].Name
	// Recent dates: the record must be within its display period whenever
	// the test runs.
	today := credit.TodayAt(time.Now())
	occurred, decided := (today - 10).String(), (today - 5).String()
	csv := filepath.Join(t.TempDir(), "records.csv")
	os.WriteFile(csv, []byte("id,subject,catalog_item,decision_number,occurred_on,decided_on,summary\n"+
		"CSV-1,"+d.Showcase.Subject+",FOOD-DRUG-PENALTY,罚〔2026〕9号,"+occurred+","+decided+",CSV 导入\n"+
		"CSV-2,"+d.Showcase.Subject+",NO-SUCH-ITEM,罚〔2026〕10号,"+occurred+","+decided+",坏行\n"), 0o600)
	sout, err := run("records", "submit", "--demo", dir, "--node", district, csv)
	if err == nil || !strings.Contains(sout, "2 records: 1 accepted, 0 duplicate, 1 rejected") || !strings.Contains(sout, "line 3") ||
		!strings.Contains(sout, "unknown_catalog_item") {
		t.Fatalf("credfed records submit: %v\n%s", err, sout)
	}
	p.stop(t)

	// A second start resumes the same federation and data.
	p2 := startDemo(t, bin, dir)
	if strings.Contains(p2.stdout.String(), "loaded") {
		t.Fatalf("second start loaded the data again:\n%s", p2.stdout)
	}
	data2, _ := os.ReadFile(filepath.Join(dir, "demo.json"))
	var d2 demoFile
	json.Unmarshal(data2, &d2)
	if d2.Nodes[0].API != d.Nodes[0].API || d2.Showcase.Subject != d.Showcase.Subject {
		t.Fatalf("second start changed the federation: %s vs %s", d2.Nodes[0].API, d.Nodes[0].API)
	}
	resp, err = hc.Post(d.Nodes[0].API+"/v1/lookups", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out2, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if districtsWithRecords(t, out2) != 2 || !bytes.Contains(out2, []byte("CSV-1")) {
		t.Fatalf("after resume: %s", out2)
	}
}

// printedCurl extracts the first curl command the demo printed (two lines
// joined by a backslash).
func printedCurl(t *testing.T, out string) string {
	t.Helper()
	i := strings.Index(out, "  curl --cacert")
	if i < 0 {
		t.Fatalf("no curl line in:\n%s", out)
	}
	rest := out[i:]
	end := strings.Index(rest, "/v1/lookups")
	if end < 0 {
		t.Fatalf("no lookup curl line in:\n%s", out)
	}
	return strings.ReplaceAll(strings.TrimSpace(rest[:end+len("/v1/lookups")]), "\\\n", " ")
}

func districtsWithRecords(t *testing.T, out []byte) int {
	var ans struct {
		Districts []struct {
			Status  string            `json:"status"`
			Records []json.RawMessage `json:"records"`
		} `json:"districts"`
	}
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	n := 0
	for _, d := range ans.Districts {
		if d.Status == "ok" && len(d.Records) > 0 {
			n++
		}
	}
	return n
}

func demoHTTPClient(t *testing.T, d demoFile, c demoCert) *http.Client {
	pool, err := certs.LoadPool(d.CA)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := certs.LoadKeyPair(c.Cert, c.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13}}}
}
