package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"credfed/api"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
)

// buildBinary compiles credfed into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	if raceDetector {
		t.Skip("the nodes run as separate processes built without the race detector: under -race this test would watch only its own client code (go test ./... runs it)")
	}
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
	d, err := localfed.ReadDemoFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Nodes) != 5 || d.Nodes[0].Role != "province" || d.Showcase == nil || len(d.Clients.Department) != 2 ||
		len(d.Clients.Coordinators) != 3 || d.Clients.Coordinators["quzhou"].Cert == "" {
		t.Fatalf("demo.json: %+v", d)
	}

	// The console: one login link per role, printed and in demo.json, each
	// opening its node's login form for its account.
	if len(d.ConsoleAccounts) != 3 || d.Console != d.ConsoleAccounts[0].Login {
		t.Fatalf("demo.json's console accounts: %+v (console %q)", d.ConsoleAccounts, d.Console)
	}
	for _, a := range d.ConsoleAccounts {
		if !strings.Contains(p.stdout.String(), a.Login) || a.Password == "" {
			t.Errorf("the %s's console link is not printed, or has no password: %+v", a.Role, a)
		}
		page := consolePage(t, d.CA, a.Login)
		if !strings.Contains(page, `id="link-login"`) || !strings.Contains(page, a.Name) {
			t.Errorf("the %s's login link opens:\n%s", a.Role, page)
		}
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
	// The same lookup through the API client with demo.json's certificates.
	c, err := d.Client("", "coordinator", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := c.Lookup(context.Background(), api.LookupRequest{Subject: d.Showcase.Subject, Purpose: "ADMIN-LICENSING", User: "test", Reference: "T-1"})
	if err != nil || len(ans.Districts) != 2 {
		t.Fatalf("lookup: %+v %v", ans, err)
	}

	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	// Every printed credfed lookup — the province's coordinator, then each
	// city's through its own node — run as printed, answers with records
	// from both districts.
	lookups := printedLookups(t, p.stdout.String())
	if len(lookups) != 3 || !strings.Contains(lookups[1], "--as coordinator --node quzhou") || !strings.Contains(lookups[2], "--node hangzhou") {
		t.Fatalf("printed lookups: %q", lookups)
	}
	for _, line := range lookups {
		out, err := exec.Command("sh", "-c", strings.Replace(line, "credfed ", bin+" ", 1)+" --json").Output()
		if err != nil || districtsWithRecords(t, out) != 2 {
			t.Fatalf("printed line %s: %v\n%s", line, err, out)
		}
	}
	out, err := run("lookup", "--demo", dir, "--as", "coordinator", "--node", "quzhou", "--subject", d.Showcase.Subject,
		"--purpose", "ADMIN-LICENSING", "--user", "t", "--reference", "T-2")
	if err != nil || !regexp.MustCompile(`(?m)^zhejiang/quzhou/kecheng +柯城区 +ok +1$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^zhejiang/hangzhou/xihu +西湖区 +ok +1$`).MatchString(out) {
		t.Fatalf("credfed lookup as the coordinator of quzhou: %v\n%s", err, out)
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
	if n := len(regexp.MustCompile(`(?m)^zhejiang/\S+/\S+ +\S+ +district +nonvoter `).FindAllString(status, -1)); n != 2 {
		t.Fatalf("credfed federation status lists %d districts as non-voters, want 2:\n%s", n, status)
	}
	district := d.Nodes[len(d.Nodes)-1].Name
	if out, err := run("federation", "status", "--demo", dir, "--as", "department", "--node", district); err != nil ||
		!regexp.MustCompile(`(?m)^publish +\S+ +\d+`).MatchString(out) || !regexp.MustCompile(`(?m)^sweep +`).MatchString(out) {
		t.Fatalf("a district's status lacks its jobs: %v\n%s", err, out)
	}

	// The sample files are accepted by a real district.
	if out, err := run("records", "submit", filepath.Join("..", "..", "examples", "records.ndjson"), "--demo", dir, "--node", district); err != nil ||
		!strings.Contains(out, "3 records: 3 accepted, 0 duplicate, 0 rejected") {
		t.Fatalf("submitting examples/records.ndjson: %v\n%s", err, out)
	}
	// A CSV file with a bad row: the report names its line.
	today := credit.TodayAt(time.Now())
	occurred, decided := (today - 10).String(), (today - 5).String()
	csv := filepath.Join(t.TempDir(), "records.txt")
	os.WriteFile(csv, []byte(csvHeader+
		"CSV-1,"+d.Showcase.Subject+",FOOD-DRUG-PENALTY,罚〔2026〕9号,"+occurred+","+decided+",CSV 导入\n"+
		"CSV-2,"+d.Showcase.Subject+",NO-SUCH-ITEM,罚〔2026〕10号,"+occurred+","+decided+",坏行\n"), 0o600)
	sout, err := run("records", "submit", "--demo", dir, "--node", district, csv)
	if err == nil || !strings.Contains(sout, "read 2 records (CSV) from "+csv) || !strings.Contains(sout, "2 records: 1 accepted, 0 duplicate, 1 rejected") ||
		!strings.Contains(sout, `line 3 (id "CSV-2"): unknown_catalog_item`) {
		t.Fatalf("credfed records submit: %v\n%s", err, sout)
	}
	p.stop(t)

	// A second start resumes the same federation and data.
	p2 := startDemo(t, bin, dir)
	if strings.Contains(p2.stdout.String(), "loaded") || !strings.Contains(p2.stdout.String(), "resuming") {
		t.Fatalf("second start loaded the data again:\n%s", p2.stdout)
	}
	d2, err := localfed.ReadDemoFile(dir)
	if err != nil || d2.Nodes[0].API != d.Nodes[0].API || d2.Showcase == nil || d2.Showcase.Subject != d.Showcase.Subject {
		t.Fatalf("second start changed the federation: %+v vs %+v (%v)", d2, d, err)
	}
	ans, err = c.Lookup(context.Background(), api.LookupRequest{Subject: d.Showcase.Subject, Purpose: "ADMIN-LICENSING", User: "test", Reference: "T-3"})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(ans)
	if districtsWithRecords(t, raw) != 2 || !bytes.Contains(raw, []byte("CSV-1")) || !bytes.Contains(raw, []byte("EX-NDJSON-1")) {
		t.Fatalf("after resume: %s", raw)
	}
}

// consolePage GETs a console page with the demo's CA as the only root.
func consolePage(t *testing.T, caFile, url string) string {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return string(b)
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

// printedLookups returns the `credfed lookup` lines of out, as printed.
func printedLookups(t *testing.T, out string) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "  credfed lookup ") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

func districtsWithRecords(t *testing.T, out []byte) int {
	var ans api.LookupAnswer
	if err := json.Unmarshal(out, &ans); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	n := 0
	for _, d := range ans.Districts {
		if d.Status == api.DistrictOK && len(d.Records) > 0 {
			n++
		}
	}
	return n
}
