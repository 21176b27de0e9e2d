package api

import (
	"context"
	"time"
)

// RenewRequest is POST /v1/certificates/renew: a certificate signing
// request over the new key, PEM ("CERTIFICATE REQUEST"). The identity,
// host names and lifetime are those of the client certificate the request
// is made with; the CSR's own subject is ignored.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// RenewedCertificate is the renewal: the new certificate, then the chain
// of the intermediate CA that signed it, as PEM.
type RenewedCertificate struct {
	Certificate string    `json:"certificate"`
	Serial      string    `json:"serial"` // decimal
	NotAfter    time.Time `json:"not_after"`
	RenewAt     time.Time `json:"renew_at"` // two thirds of its life
}

// RenewCertificate has the node's intermediate CA renew the certificate
// the client calls with.
func (c *Client) RenewCertificate(ctx context.Context, csrPEM []byte) (*RenewedCertificate, error) {
	var out RenewedCertificate
	_, err := c.Do(ctx, "POST", "/v1/certificates/renew", "", RenewRequest{CSR: string(csrPEM)}, &out)
	return &out, err
}
