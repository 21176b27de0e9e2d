package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"credfed/api"
	"credfed/internal/atomicfile"
)

// The operators' commands on the region registry (through Raft, at a
// coordinator node; each is safe to repeat).

func regionCommand() *cobra.Command {
	return groupCommand("region", "Add regions that join themselves, promote coordinators to voters, remove regions.",
		regionAddCommand(), regionPromoteCommand(), regionRemoveCommand())
}

func regionAddCommand() *cobra.Command {
	var role, region, name, code, tokenOut string
	var life time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "add --role ROLE --region PATH [--name NAME] [--code CODE] [--token-life DURATION] [--token-out FILE] [flags]",
		Short: "Register a region and issue a one-time join token for its node (operator).",
		Long: `Registers a region below the node called (its parent is the path's prefix
and must be registered) and prints a one-time join token bound to the
region's node identity, valid for --token-life. Give the token to the new
node's operator, who starts the node with
  credfed node --config node.yaml --join TOKEN
The node then trusts only the federation CA the token carries,
receives its certificate (and, for a coordinator, the pseudonym key) from
this node, joins Raft as a non-voter and catches up by snapshot.
Run at a coordinator that holds a signing CA (tls.signer_cert). Adding a
region again before its node has joined issues a new token and voids the
old one; a token used or expired is refused with a message that says which.`,
		Example: `  credfed region add --demo credfed-demo --role district --region zhejiang/quzhou/kaihua --name 开化县 --token-out kaihua.token`,
		Args:    noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&role, "role", "", "`ROLE` of the region's node: district, city or province (required)")
	fs.StringVar(&region, "region", "", "region `PATH`, e.g. zhejiang/quzhou/kaihua (required)")
	fs.StringVar(&name, "name", "", "display `NAME`, e.g. 开化县")
	fs.StringVar(&code, "code", "", "six-digit administrative division `CODE`")
	fs.DurationVar(&life, "token-life", 24*time.Hour, "how long the token is valid (at most 168h)")
	fs.StringVar(&tokenOut, "token-out", "", "also write the token to `FILE` (mode 0600)")
	fs.BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]cobra.Completion{"district", "city", "province"}, cobra.ShellCompDirectiveNoFileComp))
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if role == "" || region == "" {
			return usageErrorf("region add needs --role and --region")
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		out, err := c.AddRegion(cmd.Context(), api.RegionAddRequest{Path: region, Role: role, Name: name, Code: code, TokenLife: life.String()})
		if err != nil {
			return err
		}
		if tokenOut != "" {
			if err := atomicfile.Write(tokenOut, []byte(out.Token+"\n"), 0o600); err != nil {
				return err
			}
		}
		if asJSON {
			return json.NewEncoder(cmd.OutOrStdout()).Encode(out)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "added %s region %s; its join token (one use, until %s):\n%s\n",
			out.Role, out.Region, out.Expires.Format(time.RFC3339), out.Token)
		return nil
	}
	return cmd
}

func regionPromoteCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "promote PATH [flags]",
		Short: "Make a joined coordinator region a Raft voter (operator).",
		Long: `Makes the node of a province or city region that has joined a voter in
Raft. Districts stay non-voters. Promoting a voter again changes nothing.`,
		Example: `  credfed region promote --demo credfed-demo zhejiang/lishui`,
		Args:    exactArgs(1, "the region PATH"),
	}
	regionChangeRunE(cmd, (*api.Client).PromoteRegion)
	return cmd
}

func regionRemoveCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove PATH [flags]",
		Short: "Remove a region: its node leaves Raft and its certificates are refused (operator).",
		Long: `Removes a region that has no regions below it: every certificate of its
node identity is suspended (renewals included), the region leaves the
registry, its node leaves Raft, and its index entries are no longer read.
Its records stay on its own disk. Removing a region that is gone already
says so.`,
		Example: `  credfed region remove --demo credfed-demo zhejiang/quzhou/kaihua`,
		Args:    exactArgs(1, "the region PATH"),
	}
	regionChangeRunE(cmd, (*api.Client).RemoveRegion)
	return cmd
}

// regionChangeRunE makes cmd call change with its PATH argument, as an
// operator, and print what changed.
func regionChangeRunE(cmd *cobra.Command, change func(*api.Client, context.Context, string) (*api.RegionChanged, error)) {
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		out, err := change(c, cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return printRegionChange(cmd, out)
	}
}

func printRegionChange(cmd *cobra.Command, out *api.RegionChanged) error {
	line := fmt.Sprintf("%s %s", out.Change, out.Region)
	if out.Detail != "" {
		line += " (" + out.Detail + ")"
	}
	_, err := fmt.Fprintln(cmd.OutOrStdout(), line)
	return err
}

// readToken reads a join token given on the command line or in a file.
func readToken(tok, file string) (string, error) {
	if file == "" {
		return tok, nil
	}
	if tok != "" {
		return "", usageErrorf("give the join token with --join or --join-file, not both")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return string(data), nil
}
