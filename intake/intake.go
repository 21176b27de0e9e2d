// Package intake is a district's records service: departments submit
// records and corrections, validated against the catalog and written with
// their outbox entries, and read their own records back.
package intake

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/audit"
	"credfed/certs"
	"credfed/credit"
	"credfed/fault"
	"credfed/storage"
)

// MaxRecordsPerRequest bounds one submission.
const MaxRecordsPerRequest = 10000

// Store is where a district keeps its records (storage.DB implements it).
type Store interface {
	// SubmitRecords writes the records and their outbox entries durably.
	SubmitRecords(recs []credit.Record) ([]storage.Outcome, error)
	// Record returns the latest version of (department, id):
	// storage.ErrNotFound if none, storage.ErrInvalidRecord for a
	// malformed department or id.
	Record(department, id string) (credit.Record, error)
	// Versions returns the older versions of (department, id).
	Versions(department, id string) ([]credit.Record, error)
	// UpdateRecord writes a new version: storage.ErrConflict if the
	// record changed meanwhile.
	UpdateRecord(next credit.Record) error
	// RecordPage returns a page of one department's latest versions, in
	// id order: a *storage.QueryError for a query refused as given.
	RecordPage(q storage.RecordQuery) (storage.RecordPage, error)
}

// Config configures the service of one district node.
type Config struct {
	// Self is the node's identity (a district).
	Self  certs.Identity
	Store Store
	// Catalog is the replicated catalog, nil before it has arrived.
	Catalog func() *credit.Catalog
	// Identifiers are the federation's identifier rules (test mode).
	Identifiers credit.ParseOptions
	// Now is the clock of record dates; nil is time.Now.
	Now func() time.Time
	// Notify is called after records were written (the publisher wakes).
	Notify func()
	// Audit registers every record change (ids, never content) before it
	// is answered; nil registers nothing (tests of the rules alone).
	Audit      *audit.Recorder
	Registerer prometheus.Registerer
}

// Service is a district's records service.
type Service struct {
	cfg       Config
	submitted *prometheus.CounterVec
}

// New returns the records service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Notify == nil {
		cfg.Notify = func() {}
	}
	s := &Service{cfg: cfg, submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "credfed_records_submitted_total", Help: "Submitted records by outcome (accepted, duplicate, rejected).",
	}, []string{"outcome"})}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.submitted)
	}
	return s
}

// Status is the fate of one submitted record.
type Status string

// Statuses.
const (
	Accepted  Status = "accepted"
	Duplicate Status = "duplicate"
	Rejected  Status = "rejected"
)

// Submission is one record as submitted. Record holds the submitter's
// fields; Department and District are what the submitter named, if
// anything (they must repeat the certificate's). Err, if set, is why the
// edge could not read the item: it is answered rejected with that error.
type Submission struct {
	Record               credit.Record
	Department, District string
	Err                  error
}

// Result is the fate of one submission: Err is a *fault.Error when
// rejected.
type Result struct {
	ID     string
	Status Status
	Err    error
}

// Submit validates and writes records of the calling department. Every
// submission is answered; the answer returns only once the accepted ones
// are durable (synced) together with their outbox entries. An error is
// returned only when nothing could be decided (no catalog, a failed
// write); a refused record is a Result.
func (s *Service) Submit(ctx context.Context, caller certs.Identity, subs []Submission) ([]Result, error) {
	if err := s.collector(caller); err != nil {
		return nil, err
	}
	cat, err := s.catalog()
	if err != nil {
		return nil, err
	}
	if len(subs) > MaxRecordsPerRequest {
		return nil, fault.New(fault.BadRequest, "at most %d records per request", MaxRecordsPerRequest)
	}
	results := make([]Result, len(subs))
	var accepted []credit.Record
	var acceptedAt []int
	now := s.cfg.Now()
	opt := s.parseOptions()
	for i, sub := range subs {
		res := &results[i]
		res.ID = sub.Record.ID
		err := sub.Err
		if err == nil {
			err = s.checkCollector(sub, caller)
		}
		rec := sub.Record
		if err == nil {
			rec.Department, rec.District = caller.Institution, s.cfg.Self.Region
			rec, err = cat.Accept(rec, now, opt)
			err = refusal(err)
		}
		if err != nil {
			res.Status, res.Err = Rejected, err
			continue
		}
		accepted = append(accepted, rec)
		acceptedAt = append(acceptedAt, i)
	}
	if len(accepted) > 0 {
		outcomes, err := s.cfg.Store.SubmitRecords(accepted)
		if err != nil {
			return nil, err
		}
		var written []string
		for k, o := range outcomes {
			if o == storage.Accepted {
				written = append(written, accepted[k].Department+"/"+accepted[k].ID)
			}
		}
		if err := s.auditChange(caller, "record.submit", written); err != nil {
			return nil, err
		}
		for k, o := range outcomes {
			res := &results[acceptedAt[k]]
			switch o {
			case storage.Accepted:
				res.Status = Accepted
			case storage.Duplicate:
				res.Status = Duplicate
			default:
				res.Status = Rejected
				res.Err = fault.Field(fault.Conflict, "id", "record %q was submitted before with other content; send a correction instead", accepted[k].ID)
			}
		}
		s.cfg.Notify()
	}
	for _, res := range results {
		s.submitted.WithLabelValues(string(res.Status)).Inc()
	}
	return results, nil
}

