package api

// SubjectRequest is the body of POST /v1/reports and POST /v1/access-log:
// the subject, and how the portal verified the person's real name.
type SubjectRequest struct {
	Subject        string `json:"subject"`
	Authentication string `json:"authentication"`
}

// Report is POST /v1/reports's answer: the subject's own report, signed by
// the coordinator node that gathered it (Signature; see docs/design.md,
// "Signed documents"). Verify it with `credfed report verify`.
type Report struct {
	Federation       string `json:"federation"`
	SubjectPseudonym string `json:"subject_pseudonym"`
	// Subject is the subject's identifier, masked (region and check
	// character kept): the report names whom it is about without carrying
	// the identifier to whoever is handed it.
	Subject string `json:"subject"`
	// GeneratedAt is when it was gathered; GatheredBy the coordinator
	// region that gathered it.
	GeneratedAt string           `json:"generated_at"`
	GatheredBy  string           `json:"gathered_by"`
	Districts   []DistrictResult `json:"districts"`
	// Lists are the lists the subject's records put them on.
	Lists     []ReportList `json:"lists"`
	AccessLog AccessLog    `json:"access_log"`
	Signature *Signature   `json:"signature,omitempty"`
}

// ReportList is a list the subject is on.
type ReportList struct {
	List string `json:"list"`
	Name string `json:"name,omitempty"`
	Kind string `json:"kind,omitempty"`
}

// Signature is a signed document's "signature" member.
type Signature struct {
	Alg              string   `json:"alg"`
	Canonicalization string   `json:"canonicalization"`
	Signer           string   `json:"signer"`
	SignedAt         string   `json:"signed_at"`
	Chain            []string `json:"chain"`
	Value            string   `json:"value"`
}

// AccessLog is POST /v1/access-log's answer (and a report's "access_log"):
// every lookup of the subject, one entry each, newest first.
type AccessLog struct {
	Entries []AccessEntry `json:"entries"`
	// Delayed counts lookups whose purpose keeps them out of the log for
	// now; they appear once the purpose's delay has passed.
	Delayed int `json:"delayed"`
	// Incomplete names nodes that could not be asked: their lookups may be
	// missing.
	Incomplete []string `json:"incomplete,omitempty"`
}

// AccessEntry is one lookup of the subject.
type AccessEntry struct {
	At          string `json:"at"`
	LookupID    string `json:"lookup_id,omitempty"`
	Operation   string `json:"operation"`
	Institution string `json:"institution"`
	Role        string `json:"role"`
	User        string `json:"user"`
	Purpose     string `json:"purpose"`
	Reference   string `json:"reference"`
	// Coordinator is the region of the node that asked.
	Coordinator string `json:"coordinator"`
	// District is the first of Districts, the districts that answered.
	District  string   `json:"district,omitempty"`
	Districts []string `json:"districts"`
}

// CaseRequest is POST /v1/objections and POST /v1/repairs: the subject, the
// record by its ref, the reason (an objection's) or grounds (a repair's:
// performance, volunteer_service, donation, training) with a statement,
// evidence references, and the portal's authentication reference.
type CaseRequest struct {
	Subject        string   `json:"subject"`
	Record         string   `json:"record"`
	Reason         string   `json:"reason,omitempty"`
	Grounds        string   `json:"grounds,omitempty"`
	Evidence       []string `json:"evidence,omitempty"`
	Authentication string   `json:"authentication"`
}

// Case is an objection or a repair request as its parties see it.
type Case struct {
	ID       string   `json:"id"`
	Kind     string   `json:"kind"` // objection or repair
	Record   string   `json:"record"`
	State    string   `json:"state"` // open or decided
	Outcome  string   `json:"outcome,omitempty"`
	FiledAt  string   `json:"filed_at"`
	Deadline string   `json:"deadline,omitempty"`
	Overdue  bool     `json:"overdue"`
	Reason   string   `json:"reason,omitempty"`
	Grounds  string   `json:"grounds,omitempty"`
	Evidence []string `json:"evidence,omitempty"`
	// Decision is the collector's reasons; DecidedBy its identity.
	Decision  string `json:"decision,omitempty"`
	DecidedAt string `json:"decided_at,omitempty"`
	DecidedBy string `json:"decided_by,omitempty"`
	// Version is the record version the decision wrote.
	Version int `json:"version,omitempty"`
	// Notify lists the institutions that looked the record up while it was
	// disputed or in the 30 days before (an objection, once decided).
	Notify []string `json:"notify,omitempty"`
	// NotifyConfidential (the collector only) are institutions that looked
	// under a purpose the subject's access log still hides (an
	// investigation): to be told too; the subject's portal does not see
	// them.
	NotifyConfidential []string `json:"notify_confidential,omitempty"`
}

// Cases is GET /v1/objections and GET /v1/repairs.
type Cases struct {
	Cases []Case `json:"cases"`
}

// CaseDecision is POST /v1/objections/{id}/resolution (outcome upheld,
// corrected or revoked; a correction's fields with corrected) and POST
// /v1/repairs/{id}/decision (approved or rejected).
type CaseDecision struct {
	Outcome    string      `json:"outcome"`
	Reason     string      `json:"reason"`
	Correction *Correction `json:"correction,omitempty"`
}
