package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"credfed/api"
	"credfed/attest"
	"credfed/certs"
)

func reportCommand() *cobra.Command {
	return groupCommand("report", "A data subject's own report: get one through a portal, verify one offline.", reportGetCommand(), reportVerifyCommand())
}

func reportVerifyCommand() *cobra.Command {
	var caPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify --ca CA FILE|-",
		Short: "Check offline that a report came from a node of the federation, unaltered.",
		Long: `Checks the "signature" member of a report (the answer of POST /v1/reports,
saved as it came): the signer's certificate chain against the federation's CA
certificate as of the signing time, and the ECDSA signature over the RFC 8785
canonical form of everything else. Needs no network: anyone holding the
federation's ca.pem can check a report a subject hands them. Exits 0 when
the report verifies, 1 when it does not (saying why).

Offline verification cannot know of a revocation after signing; the report's
signing time and the signer's serial are printed so that a verifier who can
reach the federation can ask.`,
		Example: `  credfed report verify --ca credfed-demo/ca.pem report.json`,
		Args:    exactArgs(1, "the report file"),
	}
	cmd.Flags().StringVar(&caPath, "ca", "", "the federation's CA certificate `FILE` (PEM) (default $"+api.EnvCACert+")")
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"signer","signed_at","serial"} as JSON`)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if caPath == "" {
			caPath = os.Getenv(api.EnvCACert)
		}
		if caPath == "" {
			return usageErrorf("report verify needs --ca (or $%s): the federation's CA certificate", api.EnvCACert)
		}
		ca, err := certs.LoadCertFile(caPath)
		if err != nil {
			return err
		}
		var in io.Reader = cmd.InOrStdin()
		if args[0] != "-" {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			in = f
		}
		data, err := io.ReadAll(io.LimitReader(in, attest.MaxDocument+1))
		if err != nil {
			return err
		}
		v, err := attest.Verify(data, ca)
		if err != nil {
			return fmt.Errorf("%s does not verify: %w", args[0], err)
		}
		out := cmd.OutOrStdout()
		if asJSON {
			return json.NewEncoder(out).Encode(map[string]string{
				"signer": v.Signer.String(), "signed_at": v.SignedAt.Format("2006-01-02T15:04:05Z07:00"), "serial": v.Serial})
		}
		fmt.Fprintf(out, "%s: verified: signed by %s (certificate serial %s) at %s\n",
			args[0], v.Signer, v.Serial, v.SignedAt.Format("2006-01-02 15:04:05 MST"))
		return nil
	}
	return cmd
}
