// Package attest signs JSON documents with a coordinator node's certificate
// key and verifies them offline against the federation CA, so that a
// document handed on (a subject's report) can be checked by anyone holding
// ca.pem.
//
// The scheme (docs/design.md, "Signed documents"): the signed document is a
// JSON object with a "signature" member
//
//	{"alg":"ES256", "canonicalization":"RFC8785", "signer":"spiffe://…",
//	 "signed_at":"2026-12-01T10:00:00Z", "chain":["<base64 DER>", …],
//	 "value":"<base64 ASN.1 ECDSA signature>"}
//
// value is an ECDSA P-256 signature over the SHA-256 of the RFC 8785
// (JSON Canonicalization Scheme) form of the whole document with the
// signature member's "value" removed: the content, the signer, the time and
// the chain are all covered. The chain is the signer's certificate first,
// then any intermediates; it is verified against the federation CA as of
// signed_at, so a report signed by a certificate that has since expired (or
// been renewed) still verifies; the signer must be a coordinator node (a
// district holds only its own records and may not vouch for a report). The
// document must be I-JSON (no duplicate member anywhere) and the signature
// value in its low-S form, so that one document has one reading and one
// signature. Offline verification cannot know of a later revocation: a
// verifier that can reach the federation asks for it.
package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sync/atomic"
	"time"

	"github.com/gowebpki/jcs"

	"credfed/certs"
)

// Member is the name of the signature member of a signed document.
const Member = "signature"

// Alg and Canonicalization are the only algorithm and canonical form of
// this version of the scheme.
const (
	Alg              = "ES256"
	Canonicalization = "RFC8785"
)

// MaxDocument bounds the size of a document Verify reads.
const MaxDocument = 64 << 20

// Signature is a document's signature member.
type Signature struct {
	Alg              string    `json:"alg"`
	Canonicalization string    `json:"canonicalization"`
	Signer           string    `json:"signer"`
	SignedAt         time.Time `json:"signed_at"`
	// Chain and Value are standard base64 strings in JSON.
	Chain [][]byte `json:"chain"`
	Value []byte   `json:"value,omitempty"`
}

// Errors of verification; Verify wraps one of them with the detail.
var (
	ErrNotSigned     = errors.New("attest: the document has no signature")
	ErrMalformed     = errors.New("attest: malformed signed document")
	ErrUnsupported   = errors.New("attest: unsupported signature scheme")
	ErrUntrusted     = errors.New("attest: the signer's certificate does not chain to the federation CA")
	ErrBadSignature  = errors.New("attest: the signature does not match the document")
	ErrNotANode      = errors.New("attest: the signer is not a node of the federation")
	ErrSignerChanged = errors.New("attest: the signer named does not match the certificate")
)

// Signer signs documents with a node's certificate and key.
type Signer struct {
	cert atomic.Pointer[tls.Certificate] // replaced on renewal
	id   certs.Identity
	now  func() time.Time
}

// NewSigner returns a signer for the node certificate cert (its leaf first,
// then intermediates, with an ECDSA private key). now may be nil.
func NewSigner(cert tls.Certificate, now func() time.Time) (*Signer, error) {
	if len(cert.Certificate) == 0 {
		return nil, errors.New("attest: no certificate")
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("attest: %w", err)
		}
	}
	if _, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok {
		return nil, errors.New("attest: the key is not ECDSA")
	}
	id, err := certs.IdentityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	if !id.Role.IsCoordinatorNode() {
		return nil, fmt.Errorf("attest: %s is not a coordinator node certificate (reports are signed by the coordinator that gathers them)", id)
	}
	if now == nil {
		now = time.Now
	}
	sg := &Signer{id: id, now: now}
	sg.cert.Store(&cert)
	return sg, nil
}

