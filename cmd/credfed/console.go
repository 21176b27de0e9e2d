package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"credfed/certs"
	"credfed/console"
	"credfed/credit"
	"credfed/node"
)

// The web console's accounts, kept in the node's data directory
// (DATA_DIR/console): these commands write them whether the node runs or
// not, and a running node sees a change at the account's next request.

func consoleCommand() *cobra.Command {
	user := groupCommand("user", "Add, list, change and remove the console's accounts of a node.",
		consoleUserAddCommand(), consoleUserListCommand(), consoleUserPasswdCommand(),
		consoleUserDisableCommand(true), consoleUserDisableCommand(false), consoleUserRemoveCommand())
	return groupCommand("console", "The web console's accounts and one-time login links (a node's operator, on its machine).",
		user, consoleLoginURLCommand())
}

// consoleStore opens the account store of the node the configuration
// describes.
func consoleStore(path string) (*console.Store, node.Config, error) {
	if path == "" {
		return nil, node.Config{}, usageErrorf("--config FILE is required: the node whose console this is")
	}
	cfg, err := node.LoadConfig(path)
	if err != nil {
		return nil, cfg, err
	}
	return console.OpenStore(node.ConsoleDir(cfg)), cfg, nil
}

func addConfigFlag(cmd *cobra.Command, path *string) {
	cmd.Flags().StringVar(path, "config", "", "the node's YAML configuration `FILE` (its data_dir holds the accounts)")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
}

// readPassword reads a password from the file, or from the terminal
// (twice, not echoed), or the first line of standard input.
func readPassword(cmd *cobra.Command, file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), "password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", err
		}
		fmt.Fprint(cmd.ErrOrStderr(), "again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", err
		}
		if string(p1) != string(p2) {
			return "", errors.New("the two passwords differ")
		}
		return string(p1), nil
	}
	line, err := bufio.NewReader(io.LimitReader(in, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if line = strings.TrimRight(line, "\r\n"); line == "" {
		return "", errors.New("no password given: on standard input (its first line), a terminal, or --password-file")
	}
	return line, nil
}

func consoleUserAddCommand() *cobra.Command {
	var path, name, role, institution, passwordFile string
	cmd := &cobra.Command{
		Use:   "add --config FILE --name NAME --role ROLE --institution INST [--password-file FILE]",
		Short: "Add a console account, bound to a role and an institution as a certificate would be.",
		Long: `Adds an account to the node's console. It acts as the identity a
certificate of that role and institution in the node's region would carry:
every page admits exactly what the API admits that identity, and
'credfed certs suspend --identity' suspends its account too.

The password (at least 12 characters) comes from --password-file, the
terminal (asked twice), or the first line of standard input. Only its
argon2id hash is kept.`,
		Example: `  credfed console user add --config /etc/credfed/node.yaml --name wang.li --role department --institution market-supervision
  echo 'a long passphrase here' | credfed console user add --config node.yaml --name ops --role operator --institution credit-center`,
		Args: noArgs,
	}
	addConfigFlag(cmd, &path)
	fs := cmd.Flags()
	fs.StringVar(&name, "name", "", "the account's `NAME` (letters, digits, . - _ @)")
	fs.StringVar(&role, "role", "", "department, coordinator or operator")
	fs.StringVar(&institution, "institution", "", "the `INSTITUTION` the account acts for, as in a certificate")
	fs.StringVar(&passwordFile, "password-file", "", "read the password from `FILE`")
	_ = cmd.RegisterFlagCompletionFunc("role", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		out := make([]string, len(console.Roles))
		for i, r := range console.Roles {
			out[i] = string(r)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		store, cfg, err := consoleStore(path)
		if err != nil {
			return err
		}
		if name == "" || role == "" || institution == "" {
			return usageErrorf("add needs --name, --role and --institution")
		}
		pw, err := readPassword(cmd, passwordFile)
		if err != nil {
			return err
		}
		acc := console.Account{Name: name, Role: certs.Role(role), Institution: institution}
		if err := console.CheckRoleAt(acc.Role, cfg.Role); err != nil {
			return err
		}
		if err := store.Add(acc, pw, time.Now()); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "added %s: %s of %s in %s (%s)\n", name, role, institution, cfg.Region,
			acc.Identity(cfg.Federation, cfg.Region))
		return nil
	}
	return cmd
}

func consoleUserListCommand() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "list --config FILE",
		Short: "List the node's console accounts.",
		Args:  noArgs,
	}
	addConfigFlag(cmd, &path)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		store, _, err := consoleStore(path)
		if err != nil {
			return err
		}
		accs, err := store.List()
		if err != nil {
			return err
		}
		if len(accs) == 0 {
			fmt.Fprintln(cmd.OutOrStdout(), "no console accounts (credfed console user add)")
			return nil
		}
		var rows [][]string
		for _, a := range accs {
			state := "active"
			if a.Disabled {
				state = "disabled"
			}
			rows = append(rows, []string{a.Name, string(a.Role), a.Institution, a.Created.In(credit.ChinaStandardTime).Format("2006-01-02 15:04 MST"), state})
		}
		return writeTable(cmd.OutOrStdout(), "", []string{"NAME", "ROLE", "INSTITUTION", "CREATED", "STATE"}, rows)
	}
	return cmd
}

