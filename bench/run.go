package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
)

// Metric of the province that counts index updates applied to its
// replica: intake is visible once it has grown by the records submitted.
const metricIndexApplied = "credfed_consensus_index_updates_applied_total"

// run is one bench run's state.
type run struct {
	cfg   Config
	start time.Time
	root  string
	logf  func(string, ...any)

	fed      *federation
	pg       *pgCluster // nil without the baseline
	front    *frontHandle
	rows     *rowMaker
	data     *Dataset
	province string
	intakeAt localfed.Node // the district that takes the intake

	credfedClients, frontClients []*api.Client
	pools                        map[int]*pgxpool.Pool // direct SQL, by concurrency

	nextSubject int
	// pgPeakKiB and pgFrontPeakKiB are the sampled peaks of the
	// PostgreSQL cluster's PSS, alone and with the front's RSS.
	pgPeakKiB, pgFrontPeakKiB atomic.Int64

	values  map[string][]float64 // figure → per-round credfed values
	bases   map[string][]float64 // figure → per-round baseline values
	notes   map[string]string
	skipped []string
}

// Run runs the bench: it builds the federation and the central copy,
// loads the data, measures the rounds, and tears everything down (also
// when ctx ends or a step fails). A missing PostgreSQL is no error: the
// result says the baseline was skipped.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	r := &run{cfg: cfg, start: time.Now(), values: map[string][]float64{}, bases: map[string][]float64{}, notes: map[string]string{},
		pools: map[int]*pgxpool.Pool{}}
	r.logf = func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "bench %5.1fs: %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
		}
	}
	m := machine()
	if r.root, err = os.MkdirTemp("", "credfed-bench-"); err != nil {
		return nil, err
	}
	defer func() {
		// The nodes' logs help with a failure, not with an interrupt.
		if cerr := r.close(err != nil && ctx.Err() == nil); cerr != nil && err == nil {
			err = cerr
		}
		if res != nil { // the whole run: the teardown too
			res.Seconds = time.Since(r.start).Seconds()
		}
	}()
	if err := r.setUp(ctx); err != nil {
		return nil, err
	}
	for _, s := range Schedule(cfg.Rounds, r.pg != nil) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("bench: stopped in round %d: %w", s.Round, err)
		}
		if err := r.step(ctx, s); err != nil {
			return nil, fmt.Errorf("bench: round %d, %s, %s: %w", s.Round, s.Phase, s.Side, err)
		}
	}
	return &Result{Machine: m, Topology: r.topology(), Figures: r.figures(), Skipped: r.skipped}, nil
}

// setUp starts both sides and loads the data.
func (r *run) setUp(ctx context.Context) error {
	bin := r.cfg.Executable
	if r.cfg.InProcess {
		bin = ""
		r.skipped = append(r.skipped, "cpu_per_lookup and the rss figures: the in-process mode cannot separate the nodes' CPU and memory from the load generator's")
	}
	var err error
	if r.fed, err = startFederation(ctx, filepath.Join(r.root, "fed"), bin, r.cfg.Districts, r.cfg.ProfileDir != "", r.logf); err != nil {
		return err
	}
	r.province = r.fed.layout.Nodes[0].Name
	r.intakeAt, _ = r.fed.layout.Node(r.fed.layout.Districts()[0])
	if r.rows, err = newRowMaker(credit.DefaultCatalog(), localfed.Department, time.Now()); err != nil {
		return err
	}
	var regions []string
	for _, name := range r.fed.layout.Districts() {
		n, _ := r.fed.layout.Node(name)
		regions = append(regions, n.Region)
	}
	r.data = newDataset(r.rows, regions, r.cfg.Subjects)
	r.nextSubject = r.cfg.Subjects
	pgBin, err := FindPostgres()
	if r.cfg.NoBaseline {
		pgBin, err = "", errors.New("not asked for (--no-baseline)")
	}
	if err != nil {
		r.skipped = append(r.skipped, "the PostgreSQL baseline: "+err.Error())
		r.logf("%v: measuring credfed alone", err)
	} else if r.pg, err = startPostgres(ctx, pgBin, r.logf); err != nil {
		return err
	}
	if err := r.loadCredfed(ctx); err != nil {
		return err
	}
	for range LookupClients {
		c, err := r.fed.client(r.province, r.fed.layout.Coordinator)
		if err != nil {
			return err
		}
		r.credfedClients = append(r.credfedClients, c)
	}
	if r.pg != nil {
		if err := r.setUpBaseline(ctx); err != nil {
			return err
		}
	}
	return r.warmUp(ctx)
}

