package console

import (
	"fmt"
	"io"
	"net/http"
	"sync"

	"credfed/certs"
	"credfed/httpapi"
)

// apiTransport sends a request to the node's API handler in process, as
// the identity id (httpapi.AsCaller), and streams the answer back.
type apiTransport struct {
	h  http.Handler
	id certs.Identity
}

func (t apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(httpapi.AsCaller(req.Context(), t.id))
	r.RequestURI = req.URL.RequestURI()
	r.RemoteAddr = "console"
	if r.Body == nil {
		r.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	go func() {
		defer func() {
			if p := recover(); p != nil {
				pw.CloseWithError(fmt.Errorf("console: the API handler failed: %v", p))
				w.writeHeader(http.StatusInternalServerError)
				return
			}
			w.writeHeader(http.StatusOK) // a handler that wrote nothing
			pw.Close()
		}()
		t.h.ServeHTTP(w, r)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	return &http.Response{Status: http.StatusText(w.status), StatusCode: w.status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.sent, Body: pr, ContentLength: -1, Request: req}, nil
}

// pipeWriter is the handler's http.ResponseWriter: the header is sent
// (ready closes) at the first WriteHeader or Write, the body goes down
// the pipe as it is written.
type pipeWriter struct {
	header http.Header
	sent   http.Header
	status int
	pw     *io.PipeWriter
	once   sync.Once
	ready  chan struct{}
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) { w.writeHeader(code) }

func (w *pipeWriter) writeHeader(code int) {
	w.once.Do(func() {
		w.status = code
		w.sent = w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) Write(b []byte) (int, error) {
	w.writeHeader(http.StatusOK)
	return w.pw.Write(b)
}

// Flush lets handlers that flush stream (the pipe does not buffer).
func (w *pipeWriter) Flush() {}
