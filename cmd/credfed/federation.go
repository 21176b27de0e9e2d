package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

func federationCommand() *command {
	return &command{
		name:    "federation",
		summary: "Show the federation as a node sees it.",
		sub:     []*command{{name: "status", summary: "Regions, Raft membership, leader and index position.", run: federationStatus}},
	}
}

func federationStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("federation status", "credfed federation status [connection flags]",
		`Prints what a node knows of the federation: its own Raft state, the leader,
the applied index of its index replica, and every registered region with its
role and its place in the Raft configuration (voter, nonvoter, absent).

Example (with a running demo):
  credfed federation status --demo credfed-demo --as operator`, stderr)
	var cf clientFlags
	cf.register(fs, "operator")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	hc, api, err := cf.client()
	if err != nil {
		return err
	}
	var v struct {
		Federation string `json:"federation"`
		Node       struct {
			Name, Role, Region, Exchange, Status string
			Ready                                bool
		} `json:"node"`
		Raft struct {
			State, Leader, Term string
			CommitIndex         string `json:"commit_index"`
			AppliedIndex        string `json:"applied_index"`
		} `json:"raft"`
		Index struct {
			AppliedIndex uint64 `json:"applied_index"`
			OutboxLength int    `json:"outbox_length"`
		} `json:"index"`
		CatalogVersion int `json:"catalog_version"`
		Regions        []struct {
			Path, Name, Role, Exchange, Raft string
			Voter                            bool
		} `json:"regions"`
	}
	if _, err := call(hc, "GET", api+"/v1/federation", "", nil, &v); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "federation %s, catalog version %d\n", v.Federation, v.CatalogVersion)
	fmt.Fprintf(stdout, "this node: %s %s (%s), raft %s, term %s, leader %s, commit %s, applied %s, %s\n",
		v.Node.Role, v.Node.Region, v.Node.Name, v.Raft.State, v.Raft.Term, v.Raft.Leader, v.Raft.CommitIndex, v.Raft.AppliedIndex, v.Node.Status)
	if v.Node.Role == "district" {
		fmt.Fprintf(stdout, "outbox: %d subjects waiting for the index\n", v.Index.OutboxLength)
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nREGION\tNAME\tROLE\tRAFT\tEXCHANGE")
	for _, r := range v.Regions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Path, r.Name, r.Role, r.Raft, r.Exchange)
	}
	return tw.Flush()
}
