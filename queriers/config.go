package queriers

import (
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/api"
)

// Duration is a time.Duration written as Go writes it ("24h", "1h30m"). It
// mirrors node.Duration, which this package cannot import (node imports
// it).
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like 24h or 1h30m", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Quota bounds the queries of an institution for a purpose in a window.
// An empty Institution is a default quota held by every institution, each
// one counted on its own (institutions never share a quota's count, but
// for the overflow bucket: see Config.MaxInstitutions); a quota naming an
// institution takes the place of the default quota of the same Purpose and
// Per for that institution (so an institution's quota may be larger than
// the default). An empty Purpose counts the institution's queries of every
// purpose together.
type Quota struct {
	Institution string   `yaml:"institution,omitempty"`
	Purpose     string   `yaml:"purpose,omitempty"`
	Limit       int      `yaml:"limit"`
	Per         Duration `yaml:"per"`
}

// Config is the querier tracker's configuration: the `queriers:` section
// of the node configuration (docs/config.md) and the node's clock, log and
// metrics. Zero fields take the defaults below.
type Config struct {
	// Quotas are the quotas, at most MaxQuotas; none: no quota.
	Quotas []Quota `yaml:"quotas,omitempty"`
	// TimeZone aligns the quotas' windows (a 24h window starts at
	// midnight there) and the flags' working hours (default
	// Asia/Shanghai; without the system's tzdata, Asia/Shanghai falls back
	// to a fixed UTC+08:00 zone, which is the same: China keeps no
	// daylight saving time).
	TimeZone string `yaml:"time_zone,omitempty"`
	// MaxInstitutions bounds the institutions tracked one by one (default
	// 4096; institutions named in a quota are always tracked besides).
	// Beyond it, the others share one account, "(other)": counted, held
	// to the default quotas and flagged together, so the cap never makes
	// a quota looser.
	MaxInstitutions int `yaml:"max_institutions,omitempty"`
	// Flags tunes the anomaly flags.
	Flags Flags `yaml:"flags,omitempty"`

	// Now is the clock (default time.Now).
	Now        func() time.Time      `yaml:"-"`
	Logger     *slog.Logger          `yaml:"-"`
	Registerer prometheus.Registerer `yaml:"-"`
}

// Flags are the anomaly flags' thresholds (docs/config.md,
// `queriers.flags`).
type Flags struct {
	// Disable names flags that are never raised (distinct_subjects,
	// off_hours, rare_purpose, large_batch).
	Disable []string `yaml:"disable,omitempty"`
	// Window is the length of the windows in which distinct subjects and
	// references and off-hours queries are counted (default 1h, aligned
	// like the quotas' windows).
	Window Duration `yaml:"window,omitempty"`
	// Hold is how long a flag stays in the report after the last time its
	// condition held (default 24h); a flag raised again within it is the
	// same episode (one increment of credfed_querier_flags_total).
	Hold Duration `yaml:"hold,omitempty"`

	// DistinctSubjects and ReferenceRatio: distinct_subjects is raised
	// when a window holds at least DistinctSubjects distinct subjects
	// (default 100) and fewer than ReferenceRatio distinct non-empty
	// references per distinct subject (default 0.1).
	DistinctSubjects int     `yaml:"distinct_subjects,omitempty"`
	ReferenceRatio   float64 `yaml:"reference_ratio,omitempty"`
	// DistinctCap bounds each institution's set of distinct subjects and
	// of distinct references in a window (default 1024), DistinctBudget
	// all of them together (default 1,048,576 entries of 8 bytes, about
	// 32 MiB at most). A set that is full counts no more: its size is a
	// lower bound, so a full subject set can still raise the flag, and a
	// full reference set never does.
	DistinctCap    int `yaml:"distinct_cap,omitempty"`
	DistinctBudget int `yaml:"distinct_budget,omitempty"`

	// WorkingHours are "HH:MM-HH:MM" in TimeZone (default 07:00-21:00;
	// "22:00-06:00" spans midnight); off_hours is raised once a window
	// holds OffHoursQueries queries outside them (default 1).
	WorkingHours    string `yaml:"working_hours,omitempty"`
	OffHoursQueries int    `yaml:"off_hours_queries,omitempty"`

	// RarePurposeShare and RarePurposeAfter: rare_purpose is raised by a
	// query whose purpose makes less than RarePurposeShare of the
	// institution's queries (default 0.02), counting it, once the
	// institution made at least RarePurposeAfter queries (default 200).
	RarePurposeShare float64 `yaml:"rare_purpose_share,omitempty"`
	RarePurposeAfter int     `yaml:"rare_purpose_after,omitempty"`

	// BatchFactor, BatchAfter and BatchMinRows: large_batch is raised by
	// a batch of at least BatchMinRows rows (default 100) above
	// BatchFactor (default 10) times the median size of the institution's
	// last batches (the last 32), once it sent at least BatchAfter
	// batches (default 5). Single queries are no batches.
	BatchFactor  float64 `yaml:"batch_factor,omitempty"`
	BatchAfter   int     `yaml:"batch_after,omitempty"`
	BatchMinRows int     `yaml:"batch_min_rows,omitempty"`
}

