package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"credfed/api"
	"credfed/credit"
)

// exampleSubject is the identifier the help texts use: a valid citizen
// number of the reserved test province 99 (the demo's showcase subject,
// the first synthetic person of localfed.SyntheticRecords).
var exampleSubject = credit.SyntheticPerson(1, credit.NewDate(1950, time.January, 1))

func lookupCommand() *cobra.Command {
	var (
		req    api.LookupRequest
		strong bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "lookup --subject ID --purpose CODE --reference REF [--user NAME] [flags]",
		Short: "Look a subject up across the federation (coordinators).",
		Long: `Asks a coordinator node for a subject's records across every district that
holds something about it, for a purpose of the catalog (GET /v1/catalog lists
them). The subject travels in the request body, never in a URL. Every lookup
is registered in the audit log of the coordinator and of each district
before it is answered. Districts that cannot answer are listed with their
status (unreachable, timeout, denied, error): a partial answer is normal.

A coordinator looks up through its own node: the province's coordinator
through the province, a city's through its city (--as coordinator --node
quzhou in a demo). --user names the person on whose behalf the lookup is
made; it defaults to $USER, then $LOGNAME, then the operating system's
user name.`,
		Example: fmt.Sprintf(`  # with a running demo (credfed demo), as the province's coordinator:
  credfed lookup --demo credfed-demo --subject %[1]s --purpose ADMIN-LICENSING --user 张三 --reference 许可〔2026〕1号

  # as the coordinator of 衢州市, through the city's own node, answer as JSON:
  credfed lookup --demo credfed-demo --as coordinator --node quzhou --subject %[1]s --purpose ADMIN-LICENSING --reference 许可〔2026〕2号 --json

  # against any node, the connection from the environment:
  export CREDFED_ADDR=https://127.0.0.1:8443 CREDFED_CACERT=ca.pem CREDFED_CLIENT_CERT=me.pem CREDFED_CLIENT_KEY=me-key.pem
  credfed lookup --subject %[1]s --purpose ADMIN-LICENSING --reference 许可〔2026〕3号`, exampleSubject),
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&req.Subject, "subject", "", "`ID` of the subject: citizen number or unified social credit code (required)")
	fs.StringVar(&req.Purpose, "purpose", "", "purpose `CODE` from the catalog (required)")
	fs.StringVar(&req.Reference, "reference", "", "case reference (`REF`) the lookup serves (required)")
	fs.StringVar(&req.User, "user", "", "end user (`NAME`) on whose behalf the lookup is made (default $USER, then $LOGNAME, then the OS user)")
	fs.StringVar(&req.Authorization, "authorization", "", "the subject's authorization (`REF`), where the purpose requires one")
	fs.BoolVar(&strong, "strong", false, "read the index through the Raft leader (linearizable) instead of the local replica")
	fs.BoolVar(&asJSON, "json", false, "print the API's JSON answer as it is")
	conn := addConnectionFlags(cmd, "coordinator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if req.Subject == "" || req.Purpose == "" || req.Reference == "" {
			return usageErrorf("lookup needs --subject, --purpose and --reference")
		}
		if req.User == "" {
			req.User = defaultUser(os.Getenv, osUserName)
		}
		if req.User == "" {
			return usageErrorf("--user is required: every lookup names the end user who asks, and neither $USER, $LOGNAME nor the operating system names one")
		}
		if strong {
			req.Consistency = api.ConsistencyStrong
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		var raw json.RawMessage
		if _, err := c.Do(cmd.Context(), "POST", "/v1/lookups", "", req, &raw); err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), raw)
		}
		var ans api.LookupAnswer
		if err := json.Unmarshal(raw, &ans); err != nil {
			return fmt.Errorf("POST /v1/lookups: the answer is not a lookup answer: %w", err)
		}
		return printLookup(cmd.OutOrStdout(), &ans)
	}
	return cmd
}

// osUserName is the operating system's name of the current user, "" if
// unknown (a variable so that tests can make it unknown).
var osUserName = func() string {
	u, err := user.Current()
	if err != nil {
		return ""
	}
	return u.Username
}

// defaultUser is the end user of a lookup without --user: $USER, else
// $LOGNAME, else the operating system's user name.
func defaultUser(getenv func(string) string, osUser func() string) string {
	if u := getenv("USER"); u != "" {
		return u
	}
	if u := getenv("LOGNAME"); u != "" {
		return u
	}
	return osUser()
}

// printLookup prints a lookup answer: one table of the districts, one of
// their records.
func printLookup(w io.Writer, ans *api.LookupAnswer) error {
	fmt.Fprintf(w, "subject pseudonym %s (index read %s, at applied index %d)\n", ans.SubjectPseudonym, ans.Index.Consistency, ans.Index.AppliedIndex)
	if len(ans.Districts) == 0 {
		_, err := fmt.Fprintln(w, "no district holds anything about this subject")
		return err
	}
	var districts, records [][]string
	for _, d := range ans.Districts {
		name := d.Name
		if name == "" {
			name = d.District
		}
		districts = append(districts, []string{d.District, d.Name, d.Status, strconv.Itoa(len(d.Records)), d.Error})
		for _, r := range d.Records {
			records = append(records, []string{name, r.ID, r.CatalogItem, r.Polarity + "/" + r.Severity, r.Status,
				r.DecidedOn, r.DisplayUntil, r.Department, r.Summary})
		}
	}
	fmt.Fprintln(w)
	if err := writeTable(w, "", []string{"DISTRICT", "NAME", "STATUS", "RECORDS", "NOTE"}, districts); err != nil {
		return err
	}
	if len(records) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	return writeTable(w, "", []string{"DISTRICT", "RECORD", "ITEM", "KIND", "STATUS", "DECIDED", "SHOWN UNTIL", "DEPARTMENT", "SUMMARY"}, records)
}
