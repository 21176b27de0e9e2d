package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// recordLog collects slog records from many loggers (a custom
// slog.Handler), each with its attributes resolved, and passes them on to
// a next handler (the test's own logging, if any).
type recordLog struct {
	mu      sync.Mutex
	records []loggedRecord
}

type loggedRecord struct {
	level  slog.Level
	msg    string
	attrs  map[string]string
	source string // the function that logged it
}

func (r loggedRecord) String() string {
	keys := make([]string, 0, len(r.attrs))
	for k, v := range r.attrs {
		keys = append(keys, k+"="+v)
	}
	return fmt.Sprintf("%s %q %s", r.level, r.msg, strings.Join(keys, " "))
}

func (l *recordLog) handler(next slog.Handler) slog.Handler {
	return &recordHandler{log: l, next: next}
}

// atLeast returns the records of level or above.
func (l *recordLog) atLeast(level slog.Level) []loggedRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []loggedRecord
	for _, r := range l.records {
		if r.level >= level {
			out = append(out, r)
		}
	}
	return out
}

func (l *recordLog) all() []loggedRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]loggedRecord(nil), l.records...)
}

type recordHandler struct {
	log   *recordLog
	next  slog.Handler
	attrs []slog.Attr
	group string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(ctx context.Context, r slog.Record) error {
	rec := loggedRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	if r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		rec.source = f.Function
	}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[h.group+a.Key] = a.Value.String()
		return true
	})
	h.log.mu.Lock()
	h.log.records = append(h.log.records, rec)
	h.log.mu.Unlock()
	if h.next != nil && h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		a.Key = h.group + a.Key
		c.attrs = append(c.attrs, a)
	}
	if h.next != nil {
		c.next = h.next.WithAttrs(as)
	}
	return &c
}

func (h *recordHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.group = h.group + name + "."
	if h.next != nil {
		c.next = h.next.WithGroup(name)
	}
	return &c
}

