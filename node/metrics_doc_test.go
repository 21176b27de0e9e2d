package node_test

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"credfed/certs"
	"credfed/localfed"
	"credfed/node"
)

// metricsDoc is the metrics reference, from this package's directory.
const metricsDoc = "../docs/metrics.md"

// TestMetricsReferenceMatchesTheRegistries: docs/metrics.md documents
// every metric a node registers and names none that nothing registers.
// It starts a city (a coordinator: pseudonym custody, querier quotas) and
// a district (the publisher, the sweep) of a fresh local federation and
// asks their registries: Gather gives every family that has a series, and
// a probe registration tells, for any other name, whether the registry
// holds it (a vector with no series yet is not gathered). The names to
// probe are those the doc names and the metric names in the module's
// sources. Where a family is gathered, the doc's type and label names
// must be its own.
func TestMetricsReferenceMatchesTheRegistries(t *testing.T) {
	text, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := parseMetricsDoc(t, string(text))

	dir := filepath.Join(t.TempDir(), "fed")
	l, err := localfed.Create(localfed.Spec{Dir: dir, Districts: 1})
	if err != nil {
		t.Fatal(err)
	}
	var regs []*prometheus.Registry
	for _, role := range []certs.Role{certs.City, certs.District} {
		i := slices.IndexFunc(l.Nodes, func(n localfed.Node) bool { return n.Role == role })
		if i < 0 {
			t.Fatalf("the local federation has no %s node", role)
		}
		cfg, err := node.LoadConfig(l.Nodes[i].ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		n, err := node.Start(cfg, node.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("start the %s node: %v", role, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := n.Shutdown(ctx); err != nil {
				t.Errorf("shut the %s node down: %v", role, err)
			}
		})
		regs = append(regs, n.Registry())
	}

	candidates := sourceMetricNames(t, "..")
	if len(candidates) < 50 {
		t.Fatalf("the sources name %d metrics: the scan is broken", len(candidates))
	}
	for name := range doc.rows {
		candidates[name] = true
	}
	for name := range doc.mentioned {
		candidates[name] = true
	}

	registered := map[string]bool{}
	gathered := map[string]*dto.MetricFamily{}
	probed := 0
	for _, reg := range regs {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			registered[mf.GetName()] = true
			gathered[mf.GetName()] = mf
		}
	}
	for name := range candidates {
		if registered[name] {
			continue
		}
		for _, reg := range regs {
			if holds(t, reg, name) {
				registered[name] = true
				probed++
				break
			}
		}
	}
	// The probe must find what Gather cannot: vectors without series (at
	// start, a district has answered no lookup, a console no login).
	if probed == 0 {
		t.Error("the probe found no registered metric that Gather missed: it finds nothing")
	}
	if !registered["credfed_node_info"] || !registered["credfed_lookups_answered_total"] {
		t.Fatalf("credfed_node_info or credfed_lookups_answered_total not found registered: the test's own checks are broken")
	}

	var missing, unknown []string
	for name := range registered {
		if !strings.HasPrefix(name, "credfed_") {
			t.Errorf("%s is registered: every metric name starts with credfed_", name)
			continue
		}
		if _, ok := doc.rows[name]; ok {
			continue
		}
		if !slices.ContainsFunc(doc.patterns, func(p string) bool { return strings.HasPrefix(name, p) }) {
			missing = append(missing, name)
		}
	}
	for name := range doc.mentioned {
		if registered[name] {
			continue
		}
		if base, ok := histogramBase(name); ok && registered[base] {
			continue
		}
		unknown = append(unknown, name)
	}
	for _, p := range doc.patterns {
		found := false
		for name := range registered {
			found = found || strings.HasPrefix(name, p)
		}
		if !found {
			unknown = append(unknown, p+"*")
		}
	}
	sort.Strings(missing)
	sort.Strings(unknown)
	for _, name := range missing {
		t.Errorf("%s is registered but has no row in docs/metrics.md", name)
	}
	for _, name := range unknown {
		t.Errorf("docs/metrics.md names %s, which no node registers", name)
	}

	for name, row := range doc.rows {
		mf := gathered[name]
		if mf == nil {
			continue
		}
		if want := strings.ToLower(mf.GetType().String()); row.typ != want {
			t.Errorf("docs/metrics.md says %s is a %s; it is a %s", name, row.typ, want)
		}
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		var got []string
		for l := range labels {
			got = append(got, l)
		}
		sort.Strings(got)
		if !slices.Equal(got, row.labels) {
			t.Errorf("docs/metrics.md gives %s the labels %v; its series have %v", name, row.labels, got)
		}
	}
	t.Logf("%d metric names registered (%d found by probing only), %d rows and %d families in docs/metrics.md",
		len(registered), probed, len(doc.rows), len(doc.patterns))
}

