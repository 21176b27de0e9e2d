package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"

	"credfed/certs"
	"credfed/credit"
)

// FSM is the thin raft.BatchingFSM over State: it decodes each command,
// looks its type up in the command table (commands.go), whose entry
// decodes the body, asks authz whether its proposer may issue it, and
// writes the result. An undecodable log entry is corruption and panics; a
// refused command is a result value (a *RefusedError) that reaches the
// proposer through the apply future and changes nothing.
type FSM struct {
	state      *State
	federation string
	log        *slog.Logger
	metrics    *metrics
	// onApplied, if set, is called after every applied batch (and every
	// restore) with the effects of the commands it held (the replica
	// reconciles Raft's configuration on registry changes).
	onApplied func(effect)
	// checking marks the copy that check runs appliers on: its refusals
	// are not counted as the FSM's.
	checking bool
}

// IndexResult is the result of a CmdIndexBatch: one error (nil when
// applied) per group, in the order of the batch.
type IndexResult struct {
	Errs []error
}

var (
	_ raft.BatchingFSM = (*FSM)(nil)
)

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch implements raft.BatchingFSM: one Badger transaction for the
// whole batch (split only if Badger finds it too big), the applied index
// written with it. Entries at or below the applied index were applied
// before a restart and are skipped: the state is on disk, not rebuilt.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	start := time.Now()
	if len(f.state.retired) > 0 {
		// A generation a restore replaced, held then by a read: drop it
		// once no read holds it (here, where nothing else writes).
		if err := f.state.dropRetired(); err != nil {
			f.log.Warn("could not drop the replaced state generation; retrying at the next batch", "error", err)
		}
	}
	results := make([]any, len(logs))
	applied := f.state.applied.get()
	w := newWriter(f.state.db, f.state.gen)
	defer w.discard()
	var effects effect
	applyAny := false
	last := applied
	for i, l := range logs {
		if l.Index <= applied {
			continue
		}
		if l.Type == raft.LogCommand {
			cmd, err := DecodeCommand(l.Data)
			if err != nil {
				panic(fmt.Sprintf("consensus: log entry %d is corrupt: %v", l.Index, err))
			}
			var e effect
			results[i], e = f.applyCommand(w, cmd, l.Index)
			w.keep()
			effects |= e
			applyAny = true
			f.metrics.applied.WithLabelValues(cmd.Type.String()).Inc()
		}
		w.put(keyApplied, binary.BigEndian.AppendUint64(nil, l.Index))
		last = l.Index
	}
	if last == applied {
		return results
	}
	if err := w.commit(); err != nil {
		// The state on disk is behind the log: stopping is the only safe
		// answer (a restart replays the log from the applied index).
		panic(fmt.Sprintf("consensus: commit applied state at index %d: %v", last, err))
	}
	if reload := effects & reloadAll; reload != 0 {
		if err := f.state.reload(reload); err != nil {
			panic(fmt.Sprintf("consensus: reload state at index %d: %v", last, err))
		}
	}
	if effects&(reloadKeys|reloadRegistry) != 0 {
		if err := f.reloadKeys(); err != nil {
			panic(fmt.Sprintf("consensus: reload key versions at index %d: %v", last, err))
		}
	}
	f.state.applied.set(last)
	f.metrics.appliedIndex.Set(float64(last))
	f.metrics.applyDuration.Observe(time.Since(start).Seconds())
	if f.onApplied != nil && applyAny {
		f.onApplied(effects)
	}
	return results
}

// applyCommand applies one command within w and returns its result and
// the effects of its type.
func (f *FSM) applyCommand(w *writer, c Command, index uint64) (any, effect) {
	if spec := commandFor(c.Type); spec != nil {
		return spec.apply(f, w, c, index), spec.effects
	}
	if c.Type&IgnoreUnknown != 0 {
		f.log.Warn("skipping unknown command marked ignorable", "type", uint8(c.Type), "index", index)
		return nil, 0
	}
	panic(fmt.Sprintf("consensus: log entry %d has unknown command type %d; upgrade this node", index, c.Type))
}

