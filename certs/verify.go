package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Verifier turns a presented certificate chain into an Identity of its
// federation, or a *VerifyError that says why not.
//
// The zero value is not usable: Federation and Roots are required.
// Revocations may be nil (nothing revoked); Now may be nil (time.Now).
type Verifier struct {
	Federation  string
	Roots       *x509.CertPool
	Revocations *RevocationList
	Now         func() time.Time
}

// NewVerifier returns a verifier for the CA's federation that checks revs.
func NewVerifier(ca *x509.Certificate, federation string, revs *RevocationList) *Verifier {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &Verifier{Federation: federation, Roots: pool, Revocations: revs}
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Verify checks chain (leaf first, then any intermediates) for the given
// extended key usage (x509.ExtKeyUsageClientAuth for a client,
// x509.ExtKeyUsageServerAuth for a server): it must lead to the
// federation's CA, be within its validity, carry exactly one spiffe
// identity of this federation, carry the extended key usages its role needs
// (CheckUsage; only node roles may act as servers), and be neither revoked
// nor suspended. A refusal is a *VerifyError; a certificate without the
// usage is refused with ErrWrongUsage.
func (v *Verifier) Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, &VerifyError{Reason: ErrNoCertificate}
	}
	leaf := chain[0]
	now := v.now()
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         v.Roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return Identity{}, classify(err, leaf, now, usage)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return Identity{}, err
	}
	if id.Federation != v.Federation {
		return Identity{}, &VerifyError{Reason: ErrWrongFederation, Subject: id.String(),
			Detail: fmt.Sprintf("want federation %q", v.Federation)}
	}
	switch usage {
	case x509.ExtKeyUsageClientAuth:
	case x509.ExtKeyUsageServerAuth:
		if !id.Role.IsNode() {
			return Identity{}, &VerifyError{Reason: ErrWrongUsage, Subject: id.String(),
				Detail: "a " + string(id.Role) + " certificate may not act as a server: only nodes serve"}
		}
	default:
		return Identity{}, &VerifyError{Reason: ErrWrongUsage, Subject: id.String(),
			Detail: "certificates of the federation are verified for clientAuth or serverAuth only"}
	}
	if err := CheckUsage(leaf, id); err != nil {
		return Identity{}, err
	}
	if err := v.Revocations.Check(leaf, id); err != nil {
		return Identity{}, err
	}
	// Every chain leads through the intermediates between leaf and root;
	// one that is revoked refuses it (the chain Go builds may differ from
	// the one presented, so each that verifies must be clean).
	for _, ch := range chains {
		for _, issuer := range ch[1 : len(ch)-1] {
			if err := v.Revocations.CheckIssuer(issuer, id); err != nil {
				return Identity{}, err
			}
		}
	}
	return id, nil
}

// CheckUsage checks that cert, whose identity is id, carries the extended
// key usages id's role needs, whatever it is presented for:
//
//   - a node certificate (province, city, district) both serverAuth and
//     clientAuth, since every node serves its peers and calls them;
//   - a user certificate (operator, coordinator, department, portal)
//     clientAuth, and neither serverAuth nor anything that stands for it,
//     so that it cannot pose as a node's server, here or to a client that
//     checks the chain alone.
//
// A certificate without the extension, or with anyExtendedKeyUsage, is
// refused: Go's chain verification would accept either for any use, and
// the federation's CA always names the usages. A refusal is a *VerifyError
// with reason ErrWrongUsage.
func CheckUsage(cert *x509.Certificate, id Identity) error {
	var client, server, anyUsage bool
	for _, u := range cert.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageClientAuth:
			client = true
		case x509.ExtKeyUsageServerAuth:
			server = true
		case x509.ExtKeyUsageAny:
			anyUsage = true
		}
	}
	refuse := func(detail string) error {
		return &VerifyError{Reason: ErrWrongUsage, Subject: id.String(), Detail: detail}
	}
	switch {
	case len(cert.ExtKeyUsage) == 0 && len(cert.UnknownExtKeyUsage) == 0:
		return refuse("the certificate names no extended key usage; a " + string(id.Role) + " certificate must name " + neededUsages(id.Role))
	case anyUsage:
		return refuse("the certificate allows any extended key usage; a " + string(id.Role) + " certificate must name " + neededUsages(id.Role))
	case id.Role.IsNode() && !(client && server):
		missing := "serverAuth"
		if !client {
			missing = "clientAuth"
			if !server {
				missing = "serverAuth and clientAuth"
			}
		}
		return refuse("a " + string(id.Role) + " certificate needs serverAuth and clientAuth; it lacks " + missing)
	case id.Role.IsUser() && !client:
		return refuse("a " + string(id.Role) + " certificate needs clientAuth")
	case id.Role.IsUser() && server:
		return refuse("a " + string(id.Role) + " certificate may not carry serverAuth: only nodes serve")
	}
	return nil
}

