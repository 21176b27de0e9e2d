// Package httpapi is a node's HTTPS API: the route table, who each route
// admits, the JSON edge of every resource (one file each) and the mapping
// of the services' refusals onto the API's error codes. It speaks to the
// services through the small interfaces below and never touches storage,
// Raft or the exchange itself.
package httpapi

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/fault"
	"credfed/intake"
	"credfed/lookup"
	"credfed/pseudonym"
)

// Records is the records service of a district (intake.Service).
type Records interface {
	// Submit validates and writes submissions of the calling department;
	// every one is answered in order.
	Submit(ctx context.Context, caller certs.Identity, subs []intake.Submission) ([]intake.Result, error)
	// Record returns one of the calling department's records and its
	// older versions.
	Record(ctx context.Context, caller certs.Identity, id string) (credit.Record, []credit.Record, error)
	// Records returns a page of the calling department's records, only
	// its own.
	Records(ctx context.Context, caller certs.Identity, q intake.RecordQuery) (intake.RecordPage, error)
	// Correct writes a new version of one of the caller's records.
	Correct(ctx context.Context, caller certs.Identity, id string, c credit.Correction, reason string) (credit.Record, error)
}

// Lookups is the federated lookup (lookup.Service).
type Lookups interface {
	// Lookup looks a subject up across the districts; allowed or refused,
	// it is audited before it returns.
	Lookup(ctx context.Context, caller certs.Identity, req lookup.Request) (lookup.Answer, error)
}

// Custody is a coordinator's custody of the pseudonym key (node.Node).
type Custody interface {
	// Accounts returns every district's pseudonymization account; a node
	// that keeps none refuses (pseudonym.ErrNoCustody).
	Accounts(ctx context.Context) ([]pseudonym.Account, error)
}

// Cluster is the node and its place in the federation (node.Node).
type Cluster interface {
	// Federation is GET /v1/federation's answer.
	Federation(ctx context.Context) (api.Federation, error)
	// Catalog is the replicated catalog, nil before it has arrived.
	Catalog() *credit.Catalog
}

// Revocations is the federation's replicated revocation list
// (certs.RevocationList).
type Revocations interface {
	// CheckSerials returns the refusal of a revoked or suspended
	// certificate, given its serials (certs.SerialsOf, kept per
	// connection).
	CheckSerials(cert *x509.Certificate, s certs.CertSerials, id certs.Identity) error
	// CheckIssuerSerial returns the refusal of a certificate whose issuing
	// intermediate, of this serial (certs.SerialString), is revoked.
	CheckIssuerSerial(serial string, subject certs.Identity) error
	// CheckIdentity returns the refusal of a suspended identity, for an
	// in-process caller without a certificate (AsCaller).
	CheckIdentity(id certs.Identity) error
}

// SmallBody is the size under which a bulk submission is read at once;
// larger ones (or of unknown length) wait for one of Config.LargeBodies
// slots, so that the large bodies read at once are bounded. Every other
// body is read within Config.BodyBudget.
const SmallBody = 1 << 20

