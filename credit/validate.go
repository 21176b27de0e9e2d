package credit

import (
	"errors"
	"fmt"
	"strings"
)

// maxObjectionDays bounds an item's objection deadline; anything longer is
// a typo rather than a policy.
const maxObjectionDays = 90

// Validate checks the catalog and, when it is valid, indexes it for lookups.
// It reports every problem it finds, each as a *CatalogError naming the
// entry and the field (joined with errors.Join; errors.As finds the first).
// It checks: codes present, well formed and unique per kind; names present;
// a legal basis on every item, list, measure and classification rule; the
// enumerations (subject kind, polarity, severity, disclosure, list kind,
// measure kind, roles); positive display and retention periods with
// retention at least as long as display; a minimum publicity period on
// repairable items (and only there) no longer than the display period; an
// objection deadline of 1 to 90 working days; that every reference to a
// domain, occupation, list, purpose or item resolves; and that lists,
// purposes and measures agree with what they are attached to (a red list
// only on positive items, a serious-dishonesty list only on serious negative
// items, no lookup purpose on internal items, …).
//
// Validate must not run concurrently with readers of the catalog.
func (c *Catalog) Validate() error {
	v := &validator{c: c}
	ix := &catalogIndex{
		domains:     map[string]int{},
		occupations: map[string]int{},
		items:       map[string]int{},
		purposes:    map[string]int{},
		lists:       map[string]int{},
		scenarios:   map[string]int{},
		rules:       map[string][]int{},
	}
	if c.Version < 1 {
		v.add("catalog", "", "version", "must be at least 1")
	}
	if len(c.Items) == 0 {
		v.add("catalog", "", "items", "at least one item is required")
	}
	for i, d := range c.Domains {
		v.entry("domain", d.Code, d.Name, i, ix.domains)
	}
	for i, o := range c.Occupations {
		v.entry("occupation", o.Code, o.Name, i, ix.occupations)
	}
	for i, l := range c.Lists {
		v.entry("list", l.Code, l.Name, i, ix.lists)
		v.legalBasis("list", l.Code, l.LegalBasis)
		if l.Kind != RedList && l.Kind != SeriousDishonestyList {
			v.add("list", l.Code, "kind", "must be red or serious_dishonesty, not %q", l.Kind)
		}
	}
	for i, p := range c.Purposes {
		v.entry("purpose", p.Code, p.Name, i, ix.purposes)
		v.purpose(p)
	}
	for i, it := range c.Items {
		v.entry("item", it.Code, it.Name, i, ix.items)
		v.item(it)
	}
	for i, s := range c.Scenarios {
		v.entry("scenario", s.Code, s.Name, i, ix.scenarios)
		v.scenario(s)
	}
	ruleCodes := map[string]int{}
	for i, r := range c.Rules {
		r.Code = v.code("rule", "", r.Code, i, ruleCodes)
		v.rule(r)
		ix.rules[r.Item] = append(ix.rules[r.Item], i)
	}
	v.levels()
	if len(v.errs) > 0 {
		return errors.Join(v.errs...)
	}
	c.index = ix
	return nil
}

type validator struct {
	c    *Catalog
	errs []error
}

func (v *validator) add(kind, code, field, format string, args ...any) {
	v.errs = append(v.errs, &CatalogError{Kind: kind, Code: code, Field: field, Message: fmt.Sprintf(format, args...)})
}

// validCode reports whether s is 1 to 64 letters, digits, '-', '_' or '.'.
func validCode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// code checks an entry's code and records its position in seen. It returns
// the code to name the entry by in further errors ("#n" when missing).
// prefix is prepended to the name (a measure is named "SCENARIO/MEASURE").
func (v *validator) code(kind, prefix, code string, i int, seen map[string]int) string {
	name := prefix + code
	switch {
	case code == "":
		name = fmt.Sprintf("%s#%d", prefix, i+1)
		v.add(kind, name, "code", "required")
	case !validCode(code):
		v.add(kind, name, "code", "must be 1 to 64 letters, digits, '-', '_' or '.'")
	default:
		if _, dup := seen[code]; dup {
			v.add(kind, name, "code", "duplicate code")
		} else {
			seen[code] = i
		}
	}
	return name
}

// entry checks an entry's code and name and records its position in seen.
func (v *validator) entry(kind, code, name string, i int, seen map[string]int) {
	code = v.code(kind, "", code, i, seen)
	if strings.TrimSpace(name) == "" {
		v.add(kind, code, "name", "required")
	}
}

func (v *validator) legalBasis(kind, code, basis string) {
	if strings.TrimSpace(basis) == "" {
		v.add(kind, code, "legal_basis", "required")
	}
}

func validDisclosure(d Disclosure) bool {
	return d == Public || d == Authorized || d == Internal
}

// disclosureRank orders disclosure levels from widest to narrowest audience.
func disclosureRank(d Disclosure) int {
	switch d {
	case Public:
		return 1
	case Authorized:
		return 2
	case Internal:
		return 3
	}
	return 99
}

