package exchange

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/certs"
)

// metrics are the exchange's Prometheus metrics. Labels are bounded: an
// operation registered here (or "unknown"), a role, a code, a reason, a
// direction, an ALPN. Never a subject, an identity URI or a record id.
type metrics struct {
	serverRequests *prometheus.CounterVec   // op, peer_role, code
	clientRequests *prometheus.CounterVec   // op, peer_role, code
	serverLatency  *prometheus.HistogramVec // op
	clientLatency  *prometheus.HistogramVec // op
	openConns      *prometheus.GaugeVec     // alpn, direction
	bytes          *prometheus.CounterVec   // alpn, direction (in/out)
	refused        *prometheus.CounterVec   // direction, reason
	notAdmitted    *prometheus.CounterVec   // alpn, code
	panics         prometheus.Counter

	// Hot-path children, looked up once.
	reqBytesIn, reqBytesOut   prometheus.Counter
	raftBytesIn, raftBytesOut prometheus.Counter

	mu       sync.Mutex
	counters map[counterKey]prometheus.Counter
	latency  map[latencyKey]prometheus.Observer
}

type counterKey struct {
	client bool
	op     string
	role   certs.Role
	code   Code
}

type latencyKey struct {
	client bool
	op     string
}

// latencyBuckets span 50 µs to ~13 s.
var latencyBuckets = prometheus.ExponentialBuckets(50e-6, 2, 19)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		serverRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_exchange_server_requests_total",
			Help: "Requests answered by this node, by operation, caller role and result code (ok for success).",
		}, []string{"op", "peer_role", "code"}),
		clientRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_exchange_client_requests_total",
			Help: "Requests sent by this node, by operation, peer role and result code (ok for success).",
		}, []string{"op", "peer_role", "code"}),
		serverLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "credfed_exchange_server_request_duration_seconds",
			Help:    "Time from reading a request to sending its answer, by operation.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		clientLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "credfed_exchange_client_request_duration_seconds",
			Help:    "Time of a call from the caller's side (dial included when one was needed), by operation.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		openConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "credfed_exchange_open_connections",
			Help: "Open QUIC connections, by ALPN and direction (inbound, outbound).",
		}, []string{"alpn", "direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_exchange_bytes_total",
			Help: "Application bytes (frames, raft stream bytes), by ALPN and direction (in, out).",
		}, []string{"alpn", "direction"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_exchange_handshakes_refused_total",
			Help: "Connections refused, by direction (inbound: a client we refused; outbound: a server we refused) and reason.",
		}, []string{"direction", "reason"}),
		notAdmitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_exchange_not_admitted_total",
			Help: "Requests (alpn credfed/1) and raft connections (credfed-raft/1) of verified peers refused by the node's admission check (the region registry), by code.",
		}, []string{"alpn", "code"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_exchange_handler_panics_total",
			Help: "Handler panics recovered (answered internal).",
		}),
		counters: map[counterKey]prometheus.Counter{},
		latency:  map[latencyKey]prometheus.Observer{},
	}
	m.reqBytesIn = m.bytes.WithLabelValues(ALPN, "in")
	m.reqBytesOut = m.bytes.WithLabelValues(ALPN, "out")
	m.raftBytesIn = m.bytes.WithLabelValues(RaftALPN, "in")
	m.raftBytesOut = m.bytes.WithLabelValues(RaftALPN, "out")
	if reg != nil {
		reg.MustRegister(m.serverRequests, m.clientRequests, m.serverLatency, m.clientLatency,
			m.openConns, m.bytes, m.refused, m.notAdmitted, m.panics)
	}
	return m
}

func codeLabel(c Code) string {
	if c == "" {
		return "ok"
	}
	return string(c)
}

// knownCodes are the codes a label may name; a peer answers with any code
// it likes, and one of its own is counted as "other" (a label value is a
// bounded word, never what a peer chose: it could be an identifier, and
// each one a new series).
var knownCodes = map[Code]bool{"": true, CodeBadRequest: true, CodeUnauthenticated: true, CodeForbidden: true, CodeNotFound: true,
	CodeConflict: true, CodeDeadlineExceeded: true, CodeTooManyRequests: true, CodeTooEarly: true, CodeUnavailable: true,
	CodeInternal: true, CodeCanceled: true}

// codeOther is the label of a code no node of this build sends.
const codeOther Code = "other"

// request counts one request. op must be bounded (a registered operation,
// "unknown", or an operation this node calls).
func (m *metrics) request(client bool, op string, role certs.Role, code Code) {
	if !knownCodes[code] {
		code = codeOther
	}
	k := counterKey{client, op, role, code}
	m.mu.Lock()
	c := m.counters[k]
	if c == nil {
		vec := m.serverRequests
		if client {
			vec = m.clientRequests
		}
		r := string(role)
		if r == "" {
			r = "none"
		}
		c = vec.WithLabelValues(op, r, codeLabel(code))
		m.counters[k] = c
	}
	m.mu.Unlock()
	c.Inc()
}

func (m *metrics) observe(client bool, op string, seconds float64) {
	k := latencyKey{client, op}
	m.mu.Lock()
	o := m.latency[k]
	if o == nil {
		vec := m.serverLatency
		if client {
			vec = m.clientLatency
		}
		o = vec.WithLabelValues(op)
		m.latency[k] = o
	}
	m.mu.Unlock()
	o.Observe(seconds)
}

func direction(inbound bool) string {
	if inbound {
		return "inbound"
	}
	return "outbound"
}