// Config is what the API serves.
type Config struct {
	Cluster Cluster
	Records Records
	Lookups Lookups
	Custody Custody
	// Rights serves the subject's report and access log.
	Rights Rights
	// Cases serves objections and repair requests.
	Cases Cases
	// Disclosures serves the public disclosure list.
	Disclosures Disclosures
	// Stats serves the federation statistics (coordinator nodes).
	Stats Stats
	// Lifecycle serves the revocation list and the operators' commands on
	// it.
	Lifecycle Lifecycle
	// Enrollment signs certificate renewals (nil: none here).
	Enrollment Enrollment
	// Regions serves region add, promote, remove and joins (nil: none).
	Regions Regions
	// Registered says whether a region is in the federation's registry
	// (nil: not checked): a certificate of a region removed from it is
	// refused on every route, like a suspended one.
	Registered func(region string) bool
	// Checks serves checks, batch checks and their jobs, and
	// classifications.
	Checks Checks
	// Queriers serves GET /v1/audit/queriers (queriers.Tracker); nil on a
	// node that tracks no queriers.
	Queriers Queriers
	// Revocations is checked on every request: TLS checks a client
	// certificate at the handshake only, and a keep-alive connection
	// outlives a revocation.
	Revocations Revocations
	// ReadTimeout bounds the reading of a request's body, from the start
	// of its handling (default 10 s); BulkReadTimeout that of a bulk
	// submission (default 30 s).
	ReadTimeout, BulkReadTimeout time.Duration
	// LargeBodies is how many bulk bodies over SmallBody are read at once
	// (default 2); LargeBodyWait how long another waits for its turn
	// before it is refused unavailable (default 10 s).
	LargeBodies   int
	LargeBodyWait time.Duration
	// BodyBudget bounds the bytes of all the other request bodies the API
	// holds at once (default DefaultBodyBudget): a body's declared length
	// is reserved before it is read, one of unknown length chunk by chunk
	// as it is read, and released when its request is answered. A request
	// that finds the budget spent is refused unavailable, unread.
	BodyBudget int64
	// Now is the node's clock (record views: display periods); nil is
	// time.Now.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Server is the API's handler.
type Server struct {
	cfg      Config
	log      *slog.Logger
	handler  http.Handler
	large    chan struct{} // slots for large bodies
	budget   bodyBudget    // bytes for the other bodies
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	recent   recent
}

// New builds the API.
func New(cfg Config) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.ReadTimeout, 10*time.Second)
	def(&cfg.BulkReadTimeout, 30*time.Second)
	def(&cfg.LargeBodyWait, 10*time.Second)
	if cfg.LargeBodies <= 0 {
		cfg.LargeBodies = 2
	}
	if cfg.BodyBudget <= 0 {
		cfg.BodyBudget = DefaultBodyBudget
	}
	s := &Server{cfg: cfg, log: cfg.Logger, large: make(chan struct{}, cfg.LargeBodies),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_api_requests_total", Help: "HTTP API requests by route and answer code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "credfed_api_request_seconds", Help: "HTTP API latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
	}
	s.budget.free.Store(cfg.BodyBudget)
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.requests, s.latency, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "credfed_api_body_bytes_reserved", Help: "Bytes of request bodies reserved in the API's body budget.",
		}, func() float64 { return float64(cfg.BodyBudget - s.budget.free.Load()) }))
	}
	s.handler = s.router(s.routes())
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// route is one method and path of the API.
type route struct {
	method  string
	pattern string // net/http pattern path, e.g. /v1/records/{id}
	access  access
	// maxBody bounds the request body (default 1 MiB).
	maxBody int64
	// bulk marks a route whose bodies may be large: they are read within
	// Config.BulkReadTimeout, and the large ones a few at a time.
	bulk   bool
	handle func(w http.ResponseWriter, r *http.Request, c caller) error
}

// routes is the API: each resource's file lists its routes.
// docs/openapi.yaml documents the same list (a test compares them).
func (s *Server) routes() []route {
	var out []route
	for _, rs := range [][]route{s.catalogRoutes(), s.auditRoutes(), s.federationRoutes(), s.recordRoutes(), s.lookupRoutes(), s.custodyRoutes(), s.rightsRoutes(), s.caseRoutes(), s.disclosureRoutes(), s.checkRoutes(), s.querierRoutes(), s.statsRoutes(), s.revocationRoutes(), s.certificateRoutes(), s.regionRoutes(), s.backupRoutes(), s.keyRoutes()} {
		out = append(out, rs...)
	}
	return out
}

// router builds the HTTP handler of the API from routes.
func (s *Server) router(routes []route) http.Handler {
	mux := http.NewServeMux()
	methods := map[string]bool{}
	for _, rt := range routes {
		mux.HandleFunc(rt.method+" "+rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			s.serveRoute(rt, w, r)
		})
		methods[rt.method] = true
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// A known path with another method is 405 with Allow, not 404.
		var allow []string
		for m := range methods {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			slices.Sort(allow)
			w.Header().Set("Allow", strings.Join(allow, ", "))
			// Neither the method nor the path is repeated: either may hold
			// anything the caller put there.
			writeErrorStatus(w, http.StatusMethodNotAllowed, &api.Error{Code: api.CodeBadRequest,
				Message: fmt.Sprintf("this method is not allowed on this path (allowed: %s)", strings.Join(allow, ", "))})
			return
		}
		writeError(w, &api.Error{Code: api.CodeNotFound, Message: "no route of the API has this method and path (docs/openapi.yaml lists them)"})
	})
	return mux
}