// SetCertificate replaces the signer's certificate (a renewal): it must be
// for the same identity, with an ECDSA key.
func (s *Signer) SetCertificate(cert tls.Certificate) error {
	if cert.Leaf == nil {
		return errors.New("attest: the new certificate is not parsed")
	}
	if _, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok {
		return errors.New("attest: the key is not ECDSA")
	}
	id, err := certs.IdentityOf(cert.Leaf)
	if err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	if id != s.id {
		return fmt.Errorf("attest: the new certificate is for %s, not %s", id, s.id)
	}
	s.cert.Store(&cert)
	return nil
}

// Identity is the signer's identity.
func (s *Signer) Identity() certs.Identity { return s.id }

// Sign returns doc (anything that marshals to a JSON object without a
// "signature" member) as indented JSON with its signature member added.
func (s *Signer) Sign(doc any) ([]byte, error) {
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, errors.New("attest: a signed document is a JSON object")
	}
	if _, ok := obj[Member]; ok {
		return nil, errors.New("attest: the document already has a signature member")
	}
	cert := s.cert.Load()
	sig := Signature{
		Alg:              Alg,
		Canonicalization: Canonicalization,
		Signer:           s.id.String(),
		SignedAt:         s.now().UTC().Truncate(time.Second),
		Chain:            cert.Certificate,
	}
	digest, err := digestWith(obj, sig)
	if err != nil {
		return nil, err
	}
	key := cert.PrivateKey.(*ecdsa.PrivateKey)
	der, err := key.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	if sig.Value, err = lowS(der, key.Curve.Params().N); err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	if obj[Member], err = json.Marshal(sig); err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	out, err := json.MarshalIndent(obj, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	return append(out, '\n'), nil
}

// digestWith is the SHA-256 of the canonical form of obj with sig (its
// value removed) as its signature member.
func digestWith(obj map[string]json.RawMessage, sig Signature) ([]byte, error) {
	sig.Value = nil
	raw, err := json.Marshal(sig)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	return digestRaw(obj, raw)
}

