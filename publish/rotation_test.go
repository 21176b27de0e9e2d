package publish

import (
	"context"
	"errors"
	"testing"

	"credfed/credit"
)

type versions struct{ cur, withdraw uint32 }

func (v *versions) Publishing() (uint32, uint32) { return v.cur, v.withdraw }

// TestRepublishWithdrawsTheOldPseudonym: during a rotation a subject is
// published under the current version, and its cached pseudonym of the
// older one is withdrawn in the same group; outside a rotation nothing is
// withdrawn, and a coordinator at another version leaves the subject in
// the outbox.
func TestRepublishWithdrawsTheOldPseudonym(t *testing.T) {
	db := district(t)
	x := &index{cat: credit.DefaultCatalog()}
	subject := credit.SyntheticPerson(1, credit.NewDate(1980, 1, 1))
	oldP, newP := credit.Pseudonym{1}, credit.Pseudonym{2}
	if err := db.PutPseudonyms(map[string]credit.Pseudonym{subject: oldP}); err != nil {
		t.Fatal(err)
	}
	v := &versions{cur: 2, withdraw: 1}
	var other error
	var asked []uint32
	p := New(Config{District: "zhejiang/quzhou/kecheng", Outbox: db, Index: x, Rotation: &Rotation{Versions: v, CachedAt: db.PseudonymsAt,
		ResolveAt: func(_ context.Context, subjects []string, ver uint32) ([]credit.Pseudonym, error) {
			asked = append(asked, ver)
			if other != nil {
				return nil, other
			}
			return []credit.Pseudonym{newP}, nil
		}}})

	// The coordinator is a version behind: nothing is published.
	other = errors.New("pseudonym: the coordinator answered under another key version")
	if err := p.Drain(context.Background()); err == nil {
		t.Fatal("published under another version")
	}
	if n, _ := db.OutboxLen(); n != 1 || len(x.applied) != 0 {
		t.Fatalf("outbox %d, applied %+v", n, x.applied)
	}
	other = nil
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(x.applied) != 2 {
		t.Fatalf("applied %+v", x.applied)
	}
	pub, wd := x.applied[0], x.applied[1]
	if pub.Pseudonym != newP || pub.Summary.Negative != 1 || wd.Pseudonym != oldP || wd.Summary != (credit.IndexSummary{Withdrawn: true}) || wd.Seq != pub.Seq {
		t.Fatalf("published %+v, withdrawn %+v", pub, wd)
	}
	if asked[len(asked)-1] != 2 {
		t.Fatalf("resolved at versions %v", asked)
	}

	// Once the rotation is complete here, nothing more is withdrawn.
	v.withdraw = 0
	if _, err := db.MarkEverySubject(context.Background()); err != nil {
		t.Fatal(err)
	}
	x.applied = nil
	if err := p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(x.applied) != 1 || x.applied[0].Pseudonym != newP {
		t.Fatalf("after the rotation: %+v", x.applied)
	}
}
