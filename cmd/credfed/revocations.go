package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"credfed/api"
	"credfed/certs"
)

// The operators' commands on the federation's revocation list (through
// Raft, on a province or city node: every node refuses the certificate on
// every connection within seconds). Each is safe to repeat.

func certsRevokeCommand() *cobra.Command {
	var serial, certFile, reason string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "revoke (--serial N | --certificate FILE) [--reason TEXT] [flags]",
		Short: "Revoke a certificate by serial number, everywhere (operator of the province).",
		Long: `Revokes one certificate, by its serial number in decimal (credfed certs list
shows those revoked; openssl x509 -noout -serial prints a certificate's in
hex) or by its PEM file (--certificate). The revocation commits through
Raft, on the province's node, by an operator of the province; every node
then refuses the certificate, on open connections too, within seconds.
Revoking a serial twice is harmless.`,
		Example: `  credfed certs revoke --demo credfed-demo --certificate auditor/audit-office.pem --reason "key lost"
  credfed certs revoke --demo credfed-demo --serial 123456789`,
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&serial, "serial", "", "the certificate's serial `N`, decimal")
	fs.StringVar(&certFile, "certificate", "", "the PEM `FILE` of the certificate to revoke (instead of --serial)")
	fs.StringVar(&reason, "reason", "", "why (at most 256 bytes, in the list)")
	fs.BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		switch {
		case (serial == "") == (certFile == ""):
			return usageErrorf("certs revoke needs --serial or --certificate (one of them)")
		case certFile != "":
			cert, err := certs.LoadCertFile(certFile)
			if err != nil {
				return err
			}
			serial = certs.SerialString(cert.SerialNumber)
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		list, err := c.Revoke(cmd.Context(), api.RevokeRequest{Serial: serial, Reason: reason})
		if err != nil {
			return err
		}
		return printRevocations(cmd.OutOrStdout(), list, asJSON)
	}
	return cmd
}

func certsSuspendCommand(lift bool) *cobra.Command {
	var identity, reason string
	var asJSON bool
	use, short, long := "suspend --identity URI [--reason TEXT] [flags]",
		"Suspend every certificate of an identity, everywhere (operator).",
		`Suspends an identity: every certificate of it, renewals included, is refused
by every node within seconds, on open connections too, until an operator
lifts the suspension (credfed certs unsuspend). An operator suspends the
identities of its own region or below, through its own node. Suspending
twice is harmless.`
	if lift {
		use, short, long = "unsuspend --identity URI [flags]",
			"Lift the suspension of an identity (operator).",
			`Lifts an identity's suspension: its certificates are accepted again (those
revoked by serial stay revoked). Safe to repeat.`
	}
	example := `  credfed certs suspend --demo credfed-demo --as operator --identity spiffe://demo/department/zhejiang/quzhou/kecheng/market-supervision --reason "under review"`
	if lift {
		example = `  credfed certs unsuspend --demo credfed-demo --as operator --identity spiffe://demo/department/zhejiang/quzhou/kecheng/market-supervision`
	}
	cmd := &cobra.Command{Use: use, Short: short, Long: long, Args: noArgs, Example: example}
	fs := cmd.Flags()
	fs.StringVar(&identity, "identity", "", "the identity `URI` (spiffe://FEDERATION/ROLE/REGION[/INSTITUTION]) (required)")
	if !lift {
		fs.StringVar(&reason, "reason", "", "why (at most 256 bytes, in the list)")
	}
	fs.BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if identity == "" {
			return usageErrorf("--identity is required")
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		var list *api.RevocationList
		if lift {
			list, err = c.Unsuspend(cmd.Context(), identity)
		} else {
			list, err = c.Suspend(cmd.Context(), api.SuspendRequest{Identity: identity, Reason: reason})
		}
		if err != nil {
			return err
		}
		return printRevocations(cmd.OutOrStdout(), list, asJSON)
	}
	return cmd
}

func certsListCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list [flags]",
		Short:   "Show the revoked certificates and suspended identities (operator).",
		Example: `  credfed certs list --demo credfed-demo --as operator`,
		Args:    noArgs,
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		list, err := c.Revocations(cmd.Context())
		if err != nil {
			return err
		}
		return printRevocations(cmd.OutOrStdout(), list, asJSON)
	}
	return cmd
}

func printRevocations(w io.Writer, l *api.RevocationList, asJSON bool) error {
	if asJSON {
		return printJSONValue(w, l)
	}
	fmt.Fprintf(w, "revocation list version %d\n", l.Version)
	if len(l.Revoked) == 0 && len(l.Suspended) == 0 {
		_, err := fmt.Fprintln(w, "nothing is revoked or suspended")
		return err
	}
	var rows [][]string
	for _, r := range l.Revoked {
		rows = append(rows, []string{"revoked", "serial " + r.Serial, r.At.Format("2006-01-02 15:04:05Z07:00"), r.Reason})
	}
	for _, s := range l.Suspended {
		rows = append(rows, []string{"suspended", s.Identity, s.At.Format("2006-01-02 15:04:05Z07:00"), s.Reason})
	}
	fmt.Fprintln(w)
	return writeTable(w, "", []string{"STATE", "WHAT", "SINCE", "REASON"}, rows)
}
