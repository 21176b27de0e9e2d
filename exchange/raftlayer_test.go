package exchange

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"credfed/certs"
)

// acceptOne accepts one raft conn in the background.
func acceptOne(l net.Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	return ch
}

func TestRaftStreamLayer(t *testing.T) {
	f := newFederation(t, testFed)
	a := f.startNode(t, certs.City, "zj/hz")
	b := f.startNode(t, certs.District, "zj/hz/xh")
	if b.RaftListener().Addr().String() != b.Addr().String() {
		t.Errorf("raft address %v, want the endpoint's %v", b.RaftListener().Addr(), b.Addr())
	}

	accepted := acceptOne(b.RaftListener())
	c, err := a.DialRaft(ctxTimeout(t, 5*time.Second), b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Raft writes first (the RPC type byte); the stream shows up then.
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	defer s.Close()
	if id, ok := ConnIdentity(c); !ok || id != b.id {
		t.Errorf("dialer sees %v, want %v", id, b.id)
	}
	if id, ok := ConnIdentity(s); !ok || id != a.id {
		t.Errorf("listener sees %v, want %v", id, a.id)
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(s, one); err != nil || one[0] != 1 {
		t.Fatalf("first byte: %v %v", one, err)
	}

	// A megabyte each way, at the same time.
	up, down := make([]byte, 1<<20), make([]byte, 1<<20)
	rand.Read(up)
	rand.Read(down)
	errc := make(chan error, 2)
	go func() { _, err := c.Write(up); errc <- err }()
	go func() { _, err := s.Write(down); errc <- err }()
	gotUp, gotDown := make([]byte, len(up)), make([]byte, len(down))
	if _, err := io.ReadFull(s, gotUp); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, gotDown); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(up, gotUp) || !bytes.Equal(down, gotDown) {
		t.Fatal("bytes changed in transit")
	}

	// Deadlines: a read with nothing to read times out as a net.Error,
	// and the conn still works afterwards.
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = s.Read(one)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past deadline: %v, want a timeout", err)
	}
	s.SetReadDeadline(time.Time{})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{2}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, one); err != nil || one[0] != 2 {
		t.Fatalf("after a timeout: %v %v", one, err)
	}

	// More raft conns to the same node share one QUIC connection.
	for i := 0; i < 3; i++ {
		acc := acceptOne(b.RaftListener())
		c2, err := a.DialRaft(ctxTimeout(t, 5*time.Second), b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c2.Write([]byte{9})
		s2 := <-acc
		s2.Close()
		c2.Close()
	}
	if n := metricValue(b.m.openConns.WithLabelValues(RaftALPN, "inbound")); n != 1 {
		t.Errorf("%v inbound raft connections, want 1", n)
	}

	// Close: the peer reads what was written, then io.EOF; a blocked Read
	// on the closed side returns at once.
	blocked := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 10)); blocked <- err }()
	c.Write([]byte("bye"))
	c.Close()
	select {
	case err := <-blocked:
		if err == nil {
			t.Error("read on a closed conn succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	rest, err := io.ReadAll(s)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("peer read %q, %v; want \"bye\" then EOF", rest, err)
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
}

func TestRaftRefusesUsers(t *testing.T) {
	f := newFederation(t, testFed)
	b := f.startNode(t, certs.District, "zj/hz/xh")
	user, err := f.ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: testFed, Role: certs.Operator, Region: "zj/hz", Institution: "ops"}})
	if err != nil {
		t.Fatal(err)
	}
	before := b.refused("not_a_node")
	conn, err := rawDial(t, rawClientTLS(f, user.TLSCertificate(), RaftALPN), b.Addr().String())
	if err == nil {
		var str interface {
			Write([]byte) (int, error)
			Read([]byte) (int, error)
		}
		s, oerr := conn.OpenStreamSync(ctxTimeout(t, 5*time.Second))
		err = oerr
		if oerr == nil {
			str = s
			s.SetDeadline(time.Now().Add(5 * time.Second))
			str.Write([]byte{1})
			_, err = str.Read(make([]byte, 1))
		}
	}
	if ce := connError("b", err); !errors.Is(ce, ErrUnauthenticated) {
		t.Fatalf("user on the raft layer: %v, want refused", err)
	}
	if b.refused("not_a_node") != before+1 {
		t.Error("refusal not counted")
	}
}

func TestRaftListenerClose(t *testing.T) {
	f := newFederation(t, testFed)
	a := f.startNode(t, certs.City, "zj/hz")
	b := f.startNode(t, certs.District, "zj/hz/xh")
	l := b.RaftListener()
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("accept after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	// A dialer's conn to a node that accepts no raft conns is reset.
	c, err := a.DialRaft(ctxTimeout(t, 5*time.Second), b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{1})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("read: %v, want a reset", err)
	}
}
