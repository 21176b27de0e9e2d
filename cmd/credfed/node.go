package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"credfed/node"
)

func nodeCommand() *command {
	return &command{name: "node", summary: "Run one node of a federation (the daemon).", run: runNode}
}

func runNode(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("node", "credfed node --config FILE [flags]",
		`Runs one node: a district (keeps its records, answers lookups) or a
coordinator (province or city: votes in Raft, pseudonymizes, looks subjects
up across districts). The YAML configuration is documented field by field
in docs/config.md; the flags below and CREDFED_* environment variables
override it (flags win). Stops gracefully on SIGINT or SIGTERM.`, stderr)
	path := fs.String("config", "", "YAML configuration file (required)")
	dataDir := fs.String("data-dir", "", "override data_dir")
	exch := fs.String("listen-exchange", "", "override listen.exchange (UDP host:port)")
	api := fs.String("listen-api", "", "override listen.api (TCP host:port)")
	metrics := fs.String("listen-metrics", "", "override listen.metrics (TCP host:port)")
	level := fs.String("log-level", "", "override log.level: debug, info, warn or error")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *path == "" {
		return usageErrorf("node needs --config FILE (see docs/config.md)")
	}
	cfg, err := node.LoadConfig(*path)
	if err != nil {
		return err
	}
	if err := cfg.ApplyEnv(os.Getenv); err != nil {
		return err
	}
	for dst, v := range map[*string]string{&cfg.DataDir: *dataDir, &cfg.Listen.Exchange: *exch, &cfg.Listen.API: *api,
		&cfg.Listen.Metrics: *metrics, &cfg.Log.Level: *level} {
		if v != "" {
			*dst = v
		}
	}
	n, err := node.Start(cfg, node.Options{})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "credfed node %s (%s) serving: api https://%s, exchange %s, metrics http://%s\n",
		cfg.Region, cfg.Role, n.APIAddr(), n.ExchangeAddr(), n.MetricsAddr())
	waitForSignal()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n.Config().ShutdownTimeout))
	defer cancel()
	return n.Shutdown(ctx)
}

// waitForSignal blocks until SIGINT or SIGTERM.
func waitForSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	<-ch
	signal.Stop(ch)
}
