package node

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"credfed/certs"
	"credfed/credit"
	"credfed/queriers"
)

// Config is everything a node needs to run. docs/config.md documents each
// field; the zero value of every optional field is the default that
// withDefaults fills in.
type Config struct {
	// Federation is the federation's name, as in every certificate's URI.
	Federation string `yaml:"federation"`
	// Role is province, city or district.
	Role certs.Role `yaml:"role"`
	// Region is the node's region path, e.g. zhejiang/quzhou/kecheng.
	Region string `yaml:"region"`
	// Name is a display name (e.g. 柯城区); default: the region's last part.
	Name string `yaml:"name,omitempty"`
	// DataDir holds the Badger database, the Raft log and snapshots.
	DataDir string `yaml:"data_dir"`
	// TestMode accepts identifiers of the reserved test province 99 and
	// refuses nothing else differently. Never in production.
	TestMode bool `yaml:"test_mode,omitempty"`
	// TestOnly accepts identifiers of the reserved test province 99 and
	// refuses real ones, so that no real person's record can enter the
	// federation (the demo runs so). It implies TestMode.
	TestOnly bool `yaml:"test_only,omitempty"`

	Listen    ListenConfig    `yaml:"listen"`
	Advertise AdvertiseConfig `yaml:"advertise,omitempty"`
	TLS       TLSConfig       `yaml:"tls"`
	// Metrics configures the metrics listener beyond its address.
	Metrics MetricsConfig `yaml:"metrics,omitempty"`
	// API bounds what the HTTPS API holds for its clients.
	API APIConfig `yaml:"api,omitempty"`

	// Checks tunes checks and batch checks (coordinators).
	Checks ChecksConfig `yaml:"checks,omitempty"`

	// EncryptionKeyFile holds the AES key (hex) that encrypts the data
	// directory at rest; empty leaves it unencrypted.
	EncryptionKeyFile string `yaml:"encryption_key_file,omitempty"`
	// PseudonymKeyFile holds the federation's pseudonym key; coordinators
	// (province, city) only — a district refuses to start with one.
	PseudonymKeyFile string `yaml:"pseudonym_key_file,omitempty"`

	Raft RaftConfig `yaml:"raft,omitempty"`

	// Storage tunes the node's two stores (its records and audit log, and
	// the replicated state).
	Storage StorageConfig `yaml:"storage,omitempty"`

	// PseudonymCustody tunes a coordinator's custody of the pseudonym key.
	PseudonymCustody CustodyConfig `yaml:"pseudonym_custody,omitempty"`

	// Queriers sets the query quotas of institutions and the thresholds
	// of the anomaly flags on their use (coordinators).
	Queriers queriers.Config `yaml:"queriers,omitempty"`

	// Coordinators are exchange addresses (host:port) of coordinator nodes
	// a district asks for pseudonyms before the registry has reached it,
	// and after the registered coordinators if none of them answers.
	Coordinators []string `yaml:"coordinators,omitempty"`

	// LookupTimeout bounds a cross-district lookup (default 5s).
	LookupTimeout Duration `yaml:"lookup_timeout,omitempty"`
	// ShutdownTimeout bounds the graceful shutdown (default 15s).
	ShutdownTimeout Duration `yaml:"shutdown_timeout,omitempty"`
	// SweepInterval is how often a district deletes records whose retention
	// period has ended and refreshes the index entries of subjects whose
	// records' display or retention ended (default 1h).
	SweepInterval Duration `yaml:"sweep_interval,omitempty"`
	// AuditAnchorEntries and AuditAnchorInterval say how often the node
	// anchors the head of its audit log in Raft: once that many entries
	// were appended since the last anchor, or that long after it if the
	// head moved, whichever comes first (defaults 1000 and 1m). The
	// entries after the last anchor are the window a truncation of the
	// log can hide in (audit/anchor.go).
	AuditAnchorEntries  int      `yaml:"audit_anchor_entries,omitempty"`
	AuditAnchorInterval Duration `yaml:"audit_anchor_interval,omitempty"`

	// Log sets the level (debug, info, warn, error; default info) and format
	// (text or json; default text) of the node's log on standard error.
	Log LogConfig `yaml:"log,omitempty"`
}

