package systemtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
)

// TestStatsAcrossTheFederation: records at two districts of one city, lookups
// through the province's and a city's coordinators; GET /v1/stats at the
// province counts every district and both coordinators' lookups, at the
// city its own districts and lookups only; counts under 5 are null and
// suppressed, with the totals that would give them back, and the raw JSON
// never holds a string in a number's place nor any identifier. The request
// is audited once at the node asked; departments and other regions are
// refused.
func TestStatsAcrossTheFederation(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 4}, node.Options{})
	// Two districts of the same city, and that city's node.
	var cityName string
	for _, n := range f.Layout.Nodes {
		if n.Role == certs.City && certs.InRegion(regionOf(f, f.Districts()[0]), n.Region) {
			cityName = n.Name
		}
	}
	var dA, dB, far string
	for _, d := range f.Districts() {
		switch {
		case certs.InRegion(regionOf(f, d), regionOf(f, cityName)) && dA == "":
			dA = d
		case certs.InRegion(regionOf(f, d), regionOf(f, cityName)) && dB == "":
			dB = d
		case !certs.InRegion(regionOf(f, d), regionOf(f, cityName)):
			far = d
		}
	}
	if cityName == "" || dA == "" || dB == "" || far == "" {
		t.Fatalf("layout: city %q, districts %q %q, other city's %q", cityName, dA, dB, far)
	}

	// dA: 6 on time, 5 late (decided 30 days ago); dB: 2; far: 7.
	subject := credit.SyntheticPerson(4242, credit.NewDate(1979, 5, 6))
	var recs []api.RecordInput
	for i := range 6 {
		recs = append(recs, record(fmt.Sprintf("S-A-%d", i), subject, "FOOD-DRUG-PENALTY", "处罚事由"))
	}
	old := credit.TodayAt(time.Now()) - 30
	for i := range 5 {
		r := record(fmt.Sprintf("S-L-%d", i), subject, "FOOD-DRUG-PENALTY", "处罚事由")
		r.DecidedOn, r.OccurredOn = old.String(), (old - 3).String()
		recs = append(recs, r)
	}
	submit(t, f, dA, recs...)
	submit(t, f, dB, record("S-B-0", subject, "FOOD-DRUG-PENALTY", "处罚事由"), record("S-B-1", subject, "FOOD-DRUG-PENALTY", "处罚事由"))
	recs = nil
	for i := range 7 {
		recs = append(recs, record(fmt.Sprintf("S-F-%d", i), subject, "FOOD-DRUG-PENALTY", "处罚事由"))
	}
	submit(t, f, far, recs...)
	waitIndexed(t, f, subject, 3)

	// Five lookups by the province's coordinator, one by the city's.
	licensing := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "张三", Reference: "许可〔2026〕7号"}
	prov := coordinator(t, f)
	for range 5 {
		if _, err := lookupUntil(t, prov, licensing); err != nil {
			t.Fatal(err)
		}
	}
	cityCoord := clientOf(t, f, cityName, f.Layout.Coordinators[cityName])
	if _, err := lookupUntil(t, cityCoord, licensing); err != nil {
		t.Fatal(err)
	}

	// The province, by its coordinator, as raw JSON and decoded.
	var raw json.RawMessage
	if _, err := prov.Do(ctxT(t, 60*time.Second), "GET", "/v1/stats", "", nil, &raw); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(subject)) || bytes.Contains(raw, []byte("S-A-")) || bytes.Contains(raw, []byte("张三")) {
		t.Fatal("the statistics hold an identifier, a record id or a user")
	}
	noStrings(t, raw)
	var st api.Stats
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.Node != regionOf(f, f.Province()) || st.MinCount != 5 || len(st.Districts) != 4 {
		t.Fatalf("province stats: node %s, min %d, districts %+v", st.Node, st.MinCount, st.Districts)
	}
	for _, d := range st.Districts {
		if d.Status != api.DistrictOK {
			t.Errorf("district %+v", d)
		}
	}
	food := -1
	for i, c := range st.Records.Categories {
		if c.Domain == "FOOD-DRUG" && c.Polarity == "negative" && c.Severity == "ordinary" {
			food = i
		}
	}
	if food < 0 {
		t.Fatalf("no FOOD-DRUG category in %+v", st.Records.Categories)
	}
	rows := map[string]api.RecordRow{}
	for _, r := range st.Records.Districts {
		rows[r.District] = r
	}
	value(t, "dA's food records", rows[regionOf(f, dA)].Counts[food], 11)
	value(t, "dA's records", rows[regionOf(f, dA)].Total, 11)
	suppressed(t, "dB's food records (2)", rows[regionOf(f, dB)].Counts[food])
	suppressed(t, "dB's records", rows[regionOf(f, dB)].Total)
	value(t, "the other city's district's", rows[regionOf(f, far)].Counts[food], 7)
	suppressed(t, "food records in the province (dB's 2 among them)", st.Records.Categories[food].Total)
	suppressed(t, "all records (a suppressed row total among its parts)", st.Records.Total)
	// No objections filed: every age bucket holds 0 (a zero is no small
	// count), in every district and in total.
	if !slices.Equal(st.Cases.AgeBuckets, []int{5, 15, 30}) || len(st.Cases.ObjectionAges) != 4 {
		t.Errorf("objection age buckets %v, totals %+v", st.Cases.AgeBuckets, st.Cases.ObjectionAges)
	}
	for _, r := range st.Cases.Districts {
		for i, c := range r.ObjectionAges {
			value(t, fmt.Sprintf("%s's open objections in age bucket %d", r.District, i), c, 0)
		}
	}
	late := map[string]api.Cell{}
	for _, d := range st.Timeliness.Departments {
		late[d.District] = d.Late
	}
	value(t, "dA's late records", late[regionOf(f, dA)], 5)
	value(t, "dB's late records", late[regionOf(f, dB)], 0)
	value(t, "late records in the province", st.Timeliness.Late, 5)
	lic := -1
	for i, p := range st.Lookups.Purposes {
		if p.Purpose == licensing.Purpose {
			lic = i
		}
	}
	if lic < 0 || len(st.Coordinators) != 3 {
		t.Fatalf("purposes %+v, coordinators %+v", st.Lookups.Purposes, st.Coordinators)
	}
	for _, c := range st.Coordinators {
		if c.Status != api.DistrictOK || c.AuditComplete == nil || !*c.AuditComplete {
			t.Errorf("coordinator source %+v", c)
		}
	}
	byInst := map[string]api.UsageRow{}
	for _, r := range st.Lookups.Institutions {
		byInst[r.Region] = r
	}
	value(t, "the province coordinator's licensing lookups", byInst[regionOf(f, f.Province())].Counts[lic], 5)
	suppressed(t, "the city coordinator's licensing lookup (1)", byInst[regionOf(f, cityName)].Counts[lic])
	suppressed(t, "licensing lookups in the province", st.Lookups.Purposes[lic].Total)

	// The city: its districts only, its coordinator's lookup only.
	cst, err := cityCoord.Stats(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range cst.Districts {
		if !certs.InRegion(d.Region, regionOf(f, cityName)) {
			t.Errorf("the city's statistics count %s", d.Region)
		}
	}
	if len(cst.Records.Districts) != 2 || len(cst.Coordinators) != 1 || len(cst.Lookups.Institutions) != 1 {
		t.Errorf("city stats: rows %+v, coordinators %+v, institutions %+v", cst.Records.Districts, cst.Coordinators, cst.Lookups.Institutions)
	}

	// The operator too; a department, and the other city's coordinator at
	// this city's node, are refused.
	op := clientOf(t, f, f.Province(), f.Layout.Operator)
	if _, err := op.Stats(ctxT(t, 60*time.Second)); err != nil {
		t.Errorf("the operator's statistics: %v", err)
	}
	if _, err := department(t, f, dA).Stats(ctxT(t, 30*time.Second)); api.Code(err) != api.CodeForbidden {
		t.Errorf("a department's statistics: %v, want forbidden", err)
	}
	var otherCity string
	for _, n := range f.Layout.Nodes {
		if n.Role == certs.City && n.Name != cityName {
			otherCity = n.Name
		}
	}
	elsewhere := clientOf(t, f, cityName, f.Layout.Coordinators[otherCity])
	if _, err := elsewhere.Stats(ctxT(t, 30*time.Second)); api.Code(err) != api.CodeForbidden {
		t.Errorf("another city's coordinator at this city's node: %v, want forbidden", err)
	}

	// Audited at the province: the coordinator's and the operator's; the
	// refusal at the city; nothing at the districts.
	entries, _, err := f.Node(f.Province()).Store().Audit().Page(storage.AuditFilter{Operation: "stats"}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var allowed, denied int
	for _, e := range entries {
		if e.Subject != "" {
			t.Errorf("a stats entry names a subject: %+v", e)
		}
		switch e.Decision {
		case storage.DecisionAllowed:
			allowed++
		case storage.DecisionDenied:
			denied++
		}
	}
	if allowed != 2 || denied != 0 {
		t.Errorf("province stats entries: %d allowed, %d denied; want 2, 0", allowed, denied)
	}
	entries, _, err = f.Node(cityName).Store().Audit().Page(storage.AuditFilter{Operation: "stats"}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	denied = 0
	for _, e := range entries {
		if e.Decision == storage.DecisionDenied && e.Reason == api.CodeForbidden {
			denied++
		}
	}
	if len(entries) != 2 || denied != 1 {
		t.Errorf("city stats entries %+v: want the city coordinator's and the other city's refused", entries)
	}
	for _, d := range []string{dA, dB, far} {
		got, _, err := f.Node(d).Store().Audit().Page(storage.AuditFilter{Operation: "stats"}, 0, 10)
		if err != nil || len(got) != 0 {
			t.Errorf("district %s: %d stats entries (%v)", d, len(got), err)
		}
	}
	// Counted by decision.
	mf, err := f.Node(f.Province()).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	counted := false
	for _, m := range mf {
		if m.GetName() == "credfed_stats_requests_total" {
			for _, s := range m.GetMetric() {
				for _, l := range s.GetLabel() {
					if l.GetName() == "decision" && l.GetValue() == "allowed" && s.GetCounter().GetValue() == 2 {
						counted = true
					}
				}
			}
		}
	}
	if !counted {
		t.Error("credfed_stats_requests_total{decision=allowed} is not 2 at the province")
	}
}

func value(t *testing.T, what string, c api.Cell, v int64) {
	t.Helper()
	if c.Suppressed || c.Value == nil || *c.Value != v {
		t.Errorf("%s: %+v, want %d", what, c, v)
	}
}

func suppressed(t *testing.T, what string, c api.Cell) {
	t.Helper()
	if !c.Suppressed || c.Value != nil {
		t.Errorf("%s: %+v, want {value: null, suppressed: true}", what, c)
	}
}

// noStrings fails if any "value" of the document is not a number or null,
// or a suppressed cell carries a number.
func noStrings(t *testing.T, raw []byte) {
	t.Helper()
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	cells := 0
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if val, ok := x["value"]; ok {
				cells++
				switch val.(type) {
				case nil:
					if x["suppressed"] != true {
						t.Errorf("a null value that is not suppressed: %v", x)
					}
				case float64:
					if _, ok := x["suppressed"]; ok {
						t.Errorf("a suppressed cell with a number: %v", x)
					}
				default:
					t.Errorf("a value that is neither a number nor null: %v", x)
				}
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(doc)
	if cells < 10 || !strings.Contains(string(raw), `"suppressed":true`) {
		t.Errorf("%d cells in the document, none suppressed?", cells)
	}
}
