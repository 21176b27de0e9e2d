// Package enroll keeps a node's certificate alive: coordinators that hold
// an online intermediate CA sign renewals for the nodes and users below
// them, and every node renews its own certificate at two thirds of its
// life and swaps it in without a restart.
package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"credfed/audit"
	"credfed/certs"
	"credfed/exchange"
	"credfed/fault"
	"credfed/internal/keyrate"
	"credfed/storage"
)

// OpRenew is the exchange operation by which a node asks a coordinator
// above it to renew its certificate.
const OpRenew = "certs.renew"

// Lifetimes a renewal keeps. A renewal has the lifetime of the certificate
// it renews, within these bounds.
const (
	MinLifetime = time.Minute
	MaxLifetime = 397 * 24 * time.Hour
)

// ErrNoSigner: this node holds no intermediate CA, so it signs nothing.
var ErrNoSigner = errors.New("enroll: this node holds no signing CA")

// renewRequest is OpRenew's body: a CSR (DER) over the new key.
type renewRequest struct {
	CSR []byte `cbor:"1,keyasint"`
}

// renewAnswer is the new certificate, leaf first, then the chain up to
// (not including) the root.
type renewAnswer struct {
	Chain [][]byte `cbor:"1,keyasint"`
}

// Config is what the service needs.
type Config struct {
	// Self is this node's identity.
	Self certs.Identity
	// Signer is the intermediate CA this node signs with; nil on a node
	// that holds none (it still renews its own certificate, through the
	// coordinators above it).
	Signer *certs.CA
	// Verifier checks what a signer returns before it is used.
	Verifier *certs.Verifier
	// Endpoint serves OpRenew (when Signer is set) and calls it.
	Endpoint *exchange.Endpoint
	// Coordinators are the coordinator nodes above Self, nearest first,
	// as of now.
	Coordinators func() []exchange.Peer
	// Audit records every renewal signed or refused (nil: none; tests).
	Audit *audit.Recorder
	// Registered says whether a region is in the registry (nil: not
	// checked): the users and nodes of a removed region renew nothing.
	Registered func(region string) bool
	// SignRate bounds the renewals one identity may have signed (default
	// one per 10 s, burst 3).
	SignRate rate.Limit
	// Now is the clock (nil: time.Now).
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service signs renewals (with a signer) and renews this node's
// certificate (Renewer).
type Service struct {
	cfg     Config
	log     *slog.Logger
	limits  *keyrate.Limiters[string]
	signed  *prometheus.CounterVec
	renewed *prometheus.CounterVec
	expiry  prometheus.Gauge
	renewAt prometheus.Gauge
}

// New builds the service and, on a node with a signer, serves OpRenew.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SignRate == 0 {
		cfg.SignRate = rate.Every(10 * time.Second)
	}
	s := &Service{cfg: cfg, log: cfg.Logger,
		limits: keyrate.New[string](cfg.SignRate, 3, 100_000),
		signed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_certificates_signed_total", Help: "Certificates this node's intermediate CA signed or refused (renewals and the first certificates of joining nodes), by result.",
		}, []string{"result"}),
		renewed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_certificate_renewals_total", Help: "Renewals of this node's own certificate, by result (renewed, failed).",
		}, []string{"result"}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credfed_certificate_expiry_timestamp_seconds", Help: "When this node's certificate expires (Unix time).",
		}),
		renewAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "credfed_certificate_renew_timestamp_seconds", Help: "When this node next renews its certificate (Unix time).",
		}),
	}
	for _, r := range []string{"signed", "refused"} {
		s.signed.WithLabelValues(r)
	}
	for _, r := range []string{"renewed", "failed"} {
		s.renewed.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.signed, s.renewed, s.expiry, s.renewAt)
	}
	if cfg.Signer != nil && cfg.Endpoint != nil {
		cfg.Endpoint.Handle(OpRenew, s.serveRenew,
			exchange.AllowRoles(certs.Province, certs.City, certs.District), exchange.MaxBody(8<<10))
	}
	return s
}

// CanSign says whether this node holds a signing CA.
func (s *Service) CanSign() bool { return s.cfg.Signer != nil }

