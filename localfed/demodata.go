package localfed

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"credfed/api"
	"credfed/credit"
)

// SyntheticRecords spreads m records over the districts, deterministically.
// Every identifier is in the reserved test province 99, so no record can be
// a real person's. The showcase subject has a record in every district;
// about a third of the others have records in more than one district.
func SyntheticRecords(cat *credit.Catalog, districts []string, m int, today credit.Date) (map[string][]api.RecordInput, Showcase) {
	rng := rand.New(rand.NewPCG(2026, 11))
	var items []credit.Item
	for _, it := range cat.Items {
		if it.SubjectKind != credit.Organization && len(it.Purposes) > 0 && it.Disclosure != credit.Internal {
			items = append(items, it)
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].Code < items[j].Code })
	subjects := max(m/3, 1)
	person := func(i int) string {
		birth := credit.NewDate(1950+i%50, time.Month(1+i%12), 1+i%28)
		return credit.SyntheticPerson(i+1, birth)
	}
	out := map[string][]api.RecordInput{}
	seq := map[string]int{}
	add := func(district, subject string) {
		it := items[rng.IntN(len(items))]
		span := 300
		if days := it.DisplayPeriod.AddTo(today) - today; int(days) < span {
			span = max(int(days)-1, 1)
		}
		decided := today.AddDays(-rng.IntN(span))
		occurred := decided.AddDays(-rng.IntN(60))
		seq[district]++
		n := seq[district]
		r := api.RecordInput{
			ID:          fmt.Sprintf("%s-%05d", district, n),
			Subject:     subject,
			CatalogItem: it.Code,
			OccurredOn:  occurred.String(),
			DecidedOn:   decided.String(),
			Summary:     fmt.Sprintf("%s（合成演示数据，第%d号）", it.Name, n),
		}
		if it.Polarity == credit.Negative {
			r.DecisionNumber = fmt.Sprintf("%s〔%d〕%d号", district, decided.Time().Year(), n)
		}
		out[district] = append(out[district], r)
	}
	showcase := Showcase{Subject: person(0)}
	for _, d := range districts {
		add(d, showcase.Subject)
		showcase.Districts = append(showcase.Districts, d)
	}
	for i := len(districts); i < m; {
		s := 1 + rng.IntN(subjects)
		first := rng.IntN(len(districts))
		add(districts[first], person(s))
		i++
		if rng.IntN(3) == 0 && i < m && len(districts) > 1 {
			add(districts[(first+1+rng.IntN(len(districts)-1))%len(districts)], person(s))
			i++
		}
	}
	return out, showcase
}
