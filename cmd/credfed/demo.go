package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"credfed/api"
	"credfed/certs"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
)

// demoOptions are the flags of `credfed demo`.
type demoOptions struct {
	dir       string
	districts int
	records   int
	verbose   bool
	initOnly  bool
	compose   bool
}

const defaultDemoDir = "credfed-demo"

func demoCommand() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo [--dir DIR] [--districts N] [--records M] [-v] [--init-only [--compose]]",
		Short: "Run a whole federation on this machine, with synthetic data.",
		Long: `Starts a federation on 127.0.0.1 in this process: a certificate authority
and every certificate, one province node, two city nodes and N district
nodes, with real Raft, QUIC with mutual TLS, and Badger (encrypted at rest).
As soon as the nodes serve it writes DIR/demo.json (how to reach every node,
with which certificates: what --demo DIR reads), then loads M synthetic
records through the districts' APIs. Their identifiers use the reserved
test province 99, so none can be a real person's; some subjects have
records in several districts. When the index lists the showcase subject at
every district it adds it to demo.json, prints ready-to-paste curl and
credfed lines, then "credfed demo ready", and runs until interrupted.
Starting again with the same DIR resumes the same federation and data.

With --init-only it only writes DIR (CA, certificates, keys, one
configuration per node, demo.json) and prints how to start each node as its
own process (credfed node --config …) and how to load the synthetic data
into them once they serve (credfed demo load).`,
		Example: `  credfed demo
  credfed demo --dir /tmp/fed --districts 2 --records 500 -v

  # the same federation as separate processes:
  credfed demo --dir fed --init-only
  credfed node --config fed/nodes/zhejiang/node.yaml &   # … one per node
  credfed demo load --dir fed`,
		Args: noSubcommand,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDemo(cmd, o) },
	}
	fs := cmd.Flags()
	fs.StringVar(&o.dir, "dir", defaultDemoDir, "directory (`DIR`) of the demo federation (created if missing)")
	fs.IntVar(&o.districts, "districts", 4, fmt.Sprintf("number (`N`) of district nodes, 1 to %d (only used when DIR is new)", localfed.MaxDistricts))
	fs.IntVar(&o.records, "records", 3000, "how many (`M`) synthetic records to load (only when DIR is new)")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "log the nodes' info messages (default: warnings only)")
	fs.BoolVar(&o.initOnly, "init-only", false, "write DIR (CA, certificates, keys, node configurations, demo.json) and exit")
	fs.BoolVar(&o.compose, "compose", false, "with --init-only: configurations for docker-compose.yml (nodes reached by service name)")
	_ = cmd.MarkFlagDirname("dir")
	cmd.AddCommand(demoLoadCommand())
	return cmd
}

