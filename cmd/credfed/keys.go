package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"credfed/api"
)

// The operators' key rotation (through Raft, at a coordinator node; each
// call does the next step of a rotation, so it is safe to repeat).

func keysCommand() *cobra.Command {
	return groupCommand("keys", "Rotate the pseudonym key and see the rotation's progress.",
		keysRotateCommand(), keysStatusCommand())
}

func keysRotateCommand() *cobra.Command {
	var wait time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate [--wait DURATION] [flags]",
		Short: "Start a key rotation, or do its next step (operator of the province).",
		Long: `Rotates the federation's pseudonym key (and the index sealing key derived
from it) in two phases, through Raft at a coordinator node:

  1. install: a new key version is generated, sealed under the current
     index key (which only coordinators hold) and distributed to every
     coordinator; each stores it in its key ring file and reports it;
  2. switch: once every coordinator holds it, it becomes current. The
     index is sealed under it and coordinators hand out pseudonyms under
     it from then on; every district re-pseudonymizes the subjects it
     holds and republishes each under its new pseudonym, withdrawing the
     old entry, then reports it.

Lookups, checks and reports keep working throughout: coordinators read the
index under both versions until every district has republished. The old
version is kept, for the Raft log and snapshots sealed under it and for
the audit entries written under its pseudonyms.

One call installs and, if every coordinator reports holding the version
within --wait, switches. Run it again to continue a rotation that stopped
(a coordinator down, a leader change); while districts republish it only
says which ones it waits for. 'credfed keys status' shows the progress.`,
		Example: `  credfed keys rotate --demo credfed-demo
  credfed keys status --demo credfed-demo`,
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.DurationVar(&wait, "wait", 20*time.Second, "how long to wait for every coordinator to hold a new version before switching (at most 2m)")
	fs.BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if wait <= 0 || wait > 2*time.Minute {
			return usageErrorf("--wait must be between 1s and 2m")
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		st, err := c.RotateKeys(cmd.Context(), api.KeyRotateRequest{Wait: wait.String()})
		if err != nil {
			return err
		}
		return printKeyStatus(cmd.OutOrStdout(), st, asJSON)
	}
	return cmd
}

func keysStatusCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [flags]",
		Short: "Show the key versions and the rotation's progress (operator).",
		Long: `Shows every pseudonym key version, as the node called has applied them:
its phase (installing, installed, republishing, current, retired), when
and by whom it was installed and switched to, the coordinators that hold
it and those awaited, the districts that republished their subjects
under it and those awaited, and what a retired version is still kept for.
Never any key material.`,
		Example: `  credfed keys status --demo credfed-demo`,
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
		st, err := c.KeyStatus(cmd.Context())
		if err != nil {
			return err
		}
		return printKeyStatus(cmd.OutOrStdout(), st, asJSON)
	}
	return cmd
}

func printKeyStatus(w io.Writer, st *api.KeyStatus, asJSON bool) error {
	if asJSON {
		return printJSONValue(w, st)
	}
	if st.Step != "" {
		fmt.Fprintf(w, "step: %s\n", st.Step)
	}
	if st.Message != "" {
		fmt.Fprintln(w, st.Message)
	}
	fmt.Fprintf(w, "current key version %d; the index is read under versions %d to %d\n\n", st.Current, st.IndexFloor, st.Current)
	var rows [][]string
	list := func(s []string) string {
		if len(s) == 0 {
			return "-"
		}
		return strings.Join(s, ", ")
	}
	for _, v := range st.Versions {
		since := "-"
		if !v.Switched.IsZero() {
			since = v.Switched.Format("2006-01-02 15:04:05Z07:00")
		} else if !v.Installed.IsZero() {
			since = "installed " + v.Installed.Format("2006-01-02 15:04:05Z07:00")
		}
		waiting := list(append(append([]string(nil), v.AwaitingHold...), v.AwaitingRepublish...))
		rows = append(rows, []string{fmt.Sprint(v.Version), v.Phase, since, waiting, list(v.RetainedFor)})
	}
	return writeTable(w, "", []string{"VERSION", "PHASE", "SINCE", "WAITING FOR", "RETAINED FOR"}, rows)
}
