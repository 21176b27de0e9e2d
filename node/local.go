package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"credfed/certs"
	"credfed/credit"
	"credfed/storage"
)

// A local federation runs every node of a small federation in one process
// on 127.0.0.1: the demo, and the end-to-end tests. Its directory holds
// everything needed to start it again the same way:
//
//	DIR/ca.pem, ca-key.pem            the federation CA
//	DIR/pseudonym.key                 the coordinators' pseudonym key
//	DIR/clients/…                     user certificates (coordinator, operator, departments, portals)
//	DIR/nodes/<name>/node.yaml        each node's configuration (also usable with `credfed node --config`)
//	DIR/nodes/<name>/…                its certificate, key, encryption key and data directory
//	DIR/local.json                    the layout: nodes in start order, client files

// LocalSpec describes a local federation to create.
type LocalSpec struct {
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
}

// Fixed ports of a node in docker-compose.
const (
	ComposeExchangePort = "7443"
	ComposeAPIPort      = "8443"
	ComposeMetricsPort  = "9100"
)

// LocalNode is one node of a local federation.
type LocalNode struct {
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

// LocalLayout is DIR/local.json.
type LocalLayout struct {
	Federation  string                 `json:"federation"`
	CA          string                 `json:"ca"`
	Nodes       []LocalNode            `json:"nodes"`
	Coordinator ClientFiles            `json:"coordinator"`
	Operator    ClientFiles            `json:"operator"`
	Departments map[string]ClientFiles `json:"departments"` // by district node name
	Portals     map[string]ClientFiles `json:"portals"`     // by district node name
}

// LocalFederation is a running local federation.
type LocalFederation struct {
	Dir    string
	Layout LocalLayout
	opts   Options

	mu    sync.Mutex
	nodes map[string]*Node
}

// demoCities and demoDistricts name the regions of a local federation.
var (
	demoProvince  = regionName{"zhejiang", "浙江省"}
	demoCities    = []regionName{{"quzhou", "衢州市"}, {"hangzhou", "杭州市"}}
	demoDistricts = [][]regionName{
		{{"kecheng", "柯城区"}, {"qujiang", "衢江区"}, {"longyou", "龙游县"}, {"jiangshan", "江山市"}, {"changshan", "常山县"}, {"kaihua", "开化县"}},
		{{"xihu", "西湖区"}, {"shangcheng", "上城区"}, {"gongshu", "拱墅区"}, {"binjiang", "滨江区"}, {"xiaoshan", "萧山区"}, {"yuhang", "余杭区"}},
	}
)

type regionName struct{ short, title string }

// DemoDepartment is the department whose certificate each district's
// demo client uses.
const DemoDepartment = "market-supervision"

// CreateLocal creates a local federation's directory (CA, keys,
// certificates, configurations with fixed loopback ports) unless it
// exists, and returns its layout.
func CreateLocal(spec LocalSpec) (LocalLayout, error) {
	if spec.Federation == "" {
		spec.Federation = "demo"
	}
	if spec.Districts <= 0 {
		spec.Districts = 4
	}
	if spec.Districts > 12 {
		return LocalLayout{}, fmt.Errorf("node: a local federation has at most 12 districts, not %d", spec.Districts)
	}
	if l, err := readLayout(spec.Dir); err == nil {
		return l, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return LocalLayout{}, err
	}
	dir, err := filepath.Abs(spec.Dir)
	if err != nil {
		return LocalLayout{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return LocalLayout{}, err
	}
	ca, err := certs.LoadCA(dir)
	if err != nil {
		if ca, err = certs.NewCA(spec.Federation, 0); err != nil {
			return LocalLayout{}, err
		}
		if err := ca.WriteFiles(dir); err != nil {
			return LocalLayout{}, err
		}
	}
	keyPath := filepath.Join(dir, "pseudonym.key")
	if _, err := os.Stat(keyPath); err != nil {
		key, err := credit.NewPseudonymKey()
		if err != nil {
			return LocalLayout{}, err
		}
		if err := credit.WritePseudonymKey(keyPath, key); err != nil {
			return LocalLayout{}, err
		}
	}
	l := LocalLayout{Federation: ca.Federation, CA: filepath.Join(dir, certs.CACertFile),
		Departments: map[string]ClientFiles{}, Portals: map[string]ClientFiles{}}
	// Regions: the province, two cities, districts alternating between them.
	type plan struct {
		name, region, title string
		role                certs.Role
	}
	plans := []plan{{demoProvince.short, demoProvince.short, demoProvince.title, certs.Province}}
	for _, c := range demoCities {
		plans = append(plans, plan{c.short, demoProvince.short + "/" + c.short, c.title, certs.City})
	}
	for i := 0; i < spec.Districts; i++ {
		city := i % len(demoCities)
		d := demoDistricts[city][i/len(demoCities)]
		plans = append(plans, plan{d.short, demoProvince.short + "/" + demoCities[city].short + "/" + d.short, d.title, certs.District})
	}
	ports := newPortPicker()
	defer ports.release()
	for _, p := range plans {
		addrs := [3]string{p.name + ":" + ComposeExchangePort, p.name + ":" + ComposeAPIPort, p.name + ":" + ComposeMetricsPort}
		if !spec.Compose {
			var err error
			if addrs, err = ports.pick(); err != nil {
				return LocalLayout{}, err
			}
		}
		l.Nodes = append(l.Nodes, LocalNode{Name: p.name, Role: p.role, Region: p.region, Title: p.title,
			ConfigPath: filepath.Join(dir, "nodes", p.name, "node.yaml"),
			Exchange:   addrs[0], API: addrs[1], Metrics: addrs[2]})
	}
	for _, ln := range l.Nodes {
		if err := writeNodeFiles(ca, dir, ln, l.Nodes, spec); err != nil {
			return LocalLayout{}, err
		}
	}
	issue := func(role certs.Role, region, inst, sub string) (ClientFiles, error) {
		id := certs.Identity{Federation: ca.Federation, Role: role, Region: region, Institution: inst}
		is, err := ca.Issue(certs.IssueRequest{Identity: id})
		if err != nil {
			return ClientFiles{}, err
		}
		cp, kp, err := is.WriteFiles(filepath.Join(dir, "clients", sub))
		return ClientFiles{Identity: id.String(), Cert: cp, Key: kp}, err
	}
	if l.Coordinator, err = issue(certs.Coordinator, demoProvince.short, "credit-office", "coordinator"); err != nil {
		return LocalLayout{}, err
	}
	if l.Operator, err = issue(certs.Operator, demoProvince.short, "operations", "operator"); err != nil {
		return LocalLayout{}, err
	}
	for _, ln := range l.Nodes {
		if ln.Role != certs.District {
			continue
		}
		if l.Departments[ln.Name], err = issue(certs.Department, ln.Region, DemoDepartment, filepath.Join("department", ln.Name)); err != nil {
			return LocalLayout{}, err
		}
		if l.Portals[ln.Name], err = issue(certs.Portal, ln.Region, "portal", filepath.Join("portal", ln.Name)); err != nil {
			return LocalLayout{}, err
		}
	}
	if spec.Compose {
		if err := writePrometheusConfig(dir, l); err != nil {
			return LocalLayout{}, err
		}
	}
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return LocalLayout{}, err
	}
	if err := WriteFileAtomic(filepath.Join(dir, "local.json"), data, 0o600); err != nil {
		return LocalLayout{}, err
	}
	return l, nil
}

// writePrometheusConfig writes DIR/prometheus.yml, scraping every node's
// metrics listener (docker-compose's prometheus service reads it).
func writePrometheusConfig(dir string, l LocalLayout) error {
	var b strings.Builder
	b.WriteString("# Written by `credfed demo --compose --init-only`: scrape every node of the federation.\n")
	b.WriteString("global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: credfed\n    static_configs:\n")
	for _, n := range l.Nodes {
		fmt.Fprintf(&b, "      - targets: [%q]\n        labels: {node: %q, role: %q}\n", n.Metrics, n.Name, n.Role)
	}
	return WriteFileAtomic(filepath.Join(dir, "prometheus.yml"), []byte(b.String()), 0o644)
}

func readLayout(dir string) (LocalLayout, error) {
	var l LocalLayout
	data, err := os.ReadFile(filepath.Join(dir, "local.json"))
	if err != nil {
		return l, err
	}
	if err := json.Unmarshal(data, &l); err != nil {
		return l, fmt.Errorf("node: %s: %w", filepath.Join(dir, "local.json"), err)
	}
	return l, nil
}

// portPicker picks free loopback ports and holds them until release, so
// that no two picks of one federation get the same port (a port closed
// at once may be handed out again by the next bind).
//
// Ports come from below Linux's ephemeral range (32768–60999 by default),
// where binds to port 0 — every other test and client on the machine —
// never land: between release and the node's own bind (a moment in one
// process, longer when `demo --init-only` writes configurations that other
// processes start later, or when a demo resumes), nobody else takes them by
// accident. If that range is crowded, port 0 is the fallback.
type portPicker struct {
	held []io.Closer
	rng  *rand.Rand
}

const (
	pickLow, pickHigh = 20000, 32768
	pickTries         = 64
)

func newPortPicker() *portPicker {
	return &portPicker{rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))}
}

