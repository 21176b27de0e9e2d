package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/httpapi"
)

// FrontConfig is the central copy's HTTPS front: what a central
// PostgreSQL needs to serve coordinators the way credfed's API does.
type FrontConfig struct {
	// Listen is the TCP address to listen on (127.0.0.1:0 picks a port).
	Listen string
	// CA, Cert and Key are the federation CA and the front's certificate
	// (a node certificate of that CA) and key.
	CA, Cert, Key string
	// Federation is the federation's name, as in the certificates.
	Federation string
	// DSN reaches the central PostgreSQL; Pool is the pool's size (the
	// concurrency it serves).
	DSN  string
	Pool int
}

// FrontServer is the running front.
type FrontServer struct {
	cfg      FrontConfig
	pool     *pgxpool.Pool
	verifier *certs.Verifier
	revs     *certs.RevocationList
	srv      *http.Server
	ln       net.Listener
	items    map[string][]string // purpose → the catalog items it sees
	idents   credit.ParseOptions
}

// StartFront opens the pool and serves the front until Close. It is
// written as credfed's API is: net/http over TLS 1.3 with HTTP/2, client
// certificates of the federation CA verified at the handshake (chain,
// identity, usages, revocation) and the identity's revocation checked
// again on every request, the same timeouts and header bound, bodies
// bounded and decoded strictly, JSON answers of the same shape
// (api.LookupAnswer).
func StartFront(ctx context.Context, cfg FrontConfig) (*FrontServer, error) {
	ca, err := certs.LoadCertFile(cfg.CA)
	if err != nil {
		return nil, err
	}
	pair, err := certs.LoadKeyPair(cfg.Cert, cfg.Key)
	if err != nil {
		return nil, err
	}
	f := &FrontServer{cfg: cfg, revs: certs.NewRevocationList(), items: map[string][]string{},
		idents: credit.ParseOptions{TestMode: true, TestOnly: true}}
	f.verifier = certs.NewVerifier(ca, cfg.Federation, f.revs)
	cat := credit.DefaultCatalog()
	for _, p := range cat.Purposes {
		for _, it := range cat.Items {
			if visibleTo(it, p.Code) && it.Disclosure != credit.Internal {
				f.items[p.Code] = append(f.items[p.Code], it.Code)
			}
		}
	}
	if f.pool, err = newPool(ctx, cfg.DSN, max(cfg.Pool, 1)); err != nil {
		return nil, fmt.Errorf("bench: front: %w", err)
	}
	if f.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		f.pool.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/lookups", f.lookup)
	f.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         f.verifier.ServerConfig(pair, certs.RequireClientCert, "h2", "http/1.1"),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 100,
			MaxReceiveBufferPerConnection: 256 << 10, MaxReceiveBufferPerStream: 256 << 10},
		ConnContext: httpapi.ConnContext,
		ErrorLog:    slog.NewLogLogger(slog.DiscardHandler, slog.LevelDebug),
	}
	go f.srv.ServeTLS(f.ln, "", "")
	return f, nil
}

// Addr is the front's address.
func (f *FrontServer) Addr() string { return f.ln.Addr().String() }

// Close stops serving (requests in flight finish within ctx) and closes
// the pool.
func (f *FrontServer) Close(ctx context.Context) error {
	err := f.srv.Shutdown(ctx)
	f.pool.Close()
	return err
}

// frontError writes the API's error body.
func frontError(w http.ResponseWriter, status int, code, msg string) {
	writeJSONBody(w, status, api.ErrorBody{Error: &api.Error{Code: code, Message: msg}})
}

func writeJSONBody(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// lookup is POST /v1/lookups of the central copy: a coordinator's lookup
// of a subject, audited in the same statement that reads the records.
func (f *FrontServer) lookup(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		frontError(w, http.StatusUnauthorized, api.CodeUnauthenticated, "a client certificate is required")
		return
	}
	leaf := r.TLS.PeerCertificates[0]
	id, err := httpapi.PeerIdentity(r) // parsed once per connection, as credfed's API does
	if err == nil {
		err = f.revs.Check(leaf, id)
	}
	if err != nil {
		frontError(w, http.StatusUnauthorized, api.CodeUnauthenticated, err.Error())
		return
	}
	if id.Role != certs.Coordinator {
		frontError(w, http.StatusForbidden, api.CodeForbidden, "lookups are for coordinators")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	var in api.LookupRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || dec.More() {
		frontError(w, http.StatusBadRequest, api.CodeBadRequest, "the body is not one lookup request")
		return
	}
	sub, err := credit.ParseSubject(in.Subject, f.idents)
	if err != nil {
		frontError(w, http.StatusBadRequest, api.CodeInvalidIdentifier, err.Error())
		return
	}
	items, ok := f.items[in.Purpose]
	if !ok || in.User == "" || in.Reference == "" {
		frontError(w, http.StatusBadRequest, api.CodeBadRequest, "purpose, user and reference are required, the purpose one of the catalog's")
		return
	}
	rows, err := f.pool.Query(r.Context(), stmtLookup, id.String(), in.User, in.Purpose, in.Reference, sub.ID, items)
	if err != nil {
		frontError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "the database did not answer")
		return
	}
	recs, err := collectRecords(rows)
	if err != nil {
		frontError(w, http.StatusServiceUnavailable, api.CodeUnavailable, "the database did not answer")
		return
	}
	writeJSONBody(w, http.StatusOK, lookupAnswer(in, recs))
}

// collectRecords reads a lookup's rows; it returns once the statement is
// complete, its commit included.
func collectRecords(rows pgx.Rows) ([]api.Record, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (api.Record, error) {
		var rec api.Record
		var at time.Time
		err := row.Scan(&rec.District, &rec.Department, &rec.ID, &rec.Subject, &rec.CatalogItem, &rec.DecisionNumber,
			&rec.OccurredOn, &rec.DecidedOn, &rec.Summary, &rec.Polarity, &rec.Severity, &rec.LegalBasis, &rec.DisplayUntil,
			&rec.Status, &rec.Version, &at)
		rec.RecordedAt = at.UTC().Format(time.RFC3339)
		rec.Ref = rec.District + "/" + rec.Department + "/" + rec.ID
		return rec, err
	})
}

// lookupAnswer groups a lookup's records by district, as credfed answers.
func lookupAnswer(in api.LookupRequest, recs []api.Record) api.LookupAnswer {
	out := api.LookupAnswer{Purpose: in.Purpose, Reference: in.Reference, Index: api.LookupIndex{Consistency: "local"},
		Districts: []api.DistrictResult{}}
	at := map[string]int{}
	for _, rec := range recs {
		i, ok := at[rec.District]
		if !ok {
			i = len(out.Districts)
			at[rec.District] = i
			out.Districts = append(out.Districts, api.DistrictResult{District: rec.District, Status: api.DistrictOK})
		}
		out.Districts[i].Records = append(out.Districts[i].Records, rec)
	}
	return out
}
