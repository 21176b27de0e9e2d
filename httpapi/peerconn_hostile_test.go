package httpapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/certs"
	"credfed/internal/wait"
)

// TestPeerSlotHostile attacks the per-connection identity slot over real
// mutual TLS with HTTP/2: concurrent streams of two connections with
// different certificates, requests derived in a handler from a connection's
// context (another certificate, an in-process caller), revocation,
// suspension, registration and expiry on a connection already in use, and
// a resumed TLS session.
func TestPeerSlotHostile(t *testing.T) {
	const fed = "ph"
	ca, err := certs.NewCA(fed, 0)
	if err != nil {
		t.Fatal(err)
	}
	node, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"},
		Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(region, inst string, validity time.Duration) *certs.Issued {
		is, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: fed, Role: certs.Department, Region: region, Institution: inst},
			Validity: validity})
		if err != nil {
			t.Fatal(err)
		}
		return is
	}
	a := issue("zhejiang/quzhou/kecheng", "market-supervision", 0)
	b := issue("zhejiang/hangzhou/xihu", "tax", 0)
	c := issue("zhejiang/ningbo/haishu", "tax", 2*time.Second) // expires during the test
	d := issue("zhejiang/wenzhou/lucheng", "tax", 0)           // resumed sessions

	revs := certs.NewRevocationList()
	var bUnregistered atomic.Bool
	s := New(Config{Cluster: cluster{}, Records: &records{}, Lookups: noLookups{}, Revocations: revs,
		Registered: func(region string) bool { return region != "zhejiang/hangzhou/xihu" || !bUnregistered.Load() }})

	// who answers region|authed|refused|proto|resumed as callerOf sees the
	// request; with ?derive it also checks requests derived from the
	// connection's context before answering for its own.
	var derived atomic.Int64
	who := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("derive") {
			other := r.Clone(r.Context())
			other.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{b.Cert}}
			if id, err := PeerIdentity(other); err != nil || id.Region != "zhejiang/hangzhou/xihu" {
				http.Error(w, fmt.Sprintf("derived request with another certificate: %+v %v", id, err), 500)
				return
			}
			inproc := r.Clone(AsCaller(r.Context(), certs.Identity{Federation: fed, Role: certs.Coordinator, Region: "zhejiang"}))
			if got := s.callerOf(inproc); !got.authed || got.id.Region != "zhejiang" {
				http.Error(w, fmt.Sprintf("in-process caller on a connection's context: %+v", got), 500)
				return
			}
			// A goroutine holding the connection's context, after the
			// derived requests changed the slot.
			done := make(chan certs.Identity)
			go func() {
				g := r.Clone(context.WithoutCancel(r.Context()))
				id, _ := PeerIdentity(g)
				done <- id
			}()
			if id := <-done; id.Region != "zhejiang/quzhou/kecheng" {
				http.Error(w, fmt.Sprintf("a goroutine on the connection's context: %+v", id), 500)
				return
			}
			derived.Add(1)
		}
		got := s.callerOf(r)
		fmt.Fprintf(w, "%s|%v|%s|%d|%v", got.id.Region, got.authed, got.refused, r.ProtoMajor, r.TLS.DidResume)
	})

	srv := httptest.NewUnstartedServer(who)
	srv.EnableHTTP2 = true
	srv.TLS = certs.NewVerifier(ca.Cert, fed, nil).ServerConfig(node.TLSCertificate(), certs.OptionalClientCert, "h2", "http/1.1")
	srv.Config.ConnContext = ConnContext
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client := func(is *certs.Issued, cache tls.ClientSessionCache) *http.Client {
		tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13,
			Certificates: []tls.Certificate{is.TLSCertificate()}, ClientSessionCache: cache}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 20 * time.Second}
	}
	type answer struct {
		region, refused string
		authed, resumed bool
		proto           int
		reused          bool
	}
	get := func(hc *http.Client, query string) (answer, error) {
		var reused bool
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/who"+query, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return answer{}, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return answer{}, fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		f := strings.Split(string(body), "|")
		if len(f) != 5 {
			return answer{}, fmt.Errorf("answer %q", body)
		}
		var an answer
		an.region, an.refused, an.authed, an.resumed, an.reused = f[0], f[2], f[1] == "true", f[4] == "true", reused
		fmt.Sscan(f[3], &an.proto)
		return an, nil
	}

	// 1. Two connections, many concurrent HTTP/2 streams each, some of
	// them deriving requests from their connection's context.
	ha, hb := client(a, nil), client(b, nil)
	for _, hc := range []*http.Client{ha, hb} { // one connection each, before the streams share it
		if _, err := get(hc, ""); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	fail := func(f string, args ...any) {
		mu.Lock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(f, args...))
		}
		mu.Unlock()
	}
	for round := range 4 {
		for i := range 64 {
			wg.Go(func() {
				q := ""
				if i%4 == 0 {
					q = "?derive"
				}
				an, err := get(ha, q)
				if err != nil || an.region != "zhejiang/quzhou/kecheng" || !an.authed || an.proto != 2 {
					fail("round %d stream %d on A: %+v %v", round, i, an, err)
				}
			})
			wg.Go(func() {
				an, err := get(hb, "")
				if err != nil || an.region != "zhejiang/hangzhou/xihu" || !an.authed || an.proto != 2 {
					fail("round %d stream %d on B: %+v %v", round, i, an, err)
				}
			})
		}
		wg.Wait()
	}
	if len(failures) > 0 {
		t.Fatalf("identities crossed or lost:\n%s", strings.Join(failures, "\n"))
	}
	if derived.Load() != 4*16 {
		t.Errorf("%d derived checks ran, want %d", derived.Load(), 4*16)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections served the streams, want 2 (one per client, its streams multiplexed)", n)
	}

	// 2. On connections already in use (reused), every request is checked
	// again.
	check := func(hc *http.Client, what, region string, authed bool, refused string) {
		t.Helper()
		an, err := get(hc, "")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !an.reused {
			t.Errorf("%s: not on a reused connection, the slot is not exercised", what)
		}
		if an.region != region || an.authed != authed || !strings.Contains(an.refused, refused) {
			t.Errorf("%s: %+v, want %s authed=%v refused~%q", what, an, region, authed, refused)
		}
	}
	aID, _ := certs.IdentityOf(a.Cert)
	if err := revs.Suspend(certs.Suspension{Identity: aID.String(), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	check(ha, "A suspended", "zhejiang/quzhou/kecheng", false, "suspended")
	check(hb, "B while A is suspended", "zhejiang/hangzhou/xihu", true, "")
	revs.Reinstate(aID.String())
	check(ha, "A reinstated", "zhejiang/quzhou/kecheng", true, "")
	if err := revs.Revoke(certs.Revocation{Serial: certs.SerialString(a.Cert.SerialNumber), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	check(ha, "A revoked", "zhejiang/quzhou/kecheng", false, "revoked")
	bUnregistered.Store(true)
	check(hb, "B's region removed", "zhejiang/hangzhou/xihu", false, "not registered")
	bUnregistered.Store(false)
	check(hb, "B's region back", "zhejiang/hangzhou/xihu", true, "")

	// 3. A certificate that expires while its connection is open.
	hcC := client(c, nil)
	if an, err := get(hcC, ""); err != nil || !an.authed {
		t.Fatalf("C before it expires: %+v %v", an, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var last answer
	var lastErr error
	if err := wait.For(ctx, 50*time.Millisecond, func() bool {
		last, lastErr = get(hcC, "")
		return lastErr == nil && !last.authed
	}); err != nil {
		t.Fatalf("C never refused after its expiry (%v): %+v %v", c.Cert.NotAfter, last, lastErr)
	}
	if !last.reused || !strings.Contains(last.refused, "expired") || last.region != "zhejiang/ningbo/haishu" {
		t.Errorf("C after its expiry: %+v", last)
	}

	// 4. A resumed session is another connection with its own slot and
	// the same checks.
	cache := tls.NewLRUClientSessionCache(4)
	hd := client(d, cache)
	if an, err := get(hd, ""); err != nil || !an.authed || an.region != "zhejiang/wenzhou/lucheng" {
		t.Fatalf("D: %+v %v", an, err)
	}
	hd.Transport.(*http.Transport).CloseIdleConnections()
	an, err := get(hd, "")
	if err != nil || an.reused || !an.resumed || !an.authed || an.region != "zhejiang/wenzhou/lucheng" {
		t.Fatalf("D on a resumed session: %+v %v", an, err)
	}
	dID, _ := certs.IdentityOf(d.Cert)
	if err := revs.Suspend(certs.Suspension{Identity: dID.String(), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	hd.Transport.(*http.Transport).CloseIdleConnections()
	if an, err := get(hd, ""); err != nil || !an.resumed || an.authed || !strings.Contains(an.refused, "suspended") {
		t.Errorf("D suspended, on a resumed session: %+v %v", an, err)
	}
}