// applyIndexBatch applies a CmdIndexBatch: index updates in the clear,
// which leaders proposed before the index was sealed (a log written by an
// older binary). The leader builds index batches itself (never relayed),
// so a body that does not decode is corruption. A node without the index
// key (a district) skips it and keeps nothing of it.
func (f *FSM) applyIndexBatch(w *writer, c Command, index uint64) any {
	if f.state.keys == nil {
		return nil
	}
	var b IndexBatch
	if err := decodeBody(c, &b); err != nil {
		panic(err.Error())
	}
	return f.applyIndexGroups(w, c, b, index)
}

// applySealedIndexBatch applies a CmdSealedIndexBatch. A node without the
// index key skips it: it keeps nothing of the index, not even the
// ciphertext, and its applied index moves on as for any entry. A
// coordinator opens it; a batch that does not open is corruption (the
// leader sealed it with a key this node holds, so the bytes changed), and
// the FSM stops as for an undecodable entry. A batch sealed with a key
// version this node does not hold stops it too: skipping it would leave
// this coordinator's index without those entries for good (lookups would
// miss districts without anyone noticing), so the node must not go on
// until it is given that version (a rotation that switched the sealing
// version before every coordinator held it; IndexKeys).
func (f *FSM) applySealedIndexBatch(w *writer, c Command, index uint64) any {
	if f.state.keys == nil {
		return nil
	}
	var s SealedIndexBatch
	if err := decodeBody(c, &s); err != nil {
		panic(fmt.Sprintf("consensus: log entry %d is corrupt: %v", index, err))
	}
	b, err := f.state.keys.openBatch(s, f.federation)
	switch {
	case errors.Is(err, errUnknownIndexKey):
		panic(fmt.Sprintf("consensus: log entry %d: index batch %v; install that index key version on this coordinator and restart it", index, err))
	case err != nil:
		panic(fmt.Sprintf("consensus: log entry %d is corrupt: sealed index batch: %v", index, err))
	}
	return f.applyIndexGroups(w, c, b, index)
}

// applyIndexGroups authorizes each group of an index batch on its own and
// writes the authorized ones.
func (f *FSM) applyIndexGroups(w *writer, c Command, b IndexBatch, index uint64) any {
	res := IndexResult{Errs: make([]error, len(b.Groups))}
	for i, g := range b.Groups {
		if err := f.authorizeIndex(w, g); err != nil {
			res.Errs[i] = err
			f.metrics.refused.WithLabelValues(c.Type.String()).Inc()
			continue
		}
		applyIndexGroup(w, g, index)
		f.metrics.indexUpdates.Add(float64(len(g.Updates)))
	}
	return res
}

// refused drops the staged writes of a refused command and returns its
// result.
func (f *FSM) refused(w *writer, c Command, err error) any {
	if err != nil {
		w.drop()
		if !f.checking {
			f.metrics.refused.WithLabelValues(c.Type.String()).Inc()
		}
		return err
	}
	return nil
}

// check runs the applier of c (an operator command or a federation init)
// against the applied state, in a transaction it discards, and returns
// the refusal the FSM would answer if c were applied now: the leader's
// check before it proposes. The FSM still decides at apply (the state may
// change in between); check only keeps commands that would be refused
// now out of the log. It may run beside the FSM: it only reads, in its
// own transaction, a generation it holds.
func (f *FSM) check(c Command) error {
	spec := commandFor(c.Type)
	if spec == nil {
		return refuse(ErrInvalid, "command type %d is unknown", uint8(c.Type))
	}
	g, _ := f.state.acquire()
	defer g.release()
	w := newWriter(f.state.db, g)
	defer w.discard()
	dry := *f
	dry.checking = true
	if err, ok := spec.apply(&dry, w, c, 0).(error); ok && err != nil {
		return err
	}
	return nil
}

