package consensus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"credfed/credit"
	"credfed/storage"
)

// TestOutbox_AcceptedWithoutLeaderReachesIndex: a district accepts records
// (storage.SubmitRecords: each record and its subject's outbox marker in one
// synced write) while the cluster has no leader (two of the three voters
// down). Its Publisher cannot drain; the records stay acknowledged and
// pending. Once the voters are back, every accepted record's subject reaches
// the index of every replica with the summary the district computes from its
// records, and the outbox empties.
func TestOutbox_AcceptedWithoutLeaderReachesIndex(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	district := c.nodes["zhejiang/quzhou/kecheng"]

	// The district's records live in their own store (the cluster helper's
	// consensus state has its own Badger database).
	sdb, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdb.Close() })

	// No quorum: stop the leader and one more voter.
	leader := c.waitLeader()
	down := []*testNode{leader}
	for _, n := range c.nodes {
		if n.voter && n != leader {
			down = append(down, n)
			break
		}
	}
	for _, n := range down {
		c.stop(n)
	}
	c.waitFor("no node to know a leader", func() bool {
		for _, n := range c.nodes {
			if n.up {
				if _, addr := n.rep.Leader(); addr != "" {
					return false
				}
			}
		}
		return true
	})

	// The coordinator that is still up holds the key, so pseudonyms
	// resolve; only the index write has nowhere to go.
	resolve := func(ctx context.Context, subjects []string) ([]credit.Pseudonym, error) {
		return district.rep.Pseudonymize(ctx, subjects)
	}
	pub := district.rep.StartPublisher(sdb, resolve)
	t.Cleanup(pub.Stop) // before the store closes (cleanups run last first)

	cat := credit.DefaultCatalog()
	now := time.Now()
	today := credit.TodayAt(now)
	birth := credit.NewDate(1980, time.May, 4)
	const subjects = 40
	subject := func(i int) string { return credit.SyntheticPerson(5000+i, birth) }
	items := []string{"FOOD-DRUG-PENALTY", "FOOD-SAFETY-SERIOUS", "OUTSTANDING-YOUTH-VOLUNTEER", "VOLUNTEER-SERVICE-RECORD"}
	record := func(id string, subj string, item string) credit.Record {
		r, err := cat.Accept(credit.Record{
			ID: id, Subject: subj, CatalogItem: item,
			DecisionNumber: "衢柯市监罚〔2026〕" + id,
			OccurredOn:     today.AddDays(-20), DecidedOn: today.AddDays(-10),
			Summary:    "synthetic record for the outbox test",
			Department: "market-supervision", District: district.id.Region,
		}, now, credit.ParseOptions{TestMode: true})
		if err != nil {
			t.Fatalf("accept %s: %v", id, err)
		}
		return r
	}
	submitAll := func(recs []credit.Record) {
		t.Helper()
		out, err := sdb.SubmitRecords(recs)
		if err != nil {
			t.Fatal(err)
		}
		for i, o := range out {
			if o != storage.Accepted {
				t.Fatalf("record %s: %s", recs[i].ID, o)
			}
		}
		pub.Notify()
	}

	// First wave: one record per subject of the first half.
	var wave []credit.Record
	for i := 0; i < subjects/2; i++ {
		wave = append(wave, record(fmt.Sprintf("W1-%03d", i), subject(i), items[i%len(items)]))
	}
	submitAll(wave)
	c.waitFor("the publisher to fail a drain", func() bool { return pub.LastError() != nil })
	t.Logf("publisher without a leader: %v", pub.LastError())

	// Second wave while still without a leader: new subjects, and more
	// records (another item) for subjects already pending.
	wave = nil
	for i := subjects / 4; i < subjects; i++ {
		wave = append(wave, record(fmt.Sprintf("W2-%03d", i), subject(i), items[(i+1)%len(items)]))
	}
	submitAll(wave)

	if n, err := sdb.OutboxLen(); err != nil || n != subjects {
		t.Fatalf("outbox holds %d subjects (%v), want %d", n, err, subjects)
	}
	for _, n := range c.nodes {
		if !n.up {
			continue
		}
		for i := 0; i < subjects; i++ {
			if e := entriesOn(n, c.key.Pseudonym(subject(i))); len(e) != 0 {
				t.Fatalf("%s holds an index entry written without a leader: %+v", n.id.Region, e)
			}
		}
	}
	if pub.LastError() == nil {
		t.Fatal("the publisher reports success without a leader")
	}

	// Quorum back.
	for _, n := range down {
		c.start(n)
	}
	c.waitLeader()

	want := make([]credit.IndexSummary, subjects)
	for i := range want {
		recs, err := sdb.RecordsBySubject(subject(i))
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			t.Fatalf("subject %d has no records", i)
		}
		want[i] = credit.Summarize(recs, cat, today)
		if !(IndexEntry{Summary: want[i]}).Holds() {
			t.Fatalf("subject %d: summary %+v holds nothing; the test proves nothing with it", i, want[i])
		}
	}
	c.waitFor("the outbox to empty", func() bool {
		n, err := sdb.OutboxLen()
		return err == nil && n == 0
	})
	for _, n := range c.nodes {
		c.waitFor("every subject's entry on "+n.id.Region, func() bool {
			for i := 0; i < subjects; i++ {
				e := entriesOn(n, c.key.Pseudonym(subject(i)))
				if len(e) != 1 || e[0].District != district.id.Region || e[0].Summary != want[i] {
					return false
				}
			}
			return true
		})
	}
	// A strong read agrees, and the publisher's last pass succeeded.
	e, err := strongLookup(t, c.nodes["zhejiang/hangzhou/xihu"], c.key.Pseudonym(subject(subjects-1)))
	if err != nil || len(e) != 1 || e[0].Summary != want[subjects-1] {
		t.Fatalf("strong read: %+v, %v", e, err)
	}
	c.waitFor("the publisher to report a good pass", func() bool { return pub.LastError() == nil })
}
