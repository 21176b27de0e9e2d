package systemtest

import (
	"context"
	"net/http/httptrace"
	"sync/atomic"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
)

// TestRevocationCutsAKeepAliveHTTPSConnection: TLS checks a client
// certificate at the handshake only, so a coordinator whose certificate
// was revoked went on looking subjects up over its open keep-alive
// connection. Every request is now checked against the replicated list: the
// very next request on the same connection is refused.
func TestRevocationCutsAKeepAliveHTTPSConnection(t *testing.T) {
	f := startFed(t, localfed.Spec{Districts: 1}, node.Options{})
	coord := coordinator(t, f)
	subject := credit.SyntheticPerson(9191, credit.NewDate(1977, 7, 7))
	req := api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "钱七", Reference: "R-rev"}
	var reused atomic.Bool
	traced := func() context.Context {
		return httptrace.WithClientTrace(ctxT(t, 30*time.Second), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused.Store(info.Reused) }})
	}
	if _, err := coord.Lookup(traced(), req); err != nil {
		t.Fatal(err)
	}
	if _, err := coord.Lookup(traced(), req); err != nil || !reused.Load() {
		t.Fatalf("second lookup: %v, connection reused %v", err, reused.Load())
	}

	cert, err := certs.LoadCertFile(f.Layout.Coordinator.Cert)
	if err != nil {
		t.Fatal(err)
	}
	id, err := certs.IdentityOf(cert)
	if err != nil {
		t.Fatal(err)
	}
	op := certs.Identity{Federation: f.Layout.Federation, Role: certs.Operator, Region: "zhejiang", Institution: "operations"}
	wait.Until(t, 20*time.Second, "the revocation to be applied", func() bool {
		_, err := f.Node(f.Province()).Replica().Apply(ctxT(t, 10*time.Second), consensus.CmdRevoke, op,
			certs.Revocation{Serial: certs.SerialString(cert.SerialNumber), Reason: "key compromised"})
		return err == nil
	})
	prov := f.Node(f.Province())
	wait.Until(t, 20*time.Second, "the province to enforce the revocation", func() bool {
		return prov.Replica().State().Revocations().Check(cert, id) != nil
	})
	_, err = coord.Lookup(traced(), req)
	if api.Code(err) != api.CodeUnauthenticated || !reused.Load() {
		t.Fatalf("lookup on the same connection after the revocation: %v (connection reused %v), want unauthenticated", err, reused.Load())
	}
	if se, ok := err.(*api.StatusError); !ok || se.Err.Message != "the client certificate is revoked" {
		t.Fatalf("refusal %v", err)
	}
	// Any route, not only lookups.
	if _, err := coord.Catalog(ctxT(t, 10*time.Second)); api.Code(err) != api.CodeUnauthenticated {
		t.Fatalf("catalog after the revocation: %v", err)
	}
}
