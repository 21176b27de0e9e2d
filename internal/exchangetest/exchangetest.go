// Package exchangetest starts real exchange endpoints (QUIC, mutual TLS)
// on loopback for the tests of the packages that serve or call exchange
// operations.
package exchangetest

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/certs"
	"credfed/exchange"
)

// CA returns a new CA of federation fed.
func CA(tb testing.TB, fed string) *certs.CA {
	tb.Helper()
	ca, err := certs.NewCA(fed, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return ca
}

// Endpoint starts an endpoint on 127.0.0.1 with a node certificate of id
// issued by ca, closed when the test ends.
func Endpoint(tb testing.TB, ca *certs.CA, id certs.Identity) *exchange.Endpoint {
	tb.Helper()
	is, err := ca.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		tb.Fatal(err)
	}
	ep, err := exchange.New(exchange.Config{Certificate: is.TLSCertificate(), Verifier: certs.NewVerifier(ca.Cert, id.Federation, nil),
		Addr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ep.Close() })
	return ep
}
