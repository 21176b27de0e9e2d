package exchange

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"credfed/certs"
)

// serialOf answers the serial of the caller's certificate.
func serialOf(_ context.Context, r *Request) (any, error) {
	return certs.SerialString(r.Leaf.SerialNumber), nil
}

// TestRenewedCertificateIsUsedOnTheNextRequestWithoutFailures renews the
// client's and the server's certificates many times while requests keep
// flowing: none fails, and each side's next connections carry the new
// certificate.
func TestRenewedCertificateIsUsedOnTheNextRequestWithoutFailures(t *testing.T) {
	f := newFederation(t, testFed)
	srv := f.startNode(t, certs.Province, "zj")
	cli := f.startNode(t, certs.District, "zj/hz/xh")
	srv.Handle("test.serial", serialOf)
	ctx := ctxTimeout(t, 60*time.Second)

	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var s string
				if err := cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s); err != nil {
					failures.Add(1)
					t.Errorf("call during renewals: %v", err)
					return
				}
				calls.Add(1)
			}
		}()
	}
	for round := 0; round < 5; round++ {
		before := calls.Load()
		eventually(t, 10*time.Second, "requests to flow", func() bool { return calls.Load() >= before+50 })
		// The client renews: the server sees the new serial from the next
		// connection on.
		next := f.issue(t, cli.id)
		if err := cli.SetCertificate(next.TLSCertificate()); err != nil {
			t.Fatal(err)
		}
		want := certs.SerialString(next.Cert.SerialNumber)
		eventually(t, 10*time.Second, "the server to see the client's new certificate", func() bool {
			var s string
			return cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s) == nil && s == want
		})
		// The server renews too (its old connections are the client's to
		// retire when the old certificate nears its end; here it is valid
		// for a year, so they simply go on).
		if err := srv.SetCertificate(f.issue(t, srv.id).TLSCertificate()); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || calls.Load() == 0 {
		t.Fatalf("%d calls, %d failed", calls.Load(), failures.Load())
	}
	t.Logf("%d calls across 5 renewals of each side, none failed", calls.Load())
}

// TestConnectionToAPeerWhoseCertificateEndsSoonIsReplaced: a pooled
// connection whose peer certificate expires within RetireWindow is
// replaced by a fresh one, which finds the peer's renewed certificate; a
// peer that has not renewed is not redialed at every call.
func TestConnectionToAPeerWhoseCertificateEndsSoonIsReplaced(t *testing.T) {
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
	cli := f.startNode(t, certs.District, "zj/hz/xh")
	srv.Handle("test.serial", serialOf)
	ctx := ctxTimeout(t, 30*time.Second)
	call := func() {
		t.Helper()
		var s string
		if err := cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s); err != nil {
			t.Fatal(err)
		}
	}
	call()
	// The peer has not renewed: the first use after the dial retires it
	// once, the redial finds the same certificate and is kept.
	call()
	call()
	call()
	pooled := func() *connInfo {
		cli.mu.Lock()
		pc := cli.pool[poolKey{srv.Addr().String(), ALPN}]
		cli.mu.Unlock()
		pc.mu.Lock()
		defer pc.mu.Unlock()
		return pc.ci
	}
	first := pooled()
	if first == nil || !first.keep {
		t.Fatal("a peer that has not renewed should be kept on its connection")
	}
	call()
	if pooled() != first {
		t.Fatal("redialed a peer that has not renewed")
	}
	// It renews: the kept connection serves to its end (here: closed), and
	// the next finds the new certificate, not the session of the old.
	if err := srv.SetCertificate(f.issue(t, srv.id).TLSCertificate()); err != nil {
		t.Fatal(err)
	}
	first.conn.CloseWithError(0, "")
	eventually(t, 10*time.Second, "a fresh connection to the renewed peer", func() bool {
		var s string
		if cli.Call(ctx, srv.peer(), "test.serial", Meta{}, nil, &s) != nil {
			return false
		}
		ci := pooled()
		return ci != nil && ci != first && time.Until(ci.leaf.NotAfter) > time.Hour
	})
}
