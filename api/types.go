package api

import (
	"credfed/credit"
)

// Error codes: the only values of "code" in an error body (API.md).
const (
	CodeBadRequest         = "bad_request"
	CodeInvalidIdentifier  = "invalid_identifier"
	CodeUnknownCatalogItem = "unknown_catalog_item"
	CodeUnauthenticated    = "unauthenticated"
	CodeForbidden          = "forbidden"
	CodeNotFound           = "not_found"
	CodeConflict           = "conflict"
	CodeTooEarly           = "too_early"
	CodeTooManyRequests    = "too_many_requests"
	CodeDeadlineExceeded   = "deadline_exceeded"
	CodeUnavailable        = "unavailable"
	CodeInternal           = "internal"
)

// Error is the body of every non-2xx answer, under "error", and of a
// rejected record in a submission's results.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// Error implements error.
func (e *Error) Error() string {
	if e.Field != "" {
		return e.Code + ": " + e.Message + " (field " + e.Field + ")"
	}
	return e.Code + ": " + e.Message
}

// ErrorBody is a non-2xx answer.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Catalog is GET /v1/catalog.
type Catalog struct {
	Version     int                         `json:"version"`
	Items       []credit.Item               `json:"items"`
	Purposes    []credit.Purpose            `json:"purposes"`
	Lists       []credit.List               `json:"lists"`
	Scenarios   []credit.Scenario           `json:"scenarios"`
	Domains     []credit.Domain             `json:"domains"`
	Occupations []credit.Occupation         `json:"occupations"`
	Rules       []credit.ClassificationRule `json:"rules"`
	Levels      []credit.Level              `json:"levels"`
}

// Federation is GET /v1/federation: the federation as the answering node
// sees it.
type Federation struct {
	Federation     string      `json:"federation"`
	Node           NodeStatus  `json:"node"`
	Raft           RaftStatus  `json:"raft"`
	Index          IndexStatus `json:"index"`
	CatalogVersion int         `json:"catalog_version"`
	Regions        []Region    `json:"regions"`
	Jobs           []JobStatus `json:"jobs,omitempty"`
	// API is the answering node's API traffic of the last five minutes.
	API *APIHealth `json:"api,omitempty"`
}

// APIHealth is a node's API traffic of the last five minutes.
type APIHealth struct {
	Requests5m int64 `json:"requests_5m"`
	// Errors5m are the answers internal, unavailable or
	// deadline_exceeded: the node's failures, not the callers'.
	Errors5m int64 `json:"errors_5m"`
}

// NodeStatus is the answering node in GET /v1/federation.
type NodeStatus struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Region   string `json:"region"`
	Exchange string `json:"exchange"`
	Ready    bool   `json:"ready"`
	Status   string `json:"status"`
	// CertificateNotAfter is when the node's certificate ends (RFC 3339).
	CertificateNotAfter string `json:"certificate_not_after,omitempty"`
}

// RaftStatus is the node's place in Raft, as hashicorp/raft reports it.
type RaftStatus struct {
	State        string `json:"state"`
	Leader       string `json:"leader"`
	Term         string `json:"term"`
	CommitIndex  string `json:"commit_index"`
	AppliedIndex string `json:"applied_index"`
	LastLogIndex string `json:"last_log_index"`
	Voter        bool   `json:"voter"`
}

// IndexStatus is the node's index replica.
type IndexStatus struct {
	AppliedIndex uint64 `json:"applied_index"`
	// Entries is how many index entries this node's local state holds: 0
	// at a district, which keeps none (index batches reach it sealed). It
	// may lag the live state by a few minutes.
	Entries int `json:"entries"`
	// OutboxLength is how many changes of subjects a district has not yet
	// published to the index: an entry a subject for each commit that
	// changed it (a subject changed by two commits before publishing
	// counts twice; several records of it in one commit count once).
	OutboxLength int `json:"outbox_length,omitempty"`
}

// Region is one member of the region registry.
type Region struct {
	Path     string `json:"path"`
	Name     string `json:"name"`
	Role     string `json:"role"`
	Exchange string `json:"exchange,omitempty"`
	API      string `json:"api,omitempty"`
	Voter    bool   `json:"voter"`
	// Raft is the region's node in the Raft configuration: voter,
	// nonvoter or absent.
	Raft string `json:"raft"`
}

// JobStatus is one background job of the node (the sweep, the publisher).
type JobStatus struct {
	Name string `json:"name"`
	// State is idle, running or failing (the last run failed).
	State string `json:"state"`
	Runs  int64  `json:"runs"`
	// Failures counts the runs that failed in a row, 0 after a good one.
	Failures    int64  `json:"failures"`
	LastRun     string `json:"last_run,omitempty"`     // RFC 3339, when the last run ended
	LastSuccess string `json:"last_success,omitempty"` // RFC 3339
	LastError   string `json:"last_error,omitempty"`
	// Progress is what the job last reported of the run under way or
	// the last one (job-specific counts).
	Progress map[string]int64 `json:"progress,omitempty"`
}

