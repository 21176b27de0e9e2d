package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"credfed/api"
	"credfed/fault"
	"credfed/internal/wait"
)

// TestBodyBudgetRefusesBodiesUnreadOnceSpent: bodies below the large-body
// threshold reserve their length in the budget before they are read; two
// stalled ones hold most of it, so a third is refused unavailable with
// Retry-After, is not handed to the service, and is answered although it
// was sent whole. Once the stalled ones go, their room comes back.
func TestBodyBudgetRefusesBodiesUnreadOnceSpent(t *testing.T) {
	const budget, stalled = 2_000_000, 900_000
	srv, tc, recs, s := apiServerOf(t, Config{BodyBudget: budget})
	var items []string
	for i := 0; len(items)*2100 < stalled; i++ {
		items = append(items, string(recordJSON(fmt.Sprintf("B-%d", i), strings.Repeat("x", 2000))))
	}
	body := []byte("[" + strings.Join(items, ",") + "]")
	if len(body) < stalled || len(body) > SmallBody {
		t.Fatalf("a body of %d bytes: want one between %d and %d", len(body), stalled, SmallBody)
	}
	a, b := slowRequest(t, srv, tc, stalled), slowRequest(t, srv, tc, stalled)
	wait.Until(t, 10*time.Second, "two stalled bodies to hold their room", func() bool { return s.budget.free.Load() == budget-2*stalled })

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 30 * time.Second}
	resp, err := hc.Post(srv.URL+"/v1/records", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("a refused body sent whole got no answer: %v", err)
	}
	var eb api.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || eb.Error == nil || eb.Error.Code != api.CodeUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a body beyond the budget: %d Retry-After=%q %+v", resp.StatusCode, resp.Header.Get("Retry-After"), eb.Error)
	}
	if n := recs.calls.Load(); n != 0 {
		t.Fatalf("the service was called %d times", n)
	}
	if free := s.budget.free.Load(); free != budget-2*stalled {
		t.Fatalf("the refused body changed the budget: %d free", free)
	}

	a.Close()
	b.Close()
	wait.Until(t, 10*time.Second, "the stalled bodies' room to come back", func() bool { return s.budget.free.Load() == budget })
	if status, eb := post(t, srv, tc, "application/json", body); status != http.StatusOK {
		t.Fatalf("the same body with room for it: %d %+v", status, eb.Error)
	}
	// The answer may reach the client before its handler has returned.
	wait.Until(t, 10*time.Second, "the answered request's room to come back", func() bool { return s.budget.free.Load() == budget })
}

// TestBodyOfUnknownLengthReservesAsItIsRead: a body without a declared
// length reserves chunk by chunk and fails unavailable, having read no
// more than the budget, when the budget runs out; one that fits reads to
// its end. Release gives everything back.
func TestBodyOfUnknownLengthReservesAsItIsRead(t *testing.T) {
	var b bodyBudget
	const room = 3 * bodyChunk
	b.free.Store(room)
	src := &countingReader{}
	big, e := b.body(io.NopCloser(src), -1, 1<<20)
	if e != nil {
		t.Fatal(e)
	}
	n, err := io.Copy(io.Discard, big)
	if fault.KindOf(err) != fault.Unavailable || n != room || src.n.Load() != room {
		t.Fatalf("an endless body: %d bytes read (%d from the source), %v; want %d and unavailable", n, src.n.Load(), err, room)
	}
	if b.free.Load() != 0 {
		t.Fatalf("%d left while the body holds the budget", b.free.Load())
	}
	big.release()

	small, _ := b.body(io.NopCloser(strings.NewReader(strings.Repeat("s", bodyChunk+1))), -1, 1<<20)
	if got, err := io.ReadAll(small); err != nil || len(got) != bodyChunk+1 {
		t.Fatalf("a body that fits: %d bytes, %v", len(got), err)
	}
	if held := room - b.free.Load(); held != 2*bodyChunk {
		t.Fatalf("a body of a chunk and a byte holds %d bytes, want two chunks", held)
	}
	small.release()

	// A declared length is reserved at once, and all of it or nothing.
	if _, e := b.body(io.NopCloser(strings.NewReader("")), room+1, 1<<20); e == nil || e.Code != api.CodeUnavailable {
		t.Fatalf("a declared length beyond the budget: %+v", e)
	}
	known, e := b.body(io.NopCloser(strings.NewReader("12345")), 5, 1<<20)
	if e != nil || b.free.Load() != room-5 {
		t.Fatalf("a declared length of 5: %+v, %d free", e, b.free.Load())
	}
	if got, err := io.ReadAll(known); err != nil || string(got) != "12345" {
		t.Fatalf("%q, %v", got, err)
	}
	known.release()
	if b.free.Load() != room {
		t.Fatalf("%d free after every release, want %d", b.free.Load(), room)
	}
}

// TestRefusalsRepeatNothingTheCallerSent: an unknown JSON field is named
// only if its name looks like one, and an unknown route or method is not
// repeated: an identifier put there stays out of the answer.
func TestRefusalsRepeatNothingTheCallerSent(t *testing.T) {
	const id = "110101199003077777"
	for _, c := range []struct {
		key   string
		shown bool
	}{{"summry", true}, {"decided_on2", true}, {id, false}, {"x" + id, false}, {"Zhang", false}, {"名字", false},
		{strings.Repeat("a", 65), false}, {"a\"b", false}} {
		var in api.Correction
		key, _ := json.Marshal(c.key)
		dec := json.NewDecoder(strings.NewReader(`{"summary":"s",` + string(key) + `:1}`))
		dec.DisallowUnknownFields()
		err := dec.Decode(&in)
		if err == nil {
			t.Fatalf("%q: no error", c.key)
		}
		e := jsonError(err)
		shown := e.Field == c.key && strings.Contains(e.Message, c.key)
		if shown != c.shown || (!c.shown && (e.Field != "" || strings.Contains(e.Message, c.key))) {
			t.Errorf("unknown field %q: field %q, message %q; shown %v, want %v", c.key, e.Field, e.Message, shown, c.shown)
		}
	}

	h := New(Config{Cluster: cluster{}, Records: &records{}, Lookups: noLookups{}})
	for _, c := range []struct{ method, path string }{{"GET", "/v1/people/" + id}, {"DELETE", "/v1/catalog"}, {id, "/v1/catalog"}} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil))
		if w.Code != http.StatusNotFound && w.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d", c.method, c.path, w.Code)
		}
		if strings.Contains(w.Body.String(), id) || strings.Contains(w.Body.String(), "catalog") {
			t.Errorf("%s %s: the answer repeats the request: %s", c.method, c.path, w.Body.String())
		}
	}
}
