package api

import (
	"time"

	"credfed/credit"
)

// RevocationList is GET /v1/revocations: what every node refuses.
type RevocationList struct {
	Version   uint64      `json:"version"`
	Revoked   []Revoked   `json:"revoked"`
	Suspended []Suspended `json:"suspended"`
}

// Revoked is one revoked certificate.
type Revoked struct {
	Serial string    `json:"serial"` // decimal
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// Suspended is one suspended identity (every certificate of it).
type Suspended struct {
	Identity string    `json:"identity"`
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
	// IssuedBefore, if set, limits the suspension to the certificates
	// issued before it (a removed region's node).
	IssuedBefore *time.Time `json:"issued_before,omitempty"`
}

// RevokeRequest is POST /v1/revocations.
type RevokeRequest struct {
	Serial string `json:"serial"`
	Reason string `json:"reason,omitempty"`
}

// SuspendRequest is POST /v1/suspensions; DELETE /v1/suspensions takes the
// identity as a query parameter.
type SuspendRequest struct {
	Identity string `json:"identity"`
	Reason   string `json:"reason,omitempty"`
}

// CatalogApplied is POST /v1/catalog's answer: the version published and
// what changed from the one before.
type CatalogApplied struct {
	Version int                    `json:"version"`
	Changes []credit.CatalogChange `json:"changes"`
}
