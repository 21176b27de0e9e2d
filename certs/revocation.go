package certs

import (
	"crypto/x509"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Revocation removes one certificate, by serial number, for good.
type Revocation struct {
	Serial string    `json:"serial" cbor:"1,keyasint"` // decimal
	Reason string    `json:"reason,omitempty" cbor:"2,keyasint,omitempty"`
	At     time.Time `json:"at" cbor:"3,keyasint"`
}

// Suspension stops every certificate of one identity until it is lifted.
type Suspension struct {
	Identity string    `json:"identity" cbor:"1,keyasint"` // SPIFFE URI
	Reason   string    `json:"reason,omitempty" cbor:"2,keyasint,omitempty"`
	At       time.Time `json:"at" cbor:"3,keyasint"`
	// By is the region of the operator who suspended: only an operator of
	// that region or above may lift or replace the suspension.
	By string `json:"by,omitempty" cbor:"4,keyasint,omitempty"`
	// IssuedBefore, if set, limits the suspension to the certificates of
	// the identity issued before it (a removed region's node: the node of a
	// region added again at the same path gets new certificates, which the
	// suspension does not touch, while every old one stays refused).
	IssuedBefore time.Time `json:"issued_before,omitzero" cbor:"5,keyasint,omitempty"`
}

// Covers says whether the suspension refuses cert: every certificate of
// the identity, or only those issued before IssuedBefore (a certificate is
// issued ClockSkew after its NotBefore, which is backdated by that much).
func (s Suspension) Covers(cert *x509.Certificate) bool {
	return s.IssuedBefore.IsZero() || cert.NotBefore.Add(ClockSkew).Before(s.IssuedBefore)
}

// RevocationSnapshot is the whole list at one version, in a stable order:
// what the federation replicates and what a node restores.
type RevocationSnapshot struct {
	Version     uint64       `json:"version" cbor:"1,keyasint"`
	Revocations []Revocation `json:"revocations" cbor:"2,keyasint"`
	Suspensions []Suspension `json:"suspensions" cbor:"3,keyasint"`
}

// RevocationList is the set of revoked serial numbers and suspended
// identities a node enforces. It is safe for concurrent use. The consensus
// package keeps it in step with the replicated list; subscribers (the
// exchange, the API server) are told of every change so that they can close
// live connections of certificates that were just revoked.
type RevocationList struct {
	mu        sync.RWMutex
	version   uint64
	serials   map[string]Revocation
	suspended map[string]Suspension
	subs      map[int]func()
	nextSub   int
}

// NewRevocationList returns an empty list.
func NewRevocationList() *RevocationList {
	return &RevocationList{
		serials:   map[string]Revocation{},
		suspended: map[string]Suspension{},
		subs:      map[int]func(){},
	}
}

// SerialString renders a serial number the way the list and the CLI name it:
// in decimal.
func SerialString(n *big.Int) string { return n.String() }

// ParseSerial accepts a serial number in decimal, in hexadecimal with a 0x
// prefix, or as colon-separated hex bytes (the way openssl prints it), and
// returns its decimal form.
func ParseSerial(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) > 128 {
		return "", fmt.Errorf("certs: a serial number of %d characters is not a certificate's (at most 20 octets)", len(s))
	}
	n := new(big.Int)
	var ok bool
	switch {
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		_, ok = n.SetString(s[2:], 16)
	case strings.Contains(s, ":"):
		_, ok = n.SetString(strings.ReplaceAll(s, ":", ""), 16)
	default:
		_, ok = n.SetString(s, 10)
	}
	// RFC 5280 §4.1.2.2: a positive integer of at most 20 octets.
	if !ok || n.Sign() <= 0 || n.BitLen() > 160 {
		return "", fmt.Errorf("certs: not a certificate serial number (a positive integer of at most 20 octets, decimal or 0x hex)")
	}
	return n.String(), nil
}

// MaxReason bounds the reason of a revocation or suspension.
const MaxReason = 256

