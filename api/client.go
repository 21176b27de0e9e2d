package api

import (
	"bytes"
	"context"
	"credfed/credit"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Environment variables a client takes its connection from (as Nomad's
// NOMAD_ADDR and friends); flags override them.
const (
	EnvAddr       = "CREDFED_ADDR"        // the node's API base URL, https://host:port
	EnvCACert     = "CREDFED_CACERT"      // the federation CA certificate (PEM file)
	EnvClientCert = "CREDFED_CLIENT_CERT" // the client certificate (PEM file)
	EnvClientKey  = "CREDFED_CLIENT_KEY"  // its key (PEM file)
)

// Config says how to reach a node. The zero Timeout means one minute.
type Config struct {
	// Address is the node's API base URL, e.g. https://127.0.0.1:8443.
	Address string
	// CACert is the federation CA certificate file; the node's certificate
	// must chain to it.
	CACert string
	// ClientCert and ClientKey are the caller's certificate and key files;
	// both empty calls without a certificate (most routes refuse that).
	ClientCert, ClientKey string
	// Timeout bounds each call.
	Timeout time.Duration
	// ServerIdentity, if set, is the identity URI the node's certificate
	// must carry (a joining node talks only to the coordinator its token
	// names, not to any node of the federation at that address).
	ServerIdentity string
}

// ConfigFromEnv returns the configuration the CREDFED_* environment
// variables give (getenv is os.Getenv, or a test's map).
func ConfigFromEnv(getenv func(string) string) Config {
	return Config{Address: getenv(EnvAddr), CACert: getenv(EnvCACert),
		ClientCert: getenv(EnvClientCert), ClientKey: getenv(EnvClientKey)}
}

// Client calls one node's API. It is safe for concurrent use.
type Client struct {
	base string
	http *http.Client
}

// NewClient builds a client over HTTPS with the federation CA as the only
// root and the client certificate, if any.
func NewClient(cfg Config) (*Client, error) {
	if cfg.Address == "" {
		return nil, errors.New("api: no node address (set --addr or " + EnvAddr + ")")
	}
	u, err := url.Parse(cfg.Address)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("api: node address %q is not an https:// URL", cfg.Address)
	}
	if cfg.CACert == "" {
		return nil, errors.New("api: no CA certificate (set --ca or " + EnvCACert + ")")
	}
	pem, err := os.ReadFile(cfg.CACert)
	if err != nil {
		return nil, fmt.Errorf("api: CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("api: %s holds no PEM certificate", cfg.CACert)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if want := cfg.ServerIdentity; want != "" {
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				for _, u := range cs.PeerCertificates[0].URIs {
					if u.String() == want {
						return nil
					}
				}
			}
			return fmt.Errorf("api: the node at %s is not %s", cfg.Address, want)
		}
	}
	switch {
	case cfg.ClientCert != "" && cfg.ClientKey != "":
		pair, err := tls.LoadX509KeyPair(cfg.ClientCert, cfg.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("api: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	case cfg.ClientCert != "" || cfg.ClientKey != "":
		return nil, errors.New("api: a client certificate needs both its certificate and its key file")
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	return &Client{base: strings.TrimSuffix(cfg.Address, "/"),
		http: &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}}, nil
}

// NewClientTransport builds a client that sends its requests through rt
// (the console calls its own node's API in process this way); base is
// the URL the requests name. The zero timeout means one minute.
func NewClientTransport(base string, rt http.RoundTripper, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = time.Minute
	}
	return &Client{base: strings.TrimSuffix(base, "/"), http: &http.Client{Timeout: timeout, Transport: rt}}
}

// Address is the node's API base URL.
func (c *Client) Address() string { return c.base }

// CloseIdle closes the client's idle connections.
func (c *Client) CloseIdle() { c.http.CloseIdleConnections() }

// StatusError is a non-2xx answer: the HTTP status and the API's error.
type StatusError struct {
	Method, Path string
	Status       int
	Err          Error
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, e.Err.Error())
}

// Code returns the API error code of err (a *StatusError), or "".
func Code(err error) string {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Err.Code
	}
	return ""
}

// Do sends one request. body is nil, a []byte, an io.Reader, or a value
// encoded as JSON. A 2xx answer is decoded into out (a *json.RawMessage
// keeps it as it is; nil drops it); any other answer is a *StatusError.
// It returns the HTTP status.
func (c *Client) Do(ctx context.Context, method, path, contentType string, body, out any) (int, error) {
	data, status, err := c.send(ctx, method, path, contentType, body)
	if err != nil {
		return status, err
	}
	if status/100 != 2 {
		return status, statusError(method, path, status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return status, fmt.Errorf("%s %s: the answer is not the JSON expected: %w", method, path, err)
		}
	}
	return status, nil
}

