package exchange

import (
	"context"
	"testing"
	"time"
)

// TestHostileAnswerCodeIsNotAMetricLabel: the error code of an answer is
// the answering node's to choose. A hostile node answers with a code made
// of a subject identifier (its own code: a handler's *Error is sent as
// it is); the caller's credfed_exchange_client_requests_total must not
// take it as a label value (labels are bounded words, never identifiers:
// docs/metrics.md), nor grow a series per code a peer invents: it is
// counted as "other".
func TestHostileAnswerCodeIsNotAMetricLabel(t *testing.T) {
	server, client := pair(t)
	server.Handle("hostile", func(ctx context.Context, r *Request) (any, error) {
		return nil, &Error{Code: Code("id_110101199003077777"), Message: "no"}
	})
	ctx := ctxTimeout(t, 5*time.Second)
	if err := client.Call(ctx, server.peer(), "hostile", Meta{}, nil, nil); err == nil {
		t.Fatal("the hostile answer was taken for a success")
	}
	known := map[string]bool{"ok": true, "other": true}
	for _, c := range []Code{CodeBadRequest, CodeUnauthenticated, CodeForbidden, CodeNotFound, CodeConflict, CodeDeadlineExceeded,
		CodeTooManyRequests, CodeTooEarly, CodeUnavailable, CodeInternal, CodeCanceled} {
		known[string(c)] = true
	}
	mfs, err := client.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	other := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "credfed_exchange_client_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "code" && !known[lp.GetValue()] {
					t.Errorf("credfed_exchange_client_requests_total has code=%q, a code the peer chose", lp.GetValue())
				}
				if lp.GetName() == "code" && lp.GetValue() == "other" {
					other += m.GetCounter().GetValue()
				}
			}
		}
	}
	if other != 1 {
		t.Errorf("the hostile answer counted %v times as code=\"other\", want once", other)
	}
}
