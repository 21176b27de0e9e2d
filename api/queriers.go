package api

// The anomaly flags of GET /v1/audit/queriers (docs/config.md,
// `queriers.flags`, gives each one's threshold).
const (
	// FlagDistinctSubjects: many distinct subjects in a window under few
	// distinct case references (screening rather than casework).
	FlagDistinctSubjects = "distinct_subjects"
	// FlagOffHours: queries outside the configured working hours.
	FlagOffHours = "off_hours"
	// FlagRarePurpose: a purpose the institution rarely uses.
	FlagRarePurpose = "rare_purpose"
	// FlagLargeBatch: a batch far above the institution's usual size.
	FlagLargeBatch = "large_batch"
)

// Queriers is GET /v1/audit/queriers's answer: the answering node's
// account of the institutions that query through it, since the node
// started, in counts only: no subject, pseudonym or reference is in it.
type Queriers struct {
	// At is when the account was taken (RFC 3339, UTC).
	At           string    `json:"at"`
	Institutions []Querier `json:"institutions"`
}

// Querier is one institution's account.
type Querier struct {
	Institution string `json:"institution"`
	// Overflow marks the shared account of the institutions beyond the
	// node's cap (queriers.max_institutions), named "(other)": they are
	// counted, held to the quotas and flagged together.
	Overflow bool `json:"overflow,omitempty"`
	// Queries counts the queries that ran (a batch's rows one by one);
	// Purposes splits them by purpose code.
	Queries  uint64            `json:"queries"`
	Purposes map[string]uint64 `json:"purposes"`
	// Admitted and Refused count the queries admitted against the quotas
	// and those refused over quota (too_many_requests).
	Admitted uint64 `json:"admitted"`
	Refused  uint64 `json:"refused"`
	// Quotas are the quotas the institution is held to, in the window now
	// running.
	Quotas []QuotaUsage `json:"quotas"`
	// Flags are the anomaly flags raised on the institution that have held
	// within the hold period (queriers.flags.hold).
	Flags []QuerierFlag `json:"flags"`
}

// QuotaUsage is one quota in its current window.
type QuotaUsage struct {
	// Purpose is the purpose code the quota counts; empty: every purpose
	// together.
	Purpose string `json:"purpose,omitempty"`
	// Default marks a quota of every institution (no institution named in
	// the configuration), counted for this one alone.
	Default bool `json:"default,omitempty"`
	Limit   int  `json:"limit"`
	// Per is the window's length ("24h", "1h").
	Per  string `json:"per"`
	Used int    `json:"used"`
	// ResetsAt is when the window ends and Used starts again from zero
	// (RFC 3339, UTC).
	ResetsAt string `json:"resets_at"`
}

// QuerierFlag is one anomaly flag raised on an institution: from Since,
// when the condition first held, to At, the last time it held, Count
// times. Observed, Threshold and Basis are the numbers of the last time;
// what they measure depends on the flag:
//
//   - distinct_subjects: distinct references / distinct subjects in the
//     window, below Threshold; Basis the distinct subjects.
//   - off_hours: queries outside working hours in the window, at least
//     Threshold; Basis the window's queries.
//   - rare_purpose: the purpose's share of the institution's queries,
//     below Threshold; Basis the institution's queries; Purpose the code.
//   - large_batch: the batch's rows, above Threshold (the factor times the
//     median of its recent batches); Basis the batches the median is of.
type QuerierFlag struct {
	Flag      string  `json:"flag"`
	Since     string  `json:"since"`
	At        string  `json:"at"`
	Count     uint64  `json:"count"`
	Observed  float64 `json:"observed"`
	Threshold float64 `json:"threshold"`
	Basis     uint64  `json:"basis"`
	// Purpose is the catalog's purpose code (rare_purpose only).
	Purpose string `json:"purpose,omitempty"`
}
