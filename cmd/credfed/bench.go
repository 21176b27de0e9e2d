package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"credfed/bench"
	"credfed/internal/atomicfile"
)

func benchCommand() *cobra.Command {
	var (
		cfg       bench.Config
		asJSON    bool
		processes bool
		inProcess bool
	)
	cmd := &cobra.Command{
		Use:   "bench [--quick] [--json] [--processes|--in-process] [--districts N] [--subjects N] [--rounds N]",
		Short: "Measure a federation on this machine against a central PostgreSQL copy, in the same run.",
		Long: `Builds a federation on 127.0.0.1 (a province, 2 cities and 4 districts or --districts, each
node its own 'credfed node' process by default), loads synthetic subjects
(every fifth in two districts), and measures, in interleaved rounds
(credfed, then its baselines, every round), against a central copy of the
same data in one PostgreSQL: lookups with their durable audit at 1 and 64
clients (against SQL and against an HTTPS + mutual TLS + JSON front written
as credfed's API is), server CPU per lookup, bulk intake at one district
(acknowledged, and until the index shows every record) against COPY and
INSERT, and peak resident memory. PostgreSQL is Debian's (apt-get install
postgresql): a throwaway cluster in a temporary directory on a free
loopback port, fsync and synchronous_commit on; without it the bench
measures credfed alone and says so. Every ratio is oriented so that above
1 means credfed does better. Everything it starts is stopped and removed
at the end, also on an error or Ctrl-C. docs/BENCHMARKS.md ("credfed
bench") shows a full run.

--quick is the CI run (2,000 subjects, 2 rounds of 2 s, intake of 10,000),
under two minutes on 2 cores; the full run (100,000 subjects, 3 rounds of
10 s, intake of 200,000) under fifteen. --profile DIR saves, from the
nodes' pprof endpoints (metrics.pprof) in the first round: CPU profiles of
the province and the intake district during the lookups at 64 clients and
the intake, execution traces of the province and the districts during the
lookups at 1 client (go tool trace -pprof=sched|syscall|net), and the
intake district's heap at the end of the intake, once the index shows it.`,
		Example: `  credfed bench --quick
  credfed bench --json > bench.json
  credfed bench --subjects 1000000 --intake 1000000 --rounds 1 --profile /tmp/prof
  credfed bench --districts 8 --subjects 1000000 --rounds 1`,
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.BoolVar(&cfg.Quick, "quick", false, "small data, few short rounds (the CI run)")
	fs.BoolVar(&asJSON, "json", false, `print the result as JSON: {"machine","topology","figures":[…]}`)
	fs.BoolVar(&processes, "processes", false, "run every node as its own credfed node process (the default)")
	fs.BoolVar(&inProcess, "in-process", false, "run every node in this process (no CPU or memory figures)")
	fs.IntVar(&cfg.Districts, "districts", 0, "district nodes (`N`, 2 to 12, default 4), spread over the 2 cities")
	fs.IntVar(&cfg.Subjects, "subjects", 0, "subjects (`N`) to load before the rounds (default 100000; quick 2000)")
	fs.IntVar(&cfg.Rounds, "rounds", 0, "interleaved rounds (`N`, default 3; quick 2)")
	fs.DurationVar(&cfg.LookupDuration, "duration", 0, "length (`D`) of each lookup measurement (default 10s; quick 2s)")
	fs.IntVar(&cfg.Intake, "intake", 0, "records (`N`) of each intake measurement (default 200000; quick 10000)")
	fs.IntVar(&cfg.IntakeClients, "intake-clients", 0, "clients submitting the intake at once (`N`, default 4)")
	fs.BoolVar(&cfg.NoBaseline, "no-baseline", false, "measure credfed alone (as without PostgreSQL)")
	fs.StringVar(&cfg.ProfileDir, "profile", "", "write CPU profiles, traces and a heap profile of the nodes to `DIR`")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "bound (`D`) of the whole run (default 30m; quick 5m)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if processes && inProcess {
			return usageErrorf("--processes and --in-process exclude each other")
		}
		cfg.InProcess = inProcess
		if !inProcess {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bench: the credfed binary, to run the nodes: %w", err)
			}
			cfg.Executable = exe
		}
		if err := cfg.WithDefaults().Validate(); err != nil {
			var ce *bench.ConfigError
			if errors.As(err, &ce) {
				return usageErrorf("--%s: %s", ce.Field, ce.Message)
			}
			return err
		}
		cfg.Progress = cmd.ErrOrStderr()
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		res, err := bench.Run(ctx, cfg)
		if err != nil {
			if ctx.Err() != nil && cmd.Context().Err() == nil {
				return fmt.Errorf("interrupted; everything the bench started is stopped: %w", err)
			}
			return err
		}
		if asJSON {
			data, err := res.JSON()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(append(data, '\n'))
			return err
		}
		return writeBench(cmd.OutOrStdout(), cfg.WithDefaults(), res)
	}
	cmd.AddCommand(benchFrontCommand())
	return cmd
}

