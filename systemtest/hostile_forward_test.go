package systemtest

import (
	"errors"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/rights"
	"credfed/storage"
)

// TestHostileForwardsGoOnlyUpTheTree: a district node forwards its
// portals' report and case requests to a city that is not above it (the
// other city). That city cannot vouch for the district's portals: it
// refuses both, gathers nothing and files nothing, and audits the refusal.
// The same requests through the district's own city are served.
func TestHostileForwardsGoOnlyUpTheTree(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	ds := f.Districts()
	a, b := ds[0], ds[1]
	subject := credit.SyntheticPerson(77101, credit.NewDate(1971, 2, 3))
	submit(t, f, b, record("HF-1", subject, "FOOD-DRUG-PENALTY", "x"))
	waitIndexed(t, f, subject, 1)
	elsewhere := cityOf(t, f, a)
	if elsewhere == cityOf(t, f, b) {
		t.Fatal("the two districts share a city: the test needs one under each")
	}
	ep := bareEndpoint(t, f, nodeCertificate(t, f, b))
	portalB := hcIdentity(t, f.Layout.Portals[b])
	before := hcCount(t, f, elsewhere, func(e storage.AuditEntry) bool { return e.Decision == storage.DecisionDenied })
	deniedReports := map[string]string{"kind": rights.KindReport, "decision": "denied"}
	countedBefore := counterOf(t, f.Node(elsewhere), "credfed_rights_requests_total", deniedReports)

	var signed rights.Signed
	err := ep.Call(ctxT(t, 20*time.Second), peerOf(t, f, elsewhere), rights.OpForward, exchange.Meta{Authentication: "实名 HF"},
		hrForward{Kind: rights.KindReport, Subject: subject, Authentication: "实名 HF", Requester: portalB}, &signed)
	if !errors.Is(err, exchange.ErrForbidden) || len(signed.Doc) > 0 {
		t.Errorf("a report forwarded to %s for a portal of %s: %v (%d bytes signed), want forbidden", elsewhere, b, err, len(signed.Doc))
	}
	// Refused forwards are counted as the served ones are.
	if n := counterOf(t, f.Node(elsewhere), "credfed_rights_requests_total", deniedReports); n != countedBefore+1 {
		t.Errorf("%s counted %v refused forwarded reports, want 1", elsewhere, n-countedBefore)
	}
	// A forward of a kind the coordinator does not know (the kind is the
	// peer's word): refused, audited, and never a label of the counter.
	bogus := "report\x00{kind=\"x\"}"
	seriesBefore := counterOf(t, f.Node(elsewhere), "credfed_rights_requests_total", nil)
	auditedBefore := hcCount(t, f, elsewhere, func(e storage.AuditEntry) bool {
		return e.Operation == "rights.forward" && e.Decision == storage.DecisionDenied
	})
	err = ep.Call(ctxT(t, 20*time.Second), peerOf(t, f, elsewhere), rights.OpForward, exchange.Meta{Authentication: "实名 HF"},
		hrForward{Kind: bogus, Subject: subject, Authentication: "实名 HF", Requester: portalB}, &signed)
	if !errors.Is(err, exchange.ErrBadRequest) {
		t.Errorf("a forward of an unknown kind: %v, want bad request", err)
	}
	if n := counterOf(t, f.Node(elsewhere), "credfed_rights_requests_total", nil); n != seriesBefore {
		t.Errorf("a forward of an unknown kind was counted (%v -> %v)", seriesBefore, n)
	}
	if n := counterOf(t, f.Node(elsewhere), "credfed_rights_requests_total", map[string]string{"kind": bogus}); n != 0 {
		t.Errorf("the peer's kind became a label, counted %v", n)
	}
	if n := hcCount(t, f, elsewhere, func(e storage.AuditEntry) bool {
		return e.Operation == "rights.forward" && e.Decision == storage.DecisionDenied
	}); n != auditedBefore+1 {
		t.Errorf("%s audited %d refusals of the unknown kind, want 1", elsewhere, n-auditedBefore)
	}
	ref := credit.Ref{District: regionOf(f, b), Department: localfed.Department, ID: "HF-1"}.String()
	var c rights.Case
	err = ep.Call(ctxT(t, 20*time.Second), peerOf(t, f, elsewhere), rights.OpCaseForward, exchange.Meta{Authentication: "实名 HF"},
		hrCaseForward{Action: "file", Filing: rights.Filing{Kind: storage.CaseObjection, Subject: subject, Record: ref, Reason: "不是我", Authentication: "实名 HF"},
			Requester: portalB}, &c)
	if !errors.Is(err, exchange.ErrForbidden) || c.ID != "" {
		t.Errorf("an objection forwarded to %s for a portal of %s: %v (case %q), want forbidden", elsewhere, b, err, c.ID)
	}
	if n := hcCount(t, f, elsewhere, func(e storage.AuditEntry) bool { return e.Decision == storage.DecisionDenied }); n < before+2 {
		t.Errorf("%s audited %d refusals of the two forwards, want 2", elsewhere, n-before)
	}
	if got, err := department(t, f, b).Cases(ctxT(t, 20*time.Second), "objections", "all"); err != nil || len(got.Cases) != 0 {
		t.Errorf("an objection was filed through the wrong city: %+v, %v", got, err)
	}
	// The honest path, through its own city: served.
	if _, _, err := portal(t, f, b).Report(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: subject, Authentication: "实名 HF"}); err != nil {
		t.Fatalf("the report through the district's own city: %v", err)
	}
}

