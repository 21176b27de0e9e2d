// Package localfed is the federation on one machine that `credfed demo`
// runs and the end-to-end tests use: a province, two cities and up to
// twelve districts on 127.0.0.1 (or, for docker-compose, reached by
// service name), with a CA, every certificate and key, one configuration
// per node, synthetic data, and demo.json saying how to reach it all.
//
// Its directory holds everything needed to start it again the same way:
//
//	DIR/ca.pem, ca-key.pem            the federation CA
//	DIR/pseudonym.key                 the coordinators' pseudonym key
//	DIR/clients/…                     user certificates (coordinators, operator, departments, portals)
//	DIR/nodes/<name>/node.yaml        each node's configuration (usable with `credfed node --config`)
//	DIR/nodes/<name>/<name>.pem, …    its certificate, key and encryption key
//	DIR/nodes/<name>/data             its data directory (records, state, Raft log)
//	DIR/local.json                    the layout: nodes in start order, client files
//	DIR/demo.json                     how to reach the federation (API.md), written when it is up
package localfed

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"credfed/certs"
	"credfed/credit"
	"credfed/internal/atomicfile"
	"credfed/node"
	"credfed/storage"
)

// Spec describes a local federation to create.
type Spec struct {
	// Dir is the federation's directory; an existing one is resumed.
	Dir string
	// Federation is the federation's name (default "demo").
	Federation string
	// Districts is the number of district nodes (default 4), spread over
	// the two cities.
	Districts int
	// Encrypt turns encryption at rest on (a key file per node).
	Encrypt bool
	// Compose writes configurations for docker-compose.yml instead of
	// loopback: every node listens on 0.0.0.0 with fixed ports and is
	// reached by its service name (the node's name).
	Compose bool
	// RealIdentifiers runs the nodes in test mode, which accepts real
	// identifiers besides those of the test province 99; by default the
	// federation is test-only (test_only: real identifiers are refused,
	// so no real person's record can end up in it).
	RealIdentifiers bool
	// NodeValidity is the lifetime of the nodes' certificates (default
	// DefaultNodeValidity); the nodes renew them at two thirds of it, signed
	// by the intermediate CA the province holds.
	NodeValidity time.Duration
	// NodeCertAge issues the nodes' first certificates as if that long ago
	// (tests: a certificate due for renewal at once).
	NodeCertAge time.Duration
}

// DefaultNodeValidity is a local federation's node certificate lifetime.
const DefaultNodeValidity = 7 * 24 * time.Hour

// IntermediateName is the local federation's online intermediate CA, held
// by the province: DIR/intermediate-online.pem and -key.pem.
const IntermediateName = "online"

// MaxDistricts bounds a local federation.
const MaxDistricts = 12

// Fixed ports of a node in docker-compose.
const (
	ComposeExchangePort = "7443"
	ComposeAPIPort      = "8443"
	ComposeMetricsPort  = "9100"
)

// Node is one node of a local federation.
type Node struct {
	Name       string     `json:"name"`
	Role       certs.Role `json:"role"`
	Region     string     `json:"region"`
	Title      string     `json:"title"`
	ConfigPath string     `json:"config"`
	Exchange   string     `json:"exchange"`
	API        string     `json:"api"`
	Metrics    string     `json:"metrics"`
}

// ClientFiles names a user certificate and its key.
type ClientFiles struct {
	Identity string `json:"identity"`
	Cert     string `json:"cert"`
	Key      string `json:"key"`
}

// Layout is DIR/local.json.
type Layout struct {
	Federation string `json:"federation"`
	CA         string `json:"ca"`
	Nodes      []Node `json:"nodes"`
	// Coordinator is the province's coordinator.
	Coordinator ClientFiles `json:"coordinator"`
	// Coordinators has one coordinator per coordinator node (province and
	// cities), by node name.
	Coordinators map[string]ClientFiles `json:"coordinators"`
	Operator     ClientFiles            `json:"operator"`
	Departments  map[string]ClientFiles `json:"departments"` // by district node name
	Portals      map[string]ClientFiles `json:"portals"`     // by district node name
}

