package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"credfed/api"
	"credfed/internal/atomicfile"
)

// The subject's side: the own report, the access log, objections and
// repairs, through a district's portal.

func reportGetCommand() *cobra.Command {
	var req api.SubjectRequest
	var out string
	cmd := &cobra.Command{
		Use:   "get --subject ID --authentication REF [--out FILE] [flags]",
		Short: "A subject's own report from every district, signed by the node (portals).",
		Long: `Asks the portal's district node for the subject's own report: every record of
every district that holds any (all statuses until retention ends), the lists
the subject is on, the access log, and the node's signature. The district
forwards the request to its city, which gathers it. The report is printed
(or written to --out) exactly as signed: keep it as it is, and check it with
'credfed report verify --ca ca.pem FILE'. --authentication is how the
portal verified the person's real name; it is audited.`,
		Example: fmt.Sprintf(`  credfed report get --demo credfed-demo --as portal --node kecheng --subject %s --authentication FACE-0001 --out report.json
  credfed report verify --ca credfed-demo/ca.pem report.json`, exampleSubject),
		Args: noArgs,
	}
	subjectFlags(cmd, &req)
	cmd.Flags().StringVar(&out, "out", "", "write the signed report to `FILE` instead of standard output")
	conn := addConnectionFlags(cmd, "portal")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if req.Subject == "" || req.Authentication == "" {
			return usageErrorf("report get needs --subject and --authentication")
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		raw, rep, err := c.Report(cmd.Context(), req)
		if err != nil {
			return err
		}
		if out == "" {
			_, err := cmd.OutOrStdout().Write(raw)
			return err
		}
		if err := atomicfile.Write(out, raw, 0o600); err != nil {
			return err
		}
		n := 0
		for _, d := range rep.Districts {
			n += len(d.Records)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s: %d records from %d districts, %d lookups in the access log, signed by %s\n",
			out, n, len(rep.Districts), len(rep.AccessLog.Entries), signerOf(rep))
		return nil
	}
	return cmd
}

func signerOf(rep *api.Report) string {
	if rep.Signature == nil {
		return "nobody"
	}
	return rep.Signature.Signer
}

func subjectFlags(cmd *cobra.Command, req *api.SubjectRequest) {
	fs := cmd.Flags()
	fs.StringVar(&req.Subject, "subject", "", "`ID` of the subject (required)")
	fs.StringVar(&req.Authentication, "authentication", "", "how the portal verified the person's real name, a `REF` (required; audited)")
}

func accessLogCommand() *cobra.Command {
	var req api.SubjectRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "access-log --subject ID --authentication REF [flags]",
		Short: "Who looked a subject up, when and why (portals).",
		Long: `Lists every lookup of the subject across the federation, one line per lookup
however many districts it reached: when, the institution, role and end
user who asked, the purpose and case reference, and the districts that
answered. Lookups of purposes the law keeps confidential for a while are
counted as delayed and shown once their delay has passed.`,
		Example: fmt.Sprintf(`  credfed access-log --demo credfed-demo --as portal --node kecheng --subject %s --authentication FACE-0001`, exampleSubject),
		Args:    noArgs,
	}
	subjectFlags(cmd, &req)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON answer as it is")
	conn := addConnectionFlags(cmd, "portal")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if req.Subject == "" || req.Authentication == "" {
			return usageErrorf("access-log needs --subject and --authentication")
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		var raw json.RawMessage
		if _, err := c.Do(cmd.Context(), "POST", "/v1/access-log", "", req, &raw); err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), raw)
		}
		var log api.AccessLog
		if err := json.Unmarshal(raw, &log); err != nil {
			return fmt.Errorf("POST /v1/access-log: the answer is not an access log: %w", err)
		}
		return printAccessLog(cmd.OutOrStdout(), &log)
	}
	return cmd
}

func printAccessLog(w io.Writer, log *api.AccessLog) error {
	var rows [][]string
	for _, e := range log.Entries {
		rows = append(rows, []string{e.At, e.Coordinator + "/" + e.Institution, e.User, e.Purpose, e.Reference, strings.Join(e.Districts, " ")})
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "nobody has looked this subject up")
	} else if err := writeTable(w, "", []string{"AT", "INSTITUTION", "USER", "PURPOSE", "REFERENCE", "DISTRICTS"}, rows); err != nil {
		return err
	}
	if log.Delayed > 0 {
		fmt.Fprintf(w, "%d more lookups are delayed: their purpose keeps them confidential for now\n", log.Delayed)
	}
	if len(log.Incomplete) > 0 {
		fmt.Fprintf(w, "could not ask %s: their lookups may be missing\n", strings.Join(log.Incomplete, ", "))
	}
	return nil
}

// caseKinds are the two kinds of cases: the CLI noun, the API path, the
// decision step and its outcomes.
var caseKinds = []struct{ noun, path, decide, outcomes, short string }{
	{"objection", "objections", "resolve", "upheld, corrected or revoked", "Objections (异议) to a record: filed by the subject, resolved by its collector."},
	{"repair", "repairs", "decide", "approved or rejected", "Credit repair (信用修复) of a record: asked by the subject, decided by its collector."},
}

func caseCommands() []*cobra.Command {
	var out []*cobra.Command
	for _, k := range caseKinds {
		out = append(out, groupCommand(k.noun, k.short,
			caseFileCommand(k.noun, k.path), caseShowCommand(k.noun, k.path), caseListCommand(k.noun, k.path),
			caseDecideCommand(k.noun, k.path, k.decide, k.outcomes)))
	}
	return out
}

