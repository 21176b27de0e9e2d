package storage

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/credit"
)

// Options configures Open. The zero value of every field but Dir is usable.
type Options struct {
	// Dir is the data directory (created if missing). Required unless
	// InMemory is set.
	Dir string

	// InMemory keeps everything in memory (tests only): nothing is durable
	// and encryption is meaningless.
	InMemory bool

	// EncryptionKey turns on encryption at rest (AES-CTR by Badger, with
	// data keys rotated every 10 days and wrapped by this key). It must be
	// 16, 24 or 32 bytes (AES-128/192/256); see LoadEncryptionKey. A
	// directory created with a key can only be opened with the same key, and
	// a plain directory cannot be opened with one.
	EncryptionKey []byte

	// Logger receives Badger's warnings and errors (Badger's info and debug
	// output is dropped) and this package's own background-job warnings.
	// Arguments Badger formats into its messages are redacted except numbers,
	// because some of them are keys, which contain identifiers. nil discards.
	Logger *slog.Logger

	// GCInterval is how often the background value-log GC runs. Zero means
	// 10 minutes; a negative value disables the loop (call CollectGarbage).
	GCInterval time.Duration

	// Boundaries, when set, returns the days on which a record changes by
	// the passing of time alone (the node returns the end of its display
	// period; later days are chained by ReleaseDue's next). Each record
	// written (submitted or a new version) gets a due marker for each day,
	// in the same transaction (due.go). It depends on the catalog, so it
	// must be safe to call from the committer goroutine.
	Boundaries func(credit.Record) []credit.Date

	// IndexCacheSize bounds the cache of the tables' indexes, in bytes
	// (zero: 128 MiB). With encryption on, Badger keeps each table's
	// index (its blocks' offsets and its bloom filter) decrypted there,
	// and a table whose index is not cached has it read and decrypted
	// again at every read that touches it. Badger leaves the index of a
	// table that compaction removed in the cache until it is evicted, so
	// on a busy store the cache fills to its bound: it is a memory cost,
	// to be sized to the indexes of the live tables.
	IndexCacheSize int64

	// baseline selects badger.DefaultOptions (plus SyncWrites) instead of
	// the small-machine preset; benchmarks compare the two.
	baseline bool
}

// Small-machine preset (see doc.go for the reasoning). Its fixed budget is
// NumMemtables × (MemTableSize + 2 × 15 % batch arena) + block cache ≈
// 94 MiB, against ≈ 670 MiB plus unbounded table indexes with Badger's
// defaults, plus the index cache (128 MiB, filled on a busy store). With
// 16 MiB, at 10 M subjects (3 M records a district, 12 M index entries),
// lookups spent 72 % of a district's CPU decrypting table indexes again
// (docs/BENCHMARKS.md, "10 M index entries").
const (
	presetMemTableSize     = 16 << 20
	presetNumMemtables     = 3
	presetBlockCacheSize   = 32 << 20
	presetIndexCacheSize   = 128 << 20
	presetValueThreshold   = 16 << 10
	presetValueLogFileSize = 64 << 20
	presetNumCompactors    = 2
	presetNumGoroutines    = 2

	defaultGCInterval = 10 * time.Minute
	gcDiscardRatio    = 0.5
)

// badgerOptions returns the Badger options Open uses for o.
func (o Options) badgerOptions() badger.Options {
	dir := o.Dir
	if o.InMemory {
		dir = ""
	}
	var bo badger.Options
	if o.baseline {
		bo = badger.DefaultOptions(dir)
	} else {
		bo = badger.DefaultOptions(dir).
			WithMemTableSize(presetMemTableSize).
			WithNumMemtables(presetNumMemtables).
			WithBlockCacheSize(presetBlockCacheSize).
			WithIndexCacheSize(presetIndexCacheSize).
			WithValueThreshold(presetValueThreshold).
			WithValueLogFileSize(presetValueLogFileSize).
			WithNumCompactors(presetNumCompactors).
			WithNumGoroutines(presetNumGoroutines)
	}
	bo = bo.WithSyncWrites(true).
		// Badger's expvar metrics (counted on every get and put, some in
		// a map by level) are read by nothing here; only DB.Size needs
		// them, and it is not used.
		WithMetricsEnabled(false).
		WithNumVersionsToKeep(1).
		WithDetectConflicts(true).
		WithInMemory(o.InMemory).
		WithEncryptionKey(o.EncryptionKey).
		WithLogger(badgerLogger{o.logger()})
	if o.IndexCacheSize > 0 {
		bo = bo.WithIndexCacheSize(o.IndexCacheSize)
	}
	if len(o.EncryptionKey) > 0 {
		// Encrypting, Badger panics in Open without a block cache
		// (checkAndSetOptions) and at the first memtable flush without an
		// index cache (table.fetchIndex): set both whatever the preset.
		if bo.BlockCacheSize == 0 {
			bo = bo.WithBlockCacheSize(presetBlockCacheSize)
		}
		if bo.IndexCacheSize == 0 {
			bo = bo.WithIndexCacheSize(presetIndexCacheSize)
		}
	}
	return bo
}

