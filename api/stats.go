package api

import "context"

// Cell is one published count: {"value": 12}, or {"value": null,
// "suppressed": true} for a count from 1 to 4 and for a total that would
// give one back. A suppressed count is never a string, and never a number.
type Cell struct {
	Value      *int64 `json:"value"`
	Suppressed bool   `json:"suppressed,omitempty"`
}

// Stats is GET /v1/stats: aggregates of the answering coordinator node's
// region, with every source's status. Totals cover the sources whose
// status is ok.
type Stats struct {
	// Node is the answering node's region.
	Node string `json:"node"`
	// At is when the statistics were gathered (RFC 3339).
	At string `json:"at"`
	// MinCount is the smallest count published (5).
	MinCount int `json:"min_count"`
	// Districts are the districts of the region, the sources of records,
	// cases and timeliness.
	Districts []StatsSource `json:"districts"`
	// Coordinators are the coordinator nodes whose audit logs the lookups
	// and checks are counted from: the answering node, and at a province
	// its cities.
	Coordinators []StatsSource   `json:"coordinators"`
	Records      RecordStats     `json:"records"`
	Cases        CaseStats       `json:"cases"`
	Timeliness   TimelinessStats `json:"timeliness"`
	Lookups      UsageStats      `json:"lookups"`
	Checks       UsageStats      `json:"checks"`
}

// StatsSource is one node the statistics were gathered from.
type StatsSource struct {
	Region string `json:"region"`
	Name   string `json:"name,omitempty"`
	Status string `json:"status"` // ok, unreachable, timeout, denied, error
	Error  string `json:"error,omitempty"`
	// AuditFrom is the time of the oldest audit entry counted (RFC 3339),
	// and AuditComplete says the whole log was counted (coordinators).
	AuditFrom     string `json:"audit_from,omitempty"`
	AuditComplete *bool  `json:"audit_complete,omitempty"`
}

// RecordStats counts the records held (latest versions, whatever their
// status) by district and category (domain, polarity, severity).
type RecordStats struct {
	// Categories are the columns, each with its total over the districts.
	Categories []RecordCategory `json:"categories"`
	Districts  []RecordRow      `json:"districts"`
	Total      Cell             `json:"total"`
}

// RecordCategory is a column of RecordStats. Domain "(other)" counts the
// records of catalog items the catalog no longer has.
type RecordCategory struct {
	Domain     string `json:"domain"`
	DomainName string `json:"domain_name,omitempty"`
	Polarity   string `json:"polarity,omitempty"`
	Severity   string `json:"severity,omitempty"`
	Total      Cell   `json:"total"`
}

// RecordRow is one district's records: Counts in the order of the
// categories.
type RecordRow struct {
	District string `json:"district"`
	Name     string `json:"name,omitempty"`
	Counts   []Cell `json:"counts"`
	Total    Cell   `json:"total"`
}

// CaseCounts are objections or repair requests: open, resolved (decided),
// overdue (open past their deadline; a part of open).
type CaseCounts struct {
	Open     Cell `json:"open"`
	Resolved Cell `json:"resolved"`
	Overdue  Cell `json:"overdue"`
}

// CaseStats counts objections and repair requests by district.
type CaseStats struct {
	Districts []CaseRow `json:"districts"`
	// Objections and Repairs are the totals over the districts.
	Objections CaseCounts `json:"objections"`
	Repairs    CaseCounts `json:"repairs"`
	// AgeBuckets are the upper bounds, in days since filing, of the open
	// objections' age columns; the last column is the older ones.
	AgeBuckets []int `json:"age_buckets"`
	// ObjectionAges are the open objections by age (AgeBuckets), totals
	// over the districts.
	ObjectionAges []Cell `json:"objection_ages"`
}

// CaseRow is one district's cases.
type CaseRow struct {
	District   string     `json:"district"`
	Name       string     `json:"name,omitempty"`
	Objections CaseCounts `json:"objections"`
	Repairs    CaseCounts `json:"repairs"`
	// ObjectionAges are the district's open objections by age.
	ObjectionAges []Cell `json:"objection_ages"`
}

// TimelinessStats counts the records reported late: first recorded more
// than WorkingDays working days after their decision date.
type TimelinessStats struct {
	WorkingDays int              `json:"working_days"`
	Departments []DepartmentLate `json:"departments"`
	Late        Cell             `json:"late"`
}

// DepartmentLate is one department's late records.
type DepartmentLate struct {
	District   string `json:"district"`
	Department string `json:"department"`
	Late       Cell   `json:"late"`
}

// UsageStats counts lookups (or checks) by institution and purpose.
type UsageStats struct {
	Purposes     []UsagePurpose `json:"purposes"`
	Institutions []UsageRow     `json:"institutions"`
	Total        Cell           `json:"total"`
}

// UsagePurpose is a column of UsageStats, with its total.
type UsagePurpose struct {
	Purpose string `json:"purpose"`
	Total   Cell   `json:"total"`
}

// UsageRow is one institution's lookups: Counts in the order of the
// purposes. Institution "(other)" takes those beyond the table's bound.
type UsageRow struct {
	// Node is the coordinator node that served the queries: each node's
	// are a row of their own, so that one node's counts cannot be
	// subtracted from another's.
	Node        string `json:"node,omitempty"`
	Region      string `json:"region,omitempty"`
	Institution string `json:"institution"`
	Counts      []Cell `json:"counts"`
	Total       Cell   `json:"total"`
}

// Stats returns the federation statistics of the node's region
// (coordinator or operator certificate, on a city or province node).
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	var out Stats
	_, err := c.Do(ctx, "GET", "/v1/stats", "", nil, &out)
	return &out, err
}
