package rights

import (
	"time"

	"credfed/api"
	"credfed/credit"
)

// The signed report: its JSON form is the API's (api.Report), built and
// signed by the coordinator that gathered it, so that no district can
// alter it on the way (a district relays the signed bytes as they came).

func reportDocument(rep Report, federation, masked string, cat *credit.Catalog, today credit.Date) api.Report {
	out := api.Report{Federation: federation, SubjectPseudonym: rep.Pseudonym.String(), Subject: masked,
		GeneratedAt: rep.At.UTC().Format(time.RFC3339), GatheredBy: rep.GatheredBy,
		Districts: make([]api.DistrictResult, 0, len(rep.Districts)), Lists: []api.ReportList{},
		AccessLog: AccessLogDocument(rep.Access)}
	for _, d := range rep.Districts {
		part := api.DistrictResult{District: d.Region, Name: d.Name, Status: string(d.Status), Error: d.Error,
			Records: make([]api.Record, 0, len(d.Records))}
		for _, rec := range d.Records {
			v := api.RecordOf(rec, cat)
			v.Subject = masked
			if it, ok := itemOf(cat, rec.CatalogItem); ok && (rec.Status == credit.StatusActive || rec.Status == credit.StatusDisputed) &&
				today >= credit.DisplayUntil(rec, it) {
				// Past its display period the record is no longer shown to
				// anyone but the subject, until its retention ends.
				v.Status = string(credit.StatusExpired)
			}
			part.Records = append(part.Records, v)
		}
		out.Districts = append(out.Districts, part)
	}
	for _, code := range rep.Lists {
		l := api.ReportList{List: code}
		if cat != nil {
			if def, ok := cat.List(code); ok {
				l.Name, l.Kind = def.Name, string(def.Kind)
			}
		}
		out.Lists = append(out.Lists, l)
	}
	return out
}

// AccessLogDocument is an access log as the API shows it.
func AccessLogDocument(log AccessLog) api.AccessLog {
	out := api.AccessLog{Entries: make([]api.AccessEntry, 0, len(log.Entries)), Delayed: log.Delayed, Incomplete: log.Incomplete}
	for _, a := range log.Entries {
		e := api.AccessEntry{At: a.At.UTC().Format(time.RFC3339), LookupID: a.LookupID, Operation: a.Operation,
			Institution: a.Institution, Role: a.Role, User: a.User, Purpose: a.Purpose, Reference: a.Reference,
			Coordinator: a.Coordinator, Districts: a.Districts}
		if e.Districts == nil {
			e.Districts = []string{}
		}
		if len(a.Districts) > 0 {
			e.District = a.Districts[0]
		}
		out.Entries = append(out.Entries, e)
	}
	return out
}

// itemOf is the catalog item of a code, if there is a catalog.
func itemOf(cat *credit.Catalog, code string) (credit.Item, bool) {
	if cat == nil {
		return credit.Item{}, false
	}
	return cat.Item(code)
}
