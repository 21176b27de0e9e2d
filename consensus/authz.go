package consensus

import (
	"credfed/certs"
	"credfed/credit"
)

// Who may issue which command. The FSM decides from the log entry alone
// (its proposer and actor) and the replicated registry, so every replica
// decides alike:
//
//	index_batch      a registered district node, for its own region only
//	region_put       an operator, for a region at or below its own, relayed
//	region_remove    by a registered coordinator node (province or city)
//	suspend          whose region contains the operator's
//	reinstate
//	catalog_publish  an operator of a registered province region, relayed by
//	revoke           that province's node (or one below it)
//	federation_init  a province node, once, for a registry that includes it
//	key_install      an operator of a registered province region, relayed
//	key_switch       by a coordinator node (as catalog_publish; keys.go)
//	key_progress     a registered node, of itself: held by coordinators,
//	                 republished by districts
//
// The proposer is the node that handed the command to the leader, verified
// by mTLS; the actor is the user the proposer vouches for, verified by the
// proposer's own API. A node vouches only for users of its own region or
// below, so a district cannot pass off an operator.

// authorizeIndex checks one group of index updates.
func (f *FSM) authorizeIndex(w *writer, g IndexGroup) error {
	p := g.Proposer
	if p.Federation != f.federation || p.Role != certs.District {
		return refuse(ErrForbidden, "only district nodes write index entries, not %s", p)
	}
	var r Region
	if !w.getCBOR(regionKey(p.Region), &r) || r.Role != certs.District {
		return refuse(ErrForbidden, "district %s is not registered", p.Region)
	}
	for _, u := range g.Updates {
		if u.District != p.Region {
			return refuse(ErrForbidden, "district %s may not write entries of district %s", p.Region, u.District)
		}
		if u.Pseudonym.IsZero() || u.Seq == 0 {
			return refuse(ErrInvalid, "index update without pseudonym or sequence")
		}
		s := u.Summary
		if s.Positive < 0 || s.Negative < 0 || s.Neutral < 0 || s.Serious < 0 || s.Serious > s.Negative {
			return refuse(ErrInvalid, "index update with impossible counts")
		}
		if s.Withdrawn && s != (credit.IndexSummary{Withdrawn: true}) {
			return refuse(ErrInvalid, "a withdrawal of an index entry counts nothing")
		}
	}
	return nil
}

// authorizeOperator checks a registry or suspension change of target (a
// region path).
func (f *FSM) authorizeOperator(w *writer, c Command, target string) error {
	if err := f.operatorRelay(w, c); err != nil {
		return err
	}
	if !certs.InRegion(target, c.Actor.Region) {
		return refuse(ErrForbidden, "operator of %s may not change %s", c.Actor.Region, target)
	}
	return nil
}

// authorizeFederationOperator checks a federation-wide change (catalog,
// revocation by serial): only an operator of a province region.
func (f *FSM) authorizeFederationOperator(w *writer, c Command) error {
	if err := f.operatorRelay(w, c); err != nil {
		return err
	}
	var r Region
	if !w.getCBOR(regionKey(c.Actor.Region), &r) || r.Role != certs.Province {
		return refuse(ErrForbidden, "only operators of a province region change the catalog, revoke certificates by serial, add coordinator regions or make voters, not an operator of %s", c.Actor.Region)
	}
	return nil
}

// operatorRelay checks that the actor is an operator of this federation
// and that the proposer is a registered coordinator node vouching for a
// user of its own region or below.
func (f *FSM) operatorRelay(w *writer, c Command) error {
	a, p := c.Actor, c.Proposer
	if a.Federation != f.federation || a.Role != certs.Operator {
		return refuse(ErrForbidden, "only operators change the registry, catalog or revocations, not %s", describe(a))
	}
	if p.Federation != f.federation || !p.Role.IsCoordinatorNode() {
		return refuse(ErrForbidden, "operator commands are relayed by province or city nodes, not %s", p)
	}
	var r Region
	if !w.getCBOR(regionKey(p.Region), &r) || r.Role != p.Role {
		return refuse(ErrForbidden, "relaying node %s is not registered", p)
	}
	if !certs.InRegion(a.Region, p.Region) {
		return refuse(ErrForbidden, "node %s may not vouch for an operator of %s", p.Region, a.Region)
	}
	return nil
}

func describe(id certs.Identity) string {
	if id == (certs.Identity{}) {
		return "a command without an actor"
	}
	return id.String()
}
