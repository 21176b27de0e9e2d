package exchange

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"credfed/certs"
)

// ALPN protocol names. Both are served on the same UDP port; a client that
// offers neither is refused during the handshake (TLS alert
// no_application_protocol).
const (
	// ALPN is the request/response protocol, version 1.
	ALPN = "credfed/1"
	// RaftALPN carries hashicorp/raft's byte streams, one QUIC stream per
	// raft connection.
	RaftALPN = "credfed-raft/1"
)

// errNotNode refuses a certificate of a user role on the exchange.
var errNotNode = errors.New("exchange: only node certificates may speak the exchange")

// Config configures an Endpoint.
type Config struct {
	// Certificate is this node's certificate (a node role: province, city
	// or district), presented as server and as client. Required; see also
	// Endpoint.SetCertificate.
	Certificate tls.Certificate
	// Verifier checks every peer's chain, federation, revocation and
	// suspension. Required. If its Revocations list is not nil, the
	// endpoint subscribes to it and closes live connections of
	// certificates that get revoked or suspended.
	Verifier *certs.Verifier
	// Addr is the UDP address to listen on, e.g. ":7443" or
	// "127.0.0.1:0". Ignored when PacketConn is set.
	Addr string
	// PacketConn, if not nil, is used instead of listening on Addr (the
	// endpoint then does not close it). A *net.UDPConn gives the best
	// performance (batched reads, GSO).
	PacketConn net.PacketConn
	// Logger receives connection-level events and refusals; nil discards.
	// Bodies and Meta values are never logged.
	Logger *slog.Logger
	// Registerer receives the metrics; nil means no metrics. Never pass
	// the global default registry when several nodes share a process.
	Registerer prometheus.Registerer
	// Limits bound what peers can make this node hold; zero fields take
	// defaults.
	Limits Limits
	// StatelessResetKey lets this node tell peers, after a restart, that it
	// lost their connections, so they redial at once instead of waiting
	// for the idle timeout. Nil derives a key from the certificate's
	// private key (stable across restarts, distinct per node).
	StatelessResetKey *quic.StatelessResetKey
	// DisableSessionResumption turns TLS session resumption off for
	// outgoing connections (on by default: it makes redials cheaper; the
	// peer's certificate is still re-checked against revocation and
	// expiry on resumption).
	DisableSessionResumption bool

	// Admit, if not nil, decides whether a verified caller is served at
	// all on the request protocol (ALPN credfed/1). It is called for every
	// request with the caller's verified identity, before the operation's
	// own checks (AllowRoles, limits, the handler), except for operations
	// registered with Unregistered. Nil admits every caller; a nil return
	// admits this request. An error refuses it: an *Error (or an error
	// wrapping one) is sent as is, any other error is answered forbidden
	// with the error's text as message, so build the text from the
	// identity alone, never from personal data. The node wires it to the
	// region registry ("region … is not registered"). It runs on every
	// request, concurrently: keep it to a map lookup.
	Admit func(id certs.Identity) error
	// AdmitRaft, if not nil, decides whether a verified peer may open raft
	// streams (ALPN credfed-raft/1) to this node. It is called when an
	// incoming raft connection arrives, for every raft stream the peer
	// opens on it, and for every live incoming raft connection when
	// Readmit is called and every few seconds (RaftReadmitInterval), so
	// that a peer whose admission ends loses its connection. A refused
	// peer's connection is closed with application error 0x6 (not
	// admitted), the error's text as reason. Nil admits every node.
	AdmitRaft func(id certs.Identity) error
}

// RaftReadmitInterval is how often the endpoint re-checks its live
// incoming raft connections against Config.AdmitRaft.
const RaftReadmitInterval = 5 * time.Second

