package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/jobs"
	"credfed/pseudonym"
	"credfed/publish"
	"credfed/storage"
)

// Node is one running credfed node.
type Node struct {
	cfg      Config
	log      *slog.Logger
	registry *prometheus.Registry
	metrics  *metrics

	cert     tls.Certificate
	caCert   *x509.Certificate
	revs     *certs.RevocationList
	verifier *certs.Verifier
	key      credit.PseudonymKey // coordinators only

	db    *storage.DB
	state *storage.StateDB // the replicated state (consensus)
	ep    *exchange.Endpoint
	rep   *consensus.Replica
	pub   *publish.Publisher // districts only
	jobs  *jobs.Runner
	names *pseudonym.Resolver
	now   func() time.Time // the clock of record dates (Options.Now)

	sweepMu sync.Mutex // one Sweep at a time

	oldCatalogsMu sync.Mutex
	oldCatalogs   map[int]*credit.Catalog // earlier catalog versions the sweep needed

	apiLn      net.Listener
	api        *http.Server
	metricsLn  net.Listener
	metricsSrv *http.Server

	serving      atomic.Bool
	shutdownOnce sync.Once
	shutdownErr  error
	done         chan struct{}
}

// Options are what a caller embedding nodes (the demo, tests) may set
// beyond the configuration.
type Options struct {
	// Logger receives the node's log; nil builds one from Config.Log on
	// standard error.
	Logger *slog.Logger
	// RaftTiming shortens Raft's timeouts (tests, the demo on loopback);
	// zero keeps hashicorp/raft's defaults.
	RaftTiming RaftTiming
	// Now replaces the clock for record dates (tests); nil is time.Now.
	Now func() time.Time
}

// RaftTiming overrides Raft's timeouts.
type RaftTiming struct {
	Heartbeat, Election, LeaderLease, Commit time.Duration
}

