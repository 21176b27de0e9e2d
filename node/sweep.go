package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"credfed/credit"
	"credfed/storage"
)

// The sweep (DESIGN.md §8): "a record past its display period is no longer
// shown or used; the index is updated; the history stays for the subject
// and the collector until the retention period ends, when the record is
// deleted." Neither day writes anything by itself, so every record write
// leaves a due marker for the day its display ends (storage.Options.
// Boundaries, due.go). The sweep reads the markers of days up to today,
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

// SweepResult says what one sweep did.
type SweepResult struct {
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

// itemOf returns the catalog item of a record: from the current catalog,
// or, for an item a later catalog no longer has, from the catalog version
// the record was accepted under (its periods still bind the record).
func (n *Node) itemOf(cat *credit.Catalog, r credit.Record) (credit.Item, bool) {
	if it, ok := cat.Item(r.CatalogItem); ok {
		return it, true
	}
	if r.CatalogVersion <= 0 || r.CatalogVersion == cat.Version {
		return credit.Item{}, false
	}
	n.oldCatalogsMu.Lock()
	defer n.oldCatalogsMu.Unlock()
	old, ok := n.oldCatalogs[r.CatalogVersion]
	if !ok {
		var err error
		if old, err = n.rep.State().CatalogVersion(r.CatalogVersion); err != nil {
			return credit.Item{}, false
		}
		if n.oldCatalogs == nil {
			n.oldCatalogs = map[int]*credit.Catalog{}
		}
		n.oldCatalogs[r.CatalogVersion] = old
	}
	return old.Item(r.CatalogItem)
}

// recordBoundaries is the storage hook: the day a record's display ends
// (its retention end is chained when that marker is released).
func (n *Node) recordBoundaries(r credit.Record) []credit.Date {
	if n.rep == nil {
		return nil
	}
	cat := n.rep.State().Catalog()
	if cat == nil {
		return nil // records are written only once the catalog is here
	}
	it, ok := n.itemOf(cat, r)
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
func (n *Node) Sweep(ctx context.Context) (SweepResult, error) {
	n.sweepMu.Lock()
	defer n.sweepMu.Unlock()
	var res SweepResult
	if n.pub == nil {
		return res, nil // coordinators hold no records
	}
	cat := n.rep.State().Catalog()
	if cat == nil {
		return res, nil // nothing was written without one
	}
	version := strconv.Itoa(cat.Version)
	have, err := n.db.DueVersion()
	if err != nil {
		return res, err
	}
	if have != version {
		// Every record gets its display end's marker again: past days
		// are released at once, and settling them chains what is next
		// under this catalog (a one-time republish of those subjects).
		if err := n.db.RebuildDue(ctx, version); err != nil {
			return res, err
		}
		n.log.Info("sweep: due markers rebuilt", "catalog_version", cat.Version, "previous", have)
	}
	defer func() {
		if res.Subjects > 0 {
			n.metrics.sweptSubjects.Add(float64(res.Subjects))
			n.notifyPublisher()
		}
		if res.Deleted > 0 {
			n.metrics.retentionDeleted.Add(float64(res.Deleted))
		}
	}()
	today := credit.TodayAt(n.now())
	var after *storage.DueItem // the scan goes on past markers left in place
	var firstErr error
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		items, err := n.db.DueSubjects(today, after, 0)
		if err != nil {
			return res, err
		}
		if len(items) == 0 {
			break
		}
		after = &items[len(items)-1]
		done, next, deleted, failed, err := n.settle(ctx, items, cat, today)
		res.Deleted += deleted
		res.Failed += failed
		if err != nil && firstErr == nil {
			firstErr = err
		}
		released, relErr := n.db.ReleaseDue(done, next)
		res.Subjects += released
		if relErr != nil {
			return res, fmt.Errorf("node: sweep: %w", relErr)
		}
		if errors.Is(err, errSweepGaveUp) {
			break
		}
	}
	if firstErr != nil {
		return res, fmt.Errorf("node: sweep: %d subjects left for the next sweep: %w", res.Failed, firstErr)
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
func (n *Node) settle(ctx context.Context, items []storage.DueItem, cat *credit.Catalog, today credit.Date) (done, next []storage.DueItem, deleted, failed int, firstErr error) {
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
		soonest, d, err := n.settleSubject(ctx, item.Subject, cat, today)
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
func (n *Node) settleSubject(ctx context.Context, subject string, cat *credit.Catalog, today credit.Date) (credit.Date, int, error) {
	recs, err := n.db.RecordsBySubject(subject)
	if err != nil {
		return 0, 0, err
	}
	var soonest credit.Date
	var pseudonym string
	deleted := 0
	for _, r := range recs {
		it, ok := n.itemOf(cat, r)
		if !ok {
			n.log.Warn("sweep: a record's catalog item is in no catalog this node has; it is kept",
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
			ps, err := n.resolvePseudonyms(ctx, []string{subject})
			if err != nil {
				return 0, deleted, fmt.Errorf("retention deletion waits for the subject's pseudonym (audit): %w", err)
			}
			pseudonym = ps[0].String()
		}
		if _, err := n.db.Audit().Append(storage.AuditEntry{At: n.now().UTC(), Node: n.cfg.Region,
			Role: string(n.cfg.Role), Operation: "record.delete", Reason: "retention_ended",
			Institution: r.Department, Subject: pseudonym, District: n.cfg.Region,
			Records: []string{r.Department + "/" + r.ID}, Decision: storage.DecisionAllowed}); err != nil {
			n.metrics.auditFailures.Inc()
			return 0, deleted, err
		}
		switch err := n.db.DeleteRecord(r.Department, r.ID); {
		case err == nil:
			deleted++
		case !errors.Is(err, storage.ErrNotFound): // gone already: nothing to count
			return 0, deleted, err
		}
	}
	return soonest, deleted, nil
}
