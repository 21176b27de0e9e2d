package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"credfed/api"
)

func federationCommand() *cobra.Command {
	return groupCommand("federation", "Show the federation as a node sees it.", federationStatusCommand())
}

func federationStatusCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [flags]",
		Short: "Regions, Raft membership, leader, index position and the node's jobs.",
		Long: `Prints what a node knows of the federation: its own Raft state, the leader,
the applied index of its index replica, every registered region with its
role and its place in the Raft configuration (voter, nonvoter, absent), and
the node's background jobs with their last runs (a district: publish, sweep;
a coordinator: custody).`,
		Example: `  # with a running demo (credfed demo):
  credfed federation status --demo credfed-demo
  credfed federation status --demo credfed-demo --as department --node kecheng --json`,
		Args: noArgs,
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON answer as it is")
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		var raw json.RawMessage
		if _, err := c.Do(cmd.Context(), "GET", "/v1/federation", "", nil, &raw); err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), raw)
		}
		var f api.Federation
		if err := json.Unmarshal(raw, &f); err != nil {
			return fmt.Errorf("GET /v1/federation: the answer is not the federation's status: %w", err)
		}
		return printFederation(cmd.OutOrStdout(), &f)
	}
	return cmd
}

func printFederation(w io.Writer, f *api.Federation) error {
	fmt.Fprintf(w, "federation %s, catalog version %d\n", f.Federation, f.CatalogVersion)
	fmt.Fprintf(w, "this node: %s %s (%s), raft %s, term %s, leader %s, commit %s, applied %s, %s\n",
		f.Node.Role, f.Node.Region, f.Node.Name, f.Raft.State, f.Raft.Term, f.Raft.Leader, f.Raft.CommitIndex, f.Raft.AppliedIndex, f.Node.Status)
	fmt.Fprintf(w, "index replica at applied index %d", f.Index.AppliedIndex)
	if f.Node.Role == "district" {
		fmt.Fprintf(w, "; outbox: %d changes waiting for the index", f.Index.OutboxLength)
	}
	fmt.Fprintln(w)
	var regions [][]string
	for _, r := range f.Regions {
		regions = append(regions, []string{r.Path, r.Name, r.Role, r.Raft, r.Exchange})
	}
	fmt.Fprintln(w)
	if err := writeTable(w, "", []string{"REGION", "NAME", "ROLE", "RAFT", "EXCHANGE"}, regions); err != nil {
		return err
	}
	if len(f.Jobs) == 0 {
		return nil
	}
	var jobs [][]string
	for _, j := range f.Jobs {
		jobs = append(jobs, []string{j.Name, j.State, strconv.FormatInt(j.Runs, 10), strconv.FormatInt(j.Failures, 10),
			j.LastRun, j.LastSuccess, progressText(j.Progress), j.LastError})
	}
	fmt.Fprintln(w)
	return writeTable(w, "", []string{"JOB", "STATE", "RUNS", "FAILURES", "LAST RUN", "LAST SUCCESS", "PROGRESS", "LAST ERROR"}, jobs)
}

// progressText renders a job's progress counts as "key=value …", keys sorted.
func progressText(p map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(p)) {
		parts = append(parts, k+"="+strconv.FormatInt(p[k], 10))
	}
	return strings.Join(parts, " ")
}
