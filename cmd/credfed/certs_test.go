package main

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"credfed/certs"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

func TestCertsInitAndIssue(t *testing.T) {
	dir := t.TempDir()
	if _, e, code := runCLI(t, "certs", "init", "--federation", "demo", "--out", dir); code != 0 {
		t.Fatalf("init: %d %s", code, e)
	}
	if _, e, code := runCLI(t, "certs", "init", "--federation", "demo", "--out", dir); code == 0 || !strings.Contains(e, "refusing to overwrite") {
		t.Fatalf("second init: %d %s", code, e)
	}
	out := filepath.Join(dir, "issued")
	if _, e, code := runCLI(t, "certs", "issue", "--dir", dir, "--role", "district", "--region", "tianjin/heping",
		"--host", "localhost", "--host", "127.0.0.1", "--out", out); code != 0 {
		t.Fatalf("issue node: %d %s", code, e)
	}
	if _, e, code := runCLI(t, "certs", "issue", "--dir", dir, "--role", "department", "--region", "tianjin/heping",
		"--institution", "market-supervision"); code != 0 {
		t.Fatalf("issue user: %d %s", code, e)
	}
	ca, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := certs.NewVerifier(ca.Cert, "demo", nil)
	for path, want := range map[string]string{
		filepath.Join(out, "heping"):             "spiffe://demo/district/tianjin/heping",
		filepath.Join(dir, "market-supervision"): "spiffe://demo/department/tianjin/heping/market-supervision",
	} {
		pair, err := certs.LoadKeyPair(path+".pem", path+"-key.pem")
		if err != nil {
			t.Fatal(err)
		}
		id, err := v.Verify([]*x509.Certificate{pair.Leaf}, x509.ExtKeyUsageClientAuth)
		if err != nil || id.String() != want {
			t.Fatalf("%s: %v %v", path, id, err)
		}
		st, err := os.Stat(path + "-key.pem")
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("key mode: %v %v", st.Mode(), err)
		}
	}
}

func TestCertsIssueRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	if _, e, code := runCLI(t, "certs", "init", "--federation", "demo", "--out", dir); code != 0 {
		t.Fatal(e)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--dir", dir, "--role", "mayor", "--region", "x"}, "unknown role"},
		{[]string{"--dir", dir, "--role", "portal", "--region", "x"}, "needs an institution"},
		{[]string{"--dir", dir, "--role", "district", "--region", "Bad Region"}, "may hold only"},
		{[]string{"--dir", dir, "--role", "portal", "--region", "x", "--institution", "p", "--host", "h"}, "--host is for node"},
		{[]string{"--role", "district", "--region", "x"}, "needs --dir"},
		{[]string{"--dir", filepath.Join(dir, "none"), "--role", "district", "--region", "x"}, "no such file"},
	}
	for _, c := range cases {
		_, e, code := runCLI(t, append([]string{"certs", "issue"}, c.args...)...)
		if code == 0 || !strings.Contains(e, c.want) {
			t.Errorf("%v: code %d, stderr %q, want %q", c.args, code, e, c.want)
		}
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, "*.pem")); len(entries) != 2 {
		t.Fatalf("refused issues wrote files: %v", entries)
	}
}