func (c *Client) send(ctx context.Context, method, path, contentType string, body any) ([]byte, int, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, 0, fmt.Errorf("api: encode request: %w", err)
		}
		rd = bytes.NewReader(data)
		if contentType == "" {
			contentType = "application/json"
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, 0, fmt.Errorf("api: %w", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	return data, resp.StatusCode, nil
}

func statusError(method, path string, status int, data []byte) error {
	se := &StatusError{Method: method, Path: path, Status: status}
	var eb ErrorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
		se.Err = *eb.Error
	} else {
		se.Err = Error{Code: http.StatusText(status), Message: strings.TrimSpace(string(data))}
	}
	return se
}

// Catalog returns the federation's current catalog.
func (c *Client) Catalog(ctx context.Context) (*Catalog, error) {
	var out Catalog
	_, err := c.Do(ctx, "GET", "/v1/catalog", "", nil, &out)
	return &out, err
}

// Federation returns the federation as the node sees it.
func (c *Client) Federation(ctx context.Context) (*Federation, error) {
	var out Federation
	_, err := c.Do(ctx, "GET", "/v1/federation", "", nil, &out)
	return &out, err
}

// SubmitRecords submits records (department certificate). The answer has
// one result per record; a submission whose records were all rejected
// (400) or partly (207) still returns its answer, without an error.
func (c *Client) SubmitRecords(ctx context.Context, records []RecordInput) (*SubmitAnswer, int, error) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	for _, r := range records {
		if err := enc.Encode(r); err != nil {
			return nil, 0, fmt.Errorf("api: encode record: %w", err)
		}
	}
	return c.SubmitNDJSON(ctx, body.Bytes())
}

// SubmitNDJSON submits records written one JSON object per line.
func (c *Client) SubmitNDJSON(ctx context.Context, ndjson []byte) (*SubmitAnswer, int, error) {
	const path = "/v1/records"
	data, status, err := c.send(ctx, "POST", path, "application/x-ndjson", ndjson)
	if err != nil {
		return nil, status, err
	}
	var out SubmitAnswer
	if status/100 == 2 || status == http.StatusBadRequest {
		if json.Unmarshal(data, &out) == nil && out.Results != nil {
			return &out, status, nil
		}
	}
	if status/100 == 2 {
		return nil, status, fmt.Errorf("POST %s: the answer holds no results", path)
	}
	return nil, status, statusError("POST", path, status, data)
}

// Record returns one of the calling department's records with its
// versions.
func (c *Client) Record(ctx context.Context, id string) (*Record, error) {
	var out Record
	_, err := c.Do(ctx, "GET", "/v1/records/"+url.PathEscape(id), "", nil, &out)
	return &out, err
}

// Records returns a page of the calling department's records
// (department certificate, on its district's node).
func (c *Client) Records(ctx context.Context, q RecordQuery) (*RecordPage, error) {
	v := url.Values{}
	for k, s := range map[string]string{"item": q.Item, "status": q.Status, "after": q.After} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	path := "/v1/records"
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var out RecordPage
	_, err := c.Do(ctx, "GET", path, "", nil, &out)
	return &out, err
}

// Correct corrects one of the calling department's records and returns
// the new version.
func (c *Client) Correct(ctx context.Context, id string, corr Correction) (*Record, error) {
	var out Record
	_, err := c.Do(ctx, "POST", "/v1/records/"+url.PathEscape(id)+"/corrections", "", corr, &out)
	return &out, err
}

// Lookup looks a subject up across the federation (coordinator
// certificate, on the coordinator's own node).
func (c *Client) Lookup(ctx context.Context, req LookupRequest) (*LookupAnswer, error) {
	var out LookupAnswer
	_, err := c.Do(ctx, "POST", "/v1/lookups", "", req, &out)
	return &out, err
}

// Report returns a subject's own report (portal certificate): the signed
// document as it came (keep it to verify or hand on) and its content.
func (c *Client) Report(ctx context.Context, req SubjectRequest) ([]byte, *Report, error) {
	var raw json.RawMessage
	if _, err := c.Do(ctx, "POST", "/v1/reports", "", req, &raw); err != nil {
		return nil, nil, err
	}
	var out Report
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, nil, fmt.Errorf("POST /v1/reports: the answer is not a report: %w", err)
	}
	return raw, &out, nil
}

// AccessLog returns who looked a subject up (portal certificate).
func (c *Client) AccessLog(ctx context.Context, req SubjectRequest) (*AccessLog, error) {
	var out AccessLog
	_, err := c.Do(ctx, "POST", "/v1/access-log", "", req, &out)
	return &out, err
}

// File files an objection (kind "objections") or a repair request
// ("repairs") through a portal.
func (c *Client) File(ctx context.Context, kind string, req CaseRequest) (*Case, error) {
	var out Case
	_, err := c.Do(ctx, "POST", "/v1/"+kind, "", req, &out)
	return &out, err
}

// Case returns an objection or a repair request by id.
func (c *Client) Case(ctx context.Context, kind, id string) (*Case, error) {
	var out Case
	_, err := c.Do(ctx, "GET", "/v1/"+kind+"/"+url.PathEscape(id), "", nil, &out)
	return &out, err
}

