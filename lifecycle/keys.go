package lifecycle

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"credfed/api"
	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/fault"
	"credfed/storage"
)

// Key rotation (consensus/keys.go tells the protocol). `credfed keys
// rotate` is one command that does the next step of a rotation each time
// it is run, so it is safe to repeat and to interrupt:
//
//   - no rotation under way: it generates the next pseudonym key, seals it
//     under the current index key and installs it (CmdKeyInstall), then
//     waits a little for every coordinator to hold it and switches to it;
//   - a version installed, not current: it switches to it once every
//     coordinator holds it (CmdKeySwitch), or says whom it waits for;
//   - the current version still being republished by districts: it says
//     which, and starts nothing (a new rotation starts once the last one
//     is complete).
//
// Every install and switch, done or refused, is audited ("keys.install",
// "keys.switch"); the key itself is never in an audit entry, a log line or
// an answer.

// KeysConfig is what key rotation needs beyond Config (coordinators).
type KeysConfig struct {
	// Keys is the replica's keyring: it seals the new key.
	Keys *consensus.IndexKeys
	// Status is the replicated key status (consensus.State.KeyStatus).
	Status func() (consensus.KeyStatus, error)
	// Wake wakes this node's key job, which stores a new version and
	// reports holding it.
	Wake func()
}

// Rotation waits.
const (
	DefaultRotateWait = 20 * time.Second
	MaxRotateWait     = 2 * time.Minute
)

func (s *Service) keys() (*KeysConfig, *fault.Error) {
	if s.cfg.Keys == nil || s.cfg.Keys.Keys == nil || s.cfg.Keys.Status == nil {
		return nil, fault.New(fault.Unavailable, "this node holds no pseudonym keys: rotate keys at a province or city node")
	}
	return s.cfg.Keys, nil
}

// KeyStatus returns the key versions and the rotation's progress as this
// node has applied them (operators).
func (s *Service) KeyStatus(ctx context.Context, caller certs.Identity) (api.KeyStatus, error) {
	if caller.Role != certs.Operator {
		return api.KeyStatus{}, fault.New(fault.Forbidden, "the key status is shown to operators, not to a %s certificate", caller.Role)
	}
	kc, e := s.keys()
	if e != nil {
		return api.KeyStatus{}, e
	}
	st, err := kc.Status()
	if err != nil {
		return api.KeyStatus{}, fault.Wrap(fault.Unavailable, err, "the key status could not be read")
	}
	return keyStatus(st), nil
}

// RotateKeys does the next step of a key rotation (operator of the
// province, at a coordinator node) and returns the status after it. wait
// bounds how long it waits for every coordinator to hold a new version
// before it switches (0: DefaultRotateWait).
func (s *Service) RotateKeys(ctx context.Context, caller certs.Identity, wait time.Duration) (api.KeyStatus, error) {
	entry := audit.By(caller, "keys.rotate")
	fail := func(e error) (api.KeyStatus, error) { return api.KeyStatus{}, s.refuse(&entry, e) }
	done := func(out api.KeyStatus, v uint32) (api.KeyStatus, error) {
		entry.Decision, entry.Reference = storage.DecisionAllowed, fmt.Sprintf("version %d: %s", v, out.Step)
		if err := s.cfg.Audit.Record(entry); err != nil {
			return api.KeyStatus{}, err
		}
		return out, nil
	}
	switch {
	case caller.Role != certs.Operator:
		return fail(fault.New(fault.Forbidden, "keys are rotated by operators of the province, not with a %s certificate", caller.Role))
	case !s.cfg.Self.Role.IsCoordinatorNode():
		return fail(fault.New(fault.Forbidden, "keys are rotated through a province or city node; this is a %s node", s.cfg.Self.Role))
	}
	kc, e := s.keys()
	if e != nil {
		return fail(e)
	}
	switch {
	case wait == 0:
		wait = DefaultRotateWait
	case wait < 0 || wait > MaxRotateWait:
		return fail(fault.Field(fault.BadRequest, "wait", "must be a duration up to %v", MaxRotateWait))
	}
	// Decide from the state as the leader has committed it.
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_ = s.cfg.Replica.ReadBarrier(bctx)
	cancel()
	st, err := kc.Status()
	if err != nil {
		return api.KeyStatus{}, fault.Wrap(fault.Unavailable, err, "the key status could not be read")
	}
	latest := st.Versions[len(st.Versions)-1]
	step := "none"
	switch {
	case latest.Version == st.Current && len(latest.AwaitingRepublish) > 0:
		out := keyStatus(st)
		out.Step, out.Message = "waiting", fmt.Sprintf("the rotation to key version %d is under way: %d districts have not republished under it yet (%s); a new rotation starts once it is complete",
			st.Current, len(latest.AwaitingRepublish), strings.Join(latest.AwaitingRepublish, ", "))
		return done(out, st.Current)
	case latest.Version == st.Current:
		if err := s.installKey(ctx, caller, kc, st.Current+1); err != nil {
			return fail(err)
		}
		step = "installed"
	}
	next := max(latest.Version, st.Current+1)
	// Wait for every coordinator to hold it, then switch.
	if kc.Wake != nil {
		kc.Wake()
	}
	deadline := time.Now().Add(wait)
	for {
		if st, err = kc.Status(); err != nil {
			return api.KeyStatus{}, fault.Wrap(fault.Unavailable, err, "the key status could not be read")
		}
		v := versionOf(st, next)
		if v != nil && len(v.AwaitingHold) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			out := keyStatus(st)
			out.Step = step
			if step == "none" {
				out.Step = "waiting"
			}
			if v != nil {
				out.Message = fmt.Sprintf("key version %d is not held yet by %s: run credfed keys rotate again to switch to it once they have stored it",
					next, strings.Join(v.AwaitingHold, ", "))
			}
			return done(out, next)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
		bctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = s.cfg.Replica.ReadBarrier(bctx)
		cancel()
	}
	sw := audit.By(caller, "keys.switch")
	sw.Reference = fmt.Sprintf("version %d", next)
	if _, err := s.cfg.Replica.Apply(ctx, consensus.CmdKeySwitch, caller, consensus.KeySwitch{Version: next}); err != nil {
		e := commandFault(err)
		if rerr := s.refuse(&sw, e); rerr != e {
			return api.KeyStatus{}, rerr // the refusal could not be audited
		}
		return fail(e)
	}
	sw.Decision = storage.DecisionAllowed
	if err := s.cfg.Audit.Record(sw); err != nil {
		return api.KeyStatus{}, err
	}
	bctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	_ = s.cfg.Replica.ReadBarrier(bctx)
	cancel()
	if st, err = kc.Status(); err != nil {
		return api.KeyStatus{}, fault.Wrap(fault.Unavailable, err, "the key status could not be read")
	}
	out := keyStatus(st)
	out.Step = "switched"
	out.Message = fmt.Sprintf("key version %d is current; every district now republishes its subjects under it (credfed keys status shows which are done)", next)
	return done(out, next)
}

