package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

func lookupCommand() *command {
	return &command{name: "lookup", summary: "Look a subject up across the federation (coordinators).", run: runLookup}
}

func runLookup(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("lookup", "credfed lookup [connection flags] --subject ID --purpose P --reference R [--user NAME] [--authorization REF]",
		`Asks a coordinator node for a subject's records across every district that
holds something about it, for a purpose of the catalog (GET /v1/catalog lists
them). The subject travels in the request body, never in a URL. Every lookup
is registered in the audit log of the coordinator and of each district
before it is answered. Districts that cannot answer are listed with their
status (unreachable, timeout, denied, error) — a partial answer is normal.

Example (with a running demo):
  credfed lookup --demo credfed-demo --subject 990101198001010013 --purpose ADMIN-LICENSING --user 张三 --reference 许可〔2026〕1号`, stderr)
	var cf clientFlags
	cf.register(fs, "coordinator")
	subject := fs.String("subject", "", "the subject's identifier (citizen number or unified social credit code)")
	purpose := fs.String("purpose", "", "purpose code from the catalog (required)")
	reference := fs.String("reference", "", "case reference the lookup serves (required)")
	user := fs.String("user", defaultUser(), "end user on whose behalf the lookup is made (default: $USER)")
	authz := fs.String("authorization", "", "the subject's authorization reference, where the purpose requires one")
	strong := fs.Bool("strong", false, "read the index through the Raft leader (linearizable) instead of the local replica")
	asJSON := fs.Bool("json", false, "print the API's JSON answer")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *subject == "" || *purpose == "" || *reference == "" {
		return usageErrorf("lookup needs --subject, --purpose and --reference")
	}
	if *user == "" {
		return usageErrorf("lookup needs --user: every lookup names the end user who asks")
	}
	hc, api, err := cf.client()
	if err != nil {
		return err
	}
	body := map[string]string{"subject": *subject, "purpose": *purpose, "reference": *reference, "user": *user}
	if *authz != "" {
		body["authorization"] = *authz
	}
	if *strong {
		body["consistency"] = "strong"
	}
	data, _ := json.Marshal(body)
	var ans struct {
		SubjectPseudonym string `json:"subject_pseudonym"`
		Index            struct {
			Consistency  string `json:"consistency"`
			AppliedIndex uint64 `json:"applied_index"`
		} `json:"index"`
		Districts []struct {
			District string `json:"district"`
			Name     string `json:"name"`
			Status   string `json:"status"`
			Error    string `json:"error"`
			Records  []struct {
				ID           string `json:"id"`
				CatalogItem  string `json:"catalog_item"`
				Polarity     string `json:"polarity"`
				Severity     string `json:"severity"`
				Status       string `json:"status"`
				DecidedOn    string `json:"decided_on"`
				DisplayUntil string `json:"display_until"`
				Department   string `json:"department"`
				Summary      string `json:"summary"`
			} `json:"records"`
		} `json:"districts"`
	}
	var raw json.RawMessage
	if _, err := call(hc, "POST", api+"/v1/lookups", "application/json", data, &raw); err != nil {
		return err
	}
	if *asJSON {
		fmt.Fprintln(stdout, string(raw))
		return nil
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "subject pseudonym %s (index %s read at applied index %d)\n", ans.SubjectPseudonym, ans.Index.Consistency, ans.Index.AppliedIndex)
	if len(ans.Districts) == 0 {
		fmt.Fprintln(stdout, "no district holds anything about this subject")
		return nil
	}
	for _, d := range ans.Districts {
		fmt.Fprintf(stdout, "\n%s %s: %s, %d records", d.District, d.Name, d.Status, len(d.Records))
		if d.Error != "" {
			fmt.Fprintf(stdout, " (%s)", d.Error)
		}
		fmt.Fprintln(stdout)
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		for _, r := range d.Records {
			fmt.Fprintf(tw, "  %s\t%s\t%s/%s\t%s\tdecided %s\tshown until %s\t%s\n", r.ID, r.CatalogItem, r.Polarity, r.Severity,
				r.Status, r.DecidedOn, r.DisplayUntil, r.Department)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func defaultUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return os.Getenv("LOGNAME")
}
