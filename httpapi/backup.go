package httpapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
)

// Backups is a node's backup of its records database (node.Node). The API
// serves GET /v1/backup when Config.Cluster implements it.
type Backups interface {
	// Backup refuses what the node cannot back up (no encryption key, a
	// backup running already) and registers the backup in the audit log,
	// durably; then it calls begin with what the backup is and writes the
	// encrypted file to the writer begin returns, as it reads one snapshot
	// of the store, and returns what it wrote. An error before begin is a
	// refusal and nothing was written; after it, the stream is cut.
	Backup(ctx context.Context, operator certs.Identity, begin func(api.BackupInfo) io.Writer) (api.BackupInfo, error)
}

// backupWriteIdle bounds each write of the backup stream: a client that
// stops reading does not hold the node's snapshot open for long.
const backupWriteIdle = time.Minute

// A node's backup is taken by an operator of its own region.
func (s *Server) backupRoutes() []route {
	return []route{{method: "GET", pattern: "/v1/backup", access: roles(certs.Operator), handle: s.getBackup}}
}

// getBackup is GET /v1/backup: the node's records database, whole and
// consistent, encrypted with the node's key, streamed. Only an operator of
// this node's own region takes it: a backup holds every record of the
// district, and it does not leave the district's hands even encrypted
// (operators of regions above review the audit log, not the records).
// Headers say what the backup is; trailers, sent at the end of a whole
// file, what it held. A failure once the stream began resets it.
func (s *Server) getBackup(w http.ResponseWriter, r *http.Request, c caller) error {
	b, ok := s.cfg.Cluster.(Backups)
	if !ok {
		return fault.New(fault.Unavailable, "this node does not serve backups")
	}
	region, err := s.nodeRegion(r.Context())
	if err != nil {
		return err
	}
	if c.id.Region != region {
		return fault.New(fault.Forbidden, "the backup of %s is taken by an operator of %s, not by an operator of %s", region, region, c.id.Region)
	}
	rc := http.NewResponseController(w)
	// The request has no body, and a stream may take longer than the read
	// deadline serveRoute set: HTTP/1 would cancel the request's context
	// when its background read hit it.
	_ = rc.SetReadDeadline(time.Time{})
	began := false
	info, err := b.Backup(r.Context(), c.id, func(info api.BackupInfo) io.Writer {
		began = true
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.credfed-backup"`,
			strings.ReplaceAll(info.Region, "/", "-"), strings.NewReplacer(":", "", "-", "").Replace(info.TakenAt)))
		h.Set("Cache-Control", "no-store")
		h.Set(api.HeaderBackupID, info.ID)
		h.Set(api.HeaderBackupRegion, info.Region)
		h.Set(api.HeaderBackupTakenAt, info.TakenAt)
		h.Set("Trailer", strings.Join([]string{api.TrailerBackupBytes, api.TrailerBackupEntries,
			api.TrailerBackupRecords, api.TrailerBackupAuditHead}, ", "))
		w.WriteHeader(http.StatusOK)
		return deadlineWriter{w: w, rc: rc}
	})
	if !began {
		return err
	}
	if err != nil {
		// The headers went out: reset the stream rather than end it, so
		// that the client cannot take what it got for a whole file.
		s.log.Warn("backup cut short", "error_type", fmt.Sprintf("%T", err))
		panic(http.ErrAbortHandler)
	}
	h := w.Header()
	h.Set(api.TrailerBackupBytes, strconv.FormatInt(info.Bytes, 10))
	h.Set(api.TrailerBackupEntries, strconv.FormatUint(info.Entries, 10))
	h.Set(api.TrailerBackupRecords, strconv.FormatInt(info.Records, 10))
	h.Set(api.TrailerBackupAuditHead, strconv.FormatUint(info.AuditHead, 10))
	return nil
}

// deadlineWriter gives every write of the stream backupWriteIdle.
type deadlineWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(backupWriteIdle))
	return d.w.Write(p)
}
