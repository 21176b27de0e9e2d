package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"credfed/localfed"
)

// guideCommands returns the shell lines of docs/operations.md's sh code
// blocks, in order, a backslash continuation joined to its line.
func guideCommands(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	in := false
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```sh"):
			in = true
		case strings.HasPrefix(line, "```"):
			in = false
		case in && strings.TrimSpace(line) != "":
			if s, ok := strings.CutSuffix(line, "\\"); ok {
				cur.WriteString(s + " ")
				continue
			}
			cur.WriteString(line)
			out = append(out, cur.String())
			cur.Reset()
		}
	}
	return out
}

// TestOperationsGuideRuns runs every command of docs/operations.md, as
// written, in order, on a fresh demo federation (the binary built from this
// tree stands for credfed, the demo's directory for credfed-demo), and
// checks what each section promises: the revoked certificate listed, the
// catalog at version 2, version 3 refused.
func TestOperationsGuideRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs a whole federation; skipped with -short")
	}
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "demo")
	p := startDemo(t, bin, dir, "--districts", "2", "--records", "50")
	defer p.stop(t)
	work := t.TempDir()
	// The guide runs from the repository's root: it reads the default
	// catalog there.
	if err := os.MkdirAll(filepath.Join(work, "credit"), 0o700); err != nil {
		t.Fatal(err)
	}
	cat, err := os.ReadFile(filepath.Join("..", "..", "credit", "default_catalog.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "credit", "default_catalog.yaml"), cat, 0o600); err != nil {
		t.Fatal(err)
	}
	cmds := guideCommands(t, filepath.Join("..", "..", "docs", "operations.md"))
	if len(cmds) < 10 {
		t.Fatalf("the guide has %d commands", len(cmds))
	}
	word := regexp.MustCompile(`(^|[;&|] *)credfed `)
	outputs := map[string]string{}
	for _, c := range cmds {
		line := word.ReplaceAllString(c, "${1}"+bin+" ")
		line = strings.ReplaceAll(line, "credfed-demo", dir)
		cmd := exec.Command("sh", "-c", line)
		cmd.Dir = work
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the guide's command failed: %s\n%v\n%s", c, err, out)
		}
		outputs[c] = string(out)
	}
	find := func(prefix string) string {
		for c, out := range outputs {
			if strings.HasPrefix(c, prefix) {
				return out
			}
		}
		t.Fatalf("no command %q in the guide", prefix)
		return ""
	}
	if out := find("credfed certs list"); !strings.Contains(out, "revoked") || !strings.Contains(out, "key copied to a laptop") {
		t.Errorf("certs list after the revocation:\n%s", out)
	}
	if out := find("credfed catalog apply"); !strings.Contains(out, "catalog version 2 published: 1 changes") {
		t.Errorf("catalog apply:\n%s", out)
	}
	if out := find("credfed catalog diff --demo credfed-demo catalog-v3.yaml"); !strings.Contains(out, "FOOD-DRUG-PENALTY  display_period") || !strings.Contains(out, "refused, as it should be") {
		t.Errorf("the refused version 3:\n%s", out)
	}
	if out := find("echo 'correct horse battery staple' | credfed console user add"); !strings.Contains(out, "added wang.li: department of market-supervision in zhejiang/quzhou/kecheng") {
		t.Errorf("console user add:\n%s", out)
	}
	if out := find("credfed console user list"); !regexp.MustCompile(`(?m)^wang\.li +department +market-supervision .* active$`).MatchString(out) {
		t.Errorf("console user list:\n%s", out)
	}
	if out := find("credfed console login-url"); !regexp.MustCompile(`^https://127\.0\.0\.1:\d+/console/login\?token=\S{20,}\n$`).MatchString(out) {
		t.Errorf("console login-url:\n%s", out)
	} else {
		page := consolePage(t, filepath.Join(dir, "ca.pem"), strings.TrimSpace(out))
		if !strings.Contains(page, "wang.li") || !strings.Contains(page, `id="link-login"`) {
			t.Errorf("the printed login link opens:\n%s", page)
		}
	}
	if out := find("credfed certs renew"); !strings.Contains(out, "renewed spiffe://demo/coordinator/zhejiang/quzhou/audit-office") {
		t.Errorf("certs renew:\n%s", out)
	}
	if out := find("credfed certs intermediate"); !strings.Contains(out, "issued intermediate CA \"spare\"") {
		t.Errorf("certs intermediate:\n%s", out)
	}
	if out := find("credfed region add"); !strings.Contains(out, "credfed-join-1.") {
		t.Errorf("region add:\n%s", out)
	}
	if out := find("credfed region promote"); !strings.Contains(out, "promoted zhejiang/quzhou (already a voter)") {
		t.Errorf("region promote:\n%s", out)
	}
	if out := find("credfed region remove"); !strings.Contains(out, "removed zhejiang/quzhou/kaihua (every certificate issued until now to spiffe://demo/district/zhejiang/quzhou/kaihua suspended)") {
		t.Errorf("region remove:\n%s", out)
	}
	if out := find("credfed keys rotate"); !strings.Contains(out, "step: switched") {
		t.Errorf("keys rotate:\n%s", out)
	}
	if out := find("credfed keys status"); !strings.Contains(out, "current key version 2") {
		t.Errorf("keys status:\n%s", out)
	}
	if out := find("credfed audit queriers"); !strings.Contains(out, "queriers at ") {
		t.Errorf("audit queriers:\n%s", out)
	}
	if out := find("credfed stats"); !strings.Contains(out, `"records"`) {
		t.Errorf("stats:\n%s", out)
	}
	if out := find("credfed backup"); !strings.Contains(out, "written to zhejiang.credfed-backup") || !strings.Contains(out, " entries (") {
		t.Errorf("backup:\n%s", out)
	}
	if out := find("credfed restore"); !strings.Contains(out, "subjects marked for publishing") {
		t.Errorf("restore:\n%s", out)
	}
	// A coordinator's batch sent with --no-wait, followed later with --job.
	sent, err := exec.Command(bin, "check", "--demo", dir, "--batch", filepath.Join("..", "..", "examples", "applicants.csv"),
		"--scenario", "ADMIN-LICENSING", "--user", "t", "--no-wait", "--json").Output()
	if err != nil {
		t.Fatalf("check --no-wait: %v\n%s", err, sent)
	}
	var job struct{ ID string }
	if err := json.Unmarshal(sent, &job); err != nil || job.ID == "" {
		t.Fatalf("check --no-wait --json: %s (%v)", sent, err)
	}
	results := filepath.Join(work, "followed.ndjson")
	if out, err := exec.Command(bin, "check", "--demo", dir, "--job", job.ID, "--out", results).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "1000 rows checked") {
		t.Fatalf("check --job: %v\n%s", err, out)
	}
	if data, err := os.ReadFile(results); err != nil || strings.Count(string(data), "\n") != 1000 {
		t.Fatalf("the followed job's results: %d lines, %v", strings.Count(string(data), "\n"), err)
	}
	d, err := localfed.ReadDemoFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Client("", "operator", 0)
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Catalog(t.Context())
	if err != nil || v.Version != 2 {
		t.Fatalf("the catalog after the guide: version %v, %v", v.Version, err)
	}
}