func runDemo(cmd *cobra.Command, o demoOptions) error {
	if o.districts < 1 || o.districts > localfed.MaxDistricts {
		return usageErrorf("--districts must be 1 to %d", localfed.MaxDistricts)
	}
	if o.records < 0 {
		return usageErrorf("--records cannot be negative")
	}
	if o.compose && !o.initOnly {
		return usageErrorf("--compose writes configurations for docker-compose; use it with --init-only")
	}
	if o.initOnly {
		return initDemo(cmd, o)
	}
	tuneNodeGC()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	// Once Ctrl-C stops the nodes one after the other, the Raft leader
	// reports every peer that went away; those reports say nothing the
	// user does not know, so they are dropped while stopping (kept with -v).
	var stopping atomic.Bool
	logger := slog.New(quietWhileStopping{Handler: slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}),
		stopping: &stopping, keep: o.verbose})
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// A demo.json with a showcase says the data was loaded on an earlier start.
	prev, _ := localfed.ReadDemoFile(o.dir)
	fmt.Fprintf(stdout, "starting the demo federation in %s …\n", o.dir)
	fed, err := localfed.Start(localfed.Spec{Dir: o.dir, Districts: o.districts, Encrypt: true},
		node.Options{Logger: logger, RaftTiming: localfed.RaftTiming})
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		stopping.Store(true)
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := fed.Stop(sctx); err != nil {
			fmt.Fprintf(stderr, "stopping the demo federation: %v\n", err)
		} else if stopped {
			fmt.Fprintf(stdout, "stopped; run the demo again to resume the same federation (%s)\n", o.dir)
		}
	}()
	interrupted := func(err error) error {
		if ctx.Err() != nil {
			fmt.Fprintln(stdout, "interrupted: stopping the demo federation …")
			return nil
		}
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := fed.WaitReady(sctx); err != nil {
		return interrupted(err)
	}
	// demo.json as soon as the nodes serve, so that clients can use it
	// while the data loads.
	d := fed.Layout.Demo(prev.Showcase)
	if err := withConsole(fed.Dir, fed.Layout, &d); err != nil {
		return err
	}
	if err := localfed.WriteDemoFile(fed.Dir, d); err != nil {
		return err
	}
	showcase, loaded, err := localfed.LoadData(sctx, fed.Dir, o.records)
	if err != nil {
		return interrupted(err)
	}
	if loaded > 0 {
		fmt.Fprintf(stdout, "loaded %d synthetic records into %d districts\n", loaded, len(fed.Districts()))
	} else {
		fmt.Fprintln(stdout, "resuming: the synthetic data is already in the districts")
	}
	if err := fed.WaitIndexed(sctx, showcase.Subject, len(showcase.Districts)); err != nil {
		return interrupted(err)
	}
	d.Showcase = &showcase
	if err := localfed.WriteDemoFile(fed.Dir, d); err != nil {
		return err
	}
	self := selfName()
	printDemoLines(stdout, self, o.dir, d)
	printConsoleLines(stdout, d)
	if self == "./credfed" && builtFromGoRun() {
		fmt.Fprintln(stdout, "(The credfed lines need the client: go build -o credfed ./cmd/credfed, in the repository.)")
		fmt.Fprintln(stdout)
	}
	fmt.Fprintln(stdout, "credfed demo ready")
	<-ctx.Done()
	fmt.Fprintln(stdout, "stopping the demo federation …")
	stopped = true
	return nil
}

// initDemo writes the federation's directory and demo.json and says how to
// start the nodes and load the data.
func initDemo(cmd *cobra.Command, o demoOptions) error {
	l, err := localfed.Create(localfed.Spec{Dir: o.dir, Districts: o.districts, Encrypt: true, Compose: o.compose})
	if err != nil {
		return err
	}
	d := l.Demo(nil)
	if err := withConsole(o.dir, l, &d); err != nil {
		return err
	}
	if prev, err := localfed.ReadDemoFile(o.dir); err == nil {
		d.Showcase = prev.Showcase // the data of an earlier `demo load` is still there
	}
	if err := localfed.WriteDemoFile(o.dir, d); err != nil {
		return err
	}
	w, self := cmd.OutOrStdout(), selfName()
	fmt.Fprintf(w, "federation %s in %s: %d nodes (CA, certificates, keys, node configurations, %s)\n",
		l.Federation, o.dir, len(l.Nodes), filepath.Join(o.dir, localfed.DemoFileName))
	if o.compose {
		fmt.Fprintf(w, "\n`docker-compose up` starts each node with these configurations (paths inside the containers), the province first:\n")
	} else {
		fmt.Fprintf(w, "\nStart each node as its own process, the province first (a terminal each, or in the background):\n")
	}
	for _, n := range l.Nodes {
		fmt.Fprintf(w, "  %s node --config %s\n", self, shellQuote(n.ConfigPath))
	}
	if o.compose {
		fmt.Fprintf(w, "\nOnce they serve, load the synthetic data from inside the compose network:\n  docker-compose run --rm init demo load --dir %s\n", shellQuote(o.dir))
		return nil
	}
	fmt.Fprintf(w, "\nOnce they serve, load the synthetic data through the districts' APIs (it prints a lookup to paste):\n  %s demo load --dir %s\n",
		self, shellQuote(o.dir))
	return nil
}