// CheckReason refuses a reason that is too long, holds anything but
// visible text, or a run of 15 or more letters and digits (an identifier
// of a person or organisation: a reason is replicated to every node and
// shown to operators). It never repeats the reason.
func CheckReason(r string) error {
	if len(r) > MaxReason {
		return fmt.Errorf("certs: a reason is at most %d bytes, not %d", MaxReason, len(r))
	}
	if !utf8.ValidString(r) {
		return fmt.Errorf("certs: a reason must be valid UTF-8")
	}
	run := 0
	for i, c := range r {
		if !unicode.IsPrint(c) || unicode.Is(unicode.Cf, c) {
			return fmt.Errorf("certs: a reason must be visible text (U+%04X at byte %d)", c, i)
		}
		if c < 0x80 && (unicode.IsLetter(c) || unicode.IsDigit(c)) {
			if run++; run >= 15 {
				return fmt.Errorf("certs: a reason must not hold an identifier (a run of 15 or more letters and digits at byte %d)", i)
			}
		} else {
			run = 0
		}
	}
	return nil
}

// Revoke adds a revocation. Revoking twice keeps the first.
func (l *RevocationList) Revoke(r Revocation) error {
	serial, err := ParseSerial(r.Serial)
	if err != nil {
		return err
	}
	r.Serial = serial
	l.mu.Lock()
	if _, dup := l.serials[serial]; !dup {
		l.serials[serial] = r
		l.version++
	}
	l.mu.Unlock()
	l.notify()
	return nil
}

// Suspend suspends every certificate of an identity.
func (l *RevocationList) Suspend(s Suspension) error {
	id, err := ParseIdentity(s.Identity)
	if err != nil {
		return err
	}
	s.Identity = id.String()
	l.mu.Lock()
	l.suspended[s.Identity] = s
	l.version++
	l.mu.Unlock()
	l.notify()
	return nil
}

// Reinstate lifts the suspension of an identity; it reports whether there
// was one.
func (l *RevocationList) Reinstate(identity string) bool {
	l.mu.Lock()
	_, ok := l.suspended[identity]
	if ok {
		delete(l.suspended, identity)
		l.version++
	}
	l.mu.Unlock()
	if ok {
		l.notify()
	}
	return ok
}

// Check returns a *VerifyError if the certificate is revoked or its
// identity suspended, nil otherwise.
func (l *RevocationList) Check(cert *x509.Certificate, id Identity) error {
	if l == nil {
		return nil
	}
	return l.CheckSerials(cert, SerialsOf(cert), id)
}

// CertSerials are the serial numbers the list keys a certificate by, in
// decimal: its own, and the first of its lineage when it is a renewal.
// Rendering them costs more than the check itself (a decimal conversion
// each, about 3 % of a province's CPU under lookups when done for every
// request), so a caller that checks one certificate again and again (each
// request of a connection) keeps them (SerialsOf) and calls CheckSerials.
type CertSerials struct{ serial, first string }

// SerialsOf returns cert's CertSerials.
func SerialsOf(cert *x509.Certificate) CertSerials {
	s := CertSerials{serial: SerialString(cert.SerialNumber)}
	if lin, ok := LineageOf(cert); ok {
		s.first = SerialString(lin.First)
	}
	return s
}

// CheckSerials is Check with cert's serials rendered before: s must be
// SerialsOf(cert) or the zero CertSerials (rendered here); the serials of
// another certificate would be checked in place of cert's.
func (l *RevocationList) CheckSerials(cert *x509.Certificate, s CertSerials, id Identity) error {
	if l == nil {
		return nil
	}
	if s.serial == "" { // the zero CertSerials: rendered here, never unchecked
		s = SerialsOf(cert)
	}
	serial, first := s.serial, s.first
	uri := id.String()
	l.mu.RLock()
	_, revoked := l.serials[serial]
	_, lineRevoked := l.serials[first]
	sus, suspended := l.suspended[uri]
	l.mu.RUnlock()
	switch {
	case revoked:
		return &VerifyError{Reason: ErrRevoked, Subject: uri, Detail: "serial " + serial}
	case first != "" && lineRevoked:
		return &VerifyError{Reason: ErrRevoked, Subject: uri, Detail: "a renewal of revoked serial " + first}
	case suspended && sus.Covers(cert):
		return &VerifyError{Reason: ErrSuspended, Subject: uri, Detail: "suspended since " + sus.At.UTC().Format(time.RFC3339)}
	}
	return nil
}

