package enroll

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"credfed/certs"
	"credfed/exchange"
)

// Holder is where a node keeps its certificate: what its listeners and
// clients present from the next handshake on.
type Holder interface {
	Certificate() tls.Certificate
	SetCertificate(tls.Certificate) error
}

// Renewer renews the node's certificate at two thirds of its life, retries
// with backoff when no signer answers, and installs each renewal in the
// holder and on disk (certs.ReplaceKeyPair, so a crash leaves a pair that
// loads).
type Renewer struct {
	s        *Service
	holder   Holder
	certFile string
	keyFile  string

	mu      sync.Mutex // serializes renewals
	stop    chan struct{}
	done    chan struct{}
	started bool
}

// NewRenewer returns the renewer of holder's certificate, written to
// certFile and keyFile (empty: kept in memory only, tests).
func (s *Service) NewRenewer(holder Holder, certFile, keyFile string) *Renewer {
	r := &Renewer{s: s, holder: holder, certFile: certFile, keyFile: keyFile,
		stop: make(chan struct{}), done: make(chan struct{})}
	r.observe(holder.Certificate().Leaf)
	return r
}

func (r *Renewer) observe(leaf *x509.Certificate) {
	if leaf == nil {
		return
	}
	r.s.expiry.Set(float64(leaf.NotAfter.Unix()))
	r.s.renewAt.Set(float64(RenewAt(leaf).Unix()))
}

// Renew renews the certificate now: a new key, a CSR, a signature from
// this node's own signer or the nearest coordinator above that signs, a
// check of what came back, the files, then the holder.
func (r *Renewer) Renew(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := r.renew(ctx)
	if err != nil {
		r.s.renewed.WithLabelValues("failed").Inc()
		return err
	}
	r.s.renewed.WithLabelValues("renewed").Inc()
	return nil
}

func (r *Renewer) renew(ctx context.Context) error {
	s := r.s
	cur := r.holder.Certificate()
	if cur.Leaf == nil {
		return errors.New("enroll: the current certificate is not parsed")
	}
	key, csr, err := certs.NewCSR(s.cfg.Self)
	if err != nil {
		return err
	}
	var ders [][]byte
	if s.cfg.Signer != nil {
		chain, err := s.Renewal(ctx, s.cfg.Self, cur.Leaf, csr)
		if err != nil {
			return fmt.Errorf("enroll: own signer: %w", err)
		}
		for _, c := range chain {
			ders = append(ders, c.Raw)
		}
	} else {
		if ders, err = r.askAbove(ctx, csr); err != nil {
			return err
		}
	}
	chain, err := s.checkChain(ders, key, cur.Leaf)
	if err != nil {
		return err
	}
	next := tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: chain[0]}
	if r.certFile != "" {
		keyPEM, err := certs.EncodeKey(key)
		if err != nil {
			return err
		}
		if err := certs.ReplaceKeyPair(r.certFile, r.keyFile, certs.ChainPEM(chain[0], chain[1:]), keyPEM); err != nil {
			return fmt.Errorf("enroll: write the renewed certificate: %w", err)
		}
	}
	if err := r.holder.SetCertificate(next); err != nil {
		return fmt.Errorf("enroll: install the renewed certificate: %w", err)
	}
	r.observe(chain[0])
	s.log.Info("renewed this node's certificate", "serial", certs.SerialString(chain[0].SerialNumber),
		"not_after", chain[0].NotAfter.UTC().Format(time.RFC3339), "renew_at", RenewAt(chain[0]).UTC().Format(time.RFC3339))
	return nil
}

// askAbove asks the coordinators above, nearest first, until one signs.
func (r *Renewer) askAbove(ctx context.Context, csr []byte) ([][]byte, error) {
	s := r.s
	if s.cfg.Endpoint == nil || s.cfg.Coordinators == nil {
		return nil, fmt.Errorf("%w, and it knows no coordinator above it", ErrNoSigner)
	}
	peers := s.cfg.Coordinators()
	if len(peers) == 0 {
		return nil, fmt.Errorf("%w, and no coordinator above it is registered", ErrNoSigner)
	}
	var last error
	for _, p := range peers {
		var out renewAnswer
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.cfg.Endpoint.Call(cctx, p, OpRenew, exchange.Meta{}, renewRequest{CSR: csr}, &out)
		cancel()
		if err == nil {
			return out.Chain, nil
		}
		last = fmt.Errorf("%s: %w", p.Name, err)
	}
	return nil, fmt.Errorf("enroll: no coordinator above renewed the certificate (last: %w)", last)
}

// Start renews in the background until Close: at RenewAt, and after a
// failure again with backoff, logging a warning on every failure and an
// error once less than a sixth of the lifetime is left.
func (r *Renewer) Start() {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return
	}
	r.started = true
	r.mu.Unlock()
	go r.loop()
}

func (r *Renewer) loop() {
	defer close(r.done)
	failures := 0
	for {
		leaf := r.holder.Certificate().Leaf
		if leaf == nil {
			return
		}
		wait := RenewAt(leaf).Sub(r.s.cfg.Now())
		if failures > 0 {
			wait = retryDelay(Lifetime(leaf), failures)
		}
		// Never back to back, whatever the certificates say.
		wait = max(wait, minRenewGap)
		t := time.NewTimer(max(wait, 0))
		select {
		case <-r.stop:
			t.Stop()
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		go func() {
			select {
			case <-r.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		err := r.Renew(ctx)
		cancel()
		if err == nil {
			failures = 0
			continue
		}
		failures++
		left := leaf.NotAfter.Sub(r.s.cfg.Now())
		attrs := []any{"attempt", failures, "expires_in", left.Round(time.Second).String(), "err", err.Error()}
		if left < Lifetime(leaf)/6 {
			r.s.log.Error("certificate renewal keeps failing and the certificate expires soon", attrs...)
		} else {
			r.s.log.Warn("certificate renewal failed; retrying", attrs...)
		}
	}
}

// minRenewGap is the least time between two renewals of the loop.
const minRenewGap = time.Second

// retryDelay is the backoff after n failures: from a sixtieth of the
// lifetime (at least a second), doubling, at most a tenth of it and at
// most ten minutes.
func retryDelay(life time.Duration, n int) time.Duration {
	d := max(life/60, time.Second)
	for i := 1; i < n && d < 10*time.Minute; i++ {
		d *= 2
	}
	return min(d, life/10, 10*time.Minute)
}

// Close stops the background renewal.
func (r *Renewer) Close() {
	r.mu.Lock()
	started := r.started
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	r.mu.Unlock()
	if started {
		<-r.done
	}
}
