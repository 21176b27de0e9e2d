package node

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
)

// TestHostileCrashBetweenTheJoinsRenamesIsNotAJoinAgain: a node
// joining with a token writes its key and certificate with
// certs.ReplaceKeyPair, which renames the key into place, then the
// certificate. A crash between the two renames leaves the new key at
// tls.key and the certificate beside it (tls.cert + ".next"), a pair that
// certs.LoadKeyPair completes. Started again with the same command line
// (`credfed node --join TOKEN`, documented as safe to repeat), the node
// must see that it has joined (joined false, no error) and not present the
// used token again — which the coordinator would refuse, leaving the node
// unable to start until an operator adds the region again.
func TestHostileCrashBetweenTheJoinsRenamesIsNotAJoinAgain(t *testing.T) {
	root, err := certs.NewCA("demo", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	id := certs.Identity{Federation: "demo", Role: certs.District, Region: "zhejiang/quzhou/kaihua"}
	cfg := Config{Federation: id.Federation, Role: id.Role, Region: id.Region, DataDir: filepath.Join(dir, "data"),
		Listen: ListenConfig{Exchange: "127.0.0.1:17441", API: "127.0.0.1:18441", Metrics: "127.0.0.1:0"},
		TLS:    TLSConfig{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "kaihua.pem"), Key: filepath.Join(dir, "kaihua-key.pem")}}
	if err := os.WriteFile(cfg.TLS.CA, root.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	// The state the crash left: the new key in place, its certificate
	// still beside it.
	is, err := root.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := is.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.TLS.Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.TLS.Cert+".next", is.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	// The pair loads (the node itself would start with it).
	if pair, err := certs.LoadKeyPair(cfg.TLS.Cert, cfg.TLS.Key); err != nil || !pair.Leaf.Equal(is.Cert) {
		t.Fatalf("the interrupted pair does not load: %v", err)
	}
	// Undo what LoadKeyPair completed, to present Join the crash's state.
	if err := os.Rename(cfg.TLS.Cert, cfg.TLS.Cert+".next"); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(root.Cert.Raw)
	// The coordinator named in the token is not reachable: a node that
	// knows it has joined never asks it.
	tok := api.JoinToken{Federation: id.Federation, Region: id.Region, Role: string(id.Role), Secret: make([]byte, 32),
		API: "https://127.0.0.1:1", CA: sum[:]}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	joined, err := Join(ctx, cfg, tok.String())
	if err != nil || joined {
		t.Errorf("restarted with --join after a crash between the renames: joined %v, %v (want: already joined, the token not presented again)", joined, err)
	}
}
