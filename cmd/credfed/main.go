// Command credfed is the one binary of the federation: the node daemon, the
// local demo federation, certificate and operations tools, and clients of
// the node API. It only wires parts together; the logic lives in packages.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// command is one subcommand (or a group of them).
type command struct {
	name    string
	summary string
	// run executes the command with the arguments after its name.
	run func(args []string, stdout, stderr io.Writer) error
	// sub lists subcommands; run is nil when sub is set.
	sub []*command
}

// errUsage marks an error whose message is a usage problem: it is printed
// with a pointer to --help and exit code 2.
var errUsage = errors.New("usage")

func usageErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

func commands() []*command {
	return []*command{
		demoCommand(),
		nodeCommand(),
		lookupCommand(),
		recordsCommand(),
		federationCommand(),
		certsCommand(),
	}
}

const intro = `credfed runs a node of a federation of public credit information platforms:
each district keeps its own personal public credit records, the federation
shares only a small replicated index of who holds what, and coordinators look
subjects up across districts over mutually authenticated QUIC.`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	root := &command{name: "credfed", summary: intro, sub: commands()}
	err := dispatch(root, root.name, args, stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "credfed: %s\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	default:
		fmt.Fprintf(stderr, "credfed: %v\n", err)
		return 1
	}
}

func dispatch(c *command, path string, args []string, stdout, stderr io.Writer) error {
	if c.sub == nil {
		return c.run(args, stdout, stderr)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printGroupHelp(c, path, stdout)
		if len(args) == 0 {
			return usageErrorf("%s needs a subcommand", path)
		}
		return nil
	}
	for _, s := range c.sub {
		if s.name == args[0] {
			return dispatch(s, path+" "+s.name, args[1:], stdout, stderr)
		}
	}
	return usageErrorf("%s has no subcommand %q (see '%s --help')", path, args[0], path)
}

func printGroupHelp(c *command, path string, w io.Writer) {
	fmt.Fprintf(w, "%s\n\nUsage: %s <command> [flags]\n\nCommands:\n", c.summary, path)
	for _, s := range c.sub {
		fmt.Fprintf(w, "  %-12s %s\n", s.name, firstLine(s.summary))
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for the flags of a command.\n", path)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// newFlags returns a flag set whose help prints the command's usage line
// and description before the flags.
func newFlags(name, usage, description string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s\n\nFlags:\n", usage, description)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses positional arguments unless allowed.
func parseFlags(fs *flag.FlagSet, args []string, positional int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErrorf("%v", err)
	}
	if fs.NArg() > positional {
		return usageErrorf("%s: unexpected argument %q", fs.Name(), fs.Arg(positional))
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*s = append(*s, part)
		}
	}
	return nil
}