// metricRow is one row of the reference's tables.
type metricRow struct {
	typ    string
	labels []string // sorted
}

type metricsReference struct {
	rows      map[string]metricRow
	patterns  []string        // "credfed_go_" for a row `credfed_go_*`
	mentioned map[string]bool // every credfed_ name on the page, rows included
}

var (
	// rowRE is a table row: | `name` | type | labels | meaning |.
	rowRE     = regexp.MustCompile("^\\| `(credfed_[a-z0-9_]+\\*?)` \\| ([^|]+) \\| ([^|]+) \\|")
	nameRE    = regexp.MustCompile(`credfed_[a-z0-9_]+\*?`)
	labelRE   = regexp.MustCompile("^`([a-zA-Z_][a-zA-Z0-9_]*)`")
	docTypes  = []string{"counter", "gauge", "histogram", "summary"}
	sourceRE  = regexp.MustCompile(`"(credfed_[a-z0-9_]+)"`)
	histogram = []string{"_bucket", "_sum", "_count"}
)

// parseMetricsDoc reads the rows and the names of the reference. A
// row's labels cell is "—" or parts separated by ";", each starting with
// a label name in backquotes.
func parseMetricsDoc(t *testing.T, text string) metricsReference {
	t.Helper()
	ref := metricsReference{rows: map[string]metricRow{}, mentioned: map[string]bool{}}
	for _, line := range strings.Split(text, "\n") {
		m := rowRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name := m[1]
		if p, ok := strings.CutSuffix(name, "*"); ok {
			ref.patterns = append(ref.patterns, p)
			continue
		}
		if _, dup := ref.rows[name]; dup {
			t.Errorf("docs/metrics.md has two rows for %s", name)
		}
		row := metricRow{typ: strings.TrimSpace(m[2]), labels: []string{}}
		if !slices.Contains(docTypes, row.typ) {
			t.Errorf("docs/metrics.md: %s has the type %q, not one of %v", name, row.typ, docTypes)
		}
		if cell := strings.TrimSpace(m[3]); cell != "—" {
			for _, part := range strings.Split(cell, ";") {
				if lm := labelRE.FindStringSubmatch(strings.TrimSpace(part)); lm != nil {
					row.labels = append(row.labels, lm[1])
				}
			}
			if len(row.labels) == 0 {
				t.Errorf("docs/metrics.md: the labels of %s (%q) name no label; write — for none", name, cell)
			}
		}
		sort.Strings(row.labels)
		ref.rows[name] = row
	}
	for _, name := range nameRE.FindAllString(text, -1) {
		if !strings.HasSuffix(name, "*") {
			ref.mentioned[name] = true
		}
	}
	if len(ref.rows) == 0 {
		t.Fatal("docs/metrics.md has no metric rows")
	}
	return ref
}

// sourceMetricNames returns the "credfed_…" string literals of the
// module's non-test Go files under root.
func sourceMetricNames(t *testing.T, root string) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range sourceRE.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// holds reports whether reg has a metric named name: a gauge of that name
// with a help text no metric has registers only if no metric of that name
// is registered (the registry refuses a second help text for a name).
func holds(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "metrics reference probe (metrics_doc_test.go)"})
	if err := reg.Register(probe); err != nil {
		return true
	}
	if !reg.Unregister(probe) {
		t.Fatalf("the probe for %s could not be unregistered", name)
	}
	return false
}

// histogramBase returns the family name of a histogram's or summary's
// series name (name_bucket, name_sum, name_count).
func histogramBase(name string) (string, bool) {
	for _, s := range histogram {
		if base, ok := strings.CutSuffix(name, s); ok {
			return base, true
		}
	}
	return "", false
}
