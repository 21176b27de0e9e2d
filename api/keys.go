package api

import (
	"context"
	"time"
)

// KeyStatus is GET /v1/keys and the answer of POST /v1/keys/rotate: the
// federation's pseudonym key versions and the rotation's progress, as the
// node asked has applied them.
type KeyStatus struct {
	// Current is the version that pseudonymizes and seals the index.
	Current uint32 `json:"current"`
	// IndexFloor is the oldest version the index may still hold entries
	// under: Current once every district has republished under it.
	IndexFloor uint32       `json:"index_floor"`
	Versions   []KeyVersion `json:"versions"`
	// Step is what the call did (rotate only): "installed" (a new version
	// was distributed to the coordinators), "switched" (it became
	// current), "waiting" (nothing could be done yet: Message says what
	// the rotation waits for) or "none" (nothing to do).
	Step    string `json:"step,omitempty"`
	Message string `json:"message,omitempty"`
}

// KeyVersion is one version of KeyStatus.
type KeyVersion struct {
	Version uint32 `json:"version"`
	// Phase is installing, installed, republishing, current or retired.
	Phase       string    `json:"phase"`
	Installed   time.Time `json:"installed,omitzero"`
	InstalledBy string    `json:"installed_by,omitempty"`
	Switched    time.Time `json:"switched,omitzero"`
	SwitchedBy  string    `json:"switched_by,omitempty"`
	// Held are the coordinators that hold the version; AwaitingHold the
	// joined ones that have not reported it yet.
	Held         []string `json:"held,omitempty"`
	AwaitingHold []string `json:"awaiting_hold,omitempty"`
	// Republished are the districts that republished every subject under
	// it; AwaitingRepublish the joined ones that have not yet.
	Republished       []string `json:"republished,omitempty"`
	AwaitingRepublish []string `json:"awaiting_republish,omitempty"`
	// RetainedFor says what an older version is still kept for: opening
	// the Raft log entries and snapshots sealed under it, and finding the
	// audit entries written under its pseudonyms (which the subjects'
	// access logs must still show). It cannot be destroyed while it is
	// needed for either.
	RetainedFor []string `json:"retained_for,omitempty"`
}

// KeyRotateRequest is POST /v1/keys/rotate.
type KeyRotateRequest struct {
	// Wait is how long the call waits for every coordinator to hold a new
	// version before it switches to it (Go duration; default 20s, at most
	// 2m). A rotation not switched when it returns is continued by the
	// next call.
	Wait string `json:"wait,omitempty"`
}

// KeyStatus returns the key versions and the rotation's progress
// (operator).
func (c *Client) KeyStatus(ctx context.Context) (*KeyStatus, error) {
	var out KeyStatus
	_, err := c.Do(ctx, "GET", "/v1/keys", "", nil, &out)
	return &out, err
}

// RotateKeys starts a key rotation, or continues the one under way
// (operator of the province, at a coordinator node).
func (c *Client) RotateKeys(ctx context.Context, req KeyRotateRequest) (*KeyStatus, error) {
	var out KeyStatus
	_, err := c.Do(ctx, "POST", "/v1/keys/rotate", "", req, &out)
	return &out, err
}
