package node

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"credfed/api"
	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/httpapi"
	"credfed/storage"
)

// The audit log's anchors in Raft (audit/anchor.go): the node checks its
// chain against them at start, before any service writes to it, and
// refuses to start if they do not match; it anchors its head as it goes
// (a job) and once more at a clean stop, before Raft closes.
const (
	// auditCheckWait bounds how long the start check waits to catch up
	// with the Raft leader before it checks against the anchors the
	// replica holds.
	auditCheckWait = 5 * time.Second
	// auditStopWait bounds the anchor at stop.
	auditStopWait = 5 * time.Second
	// restoreCheckWait is auditCheckWait at the first start after a
	// restore, which must catch up (a fresh replica takes the leader's
	// snapshot) to learn which anchors the restore lost.
	restoreCheckWait = time.Minute
)

// replicaAnchors is the replica as the anchorer sees it.
type replicaAnchors struct{ rep *consensus.Replica }

func (r replicaAnchors) SubmitAnchor(ctx context.Context, seq uint64, hash [32]byte) error {
	return r.rep.SubmitAnchor(ctx, seq, hash)
}

func (r replicaAnchors) AuditAnchors(node string) ([]consensus.AuditAnchor, error) {
	return r.rep.State().AuditAnchors(node)
}

func (r replicaAnchors) ReadBarrier(ctx context.Context) error { return r.rep.ReadBarrier(ctx) }

func (r replicaAnchors) Applied() uint64 { return r.rep.State().Applied() }

