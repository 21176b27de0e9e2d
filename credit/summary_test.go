package credit

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	c := DefaultCatalog()
	on := d("2025-06-01")
	mk := func(id, item, decided string, status Status) Record {
		r := rec(item, decided, status)
		r.ID = id
		return r
	}
	tests := []struct {
		name    string
		records []Record
		want    IndexSummary
	}{
		{"nothing", nil, IndexSummary{}},
		{"serious, listed", []Record{mk("a", "DISHONEST-JUDGMENT-DEBTOR", "2024-09-01", StatusActive)},
			IndexSummary{Negative: 1, Serious: 1, OnDishonestyList: true, DisplayUntil: d("2026-09-01")}},
		{"mixed", []Record{
			mk("a", "FOOD-DRUG-PENALTY", "2025-01-10", StatusDisputed),
			mk("b", "OUTSTANDING-YOUTH-VOLUNTEER", "2023-07-01", StatusActive),
			mk("c", "ADMINISTRATIVE-LICENCE", "2024-01-01", StatusActive),
			mk("d", "VOLUNTEER-SERVICE-RECORD", "2024-01-01", StatusActive),
		}, IndexSummary{Positive: 2, Negative: 1, Neutral: 1, OnRedList: true, HasDisputed: true, DisplayUntil: d("2027-01-01")}},
		{"not displayed", []Record{
			mk("a", "FOOD-DRUG-PENALTY", "2024-01-10", StatusActive), // display ended 2025-01-10
			mk("b", "TAX-SERIOUS", "2024-01-10", StatusRevoked),
			mk("c", "TAX-SERIOUS", "2024-01-10", StatusExpired),
			mk("d", "BLOOD-DONATION", "2025-01-10", StatusActive), // internal: only the subject sees it
			mk("e", "NO-SUCH-ITEM", "2025-01-10", StatusActive),
			mk("f", "TAX-SERIOUS", "2025-07-01", StatusActive), // decided after the day
		}, IndexSummary{}},
		{"repaired", []Record{mk("a", "TAX-SERIOUS", "2024-01-10", StatusRepaired)},
			IndexSummary{Repaired: 1, DisplayUntil: d("2027-01-10")}},
	}
	for _, tt := range tests {
		got := Summarize(tt.records, c, on)
		if got != tt.want {
			t.Errorf("%s: Summarize =\n%+v\nwant\n%+v", tt.name, got, tt.want)
		}
		if got.Empty() != (tt.want == IndexSummary{}) {
			t.Errorf("%s: Empty() = %v", tt.name, got.Empty())
		}
	}
}

