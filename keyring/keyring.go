// Package keyring is what the services that pseudonymize subjects at a
// coordinator (lookups, checks, reports and access logs, objections and
// repairs) need of its pseudonym key versions across a key rotation
// (consensus/keys.go): the subject's pseudonym under the current version;
// the pseudonyms the index may still hold it under (during a rotation the
// old version's as well as the new one's: districts republish their
// subjects one batch at a time); and those its audit entries may name it
// by (every retained version). It also merges a subject's index entries
// read under several versions, so that a district that has republished
// is not listed twice and one that has not yet is still found.
package keyring

import (
	"context"
	"slices"
	"strings"

	"credfed/consensus"
	"credfed/credit"
)

// Ring is a coordinator's pseudonym key versions (*consensus.IndexKeys).
type Ring interface {
	// Pseudonym is the subject's pseudonym under the current version.
	Pseudonym(canonicalID string) credit.Pseudonym
	// IndexPseudonyms are the pseudonyms the index may hold the subject
	// under, oldest version first, the current one last.
	IndexPseudonyms(canonicalID string) []credit.Pseudonym
	// AuditPseudonyms are the pseudonyms under every retained version,
	// oldest first: audit entries name a subject by the pseudonym of the
	// version current when they were written.
	AuditPseudonyms(canonicalID string) []credit.Pseudonym
}

// single is the ring of one key.
type single struct{ key credit.PseudonymKey }

func (s single) Pseudonym(id string) credit.Pseudonym { return s.key.Pseudonym(id) }
func (s single) IndexPseudonyms(id string) []credit.Pseudonym {
	return []credit.Pseudonym{s.key.Pseudonym(id)}
}
func (s single) AuditPseudonyms(id string) []credit.Pseudonym { return s.IndexPseudonyms(id) }

// Or returns ring if there is one, else the ring of key alone if key is a
// valid key, else nil (a node that pseudonymizes nothing itself).
func Or(ring Ring, key credit.PseudonymKey) Ring {
	if ring != nil {
		return ring
	}
	if key.Valid() {
		return single{key}
	}
	return nil
}

// LookupFunc reads one pseudonym's index entries (a service's Index).
type LookupFunc func(ctx context.Context, p credit.Pseudonym, strong bool) ([]consensus.IndexEntry, uint64, error)

// Entries reads the subject's index entries under each of ps (oldest
// version first, as IndexPseudonyms returns them) and merges them: per
// district, the entry with the highest sequence number (the district's
// latest word on the subject, whichever pseudonym it was published
// under), and of two with the same, the newer version's. The entries are
// in district order, as a read of one pseudonym returns them.
//
// A strong read is made for the first (oldest) pseudonym only: the
// replica's state only moves forward, so the reads after it see a state
// at least as recent. Reading the oldest version first also keeps a
// district that republishes between two reads from being missed: its
// group writes the new entry and withdraws the old one at once, so a read
// that misses the new entry (before the group) finds the old one before
// it, and the reverse cannot happen.
func Entries(ctx context.Context, lookup LookupFunc, ps []credit.Pseudonym, strong bool) ([]consensus.IndexEntry, uint64, error) {
	if len(ps) == 1 {
		return lookup(ctx, ps[0], strong)
	}
	var applied uint64
	best := map[string]consensus.IndexEntry{}
	var order []string
	for i, p := range ps {
		entries, at, err := lookup(ctx, p, strong && i == 0)
		if err != nil {
			return nil, 0, err
		}
		applied = max(applied, at)
		for _, e := range entries {
			have, ok := best[e.District]
			if !ok {
				order = append(order, e.District)
			}
			if !ok || e.Seq >= have.Seq {
				best[e.District] = e
			}
		}
	}
	out := make([]consensus.IndexEntry, 0, len(order))
	for _, d := range order {
		out = append(out, best[d])
	}
	slices.SortFunc(out, func(a, b consensus.IndexEntry) int { return strings.Compare(a.District, b.District) })
	return out, applied, nil
}

// readAttempts bounds Read's re-reads: each follows a key switch applied
// during the one before it, and switches are minutes apart.
const readAttempts = 4

// Read is Entries under the pseudonyms ring gives for the subject, read
// again if the ring's current version moved while the index was read. A
// replica applies a key switch before any district's republishing under
// the new version, so a read that began with the pseudonyms of the old
// versions can find the index past both: the subject withdrawn from
// under the old pseudonym and published under one it did not read. The
// ring read after the index is at least as recent as the index read (a
// replica's keyring moves no later than its state: in the apply of the
// switch, and before a restored state is installed), so when its current
// pseudonym is the one read, nothing was missed. live
// is the pseudonyms the returned entries were read under (oldest first,
// the current one last).
func Read(ctx context.Context, lookup LookupFunc, ring Ring, canonicalID string, strong bool) (live []credit.Pseudonym, entries []consensus.IndexEntry, applied uint64, err error) {
	live = ring.IndexPseudonyms(canonicalID)
	for attempt := 1; ; attempt++ {
		entries, applied, err = Entries(ctx, lookup, live, strong)
		if err != nil {
			return nil, nil, 0, err
		}
		after := ring.IndexPseudonyms(canonicalID)
		if attempt == readAttempts || len(after) == 0 || len(live) == 0 || after[len(after)-1] == live[len(live)-1] {
			return live, entries, applied, nil
		}
		live = after
	}
}

// Matches reports whether any pseudonym sent is one of own: a district
// verifying that a coordinator asks about the subject it names, when the
// two may be at different key versions for a moment (the coordinator
// sends the subject's pseudonyms under every live version; the district
// knows its own under the versions it published).
func Matches(sent, own []credit.Pseudonym) bool {
	for _, s := range sent {
		if s.IsZero() {
			continue
		}
		for _, o := range own {
			if s == o {
				return true
			}
		}
	}
	return false
}

// All returns p followed by the others that are not p (the request
// fields: the current pseudonym, then every live one).
func All(p credit.Pseudonym, others []credit.Pseudonym) []credit.Pseudonym {
	out := []credit.Pseudonym{p}
	for _, o := range others {
		if o != p {
			out = append(out, o)
		}
	}
	return out
}
