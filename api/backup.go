package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// GET /v1/backup streams the node's backup file (application/octet-stream).
// What the backup is comes in the response's headers; what it held, in its
// trailers, sent only once the whole file is (their absence means the node
// cut the stream).
const (
	HeaderBackupID      = "Credfed-Backup-Id"
	HeaderBackupRegion  = "Credfed-Backup-Region"
	HeaderBackupTakenAt = "Credfed-Backup-Taken-At"

	TrailerBackupBytes     = "Credfed-Backup-Bytes"
	TrailerBackupEntries   = "Credfed-Backup-Entries"
	TrailerBackupRecords   = "Credfed-Backup-Records"
	TrailerBackupAuditHead = "Credfed-Backup-Audit-Head"
)

// BackupInfo is what a backup is and what it holds.
type BackupInfo struct {
	// ID is the backup's id (hex), Region the node's, TakenAt when the
	// snapshot was taken (RFC 3339).
	ID      string `json:"id"`
	Region  string `json:"region"`
	TakenAt string `json:"taken_at"`
	// Bytes is the file's size; Entries the key-value pairs of the store
	// in it, Records the records, AuditHead the last entry of the audit
	// chain.
	Bytes     int64  `json:"bytes"`
	Entries   uint64 `json:"entries"`
	Records   int64  `json:"records"`
	AuditHead uint64 `json:"audit_head"`
}

// ErrBackupIncomplete: the node's backup stream ended without its
// trailers: the node cut it, and what was received is not a whole backup.
var ErrBackupIncomplete = errors.New("api: the backup stream ended before the node said it was complete: the file is not a whole backup")

// Backup streams the node's backup (an operator of the node's region)
// into w and returns what it holds. The call's timeout bounds the wait for
// the node to start answering, not the stream, which ctx bounds. An error
// after the first byte leaves w with part of a file, which restore refuses:
// write to a temporary file and keep it only when Backup returns nil.
func (c *Client) Backup(ctx context.Context, w io.Writer) (*BackupInfo, error) {
	const path = "/v1/backup"
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	req.Header.Set("Accept", "application/octet-stream")
	// The client's timeout would cut a long stream: wait for the headers
	// that long, then only ctx.
	hc := *c.http
	hc.Timeout = 0
	wait := c.http.Timeout
	if wait <= 0 {
		wait = time.Minute
	}
	timer := time.AfterFunc(wait, cancel)
	resp, err := hc.Do(req)
	timer.Stop()
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, statusError("GET", path, resp.StatusCode, data)
	}
	info := &BackupInfo{ID: resp.Header.Get(HeaderBackupID), Region: resp.Header.Get(HeaderBackupRegion),
		TakenAt: resp.Header.Get(HeaderBackupTakenAt)}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading the backup after %d bytes: %w", path, n, err)
	}
	tr := resp.Trailer
	bytes, err1 := strconv.ParseInt(tr.Get(TrailerBackupBytes), 10, 64)
	entries, err2 := strconv.ParseUint(tr.Get(TrailerBackupEntries), 10, 64)
	records, err3 := strconv.ParseInt(tr.Get(TrailerBackupRecords), 10, 64)
	head, err4 := strconv.ParseUint(tr.Get(TrailerBackupAuditHead), 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, ErrBackupIncomplete)
	}
	if bytes != n {
		return nil, fmt.Errorf("GET %s: %w (the node sent %d bytes and says the file has %d)", path, ErrBackupIncomplete, n, bytes)
	}
	info.Bytes, info.Entries, info.Records, info.AuditHead = bytes, entries, records, head
	return info, nil
}
