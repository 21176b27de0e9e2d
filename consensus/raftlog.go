package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// slogHCLogger is an hclog.Logger that writes slog records: hashicorp/raft
// and raft-wal log through it into the node's logger. hclog levels map
// onto slog's (trace below debug), key/value arguments become attributes,
// and the logger's name (Named, ResetNamed) is the attribute "logger".
// The hclog level set at creation (and by SetLevel, shared with every
// logger derived from this one, as hclog does by default) filters first,
// then the slog handler's own level. Raft logs name servers (region
// paths) and addresses, never subjects.
//
// A policy may lower a record's level: raft's warnings that are part of
// normal operation (benignRaftWarning), and the transport errors that are
// the expected consequence of a clean stop (raftLogPolicy).
type slogHCLogger struct {
	h       slog.Handler // the node's handler, with the implied attributes
	name    string
	implied []any
	level   *atomic.Int32 // an hclog.Level
	policy  *raftLogPolicy
}

var _ hclog.Logger = (*slogHCLogger)(nil)

// newHCLogger returns an hclog.Logger named name writing into log at
// level and above; policy may be nil.
func newHCLogger(log *slog.Logger, name string, level hclog.Level, policy *raftLogPolicy) *slogHCLogger {
	l := &slogHCLogger{h: log.Handler(), name: name, level: new(atomic.Int32), policy: policy}
	l.level.Store(int32(level))
	return l
}

// traceLevel is hclog's Trace in slog: below Debug.
const traceLevel = slog.LevelDebug - 4

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return traceLevel
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

// passes reports whether the hclog level lets a record of level through.
func (l *slogHCLogger) passes(level hclog.Level) bool {
	min := hclog.Level(l.level.Load())
	if min == hclog.NoLevel {
		min = hclog.DefaultLevel
	}
	return level != hclog.Off && min != hclog.Off && level >= min
}

// enabled reports whether a record of level would be written.
func (l *slogHCLogger) enabled(level hclog.Level) bool {
	return l.passes(level) && l.h.Enabled(context.Background(), slogLevel(level))
}

// emit writes one record, with the caller of the hclog method as its
// source.
func (l *slogHCLogger) emit(level hclog.Level, msg string, args []any) {
	if level == hclog.NoLevel {
		level = hclog.DefaultLevel
	}
	if !l.passes(level) {
		return
	}
	lvl := l.policy.level(slogLevel(level), msg, args)
	ctx := context.Background()
	if !l.h.Enabled(ctx, lvl) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(3, pcs[:]) // runtime.Callers, emit, the hclog method
	r := slog.NewRecord(time.Now(), lvl, msg, pcs[0])
	if l.name != "" {
		r.AddAttrs(slog.String("logger", l.name))
	}
	r.AddAttrs(hclogAttrs(args)...)
	_ = l.h.Handle(ctx, r)
}

// hclogAttrs turns hclog's alternating keys and values into attributes;
// a value without a key is hclog's EXTRA_VALUE_AT_END.
func hclogAttrs(args []any) []slog.Attr {
	out := make([]slog.Attr, 0, (len(args)+1)/2)
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			out = append(out, slog.Any(hclog.MissingKey, hclogValue(args[i])))
			break
		}
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		out = append(out, slog.Any(key, hclogValue(args[i+1])))
	}
	return out
}

// hclogValue renders hclog's formatting types as hclog would.
func hclogValue(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) > 0 {
			if f, ok := v[0].(string); ok {
				return fmt.Sprintf(f, v[1:]...)
			}
		}
		return fmt.Sprint(v...)
	case hclog.Hex:
		return "0x" + strconv.FormatInt(int64(v), 16)
	case hclog.Octal:
		return "0" + strconv.FormatInt(int64(v), 8)
	case hclog.Binary:
		return "0b" + strconv.FormatInt(int64(v), 2)
	case hclog.Quote:
		return strconv.Quote(string(v))
	case hclog.CapturedStacktrace:
		return string(v)
	}
	return v
}

