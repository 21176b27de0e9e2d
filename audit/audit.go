// Package audit is the one way a node writes its audit log: every
// operation that must be registered (a lookup asked or answered, a record
// deleted, a refusal) goes through a Recorder, which stamps the entry,
// appends it durably, counts it, and turns a failed append into the
// refusal of the operation.
package audit

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/certs"
	"credfed/fault"
	"credfed/storage"
)

// Log is where entries go (storage.AuditLog implements it).
type Log interface {
	Append(entries ...storage.AuditEntry) ([]storage.AuditEntry, error)
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

// Record appends e durably, filling in the time (if zero) and the node. It
// returns ErrUnavailable, with the cause kept out of the message, when the
// append fails.
func (r *Recorder) Record(e storage.AuditEntry) error {
	if e.At.IsZero() {
		e.At = r.now()
	}
	e.At = e.At.UTC()
	if e.Node == "" {
		e.Node = r.node
	}
	if _, err := r.log.Append(e); err != nil {
		r.failures.Inc()
		// Never the error's text: a storage error may quote a key.
		r.logger.Error("audit append failed; refusing the operation", "operation", e.Operation, "error_type", fmt.Sprintf("%T", err))
		return &fault.Error{Kind: ErrUnavailable.Kind, Message: ErrUnavailable.Message, Cause: err}
	}
	r.entries.WithLabelValues(e.Operation, e.Decision).Inc()
	return nil
}

// By returns an entry of operation made by the verified caller id.
func By(id certs.Identity, operation string) storage.AuditEntry {
	return storage.AuditEntry{Caller: id.String(), Role: string(id.Role), Institution: id.Institution, Operation: operation}
}
