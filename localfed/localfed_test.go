package localfed

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"credfed/certs"
	"credfed/node"
)

// TestCreateWritesAResumableTestOnlyFederation: Create writes every node's
// configuration (test-only, loopback), one coordinator per coordinator
// node, and resumes an existing directory as it is — refusing to turn a
// loopback federation into a docker-compose one.
func TestCreateWritesAResumableTestOnlyFederation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fed")
	l, err := Create(Spec{Dir: dir, Districts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Nodes) != 6 || len(l.Districts()) != 3 {
		t.Fatalf("nodes %+v", l.Nodes)
	}
	for _, n := range l.Nodes {
		cfg, err := node.LoadConfig(n.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.TestOnly || !cfg.Identifiers().TestOnly || !strings.HasPrefix(cfg.Listen.API, "127.0.0.1:") {
			t.Fatalf("%s: test_only %v, api %s", n.Name, cfg.TestOnly, cfg.Listen.API)
		}
		if cfg.DataDir != filepath.Join(dir, "nodes", n.Name, "data") {
			t.Fatalf("%s: data_dir %s", n.Name, cfg.DataDir)
		}
		if n.Role.IsCoordinatorNode() {
			c, ok := l.Coordinators[n.Name]
			if !ok {
				t.Fatalf("no coordinator for %s", n.Name)
			}
			cert, err := certs.LoadCertFile(c.Cert)
			if err != nil {
				t.Fatal(err)
			}
			id, err := certs.IdentityOf(cert)
			if err != nil || id.Role != certs.Coordinator || id.Region != n.Region {
				t.Fatalf("%s's coordinator is %v (%v)", n.Name, id, err)
			}
		}
	}
	again, err := Create(Spec{Dir: dir, Districts: 5})
	if err != nil || len(again.Nodes) != 6 || again.Nodes[3].API != l.Nodes[3].API {
		t.Fatalf("resume: %v, %d nodes", err, len(again.Nodes))
	}
	if _, err := Create(Spec{Dir: dir, Compose: true}); err == nil || !strings.Contains(err.Error(), "docker-compose") {
		t.Fatalf("compose over loopback: %v", err)
	}
	// Real identifiers only when asked for.
	l2, err := Create(Spec{Dir: filepath.Join(t.TempDir(), "real"), Districts: 1, RealIdentifiers: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := node.LoadConfig(l2.Nodes[0].ConfigPath)
	if err != nil || cfg.TestOnly || !cfg.TestMode {
		t.Fatalf("RealIdentifiers: %+v %v", cfg, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "local.json")); err != nil {
		t.Fatal(err)
	}
}
