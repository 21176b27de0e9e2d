package certs

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenSSLVerify checks that the certificates are ordinary X.509 that
// other tools accept, not something only Go reads.
func TestOpenSSLVerify(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed (.ci/run installs it); skipping the cross-check with another X.509 implementation")
	}
	dir := t.TempDir()
	ca := mustCA(t, "demo")
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	for _, req := range []IssueRequest{
		{Identity: district("demo", "tianjin/heping"), Hosts: []string{"localhost", "127.0.0.1"}},
		{Identity: Identity{"demo", Department, "tianjin/heping", "market-supervision"}},
	} {
		is := mustIssue(t, ca, req)
		certPath, _, err := is.WriteFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, CACertFile), certPath).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Fatalf("openssl verify %s: %v\n%s", req.Identity, err, out)
		}
	}
}

// TestCurlAcceptsNodeCertificate serves HTTPS with a node certificate and
// asks curl, with only the CA as trust anchor, to fetch a page from
// https://127.0.0.1:PORT while presenting a user certificate.
func TestCurlAcceptsNodeCertificate(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed (.ci/run installs it); skipping the check that curl accepts node certificates")
	}
	dir := t.TempDir()
	ca := mustCA(t, "demo")
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	node := mustIssue(t, ca, IssueRequest{Identity: district("demo", "tianjin/heping"), Hosts: []string{"localhost", "127.0.0.1"}})
	user := mustIssue(t, ca, IssueRequest{Identity: Identity{"demo", Coordinator, "tianjin", "city-credit-office"}})
	userCert, userKey, err := user.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(ca.Cert, "demo", nil)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", v.ServerConfig(node.TLSCertificate(), OptionalClientCert))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "anonymous"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			id, err := PeerIdentity(*r.TLS)
			if err == nil {
				who = id.String()
			}
		}
		fmt.Fprint(w, who)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "https://" + ln.Addr().(*net.TCPAddr).String() + "/"
	out, err := exec.Command(curl, "-sS", "--fail", "--cacert", filepath.Join(dir, CACertFile),
		"--cert", userCert, "--key", userKey, url).CombinedOutput()
	if err != nil {
		t.Fatalf("curl with client certificate: %v\n%s", err, out)
	}
	if string(out) != "spiffe://demo/coordinator/tianjin/city-credit-office" {
		t.Fatalf("server saw %q", out)
	}
	out, err = exec.Command(curl, "-sS", "--fail", "--cacert", filepath.Join(dir, CACertFile), url).CombinedOutput()
	if err != nil || string(out) != "anonymous" {
		t.Fatalf("curl without client certificate: %v %q", err, out)
	}
	// Without the CA, curl must refuse the node: the trust comes from the CA alone.
	if out, err := exec.Command(curl, "-sS", "--fail", url).CombinedOutput(); err == nil {
		t.Fatalf("curl trusted the node without the CA: %s", out)
	}
}
