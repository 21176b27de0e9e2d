package systemtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/internal/wait"
	"credfed/localfed"
	"credfed/node"
)

// addNodeConfig writes the configuration of a node that is not yet part
// of the federation (no certificate: it joins with a token) and adds it to
// pf's layout.
func addNodeConfig(t *testing.T, pf *procFed, name, region string, role certs.Role) localfed.Node {
	t.Helper()
	ports, err := localfed.PickPorts()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(filepath.Dir(filepath.Dir(pf.layout.Nodes[0].ConfigPath)), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{Federation: pf.layout.Federation, Role: role, Region: region, Name: name, DataDir: "data", TestOnly: true,
		Listen: node.ListenConfig{Exchange: ports[0], API: ports[1], Metrics: ports[2]},
		TLS:    node.TLSConfig{CA: "ca.pem", Cert: name + ".pem", Key: name + "-key.pem"}}
	for _, n := range pf.layout.Nodes {
		if n.Role.IsCoordinatorNode() {
			cfg.Coordinators = append(cfg.Coordinators, n.Exchange)
		}
	}
	if role.IsCoordinatorNode() {
		cfg.PseudonymKeyFile = "pseudonym.key"
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if data, err := os.ReadFile(filepath.Join(dir, "node.log")); err == nil && t.Failed() {
			t.Logf("%s's log (its end):\n%s", name, data[max(0, len(data)-4000):])
		}
	})
	ln := localfed.Node{Name: name, Role: role, Region: region, Exchange: ports[0], API: ports[1], Metrics: ports[2], ConfigPath: path}
	pf.layout.Nodes = append(pf.layout.Nodes, ln)
	return ln
}

