package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"credfed/localfed"
	"credfed/node"
)

func auditCommand() *cobra.Command {
	return groupCommand("audit", "A node's audit log, checked against its anchors in Raft; the institutions that query.", auditVerifyCommand(), auditQueriersCommand())
}

// errTampered is the exit status 1 of a log that does not match.
var errTampered = errors.New("the audit log was tampered with")

func auditVerifyCommand() *cobra.Command {
	var path, demo, name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify (--config FILE | --demo DIR --node NAME)",
		Short: "Check a stopped node's audit log against its anchors in Raft, offline.",
		Long: `Checks a node's audit log (its hash chain) and the heads the node anchored
in the Raft log, as its replicated state holds them: the chain verifies, every
anchored entry has exactly its anchored hash, and the log reaches the newest
anchor. Prints OK with the head and the newest anchor, or names the first bad
entry and the kind of tampering (edited, deleted, reordered, truncated,
rewritten, appended) and exits 1.

The node must be stopped: its store and its Raft state are opened read-only,
which Badger allows only once the node has let go of them. The entries after
the newest anchor are checked by the chain alone (the anchoring window: see
audit_anchor_entries and audit_anchor_interval in docs/config.md). A node
checks the same at start, against the anchors of the leader, and refuses to
start on a mismatch.`,
		Example: `  credfed audit verify --config /etc/credfed/node.yaml
  credfed audit verify --demo credfed-demo --node kecheng`,
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&path, "config", "", "the node's YAML configuration `FILE`")
	fs.StringVar(&demo, "demo", "", "a demo's directory `DIR` (with --node)")
	fs.StringVar(&name, "node", "", "with --demo: the node, by `NAME`")
	fs.BoolVar(&asJSON, "json", false, "print the finding as JSON")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	_ = cmd.MarkFlagDirname("demo")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		switch {
		case path != "" && demo != "":
			return usageErrorf("audit verify takes --config FILE or --demo DIR --node NAME, not both")
		case demo != "":
			l, err := localfed.ReadLayout(demo)
			if err != nil {
				return err
			}
			var names []string
			for _, n := range l.Nodes {
				names = append(names, n.Name)
			}
			ln, ok := l.Node(name)
			if !ok {
				return usageErrorf("--node names one of the demo's nodes: %s", strings.Join(names, ", "))
			}
			path = ln.ConfigPath
		case name != "":
			return usageErrorf("--node picks a node of a demo: use it with --demo DIR")
		case path == "":
			return usageErrorf("audit verify needs --config FILE (or --demo DIR --node NAME)")
		}
		cfg, err := node.LoadConfig(path)
		if err != nil {
			return err
		}
		v, err := node.VerifyAudit(cfg)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if asJSON {
			if err := json.NewEncoder(out).Encode(verificationJSON(v)); err != nil {
				return err
			}
		} else if v.Mismatch == nil {
			fmt.Fprintf(out, "%s: OK: head entry %d (%s), %s\n", v.Node, v.Head, short(v.HeadHash), newestAnchor(v))
			if r := v.Restore; r != nil {
				fmt.Fprintf(out, "%s: restored on %s from the backup of %s, whose log ends at entry %d: %d anchors of entries lost with it not checked\n",
					v.Node, r.RestoredAt.UTC().Format(time.RFC3339), r.TakenAt.UTC().Format(time.RFC3339), r.AuditSeq, v.LostAnchors)
			}
		}
		if m := v.Mismatch; m != nil {
			return fmt.Errorf("%w: %s (%s): first bad entry %d: %s", errTampered, v.Node, m.Kind, m.Seq, m.Problem)
		}
		return nil
	}
	return cmd
}

func short(h [32]byte) string { return hex.EncodeToString(h[:8]) }

func newestAnchor(v node.AuditVerification) string {
	if len(v.Anchors) == 0 {
		return fmt.Sprintf("no anchors in Raft (state at log index %d)", v.Applied)
	}
	a := v.Anchors[len(v.Anchors)-1]
	return fmt.Sprintf("newest anchor entry %d (%s) at %s, %d anchors checked (state at log index %d)",
		a.Seq, short(a.Hash), a.At.UTC().Format(time.RFC3339), len(v.Anchors), v.Applied)
}

type verificationOut struct {
	Node          string `json:"node"`
	OK            bool   `json:"ok"`
	Head          uint64 `json:"head"`
	HeadHash      string `json:"head_hash"`
	Anchors       int    `json:"anchors"`
	NewestAnchor  uint64 `json:"newest_anchor,omitempty"`
	AppliedIndex  uint64 `json:"applied_index"`
	FirstBadEntry uint64 `json:"first_bad_entry,omitempty"`
	Kind          string `json:"kind,omitempty"`
	Problem       string `json:"problem,omitempty"`
	// RestoredFrom is when the backup the store was restored from was
	// taken, when that restore let LostAnchors anchors go unchecked.
	RestoredFrom string `json:"restored_from,omitempty"`
	LostAnchors  int    `json:"lost_anchors,omitempty"`
}

func verificationJSON(v node.AuditVerification) verificationOut {
	o := verificationOut{Node: v.Node, OK: v.Mismatch == nil, Head: v.Head, HeadHash: hex.EncodeToString(v.HeadHash[:]),
		Anchors: len(v.Anchors), AppliedIndex: v.Applied}
	if len(v.Anchors) > 0 {
		o.NewestAnchor = v.Anchors[len(v.Anchors)-1].Seq
	}
	if m := v.Mismatch; m != nil {
		o.FirstBadEntry, o.Kind, o.Problem = m.Seq, string(m.Kind), m.Problem
	}
	if r := v.Restore; r != nil {
		o.RestoredFrom, o.LostAnchors = r.TakenAt.UTC().Format(time.RFC3339), v.LostAnchors
	}
	return o
}
