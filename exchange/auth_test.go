package exchange

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"credfed/certs"
)

// startWithCert starts an endpoint presenting cert and trusting f's CA.
func (f *federation) startWithCert(t testing.TB, cert tls.Certificate) *node {
	t.Helper()
	revs := certs.NewRevocationList()
	reg := prometheus.NewRegistry()
	e, err := New(Config{
		Certificate: cert,
		Verifier:    certs.NewVerifier(f.ca.Cert, f.name, revs),
		Addr:        "127.0.0.1:0",
		Logger:      testLogger(),
		Registerer:  reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	id, _ := certs.IdentityOf(cert.Leaf)
	return &node{Endpoint: e, t: t, fed: f, id: id, reg: reg, revs: revs}
}

func TestMutualAuth(t *testing.T) {
	f := newFederation(t, testFed)
	city := f.startNode(t, certs.City, "zj/hz")
	district := f.startNode(t, certs.District, "zj/hz/xh")

	// What the handler saw travels back on a channel: the answer crossing a
	// UDP socket is no happens-before edge for the race detector.
	type seen struct {
		caller certs.Identity
		meta   Meta
	}
	saw := make(chan seen, 1)
	city.Handle("echo", func(ctx context.Context, r *Request) (any, error) {
		var s seen
		s.caller, _ = CallerFrom(ctx)
		s.meta, _ = MetaFrom(ctx)
		select {
		case saw <- s:
		default:
		}
		return echoHandler(ctx, r)
	})
	meta := Meta{Purpose: "recruitment", User: "clerk-7", Reference: "case-1", Authorization: "auth-9"}
	var resp echoResp
	err := district.Call(ctxTimeout(t, 5*time.Second), city.peer(), "echo", meta, echoReq{Subject: "abc", N: 41}, &resp)
	if err != nil {
		t.Fatal(err)
	}
	if resp.N != 42 || resp.Subject != "abc" || resp.Purpose != "recruitment" {
		t.Errorf("answer = %+v", resp)
	}
	var s seen
	select {
	case s = <-saw:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler never reported what it saw")
	}
	if resp.Caller != district.id || s.caller != district.id {
		t.Errorf("handler saw caller %v / %v, want %v", resp.Caller, s.caller, district.id)
	}
	if s.meta != meta {
		t.Errorf("handler saw meta %+v, want %+v", s.meta, meta)
	}
	if got := city.served("echo", certs.District, "ok"); got != 1 {
		t.Errorf("served counter = %v, want 1", got)
	}
	// The other way round works too, each node dialing on its one port.
	district.Handle("echo", echoHandler)
	if err := city.Call(ctxTimeout(t, 5*time.Second), district.peer(), "echo", Meta{}, echoReq{N: 1}, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Caller != city.id {
		t.Errorf("caller = %v, want %v", resp.Caller, city.id)
	}
}

// TestRefusedClientCertificates: every refusal reason is refused during the
// handshake, before any handler runs; the client learns it as
// ErrUnauthenticated on its first request, and the server counts the
// reason.
func TestRefusedClientCertificates(t *testing.T) {
	f := newFederation(t, testFed)
	other := newFederation(t, "otherfed")
	server := f.startNode(t, certs.City, "zj/hz")
	var ran atomic.Int32
	server.Handle("echo", func(ctx context.Context, r *Request) (any, error) { ran.Add(1); return echoHandler(ctx, r) })

	revoked := f.issue(t, nodeID(testFed, certs.District, "zj/hz/revoked"))
	if err := server.revs.Revoke(certs.Revocation{Serial: certs.SerialString(revoked.Cert.SerialNumber), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	suspendedID := nodeID(testFed, certs.District, "zj/hz/suspended")
	suspended := f.issue(t, suspendedID)
	if err := server.revs.Suspend(certs.Suspension{Identity: suspendedID.String()}); err != nil {
		t.Fatal(err)
	}
	expired, err := f.ca.Issue(certs.IssueRequest{Identity: nodeID(testFed, certs.District, "zj/hz/old"),
		Hosts: []string{"127.0.0.1"}, NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	future, err := f.ca.Issue(certs.IssueRequest{Identity: nodeID(testFed, certs.District, "zj/hz/new"),
		Hosts: []string{"127.0.0.1"}, NotBefore: time.Now().Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	user, err := f.ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: testFed, Role: certs.Operator,
		Region: "zj/hz", Institution: "ops"}})
	if err != nil {
		t.Fatal(err)
	}
	wrongFed := f.rawCert(t, &x509.Certificate{URIs: []*url.URL{{Scheme: "spiffe", Host: "otherfed", Path: "/district/zj/hz/x"}}})
	noURI := f.rawCert(t, &x509.Certificate{SerialNumber: big.NewInt(77)})

	cases := []struct {
		name   string
		cert   tls.Certificate
		reason string
		viaEnd bool // a node endpoint can present it: go through Call
	}{
		{"other CA", other.issue(t, nodeID("otherfed", certs.District, "zj/hz/x")).TLSCertificate(), "untrusted", true},
		{"wrong federation", wrongFed, "wrong_federation", true},
		{"expired", expired.TLSCertificate(), "expired", true},
		{"not yet valid", future.TLSCertificate(), "not_yet_valid", true},
		{"no URI SAN", noURI, "no_identity", false},
		{"revoked", revoked.TLSCertificate(), "revoked", true},
		{"suspended", suspended.TLSCertificate(), "suspended", true},
		{"user role", user.TLSCertificate(), "not_a_node", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := server.refused(tc.reason)
			var err error
			if tc.viaEnd {
				client := f.startWithCert(t, tc.cert)
				err = client.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil)
			} else {
				conn, derr := rawDial(t, rawClientTLS(f, tc.cert, ALPN), server.Addr().String())
				err = derr
				if derr == nil {
					// Dial succeeds in TLS 1.3 (quic-go#5643): the refusal
					// shows on first use.
					_, err = rawExchange(ctxTimeout(t, 5*time.Second), conn,
						requestFrame(t, requestEnvelope{Version: 1, Op: "echo", ID: 1, Body: echoBody(t)}))
				}
				if err != nil {
					err = connError("server", err)
				}
			}
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("err = %v, want ErrUnauthenticated", err)
			}
			if got := server.refused(tc.reason); got != before+1 {
				t.Errorf("refusals for %s = %v, want %v", tc.reason, got, before+1)
			}
		})
	}
	if n := ran.Load(); n != 0 {
		t.Errorf("handler ran %d times for refused callers", n)
	}
	// And the server still serves a good node.
	good := f.startNode(t, certs.District, "zj/hz/good")
	if err := good.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestRefusedServerCertificate: the client refuses a server of another CA
// and one that is not the peer it expected.
func TestRefusedServerCertificate(t *testing.T) {
	f := newFederation(t, testFed)
	other := newFederation(t, "otherfed")
	client := f.startNode(t, certs.District, "zj/hz/xh")
	foreign := other.startNode(t, certs.City, "zj/hz")
	foreign.Handle("echo", echoHandler)

	err := client.Call(ctxTimeout(t, 5*time.Second), Peer{Name: "foreign", Addr: foreign.Addr().String()}, "echo", Meta{}, echoReq{}, nil)
	if !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, certs.ErrUntrusted) {
		t.Fatalf("err = %v, want ErrUnauthenticated and certs.ErrUntrusted", err)
	}

	city := f.startNode(t, certs.City, "zj/hz")
	city.Handle("echo", echoHandler)
	want := nodeID(testFed, certs.City, "zj/nb")
	err = client.Call(ctxTimeout(t, 5*time.Second), Peer{Name: "nb", Addr: city.Addr().String(), Identity: &want}, "echo", Meta{}, echoReq{}, nil)
	if !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("err = %v, want ErrUnauthenticated for the wrong peer", err)
	}
	if city.served("echo", certs.District, "ok") != 0 {
		t.Error("the request reached the wrong peer")
	}
}

// TestRevokedLiveConnection: revoking a certificate closes the live
// connections that use it, in both directions, and refuses new ones.
func TestRevokedLiveConnection(t *testing.T) {
	f := newFederation(t, testFed)
	server := f.startNode(t, certs.City, "zj/hz")
	server.Handle("echo", echoHandler)
	client := f.startNode(t, certs.District, "zj/hz/xh")
	if err := client.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
	ci := client.pooled(t, server.Addr().String(), ALPN)

	serial := certs.SerialString(client.cert.Load().Leaf.SerialNumber)
	if err := server.revs.Revoke(certs.Revocation{Serial: serial, Reason: "key compromise"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ci.conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked client's connection is still open")
	}
	var ae *quic.ApplicationError
	if cause := context.Cause(ci.conn.Context()); !errors.As(cause, &ae) || ae.ErrorCode != closeRevoked || !ae.Remote {
		t.Errorf("closed with %v, want application error %#x from the server", cause, closeRevoked)
	}
	if got := connError("server", context.Cause(ci.conn.Context())); got.Code != CodeUnauthenticated {
		t.Errorf("close maps to %v, want unauthenticated", got)
	}
	// A new connection is refused too.
	err := client.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil)
	if !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("err = %v, want ErrUnauthenticated", err)
	}
	eventually(t, 5*time.Second, "server to drop the connection", func() bool { return server.liveConns() == 0 })

	// Suspending an identity closes its live connections the same way.
	client3 := f.startNode(t, certs.District, "zj/hz/gs")
	if err := client3.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
	ci3 := client3.pooled(t, server.Addr().String(), ALPN)
	if err := server.revs.Suspend(certs.Suspension{Identity: client3.id.String(), Reason: "investigation"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ci3.conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the suspended client's connection is still open")
	}
	if err := client3.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("suspended: err = %v, want ErrUnauthenticated", err)
	}

	// The client side: a server whose certificate is revoked on the
	// client's list loses its outbound connection.
	client2 := f.startNode(t, certs.District, "zj/hz/sc")
	if err := client2.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
	ci2 := client2.pooled(t, server.Addr().String(), ALPN)
	if err := client2.revs.Revoke(certs.Revocation{Serial: certs.SerialString(server.cert.Load().Leaf.SerialNumber)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ci2.conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the connection to the revoked server is still open")
	}
	err = client2.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil)
	if !errors.Is(err, ErrUnauthenticated) || !errors.Is(err, certs.ErrRevoked) {
		t.Fatalf("err = %v, want ErrUnauthenticated and certs.ErrRevoked", err)
	}
}

// TestWrongALPN: a client offering another protocol version is refused in
// the handshake, and the server keeps serving.
func TestWrongALPN(t *testing.T) {
	f := newFederation(t, testFed)
	server := f.startNode(t, certs.City, "zj/hz")
	server.Handle("echo", echoHandler)
	cert := f.issue(t, nodeID(testFed, certs.District, "zj/hz/xh")).TLSCertificate()
	_, err := rawDial(t, rawClientTLS(f, cert, "credfed/2"), server.Addr().String())
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != 0x100+alertNoApplicationProtocol {
		t.Fatalf("dial err = %v, want CRYPTO_ERROR no_application_protocol", err)
	}
	if ce := connError("server", err); !errors.Is(ce, ErrBadRequest) {
		t.Errorf("maps to %v, want bad_request", ce)
	}
	client := f.startNode(t, certs.District, "zj/hz/xh")
	if err := client.Call(ctxTimeout(t, 5*time.Second), server.peer(), "echo", Meta{}, echoReq{}, nil); err != nil {
		t.Fatal(err)
	}
}

// pooled returns the pooled connection to addr.
func (n *node) pooled(t testing.TB, addr, alpn string) *connInfo {
	t.Helper()
	n.mu.Lock()
	pc := n.pool[poolKey{addr, alpn}]
	n.mu.Unlock()
	if pc == nil {
		t.Fatalf("no pooled connection to %s", addr)
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.ci == nil {
		t.Fatalf("no live connection to %s", addr)
	}
	return pc.ci
}

// liveConns counts the endpoint's registered connections.
func (n *node) liveConns() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.conns)
}
