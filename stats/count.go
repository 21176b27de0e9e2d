package stats

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"credfed/certs"
	"credfed/credit"
	"credfed/exchange"
	"credfed/storage"
)

// wireVersion is the version of the wire bodies below.
const wireVersion = 1

// Wire bodies. A district's counts are exact: they travel to a coordinator
// node over mutual TLS and are suppressed there, on the merged tables,
// before anything leaves it.
type countsRequest struct {
	Version int `cbor:"1,keyasint"`
}

type categoryCount struct {
	Domain   string          `cbor:"1,keyasint"`
	Polarity credit.Polarity `cbor:"2,keyasint"`
	Severity credit.Severity `cbor:"3,keyasint"`
	Count    int64           `cbor:"4,keyasint"`
}

type caseCounts struct {
	Open     int64 `cbor:"1,keyasint"`
	Resolved int64 `cbor:"2,keyasint"`
	Overdue  int64 `cbor:"3,keyasint"`
	// Ages splits Open by the days since filing (AgeBuckets); empty from
	// a district that does not count them yet.
	Ages []int64 `cbor:"4,keyasint,omitempty"`
}

// AgeBuckets are the open cases' ages, in days since filing: up to 5,
// 6–15, 16–30, over 30 (the last bound of each, the last open).
var AgeBuckets = [...]int{5, 15, 30}

// ageBucket is the bucket of an age in days.
func ageBucket(days int) int {
	for i, b := range AgeBuckets {
		if days <= b {
			return i
		}
	}
	return len(AgeBuckets)
}

type departmentCount struct {
	Department string `cbor:"1,keyasint"`
	Late       int64  `cbor:"2,keyasint"`
}

type countsReply struct {
	Records     []categoryCount   `cbor:"1,keyasint"`
	Objections  caseCounts        `cbor:"2,keyasint"`
	Repairs     caseCounts        `cbor:"3,keyasint"`
	Departments []departmentCount `cbor:"4,keyasint"`
}

type auditRequest struct {
	Version int `cbor:"1,keyasint"`
}

// usageCount is how many lookups or checks one institution made under one
// purpose.
type usageCount struct {
	Operation   string `cbor:"1,keyasint"`
	Region      string `cbor:"2,keyasint"`
	Institution string `cbor:"3,keyasint"`
	Purpose     string `cbor:"4,keyasint"`
	Count       int64  `cbor:"5,keyasint"`
	// Node is the coordinator node whose audit log counted the use, set
	// by the merging node from the source it asked (never taken from the
	// wire): rows are kept per node so that a node's published counts
	// cannot be subtracted from another's to give back a small one.
	Node string `cbor:"-"`
}

type auditReply struct {
	Usage []usageCount `cbor:"1,keyasint"`
	// From is the time of the oldest entry counted; Complete says the
	// whole log was.
	From     time.Time `cbor:"2,keyasint"`
	Complete bool      `cbor:"3,keyasint"`
}

// serveCounts is a district's side: its exact counts, for a coordinator
// node above it. Not audited: no subject is read or sent (the request is
// audited once, at the coordinator node that was asked); it is counted.
func (s *Service) serveCounts(ctx context.Context, req *exchange.Request) (any, error) {
	var in countsRequest
	if err := req.Decode(&in); err != nil {
		s.answered.WithLabelValues(OpCounts, "denied").Inc()
		return nil, err
	}
	if !certs.InRegion(s.cfg.Self.Region, req.Caller.Region) {
		s.answered.WithLabelValues(OpCounts, "denied").Inc()
		return nil, exchange.Errorf(exchange.CodeForbidden, "statistics of a district are asked by the coordinator nodes above it")
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		s.answered.WithLabelValues(OpCounts, "failed").Inc()
		return nil, exchange.Errorf(exchange.CodeUnavailable, "catalog not replicated yet")
	}
	release, err := s.scan(ctx)
	if err != nil {
		s.answered.WithLabelValues(OpCounts, "failed").Inc()
		return nil, exchange.Errorf(exchange.CodeUnavailable, "this district is busy counting; ask again shortly")
	}
	defer release()
	out, err := countDistrict(ctx, s.cfg.Records, cat, s.cfg.Calendar, credit.TodayAt(s.cfg.Now()))
	if err != nil {
		s.answered.WithLabelValues(OpCounts, "failed").Inc()
		s.log.Warn("statistics: the records could not be counted", "error_type", errorType(err))
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "the records were not counted in time")
		}
		return nil, exchange.Errorf(exchange.CodeInternal, "records unavailable")
	}
	s.answered.WithLabelValues(OpCounts, "allowed").Inc()
	return out, nil
}

