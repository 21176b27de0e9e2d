package node

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics of the node's own layer (the exchange and consensus register
// theirs in the same registry). Labels are routes, codes, statuses and
// outcomes: never subjects, identifiers, record ids or users.
type metrics struct {
	apiRequests    *prometheus.CounterVec
	apiLatency     *prometheus.HistogramVec
	records        *prometheus.CounterVec
	lookups        *prometheus.CounterVec
	lookupDistrict *prometheus.CounterVec
	answered       *prometheus.CounterVec
	auditFailures  prometheus.Counter
	sweptSubjects  prometheus.Counter
	// retentionDeleted counts records deleted at the end of retention.
	retentionDeleted prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, c Config) *metrics {
	m := &metrics{
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_api_requests_total", Help: "HTTP API requests by route and answer code.",
		}, []string{"route", "code"}),
		apiLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "credfed_api_request_seconds", Help: "HTTP API latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_records_submitted_total", Help: "Submitted records by outcome (accepted, duplicate, rejected).",
		}, []string{"outcome"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookups_total", Help: "Lookups asked of this coordinator, by decision.",
		}, []string{"decision"}),
		lookupDistrict: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookup_district_results_total", Help: "Per-district results of this coordinator's lookups, by status.",
		}, []string{"status"}),
		answered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_lookups_answered_total", Help: "Lookups this district answered for coordinators, by decision.",
		}, []string{"decision"}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_audit_failures_total", Help: "Operations refused because their audit entry could not be written.",
		}),
		sweptSubjects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_sweep_subjects_refreshed_total", Help: "Subjects queued for an index refresh because a record's display or retention period ended.",
		}),
		retentionDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_sweep_records_deleted_total", Help: "Records deleted because their retention period ended.",
		}),
	}
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "credfed_node_info", Help: "The node's role and region (always 1).",
	}, []string{"role", "region"})
	info.WithLabelValues(string(c.Role), c.Region).Set(1)
	reg.MustRegister(m.apiRequests, m.apiLatency, m.records, m.lookups, m.lookupDistrict, m.answered, m.auditFailures,
		m.sweptSubjects, m.retentionDeleted, info)
	return m
}

// metricsHandler serves /metrics, /healthz and /readyz on the plain-HTTP
// metrics listener.
func (n *Node) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.registry, promhttp.HandlerOpts{Registry: prometheus.WrapRegistererWithPrefix("credfed_", n.registry)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := n.Ready()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write([]byte(why + "\n"))
	})
	return mux
}
