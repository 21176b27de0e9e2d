package systemtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/attest"
	"credfed/certs"
	"credfed/credit"
	"credfed/localfed"
	"credfed/node"
)

// portal is the client of a district's portal.
func portal(t *testing.T, f *localfed.Federation, district string) *api.Client {
	return clientOf(t, f, district, f.Layout.Portals[district])
}

// TestReportAndAccessLogAcrossTheFederation: a subject with records at three
// districts asks a fourth district's portal for the own report. It lists
// every record with its ref, verifies offline, and fails after any change;
// the access log has every lookup once, with purpose and reference, and a
// delayed purpose's lookup only once its delay has passed.
func TestReportAndAccessLogAcrossTheFederation(t *testing.T) {
	clock := clockAt(credit.TodayAt(time.Now()))
	f := startFed(t, localfed.Spec{Districts: 4}, node.Options{Now: clock.Now})
	ds := f.Districts()
	subject := credit.SyntheticPerson(777, credit.NewDate(1975, 2, 3))
	for i, d := range ds[:3] {
		submit(t, f, d, record(fmt.Sprintf("R-%d", i), subject, "FOOD-DRUG-PENALTY", "处罚事由"))
	}
	waitIndexed(t, f, subject, 3)

	coord := coordinator(t, f)
	licensing := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "许可〔2026〕7号"}
	if _, err := lookupUntil(t, coord, licensing); err != nil {
		t.Fatal(err)
	}
	clock.set(clock.Now().Add(time.Minute)) // the newer lookup, listed first
	investigation := api.LookupRequest{Subject: subject, Purpose: "LAW-ENFORCEMENT", User: "李四", Reference: "案〔2026〕9号"}
	if _, err := lookupUntil(t, coord, investigation); err != nil {
		t.Fatal(err)
	}

	p := portal(t, f, ds[3])
	req := api.SubjectRequest{Subject: subject, Authentication: "实名认证 FACE-2026-001"}
	raw, rep, err := p.Report(ctxT(t, 30*time.Second), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Districts) != 3 {
		t.Fatalf("report districts %+v, want 3", rep.Districts)
	}
	refs := map[string]bool{}
	for _, d := range rep.Districts {
		if d.Status != api.DistrictOK || len(d.Records) != 1 {
			t.Fatalf("district %+v", d)
		}
		r := d.Records[0]
		if r.Ref != d.District+"/"+localfed.Department+"/"+r.ID {
			t.Errorf("record ref %q in district %s", r.Ref, d.District)
		}
		if strings.Contains(r.Subject, subject) {
			t.Errorf("the report carries the full identifier: %q", r.Subject)
		}
		refs[r.Ref] = true
	}
	if len(refs) != 3 {
		t.Errorf("refs %v", refs)
	}
	if bytes.Contains(raw, []byte(subject)) {
		t.Error("the signed report holds the subject's full identifier")
	}

	// Offline verification, and any change breaks it.
	ca, err := certs.LoadCertFile(f.Layout.CA)
	if err != nil {
		t.Fatal(err)
	}
	v, err := attest.Verify(raw, ca)
	if err != nil {
		t.Fatalf("the report does not verify: %v", err)
	}
	// Signed by the coordinator that gathered it (the portal's city), and
	// relayed by the district as it was signed.
	if !v.Signer.Role.IsCoordinatorNode() || v.Signer.Region != rep.GatheredBy || !certs.InRegion(regionOf(f, ds[3]), v.Signer.Region) {
		t.Errorf("signed by %v, gathered by %s; want the portal district's coordinator", v.Signer, rep.GatheredBy)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc["gathered_by"] = "elsewhere"
	changed, _ := json.Marshal(doc)
	if _, err := attest.Verify(changed, ca); err == nil {
		t.Error("a changed report still verifies")
	}
	for _, i := range []int{len(raw) / 3, len(raw) / 2, 2 * len(raw) / 3} {
		mod := bytes.Clone(raw)
		mod[i] ^= 0x01
		if _, err := attest.Verify(mod, ca); err == nil {
			t.Errorf("byte %d changed and the report still verifies", i)
		}
	}

	// The access log: the licensing lookup once, the investigation delayed.
	log, err := p.AccessLog(ctxT(t, 30*time.Second), req)
	if err != nil {
		t.Fatal(err)
	}
	// The report just asked is a read of the records too: one entry, the
	// portal's, however many districts answered.
	lookups, reports := byOperation(log)
	if len(lookups) != 1 || log.Delayed != 1 || len(reports) != 1 {
		t.Fatalf("access log %+v, want the licensing lookup, the report, and one delayed", log)
	}
	e := lookups[0]
	if e.Purpose != licensing.Purpose || e.Reference != licensing.Reference || e.User != licensing.User ||
		e.LookupID == "" || len(e.Districts) != 3 || e.Role != "coordinator" {
		t.Errorf("entry %+v", e)
	}
	if r := reports[0]; r.Role != "portal" || len(r.Districts) != 3 || r.LookupID == "" {
		t.Errorf("report entry %+v, want the portal's, from 3 districts", r)
	}
	if len(rep.AccessLog.Entries) != 1 || rep.AccessLog.Entries[0].LookupID != e.LookupID {
		t.Errorf("the report's access log %+v differs from the access log", rep.AccessLog)
	}

	// Seven months later the investigation's lookup is shown too, newest
	// lookup first.
	clock.set(clock.Now().AddDate(0, 7, 0))
	log, err = p.AccessLog(ctxT(t, 30*time.Second), req)
	if err != nil {
		t.Fatal(err)
	}
	lookups, _ = byOperation(log)
	if len(lookups) != 2 || log.Delayed != 0 || lookups[0].Purpose != investigation.Purpose {
		t.Fatalf("access log after the delay %+v", log)
	}

	// Past the display period (a year for this item) the subject still sees
	// the records, as expired, until their retention ends.
	clock.set(clock.Now().AddDate(0, 6, 0))
	_, rep, err = p.Report(ctxT(t, 30*time.Second), req)
	if err != nil {
		t.Fatal(err)
	}
	expired := 0
	for _, d := range rep.Districts {
		for _, r := range d.Records {
			if r.Status == "expired" {
				expired++
			}
		}
	}
	if expired != 3 {
		t.Errorf("a year and more later the report shows %d expired records, want 3: %+v", expired, rep.Districts)
	}

	// Only portals ask; a department is refused.
	if _, _, err := department(t, f, ds[0]).Report(ctxT(t, 30*time.Second), req); api.Code(err) != api.CodeForbidden {
		t.Errorf("a department's report: %v, want forbidden", err)
	}
	// No authentication reference: refused, typed.
	if _, _, err := p.Report(ctxT(t, 30*time.Second), api.SubjectRequest{Subject: subject}); api.Code(err) != api.CodeBadRequest {
		t.Errorf("a report without authentication: %v, want bad_request", err)
	}
}

// byOperation splits an access log into its lookups and its reports.
func byOperation(log *api.AccessLog) (lookups, reports []api.AccessEntry) {
	for _, e := range log.Entries {
		switch e.Operation {
		case "lookup":
			lookups = append(lookups, e)
		case "report":
			reports = append(reports, e)
		}
	}
	return lookups, reports
}