func (l *slogHCLogger) Log(level hclog.Level, msg string, args ...any) { l.emit(level, msg, args) }
func (l *slogHCLogger) Trace(msg string, args ...any)                  { l.emit(hclog.Trace, msg, args) }
func (l *slogHCLogger) Debug(msg string, args ...any)                  { l.emit(hclog.Debug, msg, args) }
func (l *slogHCLogger) Info(msg string, args ...any)                   { l.emit(hclog.Info, msg, args) }
func (l *slogHCLogger) Warn(msg string, args ...any)                   { l.emit(hclog.Warn, msg, args) }
func (l *slogHCLogger) Error(msg string, args ...any)                  { l.emit(hclog.Error, msg, args) }

func (l *slogHCLogger) IsTrace() bool { return l.enabled(hclog.Trace) }
func (l *slogHCLogger) IsDebug() bool { return l.enabled(hclog.Debug) }
func (l *slogHCLogger) IsInfo() bool  { return l.enabled(hclog.Info) }
func (l *slogHCLogger) IsWarn() bool  { return l.enabled(hclog.Warn) }
func (l *slogHCLogger) IsError() bool { return l.enabled(hclog.Error) }

func (l *slogHCLogger) ImpliedArgs() []any { return append([]any(nil), l.implied...) }

func (l *slogHCLogger) With(args ...any) hclog.Logger {
	c := *l
	c.h = l.h.WithAttrs(hclogAttrs(args))
	c.implied = append(append([]any(nil), l.implied...), args...)
	return &c
}

func (l *slogHCLogger) Name() string { return l.name }

func (l *slogHCLogger) Named(name string) hclog.Logger {
	c := *l
	if l.name != "" {
		c.name = l.name + "." + name
	} else {
		c.name = name
	}
	return &c
}

func (l *slogHCLogger) ResetNamed(name string) hclog.Logger {
	c := *l
	c.name = name
	return &c
}

func (l *slogHCLogger) SetLevel(level hclog.Level) { l.level.Store(int32(level)) }

func (l *slogHCLogger) GetLevel() hclog.Level { return hclog.Level(l.level.Load()) }

