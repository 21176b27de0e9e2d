// Package sweep is a district's display and retention sweep: when a
// record's display period ends its subject's index entry is recomputed,
// and when its retention period ends the record is deleted, the deletion
// audited first.
package sweep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/audit"
	"credfed/credit"
	"credfed/jobs"
	"credfed/storage"
)

// The sweep (DESIGN.md §8): "a record past its display period is no longer
// shown or used; the index is updated; the history stays for the subject
// and the collector until the retention period ends, when the record is
// deleted." Neither day writes anything by itself, so every record write
// leaves a due marker for the day its display ends (storage.Options.
// Boundaries, storage/due.go). The sweep reads the markers of days up to today,
// deletes the subjects' records whose retention has ended (each deletion
// audited first), then releases the markers into the outbox together with
// a marker for each subject's next day (the next display or retention end
// among its records), and the publisher recomputes those subjects' index
// entries from what is left. One marker per record on intake, one per
// subject afterwards. A crash midway leaves the markers, and the next sweep
// does the rest.
//
// The markers depend on the catalog's periods, so the sweep first rebuilds
// them when the replicated catalog's version is not the one they were
// computed with (the first start after an upgrade, or a new catalog).

// Store is the district's records with their due markers (storage.DB).
type Store interface {
	DueVersion() (string, error)
	RebuildDue(ctx context.Context, version string) error
	DueSubjects(through credit.Date, after *storage.DueItem, limit int) ([]storage.DueItem, error)
	ReleaseDue(items, next []storage.DueItem) (int, error)
	RecordsBySubject(subject string) ([]credit.Record, error)
	DeleteRecord(department, id string) error
}

// Catalogs are the replicated catalog's versions (consensus.State).
type Catalogs interface {
	// Catalog is the current catalog, nil before it has arrived.
	Catalog() *credit.Catalog
	// CatalogVersion returns an earlier version.
	CatalogVersion(v int) (*credit.Catalog, error)
}

// Config configures a district's sweep.
type Config struct {
	// District is the district's region path.
	District string
	Store    Store
	Catalogs Catalogs
	// Periods finds the items of records (the one the store's hook
	// uses); nil builds one.
	Periods *Periods
	// Resolve returns subjects' pseudonyms (for the audit entries of
	// deletions).
	Resolve func(ctx context.Context, subjects []string) ([]credit.Pseudonym, error)
	Audit   *audit.Recorder
	// Notify wakes the publisher once subjects were queued.
	Notify func()
	// Now is the node's clock; nil is time.Now.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Sweeper sweeps one district.
type Sweeper struct {
	cfg     Config
	log     *slog.Logger
	mu      sync.Mutex // one Sweep at a time
	periods *Periods

	refreshed prometheus.Counter
	deleted   prometheus.Counter
}

// New returns a district's sweeper.
func New(cfg Config) *Sweeper {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Notify == nil {
		cfg.Notify = func() {}
	}
	if cfg.Periods == nil {
		cfg.Periods = NewPeriods(cfg.Catalogs)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sweeper{cfg: cfg, log: log, periods: cfg.Periods,
		refreshed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_sweep_subjects_refreshed_total", Help: "Subjects queued for an index refresh because a record's display or retention period ended.",
		}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_sweep_records_deleted_total", Help: "Records deleted because their retention period ended.",
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.refreshed, s.deleted)
	}
	return s
}

// JobName is the sweep's name in the job runner.
const JobName = "sweep"

// Job is the sweep as a background job, every interval.
func (s *Sweeper) Job(interval time.Duration) jobs.Job {
	return jobs.Job{Name: JobName, Interval: interval, Run: func(ctx context.Context, p *jobs.Progress) error {
		res, err := s.Sweep(ctx)
		p.Set("subjects_refreshed", int64(res.Subjects))
		p.Set("records_deleted", int64(res.Deleted))
		p.Set("subjects_failed", int64(res.Failed))
		if err == nil && (res.Subjects > 0 || res.Deleted > 0) {
			s.log.Info("sweep done", "subjects_refreshed", res.Subjects, "records_deleted", res.Deleted)
		}
		return err
	}}
}