// Cases lists the caller department's cases in a state (open, overdue,
// decided, all).
func (c *Client) Cases(ctx context.Context, kind, state string) (*Cases, error) {
	var out Cases
	_, err := c.Do(ctx, "GET", "/v1/"+kind+"?state="+url.QueryEscape(state), "", nil, &out)
	return &out, err
}

// Decide decides a case as the collecting department: an objection's
// resolution or a repair's decision.
func (c *Client) Decide(ctx context.Context, kind, id string, d CaseDecision) (*Case, error) {
	step := "resolution"
	if kind == "repairs" {
		step = "decision"
	}
	var out Case
	_, err := c.Do(ctx, "POST", "/v1/"+kind+"/"+url.PathEscape(id)+"/"+step, "", d, &out)
	return &out, err
}

// Check runs a check before a decision (coordinator at its node,
// department at its district's node).
func (c *Client) Check(ctx context.Context, req CheckRequest) (*CheckAnswer, error) {
	var out CheckAnswer
	_, err := c.Do(ctx, "POST", "/v1/checks", "", req, &out)
	return &out, err
}

// SubmitBatch queues a batch check (coordinator) and returns its job.
func (c *Client) SubmitBatch(ctx context.Context, req BatchCheckRequest) (*Job, error) {
	var out Job
	_, err := c.Do(ctx, "POST", "/v1/checks/batch", "", req, &out)
	return &out, err
}

// Job returns a batch job's progress.
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	var out Job
	_, err := c.Do(ctx, "GET", "/v1/jobs/"+url.PathEscape(id), "", nil, &out)
	return &out, err
}

// JobResults returns a batch job's results so far, one line each.
func (c *Client) JobResults(ctx context.Context, id string) ([]BatchResult, error) {
	path := "/v1/jobs/" + url.PathEscape(id) + "/results"
	data, status, err := c.send(ctx, "GET", path, "", nil)
	if err != nil {
		return nil, err
	}
	if status/100 != 2 {
		return nil, statusError("GET", path, status, data)
	}
	var out []BatchResult
	dec := json.NewDecoder(bytes.NewReader(data))
	for dec.More() {
		var r BatchResult
		if err := dec.Decode(&r); err != nil {
			return out, fmt.Errorf("GET %s: line %d is not a result: %w", path, len(out)+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Classify returns a subject's informational classification.
func (c *Client) Classify(ctx context.Context, req ClassificationRequest) (*Classification, error) {
	var out Classification
	_, err := c.Do(ctx, "POST", "/v1/classification", "", req, &out)
	return &out, err
}

// JobResultsTo streams a batch job's NDJSON results into w, as they come,
// and returns the bytes written.
func (c *Client) JobResultsTo(ctx context.Context, id string, w io.Writer) (int64, error) {
	path := "/v1/jobs/" + url.PathEscape(id) + "/results"
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return 0, fmt.Errorf("api: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, statusError("GET", path, resp.StatusCode, data)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("GET %s: reading the results: %w", path, err)
	}
	return n, nil
}

// Revocations returns the revocation list the node enforces (operator).
func (c *Client) Revocations(ctx context.Context) (*RevocationList, error) {
	var out RevocationList
	_, err := c.Do(ctx, "GET", "/v1/revocations", "", nil, &out)
	return &out, err
}

// Revoke revokes a certificate by serial (operator of a province region).
func (c *Client) Revoke(ctx context.Context, req RevokeRequest) (*RevocationList, error) {
	var out RevocationList
	_, err := c.Do(ctx, "POST", "/v1/revocations", "", req, &out)
	return &out, err
}

// Suspend suspends every certificate of an identity (operator).
func (c *Client) Suspend(ctx context.Context, req SuspendRequest) (*RevocationList, error) {
	var out RevocationList
	_, err := c.Do(ctx, "POST", "/v1/suspensions", "", req, &out)
	return &out, err
}

// Unsuspend lifts an identity's suspension (operator).
func (c *Client) Unsuspend(ctx context.Context, identity string) (*RevocationList, error) {
	var out RevocationList
	_, err := c.Do(ctx, "DELETE", "/v1/suspensions?identity="+url.QueryEscape(identity), "", nil, &out)
	return &out, err
}

// PublishCatalog publishes the next catalog version (operator of the
// province).
func (c *Client) PublishCatalog(ctx context.Context, next *credit.Catalog) (*CatalogApplied, error) {
	in := Catalog{Version: next.Version, Items: next.Items, Purposes: next.Purposes, Lists: next.Lists, Scenarios: next.Scenarios,
		Domains: next.Domains, Occupations: next.Occupations, Rules: next.Rules, Levels: next.Levels}
	var out CatalogApplied
	_, err := c.Do(ctx, "POST", "/v1/catalog", "", in, &out)
	return &out, err
}

// CatalogOf is the catalog of GET /v1/catalog's answer.
func CatalogOf(in *Catalog) *credit.Catalog {
	return &credit.Catalog{Version: in.Version, Items: in.Items, Purposes: in.Purposes, Lists: in.Lists, Scenarios: in.Scenarios,
		Domains: in.Domains, Occupations: in.Occupations, Rules: in.Rules, Levels: in.Levels}
}
