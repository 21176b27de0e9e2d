package systemtest

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"credfed/api"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
	"credfed/storage"
	"credfed/sweep"
)

func TestSweepRefreshesTheIndexAndDeletesAtRetentionEnd(t *testing.T) {
	decided := recentDecision // the decision date record() uses
	clock := clockAt(decided + 5)
	f := startFed(t, localfed.Spec{Districts: 2}, node.Options{Now: clock.Now})
	kecheng, xihu := f.Districts()[0], f.Districts()[1]
	subject := credit.SyntheticPerson(5151, credit.NewDate(1979, 8, 1))
	// An ordinary penalty (displayed a year) at one district, a serious one
	// (three years) at the other.
	for d, item := range map[string]string{kecheng: "FOOD-DRUG-PENALTY", xihu: "FOOD-SAFETY-SERIOUS"} {
		submit(t, f, d, record("SW-"+d, subject, item, "display sweep"))
	}
	waitIndexed(t, f, subject, 2)

	cat := f.Node(kecheng).Catalog()
	ordinary, _ := cat.Item("FOOD-DRUG-PENALTY")
	ends := credit.DisplayUntil(credit.Record{DecidedOn: decided}, ordinary)

	sweepAt := func(d string, want sweep.Result, when string) {
		t.Helper()
		if got, err := f.Node(d).Sweep(context.Background()); err != nil || got != want {
			t.Fatalf("%s sweep %s: %+v, %v; want %+v", d, when, got, err, want)
		}
	}
	// The day before the ordinary penalty's display ends, nothing is due.
	clock.setDay(ends - 1)
	sweepAt(kecheng, sweep.Result{}, "the day before")
	sweepAt(xihu, sweep.Result{}, "the day before")
	// On that day the district holding it queues the subject, once.
	clock.setDay(ends)
	sweepAt(kecheng, sweep.Result{Subjects: 1}, "on the day")
	sweepAt(kecheng, sweep.Result{}, "again on the day")
	sweepAt(xihu, sweep.Result{}, "on the day")

	// The index stops pointing at kecheng; xihu still holds the serious one.
	p := pseudonymOf(t, f, subject)
	wait.Until(t, 30*time.Second, "kecheng's index entry to stop holding", func() bool {
		entries, err := entriesAt(t, f, f.Province(), subject)
		if err != nil {
			return false
		}
		holds := map[string]bool{}
		for _, e := range entries {
			holds[e.District] = e.Holds()
		}
		return !holds[regionOf(f, kecheng)] && holds[regionOf(f, xihu)]
	})
	ans, err := coordinator(t, f).Lookup(ctxT(t, 30*time.Second), api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "李四", Reference: "许可〔2027〕9号"})
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if len(ans.Districts) != 1 || ans.Districts[0].District != regionOf(f, xihu) || ans.Districts[0].Status != "ok" || len(ans.Districts[0].Records) != 1 {
		t.Fatalf("lookup after the ordinary penalty's display ended: %+v", ans.Districts)
	}

	// The record stays for the subject and its collector until its
	// retention ends; then the sweep deletes it, audited first.
	dept := department(t, f, kecheng)
	if _, err := dept.Record(ctxT(t, 10*time.Second), "SW-"+kecheng); err != nil {
		t.Fatalf("the collector's read after the display ended: %v", err)
	}
	retained := credit.RetentionEnd(credit.Record{DecidedOn: decided}, ordinary)
	clock.setDay(retained - 1)
	sweepAt(kecheng, sweep.Result{}, "the day before the retention ends")
	clock.setDay(retained)
	sweepAt(kecheng, sweep.Result{Subjects: 1, Deleted: 1}, "when the retention ends")
	sweepAt(kecheng, sweep.Result{}, "again when the retention ends")
	if _, err := dept.Record(ctxT(t, 10*time.Second), "SW-"+kecheng); api.Code(err) != api.CodeNotFound {
		t.Fatalf("the collector's read after the retention ended: %v, want not_found", err)
	}
	entries, err := f.Node(kecheng).Store().Audit().BySubject(p.String())
	if err != nil {
		t.Fatal(err)
	}
	var deletion *storage.AuditEntry
	for i := range entries {
		if entries[i].Operation == "record.delete" {
			deletion = &entries[i]
		}
	}
	if deletion == nil || deletion.Reason != "retention_ended" || len(deletion.Records) != 1 || deletion.Institution != localfed.Department {
		t.Fatalf("no audited deletion at kecheng: %+v", entries)
	}
	if err := f.Node(kecheng).Store().Audit().Verify(); err != nil {
		t.Fatal(err)
	}
	// xihu's serious penalty: its display (three years) has ended by now,
	// and its retention ends with the ordinary one's if the catalog gives
	// both the same retention period.
	serious, _ := cat.Item("FOOD-SAFETY-SERIOUS")
	wantXihu := sweep.Result{Subjects: 1}
	if credit.RetentionEnd(credit.Record{DecidedOn: decided}, serious) <= retained {
		wantXihu.Deleted = 1
	}
	sweepAt(xihu, wantXihu, "when the ordinary penalty's retention ends")
	if n := f.Node(xihu).Store().CountRecords(); n != int64(1-wantXihu.Deleted) {
		t.Fatalf("xihu holds %d records, want %d", n, 1-wantXihu.Deleted)
	}
	wait.Until(t, 30*time.Second, "no district to hold the subject", func() bool {
		entries, err := entriesAt(t, f, f.Province(), subject)
		if err != nil {
			return false
		}
		for _, e := range entries {
			if e.Holds() {
				return false
			}
		}
		return true
	})
}

