// Command credfed is the one binary of the federation: the node daemon, the
// local demo federation, certificate and operations tools, and clients of
// the node API. It only wires parts together; the logic lives in packages.
//
// The command tree is built with spf13/cobra: one constructor per command
// (demoCommand, lookupCommand, …), each in its own file. Exit status 0 means
// success, 2 a usage error (the message points to --help), 1 anything else.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/spf13/cobra"
)

const intro = `credfed runs a node of a federation of public credit information platforms:
each district keeps its own personal public credit records, the federation
shares only a small replicated index of who holds what, and coordinators look
subjects up across districts over mutually authenticated QUIC.`

// Command groups of the root command's help.
const (
	groupRun     = "run"
	groupClient  = "client"
	groupOps     = "ops"
	groupSubject = "subject"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	root := newRootCommand(stdout, stderr)
	root.SetArgs(doubleDash(root, args))
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	if cmd == nil {
		cmd = root
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "credfed: %s\nRun '%s --help' for usage.\n", ue.msg, cmd.CommandPath())
		return 2
	}
	fmt.Fprintf(stderr, "credfed: %v\n", err)
	if errors.Is(err, syscall.ECONNREFUSED) {
		fmt.Fprintln(stderr, "credfed: nothing answers at that address: is the node running? (with --demo: is `credfed demo` running, or were the nodes of `demo --init-only` started?)")
	}
	return 1
}

// newRootCommand builds the whole command tree, writing to stdout and
// stderr.
func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	version := currentBuild().Short()
	root := &cobra.Command{
		Use:     "credfed",
		Short:   "A node of a federation of public credit information platforms.",
		Long:    intro + "\n\nVersion " + version + ".",
		Version: version,
		Args:    noSubcommand,
		RunE:    needsSubcommand,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("credfed version {{.Version}}\n")
	root.Flags().Bool("version", false, "print the version and exit")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErrorf("%v", err) })
	root.AddGroup(
		&cobra.Group{ID: groupRun, Title: "Run a federation:"},
		&cobra.Group{ID: groupClient, Title: "Clients of a node's API (--addr/--ca/--cert/--key, CREDFED_* variables, or --demo DIR):"},
		&cobra.Group{ID: groupSubject, Title: "The data subject's side (portals; the collecting department decides):"},
		&cobra.Group{ID: groupOps, Title: "Certificates and operations:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add(groupRun, demoCommand(), nodeCommand())
	add(groupClient, lookupCommand(), checkCommand(), recordsCommand(), federationCommand(), statsCommand())
	add(groupSubject, reportCommand(), accessLogCommand())
	add(groupSubject, caseCommands()...)
	add(groupOps, certsCommand(), regionCommand(), catalogCommand(), auditCommand(), backupCommand(), restoreCommand(), benchCommand())
	add(groupOps, keysCommand(), consoleCommand())
	root.AddCommand(versionCommand())
	// Cobra adds its completion command when the tree runs; adding it now
	// (after SetOut, which it captures) lets its argument errors be usage
	// errors like every other command's.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Args, c.RunE = noSubcommand, needsSubcommand
			for _, shell := range c.Commands() {
				shell.Args = noArgs
			}
		}
	}
	finishTree(root)
	return root
}

// finishTree applies what every command shares: errors are reported once,
// by run, never by cobra; flags are listed in the order they are declared
// (the command's own first, then the connection's).
func finishTree(c *cobra.Command) {
	c.SilenceErrors = true
	c.SuggestionsMinimumDistance = 2
	c.SilenceUsage = true
	c.Flags().SortFlags = false
	for _, s := range c.Commands() {
		finishTree(s)
	}
}
