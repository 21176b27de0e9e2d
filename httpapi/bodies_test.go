package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/intake"
	"credfed/lookup"
)

// records counts submissions and accepts everything.
type records struct{ calls atomic.Int64 }

func (r *records) Submit(ctx context.Context, caller certs.Identity, subs []intake.Submission) ([]intake.Result, error) {
	r.calls.Add(1)
	out := make([]intake.Result, len(subs))
	for i, s := range subs {
		out[i] = intake.Result{ID: s.Record.ID, Status: intake.Accepted}
	}
	return out, nil
}

func (r *records) Record(ctx context.Context, caller certs.Identity, id string) (credit.Record, []credit.Record, error) {
	return credit.Record{}, nil, nil
}

func (r *records) Records(ctx context.Context, caller certs.Identity, q intake.RecordQuery) (intake.RecordPage, error) {
	return intake.RecordPage{}, nil
}

func (r *records) Correct(ctx context.Context, caller certs.Identity, id string, c credit.Correction, reason string) (credit.Record, error) {
	return credit.Record{}, nil
}

type cluster struct{}

func (cluster) Federation(ctx context.Context) (api.Federation, error) { return api.Federation{}, nil }
func (cluster) Catalog() *credit.Catalog                               { return credit.DefaultCatalog() }

type noLookups struct{}

func (noLookups) Lookup(ctx context.Context, caller certs.Identity, req lookup.Request) (lookup.Answer, error) {
	return lookup.Answer{}, nil
}

// apiServer serves the API over real mutual TLS, with a department's
// client configuration to call it.
func apiServer(t *testing.T, cfg Config) (*httptest.Server, *tls.Config, *records) {
	t.Helper()
	srv, tc, recs, _ := apiServerOf(t, cfg)
	return srv, tc, recs
}

// apiServerOf is apiServer, with the API's Server too.
func apiServerOf(t *testing.T, cfg Config) (*httptest.Server, *tls.Config, *records, *Server) {
	t.Helper()
	ca, err := certs.NewCA("bodies", 0)
	if err != nil {
		t.Fatal(err)
	}
	node, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: "bodies", Role: certs.District, Region: "zhejiang/quzhou/kecheng"},
		Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	dept, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: "bodies", Role: certs.Department,
		Region: "zhejiang/quzhou/kecheng", Institution: "market-supervision"}})
	if err != nil {
		t.Fatal(err)
	}
	recs := &records{}
	cfg.Cluster, cfg.Records, cfg.Lookups = cluster{}, recs, noLookups{}
	h := New(cfg)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = certs.NewVerifier(ca.Cert, "bodies", nil).ServerConfig(node.TLSCertificate(), certs.OptionalClientCert, "http/1.1")
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // clients hung up on purpose
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return srv, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{dept.TLSCertificate()}, MinVersion: tls.VersionTLS13}, recs, h
}

func post(t *testing.T, srv *httptest.Server, tc *tls.Config, contentType string, body []byte) (int, api.ErrorBody) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 30 * time.Second}
	resp, err := hc.Post(srv.URL+"/v1/records", contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb api.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb
}

func recordJSON(id, summary string) []byte {
	b, _ := json.Marshal(api.RecordInput{ID: id, Subject: "990000198001010013", CatalogItem: "FOOD-DRUG-PENALTY",
		DecisionNumber: "X", OccurredOn: "2026-01-01", DecidedOn: "2026-01-02", Summary: summary})
	return b
}