// applyIndexGroup writes the updates of one authorized group. An update
// whose Seq is not above the entry's is ignored (a retry, or an older
// update arriving late). The district's watermark — the highest Seq it
// has had applied — spares most of those comparisons: every entry of the
// district holds a Seq at or below it, so an update above it is newer
// than its entry and is written without reading it. A publisher sends its
// changes in sequence order, so only retries and races take the read.
// Authorized updates cannot be refused any more: they are written past
// the staging (put).
//
// An update whose summary is Withdrawn deletes its entry (a district
// withdrawing a subject's pseudonym of an older key version: keys.go); an
// older update arriving after it would write the entry again, which the
// district never sends (it publishes under the current version only).
func applyIndexGroup(w *writer, g IndexGroup, index uint64) {
	wmKey := watermarkKey(g.Proposer.Region)
	high := w.getUint(wmKey)
	wm := high
	for _, u := range g.Updates {
		key := entryKey(u.Pseudonym, u.District)
		if u.Seq <= high {
			var old entryValue
			if found := w.getCBOR(key, &old); found && old.Seq >= u.Seq {
				continue
			}
		} else {
			high = u.Seq
		}
		if u.Summary.Withdrawn {
			w.remove(key)
			continue
		}
		val, err := encMode.Marshal(entryValue{Summary: u.Summary, Seq: u.Seq, Index: index})
		if err != nil {
			panic(fmt.Sprintf("consensus: encode index entry: %v", err))
		}
		w.put(key, val)
	}
	if high > wm {
		w.put(wmKey, binary.BigEndian.AppendUint64(nil, high))
	}
}

func (f *FSM) applyRegionPut(w *writer, c Command, r Region, index uint64) error {
	if err := f.authorizeOperator(w, c, r.Path); err != nil {
		return err
	}
	if err := f.authorizeCoordinatorRegion(w, c, r); err != nil {
		return err
	}
	if err := f.validRegion(w, r); err != nil {
		return err
	}
	var old Region
	if w.getCBOR(regionKey(r.Path), &old) {
		if old.Role != r.Role {
			return refuse(ErrConflict, "region %s is a %s; remove it before registering it as a %s", r.Path, old.Role, r.Role)
		}
		r.Since, r.Registered = old.Since, old.Registered
	} else {
		r.Since, r.Registered = c.At, index
	}
	w.setCBOR(regionKey(r.Path), r)
	return nil
}

func (f *FSM) validRegion(w *writer, r Region) error {
	if err := certs.CheckRegion(r.Path); err != nil {
		return refuse(ErrInvalid, "region path: %v", err)
	}
	if !r.Role.IsNode() {
		return refuse(ErrInvalid, "region %s: role %q is not a node role", r.Path, r.Role)
	}
	parent := certs.ParentRegion(r.Path)
	switch {
	case r.Role == certs.Province && parent != "":
		return refuse(ErrInvalid, "province region %s must be top-level", r.Path)
	case r.Role != certs.Province && parent == "":
		return refuse(ErrInvalid, "%s region %s needs a parent region", r.Role, r.Path)
	case parent != "" && w != nil && !w.has(regionKey(parent)):
		return refuse(ErrNotFound, "parent region %s of %s is not registered", parent, r.Path)
	}
	if parent != "" && w != nil {
		// The tree is province → city → district (a district may hang off
		// its province directly): nothing below a district, a city only
		// below a province.
		var p Region
		w.getCBOR(regionKey(parent), &p)
		switch {
		case p.Role == certs.District:
			return refuse(ErrInvalid, "region %s: its parent %s is a district, and nothing is below a district", r.Path, parent)
		case r.Role == certs.City && p.Role != certs.Province:
			return refuse(ErrInvalid, "city region %s: a city's parent must be a province, not the %s %s", r.Path, p.Role, parent)
		}
	}
	return nil
}

// authorizeCoordinatorRegion holds a region that coordinates (a city or
// province, which receives the pseudonym key when its node joins) or votes
// in Raft to an operator of a province region.
func (f *FSM) authorizeCoordinatorRegion(w *writer, c Command, r Region) error {
	if r.Role.IsCoordinatorNode() || r.Voter {
		return f.authorizeFederationOperator(w, c)
	}
	return nil
}

