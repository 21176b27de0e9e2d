package node

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"credfed/certs"
)

// configDoc is the operator documentation whose examples must load.
const configDoc = "../docs/config.md"

var yamlBlock = regexp.MustCompile("(?ms)^```yaml\n(.*?)^```")

// loadConfigText writes text to a node.yaml in a fresh directory and loads
// it.
func loadConfigText(t *testing.T, text string) (Config, string, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(path)
	return c, dir, err
}

// TestConfigExamples loads and validates every ```yaml block of
// docs/config.md: each is a complete configuration. The files it names need
// not exist; only LoadConfig and Validate run.
func TestConfigExamples(t *testing.T) {
	data, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	blocks := yamlBlock.FindAllStringSubmatch(string(data), -1)
	if len(blocks) < 2 {
		t.Fatalf("%s has %d yaml examples, want at least a district and a city", configDoc, len(blocks))
	}
	roles := map[certs.Role]Config{}
	for i, b := range blocks {
		c, dir, err := loadConfigText(t, b[1])
		if err != nil {
			t.Errorf("example %d: %v\n%s", i+1, err, b[1])
			continue
		}
		if err := c.Validate(); err != nil {
			t.Errorf("example %d (%s): %v", i+1, c.Role, err)
		}
		if err := c.withDefaults().Validate(); err != nil {
			t.Errorf("example %d (%s) with defaults: %v", i+1, c.Role, err)
		}
		for _, p := range []string{c.DataDir, c.TLS.CA, c.TLS.Cert, c.TLS.Key} {
			if !filepath.IsAbs(p) {
				t.Errorf("example %d: path %q was not resolved against %s", i+1, p, dir)
			}
		}
		roles[c.Role] = c
	}
	if c, ok := roles[certs.District]; !ok {
		t.Errorf("%s has no district example", configDoc)
	} else if c.PseudonymKeyFile != "" {
		t.Errorf("the district example holds a pseudonym key")
	}
	if c, ok := roles[certs.City]; !ok {
		t.Errorf("%s has no city example", configDoc)
	} else if c.PseudonymKeyFile == "" {
		t.Errorf("the city example has no pseudonym_key_file")
	}
}

// validDistrict is a minimal valid district configuration the table below
// breaks one way at a time.
const validDistrict = `federation: zj-credit
role: district
region: zhejiang/quzhou/kecheng
data_dir: data
listen:
  exchange: 127.0.0.1:7443
  api: 127.0.0.1:8443
tls:
  ca: ca.pem
  cert: kecheng.pem
  key: kecheng-key.pem
coordinators:
  - 127.0.0.1:7444
log:
  level: info
`

func TestConfigValidDistrict(t *testing.T) {
	c, dir, err := loadConfigText(t, validDistrict)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "ca.pem"); c.TLS.CA != want {
		t.Errorf("tls.ca = %q, want %q (relative to the file)", c.TLS.CA, want)
	}
	d := c.withDefaults()
	if d.Name != "kecheng" || d.Listen.Metrics != "127.0.0.1:0" || time.Duration(d.LookupTimeout) != 5*time.Second ||
		time.Duration(d.ShutdownTimeout) != 15*time.Second || d.Log.Format != "text" || d.IsVoter() {
		t.Errorf("defaults are not the documented ones: %+v", d)
	}
}

