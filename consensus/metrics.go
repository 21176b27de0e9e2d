package consensus

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of one replica. Labels are command types and outcomes, never
// pseudonyms, regions of subjects or identifiers.
type metrics struct {
	applied          *prometheus.CounterVec
	refused          *prometheus.CounterVec
	indexUpdates     prometheus.Counter
	appliedIndex     prometheus.Gauge
	applyDuration    prometheus.Histogram
	snapshotDuration prometheus.Histogram
	snapshotBytes    prometheus.Gauge
	batchUpdates     prometheus.Histogram
	forwarded        *prometheus.CounterVec
	isLeader         prometheus.Gauge
	restores         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_consensus_commands_applied_total", Help: "Commands applied to this replica, by type.",
		}, []string{"type"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_consensus_commands_refused_total", Help: "Commands (or index groups) the FSM refused, by type.",
		}, []string{"type"}),
		indexUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_consensus_index_updates_applied_total", Help: "Index updates applied (including ones superseded by a newer sequence).",
		}),
		appliedIndex: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credfed_consensus_applied_index", Help: "Last Raft log index applied to this replica's state.",
		}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "credfed_consensus_apply_seconds", Help: "Time to apply one batch of log entries.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		snapshotDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "credfed_consensus_snapshot_seconds", Help: "Time to persist a snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		snapshotBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credfed_consensus_snapshot_bytes", Help: "Size of the last snapshot persisted.",
		}),
		batchUpdates: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "credfed_consensus_batch_updates", Help: "Index updates per log entry proposed by this leader.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_consensus_forwarded_total", Help: "Requests forwarded to the leader, by operation and outcome.",
		}, []string{"op", "outcome"}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credfed_consensus_leader", Help: "1 while this node leads the Raft cluster.",
		}),
		restores: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_consensus_snapshot_restores_total", Help: "Snapshots restored into this replica's state (catching up from the leader, or at start).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.applied, m.refused, m.indexUpdates, m.appliedIndex, m.applyDuration, m.snapshotDuration,
			m.snapshotBytes, m.batchUpdates, m.forwarded, m.isLeader, m.restores)
	}
	return m
}

// registerState adds the gauges read from the state: how many index
// entries it holds (0 on a node that keeps no index).
func (m *metrics) registerState(reg prometheus.Registerer, st *State) {
	if reg == nil {
		return
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "credfed_index_entries",
		Help: "Index entries (pseudonym, district) this node's replicated state holds; 0 on a district, which keeps no index.",
	}, func() float64 { return float64(st.IndexEntries()) }))
}