func (f *FSM) applyRegionRemove(w *writer, c Command, r RegionRemove) error {
	if err := f.authorizeOperator(w, c, r.Path); err != nil {
		return err
	}
	if c.Actor.Region == r.Path {
		// Its own operator would flush its audit anchors with it.
		return refuse(ErrForbidden, "an operator of %s may not remove its own region: an operator above it does", r.Path)
	}
	if !w.has(regionKey(r.Path)) {
		return refuse(ErrNotFound, "region %s is not registered", r.Path)
	}
	children := 0
	w.scanKeys(regionKey(r.Path+"/"), func([]byte) { children++ })
	if children > 0 {
		return refuse(ErrConflict, "region %s still has %d regions below it", r.Path, children)
	}
	var old Region
	w.getCBOR(regionKey(r.Path), &old)
	w.delete(regionKey(r.Path))
	w.delete(joinTokenKey(r.Path))
	deleteAuditAnchors(w, r.Path) // a node put back there starts a new audit log
	if r.SuspendNode {
		id := old.Identity(f.federation).String()
		key := append(append([]byte(nil), prefixSuspended...), id...)
		var have certs.Suspension
		if !w.getCBOR(key, &have) || !have.IssuedBefore.IsZero() {
			// A suspension of every certificate of the identity stays as
			// it is; otherwise every one issued until now is refused.
			// Certificate times have a resolution of a second: a
			// certificate issued in the second of the removal, after it
			// (the node of the region added again), is not refused.
			w.setCBOR(key, certs.Suspension{Identity: id, Reason: RegionRemovedReason, At: c.At, By: c.Actor.Region,
				IssuedBefore: c.At.Truncate(time.Second)})
			w.setUint(keyRevVersion, w.getUint(keyRevVersion)+1)
		}
	}
	return nil
}

func (f *FSM) applyCatalogPublish(w *writer, c Command, p CatalogPublish) error {
	if err := f.authorizeFederationOperator(w, c); err != nil {
		return err
	}
	return putCatalog(w, p.Catalog)
}

func putCatalog(w *writer, cat *credit.Catalog) error {
	if cat == nil {
		return refuse(ErrInvalid, "no catalog")
	}
	if err := cat.Validate(); err != nil {
		return refuse(ErrInvalid, "catalog: %v", err)
	}
	cur := w.getUint(keyCatalogVersion)
	if uint64(cat.Version) != cur+1 {
		return refuse(ErrConflict, "catalog version %d is not the next version (current %d)", cat.Version, cur)
	}
	w.setCBOR(catalogKey(cat.Version), cat)
	w.setUint32(keyCatalogVersion, uint32(cat.Version))
	return nil
}

func (f *FSM) applyRevoke(w *writer, c Command, r certs.Revocation) error {
	if err := f.authorizeFederationOperator(w, c); err != nil {
		return err
	}
	serial, err := certs.ParseSerial(r.Serial)
	if err != nil {
		return refuse(ErrInvalid, "%v", err)
	}
	if err := certs.CheckReason(r.Reason); err != nil {
		return refuse(ErrInvalid, "%v", err)
	}
	key := append(append([]byte(nil), prefixRevoked...), serial...)
	if w.has(key) {
		return nil // revoked already; keep the first reason
	}
	r.Serial, r.At = serial, c.At
	w.setCBOR(key, r)
	w.setUint(keyRevVersion, w.getUint(keyRevVersion)+1)
	return nil
}

func (f *FSM) applySuspend(w *writer, c Command, s certs.Suspension) error {
	id, err := certs.ParseIdentity(s.Identity)
	if err != nil {
		return refuse(ErrInvalid, "%v", err)
	}
	if id.Federation != f.federation {
		return refuse(ErrInvalid, "identity %s is not of federation %s", id, f.federation)
	}
	if err := f.authorizeOperator(w, c, id.Region); err != nil {
		return err
	}
	if err := certs.CheckReason(s.Reason); err != nil {
		return refuse(ErrInvalid, "%v", err)
	}
	key := append(append([]byte(nil), prefixSuspended...), id.String()...)
	var old certs.Suspension
	if w.getCBOR(key, &old) && old.By != "" && !certs.InRegion(old.By, c.Actor.Region) {
		return refuse(ErrForbidden, "identity %s was suspended by an operator of %s; only an operator of %s or a region above it changes that", id, old.By, old.By)
	}
	s.Identity, s.At, s.By = id.String(), c.At, c.Actor.Region
	s.IssuedBefore = time.Time{} // an operator's suspension covers every certificate
	w.setCBOR(key, s)
	w.setUint(keyRevVersion, w.getUint(keyRevVersion)+1)
	return nil
}