func TestConfigInvalid(t *testing.T) {
	// edit replaces old with new in validDistrict; old must occur.
	edit := func(pairs ...string) string {
		s := validDistrict
		for i := 0; i < len(pairs); i += 2 {
			if !strings.Contains(s, pairs[i]) {
				t.Fatalf("validDistrict has no %q", pairs[i])
			}
			s = strings.Replace(s, pairs[i], pairs[i+1], 1)
		}
		return s
	}
	cases := []struct {
		name  string
		yaml  string
		field string
	}{
		{"missing federation", edit("federation: zj-credit\n", ""), "federation"},
		{"bad role", edit("role: district", "role: mayor"), "role"},
		{"user role", edit("role: district", "role: coordinator"), "role"},
		{"missing region", edit("region: zhejiang/quzhou/kecheng\n", ""), "region"},
		{"bad region", edit("region: zhejiang/quzhou/kecheng", "region: Zhejiang/Quzhou"), "region"},
		{"missing data_dir", edit("data_dir: data\n", ""), "data_dir"},
		{"missing listen.api", edit("  api: 127.0.0.1:8443\n", ""), "listen.api"},
		{"listen.api without port", edit("api: 127.0.0.1:8443", "api: localhost"), "listen.api"},
		{"listen.exchange without port", edit("exchange: 127.0.0.1:7443", "exchange: '127.0.0.1:'"), "listen.exchange"},
		{"bad listen.metrics", edit("  api: 127.0.0.1:8443\n", "  api: 127.0.0.1:8443\n  metrics: loopback\n"), "listen.metrics"},
		{"bad advertise.exchange", edit("tls:", "advertise:\n  exchange: 10.0.0.1\ntls:"), "advertise.exchange"},
		{"bad coordinator", edit("  - 127.0.0.1:7444\n", "  - 127.0.0.1:7444\n  - quzhou\n"), "coordinators[1]"},
		{"missing tls.key", edit("  key: kecheng-key.pem\n", ""), "tls.key"},
		{"district with pseudonym_key_file", edit("log:", "pseudonym_key_file: pseudonym.key\nlog:"), "pseudonym_key_file"},
		{"city without pseudonym_key_file", edit("role: district", "role: city", "region: zhejiang/quzhou/kecheng", "region: zhejiang/quzhou"), "pseudonym_key_file"},
		{"province without pseudonym_key_file", edit("role: district", "role: province", "region: zhejiang/quzhou/kecheng", "region: zhejiang"), "pseudonym_key_file"},
		{"bootstrap on a district", edit("log:", "raft:\n  bootstrap: true\nlog:"), "raft.bootstrap"},
		{"bootstrap on a city", edit("role: district", "role: city", "log:", "pseudonym_key_file: k\nraft:\n  bootstrap: true\nlog:"), "raft.bootstrap"},
		{"bootstrap region with a bad role", edit("role: district", "role: province", "region: zhejiang/quzhou/kecheng", "region: zhejiang",
			"log:", "pseudonym_key_file: k\nraft:\n  bootstrap: true\n  bootstrap_regions:\n    - {path: zhejiang/quzhou, role: portal}\nlog:"),
			"raft.bootstrap_regions[0].role"},
		{"bootstrap region with a bad path", edit("role: district", "role: province", "region: zhejiang/quzhou/kecheng", "region: zhejiang",
			"log:", "pseudonym_key_file: k\nraft:\n  bootstrap: true\n  bootstrap_regions:\n    - {path: zhejiang//quzhou, role: city}\nlog:"),
			"raft.bootstrap_regions[0].path"},
		{"raft.heartbeat_timeout below 100ms", edit("log:", "raft:\n  heartbeat_timeout: 90ms\nlog:"), "raft.heartbeat_timeout"},
		{"raft.heartbeat_timeout above 5s", edit("log:", "raft:\n  heartbeat_timeout: 6s\nlog:"), "raft.heartbeat_timeout"},
		{"raft.election_timeout above 10s", edit("log:", "raft:\n  election_timeout: 11s\nlog:"), "raft.election_timeout"},
		{"raft.election_timeout below the heartbeat's", edit("log:", "raft:\n  heartbeat_timeout: 2s\n  election_timeout: 1500ms\nlog:"), "raft.election_timeout"},
		{"raft.election_timeout below the default heartbeat's", edit("log:", "raft:\n  election_timeout: 500ms\nlog:"), "raft.election_timeout"},
		{"raft.commit_timeout below a millisecond", edit("log:", "raft:\n  commit_timeout: 100us\nlog:"), "raft.commit_timeout"},
		{"raft.commit_timeout above 1s", edit("log:", "raft:\n  commit_timeout: 1100ms\nlog:"), "raft.commit_timeout"},
		{"negative raft.commit_timeout", edit("log:", "raft:\n  commit_timeout: -1s\nlog:"), "raft.commit_timeout"},
		{"negative storage.index_cache_mib", edit("log:", "storage:\n  index_cache_mib: -1\nlog:"), "storage.index_cache_mib"},
		{"huge storage.index_cache_mib", edit("log:", "storage:\n  index_cache_mib: 65537\nlog:"), "storage.index_cache_mib"},
		{"bad log level", edit("level: info", "level: verbose"), "log.level"},
		{"bad log format", edit("level: info", "level: info\n  format: xml"), "log.format"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := loadConfigText(t, tc.yaml)
			if err != nil {
				t.Fatalf("LoadConfig refused what Validate should: %v", err)
			}
			err = c.Validate()
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate() = %v, want a *ConfigError", err)
			}
			if ce.Field != tc.field {
				t.Errorf("Validate() names field %q, want %q (%v)", ce.Field, tc.field, err)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("errors.Is(%v, ErrConfig) is false", err)
			}
			if want := "config: " + tc.field + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
		})
	}
}

// TestConfigUnknownField: LoadConfig refuses unknown YAML fields, naming
// them. Today the refusal is yaml's own error, wrapped as
// "config: <file>: ..."; a *ConfigError, if LoadConfig ever returns one,
// must name the field by its full path.
func TestConfigUnknownField(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, key, field string }{
		"top level": {strings.Replace(validDistrict, "data_dir:", "datadir:", 1), "datadir", "datadir"},
		"nested":    {strings.Replace(validDistrict, "  api:", "  apii:", 1), "apii", "listen.apii"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := loadConfigText(t, tc.yaml)
			if err == nil {
				t.Fatal("LoadConfig accepted an unknown field")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %q is not a *ConfigError", err)
			}
			if ce.Field != tc.field {
				t.Errorf("ConfigError names %q, want %q", ce.Field, tc.field)
			}
		})
	}
}

