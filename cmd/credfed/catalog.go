package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"credfed/api"
	"credfed/credit"
)

func catalogCommand() *cobra.Command {
	return groupCommand("catalog", "Show the federation's catalog, compare a new version with it, publish it.",
		catalogShowCommand(), catalogDiffCommand(), catalogApplyCommand())
}

func catalogShowCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "show [flags]",
		Short:   "Show the catalog the node holds: its version, items, purposes, lists and scenarios.",
		Example: `  credfed catalog show --demo credfed-demo`,
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
		cat, err := c.Catalog(cmd.Context())
		if err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if asJSON {
			return printJSONValue(w, cat)
		}
		fmt.Fprintf(w, "catalog version %d: %d items, %d purposes, %d lists, %d scenarios, %d classification rules\n\n",
			cat.Version, len(cat.Items), len(cat.Purposes), len(cat.Lists), len(cat.Scenarios), len(cat.Rules))
		var rows [][]string
		for _, s := range cat.Scenarios {
			rows = append(rows, []string{"scenario", s.Code, s.Name, "purpose " + s.Purpose})
		}
		for _, l := range cat.Lists {
			rows = append(rows, []string{"list", l.Code, l.Name, string(l.Kind)})
		}
		for _, p := range cat.Purposes {
			rows = append(rows, []string{"purpose", p.Code, p.Name, strings.Join(p.Roles, " ")})
		}
		return writeTable(w, "", []string{"KIND", "CODE", "NAME", "NOTE"}, rows)
	}
	return cmd
}

// loadCatalogFile reads a catalog version from a YAML file.
func loadCatalogFile(path string) (*credit.Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cat, err := credit.LoadCatalogYAML(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cat, nil
}

func catalogDiffCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff FILE [flags]",
		Short: "Compare a new catalog version (YAML) with the node's: changes and conflicts.",
		Long: `Loads FILE (the YAML form of credit/default_catalog.yaml), validates it, and
lists what it changes from the catalog the node holds, entry by entry, then
the conflicts that would make credfed catalog apply refuse it: a dropped
item, or an item whose period is shortened or whose disclosure, polarity,
severity, subject kind or lists change under the records collected with it
(add a new item instead). Exits 1 when there are conflicts.`,
		Example: `  credfed catalog diff --demo credfed-demo catalog-v2.yaml`,
		Args:    exactArgs(1, "FILE"),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the changes and conflicts as JSON")
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		next, err := loadCatalogFile(args[0])
		if err != nil {
			return err
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		cur, err := c.Catalog(cmd.Context())
		if err != nil {
			return err
		}
		old := api.CatalogOf(cur)
		changes, conflicts := credit.DiffCatalogs(old, next), credit.StrandingConflicts(old, next)
		w := cmd.OutOrStdout()
		if asJSON {
			if err := printJSONValue(w, map[string]any{"from": old.Version, "to": next.Version, "changes": changes, "conflicts": conflicts}); err != nil {
				return err
			}
		} else if err := printCatalogDiff(w, old.Version, next.Version, changes, conflicts); err != nil {
			return err
		}
		if len(conflicts) > 0 {
			return fmt.Errorf("%d conflicts: credfed catalog apply would refuse version %d", len(conflicts), next.Version)
		}
		return nil
	}
	return cmd
}

func printCatalogDiff(w io.Writer, from, to int, changes []credit.CatalogChange, conflicts []credit.CatalogConflict) error {
	fmt.Fprintf(w, "catalog version %d → %d: %d changes, %d conflicts\n", from, to, len(changes), len(conflicts))
	if to != from+1 {
		fmt.Fprintf(w, "note: the next version is %d; apply refuses %d\n", from+1, to)
	}
	if len(changes) > 0 {
		var rows [][]string
		for _, c := range changes {
			rows = append(rows, []string{c.Change, c.Kind, c.Code, strings.Join(c.Fields, " ")})
		}
		fmt.Fprintln(w)
		if err := writeTable(w, "", []string{"CHANGE", "KIND", "CODE", "FIELDS"}, rows); err != nil {
			return err
		}
	}
	if len(conflicts) > 0 {
		var rows [][]string
		for _, c := range conflicts {
			rows = append(rows, []string{c.Item, c.Field, c.Message})
		}
		fmt.Fprintln(w)
		return writeTable(w, "", []string{"ITEM", "FIELD", "CONFLICT"}, rows)
	}
	return nil
}

func catalogApplyCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "apply FILE [flags]",
		Short: "Publish the next catalog version (YAML) through Raft (operator of the province).",
		Long: `Publishes FILE as the federation's next catalog version: it must validate,
be the current version plus one, and strand no record (credfed catalog diff
shows the conflicts). Every node then holds the new version; records keep
the version they were collected under. Applying a version already
published is refused as a conflict, so a repeat changes nothing.`,
		Example: `  credfed catalog apply --demo credfed-demo --as operator catalog-v2.yaml`,
		Args:    exactArgs(1, "FILE"),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON answer")
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		next, err := loadCatalogFile(args[0])
		if err != nil {
			return err
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		out, err := c.PublishCatalog(cmd.Context(), next)
		if err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if asJSON {
			return printJSONValue(w, out)
		}
		_, err = fmt.Fprintf(w, "catalog version %s published: %d changes\n", strconv.Itoa(out.Version), len(out.Changes))
		return err
	}
	return cmd
}
