package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// indexCacheCounter is a store with an index cache (storage.DB, StateDB).
type indexCacheCounter interface {
	IndexCacheCounts() (hits, misses uint64)
}

// registerIndexCache registers the hits and misses of a store's index
// cache (storage.index_cache_mib), labelled by the store: records or
// state.
func registerIndexCache(reg prometheus.Registerer, store string, s indexCacheCounter) {
	labels := prometheus.Labels{"store": store}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "credfed_storage_index_cache_hits_total",
			Help: "Reads of a table index found decrypted in the store's index cache.", ConstLabels: labels},
			func() float64 { h, _ := s.IndexCacheCounts(); return float64(h) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "credfed_storage_index_cache_misses_total",
			Help: "Reads of a table index not in the store's index cache, which read and decrypt it again (raise storage.index_cache_mib when they keep up with the hits).", ConstLabels: labels},
			func() float64 { _, m := s.IndexCacheCounts(); return float64(m) }),
	)
}

// registerInfo registers credfed_node_info; every other metric belongs to
// the package that counts it, all in the node's one registry. Labels are
// roles, regions of nodes, routes, codes and outcomes: never subjects,
// identifiers, record ids or users.
func registerInfo(reg prometheus.Registerer, c Config) {
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "credfed_node_info", Help: "The node's role and region (always 1).",
	}, []string{"role", "region"})
	info.WithLabelValues(string(c.Role), c.Region).Set(1)
	reg.MustRegister(info)
}
