package node

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"credfed/api"
	"credfed/audit"
	"credfed/console"
	"credfed/storage"
)

// ConsoleDir is where a node keeps its console accounts: DATA_DIR/console.
func ConsoleDir(cfg Config) string { return filepath.Join(cfg.DataDir, "console") }

// Console is the node's web console, nil when it is disabled or the node
// does not serve yet.
func (n *Node) Console() *console.Server { return n.console }

// newConsole builds the console over the API handler h.
func (n *Node) newConsole(h http.Handler) (*console.Server, error) {
	return console.New(console.Config{Store: console.OpenStore(ConsoleDir(n.cfg)), API: h,
		Federation: n.cfg.Federation, Region: n.cfg.Region, NodeName: n.cfg.Name, Audit: consoleAudit{n.audit}, Identifiers: n.cfg.Identifiers(),
		Nodes:       n.nodesHealth,
		SessionIdle: time.Duration(n.cfg.API.Console.SessionIdle), SessionMax: time.Duration(n.cfg.API.Console.SessionMax),
		Logger: n.log, Registerer: n.registry})
}

// certificateNotAfter is when the node's certificate ends (RFC 3339).
func (n *Node) certificateNotAfter() string {
	if c := n.cert.Load(); c != nil && c.Leaf != nil {
		return c.Leaf.NotAfter.UTC().Format(time.RFC3339)
	}
	return ""
}

// nodesHealth asks every region's API for its GET /v1/federation, with
// this node's certificate, at once and within 3 s: the console's
// federation page.
func (n *Node) nodesHealth(ctx context.Context) []console.NodeHealth {
	// One answer serves the page views of 5 s: a reload asks no node again.
	n.healthMu.Lock()
	defer n.healthMu.Unlock()
	if n.healthAt.After(time.Now().Add(-5*time.Second)) && n.health != nil {
		return slices.Clone(n.health)
	}
	n.health, n.healthAt = n.askNodes(ctx), time.Now()
	return slices.Clone(n.health)
}

// askNodes asks every node for its health (nodesHealth).
func (n *Node) askNodes(ctx context.Context) []console.NodeHealth {
	regions := n.rep.State().Regions()
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: n.verifier.Roots,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return n.cert.Load(), nil }},
		ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 1}}
	defer hc.CloseIdleConnections()
	out := make([]console.NodeHealth, len(regions))
	var wg sync.WaitGroup
	for i, r := range regions {
		out[i] = console.NodeHealth{Name: r.Name, Role: string(r.Role), Region: r.Path}
		addr := r.API
		if r.Path == n.cfg.Region && n.apiLn != nil {
			addr = "https://" + n.APIAddr()
		}
		if addr == "" {
			out[i].Error = "no_api"
			continue
		}
		wg.Add(1)
		go func(h *console.NodeHealth, addr string) {
			defer wg.Done()
			fillHealth(ctx, hc, addr, h)
		}(&out[i], addr)
	}
	wg.Wait()
	return out
}

func fillHealth(ctx context.Context, hc *http.Client, addr string, h *console.NodeHealth) {
	req, err := http.NewRequestWithContext(ctx, "GET", addr+"/v1/federation", nil)
	if err != nil {
		h.Error = "unreadable"
		return
	}
	resp, err := hc.Do(req)
	if err != nil {
		h.Error = "no_answer"
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		h.Error = fmt.Sprintf("HTTP %d", resp.StatusCode)
		return
	}
	var f api.Federation
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 4<<20)).Decode(&f); err != nil {
		h.Error = "unreadable"
		return
	}
	h.Reachable, h.Ready, h.Status, h.RaftState = true, f.Node.Ready, f.Node.Status, f.Raft.State
	h.Leader = f.Raft.Leader
	h.Applied, _ = strconv.ParseUint(f.Raft.AppliedIndex, 10, 64)
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		h.CertNotAfter = resp.TLS.PeerCertificates[0].NotAfter
	}
	if f.API != nil {
		h.Requests, h.Errors = f.API.Requests5m, f.API.Errors5m
	}
}

// ConsoleURL is the console's address as users reach the node
// (advertise.api or a listen.api that names a host), "" when it has none.
func (c Config) ConsoleURL() string {
	a, err := advertised(c.Advertise.API, c.Listen.API, "advertise.api")
	if err != nil {
		return ""
	}
	return "https://" + a + "/console/"
}

// consoleAudit writes the console's events to the node's audit log.
type consoleAudit struct{ r *audit.Recorder }

func (a consoleAudit) Record(e console.Event) error {
	return a.r.Record(storage.AuditEntry{Operation: e.Operation, Decision: e.Decision, Reason: e.Reason,
		User: e.User, Caller: e.Caller, Role: e.Role, Institution: e.Institution})
}
