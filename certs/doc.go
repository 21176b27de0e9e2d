// Package certs is the federation's trust: its certificate authority, the
// node and user certificates it issues, the identity each certificate
// carries, the verification that turns a presented chain into that identity,
// and the revocation list that the federation replicates.
//
// An identity is a SPIFFE-form URI SAN:
//
//	spiffe://<federation>/<role>/<region path>[/<institution>]
//
// Node roles (province, city, district) name a region path and nothing
// more; user roles (operator, coordinator, department, portal) end with the
// institution or department code, after the region path of the node they
// belong to. Certificates are ECDSA P-256. Node certificates carry DNS and IP
// SANs for their listen addresses and both the serverAuth and clientAuth
// extended key usages, so that curl, browsers and Go all accept them; user
// certificates carry clientAuth only. Verification holds every certificate
// to that (CheckUsage): a node certificate without both usages, a user
// certificate without clientAuth or with serverAuth, and one without the
// extension or with anyExtendedKeyUsage (which Go would take for any use)
// are refused with ErrWrongUsage, and only node certificates are accepted
// as servers.
//
// Go's chain verification knows nothing of revocation, so every TLS
// configuration built here checks the revocation list in VerifyConnection.
package certs
