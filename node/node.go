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

	"credfed/api"
	"credfed/attest"
	"credfed/audit"
	"credfed/certs"
	"credfed/checks"
	"credfed/consensus"
	"credfed/console"
	"credfed/credit"
	"credfed/disclosure"
	"credfed/enroll"
	"credfed/exchange"
	"credfed/httpapi"
	"credfed/intake"
	"credfed/jobs"
	"credfed/lifecycle"
	"credfed/lookup"
	"credfed/pseudonym"
	"credfed/publish"
	"credfed/queriers"
	"credfed/rekey"
	"credfed/rights"
	"credfed/stats"
	"credfed/storage"
	"credfed/sweep"
)

// Node is one running credfed node.
type Node struct {
	cfg      Config
	log      *slog.Logger
	registry *prometheus.Registry
	now      func() time.Time // the node's clock of record dates (Options.Now)

	cert     atomic.Pointer[tls.Certificate] // replaced on renewal (certificate.go)
	caCert   *x509.Certificate
	revs     *certs.RevocationList
	verifier *certs.Verifier
	key      credit.PseudonymKey // coordinators only

	db    *storage.DB
	state *storage.StateDB // the replicated state (consensus)
	ep    *exchange.Endpoint
	rep   *consensus.Replica

	names   *pseudonym.Resolver
	custody *pseudonym.Custodian // coordinators only
	audit   *audit.Recorder
	jobs    *jobs.Runner
	pub     *publish.Publisher // districts only
	sweeper *sweep.Sweeper     // districts only
	records *intake.Service
	lookups *lookup.Service
	rights  *rights.Service
	checks  *checks.Service
	// queriers holds the querier quotas and flags (coordinators; nil on
	// districts).
	queriers *queriers.Tracker
	signer   *attest.Signer

	// anchorer anchors the audit log's head in Raft (auditcheck.go).
	anchorer *audit.Anchorer

	// Key rotation (keys.go): a coordinator's key ring file and reports,
	// a district's republishing.
	rekeyCoordinator *rekey.Coordinator
	rekeyDistrict    *rekey.District

	disclosures *disclosure.Service // the public disclosure list
	stats       *stats.Service      // the federation statistics
	lifecycle   *lifecycle.Service  // revocations and suspensions
	enroll      *enroll.Service     // certificate renewals (certificate.go)
	renewer     *enroll.Renewer

	apiLn   net.Listener
	api     *http.Server
	console *console.Server // nil when disabled (console.go)
	// healthMu guards the console's last ask of every node's health.
	healthMu   sync.Mutex
	health     []console.NodeHealth
	healthAt   time.Time
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
// Raft, starts the services and background jobs, and serves the API and
// metrics. It returns once everything listens; the node may still be
// waiting for a leader (see /readyz).
//
// The order: trust (CA, certificate), the replicated state and the
// exchange, Raft, the records database, the services, the jobs, the
// listeners; Shutdown undoes it in reverse.
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
	// Every metric name starts with credfed_ (docs/metrics.md), the runtime's too.
	prometheus.WrapRegistererWithPrefix("credfed_", n.registry).MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerInfo(n.registry, cfg)
	ok := false
	defer func() {
		if !ok {
			n.closeAll()
		}
	}()
	if err := n.loadTrust(); err != nil {
		return nil, err
	}
	if err := n.openConsensus(opts); err != nil {
		return nil, err
	}
	if err := n.startServices(); err != nil {
		return nil, err
	}
	if err := n.serve(); err != nil {
		return nil, err
	}
	if cfg.Raft.Bootstrap {
		if err := n.bootstrap(); err != nil {
			return nil, err
		}
	}
	ok = true
	n.log.Info("node started", "role", cfg.Role, "exchange", n.ExchangeAddr(), "api", n.APIAddr(), "metrics", n.MetricsAddr())
	return n, nil
}

