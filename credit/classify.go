package credit

import (
	"cmp"
	"slices"
)

// Classification is a transparent, informational classification of a
// subject (DESIGN §11): every point is traced to a record and a catalog rule
// with its legal basis. No measure follows from it.
type Classification struct {
	Level     string     `json:"level"`
	LevelName string     `json:"level_name"`
	Total     int        `json:"total"`
	Points    []PointLog `json:"points"`
}

// PointLog explains the points one rule gave for one record.
type PointLog struct {
	Points     int    `json:"points"`
	Record     string `json:"record"`
	Department string `json:"department"`
	Rule       string `json:"rule"`
	LegalBasis string `json:"legal_basis"`
	// Decayed says the rule's decay period had passed (half points).
	Decayed bool `json:"decayed,omitempty"`
	// Capped says the rule's cap cut the points down (possibly to zero).
	Capped bool `json:"capped,omitempty"`
}

// Classify computes the classification of a subject from the current
// versions of its records, counting only records displayable for the purpose
// on the given day. Records are taken oldest decision first (then by
// department and id), so a rule's cap cuts the most recent records; a
// decayed record counts half its points, rounded toward zero. The level is
// the first of the catalog's levels whose MinPoints the total reaches, or
// the last level.
func (c *Catalog) Classify(records []Record, p Purpose, on Date) Classification {
	rs := slices.Clone(records)
	slices.SortFunc(rs, func(a, b Record) int {
		return cmp.Or(cmp.Compare(a.DecidedOn, b.DecidedOn), cmp.Compare(a.Department, b.Department), cmp.Compare(a.ID, b.ID))
	})
	used := map[string]int{} // absolute points per rule so far
	out := Classification{Points: []PointLog{}}
	for _, r := range rs {
		it, ok := c.Item(r.CatalogItem)
		if !ok || !IsDisplayable(r, it, on, p) {
			continue
		}
		for _, rule := range c.RulesFor(it.Code) {
			e := PointLog{Points: rule.Points, Record: r.ID, Department: r.Department, Rule: rule.Code, LegalBasis: rule.LegalBasis}
			if !rule.DecayAfter.IsZero() && on >= rule.DecayAfter.AddTo(r.DecidedOn) {
				e.Points /= 2
				e.Decayed = true
			}
			if rule.Cap > 0 {
				left := rule.Cap - used[rule.Code]
				if abs(e.Points) > left {
					e.Capped = true
					if e.Points < 0 {
						e.Points = -left
					} else {
						e.Points = left
					}
				}
			}
			used[rule.Code] += abs(e.Points)
			out.Total += e.Points
			out.Points = append(out.Points, e)
		}
	}
	for i, l := range c.Levels {
		if out.Total >= l.MinPoints || i == len(c.Levels)-1 {
			out.Level, out.LevelName = l.Code, l.Name
			break
		}
	}
	return out
}