// Result says what one sweep did.
type Result struct {
	// Subjects is how many subjects were queued for an index refresh (a
	// subject due on days released in different batches counts once per
	// batch).
	Subjects int
	// Deleted is how many records were deleted at the end of their
	// retention period.
	Deleted int
	// Failed is how many subjects could not be settled; their markers stay
	// and the next sweep tries them again.
	Failed int
}

// Periods finds the catalog item whose periods bind a record: in the
// current catalog, or, for an item a later catalog no longer has, in the
// catalog version the record was accepted under. It is also the storage
// hook that dates a record's due marker (storage.Options.Boundaries).
type Periods struct {
	catalogs Catalogs
	mu       sync.Mutex
	old      map[int]*credit.Catalog // earlier catalog versions needed so far
}

// NewPeriods returns the periods of the catalogs' records.
func NewPeriods(c Catalogs) *Periods { return &Periods{catalogs: c, old: map[int]*credit.Catalog{}} }

// Item returns the catalog item of r under cat (the current catalog) or
// under the version r was accepted with.
func (p *Periods) Item(cat *credit.Catalog, r credit.Record) (credit.Item, bool) {
	if it, ok := cat.Item(r.CatalogItem); ok {
		return it, true
	}
	if r.CatalogVersion <= 0 || r.CatalogVersion == cat.Version {
		return credit.Item{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old, ok := p.old[r.CatalogVersion]
	if !ok {
		var err error
		if old, err = p.catalogs.CatalogVersion(r.CatalogVersion); err != nil {
			return credit.Item{}, false
		}
		p.old[r.CatalogVersion] = old
	}
	return old.Item(r.CatalogItem)
}

// Boundaries is the storage hook: the day a record's display ends (its
// retention end is chained when that marker is released).
func (p *Periods) Boundaries(r credit.Record) []credit.Date {
	cat := p.catalogs.Catalog()
	if cat == nil {
		return nil // records are written only once the catalog is here
	}
	it, ok := p.Item(cat, r)
	if !ok {
		return nil
	}
	return []credit.Date{credit.DisplayUntil(r, it)}
}

// Sweep deletes the records whose retention period ended by today and
// queues for an index refresh every subject with a record whose display or
// retention period ended by today, rebuilding the due markers first if the
// catalog changed. A subject that cannot be settled (its pseudonym cannot
// be had for the audit, a read fails) keeps its markers and does not stop
// the others; the sweep then reports an error after doing the rest. The
// node runs it every sweep_interval; it may be called at any time (calls
// are serialized).
func (s *Sweeper) Sweep(ctx context.Context) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var res Result
	cat := s.cfg.Catalogs.Catalog()
	if cat == nil {
		return res, nil // nothing was written without one
	}
	version := strconv.Itoa(cat.Version)
	have, err := s.cfg.Store.DueVersion()
	if err != nil {
		return res, err
	}
	if have != version {
		// Every record gets its display end's marker again: past days
		// are released at once, and settling them chains what is next
		// under this catalog (a one-time republish of those subjects).
		if err := s.cfg.Store.RebuildDue(ctx, version); err != nil {
			return res, err
		}
		s.log.Info("sweep: due markers rebuilt", "catalog_version", cat.Version, "previous", have)
	}
	defer func() {
		if res.Subjects > 0 {
			s.refreshed.Add(float64(res.Subjects))
			s.cfg.Notify()
		}
		if res.Deleted > 0 {
			s.deleted.Add(float64(res.Deleted))
		}
	}()
	today := credit.TodayAt(s.cfg.Now())
	var after *storage.DueItem // the scan goes on past markers left in place
	var firstErr error
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		items, err := s.cfg.Store.DueSubjects(today, after, 0)
		if err != nil {
			return res, err
		}
		if len(items) == 0 {
			break
		}
		after = &items[len(items)-1]
		done, next, deleted, failed, err := s.settle(ctx, items, cat, today)
		res.Deleted += deleted
		res.Failed += failed
		if err != nil && firstErr == nil {
			firstErr = err
		}
		released, relErr := s.cfg.Store.ReleaseDue(done, next)
		res.Subjects += released
		if relErr != nil {
			return res, fmt.Errorf("sweep: %w", relErr)
		}
		if errors.Is(err, errSweepGaveUp) {
			break
		}
	}
	if firstErr != nil {
		return res, fmt.Errorf("sweep: %d subjects left for the next sweep: %w", res.Failed, firstErr)
	}
	return res, nil
}

