package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"credfed/api"
)

// auditQueriersCommand is GET /v1/audit/queriers: per institution, the
// queries by purpose, the quotas in their window and the anomaly flags.
func auditQueriersCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "queriers [flags]",
		Short: "The institutions that query through a coordinator node: counts, quotas, anomaly flags.",
		Long: `Shows GET /v1/audit/queriers of a province or city node, for its operators
and coordinators: per institution (region/institution), the queries that ran
by purpose, the queries admitted and refused against the quotas, each quota
in its current window, and the anomaly flags raised (many subjects under
few case references, off hours, a rarely used purpose, an outsized batch).
Counts only: no subject, pseudonym or reference.`,
		Example: `  credfed audit queriers --demo credfed-demo
  credfed audit queriers --demo credfed-demo --as coordinator --node quzhou --json`,
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
		if _, err := c.Do(cmd.Context(), "GET", "/v1/audit/queriers", "", nil, &raw); err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if asJSON {
			return printJSON(w, raw)
		}
		var q api.Queriers
		if err := json.Unmarshal(raw, &q); err != nil {
			return fmt.Errorf("GET /v1/audit/queriers: the answer is not an account of queriers: %w", err)
		}
		fmt.Fprintf(w, "queriers at %s: %d institutions\n", q.At, len(q.Institutions))
		if len(q.Institutions) == 0 {
			return nil
		}
		var rows [][]string
		for _, in := range q.Institutions {
			var purposes []string
			for p, n := range in.Purposes {
				purposes = append(purposes, p+" "+strconv.FormatUint(n, 10))
			}
			sort.Strings(purposes)
			var quotas []string
			for _, u := range in.Quotas {
				quotas = append(quotas, fmt.Sprintf("%d/%d per %s", u.Used, u.Limit, u.Per))
			}
			var flags []string
			for _, f := range in.Flags {
				flags = append(flags, f.Flag)
			}
			rows = append(rows, []string{in.Institution, strconv.FormatUint(in.Queries, 10), strconv.FormatUint(in.Refused, 10),
				strings.Join(purposes, ", "), strings.Join(quotas, ", "), strings.Join(flags, " ")})
		}
		fmt.Fprintln(w)
		return writeTable(w, "", []string{"INSTITUTION", "QUERIES", "REFUSED", "BY PURPOSE", "QUOTAS", "FLAGS"}, rows)
	}
	return cmd
}

// statsCommand is GET /v1/stats, printed as the API answers it.
func statsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats [flags]",
		Short: "The federation's statistics at a province or city node (aggregates, small counts suppressed).",
		Long: `Prints GET /v1/stats of a province or city node as JSON: records by domain,
polarity, severity and district; objections and repairs opened, resolved
and overdue; records reported more than 7 working days after their
decision; lookups and checks by purpose and institution. Counts from 1 to
4, and every total that would give one back, are null with
"suppressed": true. Coordinators and operators of the node's region.`,
		Example: `  credfed stats --demo credfed-demo`,
		Args:    noArgs,
	}
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		var raw json.RawMessage
		if _, err := c.Do(cmd.Context(), "GET", "/v1/stats", "", nil, &raw); err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), raw)
	}
	return cmd
}