var knownRoles = map[string]bool{RoleCoordinator: true, RolePortal: true, RoleDepartment: true, RoleOperator: true}

func (v *validator) purpose(p Purpose) {
	if len(p.Roles) == 0 {
		v.add("purpose", p.Code, "roles", "at least one role is required")
	}
	seen := map[string]bool{}
	for _, r := range p.Roles {
		if !knownRoles[r] {
			v.add("purpose", p.Code, "roles", "unknown role %q (coordinator, portal, department or operator)", r)
		}
		if seen[r] {
			v.add("purpose", p.Code, "roles", "role %q listed twice", r)
		}
		seen[r] = true
	}
	switch {
	case !validDisclosure(p.MaxDisclosure):
		v.add("purpose", p.Code, "max_disclosure", "must be public, authorized or internal, not %q", p.MaxDisclosure)
	case p.MaxDisclosure == Internal && !p.SubjectOwn:
		v.add("purpose", p.Code, "max_disclosure", "internal records are shown only to the subject (subject_own purposes)")
	}
}

func (v *validator) item(it Item) {
	code := it.Code
	if it.Domain == "" {
		v.add("item", code, "domain", "required")
	} else if _, ok := v.c.Domain(it.Domain); !ok {
		v.add("item", code, "domain", "unknown domain %q", it.Domain)
	}
	if it.Occupation != "" {
		if _, ok := v.c.Occupation(it.Occupation); !ok {
			v.add("item", code, "occupation", "unknown occupation %q", it.Occupation)
		}
	}
	if it.SubjectKind != Person && it.SubjectKind != Organization {
		v.add("item", code, "subject_kind", "must be person or organization")
	}
	switch it.Polarity {
	case Positive, Negative, Neutral:
	default:
		v.add("item", code, "polarity", "must be positive, negative or neutral, not %q", it.Polarity)
	}
	switch it.Severity {
	case Ordinary:
	case Serious:
		if it.Polarity != Negative {
			v.add("item", code, "severity", "only negative items can be serious")
		}
	default:
		v.add("item", code, "severity", "must be ordinary or serious, not %q", it.Severity)
	}
	v.legalBasis("item", code, it.LegalBasis)
	displayOK := it.DisplayPeriod.Positive()
	if !displayOK {
		v.add("item", code, "display_period", "must be a positive period")
	}
	switch {
	case !it.RetentionPeriod.Positive():
		v.add("item", code, "retention_period", "must be a positive period")
	case displayOK && !it.RetentionPeriod.AtLeast(it.DisplayPeriod):
		v.add("item", code, "retention_period", "%s is shorter than the display period %s", it.RetentionPeriod, it.DisplayPeriod)
	}
	if it.Repairable {
		switch {
		case it.Polarity != Negative:
			v.add("item", code, "repairable", "only negative items can be repaired")
		case !it.MinPublicity.Positive():
			v.add("item", code, "min_publicity_period", "repairable items need a positive minimum publicity period")
		case displayOK && !it.DisplayPeriod.AtLeast(it.MinPublicity):
			v.add("item", code, "min_publicity_period", "%s is longer than the display period %s", it.MinPublicity, it.DisplayPeriod)
		}
	} else if !it.MinPublicity.IsZero() {
		v.add("item", code, "min_publicity_period", "set only for repairable items")
	}
	if it.ObjectionDeadlineDays < 1 || it.ObjectionDeadlineDays > maxObjectionDays {
		v.add("item", code, "objection_deadline_days", "must be between 1 and %d working days", maxObjectionDays)
	}
	if !validDisclosure(it.Disclosure) {
		v.add("item", code, "disclosure", "must be public, authorized or internal, not %q", it.Disclosure)
	}
	seen := map[string]bool{}
	for _, lc := range it.Lists {
		if seen[lc] {
			v.add("item", code, "lists", "list %q named twice", lc)
		}
		seen[lc] = true
		l, ok := v.c.List(lc)
		switch {
		case !ok:
			v.add("item", code, "lists", "unknown list %q", lc)
		case l.Kind == RedList && it.Polarity != Positive:
			v.add("item", code, "lists", "red list %q needs a positive item", lc)
		case l.Kind == SeriousDishonestyList && (it.Polarity != Negative || it.Severity != Serious):
			v.add("item", code, "lists", "serious-dishonesty list %q needs a serious negative item", lc)
		}
	}
	seen = map[string]bool{}
	for _, pc := range it.Purposes {
		if seen[pc] {
			v.add("item", code, "purposes", "purpose %q named twice", pc)
		}
		seen[pc] = true
		p, ok := v.c.Purpose(pc)
		switch {
		case !ok:
			v.add("item", code, "purposes", "unknown purpose %q", pc)
		case p.SubjectOwn:
			// The subject sees everything anyway; naming it is harmless.
		case it.Disclosure == Internal:
			v.add("item", code, "purposes", "internal items are shown only to the subject, not to purpose %q", pc)
		case validDisclosure(p.MaxDisclosure) && disclosureRank(it.Disclosure) > disclosureRank(p.MaxDisclosure):
			v.add("item", code, "purposes", "purpose %q sees only %s items, this one is %s", pc, p.MaxDisclosure, it.Disclosure)
		}
	}
}

