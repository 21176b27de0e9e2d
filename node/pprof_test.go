package node

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestConfigPprofNeedsLoopback: metrics.pprof is accepted with the metrics
// listener on loopback (the default included) and refused, naming the
// field, anywhere else.
func TestConfigPprofNeedsLoopback(t *testing.T) {
	for _, tc := range []struct {
		metrics string
		ok      bool
	}{
		{"", true}, {"127.0.0.1:9090", true}, {"127.0.0.5:0", true}, {"localhost:9090", true}, {"[::1]:9090", true},
		{"0.0.0.0:9090", false}, {":9090", false}, {"[::]:9090", false}, {"10.20.1.15:9090", false}, {"metrics.example.gov.cn:9090", false},
	} {
		text := validDistrict + "metrics:\n  pprof: true\n"
		if tc.metrics != "" {
			text = strings.Replace(text, "  api: 127.0.0.1:8443\n", "  api: 127.0.0.1:8443\n  metrics: \""+tc.metrics+"\"\n", 1)
		}
		c, _, err := loadConfigText(t, text)
		if err != nil {
			t.Fatalf("%q: %v", tc.metrics, err)
		}
		if !c.Metrics.Pprof {
			t.Fatalf("%q: metrics.pprof not read", tc.metrics)
		}
		err = c.Validate()
		if tc.ok {
			if err != nil {
				t.Errorf("metrics.pprof with listen.metrics %q: %v", tc.metrics, err)
			}
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "metrics.pprof" || !errors.Is(err, ErrConfig) {
			t.Errorf("metrics.pprof with listen.metrics %q: %v, want a *ConfigError naming metrics.pprof", tc.metrics, err)
		}
		c.Metrics.Pprof = false
		if err := c.Validate(); err != nil {
			t.Errorf("listen.metrics %q without pprof: %v", tc.metrics, err)
		}
	}
}

func TestConfigPprofFromEnv(t *testing.T) {
	c, _, err := loadConfigText(t, validDistrict)
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Pprof {
		t.Fatal("metrics.pprof is on by default")
	}
	if err := c.ApplyEnv(func(k string) string { return map[string]string{"CREDFED_METRICS_PPROF": "true"}[k] }); err != nil || !c.Metrics.Pprof {
		t.Fatalf("CREDFED_METRICS_PPROF=true: pprof %v, err %v", c.Metrics.Pprof, err)
	}
	err = c.ApplyEnv(func(k string) string { return map[string]string{"CREDFED_METRICS_PPROF": "on"}[k] })
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "CREDFED_METRICS_PPROF" {
		t.Errorf("CREDFED_METRICS_PPROF=on: %v, want a *ConfigError naming it", err)
	}
}

// serveMetrics serves a node's metrics handler as serve does, on a
// loopback listener, and returns its base URL.
func serveMetrics(t *testing.T, cfg Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: cfg, registry: prometheus.NewRegistry(), log: slog.New(slog.DiscardHandler)}
	srv := &http.Server{Handler: n.metricsHandler(ln.Addr()), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// TestMetricsPprofOffByDefaultOnWhenConfigured: the metrics listener
// serves no profiles unless metrics.pprof is on; with it, the profile
// index, a heap profile and a one-second CPU profile; /metrics either way.
func TestMetricsPprofOffByDefaultOnWhenConfigured(t *testing.T) {
	off := serveMetrics(t, Config{})
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1", "/debug/pprof/cmdline"} {
		if code, _ := get(t, off+p); code != http.StatusNotFound {
			t.Errorf("pprof off: GET %s = %d, want 404", p, code)
		}
	}
	if code, _ := get(t, off+"/metrics"); code != http.StatusOK {
		t.Errorf("pprof off: GET /metrics = %d", code)
	}
	// Serving the profiles sets process-wide sampling: off again after.
	t.Cleanup(func() { runtime.SetMutexProfileFraction(0); runtime.SetBlockProfileRate(0) })
	on := serveMetrics(t, Config{Metrics: MetricsConfig{Pprof: true}})
	if code, body := get(t, on+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof on: GET /debug/pprof/ = %d %.200s", code, body)
	}
	if code, body := get(t, on+"/debug/pprof/heap"); code != http.StatusOK || len(body) == 0 {
		t.Errorf("pprof on: GET /debug/pprof/heap = %d, %d bytes", code, len(body))
	}
	if code, body := get(t, on+"/debug/pprof/profile?seconds=1"); code != http.StatusOK || len(body) == 0 {
		t.Errorf("pprof on: GET /debug/pprof/profile = %d, %d bytes", code, len(body))
	}
	// Go samples no mutex contention unless asked: serving the profiles
	// turns it on, or the mutex profile would always come back empty.
	if code, body := get(t, on+"/debug/pprof/mutex?debug=1"); code != http.StatusOK || !strings.Contains(body, "sampling period=") || strings.Contains(body, "sampling period=0\n") {
		t.Errorf("pprof on: GET /debug/pprof/mutex = %d, want a nonzero sampling period: %.300s", code, body)
	}
	// The block profile's rate cannot be read back: a goroutine blocked
	// far longer than the rate must show up in it.
	ch := make(chan struct{})
	go func() { time.Sleep(50 * time.Millisecond); close(ch) }()
	<-ch
	if code, body := get(t, on+"/debug/pprof/block?debug=1"); code != http.StatusOK || !strings.Contains(body, "TestMetricsPprofOffByDefaultOnWhenConfigured") {
		t.Errorf("pprof on: GET /debug/pprof/block = %d, want the test's 50 ms wait in it: %.300s", code, body)
	}
	if code, _ := get(t, on+"/healthz"); code != http.StatusOK {
		t.Errorf("pprof on: GET /healthz = %d", code)
	}
	if code, _ := get(t, on+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("pprof on: GET /readyz of a node that does not serve = %d, want 503", code)
	}
}

// TestMetricsPprofOffWhenBoundElsewhere: should the metrics listener end
// up on an address that is not loopback, the profiles stay off.
func TestMetricsPprofOffWhenBoundElsewhere(t *testing.T) {
	n := &Node{cfg: Config{Metrics: MetricsConfig{Pprof: true}}, registry: prometheus.NewRegistry(), log: slog.New(slog.DiscardHandler)}
	h := n.metricsHandler(&net.TCPAddr{IP: net.ParseIP("10.20.1.15"), Port: 9090})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	if code, _ := get(t, "http://"+ln.Addr().String()+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof on a non-loopback listener: GET /debug/pprof/ = %d, want 404", code)
	}
}
