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

// LoadKeyPair reads a certificate and its key, checks that they match and
// returns them with the parsed leaf.
func LoadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: %s / %s: %v", ErrBadPEM, certPath, keyPath, err)
	}
	return pair, nil
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
