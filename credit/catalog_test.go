package credit

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestDefaultCatalog(t *testing.T) {
	c := DefaultCatalog()
	if err := c.Validate(); err != nil {
		t.Fatalf("default catalog invalid: %v", err)
	}
	if c.Version != 1 {
		t.Errorf("version = %d", c.Version)
	}
	keyDomains := []string{"FOOD-DRUG", "PRODUCTION-SAFETY", "FIRE-SAFETY", "TRAFFIC-SAFETY", "ENVIRONMENT",
		"BIOSAFETY", "PRODUCT-QUALITY", "TAX", "MEDICAL-HEALTH", "LABOUR-SECURITY", "CONSTRUCTION",
		"FINANCIAL-SERVICES", "INTELLECTUAL-PROPERTY", "JUDICIAL", "E-COMMERCE", "VOLUNTEER"}
	for _, code := range append(keyDomains, "PUBLIC-RESOURCE-TRADING", "EDUCATION-RESEARCH") {
		if _, ok := c.Domain(code); !ok {
			t.Errorf("domain %s missing", code)
		}
	}
	if n := countKey(c.Domains, func(d Domain) bool { return d.Key }); n != 16 {
		t.Errorf("%d key domains, want 16", n)
	}
	if n := countKey(c.Occupations, func(o Occupation) bool { return o.Key }); n != 16 {
		t.Errorf("%d key occupational groups, want 16", n)
	}
	if len(c.Items) < 20 {
		t.Errorf("%d items, want at least 20", len(c.Items))
	}
	// Every key domain has at least one item.
	for _, d := range keyDomains {
		if countKey(c.Items, func(it Item) bool { return it.Domain == d }) == 0 {
			t.Errorf("no item in key domain %s", d)
		}
	}
	kinds := map[ListKind]int{}
	for _, l := range c.Lists {
		kinds[l.Kind]++
	}
	if kinds[RedList] < 2 || kinds[SeriousDishonestyList] < 2 {
		t.Errorf("lists by kind = %v", kinds)
	}
	for _, code := range []string{"CIVIL-SERVICE-RECRUITMENT", "ADMIN-LICENSING", "HOUSEHOLD-SETTLEMENT", "TITLE-EVALUATION", "AWARDS", "GOVERNMENT-PROCUREMENT"} {
		s, ok := c.Scenario(code)
		if !ok {
			t.Errorf("scenario %s missing", code)
			continue
		}
		var inc, res int
		for _, m := range s.Measures {
			if m.Kind == Incentive {
				inc++
			} else {
				res++
			}
		}
		if inc == 0 || res == 0 {
			t.Errorf("scenario %s: %d incentives, %d restrictions", code, inc, res)
		}
	}
	self := 0
	for _, p := range c.Purposes {
		if p.SubjectOwn {
			self++
		}
	}
	if self != 1 {
		t.Errorf("%d subject-own purposes, want 1", self)
	}
	for _, code := range []string{"DISHONEST-JUDGMENT-DEBTOR", "TAX-SERIOUS", "TRAFFIC-SERIOUS", "EXAM-CHEATING",
		"ACADEMIC-FRAUD", "STUDENT-LOAN-DEFAULT", "SOCIAL-INSURANCE-FRAUD", "MEDICAL-INSURANCE-FRAUD",
		"FOOD-SAFETY-SERIOUS", "OUTSTANDING-YOUTH-VOLUNTEER", "MORAL-MODEL", "ADMINISTRATIVE-LICENCE",
		"LAWYER-LICENCE-REVOKED", "DOCTOR-LICENCE-REVOKED", "ACCOUNTANT-CERTIFICATE-REVOKED", "GOVERNMENT-JUDGMENT-DEFAULT"} {
		if _, ok := c.Item(code); !ok {
			t.Errorf("item %s missing", code)
		}
	}
	if it, _ := c.Item("GOVERNMENT-JUDGMENT-DEFAULT"); it.SubjectKind != Organization {
		t.Error("government integrity item is not about organizations")
	}
	// A fresh copy each time: changing one does not change the next.
	c.Items[0].Name = "changed"
	if DefaultCatalog().Items[0].Name == "changed" {
		t.Error("DefaultCatalog shares state")
	}
}

