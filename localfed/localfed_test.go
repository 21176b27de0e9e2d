package localfed

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestResumedFederationRefreshesEndingNodeCertificates: a local federation
// resumed once its node certificates are (nearly) over gets new ones from
// its root CA, with the same identity and host names; fresh ones are kept.
func TestResumedFederationRefreshesEndingNodeCertificates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fed")
	l, err := Create(Spec{Dir: dir, Districts: 1, NodeValidity: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]*x509.Certificate{}
	for _, n := range l.Nodes {
		c, err := certs.LoadCertFile(filepath.Join(filepath.Dir(n.ConfigPath), n.Name+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		before[n.Name] = c
	}
	// One node's certificate is made to end in 5 s (below a sixth of its
	// minute); the others keep a minute.
	ca, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := l.Nodes[0]
	ending, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: l.Federation, Role: n.Role, Region: n.Region},
		Hosts: []string{"127.0.0.1", "localhost"}, Validity: time.Minute, NotBefore: time.Now().Add(-55*time.Second - certs.ClockSkew)})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ending.KeyPEM()
	cp, kp := filepath.Join(filepath.Dir(n.ConfigPath), n.Name+".pem"), filepath.Join(filepath.Dir(n.ConfigPath), n.Name+"-key.pem")
	if err := certs.ReplaceKeyPair(cp, kp, ending.CertPEM(), key); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(Spec{Dir: dir, Districts: 1}); err != nil {
		t.Fatal(err)
	}
	for _, m := range l.Nodes {
		pair, err := certs.LoadKeyPair(filepath.Join(filepath.Dir(m.ConfigPath), m.Name+".pem"), filepath.Join(filepath.Dir(m.ConfigPath), m.Name+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		c := pair.Leaf
		switch {
		case m.Name == n.Name && (c.Equal(ending.Cert) || time.Until(c.NotAfter) < 50*time.Second || len(c.IPAddresses) != 1):
			t.Fatalf("%s: the ending certificate was not refreshed with its hosts: until %v, %v", m.Name, c.NotAfter, c.IPAddresses)
		case m.Name != n.Name && !c.Equal(before[m.Name]):
			t.Fatalf("%s: a fresh certificate was replaced", m.Name)
		}
	}
}
