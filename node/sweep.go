package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

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
	// Subjects is how many subjects were queued for an index refresh.
	Subjects int
	// Deleted is how many records were deleted at the end of their
	// retention period.
	Deleted int
}

// recordBoundaries is the storage hook: the day a record's display ends,
// under the node's current catalog (its retention end is chained when that
// marker is released). Records are written
// only once the catalog has replicated (intake validates against it);
// without it, or for an item it does not know, there is no marker and the
// next rebuild adds it.
func (n *Node) recordBoundaries(r credit.Record) []credit.Date {
	if n.rep == nil {
		return nil
	}
	cat := n.rep.State().Catalog()
	if cat == nil {
		return nil
	}
	it, ok := cat.Item(r.CatalogItem)
	if !ok {
		return nil
	}
	return []credit.Date{credit.DisplayUntil(r, it)}
}

// Sweep deletes the records whose retention period ended by today and
// queues for an index refresh every subject with a record whose display or
// retention period ended by today, rebuilding the due markers first if the
// catalog changed. The node runs it every sweep_interval; it is safe to
// call at any time, but not concurrently with itself.
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
		if err := n.db.RebuildDue(version); err != nil {
			return res, err
		}
		n.log.Info("sweep: due markers rebuilt", "catalog_version", cat.Version, "previous", have)
	}
	defer func() {
		if res.Subjects > 0 {
			n.metrics.sweptSubjects.Add(float64(res.Subjects))
			n.pub.Notify()
		}
		if res.Deleted > 0 {
			n.metrics.retentionDeleted.Add(float64(res.Deleted))
		}
	}()
	today := credit.TodayAt(n.now())
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		items, err := n.db.DueSubjects(today, 0)
		if err != nil || len(items) == 0 {
			return res, err
		}
		next, deleted, err := n.settle(ctx, items, cat, today)
		res.Deleted += deleted
		if err != nil {
			return res, fmt.Errorf("node: sweep: %w", err)
		}
		released, err := n.db.ReleaseDue(items, next)
		res.Subjects += released
		if err != nil {
			return res, fmt.Errorf("node: sweep: %w", err)
		}
	}
}

// settle deletes the records of the items' subjects whose retention
// period ended by today, each after its audit entry is durable (an
// unaudited deletion is worse than a late one), and returns each subject's
// next due day: the earliest display or retention end after today among
// its remaining records.
func (n *Node) settle(ctx context.Context, items []storage.DueItem, cat *credit.Catalog, today credit.Date) (next []storage.DueItem, deleted int, err error) {
	seen := map[string]bool{}
	for _, item := range items {
		if seen[item.Subject] {
			continue
		}
		seen[item.Subject] = true
		recs, err := n.db.RecordsBySubject(item.Subject)
		if err != nil {
			return nil, deleted, err
		}
		var soonest credit.Date
		for _, r := range recs {
			it, ok := cat.Item(r.CatalogItem)
			if !ok {
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
			ps, err := n.resolvePseudonyms(ctx, []string{r.Subject})
			if err != nil {
				return nil, deleted, fmt.Errorf("retention deletion waits for the subject's pseudonym (audit): %w", err)
			}
			if _, err := n.db.Audit().Append(storage.AuditEntry{At: n.now().UTC(), Node: n.cfg.Region,
				Role: string(n.cfg.Role), Operation: "record.delete", Reason: "retention_ended",
				Institution: r.Department, Subject: ps[0].String(), District: n.cfg.Region,
				Records: []string{r.Department + "/" + r.ID}, Decision: storage.DecisionAllowed}); err != nil {
				n.metrics.auditFailures.Inc()
				return nil, deleted, err
			}
			if err := n.db.DeleteRecord(r.Department, r.ID); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return nil, deleted, err
			}
			deleted++
		}
		if soonest != 0 {
			next = append(next, storage.DueItem{Day: soonest, Subject: item.Subject})
		}
	}
	return next, deleted, nil
}

// sweeper runs Sweep at start and every interval until stop closes.
func (n *Node) sweeper(interval time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		res, err := n.Sweep(ctx)
		cancel()
		if err != nil {
			n.metrics.sweeps.WithLabelValues("error").Inc()
			n.log.Warn("sweep failed; it runs again at the next interval", "error", err)
		} else {
			n.metrics.sweeps.WithLabelValues("ok").Inc()
			if res.Subjects > 0 || res.Deleted > 0 {
				n.log.Info("sweep done", "subjects_refreshed", res.Subjects, "records_deleted", res.Deleted)
			}
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}