// Node returns a node of the layout by name.
func (l Layout) Node(name string) (Node, bool) {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// compose reports whether the layout is docker-compose's (nodes reached by
// service name) rather than loopback's.
func (l Layout) compose() bool {
	return len(l.Nodes) > 0 && !strings.HasPrefix(l.Nodes[0].API, "127.0.0.1:")
}

// Districts returns the names of the district nodes, in start order.
func (l Layout) Districts() []string {
	var out []string
	for _, n := range l.Nodes {
		if n.Role == certs.District {
			out = append(out, n.Name)
		}
	}
	return out
}

// The regions of a local federation.
var (
	province  = regionName{"zhejiang", "浙江省"}
	cities    = []regionName{{"quzhou", "衢州市"}, {"hangzhou", "杭州市"}}
	districts = [][]regionName{
		{{"kecheng", "柯城区"}, {"qujiang", "衢江区"}, {"longyou", "龙游县"}, {"jiangshan", "江山市"}, {"changshan", "常山县"}, {"kaihua", "开化县"}},
		{{"xihu", "西湖区"}, {"shangcheng", "上城区"}, {"gongshu", "拱墅区"}, {"binjiang", "滨江区"}, {"xiaoshan", "萧山区"}, {"yuhang", "余杭区"}},
	}
)

type regionName struct{ short, title string }

// Institutions whose certificates the clients use.
const (
	// Department is the department of each district's department client.
	Department = "market-supervision"
	// CoordinatorInstitution is each coordinator client's institution.
	CoordinatorInstitution = "credit-office"
)

// Create creates a local federation's directory (CA, keys, certificates,
// configurations with fixed loopback ports) unless it exists, and returns
// its layout. An existing directory is resumed as it is, completed with
// client certificates an earlier version did not issue.
func Create(spec Spec) (Layout, error) {
	if spec.Federation == "" {
		spec.Federation = "demo"
	}
	if spec.Districts <= 0 {
		spec.Districts = 4
	}
	if spec.Districts > MaxDistricts {
		return Layout{}, fmt.Errorf("localfed: a local federation has at most %d districts, not %d", MaxDistricts, spec.Districts)
	}
	dir, err := filepath.Abs(spec.Dir)
	if err != nil {
		return Layout{}, err
	}
	if l, err := ReadLayout(dir); err == nil {
		if l.compose() != spec.Compose {
			kind := map[bool]string{true: "docker-compose", false: "loopback (127.0.0.1)"}
			return Layout{}, fmt.Errorf("localfed: %s holds a federation for %s, not %s; use another directory", dir, kind[l.compose()], kind[spec.Compose])
		}
		if err := refreshNodeCertificates(dir, l); err != nil {
			return Layout{}, err
		}
		return completeClients(dir, l)
	} else if !errors.Is(err, os.ErrNotExist) {
		return Layout{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Layout{}, err
	}
	ca, err := certs.LoadCA(dir)
	if err != nil {
		if ca, err = certs.NewCA(spec.Federation, 0); err != nil {
			return Layout{}, err
		}
		if err := ca.WriteFiles(dir); err != nil {
			return Layout{}, err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "intermediate-"+IntermediateName+"-key.pem")); err != nil {
		in, err := ca.NewIntermediate(IntermediateName, 0)
		if err != nil {
			return Layout{}, err
		}
		if _, _, err := in.WriteSignerFiles(dir, "intermediate-"+IntermediateName); err != nil {
			return Layout{}, err
		}
	}
	keyPath := filepath.Join(dir, "pseudonym.key")
	if _, err := os.Stat(keyPath); err != nil {
		key, err := credit.NewPseudonymKey()
		if err != nil {
			return Layout{}, err
		}
		if err := credit.WritePseudonymKey(keyPath, key); err != nil {
			return Layout{}, err
		}
	}
	l := Layout{Federation: ca.Federation, CA: filepath.Join(dir, certs.CACertFile)}
	// Regions: the province, two cities, districts alternating between them.
	type plan struct {
		name, region, title string
		role                certs.Role
	}
	plans := []plan{{province.short, province.short, province.title, certs.Province}}
	for _, c := range cities {
		plans = append(plans, plan{c.short, province.short + "/" + c.short, c.title, certs.City})
	}
	for i := 0; i < spec.Districts; i++ {
		city := i % len(cities)
		d := districts[city][i/len(cities)]
		plans = append(plans, plan{d.short, province.short + "/" + cities[city].short + "/" + d.short, d.title, certs.District})
	}
	ports := newPortPicker()
	defer ports.release()
	for _, p := range plans {
		addrs := [3]string{p.name + ":" + ComposeExchangePort, p.name + ":" + ComposeAPIPort, p.name + ":" + ComposeMetricsPort}
		if !spec.Compose {
			var err error
			if addrs, err = ports.pick(); err != nil {
				return Layout{}, err
			}
		}
		l.Nodes = append(l.Nodes, Node{Name: p.name, Role: p.role, Region: p.region, Title: p.title,
			ConfigPath: filepath.Join(dir, "nodes", p.name, "node.yaml"),
			Exchange:   addrs[0], API: addrs[1], Metrics: addrs[2]})
	}
	for _, ln := range l.Nodes {
		if err := writeNodeFiles(ca, dir, ln, l.Nodes, spec); err != nil {
			return Layout{}, err
		}
	}
	if spec.Compose {
		if err := writePrometheusConfig(dir, l); err != nil {
			return Layout{}, err
		}
	}
	return completeClients(dir, l)
}

// completeClients issues every client certificate the layout lacks and
// writes local.json if anything was added.
func completeClients(dir string, l Layout) (Layout, error) {
	var ca *certs.CA
	changed := false
	issue := func(dst *ClientFiles, role certs.Role, region, inst, sub string) error {
		if dst.Cert != "" {
			return nil
		}
		if ca == nil {
			var err error
			if ca, err = certs.LoadCA(dir); err != nil {
				return err
			}
		}
		id := certs.Identity{Federation: ca.Federation, Role: role, Region: region, Institution: inst}
		is, err := ca.Issue(certs.IssueRequest{Identity: id})
		if err != nil {
			return err
		}
		cp, kp, err := is.WriteFiles(filepath.Join(dir, "clients", sub))
		*dst = ClientFiles{Identity: id.String(), Cert: cp, Key: kp}
		changed = true
		return err
	}
	for _, m := range []*map[string]ClientFiles{&l.Coordinators, &l.Departments, &l.Portals} {
		if *m == nil {
			*m = map[string]ClientFiles{}
		}
	}
	if err := issue(&l.Coordinator, certs.Coordinator, province.short, CoordinatorInstitution, "coordinator"); err != nil {
		return Layout{}, err
	}
	if err := issue(&l.Operator, certs.Operator, province.short, "operations", "operator"); err != nil {
		return Layout{}, err
	}
	for _, ln := range l.Nodes {
		var err error
		switch {
		case ln.Role == certs.Province:
			if _, ok := l.Coordinators[ln.Name]; !ok {
				l.Coordinators[ln.Name], changed = l.Coordinator, true
			}
		case ln.Role.IsCoordinatorNode():
			f := l.Coordinators[ln.Name]
			err = issue(&f, certs.Coordinator, ln.Region, CoordinatorInstitution, filepath.Join("coordinators", ln.Name))
			l.Coordinators[ln.Name] = f
		case ln.Role == certs.District:
			dep, por := l.Departments[ln.Name], l.Portals[ln.Name]
			if err = issue(&dep, certs.Department, ln.Region, Department, filepath.Join("department", ln.Name)); err == nil {
				err = issue(&por, certs.Portal, ln.Region, "portal", filepath.Join("portal", ln.Name))
			}
			l.Departments[ln.Name], l.Portals[ln.Name] = dep, por
		}
		if err != nil {
			return Layout{}, err
		}
	}
	if !changed {
		return l, nil
	}
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return Layout{}, err
	}
	return l, atomicfile.Write(filepath.Join(dir, "local.json"), append(data, '\n'), 0o600)
}

// refreshNodeCertificates re-issues, from the federation's root CA in dir,
// the node certificates of a resumed local federation that have expired
// or end within a sixth of their life: a node renews its own certificate
// only while it runs, and a demo left alone for a week would not start.
// The new certificate has the identity, host names and lifetime of the old.
func refreshNodeCertificates(dir string, l Layout) error {
	var ca *certs.CA
	for _, ln := range l.Nodes {
		ndir := filepath.Dir(ln.ConfigPath)
		cp, kp := filepath.Join(ndir, ln.Name+".pem"), filepath.Join(ndir, ln.Name+"-key.pem")
		pair, err := certs.LoadKeyPair(cp, kp)
		if err != nil {
			return err
		}
		leaf := pair.Leaf
		life := leaf.NotAfter.Sub(leaf.NotBefore) - certs.ClockSkew
		if time.Until(leaf.NotAfter) > life/6 {
			continue
		}
		if ca == nil {
			if ca, err = certs.LoadCA(dir); err != nil {
				return err
			}
		}
		var hosts []string
		for _, ip := range leaf.IPAddresses {
			hosts = append(hosts, ip.String())
		}
		hosts = append(hosts, leaf.DNSNames...)
		is, err := ca.Issue(certs.IssueRequest{Identity: certs.Identity{Federation: ca.Federation, Role: ln.Role, Region: ln.Region},
			Hosts: hosts, Validity: max(life, time.Minute)})
		if err != nil {
			return err
		}
		keyPEM, err := is.KeyPEM()
		if err != nil {
			return err
		}
		if err := certs.ReplaceKeyPair(cp, kp, is.CertPEM(), keyPEM); err != nil {
			return err
		}
	}
	return nil
}

// writePrometheusConfig writes DIR/prometheus.yml, scraping every node's
// metrics listener (docker-compose's prometheus service reads it).
func writePrometheusConfig(dir string, l Layout) error {
	var b strings.Builder
	b.WriteString("# Written by `credfed demo --compose --init-only`: scrape every node of the federation.\n")
	b.WriteString("global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: credfed\n    static_configs:\n")
	for _, n := range l.Nodes {
		fmt.Fprintf(&b, "      - targets: [%q]\n        labels: {node: %q, role: %q}\n", n.Metrics, n.Name, n.Role)
	}
	return atomicfile.Write(filepath.Join(dir, "prometheus.yml"), []byte(b.String()), 0o644)
}

// ReadLayout reads DIR/local.json.
func ReadLayout(dir string) (Layout, error) {
	var l Layout
	data, err := os.ReadFile(filepath.Join(dir, "local.json"))
	if err != nil {
		return l, err
	}
	if err := json.Unmarshal(data, &l); err != nil {
		return l, fmt.Errorf("localfed: %s: %w", filepath.Join(dir, "local.json"), err)
	}
	return l, nil
}

// writeNodeFiles issues a node's certificate and writes its configuration.
func writeNodeFiles(ca *certs.CA, dir string, ln Node, all []Node, spec Spec) error {
	ndir := filepath.Dir(ln.ConfigPath)
	id := certs.Identity{Federation: ca.Federation, Role: ln.Role, Region: ln.Region}
	hosts := []string{"localhost", "127.0.0.1"}
	if spec.Compose {
		hosts = append(hosts, ln.Name)
	}
	validity := spec.NodeValidity
	if validity <= 0 {
		validity = DefaultNodeValidity
	}
	req := certs.IssueRequest{Identity: id, Hosts: hosts, Validity: validity}
	if spec.NodeCertAge > 0 {
		req.NotBefore = time.Now().Add(-certs.ClockSkew - spec.NodeCertAge)
	}
	is, err := ca.Issue(req)
	if err != nil {
		return err
	}
	if _, _, err := is.WriteFiles(ndir); err != nil {
		return err
	}
	cfg := node.Config{
		Federation: ca.Federation, Role: ln.Role, Region: ln.Region, Name: ln.Title,
		DataDir: "data", TestOnly: !spec.RealIdentifiers, TestMode: spec.RealIdentifiers,
		Listen: node.ListenConfig{Exchange: ln.Exchange, API: ln.API, Metrics: ln.Metrics},
		TLS:    node.TLSConfig{CA: filepath.Join("..", "..", certs.CACertFile), Cert: ln.Name + ".pem", Key: ln.Name + "-key.pem"},
	}
	if spec.Compose {
		cfg.Listen = node.ListenConfig{Exchange: "0.0.0.0:" + ComposeExchangePort, API: "0.0.0.0:" + ComposeAPIPort,
			Metrics: "0.0.0.0:" + ComposeMetricsPort}
		cfg.Advertise = node.AdvertiseConfig{Exchange: ln.Exchange, API: ln.API}
	}
	if ln.Role.IsCoordinatorNode() {
		cfg.PseudonymKeyFile = filepath.Join("..", "..", "pseudonym.key")
	}
	for _, o := range all {
		if o.Role.IsCoordinatorNode() {
			cfg.Coordinators = append(cfg.Coordinators, o.Exchange)
		}
	}
	if spec.Encrypt {
		if err := writeEncryptionKey(filepath.Join(ndir, "encryption.key")); err != nil {
			return err
		}
		cfg.EncryptionKeyFile = "encryption.key"
	}
	if ln.Role == certs.Province {
		cfg.TLS.SignerCert = filepath.Join("..", "..", "intermediate-"+IntermediateName+".pem")
		cfg.TLS.SignerKey = filepath.Join("..", "..", "intermediate-"+IntermediateName+"-key.pem")
		cfg.Raft.Bootstrap = true
		for _, o := range all {
			cfg.Raft.BootstrapRegions = append(cfg.Raft.BootstrapRegions, node.RegionConfig{
				Path: o.Region, Name: o.Title, Role: o.Role, Exchange: o.Exchange, API: "https://" + o.API})
		}
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	header := "# credfed node configuration, written by the local federation (see docs/config.md).\n"
	return atomicfile.Write(ln.ConfigPath, append([]byte(header), data...), 0o600)
}

func writeEncryptionKey(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	_, err := storage.WriteEncryptionKeyFile(path)
	return err
}