// TestRevocationAfterAnElectionOnAnIdleCluster: the Raft leader is
// stopped, a new one is elected and the federation sits idle; then the
// province's operator revokes a coordinator certificate. The command
// commits through the new leader, the answer lists it, and every running
// coordinator node refuses the certificate on a connection kept alive from
// before the election.
func TestRevocationAfterAnElectionOnAnIdleCluster(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	prov := f.Province()
	leader, _ := f.Node(prov).Replica().Leader()
	var stopped string
	for _, n := range f.Layout.Nodes {
		if n.Region == leader {
			stopped = n.Name
		}
	}
	if stopped == "" {
		t.Fatalf("no node leads (leader %q)", leader)
	}
	var coordNodes []string
	for _, n := range f.Layout.Nodes {
		if n.Role.IsCoordinatorNode() {
			coordNodes = append(coordNodes, n.Name)
		}
	}
	kept := map[string]*api.Client{}
	for _, n := range coordNodes {
		kept[n] = clientOf(t, f, n, f.Layout.Coordinator)
		if _, err := kept[n].Federation(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.StopNode(ctxT(t, 30*time.Second), stopped); err != nil {
		t.Fatal(err)
	}
	if stopped == prov {
		// The province relays its operators: bring it back as a follower.
		if err := f.StartNode(prov); err != nil {
			t.Fatal(err)
		}
		kept[prov] = clientOf(t, f, prov, f.Layout.Coordinator)
		if _, err := kept[prov].Federation(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	} else {
		delete(kept, stopped)
	}
	// A new election: another leader, or the province again once it is back
	// (it can win the election that follows its restart).
	wait.Until(t, 30*time.Second, "a leader elected after the stop", func() bool {
		l, _ := f.Node(prov).Replica().Leader()
		return l != "" && (l != leader || stopped == prov)
	})
	cert, err := certs.LoadCertFile(f.Layout.Coordinator.Cert)
	if err != nil {
		t.Fatal(err)
	}
	serial := certs.SerialString(cert.SerialNumber)
	op := clientOf(t, f, prov, f.Layout.Operator)
	var list *api.RevocationList
	wait.Until(t, 30*time.Second, "the revocation to commit after the election", func() bool {
		list, err = op.Revoke(ctxT(t, 10*time.Second), api.RevokeRequest{Serial: serial, Reason: "after the election"})
		return api.Code(err) != api.CodeUnavailable
	})
	if err != nil || len(list.Revoked) != 1 || list.Revoked[0].Serial != serial {
		t.Fatalf("the revocation after the election: %+v, %v", list, err)
	}
	for n, c := range kept {
		wait.Until(t, 10*time.Second, "the revoked coordinator to be refused at "+n, func() bool {
			_, err := c.Federation(ctxT(t, 5*time.Second))
			return err != nil
		})
	}
}