// digestRaw is the SHA-256 of the canonical form of obj with sigNoValue as
// its signature member.
func digestRaw(obj map[string]json.RawMessage, sigNoValue json.RawMessage) ([]byte, error) {
	whole := make(map[string]json.RawMessage, len(obj)+1)
	for k, v := range obj {
		whole[k] = v
	}
	whole[Member] = sigNoValue
	raw, err := json.Marshal(whole)
	if err != nil {
		return nil, fmt.Errorf("attest: %w", err)
	}
	canon, err := jcs.Transform(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	sum := sha256.Sum256(canon)
	return sum[:], nil
}

// Verified is what a valid signature establishes.
type Verified struct {
	Signer   certs.Identity
	SignedAt time.Time
	// Serial is the signer certificate's serial number (decimal).
	Serial string
}

// Verify checks the signature of a signed document against the federation
// CA certificate ca, and the signer's chain as it was at signing time.
func Verify(data []byte, ca *x509.Certificate) (Verified, error) {
	if len(data) > MaxDocument {
		return Verified{}, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxDocument)
	}
	// The document as received must be valid I-JSON: no duplicate member
	// anywhere (a reader that takes the first of two would see another
	// document than the one verified), valid UTF-8, no lone surrogates.
	if _, err := jcs.Transform(data); err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return Verified{}, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	if dec.More() {
		return Verified{}, fmt.Errorf("%w: data after the document", ErrMalformed)
	}
	rawSig, ok := obj[Member]
	if !ok {
		return Verified{}, ErrNotSigned
	}
	delete(obj, Member)
	var members map[string]json.RawMessage
	if err := json.Unmarshal(rawSig, &members); err != nil || members == nil {
		return Verified{}, fmt.Errorf("%w: the signature member is not an object", ErrMalformed)
	}
	var sig Signature
	if err := json.Unmarshal(rawSig, &sig); err != nil {
		return Verified{}, fmt.Errorf("%w: signature: %v", ErrMalformed, err)
	}
	if sig.Alg != Alg || sig.Canonicalization != Canonicalization {
		return Verified{}, fmt.Errorf("%w: alg %q, canonicalization %q (want %s, %s)", ErrUnsupported, sig.Alg, sig.Canonicalization, Alg, Canonicalization)
	}
	if len(sig.Value) == 0 || len(sig.Chain) == 0 {
		return Verified{}, fmt.Errorf("%w: the signature has no value or no chain", ErrMalformed)
	}
	// The value is outside the digest, and a base64 decoder ignores the
	// unused bits of its last character: only the one canonical spelling
	// of the value is accepted, so that no byte of the document can change
	// and still verify.
	if canon, _ := json.Marshal(sig.Value); !bytes.Equal(canon, bytes.TrimSpace(members["value"])) {
		return Verified{}, fmt.Errorf("%w: the signature value is not canonical base64", ErrMalformed)
	}
	chain := make([]*x509.Certificate, len(sig.Chain))
	for i, der := range sig.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return Verified{}, fmt.Errorf("%w: certificate %d of the chain: %v", ErrMalformed, i, err)
		}
		chain[i] = c
	}
	federation, err := federationOf(ca)
	if err != nil {
		return Verified{}, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	at := sig.SignedAt
	v := &certs.Verifier{Federation: federation, Roots: roots, Now: func() time.Time { return at }}
	id, err := v.Verify(chain, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	if !id.Role.IsCoordinatorNode() {
		// Reports are gathered and signed by coordinator nodes; a district
		// holds only its own records and may not vouch for others'.
		return Verified{}, fmt.Errorf("%w: %s is not a coordinator node", ErrNotANode, id)
	}
	if id.String() != sig.Signer {
		return Verified{}, fmt.Errorf("%w: the document names %q, the certificate is %s", ErrSignerChanged, sig.Signer, id)
	}
	delete(members, "value")
	sigNoValue, err := json.Marshal(members)
	if err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	digest, err := digestRaw(obj, sigNoValue)
	if err != nil {
		return Verified{}, err
	}
	pub, ok := chain[0].PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return Verified{}, fmt.Errorf("%w: the signer's key is not ECDSA", ErrUnsupported)
	}
	if canon, err := lowS(sig.Value, pub.Curve.Params().N); err != nil || !bytes.Equal(canon, sig.Value) {
		// One document, one signature value: the mirror (r, n-s) of a
		// valid signature is refused.
		return Verified{}, fmt.Errorf("%w: the signature value is not in its canonical (low-S) form", ErrBadSignature)
	}
	if !ecdsa.VerifyASN1(pub, digest, sig.Value) {
		return Verified{}, ErrBadSignature
	}
	return Verified{Signer: id, SignedAt: at, Serial: certs.SerialString(chain[0].SerialNumber)}, nil
}

// federationOf reads the federation name from its CA certificate (the
// spiffe://<federation> URI SAN certs.NewCA writes).
func federationOf(ca *x509.Certificate) (string, error) {
	for _, u := range ca.URIs {
		if u.Scheme == "spiffe" && u.Host != "" && (u.Path == "" || u.Path == "/") {
			return u.Host, nil
		}
	}
	return "", fmt.Errorf("%w: the CA certificate names no federation (no spiffe://<federation> URI)", ErrUntrusted)
}

// lowS re-encodes an ASN.1 ECDSA signature with s in the lower half of the
// group order, the one form Verify accepts.
func lowS(der []byte, n *big.Int) ([]byte, error) {
	var v struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil || len(rest) > 0 || v.R == nil || v.S == nil || v.R.Sign() <= 0 || v.S.Sign() <= 0 {
		return nil, errors.New("malformed ECDSA signature")
	}
	half := new(big.Int).Rsh(n, 1)
	if v.S.Cmp(half) > 0 {
		v.S = new(big.Int).Sub(n, v.S)
	}
	return asn1.Marshal(v)
}