func (l *slogHCLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

func (l *slogHCLogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdlogWriter{l: l, opts: *opts}
}

// stdlogWriter is the io.Writer behind StandardLogger: each line one
// record, its level forced, inferred from a [LEVEL] prefix, or info.
type stdlogWriter struct {
	l    *slogHCLogger
	opts hclog.StandardLoggerOptions
}

func (w *stdlogWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(string(bytes.TrimRight(p, " \t\n")), "\n") {
		level, msg := hclog.Info, line
		if w.opts.InferLevels || w.opts.ForceLevel != hclog.NoLevel {
			level, msg = pickLevel(line)
		}
		if w.opts.ForceLevel != hclog.NoLevel {
			level = w.opts.ForceLevel
		}
		w.l.emit(level, msg, nil)
	}
	return len(p), nil
}

func pickLevel(line string) (hclog.Level, string) {
	for _, p := range []struct {
		prefix string
		level  hclog.Level
	}{{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
		{"[WARN]", hclog.Warn}, {"[ERROR]", hclog.Error}, {"[ERR]", hclog.Error}} {
		if strings.HasPrefix(line, p.prefix) {
			return p.level, strings.TrimSpace(line[len(p.prefix):])
		}
	}
	return hclog.Info, line
}

// benignRaftWarning recognizes raft warnings that are part of normal
// operation (a follower that joins with an empty log makes the leader walk
// back to the first entry it has), so they do not alarm operators.
func benignRaftWarning(msg string) bool {
	for _, s := range []string{"appendEntries rejected, sending older logs", "failed to get previous log",
		"not part of a stable configuration or a non-voter"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// firstElection recognizes the election a node starts when it has never
// known a leader (a federation starting): raft warns of it as of a lost
// leader.
func firstElection(msg string, args []any) bool {
	if !strings.HasPrefix(msg, "heartbeat timeout reached, starting election") {
		return false
	}
	for i := 0; i+1 < len(args); i += 2 {
		if k, _ := args[i].(string); k == "last-leader-addr" {
			return fmt.Sprint(args[i+1]) == ""
		}
	}
	return false
}

// raftLogPolicy lowers the level of raft records that do not call for an
// operator:
//
//   - warnings that are part of normal operation (benignRaftWarning);
//   - transport failures while this replica closes (its own stop cuts its
//     dials and conns), and failures the transport reports because it
//     was shut down (raft.ErrTransportShutdown);
//   - transport failures naming a peer that announced its clean stop
//     (consensus.presence, sent by Replica.Close), until the peer
//     announces it is back (Open) or stoppedPeerGrace passes: a peer that
//     stays away longer is worth an ERROR again.
//
// Those go to debug. Any other record keeps its level: a peer that
// vanished without announcing it, or a failure of the log store, is still
// an ERROR.
type raftLogPolicy struct {
	closing atomic.Bool
	now     func() time.Time

	mu      sync.Mutex
	stopped map[raft.ServerID]stoppedPeer
}

type stoppedPeer struct {
	addr raft.ServerAddress
	at   time.Time
	back time.Time // when it announced it is back (zero: still away)
}

// stoppedPeerGrace is how long a peer's announced stop keeps the transport
// failures naming it at debug; backGrace how long they stay there once it
// is back: the connections raft pooled to the old process fail on their
// first use (a QUIC idle timeout), and raft's next attempt dials anew.
const (
	stoppedPeerGrace = 10 * time.Minute
	backGrace        = 30 * time.Second
)

func newRaftLogPolicy() *raftLogPolicy {
	return &raftLogPolicy{now: time.Now, stopped: map[raft.ServerID]stoppedPeer{}}
}

// peerStopping records that the peer id (at addr, if known) announced a
// clean stop.
func (p *raftLogPolicy) peerStopping(id raft.ServerID, addr raft.ServerAddress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped[id] = stoppedPeer{addr: addr, at: p.now()}
}

// peerBack records that a peer that announced its stop is back, and
// reports whether there was such a stop.
func (p *raftLogPolicy) peerBack(id raft.ServerID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	sp, ok := p.stopped[id]
	if ok && sp.back.IsZero() {
		sp.back = p.now()
		p.stopped[id] = sp
	}
	return ok
}

// returned reports whether the peer id is not known to be away: it never
// announced a stop, or announced its return since.
func (p *raftLogPolicy) returned(id raft.ServerID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	sp, ok := p.stopped[id]
	return !ok || !sp.back.IsZero()
}

// peerStopped reports whether the peer named by id or addr (either may be
// empty) announced a clean stop less than stoppedPeerGrace ago.
func (p *raftLogPolicy) peerStopped(id raft.ServerID, addr raft.ServerAddress) bool {
	if p == nil || (id == "" && addr == "") {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	for pid, sp := range p.stopped {
		if (id != "" && pid == id) || (addr != "" && sp.addr == addr) {
			if !sp.back.IsZero() {
				if now.Sub(sp.back) >= backGrace {
					delete(p.stopped, pid)
					return false
				}
				return true
			}
			return now.Sub(sp.at) < stoppedPeerGrace
		}
	}
	return false
}

// transportFailures are the raft records (by message) of an RPC or a conn
// that failed.
var transportFailures = []string{
	"failed to appendEntries to", "failed to heartbeat to", "failed to pipeline appendEntries",
	"failed to start pipeline replication to", "failed to make requestVote RPC", "failed to install snapshot",
	"failed to send snapshot to", "failed to accept connection", "failed to decode incoming command",
	"failed to flush response", "failed to contact",
}

func transportFailure(msg string) bool {
	for _, s := range transportFailures {
		if strings.HasPrefix(msg, s) {
			return true
		}
	}
	return false
}

// level returns the level to log a record of level lvl at.
func (p *raftLogPolicy) level(lvl slog.Level, msg string, args []any) slog.Level {
	if benignRaftWarning(msg) {
		return slog.LevelDebug
	}
	if lvl == slog.LevelWarn && firstElection(msg, args) {
		return slog.LevelInfo
	}
	if p == nil || lvl < slog.LevelWarn || !transportFailure(msg) {
		return lvl
	}
	if p.closing.Load() {
		return slog.LevelDebug
	}
	for i := 0; i+1 < len(args); i += 2 {
		switch k, _ := args[i].(string); k {
		case "error":
			if err, ok := args[i+1].(error); ok && errors.Is(err, raft.ErrTransportShutdown) {
				return slog.LevelDebug
			}
		case "peer", "target", "server-id":
			var id raft.ServerID
			var addr raft.ServerAddress
			switch v := args[i+1].(type) {
			case raft.Server:
				id, addr = v.ID, v.Address
			case raft.ServerID:
				id = v
			case raft.ServerAddress:
				addr = v
			}
			if p.peerStopped(id, addr) {
				return slog.LevelDebug
			}
		}
	}
	return lvl
}
