package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func mustIntermediate(t *testing.T, root *CA) *CA {
	t.Helper()
	in, err := root.NewIntermediate("online-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func chainOf(is *Issued) []*x509.Certificate {
	return append([]*x509.Certificate{is.Cert}, is.Chain...)
}

func TestIntermediateSignsLeavesThatVerifyThroughIt(t *testing.T) {
	root := mustCA(t, "demo")
	in := mustIntermediate(t, root)
	revs := NewRevocationList()
	v := NewVerifier(root.Cert, "demo", revs)
	is := mustIssue(t, in, IssueRequest{Identity: district("demo", "tj/heping"), Hosts: []string{"127.0.0.1"}})
	if len(is.Chain) != 1 || !is.Chain[0].Equal(in.Cert) {
		t.Fatalf("an intermediate's leaf must carry the intermediate after it, got %d certificates", len(is.Chain))
	}
	if len(is.TLSCertificate().Certificate) != 2 {
		t.Fatal("the TLS certificate must present the intermediate")
	}
	if _, err := v.Verify(chainOf(is), x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("leaf through the intermediate: %v", err)
	}
	// Without the intermediate the leaf does not lead to the root.
	if _, err := v.Verify([]*x509.Certificate{is.Cert}, x509.ExtKeyUsageServerAuth); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("leaf without its intermediate: got %v, want ErrUntrusted", err)
	}
	// Revoking the intermediate refuses every leaf it signed, and not the
	// root's own leaves.
	direct := mustIssue(t, root, IssueRequest{Identity: district("demo", "tj/hexi"), Hosts: []string{"127.0.0.1"}})
	if err := revs.Revoke(Revocation{Serial: SerialString(in.Cert.SerialNumber), Reason: "keyCompromise", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(chainOf(is), x509.ExtKeyUsageServerAuth); !errors.Is(err, ErrRevoked) {
		t.Fatalf("leaf of a revoked intermediate: got %v, want ErrRevoked", err)
	}
	if _, err := v.Verify(chainOf(direct), x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("a leaf of the root is not touched by revoking an intermediate: %v", err)
	}
}

func TestIntermediateCannotMintOutsideItsFederationOrChainFurther(t *testing.T) {
	root := mustCA(t, "demo")
	in := mustIntermediate(t, root)
	v := NewVerifier(root.Cert, "demo", nil)
	// The key used directly (a thief's view) for another federation's
	// identity: the name constraint refuses it.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://other/district/tj/heping")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), URIs: []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, in.Cert, &key.PublicKey, in.Key)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := x509.ParseCertificate(der)
	if _, err := v.Verify([]*x509.Certificate{forged, in.Cert}, x509.ExtKeyUsageServerAuth); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("a URI outside the name constraint: got %v, want ErrUntrusted", err)
	}
	// An intermediate cannot make another intermediate (path length zero),
	// and a leaf of a sub-CA is refused.
	if _, err := in.NewIntermediate("deeper", 0); !errors.Is(err, ErrNotRoot) {
		t.Fatalf("an intermediate issuing an intermediate: got %v, want ErrNotRoot", err)
	}
	subTmpl := &x509.Certificate{SerialNumber: big.NewInt(78), Subject: pkix.Name{CommonName: "sub", Organization: []string{"demo"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{{Scheme: "spiffe", Host: "demo", Path: "/ca/sub"}}}
	subKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	subDER, err := x509.CreateCertificate(rand.Reader, subTmpl, in.Cert, &subKey.PublicKey, in.Key)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := x509.ParseCertificate(subDER)
	subCA := &CA{Federation: "demo", Cert: sub, Key: subKey, Chain: []*x509.Certificate{sub, in.Cert}}
	leaf := mustIssue(t, subCA, IssueRequest{Identity: district("demo", "tj/heping"), Hosts: []string{"127.0.0.1"}})
	if _, err := v.Verify(chainOf(leaf), x509.ExtKeyUsageServerAuth); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("a leaf two CAs below the root: got %v, want ErrUntrusted", err)
	}
}

func TestRootWithPathLenZeroRefusesIntermediates(t *testing.T) {
	root := mustCA(t, "demo")
	old := *root.Cert
	old.MaxPathLenZero, old.MaxPathLen = true, 0
	oldRoot := &CA{Federation: "demo", Cert: &old, Key: root.Key}
	if _, err := oldRoot.NewIntermediate("x", 0); !errors.Is(err, ErrNotRoot) {
		t.Fatalf("got %v, want ErrNotRoot", err)
	}
}

func TestSignerFilesRoundTrip(t *testing.T) {
	root := mustCA(t, "demo")
	in := mustIntermediate(t, root)
	dir := t.TempDir()
	cp, kp, err := in.WriteSignerFiles(dir, "intermediate")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := in.WriteSignerFiles(dir, "intermediate"); err == nil {
		t.Fatal("a second write over a CA key must be refused")
	}
	got, err := LoadSigner(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(in.Cert) || got.Federation != "demo" || got.IsRoot() {
		t.Fatalf("loaded signer differs: fed %q root %v", got.Federation, got.IsRoot())
	}
	// The root's own files are refused as an online signer.
	rootDir := t.TempDir()
	if err := root.WriteFiles(rootDir); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigner(filepath.Join(rootDir, CACertFile), filepath.Join(rootDir, CAKeyFile)); !errors.Is(err, ErrBadPEM) {
		t.Fatalf("the root as a signer: got %v, want ErrBadPEM", err)
	}
	// Another intermediate's key does not match.
	other := mustIntermediate(t, root)
	_, okp, err := other.WriteSignerFiles(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigner(cp, okp); !errors.Is(err, ErrBadPEM) {
		t.Fatalf("mismatched key: got %v, want ErrBadPEM", err)
	}
}

func TestParseCSR(t *testing.T) {
	id := district("demo", "tj/heping")
	key, der, err := NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParseCSR(der)
	if err != nil || !pub.Equal(&key.PublicKey) {
		t.Fatalf("DER: %v", err)
	}
	if _, err := ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})); err != nil {
		t.Fatalf("PEM: %v", err)
	}
	bad := append([]byte(nil), der...)
	bad[len(bad)-3] ^= 0xff // inside the signature
	for name, in := range map[string][]byte{
		"empty":          nil,
		"garbage":        []byte("not a csr"),
		"bad signature":  bad,
		"wrong pem type": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"too large":      make([]byte, MaxCSRBytes+1),
	} {
		if _, err := ParseCSR(in); !errors.Is(err, ErrBadCSR) {
			t.Errorf("%s: got %v, want ErrBadCSR", name, err)
		}
	}
	// A P-384 key is not one of the federation's.
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	d384, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k384)
	if _, err := ParseCSR(d384); !errors.Is(err, ErrBadCSR) {
		t.Errorf("P-384: got %v, want ErrBadCSR", err)
	}
	if _, err := mustCA(t, "demo").Sign(IssueRequest{Identity: id}, &k384.PublicKey); !errors.Is(err, ErrBadCSR) {
		t.Errorf("Sign over P-384: got %v, want ErrBadCSR", err)
	}
}

