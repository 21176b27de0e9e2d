package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"credfed/certs"
)

func certsCommand() *cobra.Command {
	return groupCommand("certs", "Create the federation CA and intermediates, issue and renew certificates, revoke and suspend them.",
		certsInitCommand(), certsIntermediateCommand(), certsIssueCommand(), certsRenewCommand(), certsRevokeCommand(), certsSuspendCommand(false), certsSuspendCommand(true), certsListCommand())
}

func certsInitCommand() *cobra.Command {
	var fed, out string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "init --federation NAME --out DIR [flags]",
		Short: "Create a new federation CA (ca.pem, ca-key.pem).",
		Long: `Creates the federation's certificate authority: an ECDSA P-256 key and a
self-signed certificate, written to DIR/ca.pem and DIR/ca-key.pem (mode 0600).
Keep ca-key.pem offline in production: whoever holds it can join the
federation under any identity. An existing CA in DIR is never overwritten.`,
		Example: `  credfed certs init --federation zj-credit --out /etc/credfed/ca`,
		Args:    noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&fed, "federation", "", "federation `NAME`: lowercase letters, digits and hyphens (required)")
	fs.StringVar(&out, "out", "", "directory (`DIR`) to write the CA into (required)")
	fs.DurationVar(&validity, "validity", certs.DefaultCAValidity, "how long the CA certificate is valid")
	_ = cmd.MarkFlagDirname("out")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if fed == "" || out == "" {
			return usageErrorf("certs init needs --federation and --out")
		}
		ca, err := certs.NewCA(fed, validity)
		if err != nil {
			return err
		}
		if err := ca.WriteFiles(out); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "created CA of federation %q in %s (valid until %s)\n", fed, out, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
		return nil
	}
	return cmd
}

func certsIssueCommand() *cobra.Command {
	var dir, role, region, inst, out string
	var validity time.Duration
	var hosts stringList
	cmd := &cobra.Command{
		Use:   "issue --dir DIR --role ROLE --region PATH [--institution CODE] [--host NAME_OR_IP ...] [--out DIR]",
		Short: "Issue a node or user certificate signed by the CA.",
		Long: `Issues a certificate signed by the CA in DIR. Its identity is the URI
  spiffe://<federation>/<role>/<region path>[/<institution>]
Node roles (province, city, district) get server and client key usages and
the --host names and addresses as SANs; user roles (operator, coordinator,
department, portal) need --institution and get a client certificate.
Writes OUT/<name>.pem and OUT/<name>-key.pem (0600), where name is the last
element of the identity (the institution, or the region's last part).`,
		Example: `  credfed certs issue --dir ca --role district --region tianjin/heping --host localhost --host 127.0.0.1
  credfed certs issue --dir ca --role department --region tianjin/heping --institution market-supervision`,
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&dir, "dir", "", "directory (`DIR`) holding ca.pem and ca-key.pem (required)")
	fs.StringVar(&role, "role", "", "`ROLE`: province, city, district, operator, coordinator, department or portal (required)")
	fs.StringVar(&region, "region", "", "region `PATH`, e.g. tianjin/heping (required)")
	fs.StringVar(&inst, "institution", "", "institution or department `CODE` (user roles)")
	fs.Var(&hosts, "host", "DNS name or IP address (`HOST`) for a node certificate (repeatable, or comma-separated)")
	fs.StringVar(&out, "out", "", "directory (`DIR`) to write to (default: --dir)")
	fs.DurationVar(&validity, "validity", certs.DefaultCertValidity, "how long the certificate is valid")
	_ = cmd.MarkFlagDirname("dir")
	_ = cmd.MarkFlagDirname("out")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]cobra.Completion{"province", "city", "district",
		"operator", "coordinator", "department", "portal"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if dir == "" || role == "" || region == "" {
			return usageErrorf("certs issue needs --dir, --role and --region")
		}
		r, err := certs.ParseRole(role)
		if err != nil {
			return usageErrorf("%v", err)
		}
		if validity <= 0 {
			return usageErrorf("--validity must be positive, not %v", validity)
		}
		if !r.IsNode() && len(hosts) > 0 {
			return usageErrorf("--host is for node certificates; a %s certificate is a client certificate", r)
		}
		ca, err := certs.LoadCA(dir)
		if err != nil {
			return err
		}
		id := certs.Identity{Federation: ca.Federation, Role: r, Region: region, Institution: inst}
		is, err := ca.Issue(certs.IssueRequest{Identity: id, Hosts: hosts, Validity: validity})
		if err != nil {
			return err
		}
		if out == "" {
			out = dir
		}
		certPath, keyPath, err := is.WriteFiles(out)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "issued %s\n  serial %s, valid until %s\n  %s\n  %s\n", id, certs.SerialString(is.Cert.SerialNumber),
			is.Cert.NotAfter.UTC().Format(time.DateOnly), certPath, keyPath)
		return nil
	}
	return cmd
}