// TestSweepAfterACatalogDropsAnItem: a new catalog without a record's item
// triggers a rebuild of the markers, and the record is still deleted when
// the retention of the catalog it was accepted under ends.
func TestSweepAfterACatalogDropsAnItem(t *testing.T) {
	decided := recentDecision
	clock := clockAt(decided + 5)
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{Now: clock.Now})
	district := f.Districts()[0]
	dn := f.Node(district)
	subject := credit.SyntheticPerson(6161, credit.NewDate(1985, 2, 3))
	submit(t, f, district, record("DROP-1", subject, "FOOD-DRUG-PENALTY", "catalog change"))
	waitIndexed(t, f, subject, 1)
	if _, err := dn.Sweep(context.Background()); err != nil { // records the markers' catalog version
		t.Fatal(err)
	}
	v1 := dn.Catalog()
	item, _ := v1.Item("FOOD-DRUG-PENALTY")

	// Version 2 drops the item (and the classification rules naming it).
	v2 := credit.DefaultCatalog()
	v2.Version = v1.Version + 1
	v2.Items = slices.DeleteFunc(v2.Items, func(it credit.Item) bool { return it.Code == item.Code })
	v2.Rules = slices.DeleteFunc(v2.Rules, func(r credit.ClassificationRule) bool { return r.Item == item.Code })
	op := certs.Identity{Federation: f.Layout.Federation, Role: certs.Operator, Region: "zhejiang", Institution: "ops"}
	ctx, cancelApply := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelApply()
	if _, err := f.Node(f.Province()).Replica().Apply(ctx, consensus.CmdCatalogPublish, op, consensus.CatalogPublish{Catalog: v2}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the district to have catalog version 2", func() bool {
		return dn.Catalog().Version == v2.Version
	})

	// The sweep rebuilds the markers under the new catalog; nothing is due.
	if got, err := dn.Sweep(context.Background()); err != nil || got != (sweep.Result{}) {
		t.Fatalf("sweep after the new catalog: %+v, %v", got, err)
	}
	if v, err := dn.Store().DueVersion(); err != nil || v != strconv.Itoa(v2.Version) {
		t.Fatalf("markers built for catalog %q (%v), want %d", v, err, v2.Version)
	}
	// At the end of the retention of the catalog it was accepted under, the
	// record goes.
	clock.setDay(credit.RetentionEnd(credit.Record{DecidedOn: decided}, item))
	if got, err := dn.Sweep(context.Background()); err != nil || got.Deleted != 1 {
		t.Fatalf("sweep at the retention end: %+v, %v", got, err)
	}
	if n := dn.Store().CountRecords(); n != 0 {
		t.Fatalf("the district still holds %d records", n)
	}
}

