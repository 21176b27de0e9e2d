package consensus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/certs"
	"credfed/exchange"
)

// Audit anchors (DESIGN.md, "Audit anchors"): every node anchors the head
// of its audit log's hash chain in the Raft log now and then
// (CmdAuditAnchor), so that a node cannot remove the tail of its log, or
// rewrite an entry and re-hash the chain to the head, without its chain
// disagreeing with what the whole federation replicated. The state keeps
// a bounded, thinned history of each node's anchors in the clear (every
// node reads its own, districts too):
//
//	x/a/<node region>\x00<seq:be64> → anchorRecord (CBOR)
//
// A node anchors only its own region's chain: the FSM takes the node from
// the proposer, the identity the leader verified over mTLS, and refuses a
// body that names another. Anchors of one node only move forward: a head
// below the newest anchor, or the newest anchor's seq with another hash,
// is refused (ErrConflict), so a rewound log cannot anchor its new head
// over the evidence. Removing a region removes its anchors (a region put
// back with a new node starts a new log).
var prefixAnchor = []byte("x/a/")

// Retention (DESIGN.md, "Retention"), all by the leader's clock (the At
// stored with each anchor): the newest anchor always; every anchor taken
// within the node's budget for an hour; then the first anchor of each UTC
// hour for 7 days and the first of each UTC day for 400 days; at most
// MaxAuditAnchors in all, the oldest thinned ones dropped first. The
// budget is a GCRA of anchorBudgetBurst anchors at once and one more every
// anchorBudgetEvery: a forward anchor beyond it is never refused, but is
// kept only while it is the newest (the next anchor takes its place, or
// keeps it if the budget allows by then), so no rate of anchoring pushes
// an anchor taken within the budget out of the state within its hour.
const (
	// MaxAuditAnchors is the most anchors of one node the state keeps.
	MaxAuditAnchors = 640

	anchorRecent      = time.Hour
	anchorHourly      = 7 * 24 * time.Hour
	anchorDaily       = 400 * 24 * time.Hour
	anchorBudgetBurst = 60
	anchorBudgetEvery = 30 * time.Second
)

// AuditAnchor is the body of CmdAuditAnchor, and an anchor as the state
// keeps it: the head of Node's audit chain (the entry Seq, whose hash is
// Hash). At is the leader's clock when it proposed the anchor (the
// envelope's time: whatever the body says is replaced).
type AuditAnchor struct {
	Node string    `cbor:"1,keyasint" json:"node"`
	Seq  uint64    `cbor:"2,keyasint" json:"seq"`
	Hash [32]byte  `cbor:"3,keyasint" json:"hash"`
	At   time.Time `cbor:"4,keyasint" json:"at"`
}

// anchorRecord is an anchor as stored: AuditAnchor's fields (so that it
// decodes as one), whether it was taken beyond the budget (Spare), and the
// budget after it (Due, the GCRA's theoretical arrival time; only the
// newest anchor's counts). Neither comes from the command body.
type anchorRecord struct {
	Node  string    `cbor:"1,keyasint"`
	Seq   uint64    `cbor:"2,keyasint"`
	Hash  [32]byte  `cbor:"3,keyasint"`
	At    time.Time `cbor:"4,keyasint"`
	Spare bool      `cbor:"5,keyasint,omitempty"`
	Due   time.Time `cbor:"6,keyasint"`
}

func anchorPrefix(node string) []byte {
	k := make([]byte, 0, len(prefixAnchor)+len(node)+1)
	return append(append(append(k, prefixAnchor...), node...), 0)
}

func anchorKey(node string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(anchorPrefix(node), seq)
}

