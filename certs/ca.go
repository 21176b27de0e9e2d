package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// Default validities. Certificates issued by the root (offline) default to a
// year; an online intermediate (NewIntermediate) signs renewals, which keep
// the lifetime of the certificate they renew (renew.go).
const (
	DefaultCAValidity           = 10 * 365 * 24 * time.Hour
	DefaultCertValidity         = 365 * 24 * time.Hour
	DefaultIntermediateValidity = 2 * 365 * 24 * time.Hour
	// ClockSkew backdates NotBefore so that peers whose clocks run a little
	// behind accept a fresh certificate.
	ClockSkew = 5 * time.Minute
)

// CA is the federation's certificate authority: the root, or an
// intermediate that the root issued (NewIntermediate), which coordinators
// keep online to sign renewals and joins while the root's key stays
// offline.
type CA struct {
	Federation string
	Cert       *x509.Certificate
	Key        *ecdsa.PrivateKey
	// Chain is what lies between Cert and the root, nearest first: empty
	// for the root, the intermediate's own certificate is Cert and the root
	// is not in it (verifiers hold the root). Issued certificates carry
	// Cert and Chain after their leaf.
	Chain []*x509.Certificate
}

// IsRoot says whether the CA is the federation's self-signed root.
func (ca *CA) IsRoot() bool { return len(ca.Chain) == 0 && ca.Cert.CheckSignatureFrom(ca.Cert) == nil }

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
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// One intermediate may stand between the root and a leaf.
		MaxPathLen:   1,
		SubjectKeyId: keyID(&key.PublicKey),
		URIs:         []*url.URL{{Scheme: "spiffe", Host: federation}},
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
	// Lineage, if set, is written into the certificate (a renewal): the
	// first certificate of the line and the lifetime meant for it.
	Lineage *Lineage
}

// Lineage ties a renewed certificate to the first one of its line: the
// first certificate's serial (revoking it refuses every renewal of it,
// including those a thief of its key made) and the lifetime the line is
// meant to have (a renewal capped by an intermediate near its end gets
// the full lifetime back from the next signer).
type Lineage struct {
	First    *big.Int
	Lifetime time.Duration
}

// oidLineage is the (non-critical) extension that carries a Lineage,
// SEQUENCE { first INTEGER, lifetimeSeconds INTEGER }, under the private
// enterprise number IANA reserves for documentation (RFC 5612) until
// credfed has one of its own.
var oidLineage = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 1, 1}

type lineageASN1 struct {
	First           *big.Int
	LifetimeSeconds int64
}

// LineageOf reads a certificate's lineage: the extension's, or the
// certificate itself as the first of its line (ok false).
func LineageOf(c *x509.Certificate) (l Lineage, ok bool) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidLineage) {
			var v lineageASN1
			if rest, err := asn1.Unmarshal(e.Value, &v); err == nil && len(rest) == 0 && v.First != nil && v.First.Sign() > 0 && v.LifetimeSeconds > 0 {
				return Lineage{First: v.First, Lifetime: time.Duration(v.LifetimeSeconds) * time.Second}, true
			}
		}
	}
	return Lineage{First: c.SerialNumber, Lifetime: c.NotAfter.Sub(c.NotBefore) - ClockSkew}, false
}

// Issued is a freshly issued certificate and its private key.
type Issued struct {
	Identity Identity
	Cert     *x509.Certificate
	// Chain is the issuing CA's certificates below the root, nearest first
	// (empty when the root issued it).
	Chain []*x509.Certificate
	Key   *ecdsa.PrivateKey
}

// Issue signs a certificate for req.Identity, which must belong to the CA's
// federation, with a fresh key.
func (ca *CA) Issue(req IssueRequest) (*Issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: issue: key: %w", err)
	}
	cert, err := ca.Sign(req, &key.PublicKey)
	if err != nil {
		return nil, err
	}
	return &Issued{Identity: req.Identity, Cert: cert, Chain: ca.Chain, Key: key}, nil
}

