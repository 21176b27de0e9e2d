package systemtest

import (
	"testing"
	"time"

	"credfed/api"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// TestPseudonymCustodyIsAudited: a district's publisher has its city
// pseudonymize the subjects it writes; the city registers each request
// (the district, the count, the pseudonyms) and accounts for it in GET
// /v1/custody, which reviewers may read and districts may not.
func TestPseudonymCustodyIsAudited(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(7373, credit.NewDate(1983, 3, 8))
	submit(t, f, district, record("CU-1", subject, "FOOD-DRUG-PENALTY", "custody"))
	waitIndexed(t, f, subject, 1)
	p := pseudonymOf(t, f, subject).String()
	city := f.Node("quzhou")
	var entry *storage.AuditEntry
	wait.Until(t, 10*time.Second, "the city's audit entry of the request", func() bool {
		seq, _ := city.Store().Audit().Head()
		city.Store().Audit().Range(1, seq, func(e storage.AuditEntry) error {
			for _, q := range e.Pseudonyms {
				if q == p && e.Operation == "pseudonymize" {
					entry = &e
				}
			}
			return nil
		})
		return entry != nil
	})
	if entry.District != regionOf(f, district) || entry.Decision != storage.DecisionAllowed || entry.Count != len(entry.Pseudonyms) {
		t.Fatalf("audit entry %+v", entry)
	}
	var custody api.Custody
	if _, err := clientOf(t, f, "quzhou", f.Layout.Coordinators["quzhou"]).Do(ctxT(t, 10*time.Second), "GET", "/v1/custody", "", nil, &custody); err != nil {
		t.Fatal(err)
	}
	if len(custody.Districts) != 1 || custody.Districts[0].District != regionOf(f, district) || custody.Districts[0].Issued == 0 || custody.Districts[0].Flagged {
		t.Fatalf("custody %+v", custody)
	}
	if _, err := department(t, f, district).Do(ctxT(t, 10*time.Second), "GET", "/v1/custody", "", nil, nil); api.Code(err) != api.CodeForbidden {
		t.Fatalf("a department reads custody: %v", err)
	}
	if _, err := clientOf(t, f, district, f.Layout.Operator).Do(ctxT(t, 10*time.Second), "GET", "/v1/custody", "", nil, nil); api.Code(err) != api.CodeForbidden {
		t.Fatalf("custody at a district: %v", err)
	}
}
