package systemtest

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/fxamacker/cbor/v2"

	"credfed/api"
	"credfed/credit"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// TestAuditAnchorsCatchRewrittenLogs: districts anchor their audit heads
// in Raft as they go and when they stop cleanly. Someone with a stopped
// district's data directory (and its key) then removes the last entries
// and rewinds the head at one district, and rewrites an entry and
// re-hashes the chain to the head at the other: each chain still verifies
// on its own, but the district refuses to start, saying how its log
// differs from its anchors, and `credfed audit verify` names the first bad
// entry and exits 1. On the way, GET /v1/audit serves a district's
// entries to an operator, filtered and paged, and to nobody else.
func TestAuditAnchorsCatchRewrittenLogs(t *testing.T) {
	skipUnderRace(t, "restarts nodes over tampered stores, one step at a time")
	dir := t.TempDir()
	spec := localfed.Spec{Dir: dir, Districts: 2, Encrypt: true}
	l, err := localfed.Create(spec)
	if err != nil {
		t.Fatal(err)
	}
	districts := l.Districts()
	// Anchor every 4 entries, so that each district has anchors before
	// the one it makes at its stop.
	for _, d := range districts {
		ln, _ := l.Node(d)
		f, err := os.OpenFile(ln.ConfigPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("\naudit_anchor_entries: 4\n"); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	f := startFed(t, spec, node.Options{})
	truncated, rewritten := districts[0], districts[1]
	subject := credit.SyntheticPerson(7171, credit.NewDate(1975, 3, 9))
	for i, d := range districts {
		submit(t, f, d, record(fmt.Sprintf("AN-%d", i), subject, "FOOD-DRUG-PENALTY", "anchored"))
	}
	waitIndexed(t, f, subject, 2)
	coord := coordinator(t, f)
	for i := 0; i < 10; i++ {
		req := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "审计员", Reference: fmt.Sprintf("许可〔2026〕%d号", 100+i)}
		if _, err := lookupUntil(t, coord, req); err != nil {
			t.Fatal(err)
		}
	}

	checkAuditReview(t, f, truncated, pseudonymOf(t, f, subject).String())

	// Stopped cleanly, each district anchored its head: the offline check
	// passes and the newest anchor is the head.
	bin := buildCredfed(t)
	for _, d := range districts {
		if err := f.StopNode(ctxT(t, 30*time.Second), d); err != nil {
			t.Fatal(err)
		}
		v := verifyOffline(t, f, d)
		if v.Mismatch != nil || len(v.Anchors) < 2 || v.Anchors[len(v.Anchors)-1].Seq != v.Head || v.Head < 8 {
			t.Fatalf("%s after a clean stop: head %d, %d anchors %+v, mismatch %v", d, v.Head, len(v.Anchors), v.Anchors, v.Mismatch)
		}
		out, code := runCredfed(t, bin, "audit", "verify", "--demo", dir, "--node", d)
		if code != 0 || !strings.Contains(out, "OK: head entry "+fmt.Sprint(v.Head)) || !strings.Contains(out, fmt.Sprintf("newest anchor entry %d", v.Head)) {
			t.Fatalf("audit verify of %s after a clean stop: exit %d\n%s", d, code, out)
		}
	}

	// Truncate: the last two entries removed, the head rewound.
	v := verifyOffline(t, f, truncated)
	head := v.Head
	tamperStore(t, f, truncated, func(db *badger.DB) {
		last := rawEntry(t, db, head-2)
		if err := db.Update(func(txn *badger.Txn) error {
			for s := head - 1; s <= head; s++ {
				e := rawEntry(t, db, s)
				if e.Subject != "" {
					if err := txn.Delete(auditSubjectKey(e.Subject, s)); err != nil {
						return err
					}
				}
				if err := txn.Delete(auditKey(s)); err != nil {
					return err
				}
			}
			return txn.Set([]byte("a!head"), encode(t, chainHead{Seq: head - 2, Hash: last.Hash}))
		}); err != nil {
			t.Fatal(err)
		}
	})
	// Edit and re-hash: the entry after the second newest anchor changed,
	// every entry from it to the head re-hashed, the head rewritten.
	v = verifyOffline(t, f, rewritten)
	first := v.Anchors[len(v.Anchors)-2].Seq + 1
	tamperStore(t, f, rewritten, func(db *badger.DB) {
		e := rawEntry(t, db, first-1)
		prev := e.Hash
		if err := db.Update(func(txn *badger.Txn) error {
			for s := first; s <= v.Head; s++ {
				e := rawEntry(t, db, s)
				if s == first {
					e.User = "nobody"
				}
				e.Prev, e.Hash = prev, [32]byte{}
				body := encode(t, e)
				e.Hash = sha256.Sum256(append(prev[:], body...))
				if err := txn.Set(auditKey(s), encode(t, e)); err != nil {
					return err
				}
				prev = e.Hash
			}
			return txn.Set([]byte("a!head"), encode(t, chainHead{Seq: v.Head, Hash: prev}))
		}); err != nil {
			t.Fatal(err)
		}
	})

	for _, c := range []struct {
		district, kind string
		first          uint64
	}{{truncated, "truncated", head - 1}, {rewritten, "rewritten", first}} {
		// The chain alone verifies: only the anchors show the change.
		if err := chainOf(t, f, c.district); err != nil {
			t.Fatalf("%s: the tampered chain does not verify on its own (%v): the test tampers clumsily", c.district, err)
		}
		want := fmt.Sprintf("(%s): first bad entry %d", c.kind, c.first)
		err := f.StartNode(c.district)
		if err == nil {
			t.Fatalf("%s started with a %s audit log", c.district, c.kind)
		}
		if !strings.Contains(err.Error(), "does not match its anchors in Raft "+want) || !strings.Contains(err.Error(), "refuses to start") {
			t.Fatalf("%s: start refused with %q, want it to say %q", c.district, err, want)
		}
		out, code := runCredfed(t, bin, "audit", "verify", "--demo", dir, "--node", c.district)
		if code != 1 || !strings.Contains(out, want) {
			t.Fatalf("audit verify of %s: exit %d, want 1 saying %q:\n%s", c.district, code, want, out)
		}
		t.Logf("%s: %s", c.district, strings.TrimSpace(out))
	}
}

// checkAuditReview: GET /v1/audit at district d, for the province's
// operator: filtered by operation and pseudonym, paged; refused to a
// department and to an identifier given as the pseudonym.
func checkAuditReview(t *testing.T, f *localfed.Federation, d, pseudonym string) {
	t.Helper()
	n := f.Node(d)
	get := func(files localfed.ClientFiles, query string) (int, []byte) {
		t.Helper()
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig(t, f, files)}, Timeout: 30 * time.Second}
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://" + n.APIAddr() + "/v1/audit?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	var seen []uint64
	cursor := ""
	for pages := 0; pages < 20; pages++ {
		q := "operation=lookup.answer&pseudonym=" + pseudonym + "&limit=3"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		status, body := get(f.Layout.Operator, q)
		var page api.AuditPage
		if status != http.StatusOK || json.Unmarshal(body, &page) != nil || page.Node != regionOf(f, d) || len(page.Entries) > 3 {
			t.Fatalf("GET /v1/audit as the operator: %d %s", status, body)
		}
		for _, e := range page.Entries {
			if e.Operation != "lookup.answer" || e.Subject != pseudonym || len(e.Hash) != 64 {
				t.Fatalf("an entry the filter does not select: %+v", e)
			}
			seen = append(seen, e.Seq)
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	if len(seen) < 10 {
		t.Fatalf("the operator saw %d answered lookups of the subject at %s, want the 10 asked: %v", len(seen), d, seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("pages out of order or repeated: %v", seen)
		}
	}
	if status, body := get(f.Layout.Departments[d], "limit=1"); status != http.StatusForbidden {
		t.Fatalf("GET /v1/audit as a department: %d %s", status, body)
	}
	id := credit.SyntheticPerson(7171, credit.NewDate(1975, 3, 9))
	if status, body := get(f.Layout.Operator, "pseudonym="+id); status != http.StatusBadRequest || strings.Contains(string(body), id) {
		t.Fatalf("an identifier as the pseudonym: %d %s", status, body)
	}
}

// buildCredfed builds the credfed binary.
func buildCredfed(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "credfed")
	if out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "credfed/cmd/credfed").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runCredfed runs the binary and returns its output and exit status.
func runCredfed(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func nodeConfig(t *testing.T, f *localfed.Federation, name string) node.Config {
	t.Helper()
	ln, _ := f.Layout.Node(name)
	cfg, err := node.LoadConfig(ln.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func verifyOffline(t *testing.T, f *localfed.Federation, name string) node.AuditVerification {
	t.Helper()
	v, err := node.VerifyAudit(nodeConfig(t, f, name))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// openStore opens a stopped node's records store, as someone holding its
// data directory and key could.
func openStore(t *testing.T, f *localfed.Federation, name string) *storage.DB {
	t.Helper()
	cfg := nodeConfig(t, f, name)
	key, err := storage.LoadEncryptionKey(cfg.EncryptionKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(storage.Options{Dir: filepath.Join(cfg.DataDir, "db"), EncryptionKey: key, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// tamperStore writes into a stopped node's store behind its back.
func tamperStore(t *testing.T, f *localfed.Federation, name string, tamper func(db *badger.DB)) {
	t.Helper()
	db := openStore(t, f, name)
	tamper(db.Badger())
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// chainOf verifies a stopped node's chain on its own (AuditLog.Verify).
func chainOf(t *testing.T, f *localfed.Federation, name string) error {
	t.Helper()
	db := openStore(t, f, name)
	defer db.Close()
	return db.Audit().Verify()
}

// The audit log's layout, as storage/keys.go documents it: what a
// tamperer who read the source would write.
func auditKey(seq uint64) []byte {
	return append([]byte("a/"), be64(seq)...)
}

func auditSubjectKey(pseudonym string, seq uint64) []byte {
	return append(append([]byte("A/"+pseudonym), 0), be64(seq)...)
}

func be64(v uint64) []byte {
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}

type chainHead struct {
	Seq  uint64   `cbor:"1,keyasint"`
	Hash [32]byte `cbor:"2,keyasint"`
}

// encMode is storage's encoding: core deterministic, times as RFC 3339
// strings.
var encMode = func() cbor.EncMode {
	o := cbor.CoreDetEncOptions()
	o.Time, o.TimeTag = cbor.TimeRFC3339Nano, cbor.EncTagNone
	m, err := o.EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

func encode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawEntry(t *testing.T, db *badger.DB, seq uint64) storage.AuditEntry {
	t.Helper()
	var e storage.AuditEntry
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(auditKey(seq))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return cbor.Unmarshal(v, &e) })
	})
	if err != nil {
		t.Fatalf("entry %d: %v", seq, err)
	}
	return e
}
