// Package audit is the one way a node writes its audit log: every
// operation that must be registered (a lookup asked or answered, a record
// deleted, a refusal) goes through a Recorder, which stamps the entry,
// appends it durably, counts it, and turns a failed append into the
// refusal of the operation.
package audit

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/certs"
	"credfed/credit"
	"credfed/fault"
	"credfed/storage"
)

// Log is where entries go (storage.AuditLog implements it).
type Log interface {
	Append(entries ...storage.AuditEntry) ([]storage.AuditEntry, error)
}

// DeferredLog is a Log that can let entries nothing waits on share a later
// commit (storage.AuditLog.AppendDeferred).
type DeferredLog interface {
	AppendDeferred(entries ...storage.AuditEntry) ([]storage.AuditEntry, error)
}

// appendTo appends to l, deferred when asked and l can.
func appendTo(l Log, deferred bool, entries []storage.AuditEntry) ([]storage.AuditEntry, error) {
	if d, ok := l.(DeferredLog); ok && deferred {
		return d.AppendDeferred(entries...)
	}
	return l.Append(entries...)
}

// Recorder writes a node's audit entries.
type Recorder struct {
	log      Log
	node     string
	now      func() time.Time
	logger   *slog.Logger
	entries  *prometheus.CounterVec
	failures prometheus.Counter
}

// New returns the recorder of the node whose region is node. now stamps
// entries that carry no time (nil is time.Now); reg may be nil.
func New(log Log, node string, now func() time.Time, logger *slog.Logger, reg prometheus.Registerer) *Recorder {
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{log: log, node: node, now: now, logger: logger,
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_audit_entries_total", Help: "Audit entries written, by operation and decision.",
		}, []string{"operation", "decision"}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_audit_failures_total", Help: "Operations refused because their audit entry could not be written.",
		}),
	}
	if reg != nil {
		reg.MustRegister(r.entries, r.failures)
	}
	return r
}

// ErrUnavailable is the refusal of an operation whose entry could not be
// written (fault.Unavailable): an operation that cannot be registered is
// not carried out, nor answered.
var ErrUnavailable = fault.New(fault.Unavailable, "the audit log could not be written; nothing was answered")

// Record appends e, and the notes that go with it, durably and in one
// append, filling in the time (if zero) and the node, and bounding every
// text field (Bound). It returns ErrUnavailable, with the cause kept out of
// the message, when the append fails.
func (r *Recorder) Record(e storage.AuditEntry, notes ...storage.AuditEntry) error {
	return r.record(false, e, notes)
}

// RecordDeferred is Record for an entry nothing waits on (a lookup's
// outcome after its answer): as durable when it returns, it may wait a few
// milliseconds to share another append's commit (DeferredLog).
func (r *Recorder) RecordDeferred(e storage.AuditEntry, notes ...storage.AuditEntry) error {
	return r.record(true, e, notes)
}

func (r *Recorder) record(deferred bool, e storage.AuditEntry, notes []storage.AuditEntry) error {
	all := append([]storage.AuditEntry{e}, notes...)
	for i := range all {
		if all[i].At.IsZero() {
			all[i].At = r.now()
		}
		all[i].At = all[i].At.UTC()
		if all[i].Node == "" {
			all[i].Node = r.node
		}
		bound(&all[i])
	}
	if _, err := appendTo(r.log, deferred, all); err != nil {
		r.failures.Inc()
		// Never the error's text: a storage error may quote a key.
		r.logger.Error("audit append failed; refusing the operation", "operation", e.Operation, "error_type", fmt.Sprintf("%T", err))
		return &fault.Error{Kind: ErrUnavailable.Kind, Message: ErrUnavailable.Message, Cause: err}
	}
	for _, e := range all {
		r.entries.WithLabelValues(e.Operation, e.Decision).Inc()
	}
	return nil
}

// Bounds on what an entry keeps of a field: MaxField bytes of what a
// caller states (user, purpose, case reference, authorization,
// authentication), MaxName bytes of a name (node, caller, role,
// institution, district, operation, reason) and of a record id.
// Validation refuses longer input first; the bounds keep a refused
// request's input out of the log.
const (
	MaxField = 256
	MaxName  = 1024
)

// bound cuts every text field of e to its bound and replaces what is not
// text (credit.TextRune) with U+FFFD: an entry never keeps a control,
// format or invisible character, nor more than the bound, of what a caller
// sent.
func bound(e *storage.AuditEntry) {
	for _, f := range []*string{&e.User, &e.Purpose, &e.Reference, &e.Authorization, &e.Authentication} {
		*f = Bound(*f, MaxField)
	}
	for _, f := range []*string{&e.Node, &e.Caller, &e.Requester, &e.Role, &e.Institution, &e.District, &e.Operation, &e.Reason} {
		*f = Bound(*f, MaxName)
	}
	if len(e.Records) > 0 {
		recs := make([]string, len(e.Records))
		for i, id := range e.Records {
			recs[i] = Bound(id, MaxName)
		}
		e.Records = recs
	}
}

// Bound returns s if it is text (credit.TextRune) of at most max bytes;
// otherwise s with every invalid byte and every rune that is not text
// replaced by U+FFFD and, if that is longer than max bytes, cut at a rune
// boundary to end in "…" within max bytes.
func Bound(s string, max int) string {
	if len(s) <= max && isText(s) {
		return s
	}
	const ellipsis = "…"
	if max < len(ellipsis) {
		return ""
	}
	var b strings.Builder
	for _, r := range s {
		if !credit.TextRune(r) {
			r = utf8.RuneError
		}
		if b.Len()+utf8.RuneLen(r) > max {
			out := b.String()
			for len(out)+len(ellipsis) > max {
				_, n := utf8.DecodeLastRuneInString(out)
				out = out[:len(out)-n]
			}
			return out + ellipsis
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !credit.TextRune(r) {
			return false
		}
	}
	return true
}

// By returns an entry of operation made by the verified caller id.
func By(id certs.Identity, operation string) storage.AuditEntry {
	return storage.AuditEntry{Caller: id.String(), Role: string(id.Role), Institution: id.Institution, Operation: operation}
}