// loadCredfed submits the data set through the districts' APIs (their
// departments, batches of 1,000, the districts at once) and waits until
// the province's index shows all of it.
func (r *run) loadCredfed(ctx context.Context) error {
	r.logf("loading %s into the federation …", r.data)
	before, err := r.fed.metric(ctx, r.province, metricIndexApplied)
	if err != nil {
		return err
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(r.data.Districts))
	for _, name := range r.fed.layout.Districts() {
		n, _ := r.fed.layout.Node(name)
		wg.Go(func() {
			c, err := r.fed.client(name, r.fed.layout.Departments[name])
			if err != nil {
				errs <- err
				return
			}
			defer c.CloseIdle()
			err = r.data.Rows(n.Region, IntakeBatch, func(rows []Row) error {
				batches, err := ndjsonBatches(rows, IntakeBatch)
				if err != nil {
					return err
				}
				return submitAll(ctx, c, batches)
			})
			if err != nil {
				errs <- fmt.Errorf("loading %s: %w", name, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	acked := time.Since(start)
	if _, err := r.waitIndexed(ctx, before+float64(r.data.Records), r.data.Records); err != nil {
		return err
	}
	r.logf("loaded: acknowledged in %.1fs, in the index after %.1fs", acked.Seconds(), time.Since(start).Seconds())
	// Every subject asked for is in both of its districts.
	return r.checkLookup(ctx, r.data.Dual[len(r.data.Dual)-1], 2)
}

// submitAll submits NDJSON batches one after another; every record must
// be accepted.
func submitAll(ctx context.Context, c *api.Client, batches [][]byte) error {
	for _, b := range batches {
		if err := submitBatch(ctx, c, b); err != nil {
			return err
		}
	}
	return nil
}

func submitBatch(ctx context.Context, c *api.Client, body []byte) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ans, status, err := c.SubmitNDJSON(cctx, body)
	if err != nil {
		return err
	}
	for _, res := range ans.Results {
		if res.Status != api.StatusAccepted {
			return fmt.Errorf("a record was not accepted (%d %s): %v", status, res.Status, res.Error)
		}
	}
	return nil
}

// waitIndexed waits until the province's replica has applied target
// index updates (records more are being made visible), and returns when.
func (r *run) waitIndexed(ctx context.Context, target float64, records int) (time.Time, error) {
	timeout := 2*time.Minute + time.Duration(records)*time.Millisecond
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last float64
	err := wait.For(wctx, 50*time.Millisecond, func() bool {
		v, err := r.fed.metric(wctx, r.province, metricIndexApplied)
		if err == nil {
			last = v
		}
		return err == nil && v >= target
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("the province's index did not show the records within %v (%.0f of %.0f updates applied): %w", timeout, last, target, err)
	}
	return time.Now(), nil
}

// checkLookup looks subject up at the province until the answer has
// records from want districts (bounded).
func (r *run) checkLookup(ctx context.Context, subject string, want int) error {
	c, err := r.fed.client(r.province, r.fed.layout.Coordinator)
	if err != nil {
		return err
	}
	defer c.CloseIdle()
	var last string
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = wait.For(wctx, 100*time.Millisecond, func() bool {
		a, err := c.Lookup(wctx, api.LookupRequest{Subject: subject, Purpose: Purpose, User: "bench", Reference: "基准核对"})
		if err != nil {
			last = err.Error()
			return false
		}
		ok := 0
		for _, d := range a.Districts {
			if d.Status == api.DistrictOK && len(d.Records) > 0 {
				ok++
			}
		}
		last = fmt.Sprintf("%d districts with records", ok)
		return ok >= want
	})
	if err != nil {
		return fmt.Errorf("a lookup of a loaded subject: %s, want %d districts: %w", last, want, err)
	}
	return nil
}

// setUpBaseline loads the same data into PostgreSQL, opens the pools and
// starts the front.
func (r *run) setUpBaseline(ctx context.Context) error {
	dsn := r.pg.dsn()
	if err := createSchema(ctx, dsn); err != nil {
		return err
	}
	load, err := newPool(ctx, dsn, 4)
	if err != nil {
		return err
	}
	defer load.Close()
	start := time.Now()
	// The districts' rows, a chunk at a time, to 4 loaders at once.
	produce := func(emit func([]Row) error) error {
		for _, name := range r.fed.layout.Districts() {
			n, _ := r.fed.layout.Node(name)
			if err := r.data.Rows(n.Region, 10_000, emit); err != nil {
				return err
			}
		}
		return nil
	}
	if err := parallelStream(ctx, produce, 4, func(ctx context.Context, rows []Row) error {
		return copyBatch(ctx, load, "bench-load", rows)
	}); err != nil {
		return fmt.Errorf("loading PostgreSQL: %w", err)
	}
	if _, err := load.Exec(ctx, "ANALYZE"); err != nil {
		return err
	}
	r.logf("loaded PostgreSQL in %.1fs", time.Since(start).Seconds())
	for _, size := range []int{1, LookupClients} {
		if r.pools[size], err = newPool(ctx, dsn, size); err != nil {
			return err
		}
	}
	if r.front, err = r.startFront(ctx); err != nil {
		return err
	}
	for range LookupClients {
		c, err := api.NewClient(api.Config{Address: "https://" + r.front.addr, CACert: r.fed.layout.CA,
			ClientCert: r.fed.layout.Coordinator.Cert, ClientKey: r.fed.layout.Coordinator.Key, Timeout: time.Minute})
		if err != nil {
			return err
		}
		r.frontClients = append(r.frontClients, c)
	}
	go r.sampleMemory(ctx)
	return nil
}

// parallelBatches hands rows to do in batches of size, workers at once,
// and returns the first error.
func parallelBatches(ctx context.Context, rows []Row, size, workers int, do func(context.Context, []Row) error) error {
	return parallelStream(ctx, func(emit func([]Row) error) error {
		for i := 0; i < len(rows); i += size {
			if err := emit(rows[i:min(i+size, len(rows))]); err != nil {
				return err
			}
		}
		return nil
	}, workers, do)
}

// errStopped stops a producer of parallelStream once a worker has failed
// (or ctx ended); that error is returned, not this one.
var errStopped = errors.New("bench: stopped")

// parallelStream runs do on each chunk produce emits, workers at once; a
// chunk is handed over only when a worker takes it, so that at most
// workers+1 chunks are held. It returns the first error, or ctx's.
func parallelStream(ctx context.Context, produce func(emit func([]Row) error) error, workers int, do func(context.Context, []Row) error) error {
	next := make(chan []Row)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return first != nil
	}
	for range workers {
		wg.Go(func() {
			for b := range next {
				if err := do(ctx, b); err != nil {
					fail(err)
				}
			}
		})
	}
	err := produce(func(rows []Row) error {
		if failed() || ctx.Err() != nil {
			return errStopped
		}
		select {
		case next <- rows:
			return nil
		case <-ctx.Done():
			return errStopped
		}
	})
	close(next)
	wg.Wait()
	if err != nil && !errors.Is(err, errStopped) {
		fail(err)
	}
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// frontHandle is the front, in its own process or in this one.
type frontHandle struct {
	addr   string
	proc   *proc
	inproc *FrontServer
}

func (r *run) startFront(ctx context.Context) (*frontHandle, error) {
	ca, err := certs.LoadCA(r.fed.dir)
	if err != nil {
		return nil, err
	}
	id := certs.Identity{Federation: ca.Federation, Role: certs.Province, Region: r.fed.layout.Nodes[0].Region}
	is, err := ca.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(r.root, "front")
	certPath, keyPath, err := is.WriteFiles(dir)
	if err != nil {
		return nil, err
	}
	fc := FrontConfig{Listen: "127.0.0.1:0", CA: r.fed.layout.CA, Cert: certPath, Key: keyPath, Federation: ca.Federation,
		DSN: r.pg.dsn(), Pool: LookupClients}
	if r.cfg.InProcess {
		f, err := StartFront(ctx, fc)
		if err != nil {
			return nil, err
		}
		return &frontHandle{addr: f.Addr(), inproc: f}, nil
	}
	addrFile := filepath.Join(dir, "addr")
	p, err := startProc("front", r.cfg.Executable, append([]string{"bench", "front", "--addr-file", addrFile}, fc.Args()...), nil,
		filepath.Join(dir, "front.log"), nil)
	if err != nil {
		return nil, err
	}
	h := &frontHandle{proc: p}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := wait.For(wctx, 50*time.Millisecond, func() bool {
		if p.exited() {
			cancel()
			return false
		}
		b, err := os.ReadFile(addrFile)
		h.addr = string(b)
		return err == nil && h.addr != ""
	}); err != nil {
		p.stop(10 * time.Second)
		return nil, fmt.Errorf("the front did not start: %w; its log ends:\n%s", err, tail(p.log, 10))
	}
	r.logf("the central copy's HTTPS front serves at %s (pool of %d)", h.addr, LookupClients)
	return h, nil
}

func (h *frontHandle) stop() error {
	if h.inproc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return h.inproc.Close(ctx)
	}
	return h.proc.stop(15 * time.Second)
}

func (h *frontHandle) pid() int {
	if h.proc == nil {
		return 0
	}
	return h.proc.pid()
}

// sampleMemory keeps the peaks of the PostgreSQL cluster's PSS (and with
// the front's RSS) until ctx ends or the cluster stops, once a second.
func (r *run) sampleMemory(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		pm := r.pg.postmaster()
		if pm > 0 {
			pss := treePSSKiB(pm)
			front := int64(0)
			if pid := r.front.pid(); pid > 0 {
				front, _ = statusKiB(pid, "VmRSS")
			}
			for _, p := range []struct {
				peak *atomic.Int64
				v    int64
			}{{&r.pgPeakKiB, pss}, {&r.pgFrontPeakKiB, pss + front}} {
				if p.v > p.peak.Load() {
					p.peak.Store(p.v)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.pg.done:
			return
		case <-t.C:
		}
	}
}

// warmUp runs a second of lookups on every side, not counted: every
// connection open, every statement prepared, caches warm.
func (r *run) warmUp(ctx context.Context) error {
	r.logf("warming up …")
	for _, side := range []Side{Credfed, Front, Direct} {
		do := r.lookupFunc(side, LookupClients)
		if do == nil {
			continue
		}
		if res := runLookups(ctx, LookupClients, time.Second, r.data.Dual, 0, do); res.count == 0 {
			return fmt.Errorf("bench: no lookup of the warm-up succeeded on %s: %v", side, res.firstErr)
		}
	}
	return nil
}

// lookupFunc is a side's lookup at a concurrency (nil: no such side).
func (r *run) lookupFunc(side Side, workers int) lookupFunc {
	switch side {
	case Credfed:
		return apiLookup(r.credfedClients[:workers])
	case Front:
		if r.front == nil {
			return nil
		}
		return apiLookup(r.frontClients[:workers])
	case Direct:
		pool := r.pools[workers]
		if pool == nil {
			return nil
		}
		items := visibleItems(Purpose)
		return func(ctx context.Context, _ int, subject, ref string) error {
			rows, err := pool.Query(ctx, stmtLookup, "spiffe://demo/coordinator/zhejiang/credit-office", "bench", Purpose, ref, subject, items)
			if err != nil {
				return err
			}
			recs, err := collectRecords(rows)
			if err != nil {
				return err
			}
			return checkAnswer(ptr(lookupAnswer(api.LookupRequest{Purpose: Purpose, Reference: ref}, recs)))
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// visibleItems are the catalog items a purpose sees.
func visibleItems(purpose string) []string {
	var out []string
	for _, it := range credit.DefaultCatalog().Items {
		if visibleTo(it, purpose) && it.Disclosure != credit.Internal {
			out = append(out, it.Code)
		}
	}
	return out
}

// step runs one measurement of the schedule.
func (r *run) step(ctx context.Context, s Step) error {
	switch s.Phase {
	case LookupC1, LookupC64:
		return r.lookupStep(ctx, s)
	case Intake:
		return r.intakeStep(ctx, s)
	}
	return fmt.Errorf("unknown phase %s", s.Phase)
}

// figure names of a lookup phase against a side.
func lookupFigure(p Phase, side Side) string {
	if side == Direct {
		return string(p) + "_direct"
	}
	return string(p)
}

// record stores a round's value of figure for side: credfed's value is
// the figure's own, a baseline's goes to the figure it is the baseline of.
func (r *run) record(figure string, side Side, v float64) {
	if side == Credfed {
		r.values[figure] = append(r.values[figure], v)
	} else {
		r.bases[figure] = append(r.bases[figure], v)
	}
}

func (r *run) note(figure, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.notes[figure] != "" {
		r.notes[figure] += "; "
	}
	r.notes[figure] += msg
}

func (r *run) lookupStep(ctx context.Context, s Step) error {
	workers := 1
	if s.Phase == LookupC64 {
		workers = LookupClients
	}
	do := r.lookupFunc(s.Side, workers)
	if do == nil {
		return nil
	}
	var cpuPids []int
	cpuChildren := false
	switch {
	case r.cfg.InProcess || s.Phase != LookupC64:
	case s.Side == Credfed:
		cpuPids = r.fed.pids()
	case s.Side == Front:
		cpuPids, cpuChildren = []int{r.pg.postmaster()}, true
	}
	var profiles sync.WaitGroup
	if s.Side == Credfed && s.Round == 1 {
		if s.Phase == LookupC64 {
			r.takeProfiles(ctx, &profiles, "lookup_c64", "profile", int(r.cfg.LookupDuration.Seconds())-1, r.province, r.intakeAt.Name)
		} else {
			// One client is bound by latency, not CPU: a trace shows the
			// waits (go tool trace -pprof=sched|syscall|net).
			r.takeProfiles(ctx, &profiles, "lookup_c1", "trace", min(int(r.cfg.LookupDuration.Seconds())-1, 2), append([]string{r.province}, r.fed.layout.Districts()...)...)
		}
	}
	perNode0 := r.nodeCPU(s.Side == Credfed && len(cpuPids) > 0)
	cpu0 := cpuTime(cpuPids, cpuChildren)
	var front0 time.Duration
	if len(cpuPids) > 0 && s.Side == Front {
		front0 = cpuTime([]int{r.front.pid()}, false)
	}
	busy0, busyErr := machineTicks()
	self0 := cpuTime([]int{os.Getpid()}, false)
	start := time.Now()
	res := runLookups(ctx, workers, r.cfg.LookupDuration, r.data.Dual, uint64(s.Round)<<8|uint64(workers), do)
	wall := time.Since(start)
	busy1, busyErr1 := machineTicks()
	self := cpuTime([]int{os.Getpid()}, false) - self0
	cpu := cpuTime(cpuPids, cpuChildren) - cpu0
	var frontCPU time.Duration
	if len(cpuPids) > 0 && s.Side == Front {
		frontCPU = cpuTime([]int{r.front.pid()}, false) - front0
	}
	perNode := r.nodeCPU(s.Side == Credfed && len(cpuPids) > 0)
	profiles.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	fig := lookupFigure(s.Phase, s.Side)
	r.record(fig, s.Side, res.rate())
	r.record(fig+"_p99", s.Side, res.p99())
	who := "credfed"
	if s.Side != Credfed {
		who = "baseline"
	}
	if res.errors > 0 {
		r.note(fig, "round %d: %d failed %s lookups (first: %v)", s.Round, res.errors, who, res.firstErr)
	}
	if res.count == 0 {
		return fmt.Errorf("no lookup succeeded in %v: %v", r.cfg.LookupDuration, res.firstErr)
	}
	if !r.cfg.InProcess && busyErr == nil && busyErr1 == nil && wall > 0 {
		// Whether the cores were full: every process of the machine,
		// and of it the bench's own clients (in this process).
		r.note(fig, "round %d %s: the machine %.2f of %d cores busy, of it the bench's clients %.2f", s.Round, s.Side,
			float64(time.Duration(busy1-busy0)*clockTick)/float64(wall), runtime.NumCPU(), float64(self)/float64(wall))
	}
	if len(cpuPids) > 0 {
		per := float64(cpu+frontCPU) / float64(time.Microsecond) / float64(res.count)
		r.record("cpu_per_lookup", s.Side, per)
		if s.Side == Credfed {
			var parts []string
			for _, role := range []struct {
				role certs.Role
				name string
			}{{certs.Province, "province"}, {certs.City, fmt.Sprintf("%d cities", r.fed.count(certs.City))},
				{certs.District, fmt.Sprintf("%d districts", r.fed.count(certs.District))}} {
				parts = append(parts, fmt.Sprintf("%s %.0f µs", role.name, float64(perNode[role.role]-perNode0[role.role])/float64(time.Microsecond)/float64(res.count)))
			}
			r.note("cpu_per_lookup", "round %d credfed: %s", s.Round, strings.Join(parts, " + "))
		}
		if s.Side == Front {
			r.note("cpu_per_lookup", "round %d baseline: PostgreSQL %.0f µs + front %.0f µs", s.Round,
				float64(cpu)/float64(time.Microsecond)/float64(res.count), float64(frontCPU)/float64(time.Microsecond)/float64(res.count))
		}
	}
	r.logf("round %d %s %s: %.0f lookups/s, p99 %.1f ms%s", s.Round, s.Phase, s.Side, res.rate(), res.p99(), errNote(res.errors))
	return nil
}

func errNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(", %d errors", n)
}

// nodeCPU is the CPU the node processes have used, by role (nothing
// unless on).
func (r *run) nodeCPU(on bool) map[certs.Role]time.Duration {
	out := map[certs.Role]time.Duration{}
	if !on {
		return out
	}
	for _, n := range r.fed.layout.Nodes {
		if pid := r.fed.pid(n.Name); pid > 0 {
			out[n.Role] += cpuTime([]int{pid}, false)
		}
	}
	return out
}

// takeProfiles starts CPU profiles (kind "profile") or execution traces
// ("trace") of the nodes for seconds, or takes their heap profiles
// ("heap", in use now), into ProfileDir (processes only).
func (r *run) takeProfiles(ctx context.Context, wg *sync.WaitGroup, what, kind string, seconds int, nodes ...string) {
	if r.cfg.ProfileDir == "" || r.cfg.InProcess {
		return
	}
	if kind != "heap" {
		seconds = max(seconds, 1)
	}
	if err := os.MkdirAll(r.cfg.ProfileDir, 0o755); err != nil {
		r.logf("profiles: %v", err)
		return
	}
	for _, n := range nodes {
		name := what + "-" + n + ".pprof"
		switch kind {
		case "trace":
			name = what + "-" + n + ".trace"
		case "heap":
			name = what + "-" + n + "-heap.pprof"
		}
		path := filepath.Join(r.cfg.ProfileDir, name)
		wg.Go(func() {
			if err := r.fed.profile(ctx, n, kind, seconds, path); err != nil {
				r.logf("profile of %s: %v", n, err)
				return
			}
			r.logf("%s of %s during %s (%d s): %s", kind, n, what, seconds, path)
		})
	}
}

// intakeStep measures bulk intake at one district: credfed through its
// API, or the central copy by COPY or INSERT; always new subjects.
func (r *run) intakeStep(ctx context.Context, s Step) error {
	n := r.cfg.Intake
	first := r.nextSubject
	r.nextSubject += n
	rows := intakeRows(r.rows, r.intakeAt.Region, first, n, fmt.Sprintf("IN%d%s", s.Round, s.Side))
	if s.Side != Credfed {
		pool := r.pools[LookupClients]
		batch := copyBatch
		if s.Side == Insert {
			batch = insertBatch
		}
		start := time.Now()
		if err := parallelBatches(ctx, rows, IntakeBatch, r.cfg.IntakeClients, func(ctx context.Context, b []Row) error {
			return batch(ctx, pool, "spiffe://demo/department/"+r.intakeAt.Region+"/"+localfed.Department, b)
		}); err != nil {
			return err
		}
		rate := float64(n) / time.Since(start).Seconds()
		if s.Side == Copy {
			r.record("intake", s.Side, rate)
			r.record("intake_indexed", s.Side, rate) // visible at commit
		} else {
			r.record("intake_insert", s.Side, rate)
		}
		r.logf("round %d intake %s: %.0f records/s", s.Round, s.Side, rate)
		return nil
	}
	batches, err := ndjsonBatches(rows, IntakeBatch)
	if err != nil {
		return err
	}
	dept, err := r.fed.client(r.intakeAt.Name, r.fed.layout.Departments[r.intakeAt.Name])
	if err != nil {
		return err
	}
	defer dept.CloseIdle()
	before, err := r.fed.metric(ctx, r.province, metricIndexApplied)
	if err != nil {
		return err
	}
	// The intake district's publishing stages, noted per round (the page
	// is read again once the index shows the records).
	stagesBefore, _ := r.fed.metricsPage(ctx, r.intakeAt.Name)
	var profiles sync.WaitGroup
	if s.Round == 1 {
		// Long enough to see the acknowledgements and, for the most
		// part, the publishing to the index.
		r.takeProfiles(ctx, &profiles, "intake", "profile", min(max(n/5_000, 2), 30), r.intakeAt.Name, r.province)
	}
	start := time.Now()
	next := make(chan []byte)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range r.cfg.IntakeClients {
		wg.Go(func() {
			for b := range next {
				if err := submitBatch(ctx, dept, b); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, b := range batches {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		next <- b
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return firstErr
	}
	acked := time.Since(start)
	indexedAt, err := r.waitIndexed(ctx, before+float64(n), n)
	indexed := indexedAt.Sub(start)
	if s.Round == 1 {
		// What the district holds in memory at the end of an ingest,
		// taken once the index shows it: a heap profile (and the GC it
		// runs) inside the index_lag window would lengthen it.
		r.takeProfiles(ctx, &profiles, "intake", "heap", 0, r.intakeAt.Name)
	}
	profiles.Wait()
	r.record("intake", s.Side, float64(n)/acked.Seconds())
	if err != nil {
		r.record("intake_indexed", s.Side, math.NaN())
		r.record("index_lag", s.Side, math.NaN())
		r.note("intake_indexed", "round %d: %v", s.Round, err)
		r.logf("round %d intake credfed: %.0f records/s acknowledged; %v", s.Round, float64(n)/acked.Seconds(), err)
		return ctx.Err()
	}
	r.record("intake_indexed", s.Side, float64(n)/indexed.Seconds())
	r.record("index_lag", s.Side, (indexed - acked).Seconds())
	if after, err := r.fed.metricsPage(ctx, r.intakeAt.Name); err == nil && stagesBefore != "" {
		if note := stageNote(stagesBefore, after); note != "" {
			r.note("index_lag", "round %d at %s: %s", s.Round, r.intakeAt.Name, note)
		}
	}
	r.logf("round %d intake credfed: %.0f records/s acknowledged, %.0f records/s until the index showed them (%.1fs after the last acknowledgement)",
		s.Round, float64(n)/acked.Seconds(), float64(n)/indexed.Seconds(), (indexed - acked).Seconds())
	return r.checkLookup(ctx, rows[len(rows)-1].Subject, 1)
}

// close tears everything down: clients, the front, the pools,
// PostgreSQL, the nodes, the temporary directories. failed prints the
// nodes' logs first.
func (r *run) close(failed bool) error {
	var errs []error
	for _, c := range append(r.credfedClients, r.frontClients...) {
		c.CloseIdle()
	}
	if r.front != nil {
		errs = append(errs, r.front.stop())
	}
	for _, p := range r.pools {
		p.Close()
	}
	if r.pg != nil {
		errs = append(errs, r.pg.stop(30*time.Second))
	}
	if r.fed != nil {
		if failed {
			r.logf("the nodes' logs end:\n%s", r.fed.logTails(10))
		}
		errs = append(errs, r.fed.stop())
	}
	if r.root != "" {
		errs = append(errs, os.RemoveAll(r.root))
	}
	return errors.Join(errs...)
}
