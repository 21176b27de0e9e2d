package consensus

import (
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/certs"
)

// Regions that join themselves. An operator adds a region with a one-time
// join token (CmdRegionAdd): the region is registered without an address,
// and the token's hash is kept under the region's path, one live token per
// region. The new node presents the token to a coordinator above it, which
// commits its use (CmdJoin: the token marked used, the region's addresses
// set, atomically in the log, so a token works once however many
// coordinators are asked at the same time) before it signs the node's
// certificate. The leader's reconcile then adds the node to Raft as a
// non-voter, and it catches up by snapshot.

// Join token bounds.
const (
	MaxJoinTokenLife     = 7 * 24 * time.Hour
	DefaultJoinTokenLife = 24 * time.Hour
)

// JoinToken is a region's live join token, as the registry keeps it.
type JoinToken struct {
	Region  string     `cbor:"1,keyasint" json:"region"`
	Role    certs.Role `cbor:"2,keyasint" json:"role"`
	Hash    [32]byte   `cbor:"3,keyasint" json:"-"`
	Created time.Time  `cbor:"4,keyasint" json:"created"`
	Expires time.Time  `cbor:"5,keyasint" json:"expires"`
	By      string     `cbor:"6,keyasint" json:"by"` // the operator's identity
	// Used is when the token was used (zero: not yet), UsedVia the
	// coordinator that served the join.
	Used    time.Time `cbor:"7,keyasint,omitempty" json:"used,omitzero"`
	UsedVia string    `cbor:"8,keyasint,omitempty" json:"used_via,omitempty"`
}

// RegionAdd is the body of CmdRegionAdd: the region to register and the
// hash of its join token.
type RegionAdd struct {
	Region    Region        `cbor:"1,keyasint"`
	TokenHash [32]byte      `cbor:"2,keyasint"`
	Life      time.Duration `cbor:"3,keyasint"`
}

// Join is the body of CmdJoin: the token presented for Region, and the
// addresses the new node gave.
type Join struct {
	Region    string   `cbor:"1,keyasint"`
	TokenHash [32]byte `cbor:"2,keyasint"`
	Exchange  string   `cbor:"3,keyasint"`
	API       string   `cbor:"4,keyasint,omitempty"`
}

var prefixJoinToken = []byte("x/j/")

func joinTokenKey(region string) []byte {
	return append(append([]byte(nil), prefixJoinToken...), region...)
}

// applyRegionAdd registers a region that has not joined yet and gives it
// a new join token; the region's earlier unused token stops working. A
// region whose node has joined is refused (remove it first).
func (f *FSM) applyRegionAdd(w *writer, c Command, a RegionAdd, index uint64) error {
	r := a.Region
	if err := f.authorizeOperator(w, c, r.Path); err != nil {
		return err
	}
	if err := f.validRegion(w, r); err != nil {
		return err
	}
	if err := f.authorizeCoordinatorRegion(w, c, Region{Role: r.Role}); err != nil {
		return err // a joining region never votes until promoted
	}
	if a.Life <= 0 || a.Life > MaxJoinTokenLife {
		return refuse(ErrInvalid, "a join token lives between a second and %v", MaxJoinTokenLife)
	}
	var old Region
	if w.getCBOR(regionKey(r.Path), &old) {
		if old.Role != r.Role {
			return refuse(ErrConflict, "region %s is a %s; remove it before adding it as a %s", r.Path, old.Role, r.Role)
		}
		if old.Exchange != "" {
			return refuse(ErrConflict, "region %s has joined already (since %s); remove it before adding it again", r.Path, old.Since.UTC().Format(time.RFC3339))
		}
		r.Since, r.Registered = old.Since, old.Registered
	} else {
		r.Since, r.Registered = c.At, index
	}
	r.Exchange, r.Voter = "", false // set by the join, and by promote
	w.setCBOR(regionKey(r.Path), r)
	w.setCBOR(joinTokenKey(r.Path), JoinToken{Region: r.Path, Role: r.Role, Hash: a.TokenHash, Created: c.At,
		Expires: c.At.Add(a.Life), By: c.Actor.String()})
	return nil
}

// applyJoin uses a region's join token: refused if there is none, if it is
// another, used or expired (each said so), or if the coordinator that
// proposes it is not above the region.
func (f *FSM) applyJoin(w *writer, c Command, j Join) error {
	p := c.Proposer
	if p.Federation != f.federation || !p.Role.IsCoordinatorNode() {
		return refuse(ErrForbidden, "joins are served by province or city nodes, not %s", p)
	}
	var pr Region
	if !w.getCBOR(regionKey(p.Region), &pr) || pr.Role != p.Role {
		return refuse(ErrForbidden, "%s is not registered", p)
	}
	if !certs.InRegion(j.Region, p.Region) || j.Region == p.Region {
		return refuse(ErrForbidden, "%s may serve the joins of regions below it only, not of %s", p, j.Region)
	}
	var tok JoinToken
	if !w.getCBOR(joinTokenKey(j.Region), &tok) {
		return refuse(ErrNotFound, "region %s has no join token: add it with credfed region add", j.Region)
	}
	if subtle.ConstantTimeCompare(tok.Hash[:], j.TokenHash[:]) != 1 {
		return refuse(ErrForbidden, "this is not the live join token of region %s (a newer one replaced it, or it is wrong)", j.Region)
	}
	if !tok.Used.IsZero() {
		return refuse(ErrConflict, "the join token of region %s was used already, on %s: add the region again for a new one",
			j.Region, tok.Used.UTC().Format(time.RFC3339))
	}
	if !c.At.Before(tok.Expires) {
		return refuse(ErrExpired, "the join token of region %s expired on %s: add the region again for a new one",
			j.Region, tok.Expires.UTC().Format(time.RFC3339))
	}
	var r Region
	if !w.getCBOR(regionKey(j.Region), &r) {
		return refuse(ErrNotFound, "region %s is not registered", j.Region)
	}
	if c.Actor != r.Identity(f.federation) || tok.Role != r.Role {
		// The role in a token travels in the clear: the registry decides.
		return refuse(ErrForbidden, "region %s is a %s: its token joins %s only, not %s", j.Region, r.Role, r.Identity(f.federation), c.Actor)
	}
	if j.Exchange == "" {
		return refuse(ErrInvalid, "the joining node gave no exchange address")
	}
	tok.Used, tok.UsedVia = c.At, p.String()
	r.Exchange, r.API, r.Since = j.Exchange, j.API, c.At
	w.setCBOR(joinTokenKey(j.Region), tok)
	w.setCBOR(regionKey(j.Region), r)
	return nil
}

// JoinToken returns region's join token, if it has one.
func (s *State) JoinToken(region string) (JoinToken, bool, error) {
	g, _ := s.acquire()
	defer g.release()
	var tok JoinToken
	found := false
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(g.key(joinTokenKey(region)))
		if err == badger.ErrKeyNotFound {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return item.Value(func(v []byte) error { return decMode.Unmarshal(v, &tok) })
	})
	if err != nil {
		return JoinToken{}, false, fmt.Errorf("consensus: join token: %w", err)
	}
	return tok, found, nil
}