func countKey[T any](xs []T, f func(T) bool) int {
	n := 0
	for _, x := range xs {
		if f(x) {
			n++
		}
	}
	return n
}

// The JSON of GET /v1/catalog uses API.md's names.
func TestCatalogJSONNames(t *testing.T) {
	b, err := json.Marshal(DefaultCatalog())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Version   int              `json:"version"`
		Items     []map[string]any `json:"items"`
		Purposes  []map[string]any `json:"purposes"`
		Lists     []map[string]any `json:"lists"`
		Scenarios []map[string]any `json:"scenarios"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Version != 1 {
		t.Errorf("version = %d", doc.Version)
	}
	want := map[string][]string{
		"item":     {"code", "name", "domain", "occupation", "polarity", "severity", "legal_basis", "display_period", "retention_period", "repairable", "objection_deadline_days", "disclosure", "lists", "purposes"},
		"purpose":  {"code", "name", "authorization_required", "roles"},
		"list":     {"code", "name", "kind"},
		"scenario": {"code", "name", "measures"},
	}
	for kind, entries := range map[string][]map[string]any{"item": doc.Items, "purpose": doc.Purposes, "list": doc.Lists, "scenario": doc.Scenarios} {
		for _, e := range entries {
			for _, k := range want[kind] {
				if _, ok := e[k]; !ok {
					t.Errorf("%s %v lacks JSON field %q", kind, e["code"], k)
				}
			}
		}
	}
	it := doc.Items[0]
	if it["display_period"] != "P1Y" || it["polarity"] != "negative" || it["severity"] != "ordinary" {
		t.Errorf("first item JSON = %v", it)
	}
	m := doc.Scenarios[0]["measures"].([]any)[0].(map[string]any)
	for _, k := range []string{"code", "text", "legal_basis", "kind"} {
		if _, ok := m[k]; !ok {
			t.Errorf("measure lacks %q", k)
		}
	}
	// And it decodes back to an equal, valid catalog.
	var back Catalog
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.Validate(); err != nil {
		t.Fatalf("decoded catalog invalid: %v", err)
	}
	b2, _ := json.Marshal(&back)
	if string(b) != string(b2) {
		t.Error("JSON round trip changed the catalog")
	}
}

func TestCatalogLookups(t *testing.T) {
	c := DefaultCatalog()
	var unindexed Catalog
	b, _ := json.Marshal(c)
	if err := json.Unmarshal(b, &unindexed); err != nil {
		t.Fatal(err)
	}
	for _, cat := range []*Catalog{c, &unindexed} {
		if it, ok := cat.Item("TAX-SERIOUS"); !ok || it.Severity != Serious {
			t.Errorf("Item(TAX-SERIOUS) = %+v, %v", it, ok)
		}
		if _, ok := cat.Item("NO-SUCH"); ok {
			t.Error("unknown item found")
		}
		if p, ok := cat.Purpose("SELF-INQUIRY"); !ok || !p.SubjectOwn || !p.Admits(RolePortal) || p.Admits(RoleCoordinator) {
			t.Errorf("Purpose(SELF-INQUIRY) = %+v, %v", p, ok)
		}
		if l, ok := cat.List("DISHONEST-JUDGMENT-DEBTORS"); !ok || l.Kind != SeriousDishonestyList {
			t.Errorf("List = %+v, %v", l, ok)
		}
		if s, ok := cat.Scenario("AWARDS"); !ok || s.Purpose != "AWARDS-EVALUATION" {
			t.Errorf("Scenario = %+v, %v", s, ok)
		}
		if _, ok := cat.Occupation("LAWYER"); !ok {
			t.Error("Occupation(LAWYER) missing")
		}
		if rs := cat.RulesFor("DISHONEST-JUDGMENT-DEBTOR"); len(rs) != 1 || rs[0].Points != -30 {
			t.Errorf("RulesFor = %+v", rs)
		}
	}
	// Concurrent reads (run with -race).
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, it := range c.Items {
				if _, ok := c.Item(it.Code); !ok {
					t.Errorf("concurrent lookup of %s failed", it.Code)
				}
			}
		}()
	}
	wg.Wait()
}

func TestScenarioApplicable(t *testing.T) {
	cat := DefaultCatalog()
	s, _ := cat.Scenario("ADMIN-LICENSING")
	codes := func(ms []Applied) string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Code)
		}
		return strings.Join(out, ",")
	}
	if got := codes(s.Applicable(nil, true)); got != "GREEN-CHANNEL" {
		t.Errorf("clean subject: %s", got)
	}
	if got := codes(s.Applicable(cat.ListsOf([]string{"DISHONEST-JUDGMENT-DEBTORS", "YOUTH-VOLUNTEER-RED"}), false)); got != "PRIORITY-VOLUNTEER,STRICT-REVIEW-DEBTOR" {
		t.Errorf("listed subject: %s", got)
	}
	if got := s.Applicable(nil, false); len(got) != 0 {
		t.Errorf("nothing applies, got %v", got)
	}
}

// TestCivilServiceRestrictsEverySeriousDishonestyList: the Civil Servant
// Law art. 26 bars every person listed for joint punishment of dishonesty,
// so each serious-dishonesty list of the catalog restricts recruitment,
// with that article as its basis, and no red list does.
func TestCivilServiceRestrictsEverySeriousDishonestyList(t *testing.T) {
	cat := DefaultCatalog()
	s, ok := cat.Scenario("CIVIL-SERVICE-RECRUITMENT")
	if !ok {
		t.Fatal("no civil-service scenario")
	}
	n := 0
	for _, l := range cat.Lists {
		got := s.Applicable([]List{l}, false)
		restricted := false
		for _, a := range got {
			if a.Kind == Restriction {
				restricted = true
				if !strings.Contains(a.LegalBasis, "公务员法") || len(a.Because) != 1 || a.Because[0] != l.Code {
					t.Errorf("list %s: restriction %s with basis %q because %v", l.Code, a.Code, a.LegalBasis, a.Because)
				}
			}
		}
		if want := l.Kind == SeriousDishonestyList; restricted != want {
			t.Errorf("list %s (%s): restricted %v, want %v", l.Code, l.Kind, restricted, want)
		}
		if l.Kind == SeriousDishonestyList {
			n++
		}
	}
	if n < 4 {
		t.Fatalf("the default catalog has %d serious-dishonesty lists; the test expects several", n)
	}
}

const headlineCatalog = `
version: 1
domains: [{code: TAX, name: 税收缴纳, key: true}]
occupations: []
purposes:
  - {code: ADMIN-LICENSING, name: 行政许可审查, roles: [coordinator]}
lists:
  - {code: SERIOUS-TAX-VIOLATORS, name: 重大税收违法失信主体名单, kind: serious_dishonesty, legal_basis: 国家税务总局令第54号}
items:
  - code: TAX-SERIOUS
    name: 重大税收违法失信行为
    domain: TAX
    polarity: negative
    severity: serious
    display_period: P3Y
    retention_period: P5Y
    repairable: false
    objection_deadline_days: 15
    disclosure: public
    lists: [SERIOUS-TAX-VIOLATORS]
    purposes: [ADMIN-LICENSING]
`

func TestLoadCatalogYAMLMissingLegalBasis(t *testing.T) {
	_, err := LoadCatalogYAML([]byte(headlineCatalog))
	if err == nil {
		t.Fatal("catalog without legal basis accepted")
	}
	if got, want := err.Error(), `catalog: item "TAX-SERIOUS" field legal_basis: required`; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
	var ce *CatalogError
	if !errors.As(err, &ce) || ce.Kind != "item" || ce.Code != "TAX-SERIOUS" || ce.Field != "legal_basis" {
		t.Errorf("CatalogError = %+v", ce)
	}
	if !errors.Is(err, ErrInvalidCatalog) {
		t.Error("error does not match ErrInvalidCatalog")
	}
	fixed := strings.Replace(headlineCatalog, "    severity: serious\n", "    severity: serious\n    legal_basis: 《重大税收违法失信主体信息公布管理办法》\n", 1)
	c, err := LoadCatalogYAML([]byte(fixed))
	if err != nil {
		t.Fatalf("fixed catalog refused: %v", err)
	}
	if it, _ := c.Item("TAX-SERIOUS"); it.SubjectKind != Person || it.DisplayPeriod != Years(3) {
		t.Errorf("defaults/periods not applied: %+v", it)
	}
	if p, _ := c.Purpose("ADMIN-LICENSING"); p.MaxDisclosure != Authorized {
		t.Errorf("max_disclosure default = %q", p.MaxDisclosure)
	}
}

func TestLoadCatalogYAMLDecoding(t *testing.T) {
	tests := map[string]string{
		"empty":          "",
		"typo":           strings.Replace(headlineCatalog, "disclosure: public", "disclosur: public", 1),
		"bad period":     strings.Replace(headlineCatalog, "display_period: P3Y", "display_period: 3 years", 1),
		"bad kind":       strings.Replace(headlineCatalog, "items:\n  - code: TAX-SERIOUS\n", "items:\n  - code: TAX-SERIOUS\n    subject_kind: company\n", 1),
		"two documents":  headlineCatalog + "\n---\nversion: 2\n",
		"not a mapping":  "- 1\n- 2\n",
		"unknown at top": "version: 1\nitemz: []\n",
	}
	for name, doc := range tests {
		if _, err := LoadCatalogYAML([]byte(doc)); !errors.Is(err, ErrInvalidCatalog) {
			t.Errorf("%s: error = %v, want ErrInvalidCatalog", name, err)
		}
	}
}

func TestValidateRefusesBadCatalogs(t *testing.T) {
	tests := []struct {
		name              string
		mutate            func(c *Catalog)
		kind, code, field string
	}{
		{"version", func(c *Catalog) { c.Version = 0 }, "catalog", "", "version"},
		{"no items", func(c *Catalog) { c.Items = nil; c.Rules = nil }, "catalog", "", "items"},
		{"item legal basis", func(c *Catalog) { item(c, "TAX-SERIOUS").LegalBasis = "  " }, "item", "TAX-SERIOUS", "legal_basis"},
		{"measure legal basis", func(c *Catalog) { c.Scenarios[0].Measures[0].LegalBasis = "" }, "measure", "CIVIL-SERVICE-RECRUITMENT/NO-RECRUITMENT-DISHONESTY", "legal_basis"},
		{"rule legal basis", func(c *Catalog) { c.Rules[0].LegalBasis = "" }, "rule", "P-DISHONEST-DEBTOR", "legal_basis"},
		{"list legal basis", func(c *Catalog) { c.Lists[0].LegalBasis = "" }, "list", "DISHONEST-JUDGMENT-DEBTORS", "legal_basis"},
		{"duplicate item", func(c *Catalog) { c.Items[1].Code = c.Items[0].Code }, "item", "FOOD-DRUG-PENALTY", "code"},
		{"duplicate purpose", func(c *Catalog) { c.Purposes[1].Code = c.Purposes[0].Code }, "purpose", "CIVIL-SERVICE-RECRUITMENT", "code"},
		{"duplicate domain", func(c *Catalog) { c.Domains[1].Code = c.Domains[0].Code }, "domain", "FOOD-DRUG", "code"},
		{"duplicate measure", func(c *Catalog) { c.Scenarios[0].Measures[1].Code = c.Scenarios[0].Measures[0].Code }, "measure", "CIVIL-SERVICE-RECRUITMENT/NO-RECRUITMENT-DISHONESTY", "code"},
		{"missing code", func(c *Catalog) { c.Lists[2].Code = "" }, "list", "#3", "code"},
		{"bad code", func(c *Catalog) { item(c, "TAX-SERIOUS").Code = "TAX SERIOUS" }, "item", "TAX SERIOUS", "code"},
		{"missing name", func(c *Catalog) { item(c, "TAX-SERIOUS").Name = "" }, "item", "TAX-SERIOUS", "name"},
		{"polarity", func(c *Catalog) { item(c, "ADMINISTRATIVE-LICENCE").Polarity = "good" }, "item", "ADMINISTRATIVE-LICENCE", "polarity"},
		{"severity", func(c *Catalog) { item(c, "TAX-SERIOUS").Severity = "grave" }, "item", "TAX-SERIOUS", "severity"},
		{"serious positive", func(c *Catalog) { item(c, "MORAL-MODEL").Severity = Serious }, "item", "MORAL-MODEL", "severity"},
		{"disclosure", func(c *Catalog) { item(c, "TAX-SERIOUS").Disclosure = "secret" }, "item", "TAX-SERIOUS", "disclosure"},
		{"subject kind", func(c *Catalog) { item(c, "TAX-SERIOUS").SubjectKind = 0 }, "item", "TAX-SERIOUS", "subject_kind"},
		{"list kind", func(c *Catalog) { c.Lists[0].Kind = "black" }, "list", "DISHONEST-JUDGMENT-DEBTORS", "kind"},
		{"measure kind", func(c *Catalog) { c.Scenarios[0].Measures[0].Kind = "reward" }, "measure", "CIVIL-SERVICE-RECRUITMENT/NO-RECRUITMENT-DISHONESTY", "kind"},
		{"zero display", func(c *Catalog) { item(c, "TAX-SERIOUS").DisplayPeriod = Period{} }, "item", "TAX-SERIOUS", "display_period"},
		{"negative display", func(c *Catalog) { item(c, "TAX-SERIOUS").DisplayPeriod = Period{Years: 3, Days: -1} }, "item", "TAX-SERIOUS", "display_period"},
		{"zero retention", func(c *Catalog) { item(c, "TAX-SERIOUS").RetentionPeriod = Period{} }, "item", "TAX-SERIOUS", "retention_period"},
		{"retention < display", func(c *Catalog) { item(c, "TAX-SERIOUS").RetentionPeriod = Years(2) }, "item", "TAX-SERIOUS", "retention_period"},
		{"retention 365D < 1Y", func(c *Catalog) {
			it := item(c, "FOOD-DRUG-PENALTY")
			it.RetentionPeriod = Days(365)
		}, "item", "FOOD-DRUG-PENALTY", "retention_period"},
		{"repairable without min publicity", func(c *Catalog) { item(c, "TAX-SERIOUS").MinPublicity = Period{} }, "item", "TAX-SERIOUS", "min_publicity_period"},
		{"min publicity > display", func(c *Catalog) { item(c, "TAX-SERIOUS").MinPublicity = Years(4) }, "item", "TAX-SERIOUS", "min_publicity_period"},
		{"min publicity on unrepairable", func(c *Catalog) { item(c, "EXAM-CHEATING").MinPublicity = Years(1) }, "item", "EXAM-CHEATING", "min_publicity_period"},
		{"repairable positive", func(c *Catalog) {
			it := item(c, "MORAL-MODEL")
			it.Repairable, it.MinPublicity = true, Months(3)
		}, "item", "MORAL-MODEL", "repairable"},
		{"objection deadline 0", func(c *Catalog) { item(c, "TAX-SERIOUS").ObjectionDeadlineDays = 0 }, "item", "TAX-SERIOUS", "objection_deadline_days"},
		{"objection deadline huge", func(c *Catalog) { item(c, "TAX-SERIOUS").ObjectionDeadlineDays = 365 }, "item", "TAX-SERIOUS", "objection_deadline_days"},
		{"unknown domain", func(c *Catalog) { item(c, "TAX-SERIOUS").Domain = "TAXES" }, "item", "TAX-SERIOUS", "domain"},
		{"missing domain", func(c *Catalog) { item(c, "TAX-SERIOUS").Domain = "" }, "item", "TAX-SERIOUS", "domain"},
		{"unknown occupation", func(c *Catalog) { item(c, "TAX-SERIOUS").Occupation = "ASTRONAUT" }, "item", "TAX-SERIOUS", "occupation"},
		{"unknown list", func(c *Catalog) { item(c, "TAX-SERIOUS").Lists = []string{"NO-SUCH-LIST"} }, "item", "TAX-SERIOUS", "lists"},
		{"list twice", func(c *Catalog) {
			it := item(c, "TAX-SERIOUS")
			it.Lists = append(it.Lists, it.Lists[0])
		}, "item", "TAX-SERIOUS", "lists"},
		{"red list on negative", func(c *Catalog) { item(c, "TAX-SERIOUS").Lists = []string{"TAX-A-GRADE"} }, "item", "TAX-SERIOUS", "lists"},
		{"dishonesty list on ordinary", func(c *Catalog) { item(c, "FOOD-DRUG-PENALTY").Lists = []string{"MARKET-SERIOUS-DISHONESTY"} }, "item", "FOOD-DRUG-PENALTY", "lists"},
		{"unknown purpose", func(c *Catalog) { item(c, "TAX-SERIOUS").Purposes = []string{"GOSSIP"} }, "item", "TAX-SERIOUS", "purposes"},
		{"purpose on internal item", func(c *Catalog) { item(c, "BLOOD-DONATION").Purposes = []string{"ADMIN-LICENSING"} }, "item", "BLOOD-DONATION", "purposes"},
		{"authorized item to public purpose", func(c *Catalog) {
			it := item(c, "TRAFFIC-SERIOUS")
			it.Purposes = append(it.Purposes, "STATISTICS")
		}, "item", "TRAFFIC-SERIOUS", "purposes"},
		{"unknown role", func(c *Catalog) { c.Purposes[0].Roles = []string{"mayor"} }, "purpose", "CIVIL-SERVICE-RECRUITMENT", "roles"},
		{"no roles", func(c *Catalog) { c.Purposes[0].Roles = nil }, "purpose", "CIVIL-SERVICE-RECRUITMENT", "roles"},
		{"internal purpose", func(c *Catalog) { c.Purposes[0].MaxDisclosure = Internal }, "purpose", "CIVIL-SERVICE-RECRUITMENT", "max_disclosure"},
		{"scenario purpose", func(c *Catalog) { c.Scenarios[0].Purpose = "NO-SUCH" }, "scenario", "CIVIL-SERVICE-RECRUITMENT", "purpose"},
		{"scenario self purpose", func(c *Catalog) { c.Scenarios[0].Purpose = "SELF-INQUIRY" }, "scenario", "CIVIL-SERVICE-RECRUITMENT", "purpose"},
		{"scenario without measures", func(c *Catalog) { c.Scenarios[0].Measures = nil }, "scenario", "CIVIL-SERVICE-RECRUITMENT", "measures"},
		{"measure unknown list", func(c *Catalog) { c.Scenarios[0].Measures[0].ListKind, c.Scenarios[0].Measures[0].List = "", "NO-SUCH" }, "measure", "CIVIL-SERVICE-RECRUITMENT/NO-RECRUITMENT-DISHONESTY", "list"},
		{"restriction from red list", func(c *Catalog) {
			c.Scenarios[0].Measures[0].ListKind, c.Scenarios[0].Measures[0].List = "", "MORAL-MODEL-RED"
		}, "measure", "CIVIL-SERVICE-RECRUITMENT/NO-RECRUITMENT-DISHONESTY", "list"},
		{"list and list kind", func(c *Catalog) { c.Scenarios[0].Measures[0].List = "WAGE-ARREARS" }, "measure", "CIVIL-SERVICE-RECRUITMENT/NO-RECRUITMENT-DISHONESTY", "list"},
		{"unknown list kind", func(c *Catalog) { c.Scenarios[0].Measures[0].ListKind = "grey" }, "measure", "CIVIL-SERVICE-RECRUITMENT/NO-RECRUITMENT-DISHONESTY", "list_kind"},
		{"restriction from red lists", func(c *Catalog) { c.Scenarios[0].Measures[0].ListKind = RedList }, "measure", "CIVIL-SERVICE-RECRUITMENT/NO-RECRUITMENT-DISHONESTY", "list_kind"},
		{"incentive from dishonesty list", func(c *Catalog) { c.Scenarios[0].Measures[1].List = "WAGE-ARREARS" }, "measure", "CIVIL-SERVICE-RECRUITMENT/VOLUNTEER-REFERENCE", "list"},
		{"measure list and condition", func(c *Catalog) { c.Scenarios[0].Measures[1].Condition = ConditionThreeYearsClean }, "measure", "CIVIL-SERVICE-RECRUITMENT/VOLUNTEER-REFERENCE", "list"},
		{"measure neither", func(c *Catalog) { c.Scenarios[0].Measures[1].List = "" }, "measure", "CIVIL-SERVICE-RECRUITMENT/VOLUNTEER-REFERENCE", "list"},
		{"unknown condition", func(c *Catalog) {
			m := &c.Scenarios[1].Measures[0]
			m.Condition = "five_years_clean"
		}, "measure", "ADMIN-LICENSING/GREEN-CHANNEL", "condition"},
		{"restriction by condition", func(c *Catalog) { c.Scenarios[1].Measures[0].Kind = Restriction }, "measure", "ADMIN-LICENSING/GREEN-CHANNEL", "condition"},
		{"measure text", func(c *Catalog) { c.Scenarios[0].Measures[0].Text = "" }, "measure", "CIVIL-SERVICE-RECRUITMENT/NO-RECRUITMENT-DISHONESTY", "text"},
		{"rule unknown item", func(c *Catalog) { c.Rules[0].Item = "NO-SUCH" }, "rule", "P-DISHONEST-DEBTOR", "item"},
		{"rule zero points", func(c *Catalog) { c.Rules[0].Points = 0 }, "rule", "P-DISHONEST-DEBTOR", "points"},
		{"rule wrong sign", func(c *Catalog) { c.Rules[0].Points = 30 }, "rule", "P-DISHONEST-DEBTOR", "points"},
		{"rule neutral item", func(c *Catalog) { c.Rules[0].Item = "ADMINISTRATIVE-LICENCE" }, "rule", "P-DISHONEST-DEBTOR", "item"},
		{"rule cap below points", func(c *Catalog) { c.Rules[0].Cap = 10 }, "rule", "P-DISHONEST-DEBTOR", "cap"},
		{"rule negative cap", func(c *Catalog) { c.Rules[0].Cap = -1 }, "rule", "P-DISHONEST-DEBTOR", "cap"},
		{"rule negative decay", func(c *Catalog) { c.Rules[0].DecayAfter = Years(-1) }, "rule", "P-DISHONEST-DEBTOR", "decay_after"},
		{"rule duplicate", func(c *Catalog) { c.Rules[1].Code = c.Rules[0].Code }, "rule", "P-DISHONEST-DEBTOR", "code"},
		{"levels order", func(c *Catalog) { c.Levels[1].MinPoints = 50 }, "level", "B", "min_points"},
		{"no levels", func(c *Catalog) { c.Levels = nil }, "catalog", "", "levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultCatalog()
			tt.mutate(c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidCatalog) {
				t.Errorf("error does not match ErrInvalidCatalog: %v", err)
			}
			if !hasCatalogError(err, tt.kind, tt.code, tt.field) {
				t.Errorf("no CatalogError{%s %q %s} in:\n%v", tt.kind, tt.code, tt.field, err)
			}
		})
	}
}

func item(c *Catalog, code string) *Item {
	for i := range c.Items {
		if c.Items[i].Code == code {
			return &c.Items[i]
		}
	}
	panic("no item " + code)
}

func hasCatalogError(err error, kind, code, field string) bool {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var ce *CatalogError
		if errors.As(e, &ce) && ce.Kind == kind && ce.Code == code && ce.Field == field {
			return true
		}
	}
	return false
}

func TestValidateReportsAll(t *testing.T) {
	c := DefaultCatalog()
	item(c, "TAX-SERIOUS").LegalBasis = ""
	item(c, "MORAL-MODEL").Domain = "NOWHERE"
	err := c.Validate()
	if !hasCatalogError(err, "item", "TAX-SERIOUS", "legal_basis") || !hasCatalogError(err, "item", "MORAL-MODEL", "domain") {
		t.Errorf("not every problem reported: %v", err)
	}
}