// checkAudit builds the node's anchorer and checks the audit log against
// its anchors: a log that does not match stops the start here, with the
// first bad entry and the kind of tampering in the error.
func (n *Node) checkAudit() error {
	n.anchorer = audit.NewAnchorer(audit.AnchorConfig{Node: n.cfg.Region, Chain: n.db.Audit(), Anchors: replicaAnchors{n.rep},
		Entries: n.cfg.AuditAnchorEntries, Interval: time.Duration(n.cfg.AuditAnchorInterval), Logger: n.log, Registerer: n.registry})
	wait := auditCheckWait
	if ms, err := n.db.Restores(); err != nil {
		return fmt.Errorf("node: %w", err)
	} else if len(ms) > 0 && !ms[len(ms)-1].Settled() {
		wait = restoreCheckWait
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := n.anchorer.Check(ctx); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// recordRestore writes, at the first start after a restore, the restore
// into the audit log: the chain itself then says where it went on from a
// backup, and the anchors made after it cover that.
func (n *Node) recordRestore() error {
	m, settledNow, ok := n.anchorer.Restored()
	if !ok || !settledNow {
		return nil
	}
	e := storage.AuditEntry{Node: n.cfg.Region, Operation: "restore", Decision: storage.DecisionAllowed,
		Reference: "backup " + m.Backup + " of " + m.TakenAt.UTC().Format(time.RFC3339), Count: int(min(m.LostThrough-m.AuditSeq, 1<<31-1))}
	if err := n.audit.Record(e); err != nil {
		return fmt.Errorf("node: record the restore in the audit log: %w", err)
	}
	return nil
}

// anchorAtStop anchors the audit head once more at a clean stop.
func (n *Node) anchorAtStop(ctx context.Context) {
	if n.anchorer == nil || n.rep == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, auditStopWait)
	defer cancel()
	if err := n.anchorer.Stop(ctx); errors.Is(err, consensus.ErrNoLeader) {
		// The federation stopping as a whole: the last coordinators to stop
		// find no leader. Expected, and said once.
		n.log.Info("the audit head was not anchored at stop (no Raft leader: the federation is stopping?); the entries since the last anchor are checked by the chain alone at the next start")
	} else if err != nil {
		n.log.Warn("the audit head could not be anchored at stop; the entries since the last anchor are checked by the chain alone at the next start", "error", err)
	}
}

// AuditPage is GET /v1/audit (httpapi.AuditLog): the review is itself
// registered, durably, before the page is answered.
func (n *Node) AuditPage(ctx context.Context, reviewer certs.Identity, q httpapi.AuditQuery) (api.AuditPage, error) {
	entries, next, err := n.db.Audit().Page(storage.AuditFilter{From: q.From, To: q.To, Operation: q.Operation,
		Institution: q.Institution, Subject: q.Pseudonym}, q.After, q.Limit)
	if err != nil {
		return api.AuditPage{}, err
	}
	e := audit.By(reviewer, "audit.review")
	e.Decision, e.Subject, e.Count = storage.DecisionAllowed, q.Pseudonym, len(entries)
	if err := n.audit.Record(e); err != nil {
		return api.AuditPage{}, err
	}
	page := api.AuditPage{Node: n.cfg.Region, Chain: n.auditChain(), Entries: make([]api.AuditEntry, len(entries))}
	if next != 0 {
		page.Next = strconv.FormatUint(next, 10)
	}
	for i, e := range entries {
		page.Entries[i] = api.AuditEntry{Seq: e.Seq, At: e.At.UTC().Format(time.RFC3339Nano), Node: e.Node, Caller: e.Caller, Requester: e.Requester,
			Role: e.Role, Institution: e.Institution, User: e.User, Operation: e.Operation, Purpose: e.Purpose,
			Reference: e.Reference, Authorization: e.Authorization, Authentication: e.Authentication, Subject: e.Subject,
			District: e.District, Records: e.Records, Pseudonyms: e.Pseudonyms, Count: e.Count, LookupID: e.LookupID,
			Decision: e.Decision, Reason: e.Reason, Prev: hex.EncodeToString(e.Prev[:]), Hash: hex.EncodeToString(e.Hash[:])}
	}
	return page, nil
}

// auditChain is the chain's head and its newest anchor, compared: the
// anchored entry read back, not the whole chain (credfed audit verify).
func (n *Node) auditChain() *api.AuditChain {
	head, hash := n.db.Audit().Head()
	c := &api.AuditChain{Head: head, HeadHash: hex.EncodeToString(hash[:]), Status: "unanchored"}
	if n.rep == nil {
		return c
	}
	anchors, err := n.rep.State().AuditAnchors(n.cfg.Region)
	if err != nil || len(anchors) == 0 {
		return c
	}
	newest := anchors[0]
	for _, a := range anchors {
		if a.Seq > newest.Seq {
			newest = a
		}
	}
	c.Anchors, c.Anchored, c.AnchoredAt = len(anchors), newest.Seq, newest.At.UTC().Format(time.RFC3339)
	switch {
	case newest.Seq > head:
		c.Status = "behind"
	default:
		got, _, err := n.db.Audit().Page(storage.AuditFilter{}, newest.Seq-1, 1)
		if err == nil && len(got) == 1 && got[0].Seq == newest.Seq && got[0].Hash == newest.Hash {
			c.Status = "anchored"
		} else {
			c.Status = "mismatch"
		}
	}
	return c
}

// AuditVerification is what VerifyAudit found.
type AuditVerification struct {
	Node string
	// Head and HeadHash are the last entry of the log.
	Head     uint64
	HeadHash [32]byte
	// Anchors are the node's anchors in its replicated state, oldest
	// first, as of the log index Applied.
	Anchors []consensus.AuditAnchor
	Applied uint64
	// Mismatch is nil when the log matches its anchors; otherwise the first
	// bad entry and the kind of tampering.
	Mismatch *storage.AuditMismatchError
	// Restore is the restore of the store that let LostAnchors anchors
	// (of entries the restore lost) go unchecked; nil when none did.
	Restore     *storage.RestoreMarker
	LostAnchors int
}

// ErrNodeRunning: VerifyAudit was asked about a node that is running.
var ErrNodeRunning = errors.New("the node is running: stop it first (its audit log and Raft state are opened read-only, which Badger allows only once the node has let go of them)")

// VerifyAudit checks a stopped node's audit log against the anchors in its
// replicated state, opening both read-only (`credfed audit verify`). It
// errs only when it cannot check (the node running, a missing key);
// tampering is in the result's Mismatch. The anchors are those the node's
// replica had applied when it stopped: a node stopped cleanly holds the
// anchor it made at its stop.
func VerifyAudit(cfg Config) (AuditVerification, error) {
	v := AuditVerification{Node: cfg.Region}
	if cfg.DataDir == "" || cfg.Region == "" {
		return v, fieldErr("data_dir", "the configuration names no data directory or region")
	}
	var key []byte
	if cfg.EncryptionKeyFile != "" {
		var err error
		if key, err = storage.LoadEncryptionKey(cfg.EncryptionKeyFile); err != nil {
			return v, fmt.Errorf("node: encryption_key_file: %w", err)
		}
	}
	log, err := storage.OpenAuditReadOnly(storage.Options{Dir: filepath.Join(cfg.DataDir, "db"), EncryptionKey: key})
	if err != nil {
		return v, readOnlyErr("audit log", err)
	}
	defer log.Close()
	state, err := storage.OpenStateReadOnly(storage.Options{Dir: filepath.Join(cfg.DataDir, "state"), EncryptionKey: key})
	if err != nil {
		return v, readOnlyErr("Raft state", err)
	}
	defer state.Close()
	if v.Anchors, v.Applied, err = consensus.ReadAuditAnchors(state.Badger(), cfg.Region); err != nil {
		return v, err
	}
	v.Head, v.HeadHash = log.Head()
	anchors := make([]storage.AuditAnchor, len(v.Anchors))
	for i, a := range v.Anchors {
		anchors[i] = storage.AuditAnchor{Seq: a.Seq, Hash: a.Hash, At: a.At}
	}
	rep, err := log.CheckAnchorsReport(anchors)
	if err != nil {
		if !errors.As(err, &v.Mismatch) {
			return v, err
		}
	}
	v.Restore, v.LostAnchors = rep.Restore, rep.Skipped
	return v, nil
}

func readOnlyErr(what string, err error) error {
	if errors.Is(err, storage.ErrStoreInUse) {
		return fmt.Errorf("node: open the %s: %w", what, ErrNodeRunning)
	}
	return fmt.Errorf("node: open the %s: %w", what, err)
}
