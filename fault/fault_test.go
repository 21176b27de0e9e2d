package fault

import (
	"errors"
	"fmt"
	"testing"
)

func TestKindOfFindsTheRefusalInAChain(t *testing.T) {
	cause := errors.New("badger: key 990000… not found")
	err := fmt.Errorf("intake: %w", Wrap(NotFound, cause, "no record %q", "R-1"))
	if KindOf(err) != NotFound {
		t.Fatalf("kind %q", KindOf(err))
	}
	if !errors.Is(err, cause) {
		t.Fatal("the cause is not in the chain")
	}
	if e := As(err); e == nil || e.Message != `no record "R-1"` || e.Error() != `not_found: no record "R-1"` {
		t.Fatalf("%#v", e)
	}
	if KindOf(cause) != Internal || KindOf(nil) != "" {
		t.Fatalf("plain error %q, nil %q", KindOf(cause), KindOf(nil))
	}
	if got := Field(BadRequest, "subject", "required").Error(); got != "bad_request: subject: required" {
		t.Fatal(got)
	}
}
