package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// Default validities. The operations issue adds short-lived certificates
// renewed automatically; until then a node certificate lasts a year.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that peers whose clocks run a little
	// behind accept a fresh certificate.
	clockSkew = 5 * time.Minute
)

// CA is the federation's certificate authority.
type CA struct {
	Federation string
	Cert       *x509.Certificate
	Key        *ecdsa.PrivateKey
}

// NewCA creates a self-signed ECDSA P-256 CA for the federation. A zero
// validity means DefaultCAValidity.
func NewCA(federation string, validity time.Duration) (*CA, error) {
	if err := checkName("federation", federation); err != nil {
		return nil, err
	}
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: new CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "credfed " + federation + " CA", Organization: []string{federation}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: federation}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: new CA: %w", err)
	}
	return &CA{Federation: federation, Cert: cert, Key: key}, nil
}

// IssueRequest asks the CA for a certificate.
type IssueRequest struct {
	Identity Identity
	// Hosts are DNS names or IP addresses put in the SANs of a node
	// certificate; ignored for users.
	Hosts []string
	// Validity from now; zero means DefaultCertValidity. It is capped at the
	// CA's own expiry.
	Validity time.Duration
	// NotBefore overrides the start of validity (tests of expired and
	// not-yet-valid certificates); zero means now minus a small skew.
	NotBefore time.Time
}

// Issued is a freshly issued certificate and its private key.
type Issued struct {
	Identity Identity
	Cert     *x509.Certificate
	Key      *ecdsa.PrivateKey
}

// Issue signs a certificate for req.Identity, which must belong to the CA's
// federation.
func (ca *CA) Issue(req IssueRequest) (*Issued, error) {
	id := req.Identity
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if id.Federation != ca.Federation {
		return nil, fmt.Errorf("%w: CA of %q cannot issue for %q", ErrWrongFederation, ca.Federation, id.Federation)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: issue: key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	validity := req.Validity
	if validity <= 0 {
		validity = DefaultCertValidity
	}
	notBefore := req.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-clockSkew)
	}
	notAfter := notBefore.Add(validity + clockSkew)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         id.Name(),
			OrganizationalUnit: []string{string(id.Role)},
			Organization:       []string{id.Federation},
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URI()},
		SubjectKeyId:          keyID(&key.PublicKey),
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
	}
	if id.Role.IsNode() {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		for _, h := range req.Hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else if h != "" {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: issue %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: issue %s: %w", id, err)
	}
	return &Issued{Identity: id, Cert: cert, Key: key}, nil
}

// TLSCertificate returns the certificate and key as a tls.Certificate.
func (is *Issued) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{is.Cert.Raw}, PrivateKey: is.Key, Leaf: is.Cert}
}

// CertPEM returns the certificate in PEM form.
func (is *Issued) CertPEM() []byte { return certPEM(is.Cert) }

// KeyPEM returns the private key in PEM (PKCS #8) form.
func (is *Issued) KeyPEM() ([]byte, error) { return keyPEM(is.Key) }

// Pool returns a certificate pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return certPEM(ca.Cert) }

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("certs: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return sum[:20]
}
