package consensus

import (
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"

	"credfed/certs"
	"credfed/credit"
)

// CommandType numbers the commands of the replicated log. The numbers are
// part of the log format: append new types, never renumber or reuse one,
// and register each in the command table (commands.go).
// A type with IgnoreUnknown set may be skipped by a server that does not
// know it (an older binary during a rolling upgrade); any other unknown
// type stops the FSM, since applying the rest of the log without it would
// make this replica diverge.
type CommandType uint8

// Command types.
const (
	// CmdIndexBatch carries index updates of one or more districts.
	CmdIndexBatch CommandType = 1
	// CmdRegionPut adds a region or changes one (address, voter flag).
	CmdRegionPut CommandType = 2
	// CmdRegionRemove removes a region; its node leaves the Raft cluster.
	CmdRegionRemove CommandType = 3
	// CmdCatalogPublish publishes the next catalog version.
	CmdCatalogPublish CommandType = 4
	// CmdRevoke revokes a certificate by serial number.
	CmdRevoke CommandType = 5
	// CmdSuspend suspends every certificate of an identity.
	CmdSuspend CommandType = 6
	// CmdReinstate lifts a suspension.
	CmdReinstate CommandType = 7
	// CmdFederationInit creates the registry and the first catalog of a new
	// federation; refused once the registry holds anything.
	CmdFederationInit CommandType = 8
	// CmdSealedIndexBatch carries an IndexBatch sealed with the index key
	// that only coordinators hold (SealedIndexBatch, seal.go): the leader
	// proposes index updates only this way. It has no IgnoreUnknown bit: a
	// coordinator of an older binary that skipped it would lose index
	// entries without noticing.
	CmdSealedIndexBatch CommandType = 9
	// CmdAuditAnchor anchors the head of a node's audit log (AuditAnchor,
	// anchor.go). It has the IgnoreUnknown bit: anchors are evidence each
	// node checks its own log against, not state other commands depend
	// on, so a coordinator of an older binary skips them during a rolling
	// upgrade instead of stopping.
	CmdAuditAnchor CommandType = IgnoreUnknown | 10
	// CmdRegionAdd registers a region that has not joined yet, with a
	// one-time join token (RegionAdd, join.go).
	CmdRegionAdd CommandType = 11
	// CmdJoin uses a region's join token and sets the new node's
	// addresses (Join, join.go).
	CmdJoin CommandType = 12
	// CmdKeyInstall distributes the next pseudonym key version, sealed
	// under the current index key, to every coordinator (KeyInstall,
	// keys.go); a node without the index keys keeps its clear record only.
	CmdKeyInstall CommandType = 13
	// CmdKeySwitch makes an installed key version current once every
	// coordinator holds it (KeySwitch, keys.go).
	CmdKeySwitch CommandType = 14
	// CmdKeyProgress is a node's report that it holds a key version (a
	// coordinator) or republished its subjects under it (a district)
	// (KeyProgress, keys.go).
	CmdKeyProgress CommandType = 15

	// IgnoreUnknown marks a command type that servers which do not know it
	// may skip.
	IgnoreUnknown CommandType = 128
)

// String names the command type (metrics label), from the command table.
func (t CommandType) String() string {
	if c := commandFor(t); c != nil {
		return c.name
	}
	return fmt.Sprintf("unknown_%d", uint8(t))
}

// Envelope is what a log entry carries after its type byte: who proposed
// the command, on whose behalf, when, and the command's own body.
//
// Proposer is the node that handed the command to the leader, as the
// leader verified it (its mTLS peer certificate, or the leader itself);
// Actor is the user on whose behalf the proposer acts, as the proposer
// verified it (the client certificate of its local API), zero for commands
// that nodes issue on their own. At is the leader's clock when it proposed
// the command, so every replica applies the same time.
type Envelope struct {
	Proposer certs.Identity  `cbor:"1,keyasint"`
	Actor    certs.Identity  `cbor:"2,keyasint,omitempty"`
	At       time.Time       `cbor:"3,keyasint"`
	Body     cbor.RawMessage `cbor:"4,keyasint"`
}

// IndexUpdate sets the index entry of one subject (by pseudonym) at one
// district. Entries are absolute, not deltas: Seq is the district's
// sequence number for the change, and an update whose Seq is not above the
// stored one is ignored, so a retried batch is never applied twice and an
// older update never overwrites a newer one. An entry whose summary counts
// nothing means the district no longer shows anything for the subject.
//
// It is encoded as a CBOR array [pseudonym, district, summary, seq]: a log
// entry holds thousands of them, and arrays are smaller and quicker to
// decode than maps.
type IndexUpdate struct {
	_         struct{}            `cbor:",toarray"`
	Pseudonym credit.Pseudonym    `cbor:"1,keyasint"`
	District  string              `cbor:"2,keyasint"`
	Summary   credit.IndexSummary `cbor:"3,keyasint"`
	Seq       uint64              `cbor:"4,keyasint"`
}

