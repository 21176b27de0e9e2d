package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"

	"credfed/api"
	"credfed/localfed"
)

// fakeNode is an HTTPS server standing in for a node's API, with a node
// certificate of a local federation's CA: it answers lookups, the
// federation's status and submissions with canned answers, and remembers
// who asked what.
type fakeNode struct {
	URL string

	mu    sync.Mutex
	calls []fakeCall
	// lookupAnswer is the body of every lookup's answer, sent as it is.
	lookupAnswer []byte
	federation   api.Federation
}

// fakeCall is one request the fake node received.
type fakeCall struct {
	Method, Path string
	// Caller is the URI SAN of the client certificate, "" without one.
	Caller string
	Body   []byte
}

// testLayout creates a local federation's files (CA, node and client
// certificates) without starting any node.
func testLayout(t *testing.T) localfed.Layout {
	t.Helper()
	l, err := localfed.Create(localfed.Spec{Dir: filepath.Join(t.TempDir(), "fed"), Districts: 2})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// startFakeNode serves with the province's certificate of l.
func startFakeNode(t *testing.T, l localfed.Layout) *fakeNode {
	t.Helper()
	prov := l.Nodes[0]
	dir := filepath.Dir(prov.ConfigPath)
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, prov.Name+".pem"), filepath.Join(dir, prov.Name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeNode{lookupAnswer: []byte(`{"subject_pseudonym":"p-test","purpose":"ADMIN-LICENSING","reference":"R","index":{"consistency":"local","applied_index":7},"districts":[]}`)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/lookups", func(w http.ResponseWriter, r *http.Request) {
		f.record(r)
		f.mu.Lock()
		body := f.lookupAnswer
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	mux.HandleFunc("GET /v1/federation", func(w http.ResponseWriter, r *http.Request) {
		f.record(r)
		f.mu.Lock()
		v := f.federation
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	})
	mux.HandleFunc("POST /v1/records", func(w http.ResponseWriter, r *http.Request) {
		body := f.record(r)
		var ans api.SubmitAnswer
		rejected := 0
		sc := bufio.NewScanner(bytes.NewReader(body))
		for i := 0; sc.Scan(); i++ {
			var in api.RecordInput
			res := api.RecordResult{Index: i, Status: api.StatusAccepted}
			if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
				res.Status, res.Error = api.StatusRejected, &api.Error{Code: api.CodeBadRequest, Message: "not a record"}
			} else if in.CatalogItem == "NO-SUCH-ITEM" {
				res.Status, res.Error = api.StatusRejected, &api.Error{Code: api.CodeUnknownCatalogItem, Field: "catalog_item", Message: "catalog item is not in catalog version 1"}
			}
			res.ID = in.ID
			if res.Status == api.StatusRejected {
				rejected++
			}
			ans.Results = append(ans.Results, res)
		}
		status := http.StatusOK
		switch {
		case rejected == len(ans.Results):
			status = http.StatusBadRequest
		case rejected > 0:
			status = http.StatusMultiStatus
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(ans)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *fakeNode) record(r *http.Request) []byte {
	body, _ := io.ReadAll(r.Body)
	c := fakeCall{Method: r.Method, Path: r.URL.Path, Body: body}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
		c.Caller = r.TLS.PeerCertificates[0].URIs[0].String()
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	f.mu.Unlock()
	return body
}

// Calls returns the requests received so far.
func (f *fakeNode) Calls() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeCall(nil), f.calls...)
}

// lastCall is the last request received; the test fails without one.
func (f *fakeNode) lastCall(t *testing.T) fakeCall {
	t.Helper()
	calls := f.Calls()
	if len(calls) == 0 {
		t.Fatal("the fake node received no request")
	}
	return calls[len(calls)-1]
}

// writeFakeDemo writes DIR/demo.json for l with every node's API at the
// fake node, and returns DIR.
func writeFakeDemo(t *testing.T, l localfed.Layout, f *fakeNode) string {
	t.Helper()
	d := l.Demo(nil)
	for i := range d.Nodes {
		d.Nodes[i].API = f.URL
	}
	dir := filepath.Dir(l.CA)
	if err := localfed.WriteDemoFile(dir, d); err != nil {
		t.Fatal(err)
	}
	return dir
}

// clearConnectionEnv empties the CREDFED_* connection variables for the
// test.
func clearConnectionEnv(t *testing.T) {
	for _, k := range []string{api.EnvAddr, api.EnvCACert, api.EnvClientCert, api.EnvClientKey} {
		t.Setenv(k, "")
	}
}
