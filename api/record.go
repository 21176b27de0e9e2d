package api

import "credfed/credit"

// RecordTimeLayout is how record times are shown (RFC 3339, milliseconds).
const RecordTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// RecordOf is a record as the API shows it; cat, if set, dates the end of
// its display period.
func RecordOf(r credit.Record, cat *credit.Catalog) Record {
	v := Record{
		ID: r.ID, Subject: r.Subject, CatalogItem: r.CatalogItem, DecisionNumber: r.DecisionNumber,
		OccurredOn: r.OccurredOn.String(), DecidedOn: r.DecidedOn.String(), Summary: r.Summary, Department: r.Department,
		District: r.District, Polarity: string(r.Polarity), Severity: string(r.Severity), LegalBasis: r.LegalBasis,
		Status: string(r.Status), Version: r.Version, CatalogVersion: r.CatalogVersion,
		RecordedAt: r.RecordedAt.UTC().Format(RecordTimeLayout), Reason: r.Reason,
	}
	if r.District != "" && r.Department != "" && r.ID != "" {
		v.Ref = credit.RefOf(r.District, r).String()
	}
	if cat != nil {
		if it, ok := cat.Item(r.CatalogItem); ok {
			v.DisplayUntil = credit.DisplayUntil(r, it).String()
		}
	}
	return v
}
