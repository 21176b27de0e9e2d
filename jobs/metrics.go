package jobs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the runner; the only label is the job's name.
type metrics struct {
	runs        *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	failing     *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	inRun       *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_job_runs_total", Help: "Runs of a background job, by result (ok, error).",
		}, []string{"job", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "credfed_job_run_seconds", Help: "Duration of a background job's runs.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"job"}),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "credfed_job_consecutive_failures", Help: "Runs of a background job that failed in a row (0 after a good run).",
		}, []string{"job"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "credfed_job_last_success_timestamp_seconds", Help: "When a background job last ran without error (Unix time).",
		}, []string{"job"}),
		inRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "credfed_job_running", Help: "1 while a background job runs.",
		}, []string{"job"}),
	}
	if reg != nil {
		reg.MustRegister(m.runs, m.duration, m.failing, m.lastSuccess, m.inRun)
	}
	return m
}

func (m *metrics) running(job string, v float64) { m.inRun.WithLabelValues(job).Set(v) }

func (m *metrics) observe(job string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.runs.WithLabelValues(job, result).Inc()
	m.duration.WithLabelValues(job).Observe(d.Seconds())
}

func (m *metrics) failures(job string, n int64) { m.failing.WithLabelValues(job).Set(float64(n)) }

func (m *metrics) success(job string, at time.Time) {
	m.lastSuccess.WithLabelValues(job).Set(float64(at.UnixNano()) / 1e9)
}