func caseFileCommand(noun, path string) *cobra.Command {
	var req api.CaseRequest
	cmd := &cobra.Command{
		Use:   "file --subject ID --record REF --authentication REF [flags]",
		Short: "File a " + noun + " through a portal, naming the record by its ref.",
		Long: `Files a ` + noun + ` about a record at the portal's district node. The record is
named by its "ref" (district/department/id, as shown in a report or lookup).
The request goes to the district's city, which checks that the named
district holds something of the subject, and on to that district, where the
collecting department decides it. Prints the case with its id and deadline.`,
		Example: fmt.Sprintf(`  credfed %s file --demo credfed-demo --as portal --node kecheng --subject %s --record zhejiang/quzhou/qujiang/market-supervision/R-0001 --reason "…" --authentication FACE-0001`, noun, exampleSubject),
		Args:    noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&req.Subject, "subject", "", "`ID` of the subject (required)")
	fs.StringVar(&req.Record, "record", "", "the record's `REF`, district/department/id (required)")
	fs.StringVar(&req.Reason, "reason", "", "the subject's statement (`TEXT`)")
	fs.StringVar(&req.Authentication, "authentication", "", "how the portal verified the person's real name, a `REF` (required)")
	fs.StringSliceVar(&req.Evidence, "evidence", nil, "evidence reference (`REF`), repeatable")
	if noun == "repair" {
		fs.StringVar(&req.Grounds, "grounds", "", "the grounds: performance, volunteer_service, donation or training (required)")
	}
	conn := addConnectionFlags(cmd, "portal")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if req.Subject == "" || req.Record == "" || req.Authentication == "" {
			return usageErrorf("%s file needs --subject, --record and --authentication", noun)
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		got, err := c.File(cmd.Context(), path, req)
		if err != nil {
			return err
		}
		return printCase(cmd.OutOrStdout(), got)
	}
	return cmd
}

func caseShowCommand(noun, path string) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "show ID [flags]",
		Short:   "Show a " + noun + " (the subject's portal, or the collecting department).",
		Example: fmt.Sprintf(`  credfed %s show --demo credfed-demo --as portal --node kecheng ID`, noun),
		Args:    exactArgs(1, "the "+noun+"'s id"),
	}
	conn := addConnectionFlags(cmd, "portal")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		got, err := c.Case(cmd.Context(), path, args[0])
		if err != nil {
			return err
		}
		return printCase(cmd.OutOrStdout(), got)
	}
	return cmd
}

func caseListCommand(noun, path string) *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:     "list [--state open|overdue|decided|all] [flags]",
		Short:   "List the department's " + noun + "s, soonest deadline first.",
		Example: fmt.Sprintf(`  credfed %s list --demo credfed-demo --as department --node qujiang --state open`, noun),
		Args:    noArgs,
	}
	cmd.Flags().StringVar(&state, "state", "open", "open, overdue, decided or all")
	conn := addConnectionFlags(cmd, "department")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		got, err := c.Cases(cmd.Context(), path, state)
		if err != nil {
			return err
		}
		var rows [][]string
		for _, cs := range got.Cases {
			overdue := ""
			if cs.Overdue {
				overdue = "OVERDUE"
			}
			rows = append(rows, []string{cs.ID, cs.Record, cs.State, cs.Deadline, overdue, cs.Outcome})
		}
		if len(rows) == 0 {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "no %s %ss\n", state, noun)
			return err
		}
		return writeTable(cmd.OutOrStdout(), "", []string{"ID", "RECORD", "STATE", "DEADLINE", "", "OUTCOME"}, rows)
	}
	return cmd
}

func caseDecideCommand(noun, path, verb, outcomes string) *cobra.Command {
	var d api.CaseDecision
	var summary string
	cmd := &cobra.Command{
		Use:     verb + " ID --outcome OUTCOME --reason TEXT [flags]",
		Short:   "Decide a " + noun + " as the collecting department (" + outcomes + ").",
		Example: fmt.Sprintf(`  credfed %s %s --demo credfed-demo --as department --node qujiang ID --outcome %s --reason "…"`, noun, verb, strings.Fields(outcomes)[0]),
		Args:    exactArgs(1, "the "+noun+"'s id"),
	}
	cmd.Flags().StringVar(&d.Outcome, "outcome", "", "the decision: "+outcomes+" (required)")
	cmd.Flags().StringVar(&d.Reason, "reason", "", "the decision's reasons (required)")
	if noun == "objection" {
		cmd.Flags().StringVar(&summary, "summary", "", "with --outcome corrected: the record's corrected summary")
	}
	conn := addConnectionFlags(cmd, "department")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if d.Outcome == "" || d.Reason == "" {
			return usageErrorf("%s %s needs --outcome and --reason", noun, verb)
		}
		if summary != "" {
			d.Correction = &api.Correction{Summary: &summary}
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		got, err := c.Decide(cmd.Context(), path, args[0], d)
		if err != nil {
			return err
		}
		return printCase(cmd.OutOrStdout(), got)
	}
	return cmd
}

func printCase(w io.Writer, c *api.Case) error {
	rows := [][]string{{"id", c.ID}, {"record", c.Record}, {"state", c.State}, {"filed", c.FiledAt}}
	if c.Deadline != "" {
		d := c.Deadline
		if c.Overdue {
			d += " (overdue)"
		}
		rows = append(rows, []string{"deadline", d})
	}
	if c.Outcome != "" {
		rows = append(rows, []string{"outcome", c.Outcome}, []string{"decided", c.DecidedAt + " by " + c.DecidedBy})
	}
	if c.Version != 0 {
		rows = append(rows, []string{"record version", strconv.Itoa(c.Version)})
	}
	if len(c.Notify) > 0 {
		rows = append(rows, []string{"to notify", strings.Join(c.Notify, ", ")})
	}
	return writeTable(w, "", []string{c.Kind, ""}, rows)
}
