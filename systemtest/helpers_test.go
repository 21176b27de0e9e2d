package systemtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
)

// fastRaft suits a federation on one machine under test.
var fastRaft = node.RaftTiming{Heartbeat: 300 * time.Millisecond, Election: 300 * time.Millisecond,
	LeaderLease: 150 * time.Millisecond, Commit: 5 * time.Millisecond}

// testLogger discards the nodes' logs unless CREDFED_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("CREDFED_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startFed runs a local federation for a test and stops it at the end.
// opts may carry a clock (Now); the logger and Raft timing are the tests'.
func startFed(t *testing.T, spec localfed.Spec, opts node.Options) *localfed.Federation {
	t.Helper()
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	opts.RaftTiming = fastRaft
	f, err := localfed.Start(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		f.Stop(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return f
}

// clientOf calls node name's API with a client certificate (the zero
// ClientFiles: none).
func clientOf(t *testing.T, f *localfed.Federation, name string, files localfed.ClientFiles) *api.Client {
	t.Helper()
	n := f.Node(name)
	if n == nil {
		t.Fatalf("node %s is not running", name)
	}
	c, err := api.NewClient(api.Config{Address: "https://" + n.APIAddr(), CACert: f.Layout.CA,
		ClientCert: files.Cert, ClientKey: files.Key, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdle)
	return c
}

// department is the client of a district's department.
func department(t *testing.T, f *localfed.Federation, district string) *api.Client {
	return clientOf(t, f, district, f.Layout.Departments[district])
}

// coordinator is the province's coordinator on the province node.
func coordinator(t *testing.T, f *localfed.Federation) *api.Client {
	return clientOf(t, f, f.Province(), f.Layout.Coordinator)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// recentDecision is the decision date of the records tests submit: a few
// days ago, so that they are displayed whenever the tests run (every item
// is displayed for months at least); fixed dates would age out of their
// display periods and break the tests a year later.
var recentDecision = credit.TodayAt(time.Now()) - 4

func record(id, subject, item, summary string) api.RecordInput {
	return api.RecordInput{ID: id, Subject: subject, CatalogItem: item,
		DecisionNumber: fmt.Sprintf("浙市监罚〔%d〕%s", recentDecision.Time().Year(), id),
		OccurredOn:     (recentDecision - 8).String(), DecidedOn: recentDecision.String(), Summary: summary}
}

// submit submits records as the district's department and fails the test
// unless every one is accepted.
func submit(t *testing.T, f *localfed.Federation, district string, recs ...api.RecordInput) {
	t.Helper()
	ans, status, err := department(t, f, district).SubmitRecords(ctxT(t, 30*time.Second), recs)
	if err != nil {
		t.Fatalf("submit at %s: %v", district, err)
	}
	for _, r := range ans.Results {
		if r.Status != api.StatusAccepted {
			t.Fatalf("submit at %s: %d %+v", district, status, ans.Results)
		}
	}
}

// pseudonymOf is the subject's pseudonym under the federation's key.
func pseudonymOf(t *testing.T, f *localfed.Federation, subject string) credit.Pseudonym {
	t.Helper()
	key, err := credit.LoadPseudonymKey(filepath.Join(f.Dir, "pseudonym.key"))
	if err != nil {
		t.Fatal(err)
	}
	return key.Pseudonym(subject)
}

// entriesAt reads the subject's index entries from node name's replica.
func entriesAt(t *testing.T, f *localfed.Federation, name, subject string) ([]consensus.IndexEntry, error) {
	t.Helper()
	n := f.Node(name)
	if n == nil {
		return nil, errors.New("not running")
	}
	entries, _, err := n.Replica().State().Lookup(pseudonymOf(t, f, subject))
	return entries, err
}

// waitIndexed waits until the province's index lists the subject at n
// districts.
func waitIndexed(t *testing.T, f *localfed.Federation, subject string, n int) {
	t.Helper()
	if err := f.WaitIndexed(ctxT(t, 30*time.Second), subject, n); err != nil {
		t.Fatal(err)
	}
}

// regionOf is a node's region path.
func regionOf(f *localfed.Federation, name string) string {
	n, _ := f.Layout.Node(name)
	return n.Region
}

// lookupUntil repeats a lookup while the coordinator answers 503 (no
// leader known for a strong read; an election on a loaded machine) and
// returns the last answer.
func lookupUntil(t *testing.T, c *api.Client, req api.LookupRequest) (*api.LookupAnswer, error) {
	t.Helper()
	var ans *api.LookupAnswer
	var err error
	wait.Until(t, 20*time.Second, "a lookup that is not 503", func() bool {
		ans, err = c.Lookup(ctxT(t, 30*time.Second), req)
		return api.Code(err) != api.CodeUnavailable
	})
	return ans, err
}

// testClock is a clock a test moves; every node of a local federation
// shares it through node.Options.Now (record dates only: certificates and
// Raft keep real time).
type testClock struct{ ns atomic.Int64 }

func (c *testClock) Now() time.Time       { return time.Unix(0, c.ns.Load()) }
func (c *testClock) set(t time.Time)      { c.ns.Store(t.UnixNano()) }
func (c *testClock) setDay(d credit.Date) { c.set(d.Time().Add(12 * time.Hour)) }

// clockAt returns a test clock at noon of day d.
func clockAt(d credit.Date) *testClock {
	c := &testClock{}
	c.setDay(d)
	return c
}

// issueUser issues a user certificate of the federation's CA.
func issueUser(t *testing.T, f *localfed.Federation, role, region, institution string) localfed.ClientFiles {
	t.Helper()
	ca, err := certs.LoadCA(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := certs.ParseRole(role)
	if err != nil {
		t.Fatal(err)
	}
	id := certs.Identity{Federation: ca.Federation, Role: r, Region: region, Institution: institution}
	is, err := ca.Issue(certs.IssueRequest{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	cp, kp, err := is.WriteFiles(filepath.Join(t.TempDir(), institution))
	if err != nil {
		t.Fatal(err)
	}
	return localfed.ClientFiles{Identity: id.String(), Cert: cp, Key: kp}
}

// tlsConfig is a client TLS configuration with a client certificate, for
// requests the api client does not make (methods the API refuses).
func tlsConfig(t *testing.T, f *localfed.Federation, files localfed.ClientFiles) *tls.Config {
	t.Helper()
	pool, err := certs.LoadPool(f.Layout.CA)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := certs.LoadKeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13}
}

// allMetrics is every node's /metrics page, one after another.
func allMetrics(t *testing.T, f *localfed.Federation) string {
	t.Helper()
	var metrics strings.Builder
	for _, ln := range f.Layout.Nodes {
		resp, err := httpGet("http://" + f.Node(ln.Name).MetricsAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics.WriteString(resp)
	}
	return metrics.String()
}

// leaks names every needle (what → text) found in the log, the metrics or
// an error message, with the line it stands in, the needle masked.
func leaks(log, metrics string, messages []string, needles map[string]string) []string {
	var broken []string
	lineOf := func(s string, i int) string {
		line := s[strings.LastIndex(s[:i], "\n")+1:]
		return line[:max(strings.Index(line, "\n"), 0)]
	}
	for what, n := range needles {
		if i := strings.Index(log, n); i >= 0 {
			broken = append(broken, fmt.Sprintf("%s in the log: %.300s", what, strings.ReplaceAll(lineOf(log, i), n, "<"+what+">")))
		}
		if i := strings.Index(metrics, n); i >= 0 {
			broken = append(broken, fmt.Sprintf("%s in the metrics: %.300s", what, strings.ReplaceAll(lineOf(metrics, i), n, "<"+what+">")))
		}
		for _, m := range messages {
			if strings.Contains(m, n) {
				broken = append(broken, fmt.Sprintf("%s in an error message: %.200s", what, strings.ReplaceAll(m, n, "<"+what+">")))
			}
		}
	}
	return broken
}

// skipUnderRace skips one of the slowest tests in the race pass, which
// must fit CI's time with the rest: what it does is sequential (its
// logic, not its concurrency, is under test), it runs in the first pass,
// and the race pass exercises the same code paths in the others.
func skipUnderRace(t *testing.T, what string) {
	t.Helper()
	if raceDetector {
		t.Skipf("skipped under the race detector to keep CI within its time: it %s, sequentially, and runs in the first pass", what)
	}
}