// Record returns one of the calling department's records and its older
// versions.
func (s *Service) Record(ctx context.Context, caller certs.Identity, id string) (credit.Record, []credit.Record, error) {
	if err := s.collector(caller); err != nil {
		return credit.Record{}, nil, err
	}
	if len(id) > credit.MaxRecordIDLength {
		return credit.Record{}, nil, fault.Field(fault.BadRequest, "id", "a record id has at most %d bytes", credit.MaxRecordIDLength)
	}
	rec, err := s.cfg.Store.Record(caller.Institution, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return rec, nil, fault.New(fault.NotFound, "no record %q of %s", id, caller.Institution)
	case errors.Is(err, storage.ErrInvalidRecord):
		return rec, nil, fault.New(fault.BadRequest, "the record id is malformed")
	case err != nil:
		return rec, nil, err
	}
	versions, err := s.cfg.Store.Versions(caller.Institution, id)
	if err != nil {
		return rec, nil, err
	}
	return rec, versions, nil
}

// Page sizes of Records.
const (
	DefaultRecordLimit = storage.DefaultRecordLimit
	MaxRecordLimit     = storage.MaxRecordLimit
)

// RecordQuery selects a page of the calling department's records. Zero
// fields select everything.
type RecordQuery struct {
	// CatalogItem and Status must equal the record's when set.
	CatalogItem, Status string
	// After is the cursor: the records whose id sorts after it (the last
	// id of the previous page, or its Next).
	After string
	// Limit is the most records of the page, 1 to MaxRecordLimit; 0 is
	// DefaultRecordLimit.
	Limit int
}

// RecordPage is a page of a department's records.
type RecordPage struct {
	// Records are latest versions, in id order.
	Records []credit.Record
	// Next is the After of the next page, empty after the last. A page
	// may be short (even empty) and still have a Next: a page examines a
	// bounded number of records.
	Next string
}

// recordQueryFields names the storage query's fields as the API does.
var recordQueryFields = map[string]string{"catalog_item": "item", "status": "status", "after": "after", "limit": "limit"}

// Records returns a page of the calling department's records: only its
// own, whatever the query asks (the department is the certificate's).
func (s *Service) Records(ctx context.Context, caller certs.Identity, q RecordQuery) (RecordPage, error) {
	if err := s.collector(caller); err != nil {
		return RecordPage{}, err
	}
	if len(q.After) > credit.MaxRecordIDLength {
		return RecordPage{}, fault.Field(fault.BadRequest, "after", "is a record id, at most %d bytes", credit.MaxRecordIDLength)
	}
	page, err := s.cfg.Store.RecordPage(storage.RecordQuery{Department: caller.Institution,
		CatalogItem: q.CatalogItem, Status: credit.Status(q.Status), After: q.After, Limit: q.Limit})
	var qe *storage.QueryError
	if errors.As(err, &qe) {
		field, ok := recordQueryFields[qe.Field]
		if !ok {
			// The department comes from the certificate: not the caller's
			// query.
			return RecordPage{}, fault.New(fault.Forbidden, "the client certificate names no department records can be kept for")
		}
		return RecordPage{}, fault.Field(fault.BadRequest, field, "%s", qe.Reason)
	}
	if err != nil {
		return RecordPage{}, err
	}
	return RecordPage{Records: page.Records, Next: page.Next}, nil
}