// applyAuditAnchor applies a CmdAuditAnchor: a registered node, for its
// own region, a head at or after its newest anchor. It reads only the
// command (its proposer and time) and the state.
func (f *FSM) applyAuditAnchor(w *writer, c Command, a AuditAnchor) error {
	p := c.Proposer
	if p.Federation != f.federation || !p.Role.IsNode() {
		return refuse(ErrForbidden, "only nodes anchor their audit logs, not %s", describe(p))
	}
	var r Region
	if !w.getCBOR(regionKey(p.Region), &r) || r.Role != p.Role {
		return refuse(ErrForbidden, "node %s is not registered", p.Region)
	}
	if a.Node != p.Region {
		return refuse(ErrForbidden, "node %s may not anchor the audit log of %s", p.Region, a.Node)
	}
	if a.Seq == 0 || a.Hash == [32]byte{} {
		return refuse(ErrInvalid, "an audit anchor needs the head's sequence number and hash")
	}
	var recs []anchorRecord
	w.scanKeys(anchorPrefix(a.Node), func(k []byte) {
		var rec anchorRecord
		w.getCBOR(k, &rec)
		recs = append(recs, rec)
	})
	now := c.At.UTC()
	var due time.Time
	if n := len(recs); n > 0 {
		last := &recs[n-1]
		switch {
		case a.Seq < last.Seq:
			return refuse(ErrConflict, "the audit head of %s (entry %d) is below its anchor of entry %d: the log was rewound", a.Node, a.Seq, last.Seq)
		case a.Seq == last.Seq && a.Hash != last.Hash:
			return refuse(ErrConflict, "entry %d of the audit log of %s was anchored with another hash: the log was rewritten", a.Seq, a.Node)
		case a.Seq == last.Seq:
			return nil // a retry of the anchor in place
		}
		due = last.Due
		if last.Spare {
			// The newest was taken beyond the budget: it stays if the
			// budget allows it now, else this anchor takes its place.
			if takeAnchorBudget(&due, now) {
				last.Spare = false
				w.setCBOR(anchorKey(a.Node, last.Seq), *last)
			} else {
				w.delete(anchorKey(a.Node, last.Seq))
				recs = recs[:n-1]
			}
		}
	}
	rec := anchorRecord{Node: a.Node, Seq: a.Seq, Hash: a.Hash, At: now}
	rec.Spare = !takeAnchorBudget(&due, now)
	rec.Due = due
	w.setCBOR(anchorKey(a.Node, a.Seq), rec)
	for _, seq := range thinAnchors(append(recs, rec)) {
		w.delete(anchorKey(a.Node, seq))
	}
	return nil
}

// takeAnchorBudget takes one anchor from a node's budget at now (a GCRA:
// due is when the budget is whole again plus one interval), reporting
// whether there was one. A leader's clock behind due only delays refill.
func takeAnchorBudget(due *time.Time, now time.Time) bool {
	tat := *due
	if tat.Before(now) {
		tat = now
	}
	if tat.Sub(now) > (anchorBudgetBurst-1)*anchorBudgetEvery {
		return false
	}
	*due = tat.Add(anchorBudgetEvery)
	return true
}

// thinAnchors returns the seqs of a node's anchors (recs, in seq order,
// the newest last) that retention drops. Ages are taken from the latest
// At among them, so that a leader whose clock is behind the last one's
// ages nothing.
func thinAnchors(recs []anchorRecord) []uint64 {
	n := len(recs)
	if n < 2 {
		return nil
	}
	ref := recs[0].At
	for _, r := range recs[1:] {
		if r.At.After(ref) {
			ref = r.At
		}
	}
	const (
		dropped = iota
		thinned // kept as the first of its hour or day
		recent  // kept as an anchor of the last hour (or the newest)
	)
	kept := make([]int, n)
	kept[n-1] = recent
	hours, days := map[int64]bool{}, map[int64]bool{}
	count := 1
	for i, r := range recs[:n-1] {
		age := ref.Sub(r.At)
		hour, day := r.At.Truncate(time.Hour).Unix(), r.At.Truncate(24*time.Hour).Unix()
		firstHour, firstDay := !hours[hour], !days[day]
		hours[hour], days[day] = true, true
		switch {
		case age < anchorRecent && !r.Spare:
			kept[i] = recent
		case age < anchorHourly && firstHour, age < anchorDaily && firstDay:
			kept[i] = thinned
		default:
			continue
		}
		count++
	}
	// Over the cap: the oldest thinned anchors go first, then (never
	// reached within the budget) the oldest recent ones.
	for _, class := range []int{thinned, recent} {
		for i := 0; i < n-1 && count > MaxAuditAnchors; i++ {
			if kept[i] == class {
				kept[i] = dropped
				count--
			}
		}
	}
	var out []uint64
	for i, k := range kept {
		if k == dropped {
			out = append(out, recs[i].Seq)
		}
	}
	return out
}

// deleteAuditAnchors removes every anchor of a node (its region removed).
func deleteAuditAnchors(w *writer, node string) {
	w.scanKeys(anchorPrefix(node), func(k []byte) { w.delete(k) })
}

