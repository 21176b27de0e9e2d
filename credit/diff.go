package credit

import (
	"encoding/json"
	"slices"
	"sort"
)

// CatalogChange is one difference between two catalog versions.
type CatalogChange struct {
	Kind   string   `json:"kind"`   // item, purpose, list, scenario, rule, level, domain, occupation
	Code   string   `json:"code"`   // the entry's code
	Change string   `json:"change"` // added, removed, changed
	Fields []string `json:"fields,omitempty"`
}

// CatalogConflict is a change of a new version that would strand the
// records collected under the current one: they may be within their
// retention at any district, so the change is refused rather than applied
// under them.
type CatalogConflict struct {
	Item    string `json:"item"`
	Field   string `json:"field"`
	Message string `json:"message"`
}

// DiffCatalogs lists what changes from old to new, by kind and code.
func DiffCatalogs(old, new *Catalog) []CatalogChange {
	var out []CatalogChange
	diff := func(kind string, a, b map[string]any) {
		codes := map[string]bool{}
		for k := range a {
			codes[k] = true
		}
		for k := range b {
			codes[k] = true
		}
		keys := make([]string, 0, len(codes))
		for k := range codes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			x, inA := a[k]
			y, inB := b[k]
			switch {
			case !inA:
				out = append(out, CatalogChange{Kind: kind, Code: k, Change: "added"})
			case !inB:
				out = append(out, CatalogChange{Kind: kind, Code: k, Change: "removed"})
			default:
				if f := changedFields(x, y); len(f) > 0 {
					out = append(out, CatalogChange{Kind: kind, Code: k, Change: "changed", Fields: f})
				}
			}
		}
	}
	diff("domain", byCode(old.Domains, func(d Domain) string { return d.Code }), byCode(new.Domains, func(d Domain) string { return d.Code }))
	diff("occupation", byCode(old.Occupations, func(d Occupation) string { return d.Code }), byCode(new.Occupations, func(d Occupation) string { return d.Code }))
	diff("purpose", byCode(old.Purposes, func(d Purpose) string { return d.Code }), byCode(new.Purposes, func(d Purpose) string { return d.Code }))
	diff("list", byCode(old.Lists, func(d List) string { return d.Code }), byCode(new.Lists, func(d List) string { return d.Code }))
	diff("item", byCode(old.Items, func(d Item) string { return d.Code }), byCode(new.Items, func(d Item) string { return d.Code }))
	diff("scenario", byCode(old.Scenarios, func(d Scenario) string { return d.Code }), byCode(new.Scenarios, func(d Scenario) string { return d.Code }))
	diff("rule", byCode(old.Rules, func(d ClassificationRule) string { return d.Code }), byCode(new.Rules, func(d ClassificationRule) string { return d.Code }))
	diff("level", byCode(old.Levels, func(d Level) string { return d.Code }), byCode(new.Levels, func(d Level) string { return d.Code }))
	return out
}

func byCode[T any](xs []T, code func(T) string) map[string]any {
	m := make(map[string]any, len(xs))
	for _, x := range xs {
		m[code(x)] = x
	}
	return m
}

// changedFields names the JSON fields whose values differ.
func changedFields(a, b any) []string {
	var ma, mb map[string]json.RawMessage
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	_ = json.Unmarshal(ja, &ma)
	_ = json.Unmarshal(jb, &mb)
	var out []string
	for k, v := range ma {
		if w, ok := mb[k]; !ok || string(v) != string(w) {
			out = append(out, k)
		}
	}
	for k := range mb {
		if _, ok := ma[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// StrandingConflicts lists the changes of new that would strand records
// collected under old: an item dropped (records of it may be within their
// retention), an item's display or retention period shortened, or its
// disclosure, polarity, severity, subject kind or lists changed under the
// records that have it. Such a change is made by a new item instead (the
// old one kept until its records have gone).
func StrandingConflicts(old, new *Catalog) []CatalogConflict {
	var out []CatalogConflict
	// By code from the slice itself: an index built before the slice was
	// changed would point at the wrong items.
	items := make(map[string]Item, len(new.Items))
	for _, it := range new.Items {
		items[it.Code] = it
	}
	for _, it := range old.Items {
		n, ok := items[it.Code]
		if !ok {
			out = append(out, CatalogConflict{Item: it.Code, Field: "item", Message: "dropped, but records of it may be within their retention at any district; keep it until they have gone"})
			continue
		}
		shorter := func(field string, a, b Period) {
			if b.AddTo(epochDay) < a.AddTo(epochDay) {
				out = append(out, CatalogConflict{Item: it.Code, Field: field, Message: "shortened under the records that have it; add a new item instead"})
			}
		}
		shorter("display_period", it.DisplayPeriod, n.DisplayPeriod)
		shorter("retention_period", it.RetentionPeriod, n.RetentionPeriod)
		same := func(field string, changed bool) {
			if changed {
				out = append(out, CatalogConflict{Item: it.Code, Field: field, Message: "changed under the records that have it; add a new item instead"})
			}
		}
		same("disclosure", it.Disclosure != n.Disclosure)
		same("polarity", it.Polarity != n.Polarity)
		same("severity", it.Severity != n.Severity)
		same("subject_kind", it.SubjectKind != n.SubjectKind)
		same("lists", !slices.Equal(it.Lists, n.Lists))
	}
	return out
}

// epochDay is the day periods are compared from.
var epochDay = NewDate(2000, 1, 1)