// Correct writes a new version of one of the calling department's records
// and returns it.
func (s *Service) Correct(ctx context.Context, caller certs.Identity, id string, c credit.Correction, reason string) (credit.Record, error) {
	if err := s.collector(caller); err != nil {
		return credit.Record{}, err
	}
	cat, err := s.catalog()
	if err != nil {
		return credit.Record{}, err
	}
	prev, err := s.cfg.Store.Record(caller.Institution, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return prev, fault.New(fault.NotFound, "no record %q of %s", id, caller.Institution)
	case errors.Is(err, storage.ErrInvalidRecord):
		return prev, fault.New(fault.BadRequest, "the record id is malformed")
	case err != nil:
		return prev, err
	}
	next, err := cat.Correct(prev, c, reason, s.cfg.Now(), s.parseOptions())
	if err != nil {
		return prev, refusal(err)
	}
	if err := s.cfg.Store.UpdateRecord(next); errors.Is(err, storage.ErrConflict) {
		return prev, fault.New(fault.Conflict, "record %q changed meanwhile; read it again and resend the correction", id)
	} else if err != nil {
		return prev, err
	}
	if err := s.auditChange(caller, "record.correct", []string{next.Department + "/" + next.ID}); err != nil {
		return prev, err
	}
	s.cfg.Notify()
	return next, nil
}

// collector refuses a caller who may not act on this node's records: a
// department of another district, or any caller of a node that keeps no
// records.
func (s *Service) collector(caller certs.Identity) error {
	self := s.cfg.Self
	switch {
	case self.Role != certs.District:
		return fault.New(fault.Forbidden, "records are kept by district nodes; this is a %s node", self.Role)
	case caller.Role != certs.Department:
		return fault.New(fault.Forbidden, "records are submitted and read by the departments that collect them, not by a %s", caller.Role)
	case caller.Region != self.Region:
		return fault.New(fault.Forbidden, "a %s of %s may not act on the node of %s", caller.Role, caller.Region, self.Region)
	}
	return nil
}

// checkCollector refuses a submission that names a collector other than
// the certificate's: whoever collects a record is responsible for it. The
// refusal names the certificate's department and the node's district,
// never what the submission named (a caller may have put an identifier
// there).
func (s *Service) checkCollector(sub Submission, caller certs.Identity) error {
	if sub.Department != "" && sub.Department != caller.Institution {
		return fault.Field(fault.Forbidden, "department", "the department is %s, from the client certificate; a record cannot be submitted in the name of another", caller.Institution)
	}
	if sub.District != "" && sub.District != s.cfg.Self.Region {
		return fault.Field(fault.Forbidden, "district", "this node keeps the records of %s, not of another district", s.cfg.Self.Region)
	}
	return nil
}

func (s *Service) catalog() (*credit.Catalog, error) {
	if c := s.cfg.Catalog(); c != nil {
		return c, nil
	}
	return nil, fault.New(fault.Unavailable, "this node has not received the federation's catalog yet")
}

func (s *Service) parseOptions() credit.ParseOptions {
	opt := s.cfg.Identifiers
	opt.Today = credit.TodayAt(s.cfg.Now())
	return opt
}

// refusal turns credit's validation errors, whose messages are built to be
// shown (no identifier, no content), into refusals.
func refusal(err error) error {
	if err == nil {
		return nil
	}
	var fe *credit.FieldError
	if errors.As(err, &fe) {
		kind := fault.BadRequest
		switch fe.Code {
		case credit.CodeInvalidIdentifier:
			kind = fault.InvalidIdentifier
		case credit.CodeUnknownCatalogItem:
			kind = fault.UnknownCatalogItem
		}
		return &fault.Error{Kind: kind, Field: fe.Field, Message: fe.Message, Cause: err}
	}
	return fault.Wrap(fault.BadRequest, err, "record refused")
}

// auditBatch bounds the record ids of one audit entry.
const auditBatch = 4096

// auditChange registers records written by a department: one entry per
// auditBatch ids. The records are durable already; the answer waits for
// the entries (a failure is answered unavailable, and a resubmission is a
// duplicate that is registered again).
func (s *Service) auditChange(caller certs.Identity, operation string, ids []string) error {
	if s.cfg.Audit == nil || len(ids) == 0 {
		return nil
	}
	var entries []storage.AuditEntry
	for len(ids) > 0 {
		n := min(len(ids), auditBatch)
		e := audit.By(caller, operation)
		e.District, e.Records, e.Count, e.Decision = s.cfg.Self.Region, ids[:n], n, storage.DecisionAllowed
		entries = append(entries, e)
		ids = ids[n:]
	}
	return s.cfg.Audit.Record(entries[0], entries[1:]...)
}
