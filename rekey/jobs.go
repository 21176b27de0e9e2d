package rekey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/jobs"
)

// State is what the jobs read of the replicated state
// (consensus.State).
type State interface {
	KeyStatus() (consensus.KeyStatus, error)
	KeyCurrent() uint32
}

// Reporter reports this node's key progress through Raft
// (consensus.Replica).
type Reporter interface {
	SubmitKeyProgress(ctx context.Context, v uint32, stage consensus.KeyStage) error
}

// JobName is the rotation job's name in the job runner, on every node.
const JobName = "keys"

// jobInterval is how often the job looks at the rotation; a rotation also
// wakes it (the lifecycle service after its install, the node after it
// applies one).
const jobInterval = 2 * time.Second

func job(run func(ctx context.Context, p *jobs.Progress) error) jobs.Job {
	return jobs.Job{Name: JobName, Interval: jobInterval, Timeout: 10 * time.Minute,
		RetryMin: 200 * time.Millisecond, RetryMax: 10 * time.Second, Patience: time.Minute, Run: run}
}

// CoordinatorConfig configures a coordinator's part.
type CoordinatorConfig struct {
	Self certs.Identity
	// Keys is the replica's keyring, which the FSM fills as it applies
	// installs.
	Keys     *consensus.IndexKeys
	State    State
	Reporter Reporter
	// Path is the key ring file; EncryptionKey the node's (nil: none).
	Path          string
	EncryptionKey []byte
	Logger        *slog.Logger
}

// Coordinator keeps a coordinator's key ring file in line with its
// keyring and reports the versions it holds.
type Coordinator struct {
	cfg CoordinatorConfig
	log *slog.Logger
	mu  sync.Mutex // one run at a time
	// switched is when the current version was switched to (zero:
	// version 1), for the custody check (Superseded).
	switched atomic.Pointer[time.Time]
}

// NewCoordinator returns a coordinator's part.
func NewCoordinator(cfg CoordinatorConfig) *Coordinator {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Coordinator{cfg: cfg, log: log}
}

// Job is the coordinator's part as a background job.
func (c *Coordinator) Job() jobs.Job {
	return job(func(ctx context.Context, p *jobs.Progress) error {
		held, err := c.Run(ctx)
		p.Set("held", int64(held))
		return err
	})
}

// Run stores the keyring's versions the key ring file lacks, then reports
// every installed version it holds and has not reported yet. It returns
// the highest version held.
func (c *Coordinator) Run(ctx context.Context) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.cfg.State.KeyStatus()
	if err != nil {
		return 0, err
	}
	c.noteSwitch(st)
	stored, err := LoadRing(c.cfg.Path, c.cfg.EncryptionKey)
	if err != nil {
		return 0, err
	}
	changed := false
	var highest uint32 = 1
	for _, v := range c.cfg.Keys.Versions() {
		if v < 2 {
			continue
		}
		key, ok := c.cfg.Keys.PseudonymKey(v)
		if !ok {
			continue
		}
		highest = max(highest, v)
		if have, ok := stored[v]; ok {
			if string(have) != string(key) {
				return 0, fmt.Errorf("rekey: key version %d in the key ring file differs from the one the federation installed", v)
			}
			continue
		}
		stored[v] = append(credit.PseudonymKey(nil), key...)
		changed = true
	}
	if changed {
		if err := SaveRing(c.cfg.Path, c.cfg.EncryptionKey, stored); err != nil {
			return 0, err
		}
		c.log.Info("stored a new pseudonym key version in the key ring file", "versions", Versions(stored))
	}
	var errs []error
	for _, vs := range st.Versions {
		if vs.Version < 2 || slices.Contains(vs.Held, c.cfg.Self.Region) {
			continue
		}
		if _, ok := stored[vs.Version]; !ok {
			continue // not received yet (the install not applied here)
		}
		if err := c.cfg.Reporter.SubmitKeyProgress(ctx, vs.Version, consensus.KeyHeld); err != nil {
			errs = append(errs, fmt.Errorf("rekey: report holding key version %d: %w", vs.Version, err))
			continue
		}
		c.log.Info("reported holding a pseudonym key version", "version", vs.Version)
	}
	return highest, errors.Join(errs...)
}

func (c *Coordinator) noteSwitch(st consensus.KeyStatus) {
	for _, vs := range st.Versions {
		if vs.Version == st.Current && !vs.Switched.IsZero() {
			at := vs.Switched
			c.switched.Store(&at)
		}
	}
}

// supersededMargin is how long after the switch (the leader's clock) a
// custody note still counts as of the old version: coordinators apply the
// switch a moment apart, and their clocks differ.
const supersededMargin = time.Minute

// Superseded reports whether a custody note taken at at may be of a key
// version no longer current (pseudonym.CustodyConfig.Superseded).
func (c *Coordinator) Superseded(at time.Time) bool {
	sw := c.switched.Load()
	return sw != nil && at.Before(sw.Add(supersededMargin))
}

