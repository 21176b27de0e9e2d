package systemtest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The layers, top to bottom: cmd → localfed → node → {httpapi, services}
// → {consensus, exchange, storage, certs} → credit. api is shared by cmd,
// httpapi and the services that sign documents, and depends on the
// vocabulary alone; fault and internal/…
// depend on nothing of ours.
var (
	lower    = []string{"certs", "attest", "storage", "exchange", "consensus", "keyring"}
	services = []string{"audit", "intake", "lookup", "rights", "checks", "queriers", "stats", "lifecycle", "enroll", "rekey", "disclosure", "pseudonym", "publish", "sweep", "jobs"}
	upper    = []string{"httpapi", "console", "node", "localfed", "bench", "cmd/credfed", "api", "systemtest"}
)

// TestImportLayers holds the import graph to the layers: nothing imports
// upwards, the API layer reaches storage, Raft and the exchange only
// through the services, and api imports none of node, the services or
// storage.
func TestImportLayers(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH: the import graph cannot be listed")
	}
	cmd := exec.Command("go", "list", "-e", "-f", "{{.ImportPath}}|{{join .Imports \",\"}}|{{join .Deps \",\"}}", "credfed/...")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	type pkg struct{ imports, deps []string }
	pkgs := map[string]pkg{}
	ours := func(list string) []string {
		var out []string
		for _, p := range strings.Split(list, ",") {
			if rest, ok := strings.CutPrefix(p, "credfed/"); ok {
				out = append(out, rest)
			}
		}
		return out
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		if len(parts) != 3 {
			t.Fatalf("go list line %q", line)
		}
		pkgs[strings.TrimPrefix(parts[0], "credfed/")] = pkg{imports: ours(parts[1]), deps: ours(parts[2])}
	}
	if len(pkgs) < 15 {
		t.Fatalf("go list found %d packages: %v", len(pkgs), pkgs)
	}
	none := func(name string, got []string, forbidden []string, how string) {
		t.Helper()
		for _, f := range forbidden {
			if slices.Contains(got, f) {
				t.Errorf("%s %s %s", name, how, f)
			}
		}
	}
	for name, p := range pkgs {
		switch {
		case name == "internal/exchangetest": // test support: real endpoints
			none(name, p.deps, append(slices.Clone(services), upper...), "depends on the layer above,")
		case name == "credit" || name == "fault" || strings.HasPrefix(name, "internal/"):
			if len(p.deps) > 0 {
				t.Errorf("%s depends on %v; it depends on nothing of ours", name, p.deps)
			}
		case name == "api":
			for _, d := range p.deps {
				if d != "credit" {
					t.Errorf("api depends on %s; it may use the vocabulary (credit) only", d)
				}
			}
		case slices.Contains(lower, name):
			none(name, p.deps, append(slices.Clone(services), upper...), "depends on the layer above,")
		case slices.Contains(services, name):
			// api is the JSON vocabulary (it depends on credit alone): a
			// service that signs a document builds it in the API's form.
			none(name, p.deps, slices.DeleteFunc(slices.Clone(upper), func(u string) bool { return u == "api" }), "depends on the layer above,")
		case name == "console": // pages over the API, in process
			none(name, p.imports, []string{"storage", "exchange", "consensus"}, "imports directly")
			none(name, p.deps, []string{"node", "localfed", "cmd/credfed"}, "depends on")
		case name == "httpapi":
			none(name, p.imports, []string{"storage", "exchange", "consensus"}, "imports directly")
			none(name, p.deps, []string{"node", "localfed", "cmd/credfed"}, "depends on")
		case name == "node":
			none(name, p.deps, []string{"localfed", "cmd/credfed", "systemtest"}, "depends on")
		case name == "localfed":
			none(name, p.deps, []string{"bench", "cmd/credfed", "systemtest"}, "depends on")
		case name == "bench":
			none(name, p.deps, []string{"cmd/credfed", "systemtest"}, "depends on")
		}
	}
	for _, want := range append(append(slices.Clone(lower), services...), "httpapi", "node", "localfed", "api") {
		if _, ok := pkgs[want]; !ok {
			t.Errorf("no package %s", want)
		}
	}
}
