package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
)

// federation is the credfed side: a local federation of a province, two
// cities and Config.Districts districts (4 by default), as separate
// `credfed node` processes or in this process.
type federation struct {
	dir    string
	layout localfed.Layout
	// processes mode
	procs map[string]*proc
	// in-process mode
	inproc *localfed.Federation
	http   *http.Client
}

// proc is a child process in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startProc starts bin with args in a process group of its own, its
// output to logPath; it gets SIGTERM should the bench die first.
func startProc(name, bin string, args, env []string, logPath string, stdout io.Writer) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to stop (SIGTERM: a node shuts down gracefully)
// and kills its process group if it has not exited within timeout.
func (p *proc) stop(timeout time.Duration) error {
	if p.exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
	return fmt.Errorf("bench: %s did not stop within %v of SIGTERM; killed", p.name, timeout)
}

// startFederation creates the federation's directory and starts its
// nodes (a province, 2 cities and districts): as processes of bin (`credfed node --config …`, pprof on when pprof), or in
// this process when bin is "".
func startFederation(ctx context.Context, dir, bin string, districts int, pprof bool, logf func(string, ...any)) (_ *federation, err error) {
	l, err := localfed.Create(localfed.Spec{Dir: dir, Districts: districts, Encrypt: true})
	if err != nil {
		return nil, err
	}
	f := &federation{dir: dir, layout: l, procs: map[string]*proc{}, http: &http.Client{Timeout: 10 * time.Second}}
	defer func() {
		if err != nil {
			f.stop()
		}
	}()
	if bin == "" {
		logger := slog.New(slog.DiscardHandler)
		if lf, err := os.Create(filepath.Join(dir, "nodes.log")); err == nil {
			defer func() { _ = lf.Sync() }()
			logger = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelWarn}))
		}
		if f.inproc, err = localfed.Start(localfed.Spec{Dir: dir, Districts: districts, Encrypt: true},
			node.Options{Logger: logger, RaftTiming: localfed.RaftTiming}); err != nil {
			return nil, err
		}
	} else {
		// The profiles only with --profile: serving them turns on the
		// nodes' mutex and block sampling, which the figures should not pay.
		var env []string
		if pprof {
			env = []string{"CREDFED_METRICS_PPROF=true"}
		}
		for _, n := range l.Nodes {
			p, err := startProc(n.Name, bin, []string{"node", "--config", n.ConfigPath, "--log-level", "warn"},
				env, filepath.Join(filepath.Dir(n.ConfigPath), "node.log"), nil)
			if err != nil {
				return nil, err
			}
			f.procs[n.Name] = p
		}
	}
	if err := f.waitReady(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	logf("federation ready: %d nodes (%s)", len(l.Nodes), f.mode())
	return f, nil
}

func (f *federation) mode() string {
	if f.inproc != nil {
		return "in-process"
	}
	return "processes"
}

// waitReady waits until every node's /readyz answers 200.
func (f *federation) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, n := range f.layout.Nodes {
		var last string
		err := wait.For(ctx, 100*time.Millisecond, func() bool {
			if p := f.procs[n.Name]; p != nil && p.exited() {
				last = "its process exited"
				cancel()
				return false
			}
			resp, err := f.http.Get("http://" + n.Metrics + "/readyz")
			if err != nil {
				last = err.Error()
				return false
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			last = strings.TrimSpace(string(b))
			return resp.StatusCode == http.StatusOK
		})
		if err != nil {
			msg := fmt.Sprintf("bench: node %s is not ready: %s", n.Name, last)
			if p := f.procs[n.Name]; p != nil {
				if t := tail(p.log, 15); strings.TrimSpace(t) != "" {
					msg += "; its log ends:\n" + t
				} else {
					msg += "; its log is empty"
				}
			}
			if ctx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
				// The run's --timeout, or the wait's own bound: say which.
				return fmt.Errorf("%s: %w", msg, ctx.Err())
			}
			return errors.New(msg)
		}
	}
	return nil
}

// stop stops every node: the districts (which drain their outboxes to
// the leader), then the cities, then the province.
func (f *federation) stop() error {
	if f.inproc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return f.inproc.Stop(ctx)
	}
	var errs []error
	var mu sync.Mutex
	for _, role := range []certs.Role{certs.District, certs.City, certs.Province} {
		var wg sync.WaitGroup
		for _, n := range f.layout.Nodes {
			if p := f.procs[n.Name]; p != nil && n.Role == role {
				wg.Go(func() {
					if err := p.stop(30 * time.Second); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				})
			}
		}
		wg.Wait()
	}
	return errors.Join(errs...)
}

// pids are the node processes (none in-process).
func (f *federation) pids() []int {
	var out []int
	for _, n := range f.layout.Nodes {
		if p := f.procs[n.Name]; p != nil {
			out = append(out, p.pid())
		}
	}
	return out
}

