package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// build is what the binary knows of how it was built.
type build struct {
	// Version is the main module's version: a tag such as v1.2.0, a
	// pseudo-version, or "(devel)" for a build without version control
	// information.
	Version string
	// Revision and Time are the commit and its time (RFC 3339), when the
	// build recorded version control information; Modified says the
	// working tree had changes.
	Revision, Time string
	Modified       bool
	// Go is the toolchain that built the binary.
	Go string
}

// currentBuild reads the binary's build information.
func currentBuild() build {
	bi, ok := debug.ReadBuildInfo()
	return buildOf(bi, ok)
}

func buildOf(bi *debug.BuildInfo, ok bool) build {
	b := build{Version: "(devel)", Go: runtime.Version()}
	if !ok || bi == nil {
		return b
	}
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		b.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// Short is the version on one line: "v1.2.0 (revision 0123456789ab,
// 2026-11-30T08:00:00Z, modified)", without the parentheses when the build
// recorded no version control information.
func (b build) Short() string {
	var extra []string
	if b.Revision != "" {
		rev := b.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		extra = append(extra, "revision "+rev)
	}
	if b.Time != "" {
		extra = append(extra, b.Time)
	}
	if b.Modified {
		extra = append(extra, "modified")
	}
	if len(extra) == 0 {
		return b.Version
	}
	return b.Version + " (" + strings.Join(extra, ", ") + ")"
}

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of credfed and how it was built.",
		Long: `Prints the module version of this binary, the version control revision and
commit time it was built from (when the build recorded them), and the Go
toolchain and platform.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := currentBuild()
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "credfed %s\n", b.Version)
			if b.Revision != "" {
				mod := ""
				if b.Modified {
					mod = " (with uncommitted changes)"
				}
				fmt.Fprintf(w, "revision %s%s\n", b.Revision, mod)
			}
			if b.Time != "" {
				fmt.Fprintf(w, "commit time %s\n", b.Time)
			}
			_, err := fmt.Fprintf(w, "built with %s for %s/%s\n", b.Go, runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
