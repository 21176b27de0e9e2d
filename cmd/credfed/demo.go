package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"credfed/certs"
	"credfed/credit"
	"credfed/node"
)

func demoCommand() *command {
	return &command{name: "demo", summary: "Run a whole federation on this machine, with synthetic data.", run: runDemo}
}

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "credfed demo [--dir DIR] [--districts N] [--records M]",
		`Starts a federation on 127.0.0.1 in this process: a certificate authority
and every certificate, one province node, two city nodes and N district
nodes, with real Raft, QUIC with mutual TLS, and Badger (encrypted at rest).
Loads M synthetic records whose identifiers use the reserved test province
99 (so none can be a real person's), some subjects in several districts.
When every node serves it writes DIR/demo.json, prints ready-to-paste curl
and credfed lines, then "credfed demo ready", and runs until interrupted.
Starting again with the same DIR resumes the same federation and data.`, stderr)
	dir := fs.String("dir", "credfed-demo", "directory of the demo federation (created if missing)")
	districts := fs.Int("districts", 4, "number of district nodes (1 to 12; only used when DIR is new)")
	records := fs.Int("records", 3000, "synthetic records to load (only when DIR is new)")
	verbose := fs.Bool("v", false, "log the nodes' info messages (default: warnings only)")
	initOnly := fs.Bool("init-only", false, "create DIR (CA, certificates, keys, node configurations) and exit")
	compose := fs.Bool("compose", false, "with --init-only: configurations for docker-compose.yml (nodes reached by service name)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *districts < 1 || *districts > 12 {
		return usageErrorf("--districts must be 1 to 12")
	}
	if *compose && !*initOnly {
		return usageErrorf("--compose writes configurations for docker-compose; use it with --init-only")
	}
	if *initOnly {
		l, err := node.CreateLocal(node.LocalSpec{Dir: *dir, Districts: *districts, Encrypt: true, Compose: *compose})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "federation %s in %s: %d nodes\n", l.Federation, *dir, len(l.Nodes))
		for _, n := range l.Nodes {
			fmt.Fprintf(stdout, "  credfed node --config %s\n", n.ConfigPath)
		}
		return nil
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	// Once Ctrl-C stops the nodes one after the other, the Raft leader
	// reports every peer that went away; those reports say nothing the
	// user does not know, so they are dropped while stopping (kept with -v).
	var stopping atomic.Bool
	logger := slog.New(quietWhileStopping{Handler: slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}),
		stopping: &stopping, keep: *verbose})
	fmt.Fprintf(stdout, "starting the demo federation in %s …\n", *dir)
	fed, err := node.StartLocal(node.LocalSpec{Dir: *dir, Districts: *districts, Encrypt: true},
		node.Options{Logger: logger, RaftTiming: demoRaftTiming})
	if err != nil {
		return err
	}
	defer func() {
		stopping.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := fed.Stop(ctx); err != nil {
			fmt.Fprintf(stderr, "stopping the demo federation: %v\n", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := fed.WaitReady(ctx); err != nil {
		return err
	}
	showcase, err := loadDemoData(ctx, fed, *records, stdout)
	if err != nil {
		return err
	}
	if err := waitShowcaseIndexed(ctx, fed, showcase); err != nil {
		return err
	}
	d := demoJSON(fed, showcase)
	data, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	if err := node.WriteFileAtomic(filepath.Join(fed.Dir, "demo.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	printDemoLines(stdout, fed, d)
	fmt.Fprintln(stdout, "credfed demo ready")
	waitForSignal()
	fmt.Fprintln(stdout, "stopping the demo federation …")
	return nil
}

// demoRaftTiming suits a federation on one machine: elections and
// heartbeats faster than hashicorp/raft's WAN-friendly defaults.
var demoRaftTiming = node.RaftTiming{Heartbeat: 500 * time.Millisecond, Election: 500 * time.Millisecond,
	LeaderLease: 250 * time.Millisecond, Commit: 10 * time.Millisecond}

// loadDemoData submits the synthetic records once (a marker file remembers
// it) through each district's API with its department certificate.
func loadDemoData(ctx context.Context, fed *node.LocalFederation, m int, stdout io.Writer) (demoSubject, error) {
	marker := filepath.Join(fed.Dir, "demo-data.json")
	var showcase demoSubject
	if data, err := os.ReadFile(marker); err == nil {
		return showcase, json.Unmarshal(data, &showcase)
	} else if !errors.Is(err, os.ErrNotExist) {
		return showcase, err
	}
	cat := fed.Node(fed.Layout.Nodes[0].Name).Replica().State().Catalog()
	byDistrict, showcase := syntheticRecords(cat, fed.Districts(), m, credit.TodayAt(time.Now()))
	total := 0
	for _, name := range fed.Districts() {
		files := fed.Layout.Departments[name]
		cf := clientFlags{api: "https://" + fed.Node(name).APIAddr(), ca: fed.Layout.CA, cert: files.Cert, key: files.Key, timeout: time.Minute}
		hc, api, err := cf.client()
		if err != nil {
			return showcase, err
		}
		recs := byDistrict[name]
		for start := 0; start < len(recs); start += submitBatch {
			var body bytes.Buffer
			enc := json.NewEncoder(&body)
			enc.SetEscapeHTML(false)
			for _, r := range recs[start:min(start+submitBatch, len(recs))] {
				enc.Encode(r)
			}
			var ans struct {
				Results []struct{ Status string } `json:"results"`
			}
			if _, err := call(hc, "POST", api+"/v1/records", "application/x-ndjson", body.Bytes(), &ans); err != nil {
				return showcase, fmt.Errorf("loading synthetic records into %s: %w", name, err)
			}
			for _, res := range ans.Results {
				if res.Status == "rejected" {
					return showcase, fmt.Errorf("a synthetic record was rejected by %s", name)
				}
			}
		}
		total += len(recs)
	}
	fmt.Fprintf(stdout, "loaded %d synthetic records into %d districts\n", total, len(fed.Districts()))
	data, _ := json.Marshal(showcase)
	return showcase, node.WriteFileAtomic(marker, data, 0o600)
}

// waitShowcaseIndexed waits until the province's index lists the showcase
// subject at every district that holds it, so that the printed lookup
// returns records from more than one district.
func waitShowcaseIndexed(ctx context.Context, fed *node.LocalFederation, s demoSubject) error {
	key, err := credit.LoadPseudonymKey(filepath.Join(fed.Dir, "pseudonym.key"))
	if err != nil {
		return err
	}
	p := key.Pseudonym(s.Subject)
	prov := fed.Node(fed.Layout.Nodes[0].Name)
	for {
		entries, _, err := prov.Replica().State().Lookup(p)
		held := 0
		for _, e := range entries {
			if e.Holds() {
				held++
			}
		}
		if err == nil && held >= len(s.Districts) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the index did not list the demo subject at %d districts in time (%d so far)", len(s.Districts), held)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func demoJSON(fed *node.LocalFederation, s demoSubject) demoFile {
	d := demoFile{Federation: fed.Layout.Federation, CA: fed.Layout.CA, Showcase: &s,
		Clients: demoClients{
			Coordinator: demoCert{fed.Layout.Coordinator.Cert, fed.Layout.Coordinator.Key},
			Operator:    demoCert{fed.Layout.Operator.Cert, fed.Layout.Operator.Key},
			Department:  map[string]demoCert{}, Portal: map[string]demoCert{},
		}}
	for _, ln := range fed.Layout.Nodes {
		n := fed.Node(ln.Name)
		d.Nodes = append(d.Nodes, demoNode{Name: ln.Name, Role: string(ln.Role), Region: ln.Region,
			API: "https://" + n.APIAddr(), Exchange: n.ExchangeAddr(), Metrics: "http://" + n.MetricsAddr()})
		if ln.Role == certs.District {
			dep, por := fed.Layout.Departments[ln.Name], fed.Layout.Portals[ln.Name]
			d.Clients.Department[ln.Name] = demoCert{dep.Cert, dep.Key}
			d.Clients.Portal[ln.Name] = demoCert{por.Cert, por.Key}
		}
	}
	return d
}

func printDemoLines(w io.Writer, fed *node.LocalFederation, d demoFile) {
	prov := d.Nodes[0]
	var firstDistrict demoNode
	for _, n := range d.Nodes {
		if n.Role == "district" {
			firstDistrict = n
			break
		}
	}
	c := d.Clients.Coordinator
	body := fmt.Sprintf(`{"subject":"%s","purpose":"ADMIN-LICENSING","user":"demo","reference":"许可〔2026〕1号"}`, d.Showcase.Subject)
	fmt.Fprintf(w, `
The federation is up: %d nodes, every record in its own district.
demo.json: %s

Look the demo subject up across all districts (a coordinator of the province):
  curl --cacert %s --cert %s --key %s -H 'Content-Type: application/json' \
    -d '%s' %s/v1/lookups

The same with the credfed client:
  credfed lookup --demo %s --subject %s --purpose ADMIN-LICENSING --user demo --reference 许可〔2026〕1号

Federation status, the catalog, a node's metrics:
  credfed federation status --demo %s
  curl --cacert %s --cert %s --key %s %s/v1/catalog
  curl %s/metrics

Submit records as the market-supervision department of %s:
  credfed records submit --demo %s --node %s FILE.ndjson

`, len(d.Nodes), filepath.Join(fed.Dir, "demo.json"),
		d.CA, c.Cert, c.Key, body, prov.API,
		shellDir(fed.Dir), d.Showcase.Subject,
		shellDir(fed.Dir),
		d.CA, c.Cert, c.Key, prov.API,
		firstDistrict.Metrics,
		firstDistrict.Name, shellDir(fed.Dir), firstDistrict.Name)
}

// shellDir quotes a directory for a pasted command line if it needs it.
func shellDir(dir string) string {
	if strings.ContainsAny(dir, " '\"$`\\") {
		return "'" + strings.ReplaceAll(dir, "'", `'\''`) + "'"
	}
	return dir
}

// quietWhileStopping drops the consensus component's log records once
// stopping is set, unless keep.
type quietWhileStopping struct {
	slog.Handler
	stopping  *atomic.Bool
	keep      bool
	consensus bool // records carry component=consensus
}

func (h quietWhileStopping) Handle(ctx context.Context, r slog.Record) error {
	if h.consensus && !h.keep && h.stopping.Load() {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietWhileStopping) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := h
	c.Handler = h.Handler.WithAttrs(attrs)
	for _, a := range attrs {
		if a.Key == "component" && a.Value.String() == "consensus" {
			c.consensus = true
		}
	}
	return c
}

func (h quietWhileStopping) WithGroup(name string) slog.Handler {
	c := h
	c.Handler = h.Handler.WithGroup(name)
	return c
}