// Start validates cfg, opens the node's storage, joins the exchange and
// Raft, and serves the API and metrics. It returns once everything
// listens; the node may still be waiting for a leader (see /readyz).
func Start(cfg Config, opts Options) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = newLogger(cfg.Log)
	}
	n := &Node{cfg: cfg, log: log.With("node", cfg.Region), registry: prometheus.NewRegistry(), done: make(chan struct{}), now: opts.Now}
	if n.now == nil {
		n.now = time.Now
	}
	// Every metric name starts with credfed_ (API.md), the runtime's too.
	prometheus.WrapRegistererWithPrefix("credfed_", n.registry).MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	n.metrics = newMetrics(n.registry, cfg)
	ok := false
	defer func() {
		if !ok {
			n.closeAll()
		}
	}()
	if err := n.loadTrust(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data_dir: %w", err)
	}
	var encKey []byte
	if cfg.EncryptionKeyFile != "" {
		var err error
		if encKey, err = storage.LoadEncryptionKey(cfg.EncryptionKeyFile); err != nil {
			return nil, fmt.Errorf("node: encryption_key_file: %w", err)
		}
	}
	db, err := storage.Open(storage.Options{Dir: filepath.Join(cfg.DataDir, "db"), EncryptionKey: encKey, Logger: n.log,
		Boundaries: n.recordBoundaries})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n.db = db
	state, err := storage.OpenState(storage.Options{Dir: filepath.Join(cfg.DataDir, "state"), EncryptionKey: encKey, Logger: n.log})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n.state = state
	if cfg.PseudonymKeyFile != "" {
		if n.key, err = credit.LoadPseudonymKey(cfg.PseudonymKeyFile); err != nil {
			return nil, fmt.Errorf("node: pseudonym_key_file: %w", err)
		}
	}
	ep, err := exchange.New(exchange.Config{
		Certificate: n.cert, Verifier: n.verifier, Addr: cfg.Listen.Exchange,
		Logger: n.log, Registerer: n.registry,
	})
	if err != nil {
		return nil, fmt.Errorf("node: listen.exchange: %w", err)
	}
	n.ep = ep
	advertise, err := advertised(cfg.Advertise.Exchange, ep.Addr().String(), "advertise.exchange")
	if err != nil {
		return nil, err
	}
	rep, err := consensus.Open(consensus.Config{
		Self: cfg.Identity(), Advertise: advertise, Dir: filepath.Join(cfg.DataDir, "raft"),
		DB: state.Badger(), Endpoint: ep, Revocations: n.revs, Voter: cfg.IsVoter(),
		Logger: n.log, Registerer: n.registry,
		HeartbeatTimeout: opts.RaftTiming.Heartbeat, ElectionTimeout: opts.RaftTiming.Election,
		LeaderLeaseTimeout: opts.RaftTiming.LeaderLease, CommitTimeout: opts.RaftTiming.Commit,
		SnapshotThreshold: cfg.Raft.SnapshotThreshold, TrailingLogs: cfg.Raft.TrailingLogs,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n.rep = rep
	n.names = pseudonym.NewResolver(pseudonym.ResolverConfig{Self: cfg.Identity(), Key: n.key, TestMode: cfg.TestMode,
		Endpoint: ep, Registry: rep.State(), Coordinators: cfg.Coordinators, Cache: db, Logger: n.log})
	if n.key.Valid() {
		if err := pseudonym.Serve(ep, pseudonym.ServeConfig{Key: n.key, TestMode: cfg.TestMode, Registerer: n.registry}); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	n.registerExchange()
	n.jobs = jobs.NewRunner(db, n.log, n.registry)
	if cfg.Role == certs.District {
		n.pub = publish.New(publish.Config{District: cfg.Region, Outbox: db, Index: replicaIndex{rep},
			Resolve: n.names.Resolve, Now: n.now, Registerer: n.registry})
		if err := n.jobs.Start(n.pub.Job()); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		interval := time.Duration(cfg.SweepInterval)
		if err := n.jobs.Start(jobs.Job{Name: "sweep", Interval: interval, Run: func(ctx context.Context, p *jobs.Progress) error {
			res, err := n.Sweep(ctx)
			p.Set("subjects_refreshed", int64(res.Subjects))
			p.Set("records_deleted", int64(res.Deleted))
			p.Set("subjects_failed", int64(res.Failed))
			return err
		}}); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	if err := n.serve(opts); err != nil {
		return nil, err
	}
	if cfg.Raft.Bootstrap {
		if err := n.bootstrap(); err != nil {
			return nil, err
		}
	}
	ok = true
	n.log.Info("node started", "role", cfg.Role, "exchange", advertise, "api", n.APIAddr(), "metrics", n.MetricsAddr())
	return n, nil
}

// loadTrust reads the CA and the node's certificate and checks that the
// certificate is the configured node's.
func (n *Node) loadTrust() error {
	c := n.cfg
	ca, err := certs.LoadCertFile(c.TLS.CA)
	if err != nil {
		return fmt.Errorf("node: tls.ca: %w", err)
	}
	pair, err := certs.LoadKeyPair(c.TLS.Cert, c.TLS.Key)
	if err != nil {
		return fmt.Errorf("node: tls.cert/tls.key: %w", err)
	}
	n.caCert, n.cert = ca, pair
	n.revs = certs.NewRevocationList()
	n.verifier = certs.NewVerifier(ca, c.Federation, n.revs)
	id, err := n.verifier.Verify([]*x509.Certificate{pair.Leaf}, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return fmt.Errorf("node: tls.cert: %w", err)
	}
	if id != c.Identity() {
		return fieldErr("tls.cert", "certificate is for %s, but this node is configured as %s", id, c.Identity())
	}
	return nil
}

// advertised returns the address to advertise: the configured one, or
// the listen address if it names a host.
func advertised(configured, listen, field string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fieldErr(field, "%v", err)
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return "", fieldErr(field, "required when listening on %s: other nodes need an address they can reach", listen)
	}
	return listen, nil
}

// serve starts the HTTPS API and the metrics listener.
func (n *Node) serve(opts Options) error {
	apiLn, err := net.Listen("tcp", n.cfg.Listen.API)
	if err != nil {
		return fmt.Errorf("node: listen.api: %w", err)
	}
	n.apiLn = apiLn
	tlsCfg := n.verifier.ServerConfig(n.cert, certs.OptionalClientCert, "h2", "http/1.1")
	h := &handlers{n: n, now: n.now}
	n.api = &http.Server{
		Handler:           n.router(h.routes()),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := n.api.ServeTLS(apiLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("API server stopped", "error", err)
		}
	}()
	mLn, err := net.Listen("tcp", n.cfg.Listen.Metrics)
	if err != nil {
		return fmt.Errorf("node: listen.metrics: %w", err)
	}
	n.metricsLn = mLn
	n.metricsSrv = &http.Server{Handler: n.metricsHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := n.metricsSrv.Serve(mLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("metrics server stopped", "error", err)
		}
	}()
	n.serving.Store(true)
	return nil
}

// bootstrap starts a new federation (province, first start only).
func (n *Node) bootstrap() error {
	cat := credit.DefaultCatalog()
	if p := n.cfg.Raft.BootstrapCatalog; p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("node: raft.bootstrap_catalog: %w", err)
		}
		if cat, err = credit.LoadCatalogYAML(data); err != nil {
			return fmt.Errorf("node: raft.bootstrap_catalog: %w", err)
		}
	}
	api := n.cfg.Advertise.API
	if api == "" {
		api = n.APIAddr()
	}
	self := consensus.Region{Path: n.cfg.Region, Name: n.cfg.Name, Role: n.cfg.Role,
		Exchange: n.ExchangeAddr(), API: "https://" + api, Voter: true}
	regions := []consensus.Region{self}
	for _, r := range n.cfg.Raft.BootstrapRegions {
		if r.Path == n.cfg.Region {
			continue
		}
		voter := r.Role.IsCoordinatorNode()
		if r.Voter != nil {
			voter = *r.Voter
		}
		regions = append(regions, consensus.Region{Path: r.Path, Name: r.Name, Role: r.Role, Exchange: r.Exchange, API: r.API, Voter: voter})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.rep.Bootstrap(ctx, regions, cat); err != nil {
		return fmt.Errorf("node: bootstrap: %w", err)
	}
	return nil
}

// replicaIndex is the replica as the publisher's index.
type replicaIndex struct{ rep *consensus.Replica }

func (r replicaIndex) SubmitIndex(ctx context.Context, u []consensus.IndexUpdate) error {
	return r.rep.SubmitIndex(ctx, u)
}

func (r replicaIndex) Catalog() *credit.Catalog { return r.rep.State().Catalog() }

// notifyPublisher tells a district's publisher that the outbox has news.
func (n *Node) notifyPublisher() {
	if n.pub != nil {
		n.jobs.Wake(publish.JobName)
	}
}

// resolvePseudonyms returns subjects' pseudonyms.
func (n *Node) resolvePseudonyms(ctx context.Context, subjects []string) ([]credit.Pseudonym, error) {
	return n.names.Resolve(ctx, subjects)
}

// Ready reports whether the node serves and knows the federation: a leader
// and a catalog.
func (n *Node) Ready() (bool, string) {
	switch {
	case !n.serving.Load():
		return false, "not serving"
	case n.rep.State().Catalog() == nil:
		return false, "catalog not replicated yet"
	}
	if _, addr := n.rep.Leader(); addr == "" {
		return false, "no Raft leader known"
	}
	return true, "ready"
}

// Shutdown stops the node gracefully: it stops accepting API requests and
// lets those in flight finish, drains the outbox if a leader is reachable,
// then leaves Raft and closes the exchange and the database. ctx bounds
// the whole (Config.ShutdownTimeout is the usual budget).
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() {
		n.serving.Store(false)
		var errs []error
		if n.api != nil {
			if err := n.api.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("API: %w", err))
			}
		}
		if n.pub != nil {
			dctx, cancel := context.WithTimeout(ctx, time.Duration(n.cfg.ShutdownTimeout)/3)
			if err := n.pub.Drain(dctx); err != nil {
				n.log.Warn("outbox not fully drained at shutdown; it stays on disk and drains at the next start", "error", err)
			}
			cancel()
		}
		errs = append(errs, n.closeAll())
		n.shutdownErr = errors.Join(errs...)
		close(n.done)
	})
	return n.shutdownErr
}