// TestSweepGoesOnPastASubjectThatFails: a subject whose records cannot be
// read keeps its markers and is reported, and the others are swept.
func TestSweepGoesOnPastASubjectThatFails(t *testing.T) {
	clock := clockAt(recentDecision + 5)
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{Now: clock.Now})
	district := f.Districts()[0]
	dn := f.Node(district)
	broken := credit.SyntheticPerson(7171, credit.NewDate(1990, 6, 6))
	fine := credit.SyntheticPerson(7272, credit.NewDate(1991, 7, 7))
	submit(t, f, district, record("BRK-1", broken, "FOOD-DRUG-PENALTY", "x"), record("FIN-1", fine, "FOOD-DRUG-PENALTY", "y"))
	waitIndexed(t, f, broken, 1)
	waitIndexed(t, f, fine, 1)
	// Damage one subject: its subject index now names a missing record
	// (the sweep reads the records), and its entry's summary fields do not
	// decode (the publisher reads those, not the records).
	if err := dn.Store().Badger().Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte("s/"+broken+"\x00"+localfed.Department+"\x00BRK-1"), []byte{0xff}); err != nil {
			return err
		}
		return txn.Delete([]byte("r/" + localfed.Department + "\x00BRK-1"))
	}); err != nil {
		t.Fatal(err)
	}

	cat := dn.Catalog()
	item, _ := cat.Item("FOOD-DRUG-PENALTY")
	clock.setDay(credit.DisplayUntil(credit.Record{DecidedOn: recentDecision}, item))
	got, err := dn.Sweep(context.Background())
	if !errors.Is(err, storage.ErrCorrupt) || got.Subjects != 1 || got.Failed != 1 {
		t.Fatalf("sweep with one damaged subject: %+v, %v", got, err)
	}
	// The other subject was refreshed: its entry stops holding.
	wait.Until(t, 30*time.Second, "the sound subject's entry to stop holding", func() bool {
		entries, err := entriesAt(t, f, f.Province(), fine)
		return err == nil && len(entries) == 1 && !entries[0].Holds()
	})
	// The damaged one keeps its marker for the next sweep.
	if again, err := dn.Sweep(context.Background()); !errors.Is(err, storage.ErrCorrupt) || again.Failed != 1 || again.Subjects != 0 {
		t.Fatalf("second sweep: %+v, %v", again, err)
	}

	// Nor does it hold the outbox back: a new record of the damaged subject
	// is marked first, one of the sound subject after it, and the sound one
	// reaches the index while the damaged one stays marked.
	today := credit.TodayAt(clock.Now())
	for _, r := range []api.RecordInput{record("BRK-2", broken, "FOOD-DRUG-PENALTY", "x"), record("FIN-2", fine, "FOOD-DRUG-PENALTY", "y")} {
		r.OccurredOn, r.DecidedOn = (today - 3).String(), (today - 1).String()
		submit(t, f, district, r)
	}
	wait.Until(t, 30*time.Second, "the sound subject's new record in the index", func() bool {
		entries, err := entriesAt(t, f, f.Province(), fine)
		return err == nil && len(entries) == 1 && entries[0].Summary.Negative == 1
	})
	// The district acknowledges its outbox once the leader answered, a
	// moment after the province applied the entry.
	wait.Until(t, 30*time.Second, "the damaged subject alone in the outbox", func() bool {
		pending, err := dn.Store().PendingSubjects(0)
		return err == nil && len(pending) == 1 && pending[0].Subject == broken
	})
}
