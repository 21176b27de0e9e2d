package bench

import (
	"errors"
	"fmt"
	"io"
	"time"

	"credfed/localfed"
)

// Config is one run of the bench.
type Config struct {
	// Quick is the CI run: small data, few short rounds, under two
	// minutes on a 2-core machine. It only changes the defaults of the
	// fields left zero.
	Quick bool
	// InProcess runs the nodes and the front in this process
	// instead of as processes of Executable; the CPU and memory figures
	// need separate processes and are skipped then.
	InProcess bool
	// Executable is the credfed binary that runs `credfed node` and
	// `credfed bench front` (os.Executable for the command itself);
	// required unless InProcess.
	Executable string
	// Districts is the number of district nodes: default 4 (the demo's),
	// up to localfed.MaxDistricts, spread over the 2 cities.
	Districts int
	// Subjects is the number of subjects loaded before the rounds (every
	// fifth in two districts): default 100,000 (quick 2,000).
	Subjects int
	// Rounds is the number of interleaved rounds: default 3 (quick 2).
	Rounds int
	// LookupDuration is how long each lookup measurement runs: default
	// 10 s (quick 2 s).
	LookupDuration time.Duration
	// Intake is the number of records of each intake measurement: default
	// 200,000 (quick 10,000).
	Intake int
	// IntakeClients submit the intake's batches at once: default 4.
	IntakeClients int
	// NoBaseline measures credfed alone, as when PostgreSQL is missing.
	NoBaseline bool
	// ProfileDir, when set, receives what the nodes' pprof endpoints give
	// during the first round (processes only): CPU profiles of the province
	// and the intake district during the lookups at 64 clients and the
	// intake, execution traces of the province and the districts during
	// the lookups at 1 client, and the intake district's heap at the end
	// of the intake, once the index shows it (outside index_lag's window).
	ProfileDir string
	// Progress receives what the bench is doing, a line at a time (nil:
	// nothing).
	Progress io.Writer
	// Timeout bounds the whole run: default 30 minutes (quick 5).
	Timeout time.Duration
}

// ErrConfig matches every *ConfigError.
var ErrConfig = errors.New("bench: invalid configuration")

// ConfigError names the setting of a refused configuration.
type ConfigError struct {
	Field, Message string
}

func (e *ConfigError) Error() string        { return "bench: " + e.Field + ": " + e.Message }
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

// Bounds of the settings.
const (
	MaxSubjects      = 10_000_000
	MaxRounds        = 20
	MaxIntake        = 5_000_000
	MaxIntakeClients = 64
	// LookupClients is the concurrency of the lookup_c64 figures.
	LookupClients = 64
	// IntakeBatch is the records of one intake request or transaction.
	IntakeBatch = 1000
)

// WithDefaults fills in the zero fields.
func (c Config) WithDefaults() Config {
	pick := func(quick, full int) int {
		if c.Quick {
			return quick
		}
		return full
	}
	if c.Districts == 0 {
		c.Districts = 4
	}
	if c.Subjects == 0 {
		c.Subjects = pick(2000, 100_000)
	}
	if c.Rounds == 0 {
		c.Rounds = pick(2, 3)
	}
	if c.LookupDuration == 0 {
		c.LookupDuration = time.Duration(pick(2, 10)) * time.Second
	}
	if c.Intake == 0 {
		c.Intake = pick(10_000, 200_000)
	}
	if c.IntakeClients == 0 {
		c.IntakeClients = 4
	}
	if c.Timeout == 0 {
		c.Timeout = time.Duration(pick(5, 30)) * time.Minute
	}
	return c
}

// Validate refuses settings out of their bounds, naming the setting.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Message: fmt.Sprintf(format, args...)}
	}
	switch {
	case c.Districts < 2 || c.Districts > localfed.MaxDistricts:
		return bad("districts", "must be 2 to %d, got %d", localfed.MaxDistricts, c.Districts)
	case c.Subjects < 10 || c.Subjects > MaxSubjects:
		return bad("subjects", "must be 10 to %d, got %d", MaxSubjects, c.Subjects)
	case c.Rounds < 1 || c.Rounds > MaxRounds:
		return bad("rounds", "must be 1 to %d, got %d", MaxRounds, c.Rounds)
	case c.LookupDuration < 500*time.Millisecond || c.LookupDuration > 10*time.Minute:
		return bad("duration", "must be 500ms to 10m, got %v", c.LookupDuration)
	case c.Intake < IntakeBatch || c.Intake > MaxIntake:
		return bad("intake", "must be %d to %d records, got %d", IntakeBatch, MaxIntake, c.Intake)
	case c.IntakeClients < 1 || c.IntakeClients > MaxIntakeClients:
		return bad("intake-clients", "must be 1 to %d, got %d", MaxIntakeClients, c.IntakeClients)
	case c.Timeout <= 0 || c.Timeout > 24*time.Hour:
		return bad("timeout", "must be above 0 and at most 24h, got %v", c.Timeout)
	case !c.InProcess && c.Executable == "":
		return bad("executable", "the credfed binary is needed to run nodes as processes")
	case c.ProfileDir != "" && c.InProcess:
		return bad("profile", "profiles are taken from node processes; not with the in-process mode")
	}
	return nil
}