// closeAll closes whatever was opened, in reverse order of opening.
func (n *Node) closeAll() error {
	var errs []error
	if n.api != nil {
		n.api.Close()
	}
	if n.jobs != nil {
		n.jobs.Stop()
	}
	if n.rep != nil {
		if err := n.rep.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft: %w", err))
		}
	}
	if n.ep != nil {
		if err := n.ep.Close(); err != nil {
			errs = append(errs, fmt.Errorf("exchange: %w", err))
		}
	}
	if n.state != nil {
		if err := n.state.Close(); err != nil {
			errs = append(errs, fmt.Errorf("state: %w", err))
		}
	}
	if n.db != nil {
		if err := n.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("storage: %w", err))
		}
	}
	if n.metricsSrv != nil {
		n.metricsSrv.Close()
	} else if n.metricsLn != nil {
		n.metricsLn.Close()
	}
	if n.api == nil && n.apiLn != nil {
		n.apiLn.Close()
	}
	return errors.Join(errs...)
}

// Done is closed when Shutdown has finished.
func (n *Node) Done() <-chan struct{} { return n.done }

// APIAddr is the address the HTTPS API listens on.
func (n *Node) APIAddr() string { return n.apiLn.Addr().String() }

// MetricsAddr is the address of the metrics listener.
func (n *Node) MetricsAddr() string { return n.metricsLn.Addr().String() }

// ExchangeAddr is the exchange (and Raft) address other nodes use.
func (n *Node) ExchangeAddr() string {
	a, err := advertised(n.cfg.Advertise.Exchange, n.ep.Addr().String(), "advertise.exchange")
	if err != nil {
		return n.ep.Addr().String()
	}
	return a
}

// Config returns the node's configuration (defaults filled in).
func (n *Node) Config() Config { return n.cfg }

// Replica returns the node's Raft replica.
func (n *Node) Replica() *consensus.Replica { return n.rep }

// Store returns the node's database.
func (n *Node) Store() *storage.DB { return n.db }

// Registry returns the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.registry }

func newLogger(c LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
