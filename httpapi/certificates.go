package httpapi

import (
	"context"
	"crypto/x509"
	"net/http"

	"credfed/api"
	"credfed/certs"
	"credfed/enroll"
	"credfed/fault"
)

// Enrollment signs certificate renewals (enroll.Service).
type Enrollment interface {
	Renewal(ctx context.Context, caller certs.Identity, current *x509.Certificate, csr []byte) ([]*x509.Certificate, error)
}

func (s *Server) certificateRoutes() []route {
	return []route{
		{method: "POST", pattern: "/v1/certificates/renew", access: anyCertificate, handle: s.postRenewal},
	}
}

func (s *Server) postRenewal(w http.ResponseWriter, r *http.Request, c caller) error {
	if s.cfg.Enrollment == nil {
		return fault.New(fault.Unavailable, "this node signs no renewals")
	}
	var in api.RenewRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if in.CSR == "" {
		return fault.Field(fault.BadRequest, "csr", "required: a PEM certificate signing request over the new key")
	}
	var leaf *x509.Certificate
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		leaf = r.TLS.PeerCertificates[0]
	}
	chain, err := s.cfg.Enrollment.Renewal(r.Context(), c.id, leaf, []byte(in.CSR))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.RenewedCertificate{Certificate: string(certs.ChainPEM(chain[0], chain[1:])),
		Serial: certs.SerialString(chain[0].SerialNumber), NotAfter: chain[0].NotAfter.UTC(), RenewAt: enroll.RenewAt(chain[0]).UTC()})
	return nil
}
