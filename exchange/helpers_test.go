package exchange

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/quic-go/quic-go"

	"credfed/certs"
)

const testFed = "testfed"

// federation is a test CA and the nodes it certifies.
type federation struct {
	name string
	ca   *certs.CA
}

func newFederation(t testing.TB, name string) *federation {
	t.Helper()
	ca, err := certs.NewCA(name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &federation{name: name, ca: ca}
}

func nodeID(fed string, role certs.Role, region string) certs.Identity {
	return certs.Identity{Federation: fed, Role: role, Region: region}
}

// issue issues a certificate for id valid for 127.0.0.1.
func (f *federation) issue(t testing.TB, id certs.Identity) *certs.Issued {
	t.Helper()
	is, err := f.ca.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return is
}

// rawCert builds a certificate from tmpl signed by the CA directly, for
// the certificates the CA refuses to issue (wrong federation, no URI SAN).
func (f *federation) rawCert(t testing.TB, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca.Cert, &key.PublicKey, f.ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// node is a running endpoint with its own registry and revocation list.
type node struct {
	*Endpoint
	t    testing.TB
	fed  *federation
	id   certs.Identity
	reg  *prometheus.Registry
	revs *certs.RevocationList
}

type nodeOption func(*Config)

func withLimits(l Limits) nodeOption { return func(c *Config) { c.Limits = l } }

func withAddr(addr string) nodeOption { return func(c *Config) { c.Addr = addr } }

func testLogger() *slog.Logger {
	if os.Getenv("EXCHANGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// startNode starts an endpoint for a node of role in region.
func (f *federation) startNode(t testing.TB, role certs.Role, region string, opts ...nodeOption) *node {
	t.Helper()
	id := nodeID(f.name, role, region)
	is := f.issue(t, id)
	revs := certs.NewRevocationList()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Certificate: is.TLSCertificate(),
		Verifier:    certs.NewVerifier(f.ca.Cert, f.name, revs),
		Addr:        "127.0.0.1:0",
		Logger:      testLogger(),
		Registerer:  reg,
	}
	for _, o := range opts {
		o(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return &node{Endpoint: e, t: t, fed: f, id: id, reg: reg, revs: revs}
}

// peer is how other nodes call n.
func (n *node) peer() Peer {
	id := n.id
	return Peer{Name: n.id.Region, Addr: n.Addr().String(), Identity: &id}
}

// refused returns the inbound handshake refusals counted for reason.
func (n *node) refused(reason string) float64 {
	return metricValue(n.m.refused.WithLabelValues("inbound", reason))
}

// served returns the requests served for op with code (ok for success).
func (n *node) served(op string, role certs.Role, code string) float64 {
	return metricValue(n.m.serverRequests.WithLabelValues(op, string(role), code))
}

// metricValue reads a counter or gauge.
func metricValue(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// echo is the small request/response of tests and benchmarks.
type echoReq struct {
	Subject string `cbor:"1,keyasint" json:"subject"`
	N       int    `cbor:"2,keyasint" json:"n"`
}

type echoResp struct {
	Subject string         `cbor:"1,keyasint" json:"subject"`
	N       int            `cbor:"2,keyasint" json:"n"`
	Caller  certs.Identity `cbor:"3,keyasint" json:"caller"`
	Purpose string         `cbor:"4,keyasint" json:"purpose"`
}

func echoHandler(ctx context.Context, r *Request) (any, error) {
	var req echoReq
	if err := r.Decode(&req); err != nil {
		return nil, err
	}
	return echoResp{Subject: req.Subject, N: req.N + 1, Caller: r.Caller, Purpose: r.Meta.Purpose}, nil
}

// rawClientTLS is a TLS configuration for a hand-made client presenting
// cert, trusting the federation's CA.
func rawClientTLS(f *federation, cert tls.Certificate, alpn string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      f.ca.Pool(),
		ServerName:   "127.0.0.1",
		NextProtos:   []string{alpn},
	}
}

// rawDial dials addr with a hand-made TLS configuration (no exchange
// client logic), closing the connection at the end of the test.
func rawDial(t testing.TB, tlsConf *tls.Config, addr string) (*quic.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, tlsConf, &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err == nil {
		t.Cleanup(func() { conn.CloseWithError(0, "") })
	}
	return conn, err
}

// requestFrame encodes a request envelope as a frame.
func requestFrame(t testing.TB, env requestEnvelope) []byte {
	t.Helper()
	b, err := encMode.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return rawFrame(b)
}

func rawFrame(payload []byte) []byte {
	f := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(f, uint32(len(payload)))
	copy(f[4:], payload)
	return f
}

func echoBody(t testing.TB) []byte {
	b, err := encMode.Marshal(echoReq{Subject: "s", N: 1})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawExchange sends data on a new stream, closes the send side and reads
// one response frame.
func rawExchange(ctx context.Context, conn *quic.Conn, data []byte) (*responseEnvelope, error) {
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		str.SetDeadline(d)
	}
	if _, err := str.Write(data); err != nil {
		var se *quic.StreamError
		if !errors.As(err, &se) {
			return nil, err
		}
	}
	str.Close()
	buf, err := readFrame(str, DefaultMaxFrame)
	if err != nil {
		return nil, err
	}
	var env responseEnvelope
	if err := decodeResponse(buf.b, &env); err != nil {
		return nil, err
	}
	return &env, nil
}