// Renewal signs a renewal of current, the verified certificate of caller,
// over the key of csr (DER or PEM): same identity, same host names, the
// same lifetime from now (within MinLifetime and MaxLifetime). It refuses
// identities outside this node's region, CSRs that do not prove their
// key, and callers that renew too often. Signed or refused, it is audited.
// The answer is the new leaf and the chain after it.
func (s *Service) Renewal(ctx context.Context, caller certs.Identity, current *x509.Certificate, csr []byte) ([]*x509.Certificate, error) {
	entry := audit.By(caller, "cert.renew")
	refuse := func(e error) ([]*x509.Certificate, error) {
		s.signed.WithLabelValues("refused").Inc()
		entry.Decision = storage.DecisionDenied
		entry.Reason = string(fault.KindOf(e))
		if s.cfg.Audit != nil {
			if err := s.cfg.Audit.Record(entry); err != nil {
				return nil, err
			}
		}
		return nil, e
	}
	ca := s.cfg.Signer
	switch {
	case ca == nil:
		return refuse(fault.New(fault.Unavailable, "this node holds no signing CA: ask a coordinator that does"))
	case current == nil:
		return refuse(fault.New(fault.Unauthenticated, "a renewal needs the certificate it renews"))
	case caller.Federation != s.cfg.Self.Federation || !certs.InRegion(caller.Region, s.cfg.Self.Region):
		return refuse(fault.New(fault.Forbidden, "this node signs renewals only for identities of its own region and below"))
	case s.cfg.Registered != nil && !s.cfg.Registered(caller.Region):
		return refuse(fault.New(fault.Forbidden, "the certificate's region is not registered in the federation (removed?)"))
	case !s.limits.Allow(caller.String()):
		return refuse(fault.New(fault.TooManyRequests, "this identity renews too often"))
	}
	pub, err := certs.ParseCSR(csr)
	if err != nil {
		return refuse(fault.Field(fault.BadRequest, "csr", "%s", err.Error()))
	}
	// A renewal keeps the line of the certificate it renews: its first
	// serial (revoking that refuses every renewal) and its intended
	// lifetime (not the current one, which an intermediate near its end
	// may have capped).
	lin, _ := certs.LineageOf(current)
	lin.Lifetime = min(max(lin.Lifetime, MinLifetime), MaxLifetime)
	req := certs.IssueRequest{Identity: caller, Validity: lin.Lifetime, Lineage: &lin}
	if caller.Role.IsNode() {
		req.Hosts = hostsOf(current)
	}
	leaf, err := ca.Sign(req, pub)
	if err != nil {
		return refuse(fault.New(fault.Internal, "the certificate could not be signed"))
	}
	entry.Reference = certs.SerialString(leaf.SerialNumber)
	entry.Decision = storage.DecisionAllowed
	if s.cfg.Audit != nil {
		if err := s.cfg.Audit.Record(entry); err != nil {
			return nil, err
		}
	}
	s.signed.WithLabelValues("signed").Inc()
	s.log.Info("signed a certificate renewal", "identity", caller.String(), "serial", entry.Reference,
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return append([]*x509.Certificate{leaf}, ca.Chain...), nil
}

// serveRenew is OpRenew: a node below renews its certificate.
func (s *Service) serveRenew(ctx context.Context, req *exchange.Request) (any, error) {
	var in renewRequest
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	chain, err := s.Renewal(ctx, req.Caller, req.Leaf, in.CSR)
	if err != nil {
		return nil, wireError(err)
	}
	out := renewAnswer{}
	for _, c := range chain {
		out.Chain = append(out.Chain, c.Raw)
	}
	return out, nil
}

// wireError maps a refusal onto the exchange's codes; anything else is
// internal, and its text stays here.
func wireError(err error) error {
	f := fault.As(err)
	if f == nil {
		return exchange.Errorf(exchange.CodeInternal, "the renewal could not be signed")
	}
	code := exchange.CodeInternal
	switch f.Kind {
	case fault.BadRequest:
		code = exchange.CodeBadRequest
	case fault.Forbidden, fault.Unauthenticated:
		code = exchange.CodeForbidden
	case fault.TooManyRequests:
		code = exchange.CodeTooManyRequests
	case fault.Unavailable:
		code = exchange.CodeUnavailable
	}
	return exchange.Errorf(code, "%s", f.Message)
}

// Lifetime is how long cert was issued for: its validity less the
// backdating of NotBefore, within MinLifetime and MaxLifetime.
func Lifetime(cert *x509.Certificate) time.Duration {
	d := cert.NotAfter.Sub(cert.NotBefore) - certs.ClockSkew
	return min(max(d, MinLifetime), MaxLifetime)
}

// RenewAt is when a node renews cert: at two thirds of its lifetime.
func RenewAt(cert *x509.Certificate) time.Time {
	return cert.NotAfter.Add(-Lifetime(cert) / 3)
}

func hostsOf(c *x509.Certificate) []string {
	var out []string
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	out = append(out, c.DNSNames...)
	return out
}

// checkChain parses a signer's answer and checks it: it verifies for this
// node's identity and usages, its key is key, and it is no worse than
// current (nil: not compared): the same host names, an end no earlier, a
// renewal time still ahead. A signer that answers otherwise (hostile, or
// an intermediate near its own end) is refused, and the node keeps its
// certificate and asks again later.
func (s *Service) checkChain(ders [][]byte, key *ecdsa.PrivateKey, current *x509.Certificate) ([]*x509.Certificate, error) {
	if len(ders) == 0 || len(ders) > 4 {
		return nil, fmt.Errorf("enroll: the signer answered %d certificates", len(ders))
	}
	chain := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("enroll: certificate %d of the answer: %w", i, err)
		}
		chain[i] = c
	}
	usage := x509.ExtKeyUsageClientAuth
	if s.cfg.Self.Role.IsNode() {
		usage = x509.ExtKeyUsageServerAuth
	}
	id, err := s.cfg.Verifier.Verify(chain, usage)
	if err != nil {
		return nil, fmt.Errorf("enroll: the renewed certificate does not verify: %w", err)
	}
	if id != s.cfg.Self {
		return nil, fmt.Errorf("enroll: the renewed certificate is for %s, not %s", id, s.cfg.Self)
	}
	if pub, ok := chain[0].PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("enroll: the renewed certificate is not for the key asked for")
	}
	if current != nil {
		leaf := chain[0]
		switch {
		case !slices.Equal(sortedHosts(leaf), sortedHosts(current)):
			return nil, fmt.Errorf("enroll: the renewed certificate names hosts %v, not this node's %v", sortedHosts(leaf), sortedHosts(current))
		case leaf.NotAfter.Before(current.NotAfter):
			return nil, fmt.Errorf("enroll: the renewed certificate ends on %s, before the current one (%s): is the signer's CA near its end?",
				leaf.NotAfter.UTC().Format(time.RFC3339), current.NotAfter.UTC().Format(time.RFC3339))
		case !RenewAt(leaf).After(s.cfg.Now()):
			return nil, errors.New("enroll: the renewed certificate is due for renewal already")
		}
	}
	return chain, nil
}

func sortedHosts(c *x509.Certificate) []string {
	h := hostsOf(c)
	slices.Sort(h)
	return h
}

// SignJoin signs the first certificate of a node that joins with a token
// (lifecycle checks the token and commits its use first): identity id,
// the given host names, over pub, for validity. The answer is the leaf
// and the chain after it.
func (s *Service) SignJoin(id certs.Identity, hosts []string, pub *ecdsa.PublicKey, validity time.Duration) ([]*x509.Certificate, error) {
	if s.cfg.Signer == nil {
		return nil, ErrNoSigner
	}
	leaf, err := s.cfg.Signer.Sign(certs.IssueRequest{Identity: id, Hosts: hosts, Validity: validity}, pub)
	if err != nil {
		return nil, err
	}
	s.signed.WithLabelValues("signed").Inc()
	return append([]*x509.Certificate{leaf}, s.cfg.Signer.Chain...), nil
}