// writeBench prints a bench result: what ran where, the table, and what
// was synced on each side.
func writeBench(w io.Writer, cfg bench.Config, res *bench.Result) error {
	kind := "full run"
	if cfg.Quick {
		kind = "quick run"
	}
	rounds := "rounds"
	if cfg.Rounds == 1 {
		rounds = "round"
	}
	fmt.Fprintf(w, "credfed bench (%s, %d %s, %.0f s)\n", kind, cfg.Rounds, rounds, res.Seconds)
	fmt.Fprintf(w, "machine:  %s\n", res.Machine.Summary)
	fmt.Fprintf(w, "credfed:  %s\n", res.Topology.Summary)
	if res.Topology.Baseline != "" {
		fmt.Fprintf(w, "baseline: %s\n", res.Topology.Baseline)
	}
	fmt.Fprintf(w, "data:     %s\n\n", res.Topology.Data)
	header, rows, notes := res.Rows()
	if err := writeTable(w, "", header, rows); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	if res.Topology.Baseline != "" {
		fmt.Fprintln(w, "\nratio: above 1 means credfed does better (rates: credfed ÷ baseline; latency, CPU, memory: baseline ÷ credfed); values are medians of the rounds")
		fmt.Fprintln(w, "names: c1 and c64 are 1 and 64 clients at once; a figure without _direct compares with PostgreSQL behind an HTTPS + mutual-TLS + JSON")
		fmt.Fprintln(w, "  front (as a central copy would serve its users), one with _direct with PostgreSQL over SQL (the credfed side is the same measurement);")
		fmt.Fprintln(w, "  intake_insert is intake against batched INSERT instead of COPY; rss_district_peak compares one district node with the whole PostgreSQL cluster")
	} else {
		fmt.Fprintln(w, "\nno baseline: credfed's figures alone (values are medians of the rounds); c1 and c64 are 1 and 64 clients at once")
	}
	if spread := res.Spread(); spread != "" {
		fmt.Fprintln(w, spread)
	}
	// What was synced, once per kind of figure.
	var order []string
	names := map[string][]string{}
	for _, f := range res.Figures {
		if f.Durability == "" {
			continue
		}
		if names[f.Durability] == nil {
			order = append(order, f.Durability)
		}
		names[f.Durability] = append(names[f.Durability], f.Name)
	}
	fmt.Fprintln(w, "durability:")
	for _, d := range order {
		fmt.Fprintf(w, "  %s: %s\n", strings.Join(names[d], ", "), d)
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(w, "skipped: %s\n", s)
	}
	return nil
}

// benchFrontCommand is the central copy's HTTPS front, which the bench
// runs as a process of its own so that its CPU and memory are counted
// apart from the load generator's.
func benchFrontCommand() *cobra.Command {
	var (
		fc       bench.FrontConfig
		addrFile string
	)
	cmd := &cobra.Command{
		Use:    "front --dsn DSN --ca CA --cert CERT --key KEY --federation NAME [--listen ADDR] [--pool N] [--addr-file FILE]",
		Short:  "Serve the central copy's HTTPS lookup front (used by credfed bench).",
		Hidden: true,
		Args:   noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&fc.Listen, "listen", "127.0.0.1:0", "TCP `ADDR` to listen on")
	fs.StringVar(&fc.CA, "ca", "", "the federation CA certificate `FILE`")
	fs.StringVar(&fc.Cert, "cert", "", "the front's certificate `FILE`")
	fs.StringVar(&fc.Key, "key", "", "its key `FILE`")
	fs.StringVar(&fc.Federation, "federation", "", "the federation's `NAME`")
	fs.StringVar(&fc.DSN, "dsn", "", "PostgreSQL connection string (`DSN`)")
	fs.IntVar(&fc.Pool, "pool", 64, "connections (`N`) of the pool")
	fs.StringVar(&addrFile, "addr-file", "", "write the address listened on to `FILE` once serving")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		for flag, v := range map[string]string{"dsn": fc.DSN, "ca": fc.CA, "cert": fc.Cert, "key": fc.Key, "federation": fc.Federation} {
			if strings.TrimSpace(v) == "" {
				return usageErrorf("bench front needs --%s", flag)
			}
		}
		if fc.Pool < 1 || fc.Pool > 1000 {
			return usageErrorf("--pool must be 1 to 1000")
		}
		tuneNodeGC() // the central copy's API tier at the nodes' GC target, as credfed's is
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		f, err := bench.StartFront(sctx, fc)
		cancel()
		if err != nil {
			return err
		}
		if addrFile != "" {
			if err := atomicfile.Write(addrFile, []byte(f.Addr()), 0o600); err != nil {
				return err
			}
		}
		fmt.Fprintf(cmd.OutOrStdout(), "credfed bench front serving at %s\n", f.Addr())
		<-ctx.Done()
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return f.Close(cctx)
	}
	return cmd
}