// ListenConfig holds the listen addresses.
type ListenConfig struct {
	// Exchange is the UDP address of the exchange and of Raft (one port).
	Exchange string `yaml:"exchange"`
	// API is the TCP address of the HTTPS API.
	API string `yaml:"api"`
	// Metrics is the TCP address of the plain-HTTP /metrics, /healthz and
	// /readyz listener; default 127.0.0.1:0 (loopback, any free port).
	Metrics string `yaml:"metrics,omitempty"`
}

// MetricsConfig configures the metrics listener (listen.metrics).
type MetricsConfig struct {
	// Pprof mounts Go's net/http/pprof handlers under /debug/pprof/ on the
	// metrics listener (CPU, heap, goroutine and other profiles of the
	// live node). Off by default; refused unless listen.metrics is a
	// loopback address, since a profile shows the node's memory.
	Pprof bool `yaml:"pprof,omitempty"`
}

// APIConfig bounds the HTTPS API's connections and request bodies.
type APIConfig struct {
	// MaxConnections bounds the open connections (default 4096); at the
	// limit the one new or idle the longest is closed for a new one.
	MaxConnections int `yaml:"max_connections,omitempty"`
	// BodyBudgetMiB bounds the MiB of request bodies read at once besides
	// the two large bulk bodies (default 64).
	BodyBudgetMiB int64 `yaml:"body_budget_mib,omitempty"`
	// BulkReadTimeout bounds the reading of a bulk submission's body
	// (default 30s).
	BulkReadTimeout Duration `yaml:"bulk_read_timeout,omitempty"`
	// Console configures the web console served under /console/.
	Console ConsoleConfig `yaml:"console,omitempty"`
}

// ConsoleConfig configures the web console (package console). Its
// accounts live in DATA_DIR/console (`credfed console user`).
type ConsoleConfig struct {
	// Disabled turns the console off: /console/ answers 404.
	Disabled bool `yaml:"disabled,omitempty"`
	// SessionIdle ends a session idle this long (default 30m); SessionMax
	// any session this old (default 8h).
	SessionIdle Duration `yaml:"session_idle,omitempty"`
	SessionMax  Duration `yaml:"session_max,omitempty"`
}

// AdvertiseConfig holds the addresses other nodes and users reach this
// node at, when they differ from the listen addresses (a wildcard listen,
// NAT); empty means the listen address.
type AdvertiseConfig struct {
	Exchange string `yaml:"exchange,omitempty"`
	API      string `yaml:"api,omitempty"`
}

// TLSConfig names the certificate files.
type TLSConfig struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// SignerCert and SignerKey are an intermediate CA (credfed certs
	// intermediate) that this coordinator keeps online to sign the
	// renewals of the nodes and users of its region. Optional.
	SignerCert string `yaml:"signer_cert,omitempty"`
	SignerKey  string `yaml:"signer_key,omitempty"`
	// Renew renews the node's certificate at two thirds of its life
	// (default true); the renewed pair replaces the cert and key files.
	Renew *bool `yaml:"renew,omitempty"`
}

// Renews says whether the node renews its certificate itself.
func (t TLSConfig) Renews() bool { return t.Renew == nil || *t.Renew }

