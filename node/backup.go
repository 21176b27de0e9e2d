package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"credfed/api"
	"credfed/audit"
	"credfed/certs"
	"credfed/fault"
	"credfed/storage"
)

// Backups (docs/operations.md, "Back up and restore"). The node writes
// its own backups, encrypted with its encryption-at-rest key: an operator
// certificate alone then yields ciphertext, and nothing of the store
// crosses the API in the clear. A node without a key writes none (a
// refusal, audited): encrypting with a key the caller sends would put the
// store's key in the caller's hands and on the wire, and an unencrypted
// backup would hold every record in the clear. One backup runs at a time.

// backupBusy is held while a node of this process writes a backup; the
// map is by node, so that the nodes of one process (the demo, tests) do not
// wait for each other.
var backupBusy sync.Map // *Node → struct{}

// Backup is GET /v1/backup (httpapi.Backups): refusals before begin,
// then the stream of one snapshot. The backup is in the audit log, durably,
// before its first byte is written.
func (n *Node) Backup(ctx context.Context, operator certs.Identity, begin func(api.BackupInfo) io.Writer) (api.BackupInfo, error) {
	e := audit.By(operator, "backup")
	deny := func(f *fault.Error) (api.BackupInfo, error) {
		e.Decision, e.Reason = storage.DecisionDenied, string(f.Kind)
		if err := n.audit.Record(e); err != nil {
			return api.BackupInfo{}, err
		}
		return api.BackupInfo{}, f
	}
	key, err := n.encryptionKey()
	if err != nil {
		return api.BackupInfo{}, err
	}
	if len(key) == 0 {
		return deny(fault.New(fault.Forbidden, "this node keeps its store unencrypted (no encryption_key_file), and it writes no backups: "+
			"a backup is encrypted with the node's encryption key, so that it never holds the records in the clear"))
	}
	if _, busy := backupBusy.LoadOrStore(n, struct{}{}); busy {
		return deny(fault.New(fault.Unavailable, "a backup of this node is being written already; take this one when it is done"))
	}
	defer backupBusy.Delete(n)
	id, err := newBackupID()
	if err != nil {
		return api.BackupInfo{}, err
	}
	takenAt := time.Now().UTC()
	info := api.BackupInfo{ID: hex.EncodeToString(id[:]), Region: n.cfg.Region, TakenAt: takenAt.Format(time.RFC3339Nano)}
	e.Decision, e.Reference = storage.DecisionAllowed, "backup "+info.ID
	if err := n.audit.Record(e); err != nil {
		return api.BackupInfo{}, err
	}
	w := begin(info)
	start := time.Now()
	sum, err := n.db.WriteBackup(ctx, w, storage.BackupOptions{Key: key, Federation: n.cfg.Federation, Region: n.cfg.Region,
		TakenAt: takenAt, ID: id})
	if err != nil {
		n.log.Warn("backup cut short", "backup", info.ID, "error", err)
		return info, err
	}
	info.Bytes, info.Entries, info.Records, info.AuditHead = sum.FileBytes, sum.Trailer.Entries, sum.Trailer.Records, sum.Trailer.AuditSeq
	n.log.Info("backup written", "backup", info.ID, "bytes", info.Bytes, "entries", info.Entries, "records", info.Records,
		"audit_head", info.AuditHead, "took", time.Since(start).Round(time.Millisecond))
	return info, nil
}

func newBackupID() ([16]byte, error) {
	var id [16]byte
	_, err := rand.Read(id[:])
	return id, err
}

// RestoreOptions are the choices of a restore beyond the configuration.
type RestoreOptions struct {
	// DataDir replaces the configuration's data_dir (restore into another
	// directory, e.g. a new disk, then point the configuration at it).
	DataDir string
	// Now dates the restore (nil: time.Now).
	Now func() time.Time
}

// Restore restores a backup file into the node's store directory
// (data_dir/db), offline: the node is stopped and the directory absent or
// empty. The Raft log and state (data_dir/raft, data_dir/state) are not in
// a backup: a restored node catches up through Raft when it starts, and its
// first start must reach the leader (it checks the restored audit log
// against the federation's anchors). Errors are storage's typed ones:
// storage.ErrRestoreNotEmpty, ErrBackupFormat, ErrBackupWrongKey,
// ErrBackupOtherNode, ErrBackupCorrupt, ErrBackupTruncated,
// ErrBackupKeyRequired.
func Restore(cfg Config, from string, opts RestoreOptions) (storage.RestoreSummary, error) {
	var sum storage.RestoreSummary
	cfg = cfg.withDefaults()
	if opts.DataDir != "" {
		cfg.DataDir = opts.DataDir
	}
	if cfg.DataDir == "" || cfg.Region == "" {
		return sum, fieldErr("data_dir", "the configuration names no data directory or region")
	}
	if cfg.EncryptionKeyFile == "" {
		return sum, fmt.Errorf("node: restore: %w", storage.ErrBackupKeyRequired)
	}
	key, err := storage.LoadEncryptionKey(cfg.EncryptionKeyFile)
	if err != nil {
		return sum, fmt.Errorf("node: encryption_key_file: %w", err)
	}
	f, err := os.Open(from)
	if err != nil {
		return sum, fmt.Errorf("node: restore: %w", err)
	}
	defer f.Close()
	sum, err = storage.Restore(storage.RestoreOptions{From: f, Dir: filepath.Join(cfg.DataDir, "db"), Key: key,
		Federation: cfg.Federation, Region: cfg.Region, Now: opts.Now})
	if err != nil {
		return sum, fmt.Errorf("node: %w", err)
	}
	return sum, nil
}