// TestOversizedRecordIsRefused: one record above MaxRecordBytes, as NDJSON,
// in an array or alone, refuses the request naming the record, and
// nothing reaches the service.
func TestOversizedRecordIsRefused(t *testing.T) {
	srv, tc, recs := apiServer(t, Config{})
	big := recordJSON("BIG", strings.Repeat("大", 40<<10)) // 120 KB
	small := recordJSON("OK", "s")
	cases := []struct {
		name, ct string
		body     []byte
		record   int
	}{
		{"ndjson", "application/x-ndjson", bytes.Join([][]byte{small, big, small}, []byte("\n")), 2},
		{"array", "application/json", []byte("[" + string(small) + "," + string(big) + "]"), 2},
		{"object", "application/json", big, 1},
	}
	for _, c := range cases {
		status, eb := post(t, srv, tc, c.ct, c.body)
		want := fmt.Sprintf("record %d is larger than %d bytes", c.record, MaxRecordBytes)
		if status != http.StatusBadRequest || eb.Error == nil || eb.Error.Message != want {
			t.Errorf("%s: %d %+v, want 400 %q", c.name, status, eb.Error, want)
		}
	}
	if n := recs.calls.Load(); n != 0 {
		t.Fatalf("the service was called %d times", n)
	}
	// Within the cap, all three shapes are read.
	for _, body := range [][]byte{small, []byte("[" + string(small) + "]")} {
		if status, eb := post(t, srv, tc, "application/json", body); status != http.StatusOK {
			t.Fatalf("a small record: %d %+v", status, eb.Error)
		}
	}
}

// countingReader counts the bytes read from it and never ends.
type countingReader struct{ n atomic.Int64 }

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// TestHugeRecordIsRefusedWhileRead: an endless record is refused once the
// cap is passed, having read no more than the cap and a read-ahead chunk.
func TestHugeRecordIsRefusedWhileRead(t *testing.T) {
	src := &countingReader{}
	body := io.MultiReader(strings.NewReader(`[{"id":"A","summary":"`), src)
	req := httptest.NewRequest("POST", "/v1/records", body)
	req.Header.Set("Content-Type", "application/json")
	_, err := readRecordItems(req)
	if e := errorOf(err); e == nil || !strings.Contains(e.Message, "record 1 is larger") {
		t.Fatalf("%v", err)
	}
	if n := src.n.Load(); n > 2*MaxRecordBytes {
		t.Fatalf("read %d bytes of one record before refusing it (cap %d)", n, MaxRecordBytes)
	}
}

// slowRequest sends a request's headers and the first bytes of its body
// over a raw TLS connection, then stalls; it returns the connection.
func slowRequest(t *testing.T, srv *httptest.Server, tc *tls.Config, length int) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n[", length)
	return conn
}

// TestSlowBodyIsCut: a body that trickles in is refused once the read
// timeout passes, instead of holding the connection.
func TestSlowBodyIsCut(t *testing.T) {
	srv, tc, _ := apiServer(t, Config{BulkReadTimeout: 300 * time.Millisecond})
	conn := slowRequest(t, srv, tc, 1000)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	defer resp.Body.Close()
	var eb api.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	if resp.StatusCode != http.StatusBadRequest || eb.Error == nil || !strings.Contains(eb.Error.Message, "not sent in time") {
		t.Fatalf("stalled body: %d %+v", resp.StatusCode, eb.Error)
	}
}

// TestLargeBodiesAreReadAFewAtATime: with one slot for large bodies, a
// second large submission waits and is refused unavailable while the first
// is read; a small one goes through meanwhile.
func TestLargeBodiesAreReadAFewAtATime(t *testing.T) {
	srv, tc, _ := apiServer(t, Config{LargeBodies: 1, LargeBodyWait: 200 * time.Millisecond, BulkReadTimeout: 20 * time.Second})
	slowRequest(t, srv, tc, 8<<20) // holds the slot
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 30 * time.Second}
	var status int
	var eb api.ErrorBody
	// The first request may take a moment to reach its slot: ask until the
	// second one is refused for want of one.
	for i := 0; i < 50 && status != http.StatusServiceUnavailable; i++ {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/records", io.NopCloser(strings.NewReader(string(recordJSON("L", "s")))))
		req.ContentLength = -1 // unknown length: treated as large
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		status = resp.StatusCode
		eb = api.ErrorBody{}
		json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
	}
	if status != http.StatusServiceUnavailable || eb.Error == nil || eb.Error.Code != api.CodeUnavailable {
		t.Fatalf("a second large body: %d %+v", status, eb.Error)
	}
	if status, eb := post(t, srv, tc, "application/json", recordJSON("S", "s")); status != http.StatusOK {
		t.Fatalf("a small body while a large one is read: %d %+v", status, eb.Error)
	}
}