// pick returns a free UDP port (exchange) and two free TCP ports (API,
// metrics) on 127.0.0.1.
func (p *portPicker) pick() ([3]string, error) {
	var out [3]string
	for i := range out {
		c, addr, err := p.bind(i == 0)
		if err != nil {
			return out, err
		}
		p.held = append(p.held, c)
		out[i] = addr
	}
	return out, nil
}

// bind holds a free port, UDP or TCP.
func (p *portPicker) bind(udp bool) (io.Closer, string, error) {
	try := func(port int) (io.Closer, string, error) {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if udp {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return nil, "", err
			}
			return pc, pc.LocalAddr().String(), nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, "", err
		}
		return ln, ln.Addr().String(), nil
	}
	for range pickTries {
		if c, addr, err := try(pickLow + p.rng.IntN(pickHigh-pickLow)); err == nil {
			return c, addr, nil
		}
	}
	return try(0)
}

// release frees the ports for the nodes to bind.
func (p *portPicker) release() {
	for _, c := range p.held {
		c.Close()
	}
	p.held = nil
}

// writeNodeFiles issues a node's certificate and writes its configuration.
func writeNodeFiles(ca *certs.CA, dir string, ln LocalNode, all []LocalNode, spec LocalSpec) error {
	ndir := filepath.Dir(ln.ConfigPath)
	id := certs.Identity{Federation: ca.Federation, Role: ln.Role, Region: ln.Region}
	hosts := []string{"localhost", "127.0.0.1"}
	if spec.Compose {
		hosts = append(hosts, ln.Name)
	}
	is, err := ca.Issue(certs.IssueRequest{Identity: id, Hosts: hosts})
	if err != nil {
		return err
	}
	if _, _, err := is.WriteFiles(ndir); err != nil {
		return err
	}
	cfg := Config{
		Federation: ca.Federation, Role: ln.Role, Region: ln.Region, Name: ln.Title,
		DataDir: "data", TestMode: true,
		Listen: ListenConfig{Exchange: ln.Exchange, API: ln.API, Metrics: ln.Metrics},
		TLS:    TLSConfig{CA: filepath.Join("..", "..", certs.CACertFile), Cert: ln.Name + ".pem", Key: ln.Name + "-key.pem"},
	}
	if spec.Compose {
		cfg.Listen = ListenConfig{Exchange: "0.0.0.0:" + ComposeExchangePort, API: "0.0.0.0:" + ComposeAPIPort,
			Metrics: "0.0.0.0:" + ComposeMetricsPort}
		cfg.Advertise = AdvertiseConfig{Exchange: ln.Exchange, API: ln.API}
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
		if _, err := writeEncryptionKey(filepath.Join(ndir, "encryption.key")); err != nil {
			return err
		}
		cfg.EncryptionKeyFile = "encryption.key"
	}
	if ln.Role == certs.Province {
		cfg.Raft.Bootstrap = true
		for _, o := range all {
			cfg.Raft.BootstrapRegions = append(cfg.Raft.BootstrapRegions, RegionConfig{
				Path: o.Region, Name: o.Title, Role: o.Role, Exchange: o.Exchange, API: "https://" + o.API})
		}
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	header := "# credfed node configuration, written by the local federation (see docs/config.md).\n"
	return WriteFileAtomic(ln.ConfigPath, append([]byte(header), data...), 0o600)
}

// StartLocal creates (or resumes) a local federation and starts every
// node, province first.
func StartLocal(spec LocalSpec, opts Options) (*LocalFederation, error) {
	l, err := CreateLocal(spec)
	if err != nil {
		return nil, err
	}
	dir, _ := filepath.Abs(spec.Dir)
	f := &LocalFederation{Dir: dir, Layout: l, opts: opts, nodes: map[string]*Node{}}
	for _, ln := range l.Nodes {
		if err := f.StartNode(ln.Name); err != nil {
			f.Stop(context.Background())
			return nil, err
		}
	}
	return f, nil
}

// StartNode starts (or restarts) one node from its configuration.
func (f *LocalFederation) StartNode(name string) error {
	ln, ok := f.node(name)
	if !ok {
		return fmt.Errorf("node: no node %q in the local federation", name)
	}
	cfg, err := LoadConfig(ln.ConfigPath)
	if err != nil {
		return err
	}
	opts := f.opts
	var n *Node
	// A port just freed by a stopped node (or a previous run) can take a
	// moment to be reusable.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err = Start(cfg, opts)
		if err == nil || !isAddrInUse(err) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	f.mu.Lock()
	f.nodes[name] = n
	f.mu.Unlock()
	return nil
}

func isAddrInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// StopNode shuts one node down gracefully.
func (f *LocalFederation) StopNode(ctx context.Context, name string) error {
	f.mu.Lock()
	n := f.nodes[name]
	delete(f.nodes, name)
	f.mu.Unlock()
	if n == nil {
		return nil
	}
	return n.Shutdown(ctx)
}

// Node returns a running node by name.
func (f *LocalFederation) Node(name string) *Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[name]
}

