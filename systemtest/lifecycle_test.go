package systemtest

import (
	"slices"
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

// TestCatalogVersionsArePublishedAndStrandingIsRefused: the province's
// operator publishes version 2 (a new item); every node holds it and a
// district accepts a record of the new item. A version that drops an item,
// shortens a period, skips a number, repeats one or does not validate is
// refused (typed) and the catalog stays at 2; a coordinator may not
// publish.
func TestCatalogVersionsArePublishedAndStrandingIsRefused(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{})
	ds := f.Districts()
	op := clientOf(t, f, f.Province(), f.Layout.Operator)
	cur, err := op.Catalog(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	next := api.CatalogOf(cur)
	next.Version = cur.Version + 1
	base, _ := next.Item("FOOD-DRUG-PENALTY")
	added := base
	added.Code, added.Name = "FOOD-DRUG-PENALTY-2027", "食品药品违法行为行政处罚（2027）"
	next.Items = append(append([]credit.Item(nil), next.Items...), added)
	if _, err := clientOf(t, f, f.Province(), f.Layout.Coordinator).PublishCatalog(ctxT(t, 30*time.Second), next); api.Code(err) != api.CodeForbidden {
		t.Fatalf("a coordinator publishing: %v", err)
	}
	got, err := op.PublishCatalog(ctxT(t, 30*time.Second), next)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != next.Version || len(got.Changes) != 1 || got.Changes[0].Code != added.Code || got.Changes[0].Change != "added" {
		t.Fatalf("published: %+v", got)
	}
	for _, n := range f.Layout.Nodes {
		c := clientOf(t, f, n.Name, f.Layout.Operator)
		wait.Until(t, 10*time.Second, n.Name+" to hold version 2", func() bool {
			v, err := c.Catalog(ctxT(t, 5*time.Second))
			return err == nil && v.Version == next.Version
		})
	}
	submit(t, f, ds[0], record("CV-1", credit.SyntheticPerson(9601, credit.NewDate(1980, 2, 2)), added.Code, "新目录项"))

	refused := func(name string, mutate func(c *credit.Catalog), code string) {
		t.Helper()
		v, err := op.Catalog(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		c := api.CatalogOf(v)
		c.Items = append([]credit.Item(nil), c.Items...)
		c.Version = v.Version + 1
		mutate(c)
		if _, err := op.PublishCatalog(ctxT(t, 30*time.Second), c); api.Code(err) != code {
			t.Fatalf("%s: %v, want %s", name, err, code)
		}
		if after, err := op.Catalog(ctxT(t, 10*time.Second)); err != nil || after.Version != v.Version {
			t.Fatalf("%s changed the catalog: %+v, %v", name, after.Version, err)
		}
	}
	refused("an item dropped (the new one, which has a record)", func(c *credit.Catalog) {
		c.Items = slices.DeleteFunc(c.Items, func(it credit.Item) bool { return it.Code == added.Code })
	}, api.CodeConflict)
	refused("a display period shortened", func(c *credit.Catalog) {
		for i := range c.Items {
			if c.Items[i].Code == "FOOD-DRUG-PENALTY" {
				c.Items[i].DisplayPeriod = credit.Period{Months: 6}
			}
		}
	}, api.CodeConflict)
	refused("a version skipped", func(c *credit.Catalog) { c.Version += 2 }, api.CodeConflict)
	refused("a version repeated", func(c *credit.Catalog) { c.Version-- }, api.CodeConflict)
	refused("an item without legal basis", func(c *credit.Catalog) {
		it := c.Items[0]
		it.Code, it.LegalBasis = "NO-BASIS", ""
		c.Items = append(c.Items, it)
	}, api.CodeBadRequest)
}
