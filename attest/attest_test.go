package attest

import (
	"bytes"
	"crypto/elliptic"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"credfed/certs"
	"credfed/internal/wait"
)

type report struct {
	Subject string   `json:"subject_pseudonym"`
	Records []string `json:"records"`
	Count   int      `json:"count"`
	Note    string   `json:"note"`
}

func issue(t *testing.T, ca *certs.CA, id certs.Identity, notBefore time.Time, validity time.Duration) *certs.Issued {
	t.Helper()
	is, err := ca.Issue(certs.IssueRequest{Identity: id, Hosts: []string{"127.0.0.1"}, NotBefore: notBefore, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	return is
}

func node(region string) certs.Identity {
	return certs.Identity{Federation: "demo", Role: certs.City, Region: region}
}

func signed(t *testing.T) ([]byte, *certs.CA) {
	t.Helper()
	ca, err := certs.NewCA("demo", 0)
	if err != nil {
		t.Fatal(err)
	}
	is := issue(t, ca, node("tianjin/heping"), time.Time{}, 0)
	s, err := NewSigner(is.TLSCertificate(), nil)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := s.Sign(report{Subject: "p-1", Records: []string{"a", "b"}, Count: 2, Note: "和平区 <ok> & \u00e9"})
	if err != nil {
		t.Fatal(err)
	}
	return doc, ca
}

func TestSignAndVerify(t *testing.T) {
	doc, ca := signed(t)
	v, err := Verify(doc, ca.Cert)
	if err != nil {
		t.Fatalf("Verify: %v\n%s", err, doc)
	}
	if v.Signer != node("tianjin/heping") {
		t.Errorf("signer %v", v.Signer)
	}
	if time.Since(v.SignedAt) > time.Minute || v.Serial == "" {
		t.Errorf("signed at %v, serial %q", v.SignedAt, v.Serial)
	}
	// The document is readable JSON with its content as it was.
	var back report
	if err := json.Unmarshal(doc, &back); err != nil || back.Count != 2 || back.Note != "和平区 <ok> & \u00e9" {
		t.Fatalf("document content %+v, %v", back, err)
	}
}

// Reformatting and reordering do not break the signature: the canonical
// form is what is signed.
func TestVerifyIgnoresFormatting(t *testing.T) {
	doc, ca := signed(t)
	var obj map[string]any
	if err := json.Unmarshal(doc, &obj); err != nil {
		t.Fatal(err)
	}
	compact, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(compact, ca.Cert); err != nil {
		t.Fatalf("compact form: %v", err)
	}
}

// Changing any single byte of the document either makes it unreadable or
// breaks the signature; it never verifies.
func TestEveryByteChangeIsDetected(t *testing.T) {
	doc, ca := signed(t)
	verified := 0
	for i := range doc {
		mod := bytes.Clone(doc)
		mod[i] ^= 0x01
		if _, err := Verify(mod, ca.Cert); err == nil {
			// Flipping the low bit of insignificant whitespace (space 0x20
			// to 0x21 '!') makes the JSON invalid, so nothing may verify
			// except a change inside formatting that JSON ignores, and JSON
			// ignores none of these flips.
			verified++
			t.Errorf("byte %d (%q→%q) changed and the document still verifies", i, doc[i], mod[i])
		}
	}
	if verified > 0 {
		t.Fatalf("%d of %d single-byte changes verified", verified, len(doc))
	}
}

func TestContentChangesAreDetected(t *testing.T) {
	doc, ca := signed(t)
	edit := func(f func(obj map[string]any)) []byte {
		var obj map[string]any
		if err := json.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		f(obj)
		out, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cases := map[string]struct {
		doc  []byte
		want error
	}{
		"count changed":  {edit(func(o map[string]any) { o["count"] = 3 }), ErrBadSignature},
		"record removed": {edit(func(o map[string]any) { o["records"] = []any{"a"} }), ErrBadSignature},
		"member added":   {edit(func(o map[string]any) { o["extra"] = true }), ErrBadSignature},
		"time moved": {edit(func(o map[string]any) {
			o[Member].(map[string]any)["signed_at"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		}), ErrBadSignature},
		"signature gone":   {edit(func(o map[string]any) { delete(o, Member) }), ErrNotSigned},
		"other algorithm":  {edit(func(o map[string]any) { o[Member].(map[string]any)["alg"] = "none" }), ErrUnsupported},
		"signer renamed":   {edit(func(o map[string]any) { o[Member].(map[string]any)["signer"] = "spiffe://demo/province/zhejiang" }), ErrSignerChanged},
		"chain removed":    {edit(func(o map[string]any) { o[Member].(map[string]any)["chain"] = []any{} }), ErrMalformed},
		"not an object":    {[]byte(`[1,2]`), ErrMalformed},
		"trailing content": {append(bytes.Clone(doc), []byte(`{}`)...), ErrMalformed},
	}
	for name, c := range cases {
		if _, err := Verify(c.doc, ca.Cert); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
}

func TestVerifyRefusesOtherFederationsAndNonNodes(t *testing.T) {
	doc, _ := signed(t)
	other, err := certs.NewCA("demo", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(doc, other.Cert); !errors.Is(err, ErrUntrusted) {
		t.Errorf("another CA: %v, want ErrUntrusted", err)
	}
	user := issue(t, other, certs.Identity{Federation: "demo", Role: certs.Portal, Region: "tianjin/heping", Institution: "portal"}, time.Time{}, 0)
	if _, err := NewSigner(user.TLSCertificate(), nil); err == nil {
		t.Error("a portal certificate was accepted as a signer")
	}
	// A district node may not vouch for a report: it holds only its own
	// records. One that signs anyway is refused at verification.
	ca, err := certs.NewCA("demo", 0)
	if err != nil {
		t.Fatal(err)
	}
	district := issue(t, ca, certs.Identity{Federation: "demo", Role: certs.District, Region: "tianjin/heping"}, time.Time{}, 0)
	if _, err := NewSigner(district.TLSCertificate(), nil); err == nil {
		t.Error("a district certificate was accepted as a signer")
	}
	forged := &Signer{id: certs.Identity{Federation: "demo", Role: certs.District, Region: "tianjin/heping"}, now: time.Now}
	dc := district.TLSCertificate()
	forged.cert.Store(&dc)
	fdoc, err := forged.Sign(map[string]int{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(fdoc, ca.Cert); !errors.Is(err, ErrNotANode) {
		t.Errorf("a district's signature: %v, want ErrNotANode", err)
	}
}

// Duplicate members anywhere and the mirror form of the signature value
// are refused: one document, one reading, one signature.
func TestVerifyRefusesDuplicatesAndHighS(t *testing.T) {
	doc, ca := signed(t)
	dup := append([]byte(`{"count":99,`), bytes.TrimPrefix(bytes.TrimSpace(doc), []byte("{"))...)
	if _, err := Verify(dup, ca.Cert); !errors.Is(err, ErrMalformed) {
		t.Errorf("a duplicate top-level member: %v, want ErrMalformed", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(doc, &obj); err != nil {
		t.Fatal(err)
	}
	var sig Signature
	if err := json.Unmarshal(obj[Member], &sig); err != nil {
		t.Fatal(err)
	}
	var v struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(sig.Value, &v); err != nil {
		t.Fatal(err)
	}
	n := elliptic.P256().Params().N
	v.S = new(big.Int).Sub(n, v.S) // the mirror signature, valid for plain ECDSA
	high, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	sig.Value = high
	obj[Member], _ = json.Marshal(sig)
	mirrored, _ := json.Marshal(obj)
	if _, err := Verify(mirrored, ca.Cert); !errors.Is(err, ErrBadSignature) {
		t.Errorf("the high-S mirror of a valid signature: %v, want ErrBadSignature", err)
	}
}

// A report signed while the certificate was valid still verifies after it
// expired; one signed after expiry does not.
func TestChainAsAtSigningTime(t *testing.T) {
	ca, err := certs.NewCA("demo", 0)
	if err != nil {
		t.Fatal(err)
	}
	// NotAfter is NotBefore + validity + the CA's 5 min skew: now + 2 s.
	is := issue(t, ca, node("tianjin/hexi"), time.Now().Add(-5*time.Minute+time.Second), time.Second)
	s, err := NewSigner(is.TLSCertificate(), nil)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := s.Sign(map[string]int{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the certificate to expire", func() bool { return time.Now().After(is.Cert.NotAfter.Add(time.Second)) })
	if _, err := Verify(doc, ca.Cert); err != nil {
		t.Fatalf("signed while valid, now expired: %v", err)
	}
	doc2, err := s.Sign(map[string]int{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(doc2, ca.Cert); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("signed after expiry: %v, want ErrUntrusted", err)
	}
}

func TestSignRefusesNonObjectsAndSignatureMembers(t *testing.T) {
	ca, err := certs.NewCA("demo", 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(issue(t, ca, node("tianjin/heping"), time.Time{}, 0).TLSCertificate(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign([]int{1}); err == nil {
		t.Error("an array was signed")
	}
	if _, err := s.Sign(map[string]int{Member: 1}); err == nil {
		t.Error("a document with a signature member was signed")
	}
}

// TestSignatureValueMustBeCanonicalBase64: the value is outside the
// digest, and a base64 decoder ignores the unused low bits of the last
// character; a value spelled with other unused bits decodes to the same
// signature, so it is refused, not verified.
func TestSignatureValueMustBeCanonicalBase64(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for try := 0; try < 50; try++ {
		doc, ca := signed(t)
		var obj struct {
			Signature struct {
				Value string `json:"value"`
			} `json:"signature"`
		}
		if err := json.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		v := obj.Signature.Value
		pad := strings.Count(v, "=")
		if pad == 0 {
			continue // every bit of the last character counts: sign again
		}
		last := len(v) - pad - 1
		other := v[:last] + string(alphabet[strings.IndexByte(alphabet, v[last])^1]) + v[last+1:]
		a, _ := base64.StdEncoding.DecodeString(v)
		b, err := base64.StdEncoding.DecodeString(other)
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("the respelled value decodes differently (%v): the test does not build the attack", err)
		}
		mod := bytes.Replace(doc, []byte(`"`+v+`"`), []byte(`"`+other+`"`), 1)
		if _, err := Verify(mod, ca.Cert); !errors.Is(err, ErrMalformed) {
			t.Fatalf("a signature value respelled in its unused bits: %v, want ErrMalformed", err)
		}
		if _, err := Verify(doc, ca.Cert); err != nil {
			t.Fatalf("the canonical document: %v", err)
		}
		return
	}
	t.Fatal("50 signatures without base64 padding: cannot build the respelled value")
}