// errSweepGaveUp: so many subjects in a row failed that the cause is
// likely not theirs (no coordinator answers for pseudonyms, the audit log
// cannot be written): the sweep stops and the next one tries again, rather
// than waiting out every remaining subject's failure.
var errSweepGaveUp = errors.New("too many subjects in a row could not be settled; the sweep stopped early")

// maxFailuresInARow is when the sweep gives up (errSweepGaveUp).
const maxFailuresInARow = 8

// settle deletes the records of the items' subjects whose retention
// period ended by today, each after its audit entry is durable (an
// unaudited deletion is worse than a late one), and returns the items it
// settled (every item of a subject that failed is left out, to stay for
// the next sweep), each settled subject's next due day (the earliest
// display or retention end after today among its remaining records), and
// the first error.
func (s *Sweeper) settle(ctx context.Context, items []storage.DueItem, cat *credit.Catalog, today credit.Date) (done, next []storage.DueItem, deleted, failed int, firstErr error) {
	outcome := map[string]bool{} // subject → settled
	inARow := 0
	for _, item := range items {
		if _, seen := outcome[item.Subject]; seen {
			continue
		}
		if inARow >= maxFailuresInARow {
			firstErr = fmt.Errorf("%w (%v)", errSweepGaveUp, firstErr)
			break // the rest stays for the next sweep
		}
		soonest, d, err := s.settleSubject(ctx, item.Subject, cat, today)
		deleted += d
		outcome[item.Subject] = err == nil
		if err != nil {
			failed++
			inARow++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		inARow = 0
		if soonest != 0 {
			next = append(next, storage.DueItem{Day: soonest, Subject: item.Subject})
		}
	}
	for _, item := range items {
		if outcome[item.Subject] {
			done = append(done, item)
		}
	}
	return done, next, deleted, failed, firstErr
}

// settleSubject deletes the subject's records past retention and returns
// the next day anything of the subject ends (0: none) and how many records
// it deleted.
func (s *Sweeper) settleSubject(ctx context.Context, subject string, cat *credit.Catalog, today credit.Date) (credit.Date, int, error) {
	recs, err := s.cfg.Store.RecordsBySubject(subject)
	if err != nil {
		return 0, 0, err
	}
	var soonest credit.Date
	var pseudonym string
	deleted := 0
	for _, r := range recs {
		it, ok := s.periods.Item(cat, r)
		if !ok {
			s.log.Warn("sweep: a record's catalog item is in no catalog this node has; it is kept",
				"catalog_item", r.CatalogItem, "catalog_version", r.CatalogVersion)
			continue
		}
		if end := credit.RetentionEnd(r, it); end > today {
			for _, d := range []credit.Date{credit.DisplayUntil(r, it), end} {
				if d > today && (soonest == 0 || d < soonest) {
					soonest = d
				}
			}
			continue
		}
		if pseudonym == "" { // once per subject, only if something is deleted
			ps, err := s.cfg.Resolve(ctx, []string{subject})
			if err != nil {
				return 0, deleted, fmt.Errorf("retention deletion waits for the subject's pseudonym (audit): %w", err)
			}
			pseudonym = ps[0].String()
		}
		if err := s.cfg.Audit.Record(storage.AuditEntry{At: s.cfg.Now(), Role: "district",
			Operation: "record.delete", Reason: "retention_ended",
			Institution: r.Department, Subject: pseudonym, District: s.cfg.District,
			Records: []string{r.Department + "/" + r.ID}, Decision: storage.DecisionAllowed}); err != nil {
			return 0, deleted, err
		}
		switch err := s.cfg.Store.DeleteRecord(r.Department, r.ID); {
		case err == nil:
			deleted++
		case !errors.Is(err, storage.ErrNotFound): // gone already: nothing to count
			return 0, deleted, err
		}
	}
	return soonest, deleted, nil
}
