package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"credfed/internal/atomicfile"
	"credfed/node"
)

func backupCommand() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out FILE [flags]",
		Short: "Take a backup of a running node's records database, encrypted, into FILE.",
		Long: `Asks a running node for a backup of its records database: records and their
versions, the outbox, the audit log, objections and repairs, everything in
it, as one consistent snapshot taken while the node serves. The node encrypts
the backup with its own encryption key (encryption_key_file) in authenticated
chunks, so the file is useless without that key and any change to it is
detected; a node without an encryption key refuses (it writes no backups in
the clear). The Raft log and state are not in a backup: a restored node
catches up through Raft.

Only an operator of the node's own region takes its backup. The backup is in
the node's audit log (operation "backup", with the operator). FILE is written
under a temporary name and renamed into place only once the node has sent
the whole file, so a cut stream leaves no partial backup. Keep backups and
encryption keys apart: each is useless without the other.

Restore a backup with credfed restore, the node stopped.`,
		Example: `  credfed backup --out kecheng-2026-12-01.credfed-backup \
    --addr https://127.0.0.1:8443 --ca ca.pem --cert operator.pem --key operator-key.pem
  credfed backup --demo credfed-demo --out province.credfed-backup`,
		Args: noArgs,
	}
	cmd.Flags().StringVar(&out, "out", "", "the backup `FILE` to write (replaced if it exists, mode 0600)")
	_ = cmd.MarkFlagFilename("out")
	conn := addConnectionFlags(cmd, "operator")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if out == "" {
			return usageErrorf("backup needs --out FILE")
		}
		c, err := conn.client()
		if err != nil {
			return err
		}
		defer c.CloseIdle()
		f, err := atomicfile.Create(out, 0o600)
		if err != nil {
			return err
		}
		defer f.Abort()
		info, err := c.Backup(context.Background(), f)
		if err != nil {
			return err
		}
		if err := f.Commit(); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "backup %s of %s taken at %s: %d bytes, %d entries (%d records, audit log to entry %d) written to %s\n",
			info.ID, info.Region, info.TakenAt, info.Bytes, info.Entries, info.Records, info.AuditHead, out)
		return nil
	}
	return cmd
}

func restoreCommand() *cobra.Command {
	var from, config, dataDir string
	cmd := &cobra.Command{
		Use:   "restore --from FILE --config FILE [--data-dir DIR]",
		Short: "Restore a backup into a stopped node's empty data directory, offline.",
		Long: `Restores a backup taken with credfed backup into the node's store directory
(data_dir/db of the configuration, or of --data-dir), with the node stopped.

It refuses, changing nothing, a store directory that is not absent or empty,
a file that is not a backup, a backup of another node, or one written with
another encryption key. It decrypts and authenticates every chunk as it loads
them into a directory beside the store's, checks the entry count and the
audit chain, and renames it into place only then: a damaged or cut file
leaves nothing behind. The restore then marks every subject of the store for
publishing (the index may point at records the backup predates) and records
itself in the store.

The Raft log and state (data_dir/raft, data_dir/state) are not in a backup:
start the node as usual and it catches up through Raft. Its first start must
reach the Raft leader: the audit log ends at the backup, before the anchors
the node made in Raft since, and the node accepts that only because of the
restore (it says so in its log, and writes the restore into its audit log).
What the district recorded after the backup is lost from it: its
departments submit those records again.`,
		Example: `  credfed restore --from kecheng-2026-12-01.credfed-backup --config /etc/credfed/node.yaml
  credfed restore --from province.credfed-backup --config credfed-demo/nodes/zhejiang/node.yaml --data-dir restored`,
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&from, "from", "", "the backup `FILE` to restore")
	fs.StringVar(&config, "config", "", "the node's YAML configuration `FILE` (its data_dir, region and encryption_key_file)")
	fs.StringVar(&dataDir, "data-dir", "", "restore into this data directory `DIR` instead of the configuration's data_dir")
	_ = cmd.MarkFlagFilename("from")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	_ = cmd.MarkFlagDirname("data-dir")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if from == "" || config == "" {
			return usageErrorf("restore needs --from FILE and --config FILE")
		}
		cfg, err := node.LoadConfig(config)
		if err != nil {
			return err
		}
		if dataDir != "" {
			if dataDir, err = filepath.Abs(dataDir); err != nil {
				return err
			}
		}
		sum, err := node.Restore(cfg, from, node.RestoreOptions{DataDir: dataDir})
		if err != nil {
			return err
		}
		dir := cfg.DataDir
		if dataDir != "" {
			dir = dataDir
		}
		m := sum.Marker
		fmt.Fprintf(cmd.OutOrStdout(), "restored backup %s of %s taken at %s into %s: %d entries (%d records, audit log to entry %d), %d subjects marked for publishing\n",
			m.Backup, m.Region, m.TakenAt.UTC().Format(time.RFC3339), filepath.Join(dir, "db"), m.Entries, m.Records, m.AuditSeq, m.Subjects)
		fmt.Fprintln(cmd.OutOrStdout(), "start the node: it catches up through Raft (its first start must reach the Raft leader)")
		return nil
	}
	return cmd
}
