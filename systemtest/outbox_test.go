package systemtest

import (
	"fmt"
	"testing"
	"time"

	"credfed/api"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
)

// TestOutboxAcceptedWithoutLeaderReachesIndex: a district accepts records
// (each with its subject's outbox marker in one synced write) while the
// federation has no Raft leader — the province and one city down, two of
// three voters. Its publisher cannot drain, says so in the district's job
// status, and the records stay acknowledged and pending. Once the voters
// are back, every subject reaches the index with the summary the district
// computes from its records, and the outbox empties.
func TestOutboxAcceptedWithoutLeaderReachesIndex(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	district := f.Districts()[0]
	// kecheng asks quzhou, its city, for pseudonyms: it stays up. The
	// province and the other city go.
	for _, name := range []string{f.Province(), "hangzhou"} {
		if err := f.StopNode(ctxT(t, 30*time.Second), name); err != nil {
			t.Fatal(err)
		}
	}
	wait.Until(t, 30*time.Second, "no node to know a leader", func() bool {
		for _, name := range []string{"quzhou", district} {
			if _, addr := f.Node(name).Replica().Leader(); addr != "" {
				return false
			}
		}
		return true
	})
	birth := credit.NewDate(1980, time.May, 4)
	const subjects = 40
	subject := func(i int) string { return credit.SyntheticPerson(5000+i, birth) }
	items := []string{"FOOD-DRUG-PENALTY", "FOOD-SAFETY-SERIOUS", "OUTSTANDING-YOUTH-VOLUNTEER", "VOLUNTEER-SERVICE-RECORD"}
	// First wave: one record per subject of the first half.
	var wave []api.RecordInput
	for i := 0; i < subjects/2; i++ {
		wave = append(wave, record(fmt.Sprintf("W1-%03d", i), subject(i), items[i%len(items)], "outbox"))
	}
	submit(t, f, district, wave...)
	dept := department(t, f, district)
	var failing api.JobStatus
	wait.Until(t, 30*time.Second, "the publisher to report its failure", func() bool {
		v, err := dept.Federation(ctxT(t, 10*time.Second))
		if err != nil {
			return false
		}
		for _, j := range v.Jobs {
			if j.Name == "publish" && j.Failures > 0 {
				failing = j
				return true
			}
		}
		return false
	})
	if failing.State != "failing" && failing.State != "running" || failing.LastError == "" {
		t.Fatalf("publisher status without a leader: %+v", failing)
	}
	t.Logf("publisher without a leader: %s", failing.LastError)
	// Second wave while still without a leader: new subjects, and more
	// records (another item) for subjects already pending.
	wave = nil
	for i := subjects / 4; i < subjects; i++ {
		wave = append(wave, record(fmt.Sprintf("W2-%03d", i), subject(i), items[(i+1)%len(items)], "outbox"))
	}
	submit(t, f, district, wave...)
	// Every subject pending; those of both waves under an entry of each.
	pending, err := f.Node(district).Store().PendingSubjects(0)
	if err != nil {
		t.Fatal(err)
	}
	marked := map[string]bool{}
	for _, it := range pending {
		marked[it.Subject] = true
	}
	if n, err := f.Node(district).Store().OutboxLen(); err != nil || len(marked) != subjects || n != len(pending) || n != subjects/2+subjects*3/4 {
		t.Fatalf("outbox holds %d entries (%v) of %d subjects, want %d subjects", n, err, len(marked), subjects)
	}

	for _, name := range []string{f.Province(), "hangzhou"} {
		if err := f.StartNode(name); err != nil {
			t.Fatal(err)
		}
	}
	cat := f.Node(district).Catalog()
	today := credit.TodayAt(time.Now())
	for i := 0; i < subjects; i++ {
		recs, err := f.Node(district).Store().RecordsBySubject(subject(i))
		if err != nil {
			t.Fatal(err)
		}
		want := credit.Summarize(recs, cat, today)
		wait.Until(t, 60*time.Second, fmt.Sprintf("subject %d in the province's index", i), func() bool {
			entries, err := entriesAt(t, f, f.Province(), subject(i))
			return err == nil && len(entries) == 1 && entries[0].Summary == want
		})
	}
	wait.Until(t, 30*time.Second, "the outbox to empty", func() bool {
		n, err := f.Node(district).Store().OutboxLen()
		return err == nil && n == 0
	})
}

// TestLookupHonoursTheNodesClock: a district decides what is displayed by
// its own clock (node.Options.Now), not the machine's: once the clock
// passes a record's display period, the district no longer shows it, even
// before a sweep has refreshed the index.
func TestLookupHonoursTheNodesClock(t *testing.T) {
	clock := clockAt(recentDecision + 1)
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{Now: clock.Now})
	district := f.Districts()[0]
	subject := credit.SyntheticPerson(8181, credit.NewDate(1970, 3, 3))
	submit(t, f, district, record("CLK-1", subject, "FOOD-DRUG-PENALTY", "clock"))
	waitIndexed(t, f, subject, 1)
	req := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "赵六", Reference: "R-clock"}
	ans, err := coordinator(t, f).Lookup(ctxT(t, 30*time.Second), req)
	if err != nil || len(ans.Districts) != 1 || len(ans.Districts[0].Records) != 1 {
		t.Fatalf("lookup today: %+v %v", ans, err)
	}
	item, _ := f.Node(district).Catalog().Item("FOOD-DRUG-PENALTY")
	clock.setDay(credit.DisplayUntil(credit.Record{DecidedOn: recentDecision}, item) + 1)
	// The index still names the district (no sweep has run since), and the
	// district answers ok with nothing to show.
	ans, err = coordinator(t, f).Lookup(ctxT(t, 30*time.Second), req)
	if err != nil || len(ans.Districts) != 1 || ans.Districts[0].Status != api.DistrictOK {
		t.Fatalf("lookup after the display period: %+v %v", ans, err)
	}
	if n := len(ans.Districts[0].Records); n != 0 {
		t.Fatalf("the district showed %d records past their display period (by its clock)", n)
	}
}