// Endpoint is a node's one UDP port to the rest of the federation: it
// serves the request protocol (ALPN credfed/1) and raft streams (ALPN
// credfed-raft/1), and dials other nodes for both, all on one
// quic.Transport. It is safe for concurrent use.
type Endpoint struct {
	lim      Limits
	log      *slog.Logger
	m        *metrics
	verifier *certs.Verifier

	admit     func(certs.Identity) error // Config.Admit
	admitRaft func(certs.Identity) error // Config.AdmitRaft
	// anyUnregistered is set once an operation is registered with
	// Unregistered: until then a caller that Admit refuses is refused
	// before its request is read.
	anyUnregistered atomic.Bool

	cert atomic.Pointer[tls.Certificate]
	// certGen counts the certificates installed (SetCertificate).
	certGen atomic.Uint64
	// toldRefused is set once this node has logged that peers refuse its
	// certificate.
	toldRefused atomic.Bool
	// epochs holds each peer address's TLS session generation
	// (sessionEpoch); bounded by the addresses this node dials.
	epochs sync.Map
	id     certs.Identity

	pconn     net.PacketConn
	ownsPConn bool
	tr        *quic.Transport
	ln        *quic.Listener
	serverQC  *quic.Config
	clientQC  *quic.Config
	sessions  tls.ClientSessionCache

	ctx       context.Context // canceled when Close starts
	cancel    context.CancelFunc
	closed    atomic.Bool
	closeOnce sync.Once
	wg        sync.WaitGroup // goroutines: accept loops, connections, streams
	handlers  activity       // running request handlers, for the shutdown drain

	ops   atomic.Pointer[map[string]*operation]
	opsMu sync.Mutex

	mu      sync.Mutex
	conns   map[*quic.Conn]*connInfo
	peers   map[string]*peerState // by identity URI
	inbound int
	pool    map[poolKey]*peerConn

	bytes *budget // request bytes held for all callers

	nextID       atomic.Uint64
	unsubscribe  func()
	recheck      chan struct{}
	raftListener *raftListener
}

// connInfo is what the endpoint knows of one live connection.
type connInfo struct {
	conn    *quic.Conn
	peer    certs.Identity
	leaf    *x509.Certificate
	issuers []*x509.Certificate // the chain the peer presented above its leaf
	alpn    string
	inbound bool
	state   *peerState // inbound only
	expiry  *time.Timer
	// gen is the generation of this endpoint's own certificate the
	// connection was dialed with (outbound; SetCertificate counts them).
	gen uint64
	// inflight counts the requests in progress on it (outbound), so that
	// a retired connection is closed once they are answered.
	inflight atomic.Int32
	// keep marks a connection redialed after a retirement for the peer's
	// near expiry that found the same peer certificate (the peer has not
	// renewed): it is kept to the end, not retired again at each call.
	keep   bool
	keptAt time.Time
	// resumed says the TLS session was resumed (outbound).
	resumed bool
	// refusalLogged is set once a refusal of this connection's requests by
	// Admit has been logged: one line per connection, not per request.
	refusalLogged atomic.Bool
}