// IsZero reports whether the YAML fields are all zero, so that a node
// configuration written with yaml.Marshal omits an empty `queriers:` (the
// clock, log and metrics are no YAML).
func (c Config) IsZero() bool {
	f := c.Flags
	return len(c.Quotas) == 0 && c.TimeZone == "" && c.MaxInstitutions == 0 && len(f.Disable) == 0 &&
		f.Window == 0 && f.Hold == 0 && f.DistinctSubjects == 0 && f.ReferenceRatio == 0 && f.DistinctCap == 0 &&
		f.DistinctBudget == 0 && f.WorkingHours == "" && f.OffHoursQueries == 0 && f.RarePurposeShare == 0 &&
		f.RarePurposeAfter == 0 && f.BatchFactor == 0 && f.BatchAfter == 0 && f.BatchMinRows == 0
}

// Bounds of the configuration.
const (
	// MaxQuotas bounds Config.Quotas.
	MaxQuotas = 1024
	// maxInstitutionsCap bounds Config.MaxInstitutions.
	maxInstitutionsCap = 1 << 16
	// maxName bounds an institution's or a purpose's name, in a quota or
	// a query (a longer one is counted in the "(other)" account).
	maxName = 255
	// maxDistinctCap, maxDistinctBudget bound the distinct sets.
	maxDistinctCap    = 1 << 16
	maxDistinctBudget = 1 << 24
)

// DefaultTimeZone is Config.TimeZone's default.
const DefaultTimeZone = "Asia/Shanghai"

// flagNames are the anomaly flags.
var flagNames = []string{api.FlagDistinctSubjects, api.FlagOffHours, api.FlagRarePurpose, api.FlagLargeBatch}

// ConfigError names the field of a refused configuration, relative to the
// `queriers:` section (node.Config.Validate prefixes "queriers.").
type ConfigError struct {
	Field   string
	Message string
}