// RecordInput is one record of POST /v1/records. Department and district
// may be given only to repeat what the client certificate says.
type RecordInput struct {
	ID             string `json:"id"`
	Subject        string `json:"subject"`
	CatalogItem    string `json:"catalog_item"`
	DecisionNumber string `json:"decision_number,omitempty"`
	OccurredOn     string `json:"occurred_on"`
	DecidedOn      string `json:"decided_on"`
	Summary        string `json:"summary,omitempty"`
	Department     string `json:"department,omitempty"`
	District       string `json:"district,omitempty"`
}

// Submission statuses.
const (
	StatusAccepted  = "accepted"
	StatusDuplicate = "duplicate"
	StatusRejected  = "rejected"
)

// SubmitAnswer is POST /v1/records's answer: one result per submitted
// record, in order.
type SubmitAnswer struct {
	Results []RecordResult `json:"results"`
}

// RecordResult is the fate of one submitted record.
type RecordResult struct {
	Index  int    `json:"index"`
	ID     string `json:"id"`
	Status string `json:"status"` // accepted, duplicate, rejected
	Error  *Error `json:"error,omitempty"`
}

// Record is a record as the API shows it. Dates are YYYY-MM-DD.
type Record struct {
	ID string `json:"id"`
	// Ref is the record's federation-wide reference
	// (district/department/id), which objections and repairs name.
	Ref            string   `json:"ref,omitempty"`
	Subject        string   `json:"subject"`
	CatalogItem    string   `json:"catalog_item"`
	DecisionNumber string   `json:"decision_number,omitempty"`
	OccurredOn     string   `json:"occurred_on"`
	DecidedOn      string   `json:"decided_on"`
	Summary        string   `json:"summary,omitempty"`
	Department     string   `json:"department"`
	District       string   `json:"district"`
	Polarity       string   `json:"polarity"`
	Severity       string   `json:"severity"`
	LegalBasis     string   `json:"legal_basis"`
	Status         string   `json:"status"`
	Version        int      `json:"version"`
	CatalogVersion int      `json:"catalog_version"`
	RecordedAt     string   `json:"recorded_at"`
	Reason         string   `json:"reason,omitempty"`
	DisplayUntil   string   `json:"display_until,omitempty"`
	Versions       []Record `json:"versions,omitempty"`
}

// Correction is POST /v1/records/{id}/corrections: the fields that change
// (absent ones stay) and why.
type Correction struct {
	CatalogItem    *string `json:"catalog_item,omitempty"`
	DecisionNumber *string `json:"decision_number,omitempty"`
	OccurredOn     *string `json:"occurred_on,omitempty"`
	DecidedOn      *string `json:"decided_on,omitempty"`
	Summary        *string `json:"summary,omitempty"`
	Reason         string  `json:"reason"`
}

// Read consistencies of a lookup.
const (
	ConsistencyLocal  = "local"
	ConsistencyStrong = "strong"
)

// LookupRequest is POST /v1/lookups.
type LookupRequest struct {
	Subject       string `json:"subject"`
	Purpose       string `json:"purpose"`
	User          string `json:"user"`
	Reference     string `json:"reference"`
	Authorization string `json:"authorization,omitempty"`
	// Consistency is "local" (default: the node's index replica) or
	// "strong" (a linearizable read through the Raft leader).
	Consistency string `json:"consistency,omitempty"`
}

// LookupAnswer is POST /v1/lookups's answer.
type LookupAnswer struct {
	// LookupID is the lookup's federation-wide id (in the audit entries of
	// the coordinator and of every district that answered).
	LookupID         string           `json:"lookup_id"`
	SubjectPseudonym string           `json:"subject_pseudonym"`
	Purpose          string           `json:"purpose"`
	Reference        string           `json:"reference"`
	Index            LookupIndex      `json:"index"`
	Districts        []DistrictResult `json:"districts"`
}

// LookupIndex says how the index was read.
type LookupIndex struct {
	Consistency  string `json:"consistency"`
	AppliedIndex uint64 `json:"applied_index"`
}

// District statuses in a lookup.
const (
	DistrictOK          = "ok"
	DistrictUnreachable = "unreachable"
	DistrictTimeout     = "timeout"
	DistrictDenied      = "denied"
	DistrictError       = "error"
)

// DistrictResult is one district's part of a lookup.
type DistrictResult struct {
	District string   `json:"district"`
	Name     string   `json:"name,omitempty"`
	Status   string   `json:"status"` // ok, unreachable, timeout, denied, error
	Records  []Record `json:"records"`
	Error    string   `json:"error,omitempty"`
}

// Custody is GET /v1/custody: how a coordinator handed pseudonyms to each
// district.
type Custody struct {
	Districts []CustodyAccount `json:"districts"`
}

// CustodyAccount is one district's pseudonymization account.
type CustodyAccount struct {
	District string `json:"district"`
	// Issued counts the pseudonyms handed to the district; Checked those
	// of a sample checked against its index updates once it had time to
	// publish them; Unmatched those that never showed up.
	Issued    uint64 `json:"issued"`
	Checked   uint64 `json:"checked"`
	Unmatched uint64 `json:"unmatched"`
	Flagged   bool   `json:"flagged"`
	// FlaggedAt is when the district was flagged (RFC 3339).
	FlaggedAt string `json:"flagged_at,omitempty"`
}