func demoLoadCommand() *cobra.Command {
	var (
		dir     string
		records int
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "load [--dir DIR] [--records M]",
		Short: "Load the synthetic data into a demo federation started as separate processes.",
		Long: `For a federation written by 'credfed demo --init-only' and started as
separate processes ('credfed node --config …'): waits until every node of
DIR/demo.json serves, loads M synthetic records through each district's API
with its department's certificate (once: a second run loads nothing), waits
until every district has published them to the index, adds the showcase
subject to demo.json, and prints lookups of it to paste.`,
		Example: `  credfed demo --dir fed --init-only
  # … start every node with credfed node --config …, then:
  credfed demo load --dir fed --records 500`,
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&dir, "dir", defaultDemoDir, "directory (`DIR`) of the demo federation, written by --init-only")
	fs.IntVar(&records, "records", 3000, "how many (`M`) synthetic records to load")
	fs.DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the nodes, the loading and the publishing")
	_ = cmd.MarkFlagDirname("dir")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if records < 0 {
			return usageErrorf("--records cannot be negative")
		}
		d, err := localfed.ReadDemoFile(dir)
		if err != nil {
			return fmt.Errorf("%w (write the federation first: `credfed demo --dir %s --init-only`)", err, shellQuote(dir))
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
		defer cancel()
		stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
		fmt.Fprintf(stderr, "waiting for the %d nodes of %s to serve …\n", len(d.Nodes), dir)
		if err := waitServing(ctx, d); err != nil {
			return err
		}
		showcase, loaded, err := localfed.LoadData(ctx, dir, records)
		if err != nil {
			return err
		}
		if err := localfed.WaitPublished(ctx, d); err != nil {
			return err
		}
		districts := 0
		for _, n := range d.Nodes {
			if n.Role == string(certs.District) {
				districts++
			}
		}
		if loaded > 0 {
			fmt.Fprintf(stdout, "loaded %d synthetic records into %d districts; every district has published them to the index\n",
				loaded, districts)
		} else {
			fmt.Fprintln(stdout, "the synthetic data is already in the districts, and published to the index")
		}
		d.Showcase = &showcase
		if err := localfed.WriteDemoFile(dir, d); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "showcase subject %s, with records in %s\n\n", showcase.Subject, strings.Join(showcase.Districts, ", "))
		printLookupLines(stdout, selfName(), dir, d)
		return nil
	}
	return cmd
}

// waitServing waits until every node of the demo answers GET
// /v1/federation as ready.
func waitServing(ctx context.Context, d localfed.DemoFile) error {
	for _, n := range d.Nodes {
		c, err := d.Client(n.Name, "operator", 10*time.Second)
		if err != nil {
			return err
		}
		var last error
		err = wait.For(ctx, 200*time.Millisecond, func() bool {
			var f *api.Federation
			if f, last = c.Federation(ctx); last != nil {
				return false
			}
			if !f.Node.Ready {
				last = fmt.Errorf("not ready: %s", f.Node.Status)
			}
			return f.Node.Ready
		})
		c.CloseIdle()
		if err != nil {
			if last != nil {
				err = fmt.Errorf("%w: %v", err, last)
			}
			return fmt.Errorf("node %s (%s) does not serve: %w (is `credfed node --config …` running for it?)", n.Name, n.API, err)
		}
	}
	return nil
}

// The purpose and references of the printed lookups.
const (
	demoPurpose = "ADMIN-LICENSING"
	demoUser    = "demo"
)

func demoReference(n int) string { return fmt.Sprintf("许可〔2026〕%d号", n) }