func (e *ConfigError) Error() string { return "queriers: " + e.Field + ": " + e.Message }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// withDefaults fills in the zero fields.
func (c Config) withDefaults() Config {
	if c.TimeZone == "" {
		c.TimeZone = DefaultTimeZone
	}
	if c.MaxInstitutions == 0 {
		c.MaxInstitutions = 4096
	}
	f := &c.Flags
	defD := func(d *Duration, v time.Duration) {
		if *d == 0 {
			*d = Duration(v)
		}
	}
	defI := func(i *int, v int) {
		if *i == 0 {
			*i = v
		}
	}
	defF := func(x *float64, v float64) {
		if *x == 0 {
			*x = v
		}
	}
	defD(&f.Window, time.Hour)
	defD(&f.Hold, 24*time.Hour)
	defI(&f.DistinctSubjects, 100)
	defF(&f.ReferenceRatio, 0.1)
	defI(&f.DistinctCap, 1024)
	defI(&f.DistinctBudget, 1<<20)
	if f.WorkingHours == "" {
		f.WorkingHours = "07:00-21:00"
	}
	defI(&f.OffHoursQueries, 1)
	defF(&f.RarePurposeShare, 0.02)
	defI(&f.RarePurposeAfter, 200)
	defF(&f.BatchFactor, 10)
	defI(&f.BatchAfter, 5)
	defI(&f.BatchMinRows, 100)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate refuses a configuration the tracker cannot run with, naming the
// field (relative to `queriers:`) in a *ConfigError; values are never
// repeated.
func (c Config) Validate() error {
	if len(c.Quotas) > MaxQuotas {
		return fieldErr("quotas", "at most %d quotas", MaxQuotas)
	}
	if _, err := loadLocation(c.withDefaults().TimeZone); err != nil {
		return fieldErr("time_zone", "not a time zone this host knows (an IANA name such as Asia/Shanghai)")
	}
	if c.MaxInstitutions < 0 || c.MaxInstitutions > maxInstitutionsCap {
		return fieldErr("max_institutions", "must be from 1 to %d (0: the default, 4096)", maxInstitutionsCap)
	}
	type key struct {
		inst, purpose string
		per           Duration
	}
	seen := map[key]int{} // bounded by MaxQuotas
	for i, q := range c.Quotas {
		field := func(name string) string { return fmt.Sprintf("quotas[%d].%s", i, name) }
		if err := checkName(q.Institution); err != "" {
			return fieldErr(field("institution"), "%s", err)
		}
		if err := checkName(q.Purpose); err != "" {
			return fieldErr(field("purpose"), "%s", err)
		}
		if q.Limit < 1 {
			return fieldErr(field("limit"), "must be at least 1 (a quota of none would refuse every query: revoke the institution's certificate instead)")
		}
		if p := time.Duration(q.Per); p < time.Second || p > 366*24*time.Hour {
			return fieldErr(field("per"), "must be a duration from 1s to 8784h (366 days), e.g. 24h")
		}
		k := key{q.Institution, q.Purpose, q.Per}
		if j, dup := seen[k]; dup {
			return fieldErr(fmt.Sprintf("quotas[%d]", i), "has the institution, purpose and per of quotas[%d]: one of them would never count", j)
		}
		seen[k] = i
	}
	f := c.Flags
	for i, name := range f.Disable {
		if !slices.Contains(flagNames, name) {
			return fieldErr(fmt.Sprintf("flags.disable[%d]", i), "not a flag (%s)", strings.Join(flagNames, ", "))
		}
	}
	if w := time.Duration(f.Window); w != 0 && (w < time.Minute || w > 7*24*time.Hour) {
		return fieldErr("flags.window", "must be a duration from 1m to 168h")
	}
	if h := time.Duration(f.Hold); h < 0 || h > 366*24*time.Hour {
		return fieldErr("flags.hold", "must be a duration from 0s to 8784h")
	}
	for _, n := range []struct {
		field string
		v     int
		max   int
	}{
		{"flags.distinct_subjects", f.DistinctSubjects, maxDistinctCap},
		{"flags.distinct_cap", f.DistinctCap, maxDistinctCap},
		{"flags.distinct_budget", f.DistinctBudget, maxDistinctBudget},
		{"flags.off_hours_queries", f.OffHoursQueries, math.MaxInt32},
		{"flags.rare_purpose_after", f.RarePurposeAfter, math.MaxInt32},
		{"flags.batch_after", f.BatchAfter, batchHistory},
		{"flags.batch_min_rows", f.BatchMinRows, math.MaxInt32},
	} {
		if n.v < 0 || n.v > n.max {
			return fieldErr(n.field, "must be from 0 (the default) to %d", n.max)
		}
	}
	d := c.withDefaults().Flags
	if d.DistinctSubjects > d.DistinctCap {
		return fieldErr("flags.distinct_subjects", "is above flags.distinct_cap: the flag could never be raised")
	}
	if d.DistinctCap > d.DistinctBudget {
		return fieldErr("flags.distinct_cap", "is above flags.distinct_budget")
	}
	for _, x := range []struct {
		field string
		v     float64
	}{{"flags.reference_ratio", f.ReferenceRatio}, {"flags.rare_purpose_share", f.RarePurposeShare}} {
		if math.IsNaN(x.v) || x.v < 0 || x.v >= 1 {
			return fieldErr(x.field, "must be a fraction from 0 (the default) to below 1")
		}
	}
	if math.IsNaN(f.BatchFactor) || f.BatchFactor < 0 || (f.BatchFactor > 0 && f.BatchFactor <= 1) || f.BatchFactor > 1e6 {
		return fieldErr("flags.batch_factor", "must be above 1 and at most 1000000 (0: the default, 10)")
	}
	if _, _, err := parseHours(d.WorkingHours); err != "" {
		return fieldErr("flags.working_hours", "%s", err)
	}
	return nil
}

// checkName says what is wrong with an institution's or a purpose's name
// in a quota; "" if nothing.
func checkName(s string) string {
	if len(s) > maxName {
		return fmt.Sprintf("longer than %d bytes", maxName)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return "holds a control character"
		}
	}
	if s == otherName {
		return "is the name of the overflow account"
	}
	return ""
}

// parseHours reads "HH:MM-HH:MM" into minutes of the day; the message says
// what is wrong, "" if nothing.
func parseHours(s string) (from, to int, msg string) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, `must be "HH:MM-HH:MM", e.g. "07:00-21:00"`
	}
	var err string
	if from, err = parseClock(a); err != "" {
		return 0, 0, err
	}
	if to, err = parseClock(b); err != "" {
		return 0, 0, err
	}
	if from == to {
		return 0, 0, "begin and end at the same time (to never flag off-hours queries, list off_hours in flags.disable)"
	}
	return from, to, ""
}

func parseClock(s string) (int, string) {
	h, m, ok := strings.Cut(strings.TrimSpace(s), ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || len(h) != 2 || len(m) != 2 || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, `must be "HH:MM-HH:MM" with times from 00:00 to 24:00`
	}
	return hh*60 + mm, ""
}

// loadLocation loads a time zone; Asia/Shanghai falls back to a fixed
// UTC+08:00 zone where the host has no tzdata.
func loadLocation(name string) (*time.Location, error) {
	loc, err := time.LoadLocation(name)
	if err != nil && name == DefaultTimeZone {
		return time.FixedZone("CST", 8*60*60), nil
	}
	return loc, err
}