// Outbox is what the district's part needs of its store (storage.DB).
type Outbox interface {
	MarkEverySubject(ctx context.Context) (int, error)
	OutboxLen() (int, error)
	JobState(name string) ([]byte, error)
	PutJobState(name string, state []byte) error
}

// DistrictConfig configures a district's part.
type DistrictConfig struct {
	Self     certs.Identity
	State    State
	Reporter Reporter
	Store    Outbox
	// Wake wakes the publisher once every subject is marked.
	Wake   func()
	Logger *slog.Logger
}

// stateName is where the district keeps its rotation's progress (in the
// job store, beside the runner's own j/keys).
const stateName = "keys.rotation"

// districtState is a district's progress through the rotation to Version.
type districtState struct {
	Version uint32 `cbor:"1,keyasint"`
	// Marked: every subject is marked for republishing under Version.
	Marked bool `cbor:"2,keyasint,omitempty"`
	// Done: every marked subject was republished (the outbox drained
	// since), each withdrawing its entry under the older version.
	Done bool `cbor:"3,keyasint,omitempty"`
	// Reported: the federation knows (CmdKeyProgress republished).
	Reported bool `cbor:"4,keyasint,omitempty"`
	// Marking counts the subjects marked.
	Subjects int `cbor:"5,keyasint,omitempty"`
}

// District re-pseudonymizes and republishes a district's subjects after a
// key switch, and tells the publisher which versions to use.
type District struct {
	cfg DistrictConfig
	log *slog.Logger
	mu  sync.Mutex
	// st caches the stored progress (Publishing reads it on every pass).
	st atomic.Pointer[districtState]
}

// NewDistrict returns a district's part, its progress read from the
// store.
func NewDistrict(cfg DistrictConfig) (*District, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &District{cfg: cfg, log: log}
	st, err := d.load()
	if err != nil {
		return nil, err
	}
	d.st.Store(&st)
	return d, nil
}

func (d *District) load() (districtState, error) {
	var st districtState
	b, err := d.cfg.Store.JobState(stateName)
	if err != nil || len(b) == 0 {
		return st, err
	}
	if err := cbor.Unmarshal(b, &st); err != nil {
		return districtState{}, fmt.Errorf("rekey: the rotation's progress does not decode: %w", err)
	}
	return st, nil
}

func (d *District) save(st districtState) error {
	b, err := encMode.Marshal(st)
	if err != nil {
		return err
	}
	if err := d.cfg.Store.PutJobState(stateName, b); err != nil {
		return err
	}
	d.st.Store(&st)
	return nil
}

// Publishing implements publish.Versions: the district publishes under
// the current version and, until it has republished every subject under
// it, withdraws each subject's entry under the version before.
func (d *District) Publishing() (current, withdraw uint32) {
	cur := d.cfg.State.KeyCurrent()
	if cur <= 1 {
		return cur, 0
	}
	if st := d.st.Load(); st != nil && st.Version == cur && st.Done {
		return cur, 0
	}
	return cur, cur - 1
}

// Job is the district's part as a background job.
func (d *District) Job() jobs.Job {
	return job(func(ctx context.Context, p *jobs.Progress) error {
		st, err := d.Run(ctx)
		p.Set("version", int64(st.Version))
		p.Set("subjects", int64(st.Subjects))
		return err
	})
}

// Run moves the district's rotation on by what it can do now: start it
// once its replica has applied a switch (mark every subject), note it done
// once the outbox has drained, then report it.
func (d *District) Run(ctx context.Context) (districtState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := *d.st.Load()
	cur := d.cfg.State.KeyCurrent()
	if cur <= 1 || (st.Version == cur && st.Reported) {
		return st, nil
	}
	if st.Version != cur {
		st = districtState{Version: cur}
		if err := d.save(st); err != nil {
			return st, err
		}
		d.log.Info("key rotation: republishing every subject under the new key version", "version", cur)
	}
	if !st.Marked {
		n, err := d.cfg.Store.MarkEverySubject(ctx)
		if err != nil {
			return st, err
		}
		st.Marked, st.Subjects = true, n
		if err := d.save(st); err != nil {
			return st, err
		}
		if d.cfg.Wake != nil {
			d.cfg.Wake()
		}
	}
	if !st.Done {
		left, err := d.cfg.Store.OutboxLen()
		if err != nil {
			return st, err
		}
		if left > 0 {
			return st, nil // the publisher is at it
		}
		st.Done = true
		if err := d.save(st); err != nil {
			return st, err
		}
		d.log.Info("key rotation: every subject republished", "version", cur, "subjects", st.Subjects)
	}
	if err := d.cfg.Reporter.SubmitKeyProgress(ctx, cur, consensus.KeyRepublished); err != nil {
		return st, fmt.Errorf("rekey: report republishing under key version %d: %w", cur, err)
	}
	st.Reported = true
	return st, d.save(st)
}
