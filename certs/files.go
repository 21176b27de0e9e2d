package certs

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"credfed/internal/atomicfile"
)

// File names of the CA inside a certificate directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// WriteFiles writes ca.pem and ca-key.pem (0600) into dir, creating it.
// It refuses to overwrite an existing CA: a second init would orphan every
// certificate the first one issued.
func (ca *CA) WriteFiles(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return fmt.Errorf("certs: %s already holds a CA key; refusing to overwrite it", dir)
	}
	kp, err := keyPEM(ca.Key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), kp, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, CACertFile), ca.CertPEM(), 0o644)
}

// LoadCA reads ca.pem and ca-key.pem from dir.
func LoadCA(dir string) (*CA, error) {
	cert, err := LoadCertFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	key, err := loadKeyFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%w: %s is not a CA certificate", ErrBadPEM, filepath.Join(dir, CACertFile))
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("%w: %s does not match %s", ErrBadPEM, CAKeyFile, CACertFile)
	}
	fed := ""
	if len(cert.Subject.Organization) == 1 {
		fed = cert.Subject.Organization[0]
	}
	if err := checkName("federation", fed); err != nil {
		return nil, fmt.Errorf("certs: %s names no federation: %w", CACertFile, err)
	}
	return &CA{Federation: fed, Cert: cert, Key: key}, nil
}

// LoadSigner reads an intermediate CA: certPath holds its certificate first
// (and may hold the root after it, which is dropped), keyPath its key. The
// root itself is refused: it belongs offline.
func LoadSigner(certPath, keyPath string) (*CA, error) {
	data, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	var chain []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadPEM, certPath, err)
		}
		if c.CheckSignatureFrom(c) == nil {
			continue // a self-signed root
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: %s holds no intermediate CA certificate (the root CA does not sign online)", ErrBadPEM, certPath)
	}
	cert := chain[0]
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%w: %s is not a CA certificate", ErrBadPEM, certPath)
	}
	key, err := loadKeyFile(keyPath)
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("%w: %s does not match %s", ErrBadPEM, keyPath, certPath)
	}
	fed := ""
	if len(cert.Subject.Organization) == 1 {
		fed = cert.Subject.Organization[0]
	}
	if err := checkName("federation", fed); err != nil {
		return nil, fmt.Errorf("certs: %s names no federation: %w", certPath, err)
	}
	return &CA{Federation: fed, Cert: cert, Key: key, Chain: chain}, nil
}

// WriteSignerFiles writes an intermediate's certificate and key (0600) as
// <dir>/<name>.pem and <dir>/<name>-key.pem, refusing to overwrite a key.
func (ca *CA) WriteSignerFiles(dir, name string) (certPath, keyPath string, err error) {
	certPath = filepath.Join(dir, name+".pem")
	keyPath = filepath.Join(dir, name+"-key.pem")
	if _, err := os.Stat(keyPath); err == nil {
		return "", "", fmt.Errorf("certs: %s exists; refusing to overwrite a CA key", keyPath)
	}
	kp, err := keyPEM(ca.Key)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("certs: %w", err)
	}
	if err := writeFileAtomic(keyPath, kp, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(certPath, ChainPEM(ca.Cert, ca.Chain[1:]), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// WriteFiles writes <dir>/<name>.pem and <dir>/<name>-key.pem (0600), where
// name is the identity's last element, and returns both paths.
func (is *Issued) WriteFiles(dir string) (certPath, keyPath string, err error) {
	kp, err := is.KeyPEM()
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("certs: %w", err)
	}
	name := is.Identity.Name()
	certPath = filepath.Join(dir, name+".pem")
	keyPath = filepath.Join(dir, name+"-key.pem")
	if err := writeFileAtomic(keyPath, kp, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(certPath, is.CertPEM(), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// LoadCertFile reads the first certificate of a PEM file.
func LoadCertFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: %s holds no CERTIFICATE block", ErrBadPEM, path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadPEM, path, err)
	}
	return cert, nil
}

// LoadPool reads a PEM file of CA certificates into a pool.
func LoadPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%w: %s holds no certificate", ErrBadPEM, path)
	}
	return pool, nil
}

// LoadKeyPair reads a certificate (and the chain after it) and its key,
// checks that they match and returns them with the parsed leaf. It
// finishes a replacement that a crash interrupted (ReplaceKeyPair).
func LoadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		// The new key is in place but not yet its certificate: the crash
		// came between ReplaceKeyPair's two renames.
		if p, err2 := tls.LoadX509KeyPair(certPath+nextSuffix, keyPath); err2 == nil {
			if err3 := renameSynced(certPath+nextSuffix, certPath); err3 == nil {
				return p, nil
			}
		}
		return tls.Certificate{}, fmt.Errorf("%w: %s / %s: %v", ErrBadPEM, certPath, keyPath, err)
	}
	// A replacement that stopped before its first rename left the old
	// pair, which is still valid: the unused new one is dropped.
	for _, p := range []string{certPath + nextSuffix, keyPath + nextSuffix} {
		if _, err := os.Stat(p); err == nil {
			_ = os.Remove(p)
		}
	}
	return pair, nil
}

// nextSuffix names the files of a replacement in progress.
const nextSuffix = ".next"

// ReplaceKeyPair replaces the certificate and key files with new contents
// so that a crash at any point leaves a pair that LoadKeyPair loads, old or
// new: both are written beside the old ones first, then the key and then
// the certificate renamed over them; LoadKeyPair completes a replacement
// stopped between the renames.
func ReplaceKeyPair(certPath, keyPath string, certPEMData, keyPEMData []byte) error {
	if _, err := tls.X509KeyPair(certPEMData, keyPEMData); err != nil {
		return fmt.Errorf("%w: the new certificate and key do not match: %v", ErrBadPEM, err)
	}
	if err := writeFileAtomic(keyPath+nextSuffix, keyPEMData, 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(certPath+nextSuffix, certPEMData, 0o644); err != nil {
		return err
	}
	if err := renameSynced(keyPath+nextSuffix, keyPath); err != nil {
		return err
	}
	return renameSynced(certPath+nextSuffix, certPath)
}

func renameSynced(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(to)); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

func loadKeyFile(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: %s holds no PEM block", ErrBadPEM, path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: %s holds a %s block, not a private key", ErrBadPEM, path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadPEM, path, err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not an ECDSA key", ErrBadPEM, path)
	}
	return ec, nil
}

// writeFileAtomic writes through a temporary file, a rename and a
// directory sync, so a reader never sees half a key.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := atomicfile.Write(path, data, perm); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