// IndexGroup is the updates one district proposed.
type IndexGroup struct {
	Proposer certs.Identity `cbor:"1,keyasint"`
	Updates  []IndexUpdate  `cbor:"2,keyasint"`
}

// IndexBatch is the body of CmdIndexBatch: the leader coalesces the
// updates that districts forward into one log entry, one group per
// forwarded request, each authorized on its own.
type IndexBatch struct {
	Groups []IndexGroup `cbor:"1,keyasint"`
}

// Region is one member of the federation's region registry.
type Region struct {
	// Path is the region path ("zhejiang/quzhou/kecheng"); it is also the
	// Raft server ID of the region's node.
	Path string `cbor:"1,keyasint" json:"path"`
	// Name is the display name ("柯城区").
	Name string `cbor:"2,keyasint" json:"name"`
	// Role is province, city or district.
	Role certs.Role `cbor:"3,keyasint" json:"role"`
	// Code is the administrative division code (six digits), if known.
	Code string `cbor:"4,keyasint,omitempty" json:"code,omitempty"`
	// Exchange is the node's UDP address (host:port) for the exchange and
	// Raft; empty while the node is not yet reachable.
	Exchange string `cbor:"5,keyasint,omitempty" json:"exchange,omitempty"`
	// API is the node's HTTPS base URL, for links and the console.
	API string `cbor:"6,keyasint,omitempty" json:"api,omitempty"`
	// Voter says whether the node votes in Raft (coordinators by default).
	Voter bool `cbor:"7,keyasint" json:"voter"`
	// Since is when the region joined (the leader's clock).
	Since time.Time `cbor:"8,keyasint" json:"since"`
	// Registered is the log index at which the region was registered:
	// index entries of its path written before it (by a node of an earlier
	// region of that path, since removed) are not its own and are not
	// read.
	Registered uint64 `cbor:"9,keyasint,omitempty" json:"registered,omitempty"`
}

// Identity returns the node identity the region's certificate must carry.
func (r Region) Identity(federation string) certs.Identity {
	return certs.Identity{Federation: federation, Role: r.Role, Region: r.Path}
}

// RegionRemove is the body of CmdRegionRemove.
type RegionRemove struct {
	Path string `cbor:"1,keyasint"`
	// SuspendNode also suspends, in the same entry, every certificate of
	// the region's node identity issued until now (credfed region remove):
	// the node of a region added again at the path gets new ones.
	SuspendNode bool `cbor:"2,keyasint,omitempty"`
}

// RegionRemovedReason is the reason of the suspension a region's removal
// puts on its node identity.
const RegionRemovedReason = "region removed"

// CatalogPublish is the body of CmdCatalogPublish. Its version must be the
// current version plus one.
type CatalogPublish struct {
	Catalog *credit.Catalog `cbor:"1,keyasint"`
}

// Reinstate is the body of CmdReinstate.
type Reinstate struct {
	Identity string `cbor:"1,keyasint"`
}

// FederationInit is the body of CmdFederationInit.
type FederationInit struct {
	Regions []Region        `cbor:"1,keyasint"`
	Catalog *credit.Catalog `cbor:"2,keyasint"`
}

// Command is a decoded log entry.
type Command struct {
	Type CommandType
	Envelope
}

// encMode is the one CBOR encoding of everything replicated: core
// deterministic, so that every replica and every snapshot encodes alike.
var encMode = func() cbor.EncMode {
	opts := cbor.CoreDetEncOptions()
	opts.Time = cbor.TimeRFC3339Nano
	m, err := opts.EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// decMode is the one strict decoding: no duplicate keys, no indefinite
// lengths, bounded sizes. Catalogs are the largest bodies (hundreds of
// items); index batches hold at most maxBatchUpdates updates.
var decMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  16,
		MaxArrayElements: 1 << 17,
		MaxMapPairs:      1 << 12,
		TimeTag:          cbor.DecTagOptional,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// EncodeCommand builds a log entry: the type byte, then the CBOR envelope
// holding the CBOR body.
func EncodeCommand(t CommandType, env Envelope, body any) ([]byte, error) {
	raw, err := encMode.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("consensus: encode %s: %w", t, err)
	}
	env.Body = raw
	b, err := encMode.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("consensus: encode %s: %w", t, err)
	}
	return append([]byte{byte(t)}, b...), nil
}

// DecodeCommand splits a log entry into its type and envelope; the body is
// decoded by the applier that knows its type.
func DecodeCommand(data []byte) (Command, error) {
	if len(data) < 2 {
		return Command{}, fmt.Errorf("consensus: log entry of %d bytes", len(data))
	}
	c := Command{Type: CommandType(data[0])}
	if err := decMode.Unmarshal(data[1:], &c.Envelope); err != nil {
		return Command{}, fmt.Errorf("consensus: decode %s envelope: %w", c.Type, err)
	}
	return c, nil
}

// decodeBody decodes a command body into v.
func decodeBody(c Command, v any) error {
	if err := decMode.Unmarshal(c.Body, v); err != nil {
		return fmt.Errorf("consensus: decode %s body: %w", c.Type, err)
	}
	return nil
}
