package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"credfed/api"
	"credfed/credit"
	"credfed/internal/atomicfile"
)

// The subject's side: the own report, the access log, objections and
// repairs, through a district's portal.

func reportGetCommand() *cobra.Command {
	var req api.SubjectRequest
	var out string
	cmd := &cobra.Command{
		Use:   "get --subject ID --authentication REF [--out FILE] [flags]",
		Short: "A subject's own report from every district, signed by the coordinator that gathered it (portals).",
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
		rows = append(rows, []string{chinaTime(e.At), e.Coordinator + "/" + e.Institution, e.Role, e.User, e.Purpose, e.Reference, strings.Join(e.Districts, " ")})
	}
	if len(rows) == 0 {
		fmt.Fprintln(w, "nobody has looked this subject up")
	} else if err := writeTable(w, "", []string{"AT", "INSTITUTION", "ROLE", "USER", "PURPOSE", "REFERENCE", "DISTRICTS"}, rows); err != nil {
		return err
	}
	switch {
	case log.Delayed == 1:
		fmt.Fprintln(w, "1 more lookup is delayed: its purpose keeps it confidential for now; it is shown once the purpose's delay has passed")
	case log.Delayed > 1:
		fmt.Fprintf(w, "%d more lookups are delayed: their purpose keeps them confidential for now; each is shown once its purpose's delay has passed\n", log.Delayed)
	}
	if len(log.Incomplete) > 0 {
		fmt.Fprintf(w, "could not ask %s: their lookups may be missing\n", strings.Join(log.Incomplete, ", "))
	}
	return nil
}

// article is "an" before a vowel, "a" otherwise.
func article(word string) string {
	if word != "" && strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

// caseKinds are the two kinds of cases: the CLI noun, the API path, the
// decision step and its outcomes.
var caseKinds = []struct{ noun, path, decide, outcomes, first, short string }{
	{"objection", "objections", "resolve", "upheld, corrected or revoked", "upheld", "Objections (异议) to a record: filed by the subject, resolved by its collector."},
	{"repair", "repairs", "decide", "approved or rejected", "approved", "Credit repair (信用修复) of a record: asked by the subject, decided by its collector."},
}

func caseCommands() []*cobra.Command {
	var out []*cobra.Command
	for _, k := range caseKinds {
		out = append(out, groupCommand(k.noun, k.short,
			caseFileCommand(k.noun, k.path), caseShowCommand(k.noun, k.path), caseListCommand(k.noun, k.path),
			caseDecideCommand(k.noun, k.path, k.decide, k.outcomes, k.first)))
	}
	return out
}

func caseFileCommand(noun, path string) *cobra.Command {
	var req api.CaseRequest
	var asJSON bool
	use, example := "file --subject ID --record REF --reason TEXT --authentication REF [flags]",
		fmt.Sprintf(`  credfed objection file --demo credfed-demo --as portal --node kecheng --subject %s \
    --record zhejiang/hangzhou/xihu/market-supervision/xihu-00001 --reason "欠薪已于处罚前结清" --authentication FACE-0001`, exampleSubject)
	if noun == "repair" {
		use = "file --subject ID --record REF --grounds GROUNDS --authentication REF [flags]"
		example = fmt.Sprintf(`  credfed repair file --demo credfed-demo --as portal --node kecheng --subject %s \
    --record zhejiang/hangzhou/xihu/market-supervision/xihu-00001 --grounds performance --reason "已全部结清欠薪" --authentication FACE-0001`, exampleSubject)
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: "File " + article(noun) + " " + noun + " through a portal, naming the record by its ref.",
		Long: `Files a ` + noun + ` about a record at the portal's district node. The record is
named by its "ref" (district/department/id, as shown in a report or lookup).
The request goes to the district's city, which checks that the named
district holds something of the subject, and on to that district, where the
collecting department decides it. Prints the case with its id and deadline.`,
		Example: example,
		Args:    noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&req.Subject, "subject", "", "`ID` of the subject (required)")
	fs.StringVar(&req.Record, "record", "", "the record's `REF`, district/department/id (required)")
	reasonHelp := "the subject's statement (`TEXT`)"
	if noun == "objection" {
		reasonHelp = "why the record is wrong (`TEXT`, required)"
	}
	fs.StringVar(&req.Reason, "reason", "", reasonHelp)
	fs.StringVar(&req.Authentication, "authentication", "", "how the portal verified the person's real name, a `REF` (required)")
	fs.StringSliceVar(&req.Evidence, "evidence", nil, "evidence reference (`REF`), repeatable")
	if noun == "repair" {
		fs.StringVar(&req.Grounds, "grounds", "", "the grounds: performance, volunteer_service, donation or training (required)")
	}
	fs.BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	conn := addConnectionFlags(cmd, "portal")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if req.Subject == "" || req.Record == "" || req.Authentication == "" {
			return usageErrorf("%s file needs --subject, --record and --authentication", noun)
		}
		if noun == "objection" && strings.TrimSpace(req.Reason) == "" {
			return usageErrorf("objection file needs --reason: why the record is wrong")
		}
		if noun == "repair" && req.Grounds == "" {
			return usageErrorf("repair file needs --grounds: performance, volunteer_service, donation or training")
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
		return printCaseOrJSON(cmd.OutOrStdout(), got, asJSON)
	}
	return cmd
}

func caseShowCommand(noun, path string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID [flags]",
		Short: "Show " + article(noun) + " " + noun + " (the subject's portal, or the collecting department).",
		Long: `Shows ` + article(noun) + " " + noun + ` by its id: through the subject's portal (any district's), or
to the collecting department on the node of the district that keeps it
(with --demo and --as department, --node defaults to that district: the id
names it).`,
		Example: fmt.Sprintf(`  credfed %s show --demo credfed-demo --as portal --node kecheng ID`, noun),
		Args:    exactArgs(1, "the "+noun+"'s id"),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	conn := addConnectionFlags(cmd, "portal")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		conn.nodeOfCase(args[0])
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		got, err := c.Case(cmd.Context(), path, args[0])
		if err != nil {
			return err
		}
		return printCaseOrJSON(cmd.OutOrStdout(), got, asJSON)
	}
	return cmd
}