func (f *federation) pid(name string) int {
	if p := f.procs[name]; p != nil {
		return p.pid()
	}
	return 0
}

// client is an API client of node name with a client certificate.
func (f *federation) client(name string, files localfed.ClientFiles) (*api.Client, error) {
	n, ok := f.layout.Node(name)
	if !ok {
		return nil, fmt.Errorf("bench: no node %s", name)
	}
	return api.NewClient(api.Config{Address: "https://" + n.API, CACert: f.layout.CA, ClientCert: files.Cert, ClientKey: files.Key, Timeout: time.Minute})
}

// metric sums the samples of a metric (every label set) on node name's
// /metrics page.
func (f *federation) metric(ctx context.Context, name, metric string) (float64, error) {
	page, err := f.metricsPage(ctx, name)
	if err != nil {
		return 0, err
	}
	return sumMetric(strings.NewReader(page), metric)
}

// metricsPage reads node name's /metrics page (at most 64 MiB).
func (f *federation) metricsPage(ctx context.Context, name string) (string, error) {
	n, _ := f.layout.Node(name)
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+n.Metrics+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return string(b), err
}

// publishStages are the stages of a district's publishing pass
// (credfed_publish_stage_seconds).
var publishStages = []string{"read", "pseudonyms", "index", "ack"}

// stageTimes reads, for each publishing stage, the seconds spent in it
// and the passes that went through it (the histogram's _sum and _count)
// from a metrics page; a stage the page does not have is zero.
func stageTimes(page string) map[string][2]float64 {
	out := map[string][2]float64{}
	for _, stage := range publishStages {
		var t [2]float64
		for i, suffix := range []string{"_sum", "_count"} {
			t[i], _ = sumMetricWith(strings.NewReader(page), "credfed_publish_stage_seconds"+suffix, `stage="`+stage+`"`)
		}
		out[stage] = t
	}
	return out
}

// stageNote says how long each publishing stage took per pass between
// two metrics pages of one district: "" if no pass ran.
func stageNote(before, after string) string {
	b, a := stageTimes(before), stageTimes(after)
	var parts []string
	passes := 0.0
	for _, s := range publishStages {
		sec, n := a[s][0]-b[s][0], a[s][1]-b[s][1]
		if n <= 0 {
			continue
		}
		passes = max(passes, n)
		parts = append(parts, fmt.Sprintf("%s %.1f ms", s, 1000*sec/n))
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("%.0f publishing passes, each (mean) %s", passes, strings.Join(parts, ", "))
}

// sumMetric sums the samples of metric in a Prometheus text page.
func sumMetric(r io.Reader, metric string) (float64, error) {
	return sumMetricWith(r, metric, "")
}

// sumMetricWith is sumMetric of the samples whose labels hold label (a
// name="value" pair; "" matches every sample).
func sumMetricWith(r io.Reader, metric, label string) (float64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	total, found := 0.0, false
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, metric)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			if label != "" && !hasLabel(rest[1:end], label) {
				continue
			}
			rest = rest[end+1:]
		} else if label != "" {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		total, found = total+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("bench: no metric %s", metric)
	}
	return total, nil
}

// hasLabel reports whether a sample's label set (between its braces)
// holds the pair name="value".
func hasLabel(set, pair string) bool {
	return set == pair || strings.HasPrefix(set, pair+",") || strings.Contains(set, ","+pair+",") || strings.HasSuffix(set, ","+pair)
}

// count is the number of nodes of role.
func (f *federation) count(role certs.Role) int {
	n := 0
	for _, nd := range f.layout.Nodes {
		if nd.Role == role {
			n++
		}
	}
	return n
}

// profile takes a CPU profile (kind "profile") or an execution trace
// ("trace") over seconds, or a heap profile ("heap", seconds 0), of node
// name through its pprof endpoint and writes it to path.
func (f *federation) profile(ctx context.Context, name, kind string, seconds int, path string) error {
	n, _ := f.layout.Node(name)
	url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", n.Metrics, kind, seconds)
	if seconds == 0 {
		url = fmt.Sprintf("http://%s/debug/pprof/%s?gc=1", n.Metrics, kind) // heap: in use now (after a GC)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: time.Duration(seconds)*time.Second + 30*time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: profile of %s: %s", name, resp.Status)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, io.LimitReader(resp.Body, 256<<20)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// logTails are the ends of every node's log, for a harness failure.
func (f *federation) logTails(n int) string {
	var b strings.Builder
	for _, ln := range f.layout.Nodes {
		if p := f.procs[ln.Name]; p != nil {
			fmt.Fprintf(&b, "--- %s (%s):\n%s\n", ln.Name, p.log, tail(p.log, n))
		}
	}
	return b.String()
}