// RaftConfig tunes the node's part in Raft.
type RaftConfig struct {
	// Voter overrides the default (coordinators vote, districts do not).
	Voter *bool `yaml:"voter,omitempty"`
	// Bootstrap starts a new federation on first start: this node (a
	// province) becomes the only voter and registers BootstrapRegions and
	// the catalog. Ignored when the data directory already holds Raft state.
	Bootstrap bool `yaml:"bootstrap,omitempty"`
	// BootstrapCatalog is a catalog YAML file; empty means the embedded
	// default catalog.
	BootstrapCatalog string `yaml:"bootstrap_catalog,omitempty"`
	// BootstrapRegions are registered with the federation at bootstrap.
	BootstrapRegions []RegionConfig `yaml:"bootstrap_regions,omitempty"`
	// SnapshotThreshold and TrailingLogs: see hashicorp/raft (defaults
	// 8192 and 10240).
	SnapshotThreshold uint64 `yaml:"snapshot_threshold,omitempty"`
	TrailingLogs      uint64 `yaml:"trailing_logs,omitempty"`
	// SnapshotInterval is how often Raft checks whether to snapshot
	// (hashicorp/raft's default 120 s, randomized up to twice that).
	SnapshotInterval Duration `yaml:"snapshot_interval,omitempty"`
	// HeartbeatTimeout is how long a follower waits without hearing from
	// the leader before it calls an election; the leader sends each
	// follower a heartbeat every tenth of it (hashicorp/raft's default
	// 1 s). ElectionTimeout is how long a candidate waits (default 1 s,
	// at least HeartbeatTimeout). CommitTimeout is how often the leader
	// sends each follower an append when no command flows, so that an idle
	// follower learns of the last commit (default 50 ms; both it and the
	// heartbeat interval are randomized up to twice). Longer timeouts cost
	// an idle federation less, since the leader sends every follower both
	// kinds of message, and a leader's failure is noticed later; a longer
	// commit timeout delays what an idle follower applies, and so a strong
	// read there right after a write, by up to twice as long.
	HeartbeatTimeout Duration `yaml:"heartbeat_timeout,omitempty"`
	ElectionTimeout  Duration `yaml:"election_timeout,omitempty"`
	CommitTimeout    Duration `yaml:"commit_timeout,omitempty"`
}

// raftTiming is the Raft timing a node runs with: the configured timeouts
// over those of opts (tests, the demo), over hashicorp/raft's defaults. A
// timeout taken from opts or the defaults follows a configured heartbeat
// timeout: the election timeout is raised to it, and the leader lease is
// half of it, as in Raft's defaults (a leader steps down when a quorum has
// not answered within the lease, and heartbeats go out every tenth of the
// heartbeat timeout: a lease left at the demo's 250 ms under a 2 s
// heartbeat timeout made the leader step down). A configured election
// timeout shorter than the heartbeat timeout is refused.
func (c RaftConfig) raftTiming(opts RaftTiming) (RaftTiming, error) {
	const (
		defaultTimeout = time.Second // hashicorp/raft's heartbeat and election timeouts
		defaultLease   = 500 * time.Millisecond
	)
	t := RaftTiming{
		Heartbeat:   cmp.Or(time.Duration(c.HeartbeatTimeout), opts.Heartbeat, defaultTimeout),
		Election:    cmp.Or(time.Duration(c.ElectionTimeout), opts.Election, defaultTimeout),
		LeaderLease: cmp.Or(opts.LeaderLease, defaultLease),
		Commit:      cmp.Or(time.Duration(c.CommitTimeout), opts.Commit),
	}
	if t.Election < t.Heartbeat {
		if c.ElectionTimeout != 0 {
			return RaftTiming{}, fieldErr("raft.election_timeout", "must be at least the heartbeat timeout (%v)", t.Heartbeat)
		}
		t.Election = t.Heartbeat
	}
	if c.HeartbeatTimeout != 0 {
		t.LeaderLease = t.Heartbeat / 2
	}
	return t, nil
}

// StorageConfig tunes the node's Badger stores.
type StorageConfig struct {
	// IndexCacheMiB bounds each store's cache of decrypted table indexes
	// (default 128; at most 65536). On a busy store it fills to its bound
	// (Badger leaves compacted tables' indexes in it until evicted), so it
	// is a memory cost; below the live tables' indexes, reads decrypt them
	// again (docs/BENCHMARKS.md, "10 M index entries").
	IndexCacheMiB int `yaml:"index_cache_mib,omitempty"`
}

// indexCacheBytes is IndexCacheMiB in bytes (0: the store's default).
func (s StorageConfig) indexCacheBytes() int64 { return int64(s.IndexCacheMiB) << 20 }

// RegionConfig is a region registered at bootstrap.
type RegionConfig struct {
	Path     string     `yaml:"path"`
	Name     string     `yaml:"name,omitempty"`
	Role     certs.Role `yaml:"role"`
	Exchange string     `yaml:"exchange,omitempty"`
	API      string     `yaml:"api,omitempty"`
	Voter    *bool      `yaml:"voter,omitempty"`
}

