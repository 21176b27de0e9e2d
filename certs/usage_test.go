package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// usageCert issues a certificate for id with exactly the given extended
// key usages (nil: no extension at all), signed by ca directly, as a
// broken or hostile issuer might: the CA's Issue always names the right
// ones.
func usageCert(t *testing.T, ca *CA, id Identity, ekus []x509.ExtKeyUsage, unknown ...asn1.ObjectIdentifier) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           ekus,
		UnknownExtKeyUsage:    unknown,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URI()},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

var (
	client  = x509.ExtKeyUsageClientAuth
	server  = x509.ExtKeyUsageServerAuth
	anyEKU  = x509.ExtKeyUsageAny
	codeEKU = x509.ExtKeyUsageCodeSigning
)

func usageNames(ekus []x509.ExtKeyUsage) string {
	if ekus == nil {
		return "no extension"
	}
	var names []string
	for _, u := range ekus {
		names = append(names, map[x509.ExtKeyUsage]string{client: "clientAuth", server: "serverAuth", anyEKU: "any", codeEKU: "codeSigning"}[u])
	}
	return strings.Join(names, "+")
}

// TestVerifyExtKeyUsageMatrix: every role against every set of extended
// key usages, verified as a client and as a server. Node certificates need
// serverAuth and clientAuth for either use; user certificates need
// clientAuth, may not carry serverAuth, and are never servers; a
// certificate without the extension or with anyExtendedKeyUsage (which
// Go's own verification takes for any use) is refused.
func TestVerifyExtKeyUsageMatrix(t *testing.T) {
	ca := mustCA(t, "demo")
	v := NewVerifier(ca.Cert, "demo", NewRevocationList())
	sets := [][]x509.ExtKeyUsage{
		nil,
		{client},
		{server},
		{client, server},
		{anyEKU},
		{client, server, anyEKU},
		{client, codeEKU},
		{client, server, codeEKU},
	}
	ids := map[Role]Identity{
		Province:    {"demo", Province, "zj", ""},
		City:        {"demo", City, "zj/hz", ""},
		District:    {"demo", District, "zj/hz/xh", ""},
		Operator:    {"demo", Operator, "zj", "ops"},
		Coordinator: {"demo", Coordinator, "zj/hz", "office"},
		Department:  {"demo", Department, "zj/hz/xh", "tax"},
		Portal:      {"demo", Portal, "zj/hz/xh", "portal"},
	}
	has := func(set []x509.ExtKeyUsage, u x509.ExtKeyUsage) bool {
		for _, x := range set {
			if x == u {
				return true
			}
		}
		return false
	}
	checked := 0
	for _, role := range Roles {
		id := ids[role]
		for _, set := range sets {
			cert := usageCert(t, ca, id, set)
			for _, use := range []x509.ExtKeyUsage{client, server} {
				var ok bool
				switch {
				case set == nil || has(set, anyEKU):
					ok = false
				case role.IsNode():
					ok = has(set, client) && has(set, server)
				default:
					ok = use == client && has(set, client) && !has(set, server)
				}
				name := fmt.Sprintf("%s with %s as %s", role, usageNames(set), usageName(use))
				got, err := v.Verify([]*x509.Certificate{cert.Leaf}, use)
				checked++
				if ok {
					if err != nil || got != id {
						t.Errorf("%s: refused: %v", name, err)
					}
					continue
				}
				var ve *VerifyError
				if !errors.Is(err, ErrWrongUsage) || !errors.As(err, &ve) {
					t.Errorf("%s: got %v, want a *VerifyError with ErrWrongUsage", name, err)
					continue
				}
				if ve.Subject != id.String() && !strings.Contains(ve.Error(), "serial") {
					t.Errorf("%s: refusal names %q, not the certificate", name, ve.Subject)
				}
				if ve.Detail == "" {
					t.Errorf("%s: refusal says nothing of why", name)
				}
			}
		}
	}
	// Unknown usages only: neither node nor user usages are there.
	for _, role := range []Role{District, Department} {
		cert := usageCert(t, ca, ids[role], nil, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1})
		if _, err := v.Verify([]*x509.Certificate{cert.Leaf}, client); !errors.Is(err, ErrWrongUsage) {
			t.Errorf("%s with an unknown usage only: %v, want ErrWrongUsage", role, err)
		}
	}
	if checked != len(Roles)*len(sets)*2 {
		t.Fatalf("checked %d cases", checked)
	}
	// What the CA issues passes, each for its uses.
	for _, role := range Roles {
		is := mustIssue(t, ca, IssueRequest{Identity: ids[role]})
		if _, err := v.Verify([]*x509.Certificate{is.Cert}, client); err != nil {
			t.Errorf("issued %s certificate as a client: %v", role, err)
		}
		_, err := v.Verify([]*x509.Certificate{is.Cert}, server)
		if role.IsNode() != (err == nil) {
			t.Errorf("issued %s certificate as a server: %v", role, err)
		}
		if err := CheckUsage(is.Cert, ids[role]); err != nil {
			t.Errorf("CheckUsage of an issued %s certificate: %v", role, err)
		}
	}
	if _, err := v.Verify([]*x509.Certificate{mustIssue(t, ca, IssueRequest{Identity: ids[District]}).Cert}, codeEKU); !errors.Is(err, ErrWrongUsage) {
		t.Errorf("verified for code signing: %v", err)
	}
}