func TestConfigApplyEnv(t *testing.T) {
	c, _, err := loadConfigText(t, validDistrict)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"CREDFED_DATA_DIR": "/srv/credfed", "CREDFED_LISTEN_EXCHANGE": "127.0.0.1:1", "CREDFED_LISTEN_API": "127.0.0.1:2",
		"CREDFED_LISTEN_METRICS": "127.0.0.1:3", "CREDFED_LOG_LEVEL": "debug", "CREDFED_TEST_MODE": "true",
		"CREDFED_TEST_ONLY": "1",
	}
	if err := c.ApplyEnv(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/credfed" || c.Listen.Exchange != "127.0.0.1:1" || c.Listen.API != "127.0.0.1:2" ||
		c.Listen.Metrics != "127.0.0.1:3" || c.Log.Level != "debug" || !c.TestMode || !c.TestOnly || !c.Identifiers().TestOnly {
		t.Errorf("ApplyEnv did not override: %+v", c)
	}
	// An empty variable changes nothing.
	before := c.DataDir
	if err := c.ApplyEnv(func(string) string { return "" }); err != nil || c.DataDir != before {
		t.Errorf("empty environment changed data_dir to %q (err %v)", c.DataDir, err)
	}
	err = c.ApplyEnv(func(k string) string {
		if k == "CREDFED_TEST_MODE" {
			return "yes"
		}
		return ""
	})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "CREDFED_TEST_MODE" {
		t.Errorf("CREDFED_TEST_MODE=yes: %v, want a *ConfigError naming CREDFED_TEST_MODE", err)
	}
	// test_only implies test_mode.
	if opt := (Config{TestOnly: true}).Identifiers(); !opt.TestMode || !opt.TestOnly {
		t.Errorf("test_only alone gives %+v", opt)
	}
}

// TestRaftTiming: the configured timeouts win over the options' (the
// demo's) and Raft's defaults; an election timeout taken from those is
// raised to a configured heartbeat timeout, as hashicorp/raft requires,
// and the leader lease is half of it (a lease shorter than the heartbeat
// interval makes the leader step down); a configured election timeout
// shorter than the heartbeat's is refused.
func TestRaftTiming(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	demo := RaftTiming{Heartbeat: ms(500), Election: ms(500), LeaderLease: ms(250), Commit: ms(50)}
	for _, c := range []struct {
		name string
		cfg  RaftConfig
		opts RaftTiming
		want RaftTiming
	}{
		{"nothing set: Raft's defaults", RaftConfig{}, RaftTiming{}, RaftTiming{Heartbeat: time.Second, Election: time.Second, LeaderLease: ms(500)}},
		{"the demo's", RaftConfig{}, demo, demo},
		{"a longer heartbeat over the demo's: the election follows", RaftConfig{HeartbeatTimeout: Duration(2 * time.Second), CommitTimeout: Duration(ms(500))}, demo,
			RaftTiming{Heartbeat: 2 * time.Second, Election: 2 * time.Second, LeaderLease: time.Second, Commit: ms(500)}},
		{"a short heartbeat: the lease follows", RaftConfig{HeartbeatTimeout: Duration(ms(100)), ElectionTimeout: Duration(ms(300))}, RaftTiming{},
			RaftTiming{Heartbeat: ms(100), Election: ms(300), LeaderLease: ms(50)}},
	} {
		got, err := c.cfg.raftTiming(c.opts)
		if err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
	// Every timing the configuration accepts is one Raft accepts, at the
	// bounds too, over the demo's timing or Raft's defaults.
	for _, hb := range []time.Duration{0, ms(100), 5 * time.Second} {
		for _, ct := range []time.Duration{0, ms(1), time.Second} {
			for _, opts := range []RaftTiming{{}, demo} {
				rc := RaftConfig{HeartbeatTimeout: Duration(hb), CommitTimeout: Duration(ct)}
				tm, err := rc.raftTiming(opts)
				if err != nil {
					t.Fatalf("heartbeat %v, commit %v: %v", hb, ct, err)
				}
				c := raft.DefaultConfig()
				c.LocalID = "n"
				c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = tm.Heartbeat, tm.Election, tm.LeaderLease
				if tm.Commit != 0 {
					c.CommitTimeout = tm.Commit
				}
				if err := raft.ValidateConfig(c); err != nil {
					t.Errorf("heartbeat %v, commit %v over %+v: %+v, which Raft refuses: %v", hb, ct, opts, tm, err)
				}
			}
		}
	}
	_, err := RaftConfig{HeartbeatTimeout: Duration(2 * time.Second), ElectionTimeout: Duration(time.Second)}.raftTiming(demo)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "raft.election_timeout" {
		t.Errorf("an election timeout below the heartbeat's: %v, want a raft.election_timeout error", err)
	}
}
