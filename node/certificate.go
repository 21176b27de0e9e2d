package node

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"credfed/certs"
	"credfed/consensus"
	"credfed/enroll"
	"credfed/exchange"
	"credfed/lifecycle"
)

// The node's certificate is held here and read at every handshake, so
// that a renewal (enroll.Renewer) reaches the exchange, Raft (which rides
// on the exchange), the HTTPS API and the report signer without a restart.

// Certificate is the node's current certificate (enroll.Holder).
func (n *Node) Certificate() tls.Certificate { return *n.cert.Load() }

// SetCertificate installs a renewed certificate: it must verify as this
// node's, and from the next handshake on every listener and client
// presents it. Connections already open keep the one they were opened
// with, which stays valid until it expires.
func (n *Node) SetCertificate(c tls.Certificate) error {
	id, err := n.verifier.Verify(chainOf(c), x509.ExtKeyUsageServerAuth)
	if err != nil {
		return fmt.Errorf("node: the new certificate: %w", err)
	}
	if id != n.cfg.Identity() {
		return fmt.Errorf("node: the new certificate is for %s, not %s", id, n.cfg.Identity())
	}
	if n.ep != nil {
		if err := n.ep.SetCertificate(c); err != nil {
			return err
		}
	}
	if n.signer != nil {
		if err := n.signer.SetCertificate(c); err != nil {
			return err
		}
	}
	n.cert.Store(&c)
	return nil
}

// chainOf parses a TLS certificate's chain, leaf first.
func chainOf(c tls.Certificate) []*x509.Certificate {
	out := make([]*x509.Certificate, 0, len(c.Certificate))
	for i, der := range c.Certificate {
		if i == 0 && c.Leaf != nil {
			out = append(out, c.Leaf)
			continue
		}
		x, err := x509.ParseCertificate(der)
		if err != nil {
			return out
		}
		out = append(out, x)
	}
	return out
}

// startEnrollment builds the renewal service: a coordinator with
// tls.signer_cert signs for its region, and every node with tls.renew
// renews its own certificate in the background.
func (n *Node) startEnrollment() error {
	var signer *certs.CA
	if n.cfg.TLS.SignerCert != "" {
		var err error
		if signer, err = certs.LoadSigner(n.cfg.TLS.SignerCert, n.cfg.TLS.SignerKey); err != nil {
			return fmt.Errorf("node: tls.signer_cert: %w", err)
		}
		if signer.Federation != n.cfg.Federation {
			return fieldErr("tls.signer_cert", "the signing CA is of federation %q, not %q", signer.Federation, n.cfg.Federation)
		}
		if signer.Cert.CheckSignatureFrom(n.caCert) != nil {
			return fieldErr("tls.signer_cert", "the signing CA was not issued by this federation's CA (tls.ca)")
		}
		if left := time.Until(signer.Cert.NotAfter); left <= 0 {
			return fieldErr("tls.signer_cert", "the signing CA expired on %s: issue a new one with credfed certs intermediate", signer.Cert.NotAfter.UTC().Format(time.DateOnly))
		} else if left < 30*24*time.Hour {
			n.log.Warn("the signing CA expires soon: issue a new one with credfed certs intermediate", "not_after", signer.Cert.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	state := n.rep.State()
	n.enroll = enroll.New(enroll.Config{Self: n.cfg.Identity(), Signer: signer, Verifier: n.verifier, Endpoint: n.ep,
		Coordinators: func() []exchange.Peer { return consensus.CoordinatorsAbove(state.Regions(), n.cfg.Identity()) },
		Audit:        n.audit, Registered: n.registered, Logger: n.log, Registerer: n.registry})
	n.renewer = n.enroll.NewRenewer(n, n.cfg.TLS.Cert, n.cfg.TLS.Key)
	// A node whose own certificate the federation refuses (its region
	// removed, its identity suspended, its serial revoked) says so once,
	// plainly, instead of only failing every connection.
	var told atomic.Bool
	n.revs.Subscribe(func() {
		c := n.Certificate()
		if err := n.revs.Check(c.Leaf, n.cfg.Identity()); err != nil && told.CompareAndSwap(false, true) {
			n.log.Error("the federation refuses this node's certificate: its region may have been removed (credfed region remove) or its identity suspended; every other node refuses it now, so stop this node", "reason", err.Error())
		}
	})
	if n.cfg.TLS.Renews() {
		n.renewer.Start()
	}
	return nil
}

// apiTLS is the HTTPS API's TLS configuration: the certificate is read at
// each handshake.
func (n *Node) apiTLS() *tls.Config {
	cfg := n.verifier.ServerConfig(n.Certificate(), certs.OptionalClientCert, "h2", "http/1.1")
	cfg.Certificates = nil
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return n.cert.Load(), nil }
	return cfg
}

// regionsConfig is what a coordinator needs to add regions and serve the
// joins of their nodes (lifecycle/regions.go).
func (n *Node) regionsConfig() (*lifecycle.RegionsConfig, error) {
	rc := &lifecycle.RegionsConfig{Registry: n.rep.State(), Signer: n.enroll, CA: n.caCert,
		API: func() string {
			if r, ok := n.rep.State().Region(n.cfg.Region); ok && r.API != "" {
				return r.API
			}
			if n.apiLn != nil {
				return "https://" + n.APIAddr()
			}
			return ""
		}}
	if n.cfg.PseudonymKeyFile != "" {
		data, err := os.ReadFile(n.cfg.PseudonymKeyFile)
		if err != nil {
			return nil, fmt.Errorf("node: pseudonym_key_file: %w", err)
		}
		rc.PseudonymKey = strings.TrimSpace(string(data))
		rc.PseudonymKeys = n.rotatedKeys // key rotation (keys.go)
	}
	return rc, nil
}

// registered says whether a region is in the registry; before the registry
// has reached this node, every region is (the node is not ready then).
func (n *Node) registered(region string) bool {
	st := n.rep.State()
	if _, ok := st.Region(region); ok {
		return true
	}
	return len(st.Regions()) == 0
}