// TestTLSExtKeyUsage: the TLS configurations the package builds refuse,
// in a real handshake, a node certificate without clientAuth as a client,
// one without serverAuth as a server, a user certificate with serverAuth
// posing as a server (it chains to the CA and its IP SAN matches, so the
// chain check alone would take it), and certificates without the
// extension on either side.
func TestTLSExtKeyUsage(t *testing.T) {
	ca := mustCA(t, "demo")
	v := NewVerifier(ca.Cert, "demo", NewRevocationList())
	nodeID := Identity{"demo", District, "zj/hz/xh", ""}
	cityID := Identity{"demo", City, "zj/hz", ""}
	goodServer := usageCert(t, ca, nodeID, []x509.ExtKeyUsage{client, server})
	goodClient := usageCert(t, ca, cityID, []x509.ExtKeyUsage{client, server})

	handshake := func(scfg, ccfg *tls.Config) (serverErr, clientErr error) {
		a, b := pipe(t)
		srv := tls.Server(a, scfg)
		cli := tls.Client(b, ccfg)
		done := make(chan error, 1)
		go func() {
			err := srv.Handshake()
			if err == nil {
				// TLS 1.3: the client's certificate is checked after the
				// client's side is done; a read shows the outcome to both.
				srv.Read(make([]byte, 1))
			}
			srv.Close()
			done <- err
		}()
		clientErr = cli.Handshake()
		if clientErr == nil {
			cli.Write([]byte{1})
			_, clientErr = cli.Read(make([]byte, 1))
			if errors.Is(clientErr, io.EOF) {
				clientErr = nil
			}
		}
		cli.Close()
		serverErr = <-done
		return
	}
	serverCfg := func(c tls.Certificate) *tls.Config { return v.ServerConfig(c, RequireClientCert) }
	clientCfg := func(c tls.Certificate) *tls.Config { return v.ClientConfig(c, "127.0.0.1", nil) }

	if sErr, cErr := handshake(serverCfg(goodServer), clientCfg(goodClient)); sErr != nil || cErr != nil {
		t.Fatalf("good certificates: %v / %v", sErr, cErr)
	}
	clients := []struct {
		name string
		cert tls.Certificate
	}{
		{"node client without clientAuth", usageCert(t, ca, cityID, []x509.ExtKeyUsage{server})},
		{"node client without serverAuth", usageCert(t, ca, cityID, []x509.ExtKeyUsage{client})},
		{"node client without the extension", usageCert(t, ca, cityID, nil)},
		{"node client with any usage", usageCert(t, ca, cityID, []x509.ExtKeyUsage{anyEKU})},
		{"user client with serverAuth", usageCert(t, ca, Identity{"demo", Coordinator, "zj/hz", "office"}, []x509.ExtKeyUsage{client, server})},
		{"user client without the extension", usageCert(t, ca, Identity{"demo", Portal, "zj/hz", "portal"}, nil)},
	}
	for _, c := range clients {
		sErr, _ := handshake(serverCfg(goodServer), clientCfg(c.cert))
		if !errors.Is(sErr, ErrWrongUsage) {
			t.Errorf("%s: server says %v, want ErrWrongUsage", c.name, sErr)
		}
	}
	servers := []struct {
		name string
		cert tls.Certificate
	}{
		{"node server without serverAuth", usageCert(t, ca, nodeID, []x509.ExtKeyUsage{client})},
		{"node server without clientAuth", usageCert(t, ca, nodeID, []x509.ExtKeyUsage{server})},
		{"node server without the extension", usageCert(t, ca, nodeID, nil)},
		{"node server with any usage", usageCert(t, ca, nodeID, []x509.ExtKeyUsage{anyEKU})},
		{"user server with serverAuth", usageCert(t, ca, Identity{"demo", Department, "zj/hz/xh", "tax"}, []x509.ExtKeyUsage{client, server})},
		{"user server without the extension", usageCert(t, ca, Identity{"demo", Portal, "zj/hz/xh", "portal"}, nil)},
	}
	for _, s := range servers {
		_, cErr := handshake(serverCfg(s.cert), clientCfg(goodClient))
		if cErr == nil {
			t.Errorf("%s: accepted by the client", s.name)
			continue
		}
		// Go's own chain check runs first for a server and refuses some of
		// these itself (IncompatibleUsage); the rest reach Verify.
		var inv x509.CertificateInvalidError
		if !errors.Is(cErr, ErrWrongUsage) && !(errors.As(cErr, &inv) && inv.Reason == x509.IncompatibleUsage) {
			t.Errorf("%s: client says %v, want a refusal for the usage", s.name, cErr)
		}
	}
}