// accountCommand is a command that changes one named account: it takes
// --config and --name, and act's answer is printed.
func accountCommand(use, short string, act func(cmd *cobra.Command, store *console.Store, name string) (string, error)) *cobra.Command {
	var path, name string
	verb, _, _ := strings.Cut(use, " ")
	cmd := &cobra.Command{Use: use, Short: short, Args: noArgs}
	addConfigFlag(cmd, &path)
	cmd.Flags().StringVar(&name, "name", "", "the account's `NAME`")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		store, _, err := consoleStore(path)
		if err != nil {
			return err
		}
		if name == "" {
			return usageErrorf("%s needs --name", verb)
		}
		out, err := act(cmd, store, name)
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), out)
		return nil
	}
	return cmd
}

func consoleUserPasswdCommand() *cobra.Command {
	var passwordFile string
	cmd := accountCommand("passwd --config FILE --name NAME [--password-file FILE]", "Set a console account's password.",
		func(cmd *cobra.Command, store *console.Store, name string) (string, error) {
			pw, err := readPassword(cmd, passwordFile)
			if err != nil {
				return "", err
			}
			return "password of " + name + " set", store.SetPassword(name, pw)
		})
	cmd.Flags().StringVar(&passwordFile, "password-file", "", "read the password from `FILE`")
	return cmd
}

func consoleUserDisableCommand(disable bool) *cobra.Command {
	verb, short := "enable", "Enable a disabled console account again."
	if disable {
		verb, short = "disable", "Disable a console account: it cannot log in, and its open sessions end at their next request."
	}
	return accountCommand(verb+" --config FILE --name NAME", short,
		func(_ *cobra.Command, store *console.Store, name string) (string, error) {
			return name + " " + verb + "d", store.SetDisabled(name, disable)
		})
}

func consoleUserRemoveCommand() *cobra.Command {
	return accountCommand("remove --config FILE --name NAME", "Remove a console account (its open sessions end at their next request).",
		func(_ *cobra.Command, store *console.Store, name string) (string, error) {
			return name + " removed", store.Remove(name)
		})
}

func consoleLoginURLCommand() *cobra.Command {
	var path, name string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "login-url --config FILE --name NAME [--ttl DURATION]",
		Short: "Print a one-time login link for a console account.",
		Long: `Prints a link that logs the account in once, within --ttl: for a new
officer's first login, or one who lost the password (set a new one with
'credfed console user passwd' too). Only the link's hash is kept; a used
or expired link is refused with a message that says which.`,
		Args: noArgs,
	}
	addConfigFlag(cmd, &path)
	cmd.Flags().StringVar(&name, "name", "", "the account's `NAME`")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the link is good (1s to 168h)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		store, cfg, err := consoleStore(path)
		if err != nil {
			return err
		}
		if name == "" {
			return usageErrorf("login-url needs --name")
		}
		if ttl < time.Second || ttl > 7*24*time.Hour {
			return usageErrorf("--ttl must be between 1s and 168h (7 days)")
		}
		if acc, err := store.Get(name); err != nil {
			return err
		} else if acc.Disabled {
			return fmt.Errorf("%s is disabled: enable it first (credfed console user enable)", name)
		}
		tok, err := store.IssueLink(name, ttl, time.Now())
		if err != nil {
			return err
		}
		base := cfg.ConsoleURL()
		if base == "" {
			base = "https://NODE/console/"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%slogin?token=%s\n", base, tok)
		return nil
	}
	return cmd
}
