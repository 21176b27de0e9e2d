package credit

import "slices"

// The catalog is replicated through Raft and served by GET /v1/catalog. Every
// type in it is plain exported data: JSON uses the snake_case names of
// API.md, YAML the same names, and CBOR (fxamacker/cbor falls back to the
// json tag when there is no cbor tag) the same names again, so the three
// encodings stay in step. Periods are text in JSON and YAML, three small
// integers in CBOR; dates are day numbers in CBOR.

// User roles a purpose may admit (API.md). Roles are plain strings here
// because credit depends on no other package of ours.
const (
	RoleCoordinator = "coordinator"
	RolePortal      = "portal"
	RoleDepartment  = "department"
	RoleOperator    = "operator"
)

// ListKind says whether a list rewards or restricts.
type ListKind string

// List kinds.
const (
	RedList               ListKind = "red"
	SeriousDishonestyList ListKind = "serious_dishonesty"
)

// MeasureKind says whether a measure is an incentive or a restriction.
type MeasureKind string

// Measure kinds.
const (
	Incentive   MeasureKind = "incentive"
	Restriction MeasureKind = "restriction"
)

// ConditionThreeYearsClean is the one computable measure condition: no bad
// record in the last three years (连续三年无不良信用记录), see ThreeYearsClean.
const ConditionThreeYearsClean = "three_years_clean"

// Catalog is the federation-wide, versioned catalog of record kinds and of
// everything that decides how records are used (DESIGN §2, §9, §11).
//
// A catalog from LoadCatalogYAML or DefaultCatalog is validated and indexed;
// one decoded from JSON or CBOR should be checked with Validate, which also
// builds the lookup index. Lookups on a catalog that was never validated
// still work, by linear scan. A catalog must not be modified once shared;
// reads are then safe from any number of goroutines.
type Catalog struct {
	Version     int                  `json:"version" yaml:"version"`
	Domains     []Domain             `json:"domains" yaml:"domains"`
	Occupations []Occupation         `json:"occupations" yaml:"occupations"`
	Items       []Item               `json:"items" yaml:"items"`
	Purposes    []Purpose            `json:"purposes" yaml:"purposes"`
	Lists       []List               `json:"lists" yaml:"lists"`
	Scenarios   []Scenario           `json:"scenarios" yaml:"scenarios"`
	Rules       []ClassificationRule `json:"rules" yaml:"rules"`
	// Levels of the informational classification, best first (see Classify).
	Levels []Level `json:"levels" yaml:"levels"`

	index *catalogIndex // built by Validate; nil means linear scan
}

// Domain is a field of social activity in which records are kept: the 16 key
// domains of the national plan (Key) and those districts add.
type Domain struct {
	Code string `json:"code" yaml:"code"`
	Name string `json:"name" yaml:"name"`
	Key  bool   `json:"key" yaml:"key"`
}

// Occupation is a key occupational group (重点职业人群).
type Occupation struct {
	Code string `json:"code" yaml:"code"`
	Name string `json:"name" yaml:"name"`
	Key  bool   `json:"key" yaml:"key"`
}

// Item is one kind of record. Records inherit Polarity, Severity and
// LegalBasis from their item.
type Item struct {
	Code string `json:"code" yaml:"code"`
	Name string `json:"name" yaml:"name"`
	// Domain is the code of the item's domain.
	Domain string `json:"domain" yaml:"domain"`
	// Occupation is the code of the occupational group the item concerns,
	// empty when it concerns everyone.
	Occupation string `json:"occupation" yaml:"occupation"`
	// SubjectKind is who records of the item are about; YAML may omit it
	// for persons.
	SubjectKind SubjectKind `json:"subject_kind" yaml:"subject_kind"`
	Polarity    Polarity    `json:"polarity" yaml:"polarity"`
	// Severity is ordinary or serious; only negative items may be serious.
	// YAML may omit it for ordinary.
	Severity Severity `json:"severity" yaml:"severity"`
	// LegalBasis is mandatory: nothing is collected without one.
	LegalBasis string `json:"legal_basis" yaml:"legal_basis"`
	// DisplayPeriod counts from the decision date; RetentionPeriod too, and
	// is at least as long. After retention the record is deleted.
	DisplayPeriod   Period `json:"display_period" yaml:"display_period"`
	RetentionPeriod Period `json:"retention_period" yaml:"retention_period"`
	// Repairable negative items may be repaired once MinPublicity has passed
	// since the decision date (最短公示期).
	Repairable   bool   `json:"repairable" yaml:"repairable"`
	MinPublicity Period `json:"min_publicity_period,omitzero" yaml:"min_publicity_period"`
	// ObjectionDeadlineDays is the number of working days within which an
	// objection to a record of the item must be resolved.
	ObjectionDeadlineDays int        `json:"objection_deadline_days" yaml:"objection_deadline_days"`
	Disclosure            Disclosure `json:"disclosure" yaml:"disclosure"`
	// Lists are the codes of the lists a record of the item puts its subject
	// on while it is displayed.
	Lists []string `json:"lists" yaml:"lists"`
	// Purposes are the codes of the lookup purposes that may see the item.
	// The subject's own purpose (Purpose.SubjectOwn) sees every item and
	// need not be listed.
	Purposes []string `json:"purposes" yaml:"purposes"`
}