// New opens the endpoint: it binds the UDP port and starts serving at once.
// Register handlers right after New; until an operation is registered,
// requests for it are answered not_found.
func New(cfg Config) (*Endpoint, error) {
	if cfg.Verifier == nil {
		return nil, errors.New("exchange: Config.Verifier is required")
	}
	id, err := checkOwnCertificate(&cfg.Certificate)
	if err != nil {
		return nil, err
	}
	lim := cfg.Limits.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "exchange", "self", id.String())

	e := &Endpoint{
		lim:       lim,
		log:       log,
		m:         newMetrics(cfg.Registerer),
		verifier:  cfg.Verifier,
		admit:     cfg.Admit,
		admitRaft: cfg.AdmitRaft,
		id:        id,
		conns:     map[*quic.Conn]*connInfo{},
		peers:     map[string]*peerState{},
		pool:      map[poolKey]*peerConn{},
		bytes:     newBudget(lim.MaxBytes),
		recheck:   make(chan struct{}, 1),
	}
	e.cert.Store(&cfg.Certificate)
	e.ops.Store(&map[string]*operation{})
	e.raftListener = newRaftListener(e)
	if !cfg.DisableSessionResumption {
		e.sessions = tls.NewLRUClientSessionCache(1024)
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())

	if cfg.PacketConn != nil {
		e.pconn = cfg.PacketConn
	} else {
		udpAddr, err := net.ResolveUDPAddr("udp", cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("exchange: listen %q: %w", cfg.Addr, err)
		}
		pc, err := net.ListenUDP("udp", udpAddr)
		if err != nil {
			return nil, fmt.Errorf("exchange: listen %q: %w", cfg.Addr, err)
		}
		e.pconn, e.ownsPConn = pc, true
	}
	resetKey := cfg.StatelessResetKey
	if resetKey == nil {
		resetKey = deriveResetKey(cfg.Certificate)
	}
	e.tr = &quic.Transport{Conn: e.pconn, StatelessResetKey: resetKey}

	e.serverQC = &quic.Config{
		HandshakeIdleTimeout:           lim.HandshakeIdleTimeout,
		MaxIdleTimeout:                 lim.MaxIdleTimeout,
		KeepAlivePeriod:                lim.KeepAlivePeriod,
		InitialStreamReceiveWindow:     64 << 10,
		MaxStreamReceiveWindow:         uint64(lim.StreamReceiveWindow),
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     uint64(lim.ConnReceiveWindow),
		MaxIncomingStreams:             int64(lim.MaxIncomingStreams),
		MaxIncomingUniStreams:          -1,
		Allow0RTT:                      false,
	}
	e.clientQC = e.serverQC.Clone()
	e.clientQC.MaxIncomingStreams = -1 // only the dialer opens streams

	ln, err := e.tr.Listen(e.serverTLS(), e.serverQC)
	if err != nil {
		e.tr.Close()
		if e.ownsPConn {
			e.pconn.Close()
		}
		return nil, fmt.Errorf("exchange: listen: %w", err)
	}
	e.ln = ln

	if revs := cfg.Verifier.Revocations; revs != nil {
		e.unsubscribe = revs.Subscribe(func() {
			select {
			case e.recheck <- struct{}{}:
			default:
			}
		})
	}
	e.wg.Add(2)
	go e.acceptLoop()
	go e.recheckLoop()
	log.Info("exchange listening", "addr", e.pconn.LocalAddr().String())
	return e, nil
}

// checkOwnCertificate parses the leaf if needed and checks that it is a
// node's.
func checkOwnCertificate(c *tls.Certificate) (certs.Identity, error) {
	if len(c.Certificate) == 0 || c.PrivateKey == nil {
		return certs.Identity{}, errors.New("exchange: Config.Certificate is required")
	}
	if c.Leaf == nil {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return certs.Identity{}, fmt.Errorf("exchange: own certificate: %w", err)
		}
		c.Leaf = leaf
	}
	id, err := certs.IdentityOf(c.Leaf)
	if err != nil {
		return certs.Identity{}, fmt.Errorf("exchange: own certificate: %w", err)
	}
	if !id.Role.IsNode() {
		return certs.Identity{}, fmt.Errorf("exchange: own certificate is a %s's (%s), not a node's", id.Role, id)
	}
	// Peers would refuse it (serverAuth and clientAuth): say so at start.
	if err := certs.CheckUsage(c.Leaf, id); err != nil {
		return certs.Identity{}, fmt.Errorf("exchange: own certificate: %w", err)
	}
	return id, nil
}

// deriveResetKey derives the stateless reset key from the node's private
// key: the same across restarts (which is the point) and secret.
func deriveResetKey(c tls.Certificate) *quic.StatelessResetKey {
	h := sha256.New()
	h.Write([]byte("credfed exchange stateless reset key v1\x00"))
	if k, ok := c.PrivateKey.(*ecdsa.PrivateKey); ok {
		if b, err := k.Bytes(); err == nil {
			h.Write(b)
		}
	} else if len(c.Certificate) > 0 {
		h.Write(c.Certificate[0]) // not secret, but stable; keys are always ECDSA here
	}
	var key quic.StatelessResetKey
	copy(key[:], h.Sum(nil))
	return &key
}

