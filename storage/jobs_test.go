package storage

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestJobStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	db := openTest(t, Options{Dir: dir})
	if got, err := db.JobState("sweep"); err != nil || got != nil {
		t.Fatalf("fresh state %q, %v", got, err)
	}
	if err := db.PutJobState("sweep", []byte(`{"runs":3}`)); err != nil {
		t.Fatal(err)
	}
	if err := db.PutJobState("", []byte("x")); err == nil {
		t.Fatal("an empty job name was accepted")
	}
	if err := db.PutJobState("big", make([]byte, maxJobState+1)); err == nil {
		t.Fatal("an oversized state was accepted")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, Options{Dir: filepath.Clean(dir)})
	got, err := db.JobState("sweep")
	if err != nil || !bytes.Equal(got, []byte(`{"runs":3}`)) {
		t.Fatalf("after reopen %q, %v", got, err)
	}
	if got, _ := db.JobState("big"); got != nil {
		t.Fatal("the refused state was written")
	}
}
