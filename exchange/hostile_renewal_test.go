package exchange

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/certs"
)

// Hostile tests of what renewal added to the exchange (issue 12): chains
// through an intermediate whose serial is revoked while connections are
// open, connection retirement under many renewals, and a peer that renews
// late. Each test passes when the defence holds; a failure proves a defect.

// interIssue issues a node certificate for id from an intermediate of f.
func interIssue(t testing.TB, inter *certs.CA, id certs.Identity) *certs.Issued {
	t.Helper()
	is, err := inter.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return is
}

// TestHostileRevokedIntermediateClosesOpenConnectionsOfItsLeaves: the
// online intermediate's key is stolen and its serial revoked. Every
// certificate it signed must be refused — not only at the next handshake
// but on the connections open at that moment, in both directions (as a
// revoked leaf's are), or the thief's node keeps talking for as long as it
// keeps its connection alive.
func TestHostileRevokedIntermediateClosesOpenConnectionsOfItsLeaves(t *testing.T) {
	f := newFederation(t, testFed)
	inter, err := f.ca.NewIntermediate("online", 0)
	if err != nil {
		t.Fatal(err)
	}
	interSerial := certs.SerialString(inter.Cert.SerialNumber)
	t.Run("client signed by the intermediate, server revokes", func(t *testing.T) {
		srv := f.startNode(t, certs.Province, "zj")
		srv.Handle("test.serial", serialOf)
		cli := f.startNode(t, certs.District, "zj/hz/xh")
		if err := cli.SetCertificate(interIssue(t, inter, cli.id).TLSCertificate()); err != nil {
			t.Fatal(err)
		}
		ctx := ctxTimeout(t, 20*time.Second)
		var s string
		if err := cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s); err != nil {
			t.Fatalf("before the revocation: %v", err)
		}
		if err := srv.revs.Revoke(certs.Revocation{Serial: interSerial, Reason: "key stolen", At: time.Now()}); err != nil {
			t.Fatal(err)
		}
		// A new connection is refused: the verifier checks the chain.
		other := f.startNode(t, certs.District, "zj/hz/sc")
		if err := other.SetCertificate(interIssue(t, inter, other.id).TLSCertificate()); err != nil {
			t.Fatal(err)
		}
		if err := other.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s); err == nil {
			t.Fatal("a new connection with a leaf of the revoked intermediate was served")
		}
		// The open one must be cut too.
		deadline := time.Now().Add(2 * time.Second)
		served := 0
		for time.Now().Before(deadline) {
			if err := cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s); err != nil {
				return
			}
			served++
			eventuallyPause(20 * time.Millisecond)
		}
		t.Errorf("the open connection of a leaf of the revoked intermediate was served %d more times over 2 s", served)
	})
	t.Run("server signed by the intermediate, client revokes", func(t *testing.T) {
		srv := f.startNode(t, certs.Province, "zj")
		srv.Handle("test.serial", serialOf)
		if err := srv.SetCertificate(interIssue(t, inter, srv.id).TLSCertificate()); err != nil {
			t.Fatal(err)
		}
		cli := f.startNode(t, certs.District, "zj/hz/xh")
		ctx := ctxTimeout(t, 20*time.Second)
		var s string
		if err := cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s); err != nil {
			t.Fatalf("before the revocation: %v", err)
		}
		if err := cli.revs.Revoke(certs.Revocation{Serial: interSerial, Reason: "key stolen", At: time.Now()}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		served := 0
		for time.Now().Before(deadline) {
			if err := cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s); err != nil {
				return
			}
			served++
			eventuallyPause(20 * time.Millisecond)
		}
		t.Errorf("the client kept using its open connection to a server whose certificate the revoked intermediate signed (%d calls over 2 s)", served)
	})
}

// eventuallyPause paces a polling loop (not a synchronization: the loop's
// condition is checked on every round).
func eventuallyPause(d time.Duration) {
	t := time.NewTimer(d)
	<-t.C
}

// TestHostileManyRenewalsLeakNoConnectionsOrGoroutines: a node renews its
// own certificate 40 times in a row, a call after each (each retires the
// pooled connection). Once the retired connections are closed, the node
// holds one connection to the peer, the peer one from it, and the
// goroutines are back to what they were.
func TestHostileManyRenewalsLeakNoConnectionsOrGoroutines(t *testing.T) {
	f := newFederation(t, testFed)
	srv := f.startNode(t, certs.Province, "zj")
	srv.Handle("test.serial", serialOf)
	cli := f.startNode(t, certs.District, "zj/hz/xh")
	ctx := ctxTimeout(t, 60*time.Second)
	var s string
	if err := cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s); err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	for i := 0; i < 40; i++ {
		if err := cli.SetCertificate(f.issue(t, cli.id).TLSCertificate()); err != nil {
			t.Fatal(err)
		}
		if err := cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s); err != nil {
			t.Fatalf("call after renewal %d: %v", i, err)
		}
	}
	count := func(e *Endpoint) int {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.conns)
	}
	eventually(t, RetireGrace+5*time.Second, "the retired connections to close", func() bool {
		return count(cli.Endpoint) <= 1 && count(srv.Endpoint) <= 1
	})
	eventually(t, 10*time.Second, "the goroutines to return", func() bool { return runtime.NumGoroutine() <= base+4 })
}

// TestHostilePeerThatRenewsLateLosesNoRequestAtItsOldExpiry: a peer's
// certificate nears its end and it has not renewed yet (its renewal
// failed and is retried late): the caller's pooled connection is retired
// once, redialed, finds the same certificate and is kept. The peer then
// renews, a few seconds before the old certificate ends. Requests keep
// flowing; none may fail when the old certificate's connection is closed
// at its expiry (the point of retiring connections before it).
func TestHostilePeerThatRenewsLateLosesNoRequestAtItsOldExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a certificate to expire (about 7 s)")
	}
	f := newFederation(t, testFed)
	id := nodeID(testFed, certs.Province, "zj")
	short, err := f.ca.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"},
		Validity: RetireWindow / 2, NotBefore: time.Now().Add(-certs.ClockSkew - time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	srv := f.startNode(t, certs.Province, "zj")
	if err := srv.SetCertificate(short.TLSCertificate()); err != nil {
		t.Fatal(err)
	}
	srv.Handle("test.serial", serialOf)
	cli := f.startNode(t, certs.District, "zj/hz/xh")
	ctx := ctxTimeout(t, 30*time.Second)
	var s string
	for i := 0; i < 3; i++ { // dial, retire, redial to the same certificate: kept
		if err := cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s); err != nil {
			t.Fatal(err)
		}
	}
	// The peer renews now, late.
	if err := srv.SetCertificate(f.issue(t, srv.id).TLSCertificate()); err != nil {
		t.Fatal(err)
	}
	renewedAt := time.Now()
	end := short.Cert.NotAfter.Add(time.Second)
	var calls, failures atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1_000_000 && time.Now().Before(end); i++ {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				var s string
				err := cli.Call(cctx, srv.peer(), "test.serial", Meta{}, nil, &s)
				cancel()
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					first.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	wg.Wait()
	if failures.Load() > 0 {
		t.Errorf("%d of %d requests failed around the old certificate's expiry, though the peer had renewed %v before it (first: %v)",
			failures.Load(), calls.Load(), short.Cert.NotAfter.Sub(renewedAt).Round(time.Millisecond), first.Load())
	}
}
