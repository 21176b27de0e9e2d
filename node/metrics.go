package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

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