func (f *LocalFederation) node(name string) (LocalNode, bool) {
	for _, ln := range f.Layout.Nodes {
		if ln.Name == name {
			return ln, true
		}
	}
	return LocalNode{}, false
}

// Districts returns the names of the district nodes.
func (f *LocalFederation) Districts() []string {
	var out []string
	for _, ln := range f.Layout.Nodes {
		if ln.Role == certs.District {
			out = append(out, ln.Name)
		}
	}
	return out
}

// WaitReady waits until every running node is ready and has every region
// of the federation in its Raft configuration's view.
func (f *LocalFederation) WaitReady(ctx context.Context) error {
	for {
		ready := true
		f.mu.Lock()
		for _, n := range f.nodes {
			if ok, _ := n.Ready(); !ok {
				ready = false
			}
		}
		f.mu.Unlock()
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node: local federation not ready: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop shuts every node down, districts first.
func (f *LocalFederation) Stop(ctx context.Context) error {
	var errs []error
	for i := len(f.Layout.Nodes) - 1; i >= 0; i-- {
		if err := f.StopNode(ctx, f.Layout.Nodes[i].Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// WriteFileAtomic writes data to path through a synced temporary file and
// a rename, creating the directory: a reader sees the old file or the new
// one, never half of it.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func writeEncryptionKey(path string) ([]byte, error) {
	if _, err := os.Stat(path); err == nil {
		return nil, nil
	}
	return storage.WriteEncryptionKeyFile(path)
}