// loadTrust reads the CA, the node's certificate and the keys, and checks
// that the certificate is the configured node's.
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
	n.caCert = ca
	n.cert.Store(&pair)
	n.revs = certs.NewRevocationList()
	n.verifier = certs.NewVerifier(ca, c.Federation, n.revs)
	id, err := n.verifier.Verify(chainOf(pair), x509.ExtKeyUsageServerAuth)
	if err != nil {
		return fmt.Errorf("node: tls.cert: %w", err)
	}
	if id != c.Identity() {
		return fieldErr("tls.cert", "certificate is for %s, but this node is configured as %s", id, c.Identity())
	}
	if c.PseudonymKeyFile != "" {
		if n.key, err = credit.LoadPseudonymKey(c.PseudonymKeyFile); err != nil {
			return fmt.Errorf("node: pseudonym_key_file: %w", err)
		}
	}
	return nil
}

// encryptionKey returns the key of the data directory, nil if none.
func (n *Node) encryptionKey() ([]byte, error) {
	if n.cfg.EncryptionKeyFile == "" {
		return nil, nil
	}
	k, err := storage.LoadEncryptionKey(n.cfg.EncryptionKeyFile)
	if err != nil {
		return nil, fmt.Errorf("node: encryption_key_file: %w", err)
	}
	return k, nil
}

// openConsensus opens the state database, the exchange and Raft.
func (n *Node) openConsensus(opts Options) error {
	cfg := n.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("node: data_dir: %w", err)
	}
	encKey, err := n.encryptionKey()
	if err != nil {
		return err
	}
	if n.state, err = storage.OpenState(storage.Options{Dir: filepath.Join(cfg.DataDir, "state"), EncryptionKey: encKey, Logger: n.log,
		IndexCacheSize: cfg.Storage.indexCacheBytes()}); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	admission := &peerAdmission{}
	n.ep, err = exchange.New(exchange.Config{Certificate: n.Certificate(), Verifier: n.verifier, Addr: cfg.Listen.Exchange,
		Logger: n.log, Registerer: n.registry, Admit: admission.request, AdmitRaft: admission.raft})
	if err != nil {
		return fmt.Errorf("node: listen.exchange: %w", err)
	}
	advertise, err := advertised(cfg.Advertise.Exchange, n.ep.Addr().String(), "advertise.exchange")
	if err != nil {
		return err
	}
	// Coordinators seal the index with keys derived from the pseudonym
	// key versions (the key file's, and the key ring file's: keys.go);
	// districts hold neither.
	indexKeys, err := n.indexKeys(encKey)
	if err != nil {
		return err
	}
	timing, err := cfg.Raft.raftTiming(opts.RaftTiming)
	if err != nil {
		return err
	}
	n.rep, err = consensus.Open(consensus.Config{
		Self: cfg.Identity(), Advertise: advertise, Dir: filepath.Join(cfg.DataDir, "raft"),
		DB: n.state.Badger(), Endpoint: n.ep, Revocations: n.revs, Voter: cfg.IsVoter(),
		Logger: n.log, Registerer: n.registry,
		HeartbeatTimeout: timing.Heartbeat, ElectionTimeout: timing.Election,
		LeaderLeaseTimeout: timing.LeaderLease, CommitTimeout: timing.Commit,
		SnapshotThreshold: cfg.Raft.SnapshotThreshold, TrailingLogs: cfg.Raft.TrailingLogs,
		SnapshotInterval: time.Duration(cfg.Raft.SnapshotInterval),
		EncryptionKey:    encKey, IndexKeys: indexKeys,
	})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	admission.use(n.rep, cfg.Coordinators)
	return nil
}

// peerAdmission admits the exchange's peers by the replicated region
// registry (exchange.Config.Admit and AdmitRaft; docs/exchange.md,
// "Admission"). A certificate of the federation's CA says who a peer is;
// the registry says whether it belongs to the federation.
type peerAdmission struct {
	state atomic.Pointer[consensus.State] // nil until the replica is open
	// gate admits raft peers until the registry arrives (nil until the
	// replica is open).
	gate atomic.Pointer[consensus.NewcomerGate]
}