func (f *FSM) applyReinstate(w *writer, c Command, r Reinstate) error {
	id, err := certs.ParseIdentity(r.Identity)
	if err != nil {
		return refuse(ErrInvalid, "%v", err)
	}
	if id.Federation != f.federation {
		return refuse(ErrInvalid, "identity %s is not of federation %s", id, f.federation)
	}
	if err := f.authorizeOperator(w, c, id.Region); err != nil {
		return err
	}
	key := append(append([]byte(nil), prefixSuspended...), id.String()...)
	var old certs.Suspension
	if !w.getCBOR(key, &old) {
		return nil // not suspended (any more): lifting it again changes nothing
	}
	if old.By != "" && !certs.InRegion(old.By, c.Actor.Region) {
		return refuse(ErrForbidden, "identity %s was suspended by an operator of %s; only an operator of %s or a region above it lifts that", id, old.By, old.By)
	}
	w.delete(key)
	w.setUint(keyRevVersion, w.getUint(keyRevVersion)+1)
	return nil
}

func (f *FSM) applyInit(w *writer, c Command, fi FederationInit) error {
	if c.Proposer.Role != certs.Province || c.Proposer.Federation != f.federation {
		return refuse(ErrForbidden, "only a province node initializes the federation, not %s", c.Proposer)
	}
	nonEmpty := false
	w.scanKeys(prefixRegion, func([]byte) { nonEmpty = true })
	if nonEmpty {
		return refuse(ErrConflict, "the federation is initialized already")
	}
	self := false
	for _, r := range fi.Regions {
		if r.Path == c.Proposer.Region && r.Role == certs.Province {
			self = true
		}
	}
	if !self {
		return refuse(ErrInvalid, "the initial registry must hold the proposing province %s", c.Proposer.Region)
	}
	// Parents first, so that each region's parent is checked against the
	// regions already written.
	regions := append([]Region(nil), fi.Regions...)
	sortByDepth(regions)
	for _, r := range regions {
		if err := f.validRegion(w, r); err != nil {
			return err
		}
		if w.has(regionKey(r.Path)) {
			return refuse(ErrInvalid, "region %s is listed twice", r.Path)
		}
		r.Since = c.At
		w.setCBOR(regionKey(r.Path), r)
	}
	return putCatalog(w, fi.Catalog)
}

// fsmSnapshot pins a Badger read view of the live generation; Persist
// streams it while Apply goes on. It holds the generation as a read
// (State.acquire) until Release, so a restore that replaces the
// generation meanwhile does not drop it under the snapshot.
type fsmSnapshot struct {
	txn     *badger.Txn
	gen     *generation
	applied uint64 // the applied index the read view reflects
	state   *State
	keys    *IndexKeys
	metrics *metrics
	release sync.Once
}

// Snapshot implements raft.FSM: it only pins a read view.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	g, applied := f.state.acquire()
	return &fsmSnapshot{txn: f.state.db.NewTransaction(false), gen: g, applied: applied, state: f.state, keys: f.state.keys,
		metrics: f.metrics}, nil
}

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	n, entries, err := writeSnapshot(sink, s.txn, s.gen, s.keys)
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("consensus: snapshot: %w", err)
	}
	// The snapshot counted the index on the way: the count for free.
	s.state.noteEntryCount(entries, s.applied, s.gen)
	s.metrics.snapshotDuration.Observe(time.Since(start).Seconds())
	s.metrics.snapshotBytes.Set(float64(n))
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() {
	s.release.Do(func() {
		s.txn.Discard()
		s.gen.release()
	})
}

// Restore implements raft.FSM: it replaces the whole replicated state with
// the snapshot's, switching to it only once it is complete and synced
// (State.restore), and reloads the caches.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	start := time.Now()
	applied, err := f.state.restore(rc, f.widenKeys)
	switch {
	case errors.Is(err, errDropLater):
		f.log.Warn("restored state from snapshot; the replaced state is dropped later", "error", err)
	case err != nil:
		return fmt.Errorf("consensus: restore: %w", err)
	}
	if err := f.reloadKeys(); err != nil {
		return fmt.Errorf("consensus: restore: %w", err)
	}
	f.log.Info("restored replicated state from snapshot", "applied_index", applied, "seconds", time.Since(start).Seconds())
	f.metrics.appliedIndex.Set(float64(applied))
	f.metrics.restores.Inc()
	if f.onApplied != nil {
		f.onApplied(reloadAll | registryChanged)
	}
	return nil
}
