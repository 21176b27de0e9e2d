package main

import (
	"fmt"
	"io"
	"time"

	"credfed/certs"
)

func certsCommand() *command {
	return &command{
		name:    "certs",
		summary: "Create the federation CA and issue node and user certificates.",
		sub: []*command{
			{name: "init", summary: "Create a new federation CA (ca.pem, ca-key.pem).", run: certsInit},
			{name: "issue", summary: "Issue a node or user certificate signed by the CA.", run: certsIssue},
		},
	}
}

func certsInit(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs init", "credfed certs init --federation NAME --out DIR",
		`Creates the federation's certificate authority: an ECDSA P-256 key and a
self-signed certificate, written to DIR/ca.pem and DIR/ca-key.pem (mode 0600).
Keep ca-key.pem offline in production: whoever holds it can join the
federation under any identity. An existing CA in DIR is never overwritten.`, stderr)
	fed := fs.String("federation", "", "federation name: lowercase letters, digits and hyphens (required)")
	out := fs.String("out", "", "directory to write the CA into (required)")
	validity := fs.Duration("validity", certs.DefaultCAValidity, "how long the CA certificate is valid")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *fed == "" || *out == "" {
		return usageErrorf("certs init needs --federation and --out")
	}
	ca, err := certs.NewCA(*fed, *validity)
	if err != nil {
		return err
	}
	if err := ca.WriteFiles(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created CA of federation %q in %s (valid until %s)\n", *fed, *out, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	return nil
}

func certsIssue(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs issue",
		"credfed certs issue --dir DIR --role ROLE --region PATH [--institution CODE] [--host NAME_OR_IP ...] [--out DIR]",
		`Issues a certificate signed by the CA in DIR. Its identity is the URI
  spiffe://<federation>/<role>/<region path>[/<institution>]
Node roles (province, city, district) get server and client key usages and
the --host names and addresses as SANs; user roles (operator, coordinator,
department, portal) need --institution and get a client certificate.
Writes OUT/<name>.pem and OUT/<name>-key.pem (0600), where name is the last
element of the identity (the institution, or the region's last part).

Examples:
  credfed certs issue --dir ca --role district --region tianjin/heping --host localhost --host 127.0.0.1
  credfed certs issue --dir ca --role department --region tianjin/heping --institution market-supervision`, stderr)
	dir := fs.String("dir", "", "directory holding ca.pem and ca-key.pem (required)")
	role := fs.String("role", "", "province, city, district, operator, coordinator, department or portal (required)")
	region := fs.String("region", "", "region path, e.g. tianjin/heping (required)")
	inst := fs.String("institution", "", "institution or department code (user roles)")
	out := fs.String("out", "", "directory to write to (default: --dir)")
	validity := fs.Duration("validity", certs.DefaultCertValidity, "how long the certificate is valid")
	var hosts stringList
	fs.Var(&hosts, "host", "DNS name or IP address for a node certificate (repeatable, or comma-separated)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *dir == "" || *role == "" || *region == "" {
		return usageErrorf("certs issue needs --dir, --role and --region")
	}
	r, err := certs.ParseRole(*role)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if !r.IsNode() && len(hosts) > 0 {
		return usageErrorf("--host is for node certificates; a %s certificate is a client certificate", r)
	}
	ca, err := certs.LoadCA(*dir)
	if err != nil {
		return err
	}
	id := certs.Identity{Federation: ca.Federation, Role: r, Region: *region, Institution: *inst}
	is, err := ca.Issue(certs.IssueRequest{Identity: id, Hosts: hosts, Validity: *validity})
	if err != nil {
		return err
	}
	if *out == "" {
		*out = *dir
	}
	certPath, keyPath, err := is.WriteFiles(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "issued %s\n  serial %s, valid until %s\n  %s\n  %s\n", id, certs.SerialString(is.Cert.SerialNumber),
		is.Cert.NotAfter.UTC().Format(time.DateOnly), certPath, keyPath)
	return nil
}