// TestCluster_CleanStopLogsNoError runs a small cluster (elect, replicate
// index updates), then closes every node cleanly, each the way
// node.Shutdown closes it (replica, endpoint, database), districts first,
// and checks that no node logged an ERROR record at any point. Two
// orders of the voters: the cities, then the province (the order of
// node.LocalFederation.Stop), with a district restarted on the way; and
// the leader first, so that the others elect a new leader while nodes are
// stopping.
func TestCluster_CleanStopLogsNoError(t *testing.T) {
	for _, order := range []string{"layout", "leader-first"} {
		t.Run(order, func(t *testing.T) {
			logs := &recordLog{}
			c := newCluster(t, clusterOptions{logs: logs})
			kecheng := c.nodes["zhejiang/quzhou/kecheng"]
			xihu := c.nodes["zhejiang/hangzhou/xihu"]
			for i := 1; i <= 5; i++ {
				for _, d := range []*testNode{kecheng, xihu} {
					if err := submit(t, d, []IndexUpdate{update(pseudo(byte(i)), d.id.Region, i, uint64(i))}); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, n := range c.coordinators() {
				c.waitFor("entries on "+n.id.Region, func() bool { return len(entriesOn(n, pseudo(5))) == 2 })
			}
			c.waitCaughtUp(kecheng)
			c.waitCaughtUp(xihu)
			if order == "layout" {
				// A district that stops and starts again: the voters
				// record its announced stop, then its return.
				voters := []*testNode{c.nodes["zhejiang"], c.nodes["zhejiang/quzhou"], c.nodes["zhejiang/hangzhou"]}
				stopped := func(n *testNode) bool {
					return n.rep.policy.peerStopped(raft.ServerID(kecheng.id.Region), "")
				}
				c.stop(kecheng)
				for _, v := range voters {
					if !stopped(v) {
						t.Fatalf("%s did not record the announced stop", v.id.Region)
					}
				}
				c.start(kecheng)
				c.waitFor("the voters to record the district's return", func() bool {
					for _, v := range voters {
						if !v.rep.policy.returned(raft.ServerID(kecheng.id.Region)) {
							return false
						}
					}
					return true
				})
				c.waitCaughtUp(kecheng)
			}
			c.stop(kecheng)
			c.stop(xihu)
			switch order {
			case "layout":
				for _, p := range []string{"zhejiang/hangzhou", "zhejiang/quzhou", "zhejiang"} {
					c.stop(c.nodes[p])
				}
			case "leader-first":
				old := c.waitLeader()
				c.stop(old)
				// The two others elect a new leader, asking the old one
				// for its vote too, then stop.
				c.waitFor("a new leader", func() bool { l := c.leader(); return l != nil && l != old })
				for _, p := range []string{"zhejiang", "zhejiang/quzhou", "zhejiang/hangzhou"} {
					c.stop(c.nodes[p])
				}
			}
			if len(logs.atLeast(slog.LevelDebug)) == 0 {
				t.Fatal("no records collected: the test would pass for the wrong reason")
			}
			for _, r := range logs.atLeast(slog.LevelError) {
				t.Errorf("logged at ERROR: %s", r)
			}
		})
	}
}

// minLevel is a handler that drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }

func (h minLevel) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < h.min {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func TestHCLogAdapter(t *testing.T) {
	logs := &recordLog{}
	base := slog.New(minLevel{Handler: logs.handler(nil), min: slog.LevelDebug}).With("node", "n1")
	l := newHCLogger(base, "raft", hclog.Debug, nil)
	var h hclog.Logger = l

	h.Trace("not written: below the handler's level")
	h.Debug("a debug line", "peer", raft.ServerAddress("127.0.0.1:1"), "term", 3)
	h.Named("net").With("local", "a").Warn("a warning", "error", errors.New("boom"))
	h.Error("an error", "beans", hclog.Fmt("%d beans", 3), "x", hclog.Hex(17), "odd")
	h.Log(hclog.NoLevel, "no level is info")
	h.Info("appendEntries rejected, sending older logs", "peer", "p") // benign, to debug
	recs := logs.all()
	if len(recs) != 5 {
		t.Fatalf("%d records: %v", len(recs), recs)
	}
	want := []struct {
		level slog.Level
		msg   string
		attrs map[string]string
	}{
		{slog.LevelDebug, "a debug line", map[string]string{"node": "n1", "logger": "raft", "peer": "127.0.0.1:1", "term": "3"}},
		{slog.LevelWarn, "a warning", map[string]string{"node": "n1", "logger": "raft.net", "local": "a", "error": "boom"}},
		{slog.LevelError, "an error", map[string]string{"node": "n1", "logger": "raft", "beans": "3 beans", "x": "0x11", hclog.MissingKey: "odd"}},
		{slog.LevelInfo, "no level is info", map[string]string{"node": "n1", "logger": "raft"}},
		{slog.LevelDebug, "appendEntries rejected, sending older logs", map[string]string{"node": "n1", "logger": "raft", "peer": "p"}},
	}
	for i, w := range want {
		r := recs[i]
		if r.level != w.level || r.msg != w.msg || fmt.Sprint(r.attrs) != fmt.Sprint(w.attrs) {
			t.Errorf("record %d: %s, want %v %q %v", i, r, w.level, w.msg, w.attrs)
		}
		if !strings.HasSuffix(r.source, "TestHCLogAdapter") {
			t.Errorf("record %d: source %q, not the caller", i, r.source)
		}
	}
	// hclog's formatting types render as hclog renders them.
	if hclogValue(hclog.Octal(8)) != "010" || hclogValue(hclog.Binary(5)) != "0b101" || hclogValue(hclog.Quote("a\n")) != `"a\n"` {
		t.Errorf("values: %v %v %v", hclogValue(hclog.Octal(8)), hclogValue(hclog.Binary(5)), hclogValue(hclog.Quote("a\n")))
	}

	// Names, implied arguments, levels.
	named := h.Named("a").Named("b")
	if named.Name() != "raft.a.b" || named.ResetNamed("x").Name() != "x" || h.Name() != "raft" {
		t.Errorf("names %q %q %q", named.Name(), named.ResetNamed("x").Name(), h.Name())
	}
	with := h.With("k", 1).With("j", 2)
	if fmt.Sprint(with.ImpliedArgs()) != "[k 1 j 2]" || len(h.ImpliedArgs()) != 0 {
		t.Errorf("implied %v", with.ImpliedArgs())
	}
	if h.IsTrace() || !h.IsDebug() || !h.IsError() {
		t.Error("Is* does not follow the hclog level and the handler's")
	}
	// SetLevel on a derived logger is shared, as hclog's default is.
	named.SetLevel(hclog.Error)
	if h.GetLevel() != hclog.Error || h.IsWarn() || !h.IsError() {
		t.Errorf("level %v after SetLevel on a derived logger", h.GetLevel())
	}
	n := len(logs.all())
	h.Warn("dropped: below the hclog level")
	with.Info("dropped too")
	h.SetLevel(hclog.Off)
	h.Error("dropped: off")
	if len(logs.all()) != n {
		t.Fatalf("records below the level were written: %v", logs.all()[n:])
	}

	// The standard logger infers levels from the usual prefixes.
	h.SetLevel(hclog.Trace)
	std := h.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	std.Print("[WARN] from the standard logger")
	std.Print("plain line")
	recs = logs.all()[n:]
	if len(recs) != 2 || recs[0].level != slog.LevelWarn || recs[0].msg != "from the standard logger" || recs[1].level != slog.LevelInfo {
		t.Fatalf("standard logger records %v", recs)
	}
}

func TestRaftLogPolicy(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := newRaftLogPolicy()
	p.now = func() time.Time { return now }
	kecheng := raft.Server{ID: "zhejiang/quzhou/kecheng", Address: "127.0.0.1:7001"}
	xihu := raft.Server{ID: "zhejiang/hangzhou/xihu", Address: "127.0.0.1:7002"}
	heartbeat := func(addr raft.ServerAddress) slog.Level {
		return p.level(slog.LevelError, "failed to heartbeat to", []any{"peer", addr, "backoff time", time.Second, "error", errors.New("unavailable")})
	}
	appendTo := func(s raft.Server) slog.Level {
		return p.level(slog.LevelError, "failed to appendEntries to", []any{"peer", s, "error", errors.New("unavailable")})
	}
	if heartbeat(kecheng.Address) != slog.LevelError || appendTo(kecheng) != slog.LevelError {
		t.Fatal("a peer that did not announce its stop: not an error")
	}
	p.peerStopping(kecheng.ID, kecheng.Address)
	if heartbeat(kecheng.Address) != slog.LevelDebug || appendTo(kecheng) != slog.LevelDebug ||
		p.level(slog.LevelError, "failed to make requestVote RPC", []any{"target", kecheng, "error", errors.New("x"), "term", 3}) != slog.LevelDebug ||
		p.level(slog.LevelError, "failed to install snapshot", []any{"peer", kecheng.ID, "id", "1-2-3", "error", errors.New("x")}) != slog.LevelDebug ||
		p.level(slog.LevelWarn, "failed to contact", []any{"server-id", kecheng.ID, "time", time.Second}) != slog.LevelDebug {
		t.Fatal("failures to a peer that announced its stop are still errors")
	}
	if heartbeat(xihu.Address) != slog.LevelError || appendTo(xihu) != slog.LevelError {
		t.Fatal("another peer's failures are hidden")
	}
	if p.level(slog.LevelError, "failed to append to logs", []any{"error", errors.New("disk")}) != slog.LevelError {
		t.Fatal("a log store failure is hidden")
	}
	now = now.Add(stoppedPeerGrace)
	if heartbeat(kecheng.Address) != slog.LevelError {
		t.Fatal("a peer away longer than the grace period is not an error")
	}
	now = now.Add(-time.Minute)
	if heartbeat(kecheng.Address) != slog.LevelDebug || !p.peerBack(kecheng.ID) {
		t.Fatal("a peer back after its stop")
	}
	// The connections pooled to the old process fail once more, for a
	// moment after its return; then its failures are errors again.
	if heartbeat(kecheng.Address) != slog.LevelDebug {
		t.Fatal("the first failure on a connection to the old process is an error")
	}
	now = now.Add(backGrace)
	if heartbeat(kecheng.Address) != slog.LevelError {
		t.Fatal("a peer back after its stop: its failures are not errors again")
	}
	if p.level(slog.LevelError, "failed to decode incoming command", []any{"error", raft.ErrTransportShutdown}) != slog.LevelDebug ||
		p.level(slog.LevelError, "failed to decode incoming command", []any{"error", errors.New("bad msgpack")}) != slog.LevelError {
		t.Fatal("transport shutdown vs. a real decoding failure")
	}
	election := func(last string) slog.Level {
		return p.level(slog.LevelWarn, "heartbeat timeout reached, starting election", []any{"last-leader-addr", raft.ServerAddress(last), "last-leader-id", ""})
	}
	if election("") != slog.LevelInfo || election("127.0.0.1:7443") != slog.LevelWarn {
		t.Fatal("a first election is a warning, or a lost leader is not")
	}
	p.closing.Store(true)
	if heartbeat(xihu.Address) != slog.LevelDebug || p.level(slog.LevelError, "failed to accept connection", nil) != slog.LevelDebug {
		t.Fatal("transport failures while this replica closes are errors")
	}
	if p.level(slog.LevelError, "failed to persist vote", []any{"error", errors.New("disk")}) != slog.LevelError {
		t.Fatal("a storage failure while closing is hidden")
	}
	var nilPolicy *raftLogPolicy
	if nilPolicy.level(slog.LevelError, "failed to heartbeat to", nil) != slog.LevelError ||
		nilPolicy.level(slog.LevelWarn, "failed to get previous log", nil) != slog.LevelDebug {
		t.Fatal("no policy")
	}
}

// TestCluster_UnannouncedStopIsStillAnError: a node that vanishes without
// announcing its stop (its endpoint gone, as in a crash or a network
// failure) still makes the leader log ERRORs naming it.
func TestCluster_UnannouncedStopIsStillAnError(t *testing.T) {
	logs := &recordLog{}
	c := newCluster(t, clusterOptions{logs: logs})
	kecheng := c.nodes["zhejiang/quzhou/kecheng"]
	if err := submit(t, kecheng, []IndexUpdate{update(pseudo(1), kecheng.id.Region, 1, 1)}); err != nil {
		t.Fatal(err)
	}
	kecheng.ep.Close()
	c.waitFor("an ERROR naming the vanished node", func() bool {
		for _, r := range logs.atLeast(slog.LevelError) {
			if r.attrs["logger"] == "raft" && strings.Contains(r.attrs["peer"], kecheng.addr) {
				return true
			}
		}
		return false
	})
}