// SetCertificate replaces this node's certificate (rotation). New
// connections, in both directions, present it; existing ones keep the old
// one until they close. It must belong to the same identity.
func (e *Endpoint) SetCertificate(c tls.Certificate) error {
	id, err := checkOwnCertificate(&c)
	if err != nil {
		return err
	}
	if id != e.id {
		return fmt.Errorf("exchange: new certificate is for %s, not %s", id, e.id)
	}
	e.cert.Store(&c)
	// Connections dialed with the old certificate are retired at their
	// next use (client.go, stale): the peer would close them when that
	// certificate expires.
	e.certGen.Add(1)
	return nil
}

// Identity is this node's identity.
func (e *Endpoint) Identity() certs.Identity { return e.id }

// Addr is the UDP address the endpoint listens on.
func (e *Endpoint) Addr() net.Addr { return e.pconn.LocalAddr() }

// serverTLS is the TLS configuration for incoming connections: the
// federation's verifier, node certificates only, refusals counted.
func (e *Endpoint) serverTLS() *tls.Config {
	cfg := e.verifier.ServerConfig(*e.cert.Load(), certs.RequireClientCert, ALPN, RaftALPN)
	cfg.Certificates = nil
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return e.cert.Load(), nil }
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err == nil {
			err = requireNode(cs)
		}
		if err != nil {
			reason := verifyReason(err)
			e.m.refused.WithLabelValues("inbound", reason).Inc()
			e.log.Warn("refused client certificate", "reason", reason, "err", err.Error())
		}
		return err
	}
	return cfg
}

// clientTLS is the TLS configuration for dialing addr (host:port).
func (e *Endpoint) clientTLS(addr, alpn string) (*tls.Config, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	cfg := e.verifier.ClientConfig(*e.cert.Load(), host, nil, alpn)
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return e.cert.Load(), nil }
	if e.sessions != nil {
		// Keyed by address: several nodes may share a host.
		// A session resumed does not carry certificates: after this node
		// renews, or to reach a peer's renewed certificate, the sessions
		// of before are not resumed.
		cfg.ClientSessionCache = keyedSessionCache{e.sessions,
			fmt.Sprintf("%s|%s|%d|%d|", addr, alpn, e.certGen.Load(), e.sessionEpoch(addr))}
	}
	return cfg, nil
}

// requireNode refuses user-role certificates: only nodes speak the exchange.
func requireNode(cs tls.ConnectionState) error {
	id, err := certs.PeerIdentity(cs)
	if err != nil {
		return err
	}
	if !id.Role.IsNode() {
		return fmt.Errorf("%w: %w", errNotNode, &certs.VerifyError{Reason: certs.ErrWrongUsage, Subject: id.String(),
			Detail: "a " + string(id.Role) + " certificate may not speak the exchange"})
	}
	return nil
}

// sessionEpoch is the generation of addr's TLS sessions: retiring a
// connection for its peer's near expiry starts a new one (newSessionEpoch).
func (e *Endpoint) sessionEpoch(addr string) uint64 {
	if v, ok := e.epochs.Load(addr); ok {
		return v.(*atomic.Uint64).Load()
	}
	return 0
}

func (e *Endpoint) newSessionEpoch(addr string) {
	v, _ := e.epochs.LoadOrStore(addr, new(atomic.Uint64))
	v.(*atomic.Uint64).Add(1)
}

type keyedSessionCache struct {
	c      tls.ClientSessionCache
	prefix string
}

func (k keyedSessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	return k.c.Get(k.prefix + key)
}

func (k keyedSessionCache) Put(key string, cs *tls.ClientSessionState) {
	k.c.Put(k.prefix+key, cs)
}

