package httpapi

import (
	"context"
	"net/http"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/fault"
	"credfed/stats"
)

// Stats is the federation statistics (stats.Service).
type Stats interface {
	// Stats gathers the region's aggregates, suppressed; allowed or
	// refused, it is audited before it returns.
	Stats(ctx context.Context, caller certs.Identity) (stats.Answer, error)
}

// Statistics are aggregates for the region's coordinators and operators.
func (s *Server) statsRoutes() []route {
	return []route{{method: "GET", pattern: "/v1/stats", access: roles(certs.Coordinator, certs.Operator), handle: s.getStats}}
}

// getStats is GET /v1/stats.
func (s *Server) getStats(w http.ResponseWriter, r *http.Request, c caller) error {
	if s.cfg.Stats == nil {
		return fault.New(fault.Unavailable, "this node does not serve statistics")
	}
	ans, err := s.cfg.Stats.Stats(r.Context(), c.id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, statsView(ans))
	return nil
}

// cellView is a published count as JSON: a suppressed one has no value.
func cellView(c stats.Cell) api.Cell {
	if c.Suppressed {
		return api.Cell{Suppressed: true}
	}
	v := c.Value
	return api.Cell{Value: &v}
}

func cellsView(cs []stats.Cell) []api.Cell {
	out := make([]api.Cell, len(cs))
	for i, c := range cs {
		out[i] = cellView(c)
	}
	return out
}

func totalView(p *stats.Cell) api.Cell {
	if p == nil {
		return api.Cell{Value: new(int64)}
	}
	return cellView(*p)
}

func sourcesView(src []stats.Source, coordinators bool) []api.StatsSource {
	out := make([]api.StatsSource, 0, len(src))
	for _, s := range src {
		v := api.StatsSource{Region: s.Region.Path, Name: s.Region.Name, Status: string(s.Status), Error: s.Error}
		if coordinators && s.Error == "" && string(s.Status) == api.DistrictOK {
			complete := s.AuditComplete
			v.AuditComplete = &complete
			if !s.AuditFrom.IsZero() {
				v.AuditFrom = s.AuditFrom.UTC().Format(time.RFC3339)
			}
		}
		out = append(out, v)
	}
	return out
}

func statsView(a stats.Answer) api.Stats {
	out := api.Stats{Node: a.Node, At: a.At.UTC().Format(time.RFC3339), MinCount: stats.MinCount,
		Districts: sourcesView(a.Districts, false), Coordinators: sourcesView(a.Coordinators, true)}

	rt := a.Records
	out.Records = api.RecordStats{Categories: make([]api.RecordCategory, 0, len(rt.Categories)),
		Districts: make([]api.RecordRow, 0, len(rt.Districts)), Total: totalView(rt.Total)}
	for i, c := range rt.Categories {
		out.Records.Categories = append(out.Records.Categories, api.RecordCategory{Domain: c.Domain, DomainName: c.DomainName,
			Polarity: string(c.Polarity), Severity: string(c.Severity), Total: cellView(rt.ColTotals[i])})
	}
	for i, d := range rt.Districts {
		out.Records.Districts = append(out.Records.Districts, api.RecordRow{District: d.Path, Name: d.Name,
			Counts: cellsView(rt.Cells[i]), Total: cellView(rt.RowTotals[i])})
	}

	counts := func(cs []stats.Cell, from int) api.CaseCounts {
		return api.CaseCounts{Open: cellView(cs[from]), Resolved: cellView(cs[from+1]), Overdue: cellView(cs[from+2])}
	}
	ct := a.Cases
	out.Cases = api.CaseStats{Districts: make([]api.CaseRow, 0, len(ct.Districts)),
		Objections: counts(ct.ColTotals, stats.ObjectionsOpen), Repairs: counts(ct.ColTotals, stats.RepairsOpen),
		AgeBuckets: stats.AgeBuckets[:], ObjectionAges: cellsView(ct.ColTotals[stats.ObjectionsAged:])}
	for i, d := range ct.Districts {
		out.Cases.Districts = append(out.Cases.Districts, api.CaseRow{District: d.Path, Name: d.Name,
			Objections: counts(ct.Cells[i], stats.ObjectionsOpen), Repairs: counts(ct.Cells[i], stats.RepairsOpen),
			ObjectionAges: cellsView(ct.Cells[i][stats.ObjectionsAged:])})
	}

	tt := a.Timeliness
	out.Timeliness = api.TimelinessStats{WorkingDays: stats.LateAfter, Departments: make([]api.DepartmentLate, 0, len(tt.Departments)),
		Late: cellView(tt.ColTotals[0])}
	for i, d := range tt.Departments {
		out.Timeliness.Departments = append(out.Timeliness.Departments, api.DepartmentLate{District: d.District.Path,
			Department: d.Department, Late: cellView(tt.Cells[i][0])})
	}

	out.Lookups, out.Checks = usageView(a.Lookups), usageView(a.Checks)
	return out
}

func usageView(u stats.UsageTable) api.UsageStats {
	out := api.UsageStats{Purposes: make([]api.UsagePurpose, 0, len(u.Purposes)), Institutions: make([]api.UsageRow, 0, len(u.Institutions)),
		Total: totalView(u.Total)}
	for i, p := range u.Purposes {
		out.Purposes = append(out.Purposes, api.UsagePurpose{Purpose: p, Total: cellView(u.ColTotals[i])})
	}
	for i, inst := range u.Institutions {
		out.Institutions = append(out.Institutions, api.UsageRow{Node: inst.Node, Region: inst.Region, Institution: inst.Institution,
			Counts: cellsView(u.Cells[i]), Total: cellView(u.RowTotals[i])})
	}
	return out
}
