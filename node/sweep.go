package node

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"credfed/credit"
)

// The display sweep (DESIGN.md §8: "a record past its display period is no
// longer shown or used; the index is updated"). A district's index entry
// for a subject is a summary of the records displayed on the day it was
// computed; when the last of them stops being displayed, nothing is
// written, yet the entry must change. Every record write leaves a due
// marker for the day its display ends (storage.Options.Boundaries); the
// sweep releases the markers of days up to today into the outbox, and the
// publisher recomputes those subjects' summaries from their records.
//
// The markers depend on the catalog's display periods, so the sweep first
// rebuilds them when the replicated catalog's version is not the one they
// were computed with (the first start after an upgrade, or a new catalog).

// displayBoundaries is the storage hook: the day a record's display ends,
// under the node's current catalog. Records are written only once the
// catalog has replicated (intake validates against it); without it, or for
// an item it does not know, there is no marker and the next rebuild adds it.
func (n *Node) displayBoundaries(r credit.Record) []credit.Date {
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

// SweepDisplay queues for an index refresh every subject with a record
// whose display period ended by today, rebuilding the due markers first if
// the catalog changed, and returns how many subjects it queued. The node
// runs it every sweep_interval; it is safe to call at any time.
func (n *Node) SweepDisplay(ctx context.Context) (int, error) {
	if n.pub == nil {
		return 0, nil // coordinators hold no records
	}
	cat := n.rep.State().Catalog()
	if cat == nil {
		return 0, nil // nothing was written without one
	}
	version := strconv.Itoa(cat.Version)
	have, err := n.db.DueVersion()
	if err != nil {
		return 0, err
	}
	if have != version {
		if err := n.db.RebuildDue(version); err != nil {
			return 0, err
		}
		n.log.Info("display sweep: due markers rebuilt", "catalog_version", cat.Version, "previous", have)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	count, err := n.db.ReleaseDue(credit.TodayAt(n.now()))
	if count > 0 {
		n.metrics.sweptSubjects.Add(float64(count))
		n.pub.Notify()
	}
	if err != nil {
		return count, fmt.Errorf("node: display sweep: %w", err)
	}
	return count, nil
}

// sweeper runs SweepDisplay at start and every interval until stop closes.
func (n *Node) sweeper(interval time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		count, err := n.SweepDisplay(ctx)
		cancel()
		if err != nil {
			n.metrics.sweeps.WithLabelValues("error").Inc()
			n.log.Warn("display sweep failed; it runs again at the next interval", "error", err)
		} else {
			n.metrics.sweeps.WithLabelValues("ok").Inc()
			if count > 0 {
				n.log.Info("display sweep: index entries queued for refresh", "subjects", count)
			}
		}
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}