// use starts admitting by rep's registry; until it has one, raft peers by
// rep's newcomer gate, which asks the configured coordinators.
func (a *peerAdmission) use(rep *consensus.Replica, coordinators []string) {
	a.gate.Store(rep.NewcomerGate(coordinators))
	a.state.Store(rep.State())
}

// initialized reports whether the registry has reached this node.
// federation_init writes the registry and the first catalog in one entry,
// so a node without a catalog has no registry yet; testing the catalog is
// cheap, where counting the regions would copy the registry.
func initialized(st *consensus.State) bool { return st != nil && st.Catalog() != nil }

// request admits a caller of the request protocol whose region is
// registered with the role of its certificate. Refusals name the region,
// never anything personal: forbidden for a region that is not registered
// (or registered for another role), unavailable while this node has no
// registry yet (it answers nothing then; another node may).
func (a *peerAdmission) request(id certs.Identity) error {
	st := a.state.Load()
	if st != nil {
		if reg, ok := st.Region(id.Region); ok {
			if reg.Role != id.Role {
				return exchange.Errorf(exchange.CodeForbidden, "region %s is registered for a %s node, not a %s node", id.Region, reg.Role, id.Role)
			}
			return nil
		}
	}
	if !initialized(st) {
		return exchange.Errorf(exchange.CodeUnavailable, "this node has not received the federation's region registry yet")
	}
	return exchange.Errorf(exchange.CodeForbidden, "region %s is not registered in the federation", id.Region)
}

// raft admits the peers that may open raft streams to this node. Only
// leaders and candidates open them, and only voters become either, so a
// peer must be registered, with its certificate's role, as a voter: a
// district (a non-voter) can then neither depose the leader with a higher
// term nor append entries to a follower. A node whose registry has not
// arrived yet (it has not applied the federation's first entries) must
// not take them from just any province or city certificate: the first
// entry it takes decides which federation it belongs to. It admits its
// own province and city, and the voters its configured coordinators name
// (consensus.NewcomerGate); nothing before the replica is open.
func (a *peerAdmission) raft(id certs.Identity) error {
	st := a.state.Load()
	if st != nil {
		if reg, ok := st.Region(id.Region); ok {
			switch {
			case reg.Role != id.Role:
				return exchange.Errorf(exchange.CodeForbidden, "region %s is registered for a %s node, not a %s node", id.Region, reg.Role, id.Role)
			case !reg.Voter:
				return exchange.Errorf(exchange.CodeForbidden, "region %s is not a Raft voter: only voters open raft streams", id.Region)
			}
			return nil
		}
	}
	if !initialized(st) {
		if g := a.gate.Load(); g != nil {
			return g.Admit(id)
		}
		return exchange.Errorf(exchange.CodeUnavailable, "this node is starting and takes no raft streams yet")
	}
	return exchange.Errorf(exchange.CodeForbidden, "region %s is not registered in the federation", id.Region)
}

