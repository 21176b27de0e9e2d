package storage

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestEncryptionKeyMismatches(t *testing.T) {
	encDir, plainDir := t.TempDir(), t.TempDir()
	for _, o := range []Options{{Dir: encDir, EncryptionKey: testKey(1)}, {Dir: plainDir}} {
		o.GCInterval = -1
		db, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.SubmitRecords([]credit.Record{testRecord("K1", 1)}); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		opts Options
		want error
		msg  string
	}{
		{"wrong key", Options{Dir: encDir, EncryptionKey: testKey(2)}, ErrWrongKey,
			"encryption key does not match the one this data directory was created with"},
		{"shorter wrong key", Options{Dir: encDir, EncryptionKey: testKey(1)[:16]}, ErrWrongKey, "does not match"},
		{"missing key", Options{Dir: encDir}, ErrKeyRequired, "encrypted and no encryption key was given"},
		{"key on plain dir", Options{Dir: plainDir, EncryptionKey: testKey(1)}, ErrNotEncrypted, "created without encryption"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.opts.GCInterval = -1
			db, err := Open(c.opts)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, c.want) || !errors.Is(err, badger.ErrEncryptionKeyMismatch) {
				t.Fatalf("err = %v, want %v wrapping badger.ErrEncryptionKeyMismatch", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) || !strings.HasPrefix(err.Error(), "storage: open: ") {
				t.Fatalf("message %q lacks %q", err, c.msg)
			}
		})
	}
	// The right key still opens it after the failed attempts.
	db := openTest(t, Options{Dir: encDir, EncryptionKey: testKey(1)})
	if _, err := db.Record(testDept, "K1"); err != nil {
		t.Fatalf("Record with the right key: %v", err)
	}
	if _, err := Open(Options{Dir: t.TempDir(), EncryptionKey: []byte("short")}); !errors.Is(err, ErrBadKey) {
		t.Fatalf("5-byte key: err = %v, want ErrBadKey", err)
	}
}

// TestEncryptedAtRest looks for a subject's identifier in the write-ahead
// log, which Badger does not compress: it is there in clear without a key
// (the control) and absent with one.
func TestEncryptedAtRest(t *testing.T) {
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", enc), func(t *testing.T) {
			o := Options{}
			if enc {
				o.EncryptionKey = testKey(7)
			}
			db := openTest(t, o)
			r := testRecord("E1", 424242)
			mustSubmit(t, db, r)
			found := false
			files, _ := filepath.Glob(filepath.Join(db.raw.Opts().Dir, "*"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err == nil && bytes.Contains(b, []byte(r.Subject)) {
					found = true
				}
			}
			if found == enc {
				t.Fatalf("identifier found in clear on disk: %v, want %v", found, !enc)
			}
		})
	}
}

func TestLoadEncryptionKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := testKey(0xab)
	for _, n := range []int{16, 24, 32} {
		p := write(fmt.Sprintf("ok%d", n), "  "+hex.EncodeToString(key[:n])+"\n")
		got, err := LoadEncryptionKey(p)
		if err != nil || !bytes.Equal(got, key[:n]) {
			t.Fatalf("%d-byte key: %x, %v", n, got, err)
		}
	}
	bad := map[string]string{
		"31 bytes":     hex.EncodeToString(key[:31]),
		"odd digits":   hex.EncodeToString(key)[:63],
		"not hex":      strings.Repeat("zz", 32),
		"raw bytes":    string(key),
		"empty":        "",
		"two keys":     hex.EncodeToString(key) + "\n" + hex.EncodeToString(key),
		"huge":         strings.Repeat("0", 4096),
		"33 bytes hex": hex.EncodeToString(append(key, 1)),
	}
	for name, content := range bad {
		if _, err := LoadEncryptionKey(write("bad", content)); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: err = %v, want ErrBadKey", name, err)
		}
	}
	if _, err := LoadEncryptionKey(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}

	p := filepath.Join(dir, "new.key")
	k, err := WriteEncryptionKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if got, err := LoadEncryptionKey(p); err != nil || !bytes.Equal(got, k) || len(k) != 32 {
		t.Fatalf("round trip: %x vs %x, %v", got, k, err)
	}
	if _, err := WriteEncryptionKeyFile(p); !errors.Is(err, os.ErrExist) {
		t.Fatalf("overwrite: err = %v, want ErrExist", err)
	}
}