func (v *validator) scenario(s Scenario) {
	if s.Purpose == "" {
		v.add("scenario", s.Code, "purpose", "required")
	} else if p, ok := v.c.Purpose(s.Purpose); !ok {
		v.add("scenario", s.Code, "purpose", "unknown purpose %q", s.Purpose)
	} else if p.SubjectOwn {
		v.add("scenario", s.Code, "purpose", "purpose %q is the subject's own inquiry, not a check", s.Purpose)
	}
	if len(s.Measures) == 0 {
		v.add("scenario", s.Code, "measures", "at least one measure is required")
	}
	seen := map[string]int{}
	for i, m := range s.Measures {
		mcode := v.code("measure", s.Code+"/", m.Code, i, seen)
		if strings.TrimSpace(m.Text) == "" {
			v.add("measure", mcode, "text", "required")
		}
		v.legalBasis("measure", mcode, m.LegalBasis)
		if m.Kind != Incentive && m.Kind != Restriction {
			v.add("measure", mcode, "kind", "must be incentive or restriction, not %q", m.Kind)
		}
		switch {
		case countSet(m.List, string(m.ListKind), m.Condition) != 1:
			v.add("measure", mcode, "list", "exactly one of list, list_kind and condition is required")
		case m.ListKind != "":
			switch {
			case m.ListKind != RedList && m.ListKind != SeriousDishonestyList:
				v.add("measure", mcode, "list_kind", "must be %s or %s, not %q", RedList, SeriousDishonestyList, m.ListKind)
			case m.Kind == Incentive && m.ListKind != RedList:
				v.add("measure", mcode, "list_kind", "an incentive follows from red lists, not %s", m.ListKind)
			case m.Kind == Restriction && m.ListKind != SeriousDishonestyList:
				v.add("measure", mcode, "list_kind", "a restriction follows from serious-dishonesty lists, not %s", m.ListKind)
			}
		case m.List != "":
			l, ok := v.c.List(m.List)
			switch {
			case !ok:
				v.add("measure", mcode, "list", "unknown list %q", m.List)
			case m.Kind == Incentive && l.Kind != RedList:
				v.add("measure", mcode, "list", "an incentive follows from a red list, %q is %s", m.List, l.Kind)
			case m.Kind == Restriction && l.Kind != SeriousDishonestyList:
				v.add("measure", mcode, "list", "a restriction follows from a serious-dishonesty list, %q is %s", m.List, l.Kind)
			}
		case m.Condition != ConditionThreeYearsClean:
			v.add("measure", mcode, "condition", "unknown condition %q (only %s)", m.Condition, ConditionThreeYearsClean)
		case m.Kind != Incentive:
			v.add("measure", mcode, "condition", "%s can only give an incentive", m.Condition)
		}
	}
}

func (v *validator) rule(r ClassificationRule) {
	v.legalBasis("rule", r.Code, r.LegalBasis)
	it, ok := v.c.Item(r.Item)
	switch {
	case r.Item == "":
		v.add("rule", r.Code, "item", "required")
	case !ok:
		v.add("rule", r.Code, "item", "unknown item %q", r.Item)
	case r.Points == 0:
		v.add("rule", r.Code, "points", "must not be zero")
	case it.Polarity == Positive && r.Points < 0, it.Polarity == Negative && r.Points > 0:
		v.add("rule", r.Code, "points", "sign must match the %s item %q", it.Polarity, r.Item)
	case it.Polarity == Neutral:
		v.add("rule", r.Code, "item", "neutral item %q earns no points", r.Item)
	}
	if !r.DecayAfter.IsZero() && !r.DecayAfter.Positive() {
		v.add("rule", r.Code, "decay_after", "must be a positive period or omitted")
	}
	if r.Cap < 0 {
		v.add("rule", r.Code, "cap", "must not be negative")
	} else if r.Cap > 0 && r.Cap < abs(r.Points) {
		v.add("rule", r.Code, "cap", "%d is below the points of a single record", r.Cap)
	}
}

func (v *validator) levels() {
	if len(v.c.Rules) > 0 && len(v.c.Levels) == 0 {
		v.add("catalog", "", "levels", "classification rules need at least one level")
	}
	seen := map[string]int{}
	for i, l := range v.c.Levels {
		v.entry("level", l.Code, l.Name, i, seen)
		if i > 0 && l.MinPoints >= v.c.Levels[i-1].MinPoints {
			v.add("level", l.Code, "min_points", "levels go from best to worst: %d is not below %d", l.MinPoints, v.c.Levels[i-1].MinPoints)
		}
	}
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// countSet counts the non-empty strings.
func countSet(vs ...string) int {
	n := 0
	for _, v := range vs {
		if v != "" {
			n++
		}
	}
	return n
}
