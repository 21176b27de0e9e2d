package systemtest

import (
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// TestRevokedAndSuspendedCertificatesAreOutEverywhere: an operator revokes
// the province coordinator's certificate at the province node; on
// connections kept alive from before, its next request fails at the
// province and at both cities within seconds, and every node lists the
// serial. A department's identity suspended cannot submit at its district,
// and can again once reinstated. A coordinator cannot revoke; a bad serial
// or identity is a typed refusal that changes nothing; each command is in
// the audit log of the node that relayed it.
func TestRevokedAndSuspendedCertificatesAreOutEverywhere(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	ds := f.Districts()
	city := cityOf(t, f, ds[0])
	op := clientOf(t, f, f.Province(), f.Layout.Operator)

	// The coordinator's clients, one per coordinator node, connected now.
	var coordNodes []string
	for _, n := range f.Layout.Nodes {
		if n.Role.IsCoordinatorNode() {
			coordNodes = append(coordNodes, n.Name)
		}
	}
	coords := map[string]*api.Client{}
	for _, n := range coordNodes {
		c := clientOf(t, f, n, f.Layout.Coordinator)
		if _, err := c.Federation(ctxT(t, 10*time.Second)); err != nil {
			t.Fatalf("the coordinator at %s before the revocation: %v", n, err)
		}
		coords[n] = c
	}
	cert, err := certs.LoadCertFile(f.Layout.Coordinator.Cert)
	if err != nil {
		t.Fatal(err)
	}
	serial := certs.SerialString(cert.SerialNumber)

	// Refusals first: they change nothing.
	before, err := op.Revocations(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Revoke(ctxT(t, 10*time.Second), api.RevokeRequest{Serial: "12ab"}); api.Code(err) != api.CodeBadRequest {
		t.Fatalf("a hex serial: %v", err)
	}
	if _, err := op.Suspend(ctxT(t, 10*time.Second), api.SuspendRequest{Identity: "not-a-uri"}); api.Code(err) != api.CodeBadRequest {
		t.Fatalf("a bad identity: %v", err)
	}
	if _, err := clientOf(t, f, city, f.Layout.Coordinators[city]).Revoke(ctxT(t, 10*time.Second), api.RevokeRequest{Serial: serial}); api.Code(err) != api.CodeForbidden {
		t.Fatalf("a coordinator revoking: %v", err)
	}
	if _, err := clientOf(t, f, ds[0], f.Layout.Operator).Revoke(ctxT(t, 10*time.Second), api.RevokeRequest{Serial: serial}); api.Code(err) != api.CodeForbidden {
		t.Fatalf("a revocation at a district node: %v", err)
	}
	if after, err := op.Revocations(ctxT(t, 10*time.Second)); err != nil || after.Version != before.Version || len(after.Revoked) != 0 {
		t.Fatalf("the list after the refusals: %+v, %v", after, err)
	}

	// The revocation, twice (safe to repeat).
	for range 2 {
		got, err := op.Revoke(ctxT(t, 30*time.Second), api.RevokeRequest{Serial: serial, Reason: "key lost"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Revoked) != 1 || got.Revoked[0].Serial != serial || got.Revoked[0].Reason != "key lost" {
			t.Fatalf("the list after the revocation: %+v", got)
		}
	}
	for _, n := range coordNodes {
		c := coords[n]
		wait.Until(t, 10*time.Second, "the revoked coordinator to be refused at "+n, func() bool {
			_, err := c.Federation(ctxT(t, 5*time.Second))
			return err != nil && strings.Contains(err.Error(), "revoked")
		})
		list, err := clientOf(t, f, n, f.Layout.Operator).Revocations(ctxT(t, 10*time.Second))
		if err != nil || len(list.Revoked) != 1 {
			t.Fatalf("%s's list: %+v, %v", n, list, err)
		}
	}
	entries, _, err := f.Node(f.Province()).Store().Audit().Page(storage.AuditFilter{Operation: "cert.revoke"}, 0, 10)
	if err != nil || len(entries) != 3 {
		t.Fatalf("cert.revoke entries at %s (the hex serial refused, 2 allowed): %d, %v", f.Province(), len(entries), err)
	}

	// A department suspended, then reinstated.
	deptCert, err := certs.LoadCertFile(f.Layout.Departments[ds[0]].Cert)
	if err != nil || len(deptCert.URIs) != 1 {
		t.Fatalf("department certificate: %v", err)
	}
	identity := deptCert.URIs[0].String()
	dept := department(t, f, ds[0])
	rec := record("LC-1", credit.SyntheticPerson(9501, credit.NewDate(1985, 1, 1)), "FOOD-DRUG-PENALTY", "x")
	if _, err := op.Suspend(ctxT(t, 30*time.Second), api.SuspendRequest{Identity: identity, Reason: "under review"}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the suspended department to be refused", func() bool {
		// On a kept-alive connection the API says why; a new connection
		// is refused at the TLS handshake.
		_, _, err := dept.SubmitRecords(ctxT(t, 10*time.Second), []api.RecordInput{rec})
		return err != nil && (strings.Contains(err.Error(), "suspended") || strings.Contains(err.Error(), "bad certificate"))
	})
	if _, err := op.Unsuspend(ctxT(t, 30*time.Second), identity); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the reinstated department to submit again", func() bool {
		// A record of its own: the one sent while the suspension was on
		// its way may have been accepted.
		rec := record("LC-2", rec.Subject, "FOOD-DRUG-PENALTY", "y")
		ans, _, err := dept.SubmitRecords(ctxT(t, 10*time.Second), []api.RecordInput{rec})
		return err == nil && ans.Results[0].Status == api.StatusAccepted
	})
	if list, err := op.Revocations(ctxT(t, 10*time.Second)); err != nil || len(list.Suspended) != 0 || len(list.Revoked) != 1 {
		t.Fatalf("the list at the end: %+v, %v", list, err)
	}
}
