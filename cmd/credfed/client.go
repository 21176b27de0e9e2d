package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"credfed/api"
	"credfed/certs"
	"credfed/localfed"
)

// demoRoles are the certificates of a demo a client command may use (--as).
var demoRoles = []string{"coordinator", "operator", "department", "portal"}

// connection is how a client command reaches a node: --addr, --ca, --cert
// and --key, each falling back to its CREDFED_* variable, or --demo DIR with
// --node and --as.
type connection struct {
	flags               *pflag.FlagSet
	addr, ca, cert, key string
	demo, node, as      string
	timeout             time.Duration
}

// addConnectionFlags declares the connection flags on cmd; defaultAs is the
// demo certificate the command uses unless --as says otherwise.
func addConnectionFlags(cmd *cobra.Command, defaultAs string) *connection {
	c := &connection{flags: cmd.Flags()}
	fs := cmd.Flags()
	fs.StringVar(&c.addr, "addr", "", "node API base `URL`, e.g. https://127.0.0.1:8443 (default $"+api.EnvAddr+")")
	fs.StringVar(&c.addr, "api", "", "old name of --addr")
	_ = fs.MarkHidden("api")
	fs.StringVar(&c.ca, "ca", "", "federation CA certificate `FILE` (PEM) (default $"+api.EnvCACert+")")
	fs.StringVar(&c.cert, "cert", "", "client certificate `FILE` (PEM) (default $"+api.EnvClientCert+")")
	fs.StringVar(&c.key, "key", "", "client certificate's key `FILE` (PEM) (default $"+api.EnvClientKey+")")
	fs.StringVar(&c.demo, "demo", "", "take the node and the certificate from `DIR`/demo.json, a demo's directory")
	fs.StringVar(&c.node, "node", "", "with --demo: the node to call, by `NAME` (default: the province for coordinators and operators, the first district otherwise)")
	fs.StringVar(&c.as, "as", defaultAs, "with --demo: whose certificate to use, a `ROLE`: coordinator, operator, department or portal")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "how long to wait for each answer")
	_ = cmd.MarkFlagDirname("demo")
	_ = cmd.MarkFlagFilename("ca", "pem")
	_ = cmd.MarkFlagFilename("cert", "pem")
	_ = cmd.MarkFlagFilename("key", "pem")
	_ = cmd.RegisterFlagCompletionFunc("as", cobra.FixedCompletions(demoRoles, cobra.ShellCompDirectiveNoFileComp))
	// --node completes with the nodes of the --demo given before it.
	_ = cmd.RegisterFlagCompletionFunc("node", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if c.demo == "" {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		d, err := localfed.ReadDemoFile(c.demo)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []cobra.Completion
		for _, n := range d.Nodes {
			names = append(names, cobra.CompletionWithDesc(n.Name, n.Role+" "+n.Region))
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

// nodeOfCase picks, with --demo and --as department and no --node, the
// district node that keeps a case: its id ends with the district's region
// (dots for slashes), whose last level is the demo's node name.
func (c *connection) nodeOfCase(id string) {
	if c.demo == "" || c.node != "" || c.as != "department" {
		return
	}
	if i := strings.LastIndexByte(id, '.'); i > 0 && i < len(id)-1 {
		c.node = id[i+1:]
	}
}

// client returns the API client the flags describe. Flags win over the
// CREDFED_* variables (a --cert or --key flag takes the pair from the
// flags); --demo excludes the other connection flags and the variables.
func (c *connection) client() (*api.Client, error) {
	if c.demo != "" {
		return c.demoClient()
	}
	if c.flags.Changed("node") || c.flags.Changed("as") {
		return nil, usageErrorf("--node and --as pick a node and a certificate of a demo: use them with --demo DIR")
	}
	cfg := api.ConfigFromEnv(os.Getenv)
	if c.addr != "" {
		cfg.Address = c.addr
	}
	if c.ca != "" {
		cfg.CACert = c.ca
	}
	if c.cert != "" || c.key != "" {
		cfg.ClientCert, cfg.ClientKey = c.cert, c.key
	}
	cfg.Timeout = c.timeout
	if cfg.Address == "" || cfg.CACert == "" {
		return nil, usageErrorf("name the node with --addr and --ca (or %s and %s), with --cert and --key for your certificate, or use --demo DIR",
			api.EnvAddr, api.EnvCACert)
	}
	if (cfg.ClientCert == "") != (cfg.ClientKey == "") {
		return nil, usageErrorf("a client certificate needs both --cert and --key (or %s and %s)", api.EnvClientCert, api.EnvClientKey)
	}
	return api.NewClient(cfg)
}

func (c *connection) demoClient() (*api.Client, error) {
	for _, name := range []string{"addr", "api", "ca", "cert", "key"} {
		if c.flags.Changed(name) {
			return nil, usageErrorf("--demo takes the node and the certificates from DIR/demo.json: leave out --%s", name)
		}
	}
	if !slices.Contains(demoRoles, c.as) {
		return nil, usageErrorf("--as must be one of %s, not %q", strings.Join(demoRoles, ", "), c.as)
	}
	d, err := localfed.ReadDemoFile(c.demo)
	if err != nil {
		return nil, fmt.Errorf("%w (start the demo with `credfed demo --dir %s`, or write it with `credfed demo --dir %s --init-only`)",
			err, shellQuote(c.demo), shellQuote(c.demo))
	}
	if c.node != "" {
		n, ok := demoNode(d, c.node)
		if !ok {
			var names []string
			for _, n := range d.Nodes {
				names = append(names, n.Name)
			}
			return nil, usageErrorf("the demo has no node %q (its nodes: %s)", c.node, strings.Join(names, ", "))
		}
		switch {
		case c.as == "coordinator" && !certs.Role(n.Role).IsCoordinatorNode():
			return nil, usageErrorf("coordinators look subjects up through a coordinator node (province or city); %s is a %s", n.Name, n.Role)
		case (c.as == "department" || c.as == "portal") && n.Role != string(certs.District):
			return nil, usageErrorf("%ss belong to districts; %s is a %s", c.as, n.Name, n.Role)
		}
	}
	return d.Client(c.node, c.as, c.timeout)
}

func demoNode(d localfed.DemoFile, name string) (localfed.DemoNode, bool) {
	for _, n := range d.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return localfed.DemoNode{}, false
}

// printJSON prints an API answer as the node sent it.
func printJSON(w io.Writer, raw json.RawMessage) error {
	if _, err := w.Write(raw); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