// countDistrict counts a district's records and cases. Maps are bounded:
// categories by maxCategories, departments by maxDepartments (then
// Other).
func countDistrict(ctx context.Context, recs Records, cat *credit.Catalog, cal *credit.Calendar, today credit.Date) (countsReply, error) {
	type key struct {
		domain   string
		polarity credit.Polarity
		severity credit.Severity
	}
	cats := map[key]int64{}
	deps := map[string]int64{}
	n := 0
	err := recs.EachRecordFacts(func(f storage.RecordFacts) error {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		k := key{domain: Other, polarity: f.Polarity, severity: f.Severity}
		if it, ok := cat.Item(f.CatalogItem); ok {
			k.domain = it.Domain
		}
		if _, ok := cats[k]; !ok && len(cats) >= maxCategories-1 {
			k = key{domain: Other}
		}
		cats[k]++
		d := f.Department
		if _, ok := deps[d]; !ok && len(deps) >= maxDepartments-1 {
			d = Other
		}
		late := int64(0)
		if !f.FirstRecordedAt.IsZero() && credit.TodayAt(f.FirstRecordedAt) > cal.AddWorkingDays(f.DecidedOn, LateAfter) {
			late = 1
		}
		deps[d] += late
		return nil
	})
	if err != nil {
		return countsReply{}, err
	}
	out := countsReply{Records: make([]categoryCount, 0, len(cats)), Departments: make([]departmentCount, 0, len(deps))}
	for k, v := range cats {
		out.Records = append(out.Records, categoryCount{Domain: k.domain, Polarity: k.polarity, Severity: k.severity, Count: v})
	}
	for d, v := range deps {
		out.Departments = append(out.Departments, departmentCount{Department: d, Late: v})
	}
	for _, kind := range []string{storage.CaseObjection, storage.CaseRepair} {
		c := caseCounts{Ages: make([]int64, len(AgeBuckets)+1)}
		_, err := recs.Cases(kind, 1, func(sc storage.Case) bool {
			switch sc.State {
			case storage.CaseOpen:
				c.Open++
				c.Ages[ageBucket(int(today-credit.TodayAt(sc.FiledAt)))]++
				if sc.Deadline != 0 && today > sc.Deadline {
					c.Overdue++
				}
			case storage.CaseDecided:
				c.Resolved++
			}
			return false // counted, not kept
		})
		if err != nil {
			return countsReply{}, err
		}
		if kind == storage.CaseObjection {
			out.Objections = c
		} else {
			out.Repairs = c
		}
	}
	return out, nil
}

// serveAudit is a city's side: the lookups and checks its coordinators
// made, for its province. Not audited, like serveCounts.
func (s *Service) serveAudit(ctx context.Context, req *exchange.Request) (any, error) {
	var in auditRequest
	if err := req.Decode(&in); err != nil {
		s.answered.WithLabelValues(OpAudit, "denied").Inc()
		return nil, err
	}
	if !certs.InRegion(s.cfg.Self.Region, req.Caller.Region) {
		s.answered.WithLabelValues(OpAudit, "denied").Inc()
		return nil, exchange.Errorf(exchange.CodeForbidden, "statistics of a city are asked by its province")
	}
	cat := s.cfg.Catalog()
	if cat == nil {
		s.answered.WithLabelValues(OpAudit, "failed").Inc()
		return nil, exchange.Errorf(exchange.CodeUnavailable, "catalog not replicated yet")
	}
	out, err := s.countAudit(ctx, cat)
	if err != nil {
		s.answered.WithLabelValues(OpAudit, "failed").Inc()
		s.log.Warn("statistics: the audit log could not be counted", "error_type", errorType(err))
		return nil, exchange.Errorf(exchange.CodeUnavailable, "the audit log could not be counted")
	}
	s.answered.WithLabelValues(OpAudit, "allowed").Inc()
	return out, nil
}

// errStop ends an audit walk early.
var errStop = errors.New("stop")

