package api

import "time"

// CheckRequest is POST /v1/checks: a lookup's fields and the scenario of
// the decision the check comes before. Purpose may be left out; when
// given it must be the scenario's.
type CheckRequest struct {
	Subject       string `json:"subject"`
	Scenario      string `json:"scenario"`
	Purpose       string `json:"purpose,omitempty"`
	User          string `json:"user"`
	Reference     string `json:"reference"`
	Authorization string `json:"authorization,omitempty"`
	// Consistency is "local" (default) or "strong", as for a lookup.
	Consistency string `json:"consistency,omitempty"`
}

// CheckAnswer is a check's answer, 200 whenever the check ran: a
// restriction is an answer, not an error.
type CheckAnswer struct {
	// CheckID is the check's federation-wide id (in the audit entries of
	// every node it touched; the subject's access log shows it once).
	CheckID          string `json:"check_id"`
	Scenario         string `json:"scenario"`
	ScenarioName     string `json:"scenario_name,omitempty"`
	Purpose          string `json:"purpose"`
	Reference        string `json:"reference,omitempty"`
	SubjectPseudonym string `json:"subject_pseudonym,omitempty"`
	// Lists are the lists the subject is on, each with the records that
	// put the subject there.
	Lists []CheckList `json:"lists"`
	// Measures are the scenario's measures that follow, each with its
	// legal basis.
	Measures []CheckMeasure `json:"measures"`
	// ThreeYearsClean: no bad record the purpose may use decided within
	// the last three years. False when Complete is false and a district
	// that did not answer may hold one.
	ThreeYearsClean bool `json:"three_years_clean"`
	// Complete says every district the index names for the check
	// answered; when false, Unconfirmed says what the index holds of the
	// others, and the measures may be missing some.
	Complete    bool     `json:"complete"`
	Unconfirmed []string `json:"unconfirmed,omitempty"`
	// Districts are the districts asked (those whose index entry holds a
	// list flag or a negative record), each with its status.
	Districts []DistrictResult `json:"districts"`
	Index     LookupIndex      `json:"index"`
}

// CheckList is one list the subject is on.
type CheckList struct {
	List       string   `json:"list"`
	Name       string   `json:"name,omitempty"`
	Kind       string   `json:"kind"` // red, serious_dishonesty
	LegalBasis string   `json:"legal_basis,omitempty"`
	Records    []Record `json:"records"`
}

// CheckMeasure is a measure that follows in the scenario.
type CheckMeasure struct {
	Code       string `json:"code"`
	Text       string `json:"text"`
	LegalBasis string `json:"legal_basis"`
	Kind       string `json:"kind"` // incentive, restriction
	// Lists are the subject's lists the measure follows from; Condition
	// the condition that holds (three_years_clean).
	Lists     []string `json:"lists,omitempty"`
	Condition string   `json:"condition,omitempty"`
}

// BatchCheckRequest is POST /v1/checks/batch as JSON; NDJSON and CSV bodies
// carry the rows alone, with scenario, purpose and user as query
// parameters.
type BatchCheckRequest struct {
	Scenario string     `json:"scenario"`
	Purpose  string     `json:"purpose,omitempty"`
	User     string     `json:"user"`
	Rows     []BatchRow `json:"rows"`
}

// BatchRow is one subject of a batch check.
type BatchRow struct {
	Subject       string `json:"subject"`
	Reference     string `json:"reference"`
	Authorization string `json:"authorization,omitempty"`
}

// Job is GET /v1/jobs/{id}: a batch job's progress.
type Job struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`   // check.batch
	Status string `json:"status"` // queued, running, done, failed
	Rows   int    `json:"rows"`
	// Done counts the rows answered (Failed among them: rows refused or
	// whose check could not run).
	Done   int `json:"done"`
	Failed int `json:"failed"`
	// Rate is rows per second while running; ETASeconds the estimated
	// time left (absent before the first chunk and once finished).
	Rate       float64    `json:"rate"`
	ETASeconds *float64   `json:"eta_seconds,omitempty"`
	Created    time.Time  `json:"created"`
	Started    *time.Time `json:"started,omitempty"`
	Finished   *time.Time `json:"finished,omitempty"`
	Error      string     `json:"error,omitempty"`
	Scenario   string     `json:"scenario,omitempty"`
	Purpose    string     `json:"purpose,omitempty"`
	// Results is the path of the NDJSON results.
	Results string `json:"results"`
}

// BatchResult is one line of GET /v1/jobs/{id}/results.
type BatchResult struct {
	Row       int    `json:"row"`
	Reference string `json:"reference,omitempty"`
	// Subject is the row's identifier masked (region and check character
	// kept), to tell rows apart without repeating the identifier.
	Subject string       `json:"subject,omitempty"`
	Status  string       `json:"status"` // ok, error
	Error   *Error       `json:"error,omitempty"`
	Check   *CheckAnswer `json:"check,omitempty"`
}

// ClassificationRequest is POST /v1/classification.
type ClassificationRequest struct {
	Subject        string `json:"subject"`
	Purpose        string `json:"purpose,omitempty"`
	User           string `json:"user,omitempty"`
	Reference      string `json:"reference,omitempty"`
	Authorization  string `json:"authorization,omitempty"`
	Authentication string `json:"authentication,omitempty"` // portals
}

// Classification is POST /v1/classification's answer: informational only.
type Classification struct {
	ClassificationID string                `json:"classification_id"`
	SubjectPseudonym string                `json:"subject_pseudonym,omitempty"`
	Level            string                `json:"level"`
	LevelName        string                `json:"level_name,omitempty"`
	Total            int                   `json:"total"`
	Points           []ClassificationPoint `json:"points"`
	// Note says that no measure follows from a level by itself.
	Note      string           `json:"note"`
	Complete  bool             `json:"complete"`
	Districts []DistrictResult `json:"districts"`
}

// ClassificationPoint is the points one rule gave for one record.
type ClassificationPoint struct {
	Points     int    `json:"points"`
	Record     string `json:"record"` // the record's ref
	Rule       string `json:"rule"`
	LegalBasis string `json:"legal_basis"`
	Decayed    bool   `json:"decayed,omitempty"`
	Capped     bool   `json:"capped,omitempty"`
}
