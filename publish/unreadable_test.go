package publish

import (
	"context"
	"errors"
	"testing"

	"credfed/credit"
	"credfed/storage"
)

// unreadableOutbox is a store one of whose subjects' records cannot be
// read.
type unreadableOutbox struct {
	*storage.DB
	bad string
}

var errUnreadable = errors.New("unreadable")

func (u *unreadableOutbox) SummaryFieldsBySubjects(subjects []string) ([][]credit.Record, []error, error) {
	recs, errs, err := u.DB.SummaryFieldsBySubjects(subjects)
	for i, s := range subjects {
		if s == u.bad && err == nil {
			recs[i], errs[i] = nil, errUnreadable
		}
	}
	return recs, errs, err
}

// TestUnreadableSubjectWithTwoEntries: a subject changed by two
// commits whose records cannot be read keeps both entries (and does not
// hold the others back); the drain reports it, and the count it returns
// (the job's "published") is what it published: the other subjects'
// entries, not the pass's entries less one per unreadable subject.
func TestUnreadableSubjectWithTwoEntries(t *testing.T) {
	db, entries := markedTwice(t)
	bad := entries[2].Subject // M-1's
	x := &index{cat: credit.DefaultCatalog()}
	p := New(Config{District: "zhejiang/quzhou/kecheng", Outbox: &unreadableOutbox{DB: db, bad: bad}, Index: x, Resolve: resolve})
	n, err := p.drain(context.Background())
	if !errors.Is(err, ErrUnreadableSubjects) {
		t.Fatalf("drain: %v, want ErrUnreadableSubjects", err)
	}
	left, _ := db.PendingSubjects(0)
	if len(left) != 2 || left[0].Subject != bad || left[1].Subject != bad {
		t.Fatalf("left %+v, want the unreadable subject's two entries", left)
	}
	if len(x.applied) != 3 {
		t.Fatalf("%d updates, want the 3 readable subjects", len(x.applied))
	}
	if acked := len(entries) - len(left); n != acked {
		t.Errorf("drain says %d published; it published %d subjects and acknowledged %d entries", n, len(x.applied), acked)
	}
}
