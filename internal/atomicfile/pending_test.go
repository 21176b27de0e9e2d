package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPendingReplacesOnlyAtCommit: the old content stays until Commit;
// Abort leaves it and no temporary file.
func TestPendingReplacesOnlyAtCommit(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "backup")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Create(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write([]byte("new, in parts")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("before commit: %q", b)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	p.Abort() // a no-op after Commit
	if b, _ := os.ReadFile(path); string(b) != "new, in parts" {
		t.Fatalf("after commit: %q", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	q, err := Create(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Write([]byte("cut short")); err != nil {
		t.Fatal(err)
	}
	q.Abort()
	if b, _ := os.ReadFile(path); string(b) != "new, in parts" {
		t.Fatalf("after abort: %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}