// printDemoLines prints what to paste once the demo is up.
func printDemoLines(w io.Writer, self, dir string, d localfed.DemoFile) {
	prov := d.Nodes[0]
	var firstDistrict localfed.DemoNode
	for _, n := range d.Nodes {
		if n.Role == string(certs.District) {
			firstDistrict = n
			break
		}
	}
	c := d.Clients.Coordinator
	body := fmt.Sprintf(`{"subject":"%s","purpose":"%s","user":"%s","reference":"%s"}`, d.Showcase.Subject, demoPurpose, demoUser, demoReference(1))
	fmt.Fprintf(w, `
The federation is up: %d nodes, every record in its own district.
demo.json: %s

Look the demo subject up across all districts (a coordinator of the province):
  curl --cacert %s --cert %s --key %s -H 'Content-Type: application/json' \
    -d '%s' %s/v1/lookups

`, len(d.Nodes), filepath.Join(dir, localfed.DemoFileName),
		shellQuote(d.CA), shellQuote(c.Cert), shellQuote(c.Key), body, prov.API)
	printLookupLines(w, self, dir, d)
	fmt.Fprintf(w, `
Federation status, the catalog, a node's metrics:
  %[1]s federation status --demo %[2]s
  curl --cacert %[3]s --cert %[4]s --key %[5]s %[6]s/v1/catalog
  curl %[7]s/metrics

Submit records as the market-supervision department of %[8]s (JSON, NDJSON or CSV):
  %[1]s records submit examples/records.ndjson --demo %[2]s --node %[8]s

The subject's side, through %[8]s's portal: the signed own report, who looked
(objections and repairs: see README.md, "The subject's side"):
  %[1]s report get --demo %[2]s --as portal --node %[8]s --subject %[9]s --authentication FACE-0001 --out report.json
  %[1]s report verify --ca %[3]s report.json
  %[1]s access-log --demo %[2]s --as portal --node %[8]s --subject %[9]s --authentication FACE-0001

Checks before a decision: a city's coordinator before a civil-service hire, a
department of %[8]s before a licence (its district forwards it to %[10]s),
and 1,000 applicants at once (see README.md, "Checks before a decision"):
  %[1]s check --demo %[2]s --as coordinator --node %[10]s --subject %[9]s --scenario CIVIL-SERVICE-RECRUITMENT --reference 录〔2026〕1号 --authorization AUTH-1
  %[1]s check --demo %[2]s --as department --node %[8]s --subject %[9]s --scenario ADMIN-LICENSING --reference 许〔2026〕2号
  %[1]s check --demo %[2]s --batch examples/applicants.csv --scenario ADMIN-LICENSING --out applicants.results.ndjson

`, self, shellQuote(dir), shellQuote(d.CA), shellQuote(c.Cert), shellQuote(c.Key), prov.API, firstDistrict.Metrics, firstDistrict.Name, d.Showcase.Subject, cityAbove(d, firstDistrict))
}

// withConsole adds the console's demo accounts and fresh one-time login
// links to demo.json's content.
func withConsole(dir string, l localfed.Layout, d *localfed.DemoFile) error {
	accs, err := localfed.ConsoleAccounts(dir, l)
	if err != nil {
		return fmt.Errorf("console accounts: %w", err)
	}
	d.ConsoleAccounts = accs
	if len(accs) > 0 {
		d.Console = accs[0].Login
	}
	return nil
}

// printConsoleLines prints the console's one-time login links.
func printConsoleLines(w io.Writer, d localfed.DemoFile) {
	if len(d.ConsoleAccounts) == 0 {
		return
	}
	fmt.Fprintf(w, "The web console: a one-time login link per account, good for %d hours (each start prints new ones;\nthe accounts' passwords are in demo.json, \"console_accounts\"):\n", int(localfed.LoginLinkTTL.Hours()))
	for _, a := range d.ConsoleAccounts {
		fmt.Fprintf(w, "  %-11s %-22s %s\n", a.Role, a.Name, a.Login)
	}
	fmt.Fprintln(w, "(The browser does not know the demo's CA: accept its certificate, or import ca.pem.)")
	fmt.Fprintln(w)
}

// cityAbove is the name of the city node above a district of the demo.
func cityAbove(d localfed.DemoFile, district localfed.DemoNode) string {
	for _, n := range d.Nodes {
		if n.Role == string(certs.City) && strings.HasPrefix(district.Region, n.Region+"/") {
			return n.Name
		}
	}
	return d.Nodes[0].Name
}

// printLookupLines prints credfed lookups of the showcase subject: as the
// province's coordinator, and as each city's through its own node.
func printLookupLines(w io.Writer, self, dir string, d localfed.DemoFile) {
	line := func(extra string, ref int) string {
		return fmt.Sprintf("  %s lookup --demo %s%s --subject %s --purpose %s --user %s --reference %s\n",
			self, shellQuote(dir), extra, d.Showcase.Subject, demoPurpose, demoUser, demoReference(ref))
	}
	fmt.Fprintf(w, "Look the demo subject up with the credfed client (a coordinator of the province):\n%s", line("", 1))
	var cities []string
	for _, n := range d.Nodes {
		if n.Role == string(certs.City) {
			if _, ok := d.Clients.Coordinators[n.Name]; ok {
				cities = append(cities, n.Name)
			}
		}
	}
	if len(cities) == 0 {
		return
	}
	fmt.Fprintln(w, "\nA coordinator of each city, through its city's own node:")
	for i, name := range cities {
		fmt.Fprint(w, line(" --as coordinator --node "+name, i+2))
	}
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