func (s *Server) serveRoute(rt route, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	c := s.callerOf(r)
	code := "ok"
	name := rt.method + " " + rt.pattern
	defer func() {
		s.requests.WithLabelValues(name, code).Inc()
		s.recent.add(start, code == api.CodeInternal || code == api.CodeUnavailable || code == api.CodeDeadlineExceeded)
		s.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
	}()
	if e := rt.access.admits(c); e != nil {
		code = e.Code
		writeError(w, e)
		return
	}
	max := rt.maxBody
	if max == 0 {
		max = 1 << 20
	}
	if r.ContentLength > max {
		e := &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("request body is larger than %d bytes", max)}
		code = e.Code
		writeError(w, e)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, max)
	// A body that trickles in is cut: the handshake's and the headers'
	// timeouts do not cover it.
	timeout := s.cfg.ReadTimeout
	if rt.bulk {
		timeout = s.cfg.BulkReadTimeout
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
	if rt.bulk && (r.ContentLength < 0 || r.ContentLength > SmallBody) {
		release, e := s.largeSlot(r.Context())
		if e != nil {
			code = e.Code
			refuseUnread(w, r, e)
			return
		}
		defer release()
	} else if r.ContentLength != 0 {
		body, e := s.budget.body(r.Body, r.ContentLength, max)
		if e != nil {
			code = e.Code
			refuseUnread(w, r, e)
			return
		}
		defer body.release()
		r.Body = body
	}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				// A handler cutting a response it began (a backup stream):
				// net/http resets it.
				code = api.CodeInternal
				panic(p)
			}
			code = api.CodeInternal
			// Only the runtime's own panics are logged with their text: any
			// other value may hold what the request carried.
			attr := slog.String("panic_type", fmt.Sprintf("%T", p))
			if re, ok := p.(runtime.Error); ok {
				attr = slog.String("panic", re.Error())
			}
			s.log.Error("API handler panicked", "route", rt.pattern, attr)
			writeError(w, &api.Error{Code: api.CodeInternal, Message: "internal error"})
		}
	}()
	if err := rt.handle(w, r, c); err != nil {
		e := s.apiError(rt, err)
		code = e.Code
		setRetryAfter(w, err)
		writeError(w, e)
	}
}

// largeSlot waits for one of the slots of large bodies.
func (s *Server) largeSlot(ctx context.Context) (func(), *api.Error) {
	t := time.NewTimer(s.cfg.LargeBodyWait)
	defer t.Stop()
	select {
	case s.large <- struct{}{}:
		return func() { <-s.large }, nil
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("%d large submissions are being read already; send this one again shortly", s.cfg.LargeBodies)}
}

// DefaultBodyBudget is Config.BodyBudget's default: with the two large
// bodies of 64 MiB, a node holds at most 192 MiB of request bodies.
const DefaultBodyBudget = 64 << 20

// bodyChunk is how much of a body of unknown length is reserved at a time.
const bodyChunk = 64 << 10

// drainTime is how long a refused request's body is discarded as it
// arrives, so that a client still sending it reads the refusal instead of
// a reset connection.
const drainTime = 2 * time.Second

// bodyBudget is what is left of Config.BodyBudget.
type bodyBudget struct{ free atomic.Int64 }

// take reserves n bytes, if there are that many left.
func (b *bodyBudget) take(n int64) bool {
	for {
		f := b.free.Load()
		if f < n {
			return false
		}
		if b.free.CompareAndSwap(f, f-n) {
			return true
		}
	}
}

// errBodyBudget is the refusal of a body the budget has no room for.
var errBodyBudget = fault.New(fault.Unavailable, "this node is reading as many request bodies as it may hold at once; send the request again shortly")

// body reserves room for a body declaring length bytes (-1: unknown) of at
// most max, and returns the body that reads within its reservation.
func (b *bodyBudget) body(r io.ReadCloser, length, max int64) (*budgetBody, *api.Error) {
	bb := &budgetBody{ReadCloser: r, budget: b, max: max}
	if length >= 0 {
		if !b.take(length) {
			return nil, errorOf(errBodyBudget)
		}
		bb.held, bb.max = length, length
	}
	return bb, nil
}

// budgetBody is a request body read within its reservation in the body
// budget; a body of unknown length reserves bodyChunk more whenever it has
// read what it holds, and fails unavailable if the budget is spent.
type budgetBody struct {
	io.ReadCloser
	budget          *bodyBudget
	held, read, max int64
}

func (b *budgetBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.read == b.held && b.held < b.max {
		n := min(bodyChunk, b.max-b.held)
		if !b.budget.take(n) {
			return 0, errBodyBudget
		}
		b.held += n
	}
	// Past the reservation, one byte more tells the end of the body (or
	// http.MaxBytesReader's refusal) from more of it.
	p = p[:max(1, min(int64(len(p)), b.held-b.read))]
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	return n, err
}

// release gives the reservation back, once the request is answered.
func (b *budgetBody) release() { b.budget.free.Add(b.held) }

// refuseUnread answers a request refused before its body was read, then
// discards what the client sends of the body for at most drainTime
// (nothing of it is held), and closes an HTTP/1 connection.
func refuseUnread(w http.ResponseWriter, r *http.Request, e *api.Error) {
	rc := http.NewResponseController(w)
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
		_ = rc.EnableFullDuplex()
	}
	writeError(w, e)
	if r.ContentLength == 0 {
		return
	}
	_ = rc.Flush()
	_ = rc.SetReadDeadline(time.Now().Add(drainTime))
	_, _ = io.Copy(io.Discard, r.Body)
}
