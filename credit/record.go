package credit

import "time"

// Polarity says whether a record speaks for or against its subject.
type Polarity string

// Polarities.
const (
	Positive Polarity = "positive"
	Negative Polarity = "negative"
	Neutral  Polarity = "neutral"
)

// Severity grades negative records; serious ones may put a subject on a
// serious-dishonesty list.
type Severity string

// Severities.
const (
	Ordinary Severity = "ordinary"
	Serious  Severity = "serious"
)

// Disclosure is how widely a catalog item's records may be shown.
type Disclosure string

// Disclosure levels.
const (
	// Public records may be listed on the public disclosure pages (masked).
	Public Disclosure = "public"
	// Authorized records are shown to lookups whose purpose admits the item.
	Authorized Disclosure = "authorized"
	// Internal records are shown only to the collector and the subject.
	Internal Disclosure = "internal"
)

// Status is where a record stands in its life.
type Status string

// Record statuses.
const (
	StatusActive    Status = "active"    // displayed and usable
	StatusDisputed  Status = "disputed"  // an objection is open; shown as disputed
	StatusCorrected Status = "corrected" // superseded by a correction (older versions)
	StatusRepaired  Status = "repaired"  // credit repair approved; not used for ordinary purposes
	StatusExpired   Status = "expired"   // past its display period; kept until retention ends
	StatusRevoked   Status = "revoked"   // withdrawn by the collector (objection upheld or error)
)

// Record is one personal public credit record as its district holds it.
//
// The fields a department submits are ID, Subject, CatalogItem,
// DecisionNumber, OccurredOn, DecidedOn and Summary. Department and District
// come from the caller's verified certificate, never from the body.
// Polarity, Severity and LegalBasis are inherited from the catalog item when
// the record is accepted. Version counts from 1 and grows with each
// correction; the store keeps every version.
type Record struct {
	ID             string `json:"id" cbor:"1,keyasint"`
	Subject        string `json:"subject" cbor:"2,keyasint"`
	CatalogItem    string `json:"catalog_item" cbor:"3,keyasint"`
	DecisionNumber string `json:"decision_number" cbor:"4,keyasint"`
	OccurredOn     Date   `json:"occurred_on" cbor:"5,keyasint"`
	DecidedOn      Date   `json:"decided_on" cbor:"6,keyasint"`
	Summary        string `json:"summary" cbor:"7,keyasint"`

	Department string `json:"department" cbor:"8,keyasint"`
	District   string `json:"district" cbor:"9,keyasint"`

	Polarity   Polarity `json:"polarity" cbor:"10,keyasint"`
	Severity   Severity `json:"severity" cbor:"11,keyasint"`
	LegalBasis string   `json:"legal_basis" cbor:"12,keyasint"`

	Status         Status    `json:"status" cbor:"13,keyasint"`
	Version        int       `json:"version" cbor:"14,keyasint"`
	CatalogVersion int       `json:"catalog_version" cbor:"15,keyasint"`
	RecordedAt     time.Time `json:"recorded_at" cbor:"16,keyasint"`
	// Reason is why this version exists: empty for the first, the
	// correction's reason or the status change's cause afterwards.
	Reason string `json:"reason,omitempty" cbor:"17,keyasint,omitempty"`
}

// SameContent reports whether two submissions carry the same content, which
// decides between a duplicate and a conflict when an (department, id) pair is
// submitted again.
func (r Record) SameContent(o Record) bool {
	return r.ID == o.ID && r.Subject == o.Subject && r.CatalogItem == o.CatalogItem &&
		r.DecisionNumber == o.DecisionNumber && r.OccurredOn == o.OccurredOn &&
		r.DecidedOn == o.DecidedOn && r.Summary == o.Summary && r.Department == o.Department
}