// register records a new connection. For inbound connections it enforces
// the connection caps and reports false if the connection must be refused.
func (e *Endpoint) register(conn *quic.Conn, inbound bool) (*connInfo, error) {
	cs := conn.ConnectionState().TLS
	peer, err := certs.PeerIdentity(cs)
	if err != nil {
		return nil, err
	}
	ci := &connInfo{conn: conn, peer: peer, leaf: cs.PeerCertificates[0], issuers: cs.PeerCertificates[1:], alpn: cs.NegotiatedProtocol, inbound: inbound}
	uri := peer.String()
	e.mu.Lock()
	if e.closed.Load() {
		e.mu.Unlock()
		return nil, errors.New("endpoint closed")
	}
	if inbound {
		ps := e.peerStateLocked(uri)
		if ps.conns >= e.lim.MaxConnsPerPeer || e.inbound >= e.lim.MaxConns {
			e.mu.Unlock()
			return nil, errTooManyConns
		}
		ps.conns++
		e.inbound++
		ci.state = ps
	}
	e.conns[conn] = ci
	e.mu.Unlock()

	// A revocation may have landed between the handshake and now.
	if err := e.refusedNow(ci); err != nil {
		e.unregister(ci)
		return nil, err
	}
	notAfter := ci.leaf.NotAfter
	for _, c := range cs.PeerCertificates[1:] {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	ci.expiry = time.AfterFunc(time.Until(notAfter), func() {
		e.log.Info("closing connection: peer certificate expired", "peer", peer.String())
		conn.CloseWithError(closeExpired, "certificate expired")
	})
	e.m.openConns.WithLabelValues(ci.alpn, direction(inbound)).Inc()
	return ci, nil
}

var errTooManyConns = errors.New("too many connections")

func (e *Endpoint) unregister(ci *connInfo) {
	var ae *quic.ApplicationError
	if errors.As(context.Cause(ci.conn.Context()), &ae) && ae.Remote && ae.ErrorCode == closeRevoked && e.toldRefused.CompareAndSwap(false, true) {
		// Said once, plainly: every peer does the same from now on.
		e.log.Error("the federation refuses this node's certificate: a peer closed its connection because it is revoked or suspended; if this node's region was removed (credfed region remove), stop this node",
			"peer", ci.peer.String())
	}
	e.mu.Lock()
	if _, ok := e.conns[ci.conn]; !ok {
		e.mu.Unlock()
		return
	}
	delete(e.conns, ci.conn)
	if ci.inbound {
		ci.state.conns--
		e.inbound--
	}
	e.mu.Unlock()
	if ci.expiry != nil {
		ci.expiry.Stop()
		e.m.openConns.WithLabelValues(ci.alpn, direction(ci.inbound)).Dec()
	}
}

func (e *Endpoint) peerStateLocked(uri string) *peerState {
	ps := e.peers[uri]
	if ps == nil {
		ps = &peerState{inflight: newBudget(e.lim.MaxInflightPerPeer), bytes: newBudget(e.lim.MaxBytesPerPeer)}
		e.peers[uri] = ps
	}
	return ps
}

// recheckLoop re-checks every live connection's peer certificate against
// the revocation list whenever the list changes, and closes revoked or
// suspended ones, in both directions. With an AdmitRaft hook it also
// re-checks the live incoming raft connections every RaftReadmitInterval.
func (e *Endpoint) recheckLoop() {
	defer e.wg.Done()
	var readmit <-chan time.Time
	if e.admitRaft != nil {
		t := time.NewTicker(RaftReadmitInterval)
		defer t.Stop()
		readmit = t.C
	}
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-readmit:
			e.Readmit()
			continue
		case <-e.recheck:
		}
		e.mu.Lock()
		live := make([]*connInfo, 0, len(e.conns))
		for _, ci := range e.conns {
			live = append(live, ci)
		}
		e.mu.Unlock()
		for _, ci := range live {
			if err := e.refusedNow(ci); err != nil {
				e.log.Warn("closing connection: peer certificate refused now",
					"peer", ci.peer.String(), "reason", verifyReason(err), "direction", direction(ci.inbound))
				ci.conn.CloseWithError(closeRevoked, "certificate revoked or suspended")
			}
		}
	}
}

