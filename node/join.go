package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/internal/atomicfile"
)

// ErrJoin: a join with a token could not be completed; the message says
// why (the token's region or federation is not this node's, the
// coordinator is not the federation's, the token was used or expired).
var ErrJoin = errors.New("node: join")

// Join makes a node that has no certificate yet a member of the
// federation with a join token (credfed region add): it trusts the
// federation CA the token carries and nothing else, sends a CSR over a new
// key to the coordinator the token names (checked against that CA and
// identity), and writes
// the certificate, the key, the CA and (for a coordinator) the pseudonym
// key to the configured files. A node that already holds its certificate
// is left as it is (joined false): the same command line can start it
// again. The node then starts as usual and the federation adds it to Raft
// as a non-voter.
func Join(ctx context.Context, cfg Config, token string) (joined bool, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	if _, err := os.Stat(cfg.TLS.Cert); err == nil {
		return false, nil
	}
	// A join that stopped between the renames of its key and certificate
	// is complete once LoadKeyPair has finished them: the token is used.
	if _, err := os.Stat(cfg.TLS.Cert + ".next"); err == nil {
		if _, err := certs.LoadKeyPair(cfg.TLS.Cert, cfg.TLS.Key); err == nil {
			return false, nil
		}
	}
	tok, err := api.ParseJoinToken(token)
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrJoin, err)
	}
	self := cfg.Identity()
	want := certs.Identity{Federation: tok.Federation, Role: certs.Role(tok.Role), Region: tok.Region}
	if want != self {
		return false, fmt.Errorf("%w: the token is for %s, but this node is configured as %s", ErrJoin, want, self)
	}
	exch, err := advertised(cfg.Advertise.Exchange, cfg.Listen.Exchange, "advertise.exchange")
	if err != nil {
		return false, err
	}
	if _, port, _ := net.SplitHostPort(exch); port == "0" {
		return false, fieldErr("listen.exchange", "a joining node needs a fixed port (or advertise.exchange): the federation registers its address")
	}
	apiURL := ""
	if a, err := advertised(cfg.Advertise.API, cfg.Listen.API, "advertise.api"); err == nil {
		if _, port, _ := net.SplitHostPort(a); port != "0" {
			apiURL = "https://" + a
		}
	}

	// The token carries the CA: nothing is fetched before the node knows
	// whom it trusts.
	ca, err := x509.ParseCertificate(tok.CA)
	if err != nil || !ca.IsCA {
		return false, fmt.Errorf("%w: the token's CA certificate does not parse", ErrJoin)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	if _, err := os.Stat(cfg.TLS.CA); err == nil {
		c, err := certs.LoadCertFile(cfg.TLS.CA)
		if err != nil || !c.Equal(ca) {
			return false, fmt.Errorf("%w: tls.ca (%s) holds another CA than the token's federation", ErrJoin, cfg.TLS.CA)
		}
	} else if err := atomicfile.Write(cfg.TLS.CA, caPEM, 0o644); err != nil {
		return false, fmt.Errorf("node: write tls.ca: %w", err)
	}

	key, csr, err := certs.NewCSR(self)
	if err != nil {
		return false, err
	}
	client, err := api.NewClient(api.Config{Address: tok.API, CACert: cfg.TLS.CA, Timeout: 30 * time.Second, ServerIdentity: tok.Node})
	if err != nil {
		return false, err
	}
	defer client.CloseIdle()
	ans, err := client.Join(ctx, api.JoinRequest{Token: token, CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		Exchange: exch, API: apiURL})
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrJoin, err)
	}
	chain, err := checkJoinCertificate(ans.Certificate, ca, self, key)
	if err != nil {
		return false, err
	}
	if self.Role.IsCoordinatorNode() {
		k, err := hex.DecodeString(strings.TrimSpace(ans.PseudonymKey))
		if err != nil || len(k) != credit.PseudonymKeySize {
			return false, fmt.Errorf("%w: the coordinator sent no valid pseudonym key", ErrJoin)
		}
		if err := credit.WritePseudonymKey(cfg.PseudonymKeyFile, credit.PseudonymKey(k)); err != nil {
			if !errors.Is(err, os.ErrExist) {
				return false, err
			}
			if have, lerr := credit.LoadPseudonymKey(cfg.PseudonymKeyFile); lerr != nil || !bytes.Equal(have, k) {
				return false, fmt.Errorf("%w: pseudonym_key_file (%s) holds another key than the federation's", ErrJoin, cfg.PseudonymKeyFile)
			}
		}
		if err := writeJoinedKeyRing(cfg, ans.PseudonymKeys); err != nil { // key rotation (keys.go)
			return false, err
		}
	}
	keyPEM, err := certs.EncodeKey(key)
	if err != nil {
		return false, err
	}
	// The key first, the certificate last: a certificate on disk means the
	// join is complete.
	if err := certs.ReplaceKeyPair(cfg.TLS.Cert, cfg.TLS.Key, certs.ChainPEM(chain[0], chain[1:]), keyPEM); err != nil {
		return false, err
	}
	return true, nil
}

// checkJoinCertificate checks the certificate a coordinator signed: it
// chains to the CA, carries this node's identity and usages, and is over
// the key the node made.
func checkJoinCertificate(chainPEM string, ca *x509.Certificate, self certs.Identity, key *ecdsa.PrivateKey) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := []byte(chainPEM)
	for len(chain) < 4 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: the signed certificate does not parse", ErrJoin)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: the coordinator sent no certificate", ErrJoin)
	}
	id, err := certs.NewVerifier(ca, self.Federation, nil).Verify(chain, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, fmt.Errorf("%w: the signed certificate does not verify: %v", ErrJoin, err)
	}
	if id != self {
		return nil, fmt.Errorf("%w: the signed certificate is for %s, not %s", ErrJoin, id, self)
	}
	if pub, ok := chain[0].PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("%w: the signed certificate is not over this node's key", ErrJoin)
	}
	return chain, nil
}