// TestReplaceKeyPairSurvivesACrashAtEachStep stops the replacement after
// each of its file operations and checks that LoadKeyPair then loads a
// matching pair, old or new, and finishes what was interrupted.
func TestReplaceKeyPairSurvivesACrashAtEachStep(t *testing.T) {
	root := mustCA(t, "demo")
	id := district("demo", "tj/heping")
	oldPair := mustIssue(t, root, IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	newPair := mustIssue(t, root, IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	newKey, _ := newPair.KeyPEM()
	oldKey, _ := oldPair.KeyPEM()
	steps := []func(cp, kp string){
		func(cp, kp string) { os.WriteFile(kp+nextSuffix, newKey, 0o600) },
		func(cp, kp string) { os.WriteFile(cp+nextSuffix, newPair.CertPEM(), 0o644) },
		func(cp, kp string) { os.Rename(kp+nextSuffix, kp) },
		func(cp, kp string) { os.Rename(cp+nextSuffix, cp) },
	}
	for stop := 0; stop <= len(steps); stop++ {
		dir := t.TempDir()
		cp, kp := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
		os.WriteFile(cp, oldPair.CertPEM(), 0o644)
		os.WriteFile(kp, oldKey, 0o600)
		for _, step := range steps[:stop] {
			step(cp, kp)
		}
		got, err := LoadKeyPair(cp, kp)
		if err != nil {
			t.Fatalf("crash after step %d: %v", stop, err)
		}
		wantNew := stop >= 3
		if got.Leaf.Equal(newPair.Cert) != wantNew {
			t.Fatalf("crash after step %d: loaded the new pair %v, want %v", stop, !wantNew, wantNew)
		}
		for _, p := range []string{cp + nextSuffix, kp + nextSuffix} {
			if _, err := os.Stat(p); err == nil {
				t.Fatalf("crash after step %d: %s left behind", stop, p)
			}
		}
		// And a second load is the same pair.
		again, err := LoadKeyPair(cp, kp)
		if err != nil || !again.Leaf.Equal(got.Leaf) {
			t.Fatalf("crash after step %d: second load %v", stop, err)
		}
	}
	// The whole replacement, and a mismatched one refused before any file
	// changes.
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	os.WriteFile(cp, oldPair.CertPEM(), 0o644)
	os.WriteFile(kp, oldKey, 0o600)
	if err := ReplaceKeyPair(cp, kp, newPair.CertPEM(), oldKey); !errors.Is(err, ErrBadPEM) {
		t.Fatalf("mismatched replacement: got %v", err)
	}
	if got, _ := LoadKeyPair(cp, kp); !got.Leaf.Equal(oldPair.Cert) {
		t.Fatal("a refused replacement changed the files")
	}
	if err := ReplaceKeyPair(cp, kp, newPair.CertPEM(), newKey); err != nil {
		t.Fatal(err)
	}
	if got, _ := LoadKeyPair(cp, kp); !got.Leaf.Equal(newPair.Cert) {
		t.Fatal("the replacement did not land")
	}
}