// Sign signs a certificate for req.Identity over pub, a P-256 key that the
// holder keeps (a CSR's, see ParseCSR).
func (ca *CA) Sign(req IssueRequest, pub *ecdsa.PublicKey) (*x509.Certificate, error) {
	id := req.Identity
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if id.Federation != ca.Federation {
		return nil, fmt.Errorf("%w: CA of %q cannot issue for %q", ErrWrongFederation, ca.Federation, id.Federation)
	}
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: certificates of the federation are for ECDSA P-256 keys", ErrBadCSR)
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
		notBefore = time.Now().Add(-ClockSkew)
	}
	notAfter := notBefore.Add(validity + ClockSkew)
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
		SubjectKeyId:          keyID(pub),
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
	}
	if l := req.Lineage; l != nil && l.First != nil {
		der, err := asn1.Marshal(lineageASN1{First: l.First, LifetimeSeconds: int64(l.Lifetime / time.Second)})
		if err != nil {
			return nil, fmt.Errorf("certs: lineage: %w", err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidLineage, Value: der})
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
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: issue %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: issue %s: %w", id, err)
	}
	return cert, nil
}

// NewIntermediate issues an intermediate CA under the root ca, named name
// (a label such as "online-1" or the holder's region's last part). Its
// certificate can sign only leaves (path length zero) and only identities
// of the federation (a URI name constraint on the federation's host), so a
// stolen intermediate key cannot mint a certificate that another
// federation's verifier or a web client would take. A zero validity means
// DefaultIntermediateValidity, capped at the root's expiry.
func (ca *CA) NewIntermediate(name string, validity time.Duration) (*CA, error) {
	if !ca.IsRoot() {
		return nil, fmt.Errorf("%w: only the root CA issues intermediates (one level below the root)", ErrNotRoot)
	}
	if ca.Cert.MaxPathLenZero {
		return nil, fmt.Errorf("%w: this root was created with path length zero and cannot have intermediates: create a new federation CA", ErrNotRoot)
	}
	if err := checkName("intermediate name", name); err != nil {
		return nil, err
	}
	if validity <= 0 {
		validity = DefaultIntermediateValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: new intermediate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "credfed " + ca.Federation + " intermediate " + name, Organization: []string{ca.Federation}},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
		PermittedURIDomains:   []string{ca.Federation},
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: ca.Federation, Path: "/ca/" + name}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: new intermediate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: new intermediate: %w", err)
	}
	return &CA{Federation: ca.Federation, Cert: cert, Key: key, Chain: []*x509.Certificate{cert}}, nil
}

// ParseCSR parses a PEM or DER certificate signing request, checks its
// signature (proof that the requester holds the key) and returns its P-256
// public key. Everything else in it (subject, SANs) is ignored: the signer
// decides the identity from who asks, never from what the CSR says.
func ParseCSR(data []byte) (*ecdsa.PublicKey, error) {
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: a %s block, not a CERTIFICATE REQUEST", ErrBadCSR, block.Type)
		}
		data = block.Bytes
	}
	if len(data) > MaxCSRBytes {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrBadCSR, MaxCSRBytes)
	}
	csr, err := x509.ParseCertificateRequest(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: its signature does not verify", ErrBadCSR)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: certificates of the federation are for ECDSA P-256 keys", ErrBadCSR)
	}
	return pub, nil
}

// MaxCSRBytes bounds a CSR (a P-256 one is under 300 bytes).
const MaxCSRBytes = 4 << 10

// NewCSR makes a fresh P-256 key and a CSR (DER) signed with it.
func NewCSR(id Identity) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: csr key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.Name()}, URIs: []*url.URL{id.URI()}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: csr: %w", err)
	}
	return key, der, nil
}

// TLSCertificate returns the certificate and key as a tls.Certificate.
func (is *Issued) TLSCertificate() tls.Certificate {
	ders := [][]byte{is.Cert.Raw}
	for _, c := range is.Chain {
		ders = append(ders, c.Raw)
	}
	return tls.Certificate{Certificate: ders, PrivateKey: is.Key, Leaf: is.Cert}
}

// CertPEM returns the certificate in PEM form.
func (is *Issued) CertPEM() []byte { return ChainPEM(is.Cert, is.Chain) }

// ChainPEM encodes leaf and the chain after it as consecutive PEM blocks.
func ChainPEM(leaf *x509.Certificate, chain []*x509.Certificate) []byte {
	out := certPEM(leaf)
	for _, c := range chain {
		out = append(out, certPEM(c)...)
	}
	return out
}

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

// KeyPEM returns the CA's private key as PKCS#8 PEM.
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }

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

// EncodeKey returns a private key as PKCS#8 PEM.
func EncodeKey(k *ecdsa.PrivateKey) ([]byte, error) { return keyPEM(k) }