// countAudit counts the lookups and checks this node made (allowed ones:
// the asking node's entry) in the newest AuditScan entries of its log, by
// operation, the caller's region and institution, and purpose.
// Institutions beyond maxInstitutions, and purposes the catalog does not
// have, are counted in Other.
func (s *Service) countAudit(ctx context.Context, cat *credit.Catalog) (auditReply, error) {
	release, err := s.scan(ctx)
	if err != nil {
		return auditReply{}, err
	}
	defer release()
	head, _ := s.cfg.AuditLog.Head()
	from := uint64(1)
	out := auditReply{Complete: true}
	if head > s.cfg.AuditScan {
		from, out.Complete = head-s.cfg.AuditScan+1, false
	}
	type key struct{ op, region, inst, purpose string }
	counts := map[key]int64{}     // bounded: operations × (maxInstitutions+1) × (purposes+1)
	insts := map[[2]string]bool{} // bounded by maxInstitutions
	n := 0
	first := true
	err = s.cfg.AuditLog.Range(from, head, func(e storage.AuditEntry) error {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if first {
			out.From, first = e.At.UTC(), false
		}
		if e.Seq > head {
			return errStop
		}
		if (e.Operation != OperationLookup && e.Operation != OperationCheck) || e.Decision != storage.DecisionAllowed {
			return nil
		}
		region, inst := "", e.Institution
		if id, err := certs.ParseIdentity(e.Caller); err == nil {
			region = id.Region
		}
		if !insts[[2]string{region, inst}] {
			if len(insts) >= maxInstitutions {
				region, inst = "", Other
			} else {
				insts[[2]string{region, inst}] = true
			}
		}
		purpose := e.Purpose
		if _, ok := cat.Purpose(purpose); !ok {
			purpose = Other
		}
		counts[key{e.Operation, region, inst, purpose}]++
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return auditReply{}, err
	}
	for k, v := range counts {
		out.Usage = append(out.Usage, usageCount{Operation: k.op, Region: k.region, Institution: k.inst, Purpose: k.purpose, Count: v})
	}
	return out, nil
}

// badCounts says what is wrong with a district's counts ("" if nothing).
func badCounts(r *countsReply) string {
	if len(r.Records) > maxCategories || len(r.Departments) > maxDepartments {
		return "more categories or departments than a district sends"
	}
	for _, c := range r.Records {
		if !goodCount(c.Count) || !goodLabel(c.Domain) || !goodLabel(string(c.Polarity)) || !goodLabel(string(c.Severity)) {
			return "a malformed category count"
		}
	}
	seen := map[string]bool{} // bounded by maxDepartments
	for _, d := range r.Departments {
		if !goodCount(d.Late) || !goodLabel(d.Department) || d.Department == "" || seen[d.Department] {
			return "a malformed department count"
		}
		seen[d.Department] = true
	}
	for _, c := range []caseCounts{r.Objections, r.Repairs} {
		if !goodCount(c.Open) || !goodCount(c.Resolved) || !goodCount(c.Overdue) || c.Overdue > c.Open {
			return "malformed case counts"
		}
		if len(c.Ages) != 0 {
			var sum int64
			for _, a := range c.Ages {
				if !goodCount(a) {
					return "malformed case ages"
				}
				sum += a
			}
			if len(c.Ages) != len(AgeBuckets)+1 || sum != c.Open {
				return "malformed case ages"
			}
		}
	}
	return ""
}

// badAudit says what is wrong with a city's counts ("" if nothing): a
// city counts the lookups of its own coordinators only.
func badAudit(r *auditReply, city string) string {
	if len(r.Usage) > 2*(maxInstitutions+1)*(maxColumns+1) {
		return "more counts than a city sends"
	}
	for _, u := range r.Usage {
		if (u.Operation != OperationLookup && u.Operation != OperationCheck) || !goodCount(u.Count) ||
			!goodLabel(u.Region) || !goodLabel(u.Institution) || !goodLabel(u.Purpose) {
			return "a malformed usage count"
		}
		if u.Region != "" && !certs.InRegion(u.Region, city) {
			return "lookups of another region's coordinators"
		}
	}
	return ""
}

func goodCount(v int64) bool { return v >= 0 && v <= maxCount }

func goodLabel(s string) bool { return len(s) <= maxLabel && utf8.ValidString(s) }