// refusedNow checks a live connection's peer against the revocation list:
// its certificate, and the intermediates it presented above it.
func (e *Endpoint) refusedNow(ci *connInfo) error {
	if err := e.verifier.Revocations.Check(ci.leaf, ci.peer); err != nil {
		return err
	}
	for _, issuer := range ci.issuers {
		if err := e.verifier.Revocations.CheckIssuer(issuer, ci.peer); err != nil {
			return err
		}
	}
	return nil
}

// acceptLoop hands each incoming connection to its own goroutine.
func (e *Endpoint) acceptLoop() {
	defer e.wg.Done()
	for {
		conn, err := e.ln.Accept(e.ctx)
		if err != nil {
			return
		}
		e.wg.Add(1)
		go e.serveConn(conn)
	}
}

func (e *Endpoint) serveConn(conn *quic.Conn) {
	defer e.wg.Done()
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("panic serving connection", "panic_type", fmt.Sprintf("%T", p))
			conn.CloseWithError(closeShutdown, "internal error")
		}
	}()
	ci, err := e.register(conn, true)
	if err != nil {
		switch {
		case errors.Is(err, errTooManyConns):
			e.m.refused.WithLabelValues("inbound", "too_many_connections").Inc()
			e.log.Warn("refused connection: too many connections", "peer", peerOf(conn))
			conn.CloseWithError(closeTooManyConns, "too many connections")
		case errors.Is(err, certs.ErrRevoked), errors.Is(err, certs.ErrSuspended):
			e.m.refused.WithLabelValues("inbound", verifyReason(err)).Inc()
			conn.CloseWithError(closeRevoked, "certificate revoked or suspended")
		default:
			conn.CloseWithError(closeShutdown, "refused")
		}
		return
	}
	defer e.unregister(ci)
	switch ci.alpn {
	case ALPN:
		e.serveRequests(ci)
	case RaftALPN:
		e.serveRaft(ci)
	default: // cannot happen: TLS negotiated one of ours
		conn.CloseWithError(closeProtocolError, "unknown protocol")
	}
	// The accept loop also ends when the endpoint starts closing; the
	// connection stays registered until it is closed, so that Close can
	// tell the peer.
	<-conn.Context().Done()
}

func peerOf(conn *quic.Conn) string {
	if id, err := certs.PeerIdentity(conn.ConnectionState().TLS); err == nil {
		return id.String()
	}
	return conn.RemoteAddr().String()
}

// Close shuts the endpoint down: it stops accepting connections and
// requests, lets running handlers answer for up to Limits.ShutdownGrace,
// then closes every connection (peers see "shutting down") and the UDP
// socket. Calls in progress fail with unavailable.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() { e.shutdown(true) })
	return nil
}

// shutdown closes the endpoint; graceful says whether peers are told.
func (e *Endpoint) shutdown(graceful bool) {
	e.closed.Store(true)
	if e.unsubscribe != nil {
		e.unsubscribe()
	}
	e.ln.Close()
	e.raftListener.Close()
	e.cancel() // stops the accept loops and pending dials

	grace := e.lim.ShutdownGrace
	if !graceful {
		grace = 0
	}
	e.handlers.drain(grace)
	e.mu.Lock()
	live := make([]*connInfo, 0, len(e.conns))
	for _, ci := range e.conns {
		live = append(live, ci)
	}
	e.mu.Unlock()
	if graceful {
		for _, ci := range live {
			ci.conn.CloseWithError(closeShutdown, "shutting down")
		}
	}
	e.tr.Close() // abrupt for whatever is left
	if e.ownsPConn {
		e.pconn.Close()
	}
	if !waitTimeout(&e.wg, e.lim.ShutdownGrace) {
		e.log.Warn("exchange closed with handlers still running (they ignore their context)")
	}
	for _, ci := range live {
		e.unregister(ci)
	}
}

// waitTimeout waits for wg at most d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
