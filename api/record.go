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

// RecordQuery is what GET /v1/records selects of the calling department's
// records. Zero fields select everything.
type RecordQuery struct {
	// Item and Status, when set, must equal the record's catalog item and
	// status.
	Item, Status string
	// After is the cursor: the Next of the previous page (the last id it
	// held); empty for the first page.
	After string
	// Limit is the page size, 1 to 500; 0 leaves the node's default (100).
	Limit int
}

// RecordPage is GET /v1/records's answer: the calling department's
// records (latest versions, without their older versions), in id order.
// Next, when set, is the After of the next page; a page may hold fewer
// records than the limit and still have a next one (the node examines a
// bounded number of records per page).
type RecordPage struct {
	Records []Record `json:"records"`
	Next    string   `json:"next,omitempty"`
}
