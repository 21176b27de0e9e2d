package node

import (
	"net"
	"net/http"
	"net/http/pprof"

	"credfed/httpapi"
)

// metricsHandler is what the metrics listener at addr serves: /metrics,
// /healthz and /readyz (httpapi.MetricsHandler), and, when metrics.pprof
// is on, Go's profiles under /debug/pprof/. Validate refuses pprof on a
// metrics address that is not loopback; should the bound address still
// not be loopback (a name that resolved elsewhere), the profiles stay off.
func (n *Node) metricsHandler(addr net.Addr) http.Handler {
	h := httpapi.MetricsHandler(n.registry, n.Ready)
	if !n.cfg.Metrics.Pprof {
		return h
	}
	if ta, ok := addr.(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		n.log.Warn("metrics.pprof is on but the metrics listener is not on loopback: no profiles served", "metrics", addr.String())
		return h
	}
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
