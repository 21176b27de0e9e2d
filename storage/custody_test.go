package storage

import (
	"testing"
	"time"

	"credfed/credit"
)

func TestCustodyNotesAndCounts(t *testing.T) {
	db := openTest(t, Options{})
	t0 := time.Unix(1_800_000_000, 0)
	p := func(b byte) credit.Pseudonym { var x credit.Pseudonym; x[0] = b; return x }
	if err := db.RecordIssued("zhejiang/quzhou/kecheng", t0, 10, []credit.Pseudonym{p(1), p(2)}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordIssued("zhejiang/quzhou/kecheng", t0.Add(time.Hour), 1, []credit.Pseudonym{p(3)}); err != nil {
		t.Fatal(err)
	}
	if err := db.RecordIssued("zhejiang/hangzhou/xihu", t0, 0, []credit.Pseudonym{p(4)}); err != nil {
		t.Fatal(err)
	}
	due, err := db.IssuedBefore(t0.Add(time.Minute), 0)
	if err != nil || len(due) != 3 {
		t.Fatalf("due %+v %v", due, err)
	}
	for _, d := range due {
		if d.Pseudonym == p(3) {
			t.Fatal("a note after the cutoff is due")
		}
	}
	if err := db.SettleIssued(due, map[string]uint64{"zhejiang/quzhou/kecheng": 2},
		map[string]time.Time{"zhejiang/quzhou/kecheng": t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if left, _ := db.IssuedBefore(t0.Add(2*time.Hour), 0); len(left) != 1 || left[0].Pseudonym != p(3) {
		t.Fatalf("left %+v", left)
	}
	stats, err := db.CustodyStats()
	if err != nil || len(stats) != 2 {
		t.Fatalf("stats %+v %v", stats, err)
	}
	k := stats[1]
	if k.District != "zhejiang/quzhou/kecheng" || k.Issued != 11 || k.Checked != 2 || k.Unmatched != 2 || k.FlaggedAt.IsZero() {
		t.Fatalf("kecheng %+v", k)
	}
	if x := stats[0]; x.Issued != 1 || x.Checked != 1 || x.Unmatched != 0 || !x.FlaggedAt.IsZero() {
		t.Fatalf("xihu %+v", x)
	}
}
