package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"credfed/api"
	"credfed/certs"
	"credfed/localfed"
)

func certsIntermediateCommand() *cobra.Command {
	var dir, name, out string
	var validity time.Duration
	cmd := &cobra.Command{
		Use:   "intermediate --dir DIR --name NAME [--out DIR] [--validity DURATION]",
		Short: "Issue an online intermediate CA that coordinators sign renewals with.",
		Long: `Issues an intermediate CA signed by the root CA in DIR, written to
OUT/intermediate-NAME.pem and OUT/intermediate-NAME-key.pem (mode 0600).
Give the pair to a coordinator node (tls.signer_cert, tls.signer_key): it
then signs the certificate renewals of the nodes and users of its region,
so the root's key can stay offline. The intermediate signs only leaf
certificates of this federation (path length zero, a name constraint on
the federation). Revoking its serial (credfed certs revoke) refuses every
certificate it signed.`,
		Example: `  credfed certs intermediate --dir ca --name province-1 --out /etc/credfed/province`,
		Args:    noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&dir, "dir", "", "directory (`DIR`) holding the root's ca.pem and ca-key.pem (required)")
	fs.StringVar(&name, "name", "", "`NAME` of the intermediate: lowercase letters, digits and hyphens (required)")
	fs.StringVar(&out, "out", "", "directory (`DIR`) to write to (default: --dir)")
	fs.DurationVar(&validity, "validity", certs.DefaultIntermediateValidity, "how long the intermediate is valid")
	_ = cmd.MarkFlagDirname("dir")
	_ = cmd.MarkFlagDirname("out")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if dir == "" || name == "" {
			return usageErrorf("certs intermediate needs --dir and --name")
		}
		root, err := certs.LoadCA(dir)
		if err != nil {
			return err
		}
		in, err := root.NewIntermediate(name, validity)
		if err != nil {
			return err
		}
		if out == "" {
			out = dir
		}
		certPath, keyPath, err := in.WriteSignerFiles(out, "intermediate-"+name)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "issued intermediate CA %q of federation %q\n  serial %s, valid until %s\n  %s\n  %s\n",
			name, in.Federation, certs.SerialString(in.Cert.SerialNumber), in.Cert.NotAfter.UTC().Format(time.DateOnly), certPath, keyPath)
		return nil
	}
	return cmd
}

func certsRenewCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "renew (--addr URL --ca FILE | --demo DIR [--node NAME]) --cert FILE --key FILE",
		Short: "Renew a certificate through a coordinator that holds an intermediate CA.",
		Long: `Renews the certificate in --cert and --key: makes a new key, asks the node
at --addr (a coordinator with tls.signer_cert, of the certificate's region
or above) to sign it with the identity, host names and lifetime of the
current certificate, and replaces both files (a crash leaves the old pair
or the new one, never half of each). Nodes renew their own certificates at
two thirds of their life; this command is for user certificates and for
renewing by hand.`,
		Example: `  credfed certs renew --addr https://127.0.0.1:8443 --ca ca.pem --cert ops.pem --key ops-key.pem
  credfed certs renew --demo credfed-demo --cert auditor/audit-office.pem --key auditor/audit-office-key.pem`,
		Args: noArgs,
	}
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		certPath, keyPath := firstOf(conn.cert, os.Getenv(api.EnvClientCert)), firstOf(conn.key, os.Getenv(api.EnvClientKey))
		if certPath == "" || keyPath == "" {
			return usageErrorf("certs renew needs --cert and --key (or %s and %s): the certificate to renew", api.EnvClientCert, api.EnvClientKey)
		}
		cur, err := certs.LoadKeyPair(certPath, keyPath)
		if err != nil {
			return err
		}
		id, err := certs.IdentityOf(cur.Leaf)
		if err != nil {
			return err
		}
		if time.Now().After(cur.Leaf.NotAfter) {
			return fmt.Errorf("%s expired on %s: a certificate renews only while it is valid; issue a new one with credfed certs issue",
				certPath, cur.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		var client *api.Client
		if conn.demo != "" {
			// The demo names the node (the province, or --node) and the CA;
			// the certificate is the one to renew.
			d, err := localfed.ReadDemoFile(conn.demo)
			if err != nil {
				return err
			}
			n, ok := demoNode(d, firstOf(conn.node, d.Nodes[0].Name))
			if !ok {
				return usageErrorf("the demo has no node %q", conn.node)
			}
			client, err = api.NewClient(api.Config{Address: n.API, CACert: d.CA, ClientCert: certPath, ClientKey: keyPath, Timeout: conn.timeout})
			if err != nil {
				return err
			}
		} else if client, err = conn.client(); err != nil {
			return err
		}
		defer client.CloseIdle()
		key, csr, err := certs.NewCSR(id)
		if err != nil {
			return err
		}
		got, err := client.RenewCertificate(cmd.Context(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
		if err != nil {
			return err
		}
		leaf, err := firstCertificate([]byte(got.Certificate))
		if err != nil {
			return err
		}
		if gotID, err := certs.IdentityOf(leaf); err != nil || gotID != id {
			return fmt.Errorf("the node answered a certificate for another identity (%v); the files are unchanged", gotID)
		}
		keyPEM, err := certs.EncodeKey(key)
		if err != nil {
			return err
		}
		if err := certs.ReplaceKeyPair(certPath, keyPath, []byte(got.Certificate), keyPEM); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "renewed %s\n  serial %s, valid until %s (renew after %s)\n  %s\n  %s\n", id, got.Serial,
			got.NotAfter.Format(time.RFC3339), got.RenewAt.Format(time.RFC3339), filepath.Clean(certPath), filepath.Clean(keyPath))
		return nil
	}
	return cmd
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func firstCertificate(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: the node's answer holds no certificate", certs.ErrBadPEM)
	}
	return x509.ParseCertificate(block.Bytes)
}
