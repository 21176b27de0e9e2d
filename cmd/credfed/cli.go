package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// usageError is a problem with the command line: run prints it with a
// pointer to the command's --help and exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// noArgs refuses positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

// exactArgs wants n positional arguments, named what in the error.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s needs %s (got %d arguments)", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

// noSubcommand is the argument check of a command that groups others: an
// argument is an unknown subcommand.
func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += " (did you mean " + strings.Join(s, " or ") + "?)"
	}
	return usageErrorf("%s", msg)
}

// needsSubcommand runs a group command without a subcommand: a usage error
// naming the subcommands.
func needsSubcommand(cmd *cobra.Command, _ []string) error {
	cmd.HelpFunc()(cmd, nil)
	var names []string
	for _, s := range cmd.Commands() {
		if s.IsAvailableCommand() {
			names = append(names, s.Name())
		}
	}
	return usageErrorf("%s needs a command: %s", cmd.CommandPath(), strings.Join(names, ", "))
}

// groupCommand is a command that only groups subcommands.
func groupCommand(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, Args: noSubcommand, RunE: needsSubcommand}
	c.AddCommand(subs...)
	return c
}

// doubleDash rewrites "-name" and "-name=value" as "--name…" when name is
// a long flag of some command of the tree. Before cobra, credfed parsed its
// flags with Go's flag package, which reads -name as --name; scripts
// written then keep working. Single-letter flags (-v, -h) and everything
// after "--" are left alone.
func doubleDash(root *cobra.Command, args []string) []string {
	names := map[string]bool{"help": true}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) { names[f.Name] = true })
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		if a == "--" {
			break
		}
		if len(a) < 3 || a[0] != '-' || a[1] == '-' {
			continue
		}
		name, _, _ := strings.Cut(a[1:], "=")
		if len(name) > 1 && names[name] {
			out[i] = "-" + a
		}
	}
	return out
}

// stringList is a repeatable string flag that also splits on commas.
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

func (s *stringList) Type() string { return "strings" }

// selfName is how printed command lines name this binary: "./credfed" when
// it was started by a relative path (as after `go build -o credfed
// ./cmd/credfed`) or from go run's build cache, so that the lines work when
// pasted in the repository once built; "credfed" when it runs from $PATH.
func selfName() string {
	_, onPath := exec.LookPath("credfed")
	return selfNameFrom(os.Args[0], onPath == nil)
}

func selfNameFrom(arg0 string, onPath bool) string {
	if strings.Contains(arg0, "go-build") { // go run's build cache
		if onPath {
			return "credfed"
		}
		return "./credfed" // the lines assume `go build -o credfed ./cmd/credfed`
	}
	if arg0 == "" || filepath.IsAbs(arg0) || !strings.ContainsRune(arg0, filepath.Separator) || filepath.Base(arg0) != "credfed" {
		return "credfed" // on $PATH, or a test binary or other wrapper
	}
	return shellQuote(arg0)
}

// builtFromGoRun reports whether this binary runs from go run's cache (its
// printed lines then need a `go build` first).
func builtFromGoRun() bool { return strings.Contains(os.Args[0], "go-build") }

// shellQuote quotes a word for a pasted command line if it needs it.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	if strings.ContainsAny(s, " \t\n'\"$`\\*?[]#~|&;<>(){}!") {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return s
}
