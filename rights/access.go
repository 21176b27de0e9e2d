package rights

import (
	"sort"
	"strings"
	"time"

	"credfed/credit"
	"credfed/storage"
)

// Access is one lookup of the subject as the access log shows it: who asked,
// when and why, and which districts answered. A lookup is one entry however
// many districts it reached: the entries of the asking coordinator and of
// the answering districts share its lookup id.
type Access struct {
	LookupID    string    `cbor:"1,keyasint,omitempty"`
	At          time.Time `cbor:"2,keyasint"`
	Institution string    `cbor:"3,keyasint,omitempty"`
	Role        string    `cbor:"4,keyasint,omitempty"`
	User        string    `cbor:"5,keyasint,omitempty"`
	Purpose     string    `cbor:"6,keyasint,omitempty"`
	Reference   string    `cbor:"7,keyasint,omitempty"`
	// Coordinator is the region of the node that asked.
	Coordinator string `cbor:"8,keyasint,omitempty"`
	// Districts are the regions of the districts that answered, sorted.
	Districts []string `cbor:"9,keyasint,omitempty"`
	// Operation is what was done: "lookup", "check", "classification" or "report".
	Operation string `cbor:"10,keyasint,omitempty"`
}

// AccessLog is a subject's access log.
type AccessLog struct {
	Entries []Access `cbor:"1,keyasint"`
	// Delayed counts lookups whose purpose keeps them out of the log for now
	// (Purpose.AccessLogDelay); they appear once the delay has passed.
	Delayed int `cbor:"2,keyasint,omitempty"`
	// Incomplete names the nodes that could not be asked (the log may miss
	// their lookups).
	Incomplete []string `cbor:"3,keyasint,omitempty"`
}

// askingOps are the audit operations of a coordinator that looked a subject
// up; answeringOps those of a district that answered.
// A report is a read of the subject's records too (by a portal, or by
// whoever a node claims is one), so it is in the access log like a lookup.
var (
	askingOps    = map[string]string{"lookup": "lookup", "lookup.records": "lookup", "check": "check", "classification": "classification", KindReport: KindReport}
	answeringOps = map[string]string{"lookup.answer": "lookup", "check.answer": "check", "classification.answer": "classification", "report.answer": KindReport}
)

// fromAsking reads the coordinator-side entries of a subject's audit.
func fromAsking(entries []storage.AuditEntry) []Access {
	var out []Access
	for _, e := range entries {
		op, ok := askingOps[e.Operation]
		if !ok || e.Decision != storage.DecisionAllowed {
			continue
		}
		a := Access{LookupID: e.LookupID, At: e.At, Institution: e.Institution, Role: e.Role, User: e.User,
			Purpose: e.Purpose, Reference: e.Reference, Coordinator: e.Node, Operation: op}
		for _, ref := range e.Records {
			if r, err := credit.ParseRef(ref); err == nil {
				a.Districts = append(a.Districts, r.District)
			}
		}
		out = append(out, a)
	}
	return out
}

// fromAnswering reads a district's entries of the lookups it answered
// about the subject. district is the answering district's region.
func fromAnswering(entries []storage.AuditEntry, district string) []Access {
	var out []Access
	for _, e := range entries {
		op, ok := answeringOps[e.Operation]
		if !ok || e.Decision != storage.DecisionAllowed {
			continue
		}
		out = append(out, Access{LookupID: e.LookupID, At: e.At, Institution: e.Institution, Role: e.Role, User: e.User,
			Purpose: e.Purpose, Reference: e.Reference, Coordinator: callerRegion(e.Caller), Districts: []string{district}, Operation: op})
	}
	return out
}

// callerRegion is the region path of a node identity URI
// (spiffe://<federation>/<role>/<region…>), or "" if it is not one.
func callerRegion(uri string) string {
	rest, ok := strings.CutPrefix(uri, "spiffe://")
	if !ok {
		return ""
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 3 {
		return ""
	}
	return parts[2]
}

// merge joins the coordinators' and the districts' views of the lookups of
// one subject into one entry per lookup: by lookup id, the asking
// coordinator's entry first (it names the end user); a lookup only a
// district registered (its coordinator's entry is missing, or older than
// lookup ids) still appears, from the district's entry. Entries whose
// purpose delays them (delay returns the day from which a lookup made on a
// day may be shown) are counted, not shown, until that day. The result is
// newest first.
func merge(asking, answering []Access, shownFrom func(purpose string, at time.Time) time.Time, now time.Time) AccessLog {
	byID := map[string]*Access{}
	var out []*Access
	add := func(a Access) {
		if a.LookupID != "" {
			if have, ok := byID[a.LookupID]; ok && sameRequest(have, a) {
				have.Districts = append(have.Districts, a.Districts...)
				if have.User == "" {
					// The asking side's entry is missing: keep what the
					// answering side registered.
					fill(have, a)
				}
				return
			}
		}
		cp := a
		cp.Districts = append([]string(nil), a.Districts...)
		out = append(out, &cp)
		if a.LookupID != "" {
			byID[a.LookupID] = &cp
		}
	}
	for _, a := range asking {
		add(a)
	}
	for _, a := range answering {
		add(a)
	}
	var log AccessLog
	log.Entries = []Access{}
	for _, a := range out {
		if shownFrom != nil && now.Before(shownFrom(a.Purpose, a.At)) {
			log.Delayed++
			continue
		}
		a.Districts = uniqueSorted(a.Districts)
		log.Entries = append(log.Entries, *a)
	}
	sort.SliceStable(log.Entries, func(i, j int) bool {
		if !log.Entries[i].At.Equal(log.Entries[j].At) {
			return log.Entries[i].At.After(log.Entries[j].At)
		}
		return log.Entries[i].LookupID < log.Entries[j].LookupID
	})
	return log
}

// sameRequest reports whether an answering district's entry can be the
// asking entry's lookup: the same asking node, operation, purpose and
// reference. A node that reuses another lookup's id for a lookup of its
// own does not hide it in the other's entry.
func sameRequest(have *Access, a Access) bool {
	if have.Coordinator != "" && a.Coordinator != "" && have.Coordinator != a.Coordinator {
		return false
	}
	if have.Operation != a.Operation {
		return false
	}
	if have.User == "" {
		return true // the asking side's entry is missing: nothing to compare
	}
	return (a.Purpose == "" || a.Purpose == have.Purpose) && (a.Reference == "" || a.Reference == have.Reference) && (a.User == "" || a.User == have.User)
}

func fill(dst *Access, src Access) {
	if dst.Institution == "" {
		dst.Institution = src.Institution
	}
	if dst.Role == "" {
		dst.Role = src.Role
	}
	if dst.User == "" {
		dst.User = src.User
	}
	if dst.Purpose == "" {
		dst.Purpose = src.Purpose
	}
	if dst.Reference == "" {
		dst.Reference = src.Reference
	}
	if dst.Coordinator == "" {
		dst.Coordinator = src.Coordinator
	}
}

func uniqueSorted(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if v == "" || (i > 0 && v == s[i-1]) {
			continue
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// delays returns, for a catalog, when a lookup under a purpose may be shown.
func delays(cat *credit.Catalog) func(purpose string, at time.Time) time.Time {
	return func(purpose string, at time.Time) time.Time {
		if cat == nil {
			return at
		}
		p, ok := cat.Purpose(purpose)
		if !ok || p.AccessLogDelay.IsZero() {
			return at
		}
		day := p.AccessLogDelay.AddTo(credit.TodayAt(at))
		return day.Time()
	}
}