// installKey generates key version v and installs it through Raft, sealed
// under the current index key.
func (s *Service) installKey(ctx context.Context, caller certs.Identity, kc *KeysConfig, v uint32) error {
	entry := audit.By(caller, "keys.install")
	entry.Reference = fmt.Sprintf("version %d", v)
	key, err := credit.NewPseudonymKey()
	if err != nil {
		return s.refuse(&entry, fault.Wrap(fault.Internal, err, "no randomness for a new key"))
	}
	in, err := kc.Keys.SealPseudonymKey(v, key, s.cfg.Self.Federation)
	clear(key) // the log carries it sealed; every coordinator opens it from there
	if err != nil {
		return s.refuse(&entry, fault.Wrap(fault.Internal, err, "the new key could not be sealed"))
	}
	if _, err := s.cfg.Replica.Apply(ctx, consensus.CmdKeyInstall, caller, in); err != nil {
		if errors.Is(err, consensus.ErrOutcomeUnknown) {
			return s.refuse(&entry, fault.Wrap(fault.Unavailable, err, "the install's outcome is unknown (a leader change): run credfed keys rotate again, which continues it if it was installed"))
		}
		return s.refuse(&entry, commandFault(err))
	}
	entry.Decision = storage.DecisionAllowed
	return s.cfg.Audit.Record(entry)
}

func versionOf(st consensus.KeyStatus, v uint32) *consensus.KeyVersionStatus {
	for i := range st.Versions {
		if st.Versions[i].Version == v {
			return &st.Versions[i]
		}
	}
	return nil
}

// keyStatus is the API's view of the key status.
func keyStatus(st consensus.KeyStatus) api.KeyStatus {
	out := api.KeyStatus{Current: st.Current, IndexFloor: st.IndexFloor, Versions: []api.KeyVersion{}}
	for _, v := range st.Versions {
		kv := api.KeyVersion{Version: v.Version, Phase: v.Phase, Installed: v.Installed.UTC(), InstalledBy: v.InstalledBy,
			Switched: v.Switched.UTC(), SwitchedBy: v.SwitchedBy, Held: v.Held, AwaitingHold: v.AwaitingHold,
			Republished: v.Republished, AwaitingRepublish: v.AwaitingRepublish}
		if v.Installed.IsZero() {
			kv.Installed = time.Time{}
		}
		if v.Switched.IsZero() {
			kv.Switched = time.Time{}
		}
		if v.Version < st.Current {
			// Destroying an old version is not offered: it opens the log
			// entries and snapshots sealed under it until every node has
			// snapshotted past the next version's switch, and finds the
			// audit entries written under its pseudonyms for the audit
			// retention period.
			kv.RetainedFor = []string{"raft_log_and_snapshots", "audit"}
		}
		out.Versions = append(out.Versions, kv)
	}
	return out
}

// rotatedKeys is the key versions 2 and up in a join's answer (version →
// hex), nil if there are none.
func (rc *RegionsConfig) rotatedKeys() map[string]string {
	if rc.PseudonymKeys == nil {
		return nil
	}
	var out map[string]string
	for v, k := range rc.PseudonymKeys() {
		if v < 2 {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[strconv.FormatUint(uint64(v), 10)] = hex.EncodeToString(k)
	}
	return out
}