func TestLayoutVersionChecked(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(Options{Dir: dir, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Badger().Update(func(txn *badger.Txn) error { return txn.Set(metaLayoutKey, []byte("9")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(Options{Dir: dir, GCInterval: -1}); !errors.Is(err, ErrLayoutVersion) {
		t.Fatalf("err = %v, want ErrLayoutVersion", err)
	}
}

func TestPresetOptions(t *testing.T) {
	bo := Options{Dir: "/x", EncryptionKey: testKey(1)}.badgerOptions()
	if !bo.SyncWrites || bo.NumVersionsToKeep != 1 || bo.MemTableSize != 16<<20 ||
		bo.BlockCacheSize == 0 || bo.IndexCacheSize != 128<<20 || bo.NumCompactors != 2 ||
		bo.ValueLogFileSize != 64<<20 || !bytes.Equal(bo.EncryptionKey, testKey(1)) {
		t.Fatalf("preset = %+v", bo)
	}
	base := Options{Dir: "/x", baseline: true}.badgerOptions()
	if !base.SyncWrites || base.MemTableSize != badger.DefaultOptions("").MemTableSize || base.IndexCacheSize != 0 {
		t.Fatalf("baseline = %+v", base)
	}
	if o := (Options{Dir: "/x", IndexCacheSize: 3 << 20}).badgerOptions(); o.IndexCacheSize != 3<<20 {
		t.Fatalf("IndexCacheSize 3 MiB gave %d", o.IndexCacheSize)
	}
	// Encrypting, both caches are set whatever the preset (Badger panics
	// at the first memtable flush without an index cache).
	if enc := (Options{Dir: "/x", baseline: true, EncryptionKey: testKey(1)}).badgerOptions(); enc.IndexCacheSize == 0 || enc.BlockCacheSize == 0 {
		t.Fatalf("encrypted baseline = %+v", enc)
	}
}

func TestBadgerLogRedacted(t *testing.T) {
	var buf bytes.Buffer
	l := badgerLogger{slog.New(slog.NewTextHandler(&buf, nil))}
	id := testSubject(5)
	l.Errorf("Unable to read: Key: %v, Version : %v, err: %v\n", []byte("r/dept\x00"+id), 17, fmt.Errorf("key %s: %w", id, syscall.ENOSPC))
	l.Warningf("While running compact def: %+v. Error: %v", struct{ Left []byte }{[]byte(id)}, errors.New(id))
	l.Warningf("%s might be too small. Metrics: %s\n", "Block cache", "hits "+id)
	l.Infof("info %s", id)
	out := buf.String()
	if strings.Contains(out, id) || strings.Contains(out, hex.EncodeToString([]byte(id))) {
		t.Fatalf("identifier logged: %s", out)
	}
	for _, want := range []string{"level=ERROR", "Version : 17", "no space left on device", "level=WARN", "Block cache might be too small", "[redacted]"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "info") {
		t.Errorf("info line logged:\n%s", out)
	}
}

func TestEngineErrorsWithheld(t *testing.T) {
	id := testSubject(5)
	cause := fmt.Errorf("DB::Get key: %q err: checksum mismatch", "r/dept\x00"+id)
	err := fmt.Errorf("storage: record: %w", engine(cause))
	if strings.Contains(err.Error(), id) {
		t.Fatalf("identifier in error: %v", err)
	}
	if !errors.Is(err, cause) {
		t.Fatal("cause not reachable")
	}
	if err := engine(badger.ErrDBClosed); !errors.Is(err, badger.ErrDBClosed) || !strings.Contains(err.Error(), "DB Closed") {
		t.Fatalf("sentinel: %v", err)
	}
	if err := engine(ErrNotFound); err != ErrNotFound {
		t.Fatalf("own sentinel rewrapped: %v", err)
	}
}

func TestValueLogGC(t *testing.T) {
	// The loop runs often and must stop cleanly on Close.
	db := openTest(t, Options{GCInterval: 1})
	mustSubmit(t, db, testRecord("G1", 1))
	if err := db.CollectGarbage(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.CollectGarbage(); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	mem := openTest(t, Options{InMemory: true})
	if err := mem.CollectGarbage(); err != nil {
		t.Fatalf("in memory: %v", err)
	}
}

func TestOpenStateEncrypted(t *testing.T) {
	dir := t.TempDir()
	key := make([]byte, 32)
	key[0] = 7
	s, err := OpenState(Options{Dir: dir, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if s.Badger().Opts().SyncWrites || s.Badger().Opts().DetectConflicts {
		t.Fatal("the state database syncs or detects conflicts")
	}
	if err := s.Badger().Update(func(txn *badger.Txn) error { return txn.Set([]byte("x/test"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	other := make([]byte, 32)
	if _, err := OpenState(Options{Dir: dir, EncryptionKey: other}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
	s, err = OpenState(Options{Dir: dir, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Badger().View(func(txn *badger.Txn) error {
		_, err := txn.Get([]byte("x/test"))
		return err
	})
	if err != nil {
		t.Fatalf("value lost across close: %v", err)
	}
}
