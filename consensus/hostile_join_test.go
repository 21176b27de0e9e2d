package consensus

import (
	"errors"
	"testing"
	"time"

	"credfed/certs"
)

// Hostile tests of the join command (issue 12). Each passes when the
// defence holds; a failure proves a defect.

// TestHostileJoinCommandCannotTakeAnotherRoleThanTheRegions: a district's
// join token is presented by someone who rewrote the token's role to city
// (the role travels in the clear in the token; only the secret is checked).
// The coordinator relays CmdJoin with the actor it built from the token: a
// city identity for a path registered as a district. The FSM must refuse
// the use of a district's token by anything but that district's identity;
// it must neither mark the token used nor set the region's addresses.
func TestHostileJoinCommandCannotTakeAnotherRoleThanTheRegions(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	h := addKaihua(t, f, "s1")
	for _, role := range []certs.Role{certs.City, certs.Province} {
		actor := certs.Identity{Federation: fed, Role: role, Region: kaihua.Region}
		err := errOf(f.apply(t, CmdJoin, province, actor, Join{Region: kaihua.Region, TokenHash: h, Exchange: "127.0.0.1:7009"}))
		if err == nil {
			t.Errorf("a district's join token was committed for %s: the FSM does not check the joining identity against the region's role", actor)
			// Put the region back as it was for the next role.
			h = addKaihuaAgain(t, f)
			continue
		}
		if !errors.Is(err, ErrForbidden) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrConflict) {
			t.Errorf("joining district %s as a %s: %v, want a typed refusal", kaihua.Region, role, err)
		}
		if tok, _, _ := f.state.JoinToken(kaihua.Region); !tok.Used.IsZero() {
			t.Errorf("a refused join as a %s marked the token used", role)
		}
	}
	// The district itself still joins with its token.
	if err := errOf(f.apply(t, CmdJoin, province, kaihua, Join{Region: kaihua.Region, TokenHash: h, Exchange: "127.0.0.1:7009"})); err != nil {
		t.Fatalf("the district's own join after the refusals: %v", err)
	}
}

// addKaihuaAgain removes kaihua and adds it again with a new token, after
// a join the FSM should have refused.
func addKaihuaAgain(t *testing.T, f *testFSM) [32]byte {
	t.Helper()
	if err := errOf(f.apply(t, CmdRegionRemove, province, provOp, RegionRemove{Path: kaihua.Region})); err != nil {
		t.Fatal(err)
	}
	return addKaihua(t, f, "s-again")
}

// TestHostileDistrictOperatorCannotRegisterACoordinatorBelowItsDistrict:
// an operator of a district (who takes its backups and reads its audit
// log) adds, through the province node, a region one level below its
// district with the role of a city — and, once it has joined, promotes it
// to a Raft voter. A coordinator is a province or a city, above districts;
// the registry must refuse a coordinator region below a district (it would
// receive the pseudonym key at its join and vote in Raft), and a district
// operator must not make any region a voter.
func TestHostileDistrictOperatorCannotRegisterACoordinatorBelowItsDistrict(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	kcOp := certs.Identity{Federation: fed, Role: certs.Operator, Region: kecheng.Region, Institution: "ops"}
	below := Region{Path: kecheng.Region + "/street", Name: "x", Role: certs.City}
	err := errOf(f.apply(t, CmdRegionAdd, province, kcOp, RegionAdd{Region: below, TokenHash: [32]byte{1}, Life: time.Hour}))
	if err == nil {
		t.Errorf("a district's operator registered city region %s below its district", below.Path)
	}
	// A region put (promote) of a voter by the district's operator.
	below.Exchange, below.Voter = "127.0.0.1:7", true
	if err := errOf(f.apply(t, CmdRegionPut, province, kcOp, below)); err == nil {
		if r, ok := f.state.Region(below.Path); ok && r.Voter {
			t.Errorf("a district's operator made %s (a %s) a Raft voter", below.Path, r.Role)
		}
	}
}

// TestHostileDistrictOperatorCannotFlushItsAnchorsByRemovingItsRegion: a
// district's audit chain is anchored in Raft, so that its operator cannot
// truncate or rewrite it unnoticed ("it cannot flush its own anchors").
// The operator removes its own region (region remove deletes the region's
// anchors: "a node put back there starts a new audit log"), adds it again
// and lifts the suspension the removal put (it put it, so it may). Its
// node, joined again, would start with a chain nothing checks. The
// anchors must survive, or the district's own operator must not be able
// to remove its region.
func TestHostileDistrictOperatorCannotFlushItsAnchorsByRemovingItsRegion(t *testing.T) {
	f := newTestFSM(t)
	initFederation(t, f)
	if err := errOf(f.apply(t, CmdAuditAnchor, kecheng, certs.Identity{}, anchorOf(kecheng.Region, 10))); err != nil {
		t.Fatal(err)
	}
	if n := len(anchorsOf(t, f.state, kecheng.Region)); n != 1 {
		t.Fatalf("%d anchors before", n)
	}
	kcOp := certs.Identity{Federation: fed, Role: certs.Operator, Region: kecheng.Region, Institution: "ops"}
	suspended := errOf(f.apply(t, CmdSuspend, province, kcOp, certs.Suspension{Identity: kecheng.String(), Reason: "region removed"}))
	removed := errOf(f.apply(t, CmdRegionRemove, province, kcOp, RegionRemove{Path: kecheng.Region}))
	if removed != nil {
		return // the district's operator may not remove its own region: the anchors stay
	}
	readded := errOf(f.apply(t, CmdRegionAdd, province, kcOp, RegionAdd{Region: Region{Path: kecheng.Region, Name: "柯城区", Role: certs.District},
		TokenHash: [32]byte{3}, Life: time.Hour}))
	lifted := errOf(f.apply(t, CmdReinstate, province, kcOp, Reinstate{Identity: kecheng.String()}))
	if n := len(anchorsOf(t, f.state, kecheng.Region)); n == 0 {
		t.Errorf("the district's own operator removed its region and with it every anchor of its audit chain (suspend %v, re-add %v, lift %v)",
			suspended, readded, lifted)
	}
}
