package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/fault"
)

// backupNode is a node whose backup writes body, failing after it with
// fail (nil: succeeds), or refuses with refuse before it begins.
type backupNode struct {
	body   []byte
	fail   error
	refuse error
	// slow makes the backup take that long, checking its context after.
	slow time.Duration
}

func (b *backupNode) Federation(context.Context) (api.Federation, error) {
	return api.Federation{Node: api.NodeStatus{Region: "zhejiang/quzhou/kecheng"}}, nil
}

func (b *backupNode) Catalog() *credit.Catalog { return nil }

func (b *backupNode) Backup(ctx context.Context, _ certs.Identity, begin func(api.BackupInfo) io.Writer) (api.BackupInfo, error) {
	if b.refuse != nil {
		return api.BackupInfo{}, b.refuse
	}
	info := api.BackupInfo{ID: "0a0b", Region: "zhejiang/quzhou/kecheng", TakenAt: "2026-12-01T08:00:00Z"}
	w := begin(info)
	if b.slow > 0 {
		<-time.After(b.slow)
		if err := ctx.Err(); err != nil {
			return info, err
		}
	}
	if _, err := w.Write(b.body); err != nil {
		return info, err
	}
	if b.fail != nil {
		return info, b.fail
	}
	info.Bytes, info.Entries, info.Records, info.AuditHead = int64(len(b.body)), 7, 2, 9
	return info, nil
}

// serveBackup serves GET /v1/backup for an operator of region.
func serveBackup(t *testing.T, n *backupNode, region string) *httptest.Server {
	t.Helper()
	s := New(Config{Cluster: n})
	op := caller{id: certs.Identity{Federation: "demo", Role: certs.Operator, Region: region, Institution: "operations"}, authed: true}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As serveRoute does: a read deadline for the body.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if err := s.getBackup(w, r, op); err != nil {
			writeError(w, s.apiError(route{pattern: "/v1/backup"}, err))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func getBackupOf(t *testing.T, srv *httptest.Server) (*http.Response, []byte, error) {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + "/v1/backup")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// TestGetBackup: a whole backup comes with its headers and, after the
// body, its trailers; one that fails once begun is cut (the client reads
// an error, never a clean end); a refusal before it begins is an API
// error; an operator of another region is refused.
func TestGetBackup(t *testing.T) {
	body := bytes.Repeat([]byte("ciphertext"), 10000)
	resp, got, err := getBackupOf(t, serveBackup(t, &backupNode{body: body}, "zhejiang/quzhou/kecheng"))
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(got, body) {
		t.Fatalf("a whole backup: %d, %d bytes, %v", resp.StatusCode, len(got), err)
	}
	if resp.Header.Get(api.HeaderBackupID) != "0a0b" || resp.Header.Get("Content-Type") != "application/octet-stream" ||
		resp.Trailer.Get(api.TrailerBackupEntries) != "7" || resp.Trailer.Get(api.TrailerBackupBytes) != "100000" ||
		resp.Trailer.Get(api.TrailerBackupAuditHead) != "9" {
		t.Fatalf("headers %v, trailers %v", resp.Header, resp.Trailer)
	}

	// A stream longer than the read deadline of the request's body.
	resp, got, err = getBackupOf(t, serveBackup(t, &backupNode{body: body, slow: 200 * time.Millisecond}, "zhejiang/quzhou/kecheng"))
	if err != nil || !bytes.Equal(got, body) || resp.Trailer.Get(api.TrailerBackupEntries) != "7" {
		t.Fatalf("a backup outlasting the read deadline: %d bytes, %v", len(got), err)
	}

	resp, _, err = getBackupOf(t, serveBackup(t, &backupNode{body: body, fail: errors.New("disk error")}, "zhejiang/quzhou/kecheng"))
	if err == nil || resp.Trailer.Get(api.TrailerBackupEntries) != "" {
		t.Fatalf("a backup failing half-way ended cleanly: %v, trailers %v", err, resp.Trailer)
	}

	resp, got, err = getBackupOf(t, serveBackup(t, &backupNode{refuse: fault.New(fault.Forbidden, "no key")}, "zhejiang/quzhou/kecheng"))
	if err != nil || resp.StatusCode != http.StatusForbidden || !strings.Contains(string(got), `"forbidden"`) {
		t.Fatalf("a refused backup: %d %s %v", resp.StatusCode, got, err)
	}
	for _, region := range []string{"zhejiang", "zhejiang/quzhou", "zhejiang/quzhou/kecheng2"} {
		resp, got, _ = getBackupOf(t, serveBackup(t, &backupNode{body: body}, region))
		if resp.StatusCode != http.StatusForbidden || bytes.Contains(got, []byte("ciphertext")) {
			t.Fatalf("an operator of %s: %d %.80s", region, resp.StatusCode, got)
		}
	}
}