// startServices opens the records database and starts the services and
// the background jobs.
func (n *Node) startServices() error {
	cfg := n.cfg
	encKey, err := n.encryptionKey()
	if err != nil {
		return err
	}
	state := n.rep.State()
	periods := sweep.NewPeriods(state)
	n.db, err = storage.Open(storage.Options{Dir: filepath.Join(cfg.DataDir, "db"), EncryptionKey: encKey, Logger: n.log,
		Boundaries: periods.Boundaries, IndexCacheSize: cfg.Storage.indexCacheBytes()})
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	registerIndexCache(n.registry, "records", n.db)
	registerIndexCache(n.registry, "state", n.state)
	// The audit log must match its anchors in Raft before anything writes
	// to it (auditcheck.go).
	if err := n.checkAudit(); err != nil {
		return err
	}
	n.audit = audit.New(n.anchorer.Watch(n.db.Audit()), cfg.Region, n.now, n.log, n.registry)
	if err := n.recordRestore(); err != nil {
		return err
	}
	n.names = pseudonym.NewResolver(pseudonym.ResolverConfig{Self: cfg.Identity(), Key: n.key, Keys: n.pseudonymKeys(), Identifiers: cfg.Identifiers(),
		Endpoint: n.ep, Registry: state, Coordinators: cfg.Coordinators, Cache: n.db, Version: state.KeyCurrent, Logger: n.log})
	n.jobs = jobs.NewRunner(n.db, n.log, n.registry)
	if err := n.startKeyRotation(encKey); err != nil {
		return err
	}
	if err := n.anchorer.Start(n.jobs); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if n.key.Valid() {
		cc := cfg.PseudonymCustody
		n.custody, err = pseudonym.NewCustodian(pseudonym.CustodyConfig{Key: n.key, Keys: n.pseudonymKeys(), Superseded: n.rekeyCoordinator.Superseded, Identifiers: cfg.Identifiers(),
			Registry: state, Entries: func(p credit.Pseudonym) ([]consensus.IndexEntry, error) {
				entries, _, err := state.Lookup(p)
				return entries, err
			},
			Store: n.db, Audit: n.audit, DistrictRate: cc.Rate, DistrictRates: cc.DistrictRates, Window: time.Duration(cc.Window),
			Logger: n.log, Registerer: n.registry})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		n.custody.Serve(n.ep)
		if err := n.jobs.Start(n.custody.Job()); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	var quotas lookup.Quotas
	if cfg.Role.IsCoordinatorNode() {
		qc := cfg.Queriers
		qc.Logger, qc.Registerer = n.log, n.registry
		n.queriers = queriers.New(qc)
		quotas = querierQuotas{n.queriers}
	}
	n.lookups = lookup.New(lookup.Config{Quotas: quotas, Self: cfg.Identity(), Key: n.key, Keys: n.ring(), Identifiers: cfg.Identifiers(),
		Index: replicaIndex{n.rep}, Endpoint: n.ep, Records: n.db, Resolve: n.names.Resolve, Own: n.names.Own, OwnAll: n.names.OwnAll, Catalog: state.Catalog, Audit: n.audit, Now: n.now,
		Timeout: time.Duration(cfg.LookupTimeout), Logger: n.log, Registerer: n.registry})
	n.disclosures = disclosure.New(disclosure.Config{Self: cfg.Identity(), Records: n.db, Registry: state, Endpoint: n.ep,
		Catalog: state.Catalog, Now: n.now, Logger: n.log, Registerer: n.registry})
	n.stats = stats.New(stats.Config{Self: cfg.Identity(), Registry: state, Endpoint: n.ep, Records: n.db, AuditLog: n.db.Audit(),
		Catalog: state.Catalog, Audit: n.audit, Now: n.now, Logger: n.log, Registerer: n.registry})
	if cfg.Role.IsCoordinatorNode() {
		// Real time, not the node's clock of record dates: a signature is
		// verified against its certificate's validity as of its time.
		signer, err := attest.NewSigner(n.Certificate(), time.Now)
		if err != nil {
			return fmt.Errorf("node: the node certificate cannot sign reports: %w", err)
		}
		n.signer = signer
	}
	if err := n.startEnrollment(); err != nil {
		return err
	}
	lc := lifecycle.Config{Self: cfg.Identity(), Replica: n.rep, Revocations: n.revs, Catalog: state.Catalog, Audit: n.audit, Keys: n.keysConfig()}
	if cfg.Role.IsCoordinatorNode() {
		if lc.Regions, err = n.regionsConfig(); err != nil {
			return err
		}
	}
	n.lifecycle = lifecycle.New(lc)
	n.rights = rights.New(rights.Config{Self: cfg.Identity(), Key: n.key, Keys: n.ring(), Identifiers: cfg.Identifiers(),
		Index: replicaIndex{n.rep}, Endpoint: n.ep, Records: n.db, Resolve: n.names.Resolve, Own: n.names.Own, AuditLog: n.db.Audit(),
		Cases: n.db, Notify: func() { n.jobs.Wake(publish.JobName) }, Catalog: state.Catalog, Audit: n.audit,
		Signer: n.signer, Now: n.now, Logger: n.log, Registerer: n.registry})
	if err := n.rights.Reconcile(); err != nil {
		return fmt.Errorf("node: open objections: %w", err)
	}
	n.checks = checks.New(checks.Config{Self: cfg.Identity(), Key: n.key, Keys: n.ring(), Identifiers: cfg.Identifiers(),
		Index: replicaIndex{n.rep}, Endpoint: n.ep, Records: n.db, Resolve: n.names.Resolve, Own: n.names.Own, Catalog: state.Catalog, Audit: n.audit,
		Quotas: quotas, Batches: n.db, ChunkRows: cfg.Checks.BatchChunkRows, Now: n.now, Timeout: time.Duration(cfg.LookupTimeout), Logger: n.log, Registerer: n.registry})
	if err := n.checks.Start(); err != nil {
		return fmt.Errorf("node: batch checks: %w", err)
	}
	wake := func() { n.jobs.Wake(publish.JobName) }
	// On a coordinator the records service only refuses: records are kept
	// by districts.
	n.records = intake.New(intake.Config{Self: cfg.Identity(), Store: n.db, Catalog: state.Catalog,
		Identifiers: cfg.Identifiers(), Now: n.now, Notify: wake, Audit: n.audit, Registerer: n.registry})
	if cfg.Role != certs.District {
		return nil
	}
	n.pub = publish.New(publish.Config{District: cfg.Region, Outbox: n.db, Index: replicaIndex{n.rep},
		Resolve: n.names.Resolve, Rotation: n.rotation(), Now: n.now, Registerer: n.registry})
	n.sweeper = sweep.New(sweep.Config{District: cfg.Region, Store: n.db, Catalogs: state, Periods: periods,
		Resolve: n.names.Resolve, Audit: n.audit, Notify: wake, Now: n.now, Logger: n.log, Registerer: n.registry})
	for _, j := range []jobs.Job{n.pub.Job(), n.sweeper.Job(time.Duration(cfg.SweepInterval))} {
		if err := n.jobs.Start(j); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	return nil
}

// querierQuotas is the querier tracker as the lookup and check services
// see it.
type querierQuotas struct{ t *queriers.Tracker }

func (q querierQuotas) Admit(institution, purpose string, n int) error {
	return q.t.Admit(institution, purpose, n)
}

func (q querierQuotas) Observe(institution, purpose, subject, reference string, batch int) {
	q.t.Observe(queriers.Query{Institution: institution, Purpose: purpose, Subject: subject, Reference: reference, Batch: batch})
}

// replicaIndex is the replica as the services see the index.
type replicaIndex struct{ rep *consensus.Replica }

func (r replicaIndex) SubmitIndex(ctx context.Context, u []consensus.IndexUpdate) error {
	return r.rep.SubmitIndex(ctx, u)
}

func (r replicaIndex) Catalog() *credit.Catalog { return r.rep.State().Catalog() }

func (r replicaIndex) Lookup(ctx context.Context, p credit.Pseudonym, strong bool) ([]consensus.IndexEntry, uint64, error) {
	return r.rep.Lookup(ctx, p, strong)
}

func (r replicaIndex) Region(path string) (consensus.Region, bool) { return r.rep.State().Region(path) }

func (r replicaIndex) Regions() []consensus.Region { return r.rep.State().Regions() }

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
func (n *Node) serve() error {
	apiLn, err := net.Listen("tcp", n.cfg.Listen.API)
	if err != nil {
		return fmt.Errorf("node: listen.api: %w", err)
	}
	// Connections are bounded too, but connections that send nothing (no
	// certificate needed) must not lock clients out: at the limit the
	// longest new or idle one is closed for the newcomer.
	ln := httpapi.NewListener(apiLn, n.cfg.API.MaxConnections, n.registry)
	n.apiLn = ln
	h := httpapi.New(httpapi.Config{Cluster: n, Records: n.records, Lookups: n.lookups, Custody: n, Rights: n.rights, Cases: n.rights, Disclosures: n.disclosures, Stats: n.stats, Lifecycle: n.lifecycle, Enrollment: n.enroll, Regions: n.lifecycle, Registered: n.registered, Checks: n.checks, Queriers: n.querierReport(), Revocations: n.revs, Now: n.now,
		BulkReadTimeout: time.Duration(n.cfg.API.BulkReadTimeout), BodyBudget: n.cfg.API.BodyBudgetMiB << 20,
		Logger: n.log, Registerer: n.registry})
	var handler http.Handler = h
	if !n.cfg.API.Console.Disabled {
		if n.console, err = n.newConsole(h); err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/console/", n.console)
		mux.Handle("GET /{$}", http.RedirectHandler("/console/", http.StatusSeeOther))
		mux.Handle("/", h)
		handler = mux
	}
	n.api = &http.Server{
		Handler:   handler,
		TLSConfig: n.apiTLS(),
		// ReadHeaderTimeout bounds the TLS handshake too (net/http takes
		// the shortest of its timeouts for it).
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// What HTTP/2 buffers of bodies not read yet is bounded per
		// connection (net/http's default is 1 MiB).
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 100,
			MaxReceiveBufferPerConnection: 256 << 10, MaxReceiveBufferPerStream: 256 << 10},
		ConnState:   ln.ConnState,
		ConnContext: httpapi.ConnContext,
		ErrorLog:    slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := n.api.ServeTLS(n.apiLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("API server stopped", "error", err)
		}
	}()
	mLn, err := net.Listen("tcp", n.cfg.Listen.Metrics)
	if err != nil {
		return fmt.Errorf("node: listen.metrics: %w", err)
	}
	n.metricsLn = mLn
	n.metricsSrv = &http.Server{Handler: n.metricsHandler(mLn.Addr()), ReadHeaderTimeout: 5 * time.Second}
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

// querierReport is what GET /v1/audit/queriers serves: nil on a district.
func (n *Node) querierReport() httpapi.Queriers {
	if n.queriers == nil {
		return nil
	}
	return n.queriers
}

// Catalog is the replicated catalog, nil before it has arrived.
func (n *Node) Catalog() *credit.Catalog { return n.rep.State().Catalog() }

// Federation is the node's view of the federation (GET /v1/federation).
func (n *Node) Federation(ctx context.Context) (api.Federation, error) {
	st := n.rep.Stats()
	state := n.rep.State()
	leaderRegion, _ := n.rep.Leader()
	ready, why := n.Ready()
	v := api.Federation{
		Federation: n.cfg.Federation,
		Node: api.NodeStatus{Name: n.cfg.Name, Role: string(n.cfg.Role), Region: n.cfg.Region, Exchange: n.ExchangeAddr(),
			Ready: ready, Status: why, CertificateNotAfter: n.certificateNotAfter()},
		Raft: api.RaftStatus{State: st["state"], Leader: leaderRegion, Term: st["term"], CommitIndex: st["commit_index"],
			AppliedIndex: st["applied_index"], LastLogIndex: st["last_log_index"], Voter: n.cfg.IsVoter()},
		Index:   api.IndexStatus{AppliedIndex: state.Applied(), Entries: state.IndexEntries()},
		Regions: []api.Region{},
	}
	if cat := state.Catalog(); cat != nil {
		v.CatalogVersion = cat.Version
	}
	if n.cfg.Role == certs.District {
		v.Index.OutboxLength, _ = n.db.OutboxLen()
	}
	suffrage := map[string]string{}
	if servers, err := n.rep.Servers(); err == nil {
		for _, s := range servers {
			suffrage[string(s.ID)] = map[bool]string{true: "voter", false: "nonvoter"}[s.Suffrage.String() == "Voter"]
		}
	}
	for _, reg := range state.Regions() {
		raft := suffrage[reg.Path]
		if raft == "" {
			raft = "absent"
		}
		v.Regions = append(v.Regions, api.Region{Path: reg.Path, Name: reg.Name, Role: string(reg.Role), Exchange: reg.Exchange,
			API: reg.API, Voter: reg.Voter, Raft: raft})
	}
	for _, j := range n.jobs.Status() {
		js := api.JobStatus{Name: j.Name, State: j.State(), Runs: j.Runs, Failures: j.Failures, LastError: j.LastError,
			Progress: j.Progress}
		if !j.LastRun.IsZero() {
			js.LastRun = j.LastRun.Format(time.RFC3339)
		}
		if !j.LastSuccess.IsZero() {
			js.LastSuccess = j.LastSuccess.Format(time.RFC3339)
		}
		v.Jobs = append(v.Jobs, js)
	}
	return v, nil
}

// Accounts is the pseudonymization account of every district (a
// coordinator's custody; refused at a district).
func (n *Node) Accounts(ctx context.Context) ([]pseudonym.Account, error) {
	if n.custody == nil {
		return nil, pseudonym.ErrNoCustody
	}
	return n.custody.Accounts(ctx)
}

// Sweep runs a district's display and retention sweep now (it also runs
// every sweep_interval).
func (n *Node) Sweep(ctx context.Context) (sweep.Result, error) {
	if n.sweeper == nil {
		return sweep.Result{}, nil // coordinators hold no records
	}
	return n.sweeper.Sweep(ctx)
}

// Shutdown stops the node gracefully: it stops accepting API requests and
// lets those in flight finish, drains the outbox if a leader is reachable,
// then leaves Raft and closes the exchange and the databases. ctx bounds
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
		if n.jobs != nil {
			n.jobs.Stop()
		}
		if n.pub != nil {
			dctx, cancel := context.WithTimeout(ctx, time.Duration(n.cfg.ShutdownTimeout)/3)
			if err := n.pub.Drain(dctx); err != nil {
				n.log.Warn("outbox not fully drained at shutdown; it stays on disk and drains at the next start", "error", err)
			}
			cancel()
		}
		n.anchorAtStop(ctx) // before Raft closes
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
	if n.lookups != nil {
		n.lookups.Wait() // the outcome entries of answered lookups
	}
	if n.metricsSrv != nil {
		n.metricsSrv.Close()
	} else if n.metricsLn != nil {
		n.metricsLn.Close()
	}
	if n.api == nil && n.apiLn != nil {
		n.apiLn.Close()
	}
	if n.renewer != nil {
		n.renewer.Close()
	}
	if n.jobs != nil {
		n.jobs.Stop()
	}
	if n.checks != nil {
		n.checks.Stop()
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
	if n.db != nil {
		if err := n.db.Close(); err != nil {
			errs = append(errs, fmt.Errorf("storage: %w", err))
		}
	}
	if n.state != nil {
		if err := n.state.Close(); err != nil {
			errs = append(errs, fmt.Errorf("state: %w", err))
		}
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

// Store returns the node's records database.
func (n *Node) Store() *storage.DB { return n.db }

// Registry returns the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.registry }

// Jobs returns the statuses of the node's background jobs.
func (n *Node) Jobs() []jobs.Status { return n.jobs.Status() }

func newLogger(c LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
