package exchange

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"credfed/certs"
)

func TestFanOut(t *testing.T) {
	f := newFederation(t, testFed)
	coordinator := f.startNode(t, certs.City, "zj/hz")

	okNode := f.startNode(t, certs.District, "zj/hz/ok")
	okNode.Handle("lookup", echoHandler)
	slow := f.startNode(t, certs.District, "zj/hz/slow")
	slow.Handle("lookup", func(ctx context.Context, r *Request) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	denying := f.startNode(t, certs.District, "zj/hz/deny")
	denying.Handle("lookup", echoHandler, AllowRoles(certs.Province))

	// A port where nothing listens: bind, note, release.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := pc.LocalAddr().String()
	pc.Close()

	peers := []Peer{
		okNode.peer(),
		{Name: "down", Addr: downAddr},
		slow.peer(),
		denying.peer(),
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second) // room for three handshakes on a loaded machine
	defer cancel()
	results := coordinator.FanOut(ctx, peers, "lookup", Meta{Purpose: "check"}, echoReq{Subject: "x", N: 1},
		func() any { return new(echoResp) })
	if el := time.Since(start); el > 6*time.Second { // the deadline bounds the whole fan-out
		t.Errorf("fan-out took %v", el)
	}
	want := []Status{StatusOK, StatusUnreachable, StatusTimeout, StatusDenied}
	for i, r := range results {
		if r.Peer.Addr != peers[i].Addr {
			t.Errorf("result %d is for %s, want %s", i, r.Peer.Addr, peers[i].Addr)
		}
		if r.Status != want[i] {
			t.Errorf("%s: status %s (%v), want %s", peers[i].Name, r.Status, r.Err, want[i])
		}
	}
	if resp, ok := results[0].Resp.(*echoResp); !ok || resp.N != 2 || resp.Caller != coordinator.id {
		t.Errorf("ok result = %#v", results[0].Resp)
	}
	if !errors.Is(results[3].Err, ErrForbidden) || !errors.Is(results[2].Err, ErrDeadlineExceeded) ||
		!errors.Is(results[1].Err, ErrUnavailable) {
		t.Errorf("errors: %v / %v / %v", results[1].Err, results[2].Err, results[3].Err)
	}
}
