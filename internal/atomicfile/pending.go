package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Pending is a file being written in the place of another, for content too
// large to hold in memory: written to a temporary file beside path, it
// replaces path only at Commit (synced, renamed, directory synced), and
// Abort (or a failed Commit) removes it, leaving path as it was.
type Pending struct {
	path string
	tmp  *os.File
	done bool
}

// Create starts a Pending file that will replace path with mode perm.
func Create(path string, perm os.FileMode) (*Pending, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("atomicfile: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, fmt.Errorf("atomicfile: %w", err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("atomicfile: %w", err)
	}
	return &Pending{path: path, tmp: tmp}, nil
}

// Write writes to the temporary file.
func (p *Pending) Write(b []byte) (int, error) { return p.tmp.Write(b) }

// Commit syncs the temporary file and renames it over path.
func (p *Pending) Commit() error {
	if p.done {
		return fmt.Errorf("atomicfile: %s: already committed or aborted", p.path)
	}
	p.done = true
	err := p.tmp.Sync()
	if cerr := p.tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(p.tmp.Name(), p.path)
	}
	if err != nil {
		os.Remove(p.tmp.Name())
		return fmt.Errorf("atomicfile: write %s: %w", p.path, err)
	}
	return SyncDir(filepath.Dir(p.path))
}

// Abort removes the temporary file; path is left as it was. It is a no-op
// after Commit.
func (p *Pending) Abort() {
	if p.done {
		return
	}
	p.done = true
	p.tmp.Close()
	os.Remove(p.tmp.Name())
}