// Purpose is a reason for a lookup (查询用途). Every lookup names one.
type Purpose struct {
	Code string `json:"code" yaml:"code"`
	Name string `json:"name" yaml:"name"`
	// AuthorizationRequired lookups must carry the subject's authorization
	// reference.
	AuthorizationRequired bool `json:"authorization_required" yaml:"authorization_required"`
	// Roles are the user roles that may use the purpose.
	Roles []string `json:"roles" yaml:"roles"`
	// MaxDisclosure is the widest disclosure level the purpose sees:
	// public, or authorized (public and authorized items); internal items
	// are only ever shown to the subject (SubjectOwn). YAML may omit it for
	// authorized.
	MaxDisclosure Disclosure `json:"max_disclosure" yaml:"max_disclosure"`
	// IncludesRepaired purposes (repair review, objection handling) still
	// see repaired records; ordinary purposes do not.
	IncludesRepaired bool `json:"includes_repaired" yaml:"includes_repaired"`
	// SubjectOwn marks the subject's own inquiry through the portal: every
	// item, every disclosure level.
	SubjectOwn bool   `json:"subject_own" yaml:"subject_own"`
	LegalBasis string `json:"legal_basis,omitempty" yaml:"legal_basis"`
	// AccessLogDelay keeps lookups made under the purpose out of the
	// subject's access log for a while after the day they were made (an
	// investigation the law keeps confidential); zero shows them at once.
	AccessLogDelay Period `json:"access_log_delay,omitzero" yaml:"access_log_delay"`
}

// List is a red list or a serious-dishonesty list, set by law.
type List struct {
	Code       string   `json:"code" yaml:"code"`
	Name       string   `json:"name" yaml:"name"`
	Kind       ListKind `json:"kind" yaml:"kind"`
	LegalBasis string   `json:"legal_basis" yaml:"legal_basis"`
}

// Scenario is a situation in which a check is required (应查必查), with the
// measures that follow from lists or conditions.
type Scenario struct {
	Code string `json:"code" yaml:"code"`
	Name string `json:"name" yaml:"name"`
	// Purpose is the code of the lookup purpose a check in this scenario
	// uses.
	Purpose  string    `json:"purpose" yaml:"purpose"`
	Measures []Measure `json:"measures" yaml:"measures"`
}

// Measure is one joint incentive or restriction. It applies when the subject
// is on List, on any list of ListKind (a law that names every list of a
// kind, such as the Civil Servant Law art. 26 for every list of joint
// punishment of dishonesty, including lists added later), or when
// Condition holds; exactly one of the three is set. An incentive follows
// from a red list or a condition, a restriction from a serious-dishonesty
// list.
type Measure struct {
	Code       string      `json:"code" yaml:"code"`
	Text       string      `json:"text" yaml:"text"`
	LegalBasis string      `json:"legal_basis" yaml:"legal_basis"`
	Kind       MeasureKind `json:"kind" yaml:"kind"`
	List       string      `json:"list,omitempty" yaml:"list"`
	ListKind   ListKind    `json:"list_kind,omitempty" yaml:"list_kind"`
	Condition  string      `json:"condition,omitempty" yaml:"condition"`
}

// ClassificationRule gives points for each displayed record of an item
// (DESIGN §11; informational only). Points are positive for positive items and
// negative for negative items. Once DecayAfter has passed since the decision
// date the record counts half (rounded toward zero); a zero DecayAfter never
// decays. Cap, when positive, bounds the absolute sum the rule contributes
// for one subject.
type ClassificationRule struct {
	Code       string `json:"code" yaml:"code"`
	Item       string `json:"item" yaml:"item"`
	Points     int    `json:"points" yaml:"points"`
	DecayAfter Period `json:"decay_after,omitzero" yaml:"decay_after"`
	Cap        int    `json:"cap,omitempty" yaml:"cap"`
	LegalBasis string `json:"legal_basis" yaml:"legal_basis"`
}