// CustodyConfig tunes how a coordinator hands pseudonyms to districts.
type CustodyConfig struct {
	// Rate is each district's identifiers per second (default 100000,
	// bursts of ten seconds' worth); DistrictRates overrides it by region
	// path.
	Rate          float64            `yaml:"rate,omitempty"`
	DistrictRates map[string]float64 `yaml:"district_rates,omitempty"`
	// Window is how long a district has to publish the subjects it
	// pseudonymized before a sample of them is checked against its index
	// entries (default 1h).
	Window Duration `yaml:"window,omitempty"`
}

// LogConfig configures logging.
type LogConfig struct {
	Level  string `yaml:"level,omitempty"`
	Format string `yaml:"format,omitempty"`
}

// Duration is a time.Duration written as Go writes it ("5s", "1m30s").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like 5s or 1m30s", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// ConfigError names the field of a refused configuration.
type ConfigError struct {
	Field   string
	Message string
}

func (e *ConfigError) Error() string { return "config: " + e.Field + ": " + e.Message }

// ErrConfig matches every *ConfigError.
var ErrConfig = errors.New("config: invalid")

// Is lets errors.Is(err, ErrConfig) match.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// unknownField matches yaml.v3's error for a field KnownFields refuses.
var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type (\S+)`)

// sectionOf names the YAML section of each configuration type, to name an
// unknown field by its whole path.
var sectionOf = map[string]string{
	"node.Config": "", "node.ListenConfig": "listen.", "node.AdvertiseConfig": "advertise.", "node.TLSConfig": "tls.",
	"node.RaftConfig": "raft.", "node.RegionConfig": "raft.bootstrap_regions[].", "node.LogConfig": "log.",
	"node.CustodyConfig": "pseudonym_custody.", "node.APIConfig": "api.", "node.ChecksConfig": "checks.", "node.MetricsConfig": "metrics.",
	"queriers.Config": "queriers.", "queriers.Quota": "queriers.quotas[].", "queriers.Flags": "queriers.flags.",
}

// LoadConfig reads a YAML configuration file; unknown fields are refused.
// Relative file paths in it are taken relative to the file's directory.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if m := unknownField.FindStringSubmatch(err.Error()); m != nil {
			return Config{}, fieldErr(sectionOf[m[3]]+m[2], "unknown field (%s, line %s)", path, m[1])
		}
		return Config{}, fmt.Errorf("config: %s: %w", path, err)
	}
	c.resolvePaths(filepath.Dir(path))
	return c, nil
}

func (c *Config) resolvePaths(base string) {
	for _, p := range []*string{&c.DataDir, &c.TLS.CA, &c.TLS.Cert, &c.TLS.Key, &c.TLS.SignerCert, &c.TLS.SignerKey, &c.EncryptionKeyFile,
		&c.PseudonymKeyFile, &c.Raft.BootstrapCatalog} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
}

// ApplyEnv overrides fields from CREDFED_* environment variables (see
// docs/config.md): CREDFED_DATA_DIR, CREDFED_LISTEN_EXCHANGE,
// CREDFED_LISTEN_API, CREDFED_LISTEN_METRICS, CREDFED_LOG_LEVEL,
// CREDFED_TEST_MODE, CREDFED_TEST_ONLY, CREDFED_METRICS_PPROF.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	set := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	set("CREDFED_DATA_DIR", &c.DataDir)
	set("CREDFED_LISTEN_EXCHANGE", &c.Listen.Exchange)
	set("CREDFED_LISTEN_API", &c.Listen.API)
	set("CREDFED_LISTEN_METRICS", &c.Listen.Metrics)
	set("CREDFED_LOG_LEVEL", &c.Log.Level)
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"CREDFED_TEST_MODE", &c.TestMode}, {"CREDFED_TEST_ONLY", &c.TestOnly}, {"CREDFED_METRICS_PPROF", &c.Metrics.Pprof}} {
		if v := getenv(b.name); v != "" {
			on, err := strconv.ParseBool(v)
			if err != nil {
				return fieldErr(b.name, "%q is not true or false", v)
			}
			*b.dst = on
		}
	}
	return nil
}

// withDefaults fills in the defaults of optional fields.
func (c Config) withDefaults() Config {
	if c.Name == "" && c.Region != "" {
		c.Name = c.Region[strings.LastIndexByte(c.Region, '/')+1:]
	}
	if c.Listen.Metrics == "" {
		c.Listen.Metrics = "127.0.0.1:0"
	}
	if c.LookupTimeout <= 0 {
		c.LookupTimeout = Duration(5 * time.Second)
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = Duration(15 * time.Second)
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = Duration(time.Hour)
	}
	if c.AuditAnchorEntries <= 0 {
		c.AuditAnchorEntries = 1000
	}
	if c.AuditAnchorInterval <= 0 {
		c.AuditAnchorInterval = Duration(time.Minute)
	}
	if c.Checks.BatchChunkRows == 0 {
		c.Checks.BatchChunkRows = 2000
	}
	if c.API.MaxConnections <= 0 {
		c.API.MaxConnections = 4096
	}
	if c.API.BodyBudgetMiB <= 0 {
		c.API.BodyBudgetMiB = 64
	}
	if c.API.BulkReadTimeout <= 0 {
		c.API.BulkReadTimeout = Duration(30 * time.Second)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	return c
}

// Identifiers returns the identifier rules of the node (ParseOptions
// without Today).
func (c Config) Identifiers() credit.ParseOptions {
	return credit.ParseOptions{TestMode: c.TestMode || c.TestOnly, TestOnly: c.TestOnly}
}

// IsVoter says whether the node votes in Raft.
func (c Config) IsVoter() bool {
	if c.Raft.Voter != nil {
		return *c.Raft.Voter
	}
	return c.Role.IsCoordinatorNode()
}

// Identity is the node identity its certificate must carry.
func (c Config) Identity() certs.Identity {
	return certs.Identity{Federation: c.Federation, Role: c.Role, Region: c.Region}
}

// Validate refuses a configuration the node cannot run with, naming the
// field.
func (c Config) Validate() error {
	id := c.Identity()
	switch {
	case c.Federation == "":
		return fieldErr("federation", "required")
	case certs.CheckFederation(c.Federation) != nil:
		return fieldErr("federation", "%v", certs.CheckFederation(c.Federation))
	case !c.Role.IsNode():
		return fieldErr("role", "%q is not a node role (province, city or district)", c.Role)
	case c.Region == "":
		return fieldErr("region", "required")
	}
	if err := id.Validate(); err != nil {
		return fieldErr("region", "%v", err)
	}
	if c.DataDir == "" {
		return fieldErr("data_dir", "required")
	}
	addrs := []struct{ field, addr string }{
		{"listen.exchange", c.Listen.Exchange}, {"listen.api", c.Listen.API}, {"listen.metrics", c.Listen.Metrics},
		{"advertise.exchange", c.Advertise.Exchange}, {"advertise.api", c.Advertise.API},
	}
	for _, a := range addrs[:2] {
		if a.addr == "" {
			return fieldErr(a.field, "required")
		}
	}
	for _, a := range addrs {
		if a.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			return fieldErr(a.field, "%q is not host:port", a.addr)
		}
	}
	if c.Metrics.Pprof && !loopbackAddr(c.Listen.Metrics) {
		return fieldErr("metrics.pprof", "needs listen.metrics on a loopback address (127.0.0.1, ::1 or localhost), not %q: a profile shows the node's memory", c.Listen.Metrics)
	}
	for i, a := range c.Coordinators {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fieldErr(fmt.Sprintf("coordinators[%d]", i), "%q is not host:port", a)
		}
	}
	for _, f := range []struct{ field, path string }{{"tls.ca", c.TLS.CA}, {"tls.cert", c.TLS.Cert}, {"tls.key", c.TLS.Key}} {
		if f.path == "" {
			return fieldErr(f.field, "required")
		}
	}
	if (c.TLS.SignerCert == "") != (c.TLS.SignerKey == "") {
		return fieldErr("tls.signer_cert", "tls.signer_cert and tls.signer_key go together")
	}
	if c.TLS.SignerCert != "" && !c.Role.IsCoordinatorNode() {
		return fieldErr("tls.signer_cert", "only coordinator nodes (province, city) hold a signing CA")
	}
	if c.PseudonymKeyFile != "" && !c.Role.IsCoordinatorNode() {
		return fieldErr("pseudonym_key_file", "only coordinator nodes (province, city) may hold the pseudonym key")
	}
	if c.PseudonymKeyFile == "" && c.Role.IsCoordinatorNode() {
		return fieldErr("pseudonym_key_file", "required on a %s node: coordinators pseudonymize subjects", c.Role)
	}
	if c.Raft.SnapshotInterval < 0 {
		return fieldErr("raft.snapshot_interval", "must not be negative")
	}
	for _, d := range []struct {
		name     string
		v        Duration
		min, max time.Duration
		def      string
	}{
		// Below 100ms an idle federation on loopback already changed
		// leaders. Above 5s the first election of a new federation (a
		// random one to two heartbeat timeouts) can outlast the
		// bootstrap's 30 s, and a stopping replica waits as long to say
		// so. Above 1s of commit timeout a follower learns of its own
		// write (an anchor, a strong read) after the 5 s those wait.
		{"raft.heartbeat_timeout", c.Raft.HeartbeatTimeout, 100 * time.Millisecond, 5 * time.Second, "1s"},
		{"raft.election_timeout", c.Raft.ElectionTimeout, 100 * time.Millisecond, 10 * time.Second, "1s"},
		{"raft.commit_timeout", c.Raft.CommitTimeout, time.Millisecond, time.Second, "50ms"},
	} {
		if v := time.Duration(d.v); v != 0 && (v < d.min || v > d.max) {
			return fieldErr(d.name, "must be between %v and %v, or absent for Raft's %s", d.min, d.max, d.def)
		}
	}
	if _, err := c.Raft.raftTiming(RaftTiming{}); err != nil {
		return err
	}
	if c.Storage.IndexCacheMiB < 0 || c.Storage.IndexCacheMiB > 65536 {
		return fieldErr("storage.index_cache_mib", "must be between 1 and 65536 (MiB), or absent for the default 128")
	}
	if c.Checks.BatchChunkRows < 0 {
		return fieldErr("checks.batch_chunk_rows", "must not be negative (0 takes the default, 2000)")
	}
	if c.Checks.BatchChunkRows > 5000 {
		return fieldErr("checks.batch_chunk_rows", "at most 5000 (a chunk's results are kept in one write), got %d", c.Checks.BatchChunkRows)
	}
	if c.API.MaxConnections < 0 || c.API.BodyBudgetMiB < 0 || c.API.BulkReadTimeout < 0 {
		return fieldErr("api", "max_connections, body_budget_mib and bulk_read_timeout must not be negative")
	}
	if c.PseudonymCustody.Rate < 0 || c.PseudonymCustody.Window < 0 {
		return fieldErr("pseudonym_custody", "rate and window must not be negative")
	}
	for path, r := range c.PseudonymCustody.DistrictRates {
		if err := certs.CheckRegion(path); err != nil || r <= 0 {
			return fieldErr("pseudonym_custody.district_rates", "%q: a region path and a rate above 0", path)
		}
	}
	if err := c.Queriers.Validate(); err != nil {
		var qe *queriers.ConfigError
		if errors.As(err, &qe) {
			return fieldErr("queriers."+qe.Field, "%s", qe.Message)
		}
		return fieldErr("queriers", "%v", err)
	}
	if c.Raft.Bootstrap && c.Role != certs.Province {
		return fieldErr("raft.bootstrap", "only a province node starts a federation")
	}
	for i, r := range c.Raft.BootstrapRegions {
		if err := certs.CheckRegion(r.Path); err != nil {
			return fieldErr(fmt.Sprintf("raft.bootstrap_regions[%d].path", i), "%v", err)
		}
		if !r.Role.IsNode() {
			return fieldErr(fmt.Sprintf("raft.bootstrap_regions[%d].role", i), "%q is not a node role", r.Role)
		}
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		return fieldErr("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		return fieldErr("log.format", "%q is not text or json", c.Log.Format)
	}
	return nil
}

// loopbackAddr reports whether a listen address (host:port) is on
// loopback; empty is listen.metrics's default, 127.0.0.1:0.
func loopbackAddr(addr string) bool {
	if addr == "" {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ChecksConfig tunes checks and batch checks.
type ChecksConfig struct {
	// BatchChunkRows is how many rows of a batch check are checked, audited
	// and kept at a time (default 2000, at most 5000): a restart resumes
	// after the last chunk kept.
	BatchChunkRows int `yaml:"batch_chunk_rows,omitempty"`
}