// readAuditAnchors reads node's anchors in generation g, oldest first.
func readAuditAnchors(txn *badger.Txn, g *generation, node string) ([]AuditAnchor, error) {
	var out []AuditAnchor
	err := scan(txn, g.key(anchorPrefix(node)), func(_, v []byte) error {
		var a AuditAnchor
		if err := decMode.Unmarshal(v, &a); err != nil {
			return fmt.Errorf("an audit anchor does not decode: %w", err)
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

// AuditAnchors returns the anchors of node's audit log this replica holds,
// oldest first (at most MaxAuditAnchors: the retained history).
func (s *State) AuditAnchors(node string) ([]AuditAnchor, error) {
	g, _ := s.acquire()
	defer g.release()
	var out []AuditAnchor
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		out, err = readAuditAnchors(txn, g, node)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("consensus: audit anchors: %w", err)
	}
	return out, nil
}

// ReadAuditAnchors reads node's anchors, oldest first, and the applied
// index they reflect, from the state in db without opening it as a replica
// (db may be read-only: a stopped node's state, for `credfed audit
// verify`).
func ReadAuditAnchors(db *badger.DB, node string) ([]AuditAnchor, uint64, error) {
	var out []AuditAnchor
	var applied uint64
	err := db.View(func(txn *badger.Txn) error {
		live, err := liveGeneration(txn)
		if err != nil {
			return err
		}
		g := newGeneration(live)
		if applied, err = getUint(txn, g.key(keyApplied)); err != nil {
			return err
		}
		out, err = readAuditAnchors(txn, g, node)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("consensus: audit anchors: %w", err)
	}
	return out, applied, nil
}

// The exchange operation by which a node that does not lead hands its
// anchor to the leader. It is open to every node role (districts anchor
// too, and consensus.apply is for coordinators relaying operators); the
// anchored node is the caller, as the exchange verified it. A node
// anchors every 1000 entries or once a minute by default, and never more
// than four times a second (audit.Anchorer): anchorRate a second per
// caller, in bursts of anchorBurst, lets that through and bounds what a
// hostile node can put in the log.
const (
	opAnchor       = "consensus.anchor"
	maxAnchorBody  = 128
	anchorRate     = 4
	anchorBurst    = 20
	anchorDeadline = 10 * time.Second
)

type anchorRequest struct {
	Seq  uint64   `cbor:"1,keyasint"`
	Hash [32]byte `cbor:"2,keyasint"`
}

// anchorReply says how a forwarded anchor ended (as applyReply), and the
// log index it was applied at.
type anchorReply struct {
	Index     uint64       `cbor:"1,keyasint,omitempty"`
	Refused   *wireRefusal `cbor:"2,keyasint,omitempty"`
	Unknown   bool         `cbor:"3,keyasint,omitempty"`
	NotLeader bool         `cbor:"4,keyasint,omitempty"`
}

func (r *Replica) registerAnchorHandler() {
	r.cfg.Endpoint.Handle(opAnchor, r.handleAnchor,
		exchange.AllowRoles(certs.Province, certs.City, certs.District),
		exchange.MaxBody(maxAnchorBody), exchange.Timeout(anchorDeadline), exchange.RateLimit(anchorRate, anchorBurst))
}

func (r *Replica) handleAnchor(ctx context.Context, req *exchange.Request) (any, error) {
	if !r.IsLeader() {
		return anchorReply{NotLeader: true}, nil
	}
	var in anchorRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	index, err := r.proposeAnchor(ctx, req.Caller, AuditAnchor{Node: req.Caller.Region, Seq: in.Seq, Hash: in.Hash})
	if w := toWire(err); w != nil {
		return anchorReply{Refused: w}, nil
	}
	switch {
	case errors.Is(err, ErrOutcomeUnknown):
		return anchorReply{Unknown: true}, nil
	case notTaken(err):
		return anchorReply{NotLeader: true}, nil
	case err != nil:
		return nil, toExchange(err)
	}
	return anchorReply{Index: index}, nil
}

// proposeAnchor proposes an anchor on the leader, checked first as the
// FSM will apply it (a refused anchor never enters the log), and returns
// the log index it was applied at.
func (r *Replica) proposeAnchor(ctx context.Context, proposer certs.Identity, a AuditAnchor) (uint64, error) {
	return r.proposeOwn(ctx, CmdAuditAnchor, proposer, a, anchorDeadline)
}

// SubmitAnchor anchors the head of this node's audit log (the entry seq,
// whose hash is hash) through the leader, from any node role, and returns
// once this replica has applied it too, so that its own State holds it. A
// refusal is a *RefusedError: ErrConflict for a head below (or rewritten
// at) this node's newest anchor. ErrOutcomeUnknown may be retried: an
// anchor already applied is taken again without change.
func (r *Replica) SubmitAnchor(ctx context.Context, seq uint64, hash [32]byte) error {
	var index uint64
	if r.IsLeader() {
		var err error
		if index, err = r.proposeAnchor(ctx, r.cfg.Self, AuditAnchor{Node: r.cfg.Self.Region, Seq: seq, Hash: hash}); err != nil {
			return err
		}
	} else {
		var reply anchorReply
		if err := r.callLeader(ctx, opAnchor, anchorRequest{Seq: seq, Hash: hash}, &reply); err != nil {
			return err
		}
		if err := leaderOutcome(reply.Refused, reply.Unknown, reply.NotLeader); err != nil {
			return err
		}
		index = reply.Index
	}
	return r.waitApplied(ctx, index)
}