func caseListCommand(noun, path string) *cobra.Command {
	var state string
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list [--state open|overdue|decided|all] [flags]",
		Short:   "List the department's " + noun + "s, soonest deadline first.",
		Example: fmt.Sprintf(`  credfed %s list --demo credfed-demo --as department --node qujiang --state open`, noun),
		Args:    noArgs,
	}
	cmd.Flags().StringVar(&state, "state", "open", "open, overdue, decided or all")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON answer")
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
		if asJSON {
			return printJSONValue(cmd.OutOrStdout(), got)
		}
		var rows [][]string
		for _, cs := range got.Cases {
			deadline := cs.Deadline
			if cs.Overdue {
				deadline += " OVERDUE"
			}
			rows = append(rows, []string{cs.ID, cs.Record, cs.State, deadline, cs.Outcome})
		}
		if len(rows) == 0 {
			what := state + " "
			if state == "all" {
				what = ""
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "no %s%ss\n", what, noun)
			return err
		}
		return writeTable(cmd.OutOrStdout(), "", []string{"ID", "RECORD", "STATE", "DEADLINE", "OUTCOME"}, rows)
	}
	return cmd
}

func caseDecideCommand(noun, path, verb, outcomes, first string) *cobra.Command {
	var d api.CaseDecision
	var summary string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   verb + " ID --outcome OUTCOME --reason TEXT [flags]",
		Short: "Decide " + article(noun) + " " + noun + " as the collecting department (" + outcomes + ").",
		Long: `Decides ` + article(noun) + " " + noun + ` as the department that collected the record, on the node of
the district that keeps it (with --demo, --node defaults to that district:
the id names it). A case is decided once.`,
		Example: fmt.Sprintf(`  credfed %s %s --demo credfed-demo --as department ID --outcome %s --reason "复核后维持"`, noun, verb, first),
		Args:    exactArgs(1, "the "+noun+"'s id"),
	}
	cmd.Flags().StringVar(&d.Outcome, "outcome", "", "the decision: "+outcomes+" (required)")
	cmd.Flags().StringVar(&d.Reason, "reason", "", "the decision's reasons (required)")
	if noun == "objection" {
		cmd.Flags().StringVar(&summary, "summary", "", "with --outcome corrected: the record's corrected summary (required then)")
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	conn := addConnectionFlags(cmd, "department")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if d.Outcome == "" || d.Reason == "" {
			return usageErrorf("%s %s needs --outcome and --reason", noun, verb)
		}
		if noun == "objection" && (d.Outcome == "corrected") != (summary != "") {
			return usageErrorf("--summary goes with --outcome corrected, and only with it")
		}
		conn.nodeOfCase(args[0])
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
		return printCaseOrJSON(cmd.OutOrStdout(), got, asJSON)
	}
	return cmd
}

func printCaseOrJSON(w io.Writer, c *api.Case, asJSON bool) error {
	if asJSON {
		return printJSONValue(w, c)
	}
	return printCase(w, c)
}

// printJSONValue prints an API answer the client decoded, indented.
func printJSONValue(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// chinaTime shows an RFC 3339 time in China Standard Time, the zone whose
// days the deadlines count.
func chinaTime(s string) string {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return s
	}
	return t.In(credit.ChinaStandardTime).Format("2006-01-02 15:04 MST")
}

func printCase(w io.Writer, c *api.Case) error {
	rows := [][]string{{"id", c.ID}, {"record", c.Record}, {"state", c.State}, {"filed", chinaTime(c.FiledAt)}}
	if c.Grounds != "" {
		rows = append(rows, []string{"grounds", c.Grounds})
	}
	if c.Reason != "" {
		rows = append(rows, []string{"statement", c.Reason})
	}
	if len(c.Evidence) > 0 {
		rows = append(rows, []string{"evidence", strings.Join(c.Evidence, "; ")})
	}
	if c.Deadline != "" {
		d := c.Deadline
		if c.Overdue {
			d += " (overdue)"
		}
		rows = append(rows, []string{"deadline", d})
	}
	if c.Outcome != "" {
		rows = append(rows, []string{"outcome", c.Outcome}, []string{"decided", chinaTime(c.DecidedAt) + " by " + c.DecidedBy})
		if c.Decision != "" {
			rows = append(rows, []string{"reasons", c.Decision})
		}
	}
	if c.Version != 0 {
		rows = append(rows, []string{"record version", strconv.Itoa(c.Version)})
	}
	if len(c.Notify) > 0 {
		rows = append(rows, []string{"to notify", strings.Join(c.Notify, ", ")})
	}
	if len(c.NotifyConfidential) > 0 {
		rows = append(rows, []string{"to notify (confidential)", strings.Join(c.NotifyConfidential, ", ")})
	}
	return writeTable(w, "", []string{c.Kind, ""}, rows)
}
