package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"credfed/node"
)

func nodeCommand() *cobra.Command {
	var path, join, joinFile string
	var over struct{ dataDir, exchange, api, metrics, level string }
	cmd := &cobra.Command{
		Use:   "node --config FILE [flags]",
		Short: "Run one node of a federation (the daemon).",
		Long: `Runs one node: a district (keeps its records, answers lookups) or a
coordinator (province or city: votes in Raft, pseudonymizes, looks subjects
up across districts). The YAML configuration is documented field by field
in docs/config.md; the flags below and CREDFED_* environment variables
override it (flags win). Stops gracefully on SIGINT or SIGTERM.`,
		Example: `  credfed node --config /etc/credfed/node.yaml
  credfed node --config /etc/credfed/node.yaml --join-file kaihua.token
  credfed node --config credfed-demo/nodes/kecheng/node.yaml --log-level debug`,
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&path, "config", "", "YAML configuration `FILE` (required)")
	fs.StringVar(&over.dataDir, "data-dir", "", "override data_dir with `DIR`")
	fs.StringVar(&over.exchange, "listen-exchange", "", "override listen.exchange (UDP `HOST:PORT`)")
	fs.StringVar(&over.api, "listen-api", "", "override listen.api (TCP `HOST:PORT`)")
	fs.StringVar(&over.metrics, "listen-metrics", "", "override listen.metrics (TCP `HOST:PORT`)")
	fs.StringVar(&over.level, "log-level", "", "override log.level with `LEVEL`: debug, info, warn or error")
	fs.StringVar(&join, "join", "", "join the federation with this one-time `TOKEN` (credfed region add) before starting, if the node has no certificate yet")
	fs.StringVar(&joinFile, "join-file", "", "read the join token from `FILE`")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	_ = cmd.MarkFlagDirname("data-dir")
	_ = cmd.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]cobra.Completion{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if path == "" {
			return usageErrorf("node needs --config FILE (see docs/config.md)")
		}
		cfg, err := node.LoadConfig(path)
		if err != nil {
			return err
		}
		if err := cfg.ApplyEnv(os.Getenv); err != nil {
			return err
		}
		for dst, v := range map[*string]string{&cfg.DataDir: over.dataDir, &cfg.Listen.Exchange: over.exchange,
			&cfg.Listen.API: over.api, &cfg.Listen.Metrics: over.metrics, &cfg.Log.Level: over.level} {
			if v != "" {
				*dst = v
			}
		}
		tuneNodeGC()
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if join, err = readToken(join, joinFile); err != nil {
			return err
		}
		if join != "" {
			jctx, cancel := context.WithTimeout(ctx, time.Minute)
			joined, err := node.Join(jctx, cfg, join)
			cancel()
			if err != nil {
				return err
			}
			if joined {
				fmt.Fprintf(cmd.OutOrStdout(), "credfed node %s joined the federation: certificate written to %s\n", cfg.Region, cfg.TLS.Cert)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "credfed node %s holds its certificate already; --join ignored\n", cfg.Region)
			}
		}
		n, err := node.Start(cfg, node.Options{})
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "credfed node %s (%s) serving: api https://%s, exchange %s, metrics http://%s\n",
			cfg.Region, cfg.Role, n.APIAddr(), n.ExchangeAddr(), n.MetricsAddr())
		<-ctx.Done()
		fmt.Fprintf(cmd.OutOrStdout(), "credfed node %s stopping (within %s) …\n", cfg.Region, time.Duration(n.Config().ShutdownTimeout))
		sctx, cancel := context.WithTimeout(context.Background(), time.Duration(n.Config().ShutdownTimeout))
		defer cancel()
		if err := n.Shutdown(sctx); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "credfed node %s stopped\n", cfg.Region)
		return nil
	}
	return cmd
}