func neededUsages(r Role) string {
	if r.IsNode() {
		return "serverAuth and clientAuth"
	}
	return "clientAuth (and not serverAuth)"
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageClientAuth:
		return "clientAuth"
	case x509.ExtKeyUsageServerAuth:
		return "serverAuth"
	}
	return fmt.Sprintf("extended key usage %d", u)
}

// classify maps the x509 package's errors onto our reasons.
func classify(err error, leaf *x509.Certificate, now time.Time, usage x509.ExtKeyUsage) error {
	subject := SerialString(leaf.SerialNumber)
	if id, idErr := IdentityOf(leaf); idErr == nil {
		subject = id.String()
	}
	var inv x509.CertificateInvalidError
	var unk x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired && now.Before(leaf.NotBefore):
		return &VerifyError{Reason: ErrNotYetValid, Subject: subject, Detail: "valid from " + leaf.NotBefore.UTC().Format(time.RFC3339)}
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		// Either the leaf or a chain element; report the leaf's end when it is past.
		detail := "expired " + leaf.NotAfter.UTC().Format(time.RFC3339)
		if !now.After(leaf.NotAfter) {
			detail = "a certificate of the chain is outside its validity"
		}
		return &VerifyError{Reason: ErrExpired, Subject: subject, Detail: detail}
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return &VerifyError{Reason: ErrWrongUsage, Subject: subject, Detail: "the certificate's extended key usage does not allow " + usageName(usage)}
	case errors.As(err, &unk):
		return &VerifyError{Reason: ErrUntrusted, Subject: subject}
	}
	return &VerifyError{Reason: ErrUntrusted, Subject: subject, Detail: err.Error()}
}

// IdentityOf reads the identity of a certificate without verifying it: the
// one spiffe URI SAN, parsed and validated. Use it on certificates that a
// handshake has already verified.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []string
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			found = append(found, u.String())
		}
	}
	if len(found) != 1 {
		return Identity{}, &VerifyError{Reason: ErrNoIdentity, Subject: "serial " + SerialString(cert.SerialNumber),
			Detail: fmt.Sprintf("found %d spiffe URI SANs", len(found))}
	}
	id, err := ParseIdentity(found[0])
	if err != nil {
		return Identity{}, &VerifyError{Reason: ErrNoIdentity, Subject: "serial " + SerialString(cert.SerialNumber), Detail: err.Error()}
	}
	return id, nil
}

// PeerIdentity returns the verified identity of the peer of a completed
// handshake made with one of this package's TLS configurations.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, &VerifyError{Reason: ErrNoCertificate}
	}
	return IdentityOf(cs.PeerCertificates[0])
}

// ClientCerts says whether a server requires client certificates.
type ClientCerts int

const (
	// RequireClientCert refuses a handshake without a valid client
	// certificate (the exchange, Raft).
	RequireClientCert ClientCerts = iota
	// OptionalClientCert verifies a client certificate if one is given and
	// lets the handshake through without one (the HTTP API, whose routes
	// say which roles they admit, some none).
	OptionalClientCert
)

// ServerConfig returns a TLS 1.3 server configuration that presents cert and
// verifies client certificates itself (Verify for clientAuth: chain,
// identity, the usages of the client's role, revocation), with typed
// errors. nextProtos are the ALPN protocols offered.
func (v *Verifier) ServerConfig(cert tls.Certificate, mode ClientCerts, nextProtos ...string) *tls.Config {
	auth := tls.RequireAnyClientCert
	if mode == OptionalClientCert {
		auth = tls.RequestClientCert
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   auth,
		NextProtos:   nextProtos,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 && mode == OptionalClientCert {
				return nil
			}
			_, err := v.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// ClientConfig returns a TLS 1.3 client configuration that presents cert,
// verifies the server against the federation CA and serverName (an IP
// address or DNS name of its SANs), then checks it with Verify for
// serverAuth (its identity, that it is a node with the usages a node needs,
// revocation) and, if expect is not nil, that it is the peer the caller
// meant to reach.
func (v *Verifier) ClientConfig(cert tls.Certificate, serverName string, expect func(Identity) error, nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      v.Roots,
		ServerName:   serverName,
		NextProtos:   nextProtos,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := v.Verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if !id.Role.IsNode() {
				return &VerifyError{Reason: ErrWrongUsage, Subject: id.String(), Detail: "a server must be a node"}
			}
			if expect != nil {
				return expect(id)
			}
			return nil
		},
	}
}