// CheckIdentity returns a *VerifyError if the identity is suspended, for
// a caller that presents no certificate (a console account bound to the
// identity): every suspension of the identity refuses it, whatever
// certificates it covers.
func (l *RevocationList) CheckIdentity(id Identity) error {
	if l == nil {
		return nil
	}
	uri := id.String()
	l.mu.RLock()
	sus, suspended := l.suspended[uri]
	l.mu.RUnlock()
	if suspended {
		return &VerifyError{Reason: ErrSuspended, Subject: uri, Detail: "suspended since " + sus.At.UTC().Format(time.RFC3339)}
	}
	return nil
}

// CheckIssuer returns a *VerifyError if an intermediate CA certificate
// that issued subject's certificate is revoked: revoking an intermediate's
// serial refuses every certificate it signed.
func (l *RevocationList) CheckIssuer(issuer *x509.Certificate, subject Identity) error {
	if l == nil {
		return nil
	}
	return l.CheckIssuerSerial(SerialString(issuer.SerialNumber), subject)
}

// CheckIssuerSerial is CheckIssuer given the issuer's serial in decimal
// (SerialString).
func (l *RevocationList) CheckIssuerSerial(serial string, subject Identity) error {
	if l == nil {
		return nil
	}
	l.mu.RLock()
	_, revoked := l.serials[serial]
	l.mu.RUnlock()
	if revoked {
		return &VerifyError{Reason: ErrRevoked, Subject: subject.String(), Detail: "its issuing CA (serial " + serial + ") is revoked"}
	}
	return nil
}

// Version counts the changes made to the list.
func (l *RevocationList) Version() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.version
}

// Snapshot returns the whole list in a stable order.
func (l *RevocationList) Snapshot() RevocationSnapshot {
	l.mu.RLock()
	s := RevocationSnapshot{Version: l.version}
	for _, r := range l.serials {
		s.Revocations = append(s.Revocations, r)
	}
	for _, x := range l.suspended {
		s.Suspensions = append(s.Suspensions, x)
	}
	l.mu.RUnlock()
	sort.Slice(s.Revocations, func(i, j int) bool { return s.Revocations[i].Serial < s.Revocations[j].Serial })
	sort.Slice(s.Suspensions, func(i, j int) bool { return s.Suspensions[i].Identity < s.Suspensions[j].Identity })
	return s
}

// Replace swaps in a whole snapshot (a Raft restore).
func (l *RevocationList) Replace(s RevocationSnapshot) {
	serials := make(map[string]Revocation, len(s.Revocations))
	for _, r := range s.Revocations {
		serials[r.Serial] = r
	}
	suspended := make(map[string]Suspension, len(s.Suspensions))
	for _, x := range s.Suspensions {
		suspended[x.Identity] = x
	}
	l.mu.Lock()
	l.serials, l.suspended, l.version = serials, suspended, s.Version
	l.mu.Unlock()
	l.notify()
}

// Subscribe calls fn (on the changing goroutine; keep it short) after every
// change. The returned function cancels the subscription.
func (l *RevocationList) Subscribe(fn func()) (cancel func()) {
	l.mu.Lock()
	id := l.nextSub
	l.nextSub++
	l.subs[id] = fn
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.subs, id)
		l.mu.Unlock()
	}
}

func (l *RevocationList) notify() {
	l.mu.RLock()
	fns := make([]func(), 0, len(l.subs))
	for _, fn := range l.subs {
		fns = append(fns, fn)
	}
	l.mu.RUnlock()
	for _, fn := range fns {
		fn()
	}
}