// indexCacheCounts returns the hits and misses of db's index cache (zero
// without one).
func indexCacheCounts(db *badger.DB) (hits, misses uint64) {
	m := db.IndexCacheMetrics() // nil without a cache, and its methods say 0
	return m.Hits(), m.Misses()
}

// IndexCacheCounts returns the hits and misses of the store's index cache
// since it opened (Options.IndexCacheSize): misses that keep growing as
// fast as reads mean the cache is smaller than the tables' indexes.
func (db *DB) IndexCacheCounts() (hits, misses uint64) { return indexCacheCounts(db.raw) }

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func validKeyLen(n int) bool { return n == 16 || n == 24 || n == 32 }

// maxKeyFile bounds what LoadEncryptionKey reads.
const maxKeyFile = 1024

// LoadEncryptionKey reads an encryption key file: the key written as hex
// (32, 48 or 64 hex digits for AES-128/192/256), surrounding whitespace
// ignored, e.g. made with `openssl rand -hex 32 > key`. Hex was chosen over
// raw bytes so that the file survives copy-paste, editors and secret stores
// that expect text. Anything else is refused with ErrBadKey. Keep the file
// readable by the node's user only (0600).
func LoadEncryptionKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("storage: load encryption key: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("storage: load encryption key: %w", err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("storage: load encryption key %s: %w", path, ErrBadKey)
	}
	s := strings.TrimSpace(string(b))
	key, err := hex.DecodeString(s)
	if err != nil || !validKeyLen(len(key)) {
		return nil, fmt.Errorf("storage: load encryption key %s: %w", path, ErrBadKey)
	}
	return key, nil
}

// WriteEncryptionKeyFile creates path (which must not exist) with a new
// random 32-byte key in hex, mode 0600, and returns the key.
func WriteEncryptionKeyFile(path string) ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("storage: write encryption key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storage: write encryption key: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("storage: write encryption key: %w", err)
	}
	return key, nil
}

// badgerLogger bridges Badger's logger to slog at WARNING and above.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(redactf(f, a)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(redactf(f, a)) }
func (badgerLogger) Infof(string, ...any)          {}
func (badgerLogger) Debugf(string, ...any)         {}

// redacted stands in for a withheld log argument whatever the verb.
type redacted struct{}

func (redacted) Format(s fmt.State, _ rune) { io.WriteString(s, "[redacted]") }

// redactf formats a Badger log line keeping only arguments that cannot
// carry an identifier: numbers, booleans, durations, OS error numbers and
// short purely alphabetic words (cache names and the like).
func redactf(format string, args []any) string {
	safe := make([]any, len(args))
	for i, a := range args {
		safe[i] = safeArg(a)
	}
	return "badger: " + strings.TrimRight(fmt.Sprintf(format, safe...), "\n")
}

func safeArg(a any) any {
	switch v := a.(type) {
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64,
		float32, float64, bool, time.Duration:
		return v
	case string:
		if len(v) <= 32 && isWords(v) {
			return v
		}
	case error:
		var errno syscall.Errno
		if errors.As(v, &errno) {
			return errno.Error()
		}
	}
	return redacted{}
}

func isWords(s string) bool {
	return s != "" && bytes.IndexFunc([]byte(s), func(r rune) bool {
		return !(r == ' ' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) < 0
}