// Level is one classification level; a subject gets the first level (best
// first) whose MinPoints its total reaches, or the last level.
type Level struct {
	Code      string `json:"code" yaml:"code"`
	Name      string `json:"name" yaml:"name"`
	MinPoints int    `json:"min_points" yaml:"min_points"`
}

type catalogIndex struct {
	domains     map[string]int
	occupations map[string]int
	items       map[string]int
	purposes    map[string]int
	lists       map[string]int
	scenarios   map[string]int
	rules       map[string][]int // by item code
}

// lookup finds the entry with the given code: through idx when the catalog
// is indexed (idx non-nil), by linear scan otherwise.
func lookup[T any](xs []T, idx map[string]int, code string, key func(*T) string) (T, bool) {
	var zero T
	if idx != nil {
		i, ok := idx[code]
		if !ok {
			return zero, false
		}
		return xs[i], true
	}
	for i := range xs {
		if key(&xs[i]) == code {
			return xs[i], true
		}
	}
	return zero, false
}

func (c *Catalog) idx() *catalogIndex {
	if c.index != nil {
		return c.index
	}
	return &catalogIndex{}
}

// Item returns the item with the given code.
func (c *Catalog) Item(code string) (Item, bool) {
	return lookup(c.Items, c.idx().items, code, func(x *Item) string { return x.Code })
}

// Purpose returns the purpose with the given code.
func (c *Catalog) Purpose(code string) (Purpose, bool) {
	return lookup(c.Purposes, c.idx().purposes, code, func(x *Purpose) string { return x.Code })
}

// List returns the list with the given code.
func (c *Catalog) List(code string) (List, bool) {
	return lookup(c.Lists, c.idx().lists, code, func(x *List) string { return x.Code })
}

// Scenario returns the scenario with the given code.
func (c *Catalog) Scenario(code string) (Scenario, bool) {
	return lookup(c.Scenarios, c.idx().scenarios, code, func(x *Scenario) string { return x.Code })
}

// Domain returns the domain with the given code.
func (c *Catalog) Domain(code string) (Domain, bool) {
	return lookup(c.Domains, c.idx().domains, code, func(x *Domain) string { return x.Code })
}

// Occupation returns the occupational group with the given code.
func (c *Catalog) Occupation(code string) (Occupation, bool) {
	return lookup(c.Occupations, c.idx().occupations, code, func(x *Occupation) string { return x.Code })
}

// RulesFor returns the classification rules of an item, in catalog order.
func (c *Catalog) RulesFor(item string) []ClassificationRule {
	var out []ClassificationRule
	if c.index != nil {
		for _, i := range c.index.rules[item] {
			out = append(out, c.Rules[i])
		}
		return out
	}
	for _, r := range c.Rules {
		if r.Item == item {
			out = append(out, r)
		}
	}
	return out
}

// Admits reports whether the purpose may be used by the role.
func (p Purpose) Admits(role string) bool { return slices.Contains(p.Roles, role) }

// Applicable returns the scenario's measures that follow for a subject on
// the given lists and for whom the three-years-clean condition does or does
// not hold, in catalog order, each measure once. With a measure that names
// a kind of list, Because names the subject's lists of that kind.
func (s Scenario) Applicable(lists []List, threeYearsClean bool) []Applied {
	var out []Applied
	for _, m := range s.Measures {
		a := Applied{Measure: m}
		for _, l := range lists {
			if (m.List != "" && l.Code == m.List) || (m.ListKind != "" && l.Kind == m.ListKind) {
				a.Because = append(a.Because, l.Code)
			}
		}
		if len(a.Because) > 0 || (m.Condition == ConditionThreeYearsClean && threeYearsClean) {
			out = append(out, a)
		}
	}
	return out
}

// Applied is a measure that follows, and the codes of the lists it follows
// from (none for a condition).
type Applied struct {
	Measure
	Because []string `json:"because,omitempty"`
}

// ListsOf returns the catalog's lists of the given codes, in catalog order;
// unknown codes are skipped.
func (c *Catalog) ListsOf(codes []string) []List {
	var out []List
	for _, l := range c.Lists {
		if slices.Contains(codes, l.Code) {
			out = append(out, l)
		}
	}
	return out
}