// The summary's encodings carry flags, counts and a date only.
func TestIndexSummaryEncoding(t *testing.T) {
	s := IndexSummary{Negative: 1, Serious: 1, OnDishonestyList: true, DisplayUntil: d("2026-09-01")}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"display_until":"2026-09-01"`) || !strings.Contains(string(b), `"on_dishonesty_list":true`) {
		t.Errorf("JSON = %s", b)
	}
	typ := reflect.TypeFor[IndexSummary]()
	seen := map[string]bool{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("cbor")
		if !strings.Contains(tag, "keyasint") {
			t.Errorf("field %s has cbor tag %q", f.Name, tag)
		}
		key := strings.Split(tag, ",")[0]
		if seen[key] {
			t.Errorf("cbor key %s used twice", key)
		}
		seen[key] = true
		switch f.Type.Kind() {
		case reflect.Int, reflect.Int32, reflect.Bool:
		default:
			t.Errorf("field %s of kind %s could carry content", f.Name, f.Type.Kind())
		}
	}
}

func TestListsOnAndThreeYearsClean(t *testing.T) {
	c := DefaultCatalog()
	on := d("2025-06-01")
	licensing, _ := c.Purpose("ADMIN-LICENSING")
	records := []Record{
		rec("DISHONEST-JUDGMENT-DEBTOR", "2024-09-01", StatusActive),
		rec("OUTSTANDING-YOUTH-VOLUNTEER", "2024-09-01", StatusActive),
		rec("TAX-SERIOUS", "2024-09-01", StatusRepaired),
	}
	if got := ListsOn(records, c, on, licensing); !reflect.DeepEqual(got, []string{"DISHONEST-JUDGMENT-DEBTORS", "YOUTH-VOLUNTEER-RED"}) {
		t.Errorf("ListsOn = %v", got)
	}
	repair, _ := c.Purpose("CREDIT-REPAIR-REVIEW")
	if got := ListsOn(records[2:], c, on, repair); !reflect.DeepEqual(got, []string{"SERIOUS-TAX-VIOLATORS"}) {
		t.Errorf("ListsOn for repair review = %v", got)
	}

	tests := []struct {
		name    string
		records []Record
		want    bool
	}{
		{"no records", nil, true},
		{"only positive", records[1:2], true},
		{"serious record displayed", records[:1], false},
		{"disputed counts", []Record{rec("TAX-SERIOUS", "2024-09-01", StatusDisputed)}, false},
		{"repaired does not count", records[2:], true},
		{"display ended", []Record{rec("FOOD-DRUG-PENALTY", "2024-01-10", StatusActive)}, true},
		{"older than three years", []Record{rec("MORAL-MODEL", "2020-01-01", StatusActive), rec("TAX-SERIOUS", "2022-06-01", StatusActive)}, true},
		{"just within three years", []Record{rec("TAX-SERIOUS", "2022-06-02", StatusActive)}, false},
	}
	for _, tt := range tests {
		if got := ThreeYearsClean(tt.records, c, on, licensing); got != tt.want {
			t.Errorf("%s: ThreeYearsClean = %v", tt.name, got)
		}
	}
}

func TestClassify(t *testing.T) {
	c := DefaultCatalog()
	on := d("2025-06-01")
	p, _ := c.Purpose("ADMIN-LICENSING")
	mk := func(id, item, decided string) Record {
		r := rec(item, decided, StatusActive)
		r.ID = id
		return r
	}
	records := []Record{
		mk("v2", "OUTSTANDING-YOUTH-VOLUNTEER", "2024-05-01"),
		mk("v1", "OUTSTANDING-YOUTH-VOLUNTEER", "2023-05-01"),
		mk("v3", "OUTSTANDING-YOUTH-VOLUNTEER", "2025-05-01"), // cap 20 reached: 0 points
		mk("f1", "FOOD-DRUG-PENALTY", "2024-10-01"),           // 8 months ago: decayed to -2
		mk("f2", "FOOD-DRUG-PENALTY", "2025-04-01"),           // -5
		mk("x", "FOOD-DRUG-PENALTY", "2023-01-01"),            // not displayed
		mk("l", "ADMINISTRATIVE-LICENCE", "2025-01-01"),       // neutral: no rule
	}
	got := c.Classify(records, p, on)
	want := []PointLog{
		{Points: 10, Record: "v1", Rule: "P-YOUTH-VOLUNTEER"},
		{Points: 10, Record: "v2", Rule: "P-YOUTH-VOLUNTEER"},
		{Points: -2, Record: "f1", Rule: "P-FOOD-DRUG-PENALTY", Decayed: true},
		{Points: -5, Record: "f2", Rule: "P-FOOD-DRUG-PENALTY"},
		{Points: 0, Record: "v3", Rule: "P-YOUTH-VOLUNTEER", Capped: true},
	}
	if len(got.Points) != len(want) {
		t.Fatalf("points = %+v", got.Points)
	}
	for i, w := range want {
		g := got.Points[i]
		if g.Points != w.Points || g.Record != w.Record || g.Rule != w.Rule || g.Decayed != w.Decayed || g.Capped != w.Capped {
			t.Errorf("point %d = %+v, want %+v", i, g, w)
		}
		if g.LegalBasis == "" || g.Department != "market-supervision" {
			t.Errorf("point %d lacks legal basis or department: %+v", i, g)
		}
	}
	if got.Total != 13 || got.Level != "B" || got.LevelName != "诚信良好" {
		t.Errorf("total %d level %s %s", got.Total, got.Level, got.LevelName)
	}
	debtor := c.Classify([]Record{mk("j1", "DISHONEST-JUDGMENT-DEBTOR", "2025-01-01"), mk("j2", "DISHONEST-JUDGMENT-DEBTOR", "2025-02-01"), mk("j3", "DISHONEST-JUDGMENT-DEBTOR", "2025-03-01")}, p, on)
	if debtor.Total != -60 || debtor.Level != "D" {
		t.Errorf("debtor: total %d level %s", debtor.Total, debtor.Level)
	}
	if empty := c.Classify(nil, p, on); empty.Total != 0 || empty.Level != "B" || empty.Points == nil {
		t.Errorf("empty: %+v", empty)
	}
}

// TestSummarizeReadsOnlySummaryFields: for random sets of records, with
// every other field varied too, Summarize gives the same summary for the
// records' SummaryFields as for the records: a district that publishes from
// the fields it keeps beside its subject index publishes what the records
// say. A Summarize that began to read another field fails here.
func TestSummarizeReadsOnlySummaryFields(t *testing.T) {
	c := DefaultCatalog()
	rng := rand.New(rand.NewPCG(13, 1))
	items := []string{"NO-SUCH-ITEM"}
	for _, it := range c.Items {
		items = append(items, it.Code)
	}
	// Real values, so that a Summarize that read the record's own
	// polarity or severity instead of its item's would count differently.
	polarities := []Polarity{Positive, Negative, Neutral, ""}
	severities := []Severity{Serious, Ordinary, ""}
	statuses := []Status{StatusActive, StatusDisputed, StatusCorrected, StatusRepaired, StatusExpired, StatusRevoked}
	base := d("2020-01-01")
	day := func() Date { return base + Date(rng.IntN(3650)) }
	text := func() string { return fmt.Sprintf("t%d", rng.IntN(1000)) }
	differ := 0
	for range 2000 {
		recs := make([]Record, 1+rng.IntN(5))
		fields := make([]Record, len(recs))
		for i := range recs {
			recs[i] = Record{ID: text(), Subject: text(), CatalogItem: items[rng.IntN(len(items))],
				DecisionNumber: text(), OccurredOn: day(), DecidedOn: day(), Summary: text(),
				Department: text(), District: text(), Polarity: polarities[rng.IntN(len(polarities))],
				Severity:   severities[rng.IntN(len(severities))],
				LegalBasis: text(), Status: statuses[rng.IntN(len(statuses))], Version: 1 + rng.IntN(5),
				CatalogVersion: rng.IntN(5), RecordedAt: time.Unix(rng.Int64N(1<<31), 0), Reason: text()}
			fields[i] = recs[i].SummaryFields()
		}
		on := day()
		want := Summarize(recs, c, on)
		if got := Summarize(fields, c, on); got != want {
			t.Fatalf("Summarize of the summary fields = %+v, of the records %+v", got, want)
		}
		if want != (IndexSummary{}) {
			differ++
		}
	}
	if differ < 100 {
		t.Fatalf("only %d of 2000 random sets counted anything: the test does not exercise Summarize", differ)
	}
}
