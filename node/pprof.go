package node

import (
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"

	"credfed/httpapi"
)

// metricsHandler is what the metrics listener at addr serves: /metrics,
// /healthz and /readyz (httpapi.MetricsHandler), and, when metrics.pprof
// is on, Go's profiles under /debug/pprof/. Validate refuses pprof on a
// metrics address that is not loopback; should the bound address still
// not be loopback (a name that resolved elsewhere), the profiles stay off.
// Serving them turns on the process's mutex and block profiles, which Go
// leaves empty by default, at sampling rates cheap enough for a live node.
func (n *Node) metricsHandler(addr net.Addr) http.Handler {
	h := httpapi.MetricsHandler(n.registry, n.Ready)
	if !n.cfg.Metrics.Pprof {
		return h
	}
	if ta, ok := addr.(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		n.log.Warn("metrics.pprof is on but the metrics listener is not on loopback: no profiles served", "metrics", addr.String())
		return h
	}
	enableContentionProfiles()
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// Sampling of the contention profiles while pprof is served: one mutex
// contention event in mutexProfileFraction, and blocking (channels,
// select, sync.Cond, locks) sampled about once per blockProfileRate of
// time blocked, so that long waits are always seen and short ones cost
// little. Both are settings of the whole process (nodes in one process
// share them), set whenever a node starts serving the profiles.
const (
	mutexProfileFraction = 100
	blockProfileRate     = 1_000_000 // ns
)

func enableContentionProfiles() {
	runtime.SetMutexProfileFraction(mutexProfileFraction)
	runtime.SetBlockProfileRate(blockProfileRate)
}