// TestRegionAddedJoinsItself adds a fifth district to a federation of
// node processes with region add, starts it with --join, submits records
// there and finds them from a city; the token does not work twice, an
// expired or forged token is refused with a message that says which, and
// region remove takes the district out again (its node refused, its
// entries no longer read).
func TestRegionAddedJoinsItself(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the federation as processes; not in -short")
	}
	pf := startProcFed(t, 4)
	l := pf.layout
	province := l.Nodes[0].Name
	op := pf.client(province, l.Operator)
	const region = "zhejiang/quzhou/kaihua"

	added, err := op.AddRegion(ctxT(t, 30*time.Second), api.RegionAddRequest{Path: region, Role: "district", Name: "开化县", TokenLife: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := api.ParseJoinToken(added.Token)
	if err != nil || tok.Region != region {
		t.Fatalf("token %q: %v", added.Token, err)
	}
	// Before it joins, the region is registered without an address.
	fed, err := op.Federation(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if r := registered(fed, region); r == nil || r.Exchange != "" {
		t.Fatalf("the added region in the registry: %+v", r)
	}

	ln := addNodeConfig(t, pf, "kaihua", region, certs.District)
	// A token for another region is refused before anything is sent.
	other := addNodeConfig(t, pf, "kaihua2", "zhejiang/quzhou/kaihua2", certs.District)
	cfg2, err := node.LoadConfig(other.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.Join(ctxT(t, 10*time.Second), cfg2, added.Token); err == nil || !strings.Contains(err.Error(), "the token is for") {
		t.Fatalf("a token of another region: %v", err)
	}
	// A forged token (the right region, another secret) is refused by the
	// coordinator, and leaves the live one usable.
	forged := tok
	forged.Secret = make([]byte, 32)
	cfg, err := node.LoadConfig(ln.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.Join(ctxT(t, 10*time.Second), cfg, forged.String()); err == nil || !strings.Contains(err.Error(), "not the live join token") {
		t.Fatalf("a forged token: %v", err)
	} else {
		t.Logf("forged token: %v", err)
	}
	if _, err := os.Stat(cfg.TLS.Cert); err == nil {
		t.Fatal("a refused join wrote a certificate")
	}

	pf.startArgs("kaihua", "--join", added.Token)
	pf.waitReady("kaihua")
	fed, err = op.Federation(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if r := registered(fed, region); r == nil || r.Exchange != ln.Exchange {
		t.Fatalf("the joined region in the registry: %+v", r)
	}
	// The certificate was signed by the province's intermediate and the CA
	// written from the token's coordinator.
	leaf, err := certs.LoadCertFile(cfg.TLS.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Issuer.CommonName != "credfed "+l.Federation+" intermediate "+localfed.IntermediateName {
		t.Fatalf("joined with a certificate issued by %q", leaf.Issuer.CommonName)
	}

	// The token does not work twice: used, the message says so.
	_, err = node.Join(ctxT(t, 10*time.Second), cfg2withRegion(t, cfg2, pf, region), added.Token)
	if err == nil || !strings.Contains(err.Error(), "used already") {
		t.Fatalf("a token used twice: %v", err)
	}
	t.Logf("token used twice: %v", err)

	// Records submitted at the new district are found from a city.
	ca, err := certs.LoadCA(filepath.Dir(l.CA))
	if err != nil {
		t.Fatal(err)
	}
	dept, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: l.Federation, Role: certs.Department, Region: region, Institution: localfed.Department}})
	if err != nil {
		t.Fatal(err)
	}
	cp, kp, err := dept.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	subject := credit.SyntheticPerson(7171, credit.NewDate(1982, 2, 2))
	ans, _, err := pf.client("kaihua", localfed.ClientFiles{Cert: cp, Key: kp}).SubmitRecords(ctxT(t, 30*time.Second),
		[]api.RecordInput{record("KH-1", subject, "FOOD-DRUG-PENALTY", "joined")})
	if err != nil || len(ans.Results) != 1 || ans.Results[0].Status != api.StatusAccepted {
		t.Fatalf("submit at the new district: %+v %v", ans, err)
	}
	city := "quzhou"
	coord := pf.client(city, l.Coordinators[city])
	wait.Until(t, 60*time.Second, "the city to find the new district's record", func() bool {
		a, err := coord.Lookup(ctxT(t, 10*time.Second), api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: "join"})
		return err == nil && len(a.Districts) == 1 && a.Districts[0].District == region && len(a.Districts[0].Records) == 1
	})

	// An expired token says it expired.
	late, err := op.AddRegion(ctxT(t, 30*time.Second), api.RegionAddRequest{Path: "zhejiang/quzhou/late", Role: "district", TokenLife: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	lateLn := addNodeConfig(t, pf, "late", "zhejiang/quzhou/late", certs.District)
	lateCfg, err := node.LoadConfig(lateLn.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "the late token to expire", func() bool { return time.Now().After(late.Expires.Add(time.Second)) })
	if _, err := node.Join(ctxT(t, 10*time.Second), lateCfg, late.Token); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired token: %v", err)
	} else {
		t.Logf("expired token: %v", err)
	}

	// Removing the district: its node's certificate is refused, its
	// entries are no longer read; repeating it says it is gone.
	rm, err := op.RemoveRegion(ctxT(t, 30*time.Second), region)
	if err != nil || rm.Change != "removed" {
		t.Fatalf("remove: %+v %v", rm, err)
	}
	wait.Until(t, 30*time.Second, "the removed district's entries to be withdrawn", func() bool {
		a, err := coord.Lookup(ctxT(t, 10*time.Second), api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: "removed"})
		return err == nil && len(a.Districts) == 0
	})
	again, err := op.RemoveRegion(ctxT(t, 30*time.Second), region)
	if err != nil || again.Detail != "removed already" {
		t.Fatalf("remove again: %+v %v", again, err)
	}
	if _, err := op.RemoveRegion(ctxT(t, 30*time.Second), "zhejiang/quzhou/never"); api.Code(err) != api.CodeNotFound {
		t.Fatalf("removing a region never added: %v", err)
	}
	// A refused removal changes nothing: the city has regions below it.
	before, err := op.Revocations(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.RemoveRegion(ctxT(t, 30*time.Second), "zhejiang/quzhou"); api.Code(err) != api.CodeConflict {
		t.Fatalf("removing a city with districts: %v", err)
	}
	if l2, err := op.Revocations(ctxT(t, 10*time.Second)); err != nil || l2.Version != before.Version {
		t.Fatalf("a refused removal changed the revocations: %+v %v", l2, err)
	}
	list, err := op.Revocations(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	suspended := false
	for _, s := range list.Suspended {
		suspended = suspended || s.Identity == (certs.Identity{Federation: l.Federation, Role: certs.District, Region: region}).String()
	}
	if !suspended {
		t.Fatalf("the removed district's node identity is not suspended: %+v", list.Suspended)
	}
	// The removed node is told, once, in its log.
	wait.Until(t, 30*time.Second, "the removed node to say it is refused", func() bool {
		data, _ := os.ReadFile(filepath.Join(filepath.Dir(ln.ConfigPath), "node.log"))
		return strings.Count(string(data), "the federation refuses this node's certificate") >= 1
	})
	// The region added again at the same path: a new node joins with a new
	// token and works, while the removed node's certificate stays refused.
	pf.kill("kaihua")
	readded, err := op.AddRegion(ctxT(t, 30*time.Second), api.RegionAddRequest{Path: region, Role: "district", Name: "开化县"})
	if err != nil {
		t.Fatal(err)
	}
	addNodeConfig(t, pf, "kaihua-b", region, certs.District)
	pf.startArgs("kaihua-b", "--join", readded.Token)
	pf.waitReady("kaihua-b")
	second := credit.SyntheticPerson(7272, credit.NewDate(1983, 3, 3))
	if _, _, err := pf.client("kaihua-b", localfed.ClientFiles{Cert: cp, Key: kp}).SubmitRecords(ctxT(t, 30*time.Second),
		[]api.RecordInput{record("KH-2", second, "FOOD-DRUG-PENALTY", "joined again")}); err != nil {
		t.Fatalf("submit at the district added again: %v", err)
	}
	wait.Until(t, 60*time.Second, "the city to find the new node's record", func() bool {
		a, err := coord.Lookup(ctxT(t, 10*time.Second), api.LookupRequest{Subject: second, Purpose: "ADMIN-LICENSING", User: "u", Reference: "again"})
		return err == nil && len(a.Districts) == 1 && len(a.Districts[0].Records) == 1
	})
	if a, err := coord.Lookup(ctxT(t, 10*time.Second), api.LookupRequest{Subject: subject, Purpose: "ADMIN-LICENSING", User: "u", Reference: "old"}); err != nil || len(a.Districts) != 0 {
		t.Fatalf("the removed node's entry came back with the region added again: %+v %v", a, err)
	}
	oldNode, err := api.NewClient(api.Config{Address: "https://" + l.Nodes[0].API, CACert: l.CA, ClientCert: cfg.TLS.Cert, ClientKey: cfg.TLS.Key, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer oldNode.CloseIdle()
	if _, err := oldNode.Federation(ctxT(t, 10*time.Second)); err == nil {
		t.Fatal("the removed node's certificate is accepted after its region was added again")
	}
	// The removed node's own API still runs, but the federation refuses
	// it: a lookup it forwards finds no coordinator that answers.
	out, err := exec.Command(pf.bin, "federation", "status", "--addr", "https://"+l.Nodes[0].API, "--ca", l.CA,
		"--cert", l.Operator.Cert, "--key", l.Operator.Key).CombinedOutput()
	if err != nil {
		t.Fatalf("federation status: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "kaihua") || !strings.Contains(string(out), "kecheng") {
		t.Fatalf("federation status does not list the district added again, or the others:\n%s", out)
	}
}

// cfg2withRegion is cfg with the region of another node, to present a
// token as if from a second machine configured for the same region.
func cfg2withRegion(t *testing.T, cfg node.Config, pf *procFed, region string) node.Config {
	t.Helper()
	cfg.Region = region
	cfg.TLS.Cert = filepath.Join(t.TempDir(), "second.pem")
	cfg.TLS.Key = filepath.Join(filepath.Dir(cfg.TLS.Cert), "second-key.pem")
	return cfg
}

func registered(f *api.Federation, path string) *api.Region {
	for i := range f.Regions {
		if f.Regions[i].Path == path {
			return &f.Regions[i]
		}
	}
	return nil
}
