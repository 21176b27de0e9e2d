package localfed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/internal/atomicfile"
)

// DemoFile is DIR/demo.json (API.md): how to reach a local federation's
// nodes and with which certificates.
type DemoFile struct {
	Federation string `json:"federation"`
	CA         string `json:"ca"`
	Console    string `json:"console,omitempty"`
	// ConsoleAccounts are the console's demo accounts, one per role, each
	// with its password and a one-time login link; Console is the first
	// one's link.
	ConsoleAccounts []ConsoleAccount `json:"console_accounts,omitempty"`
	Nodes           []DemoNode       `json:"nodes"`
	Clients         Clients          `json:"clients"`
	// Showcase is a synthetic subject with records in every district,
	// once the demo data is loaded.
	Showcase *Showcase `json:"showcase,omitempty"`
}

// DemoNode is one node in demo.json.
type DemoNode struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Region   string `json:"region"`
	API      string `json:"api"`
	Exchange string `json:"exchange"`
	Metrics  string `json:"metrics"`
}

// Cert names a client certificate and its key.
type Cert struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// Clients are the demo's client certificates.
type Clients struct {
	// Coordinator is the province's coordinator.
	Coordinator Cert `json:"coordinator"`
	Operator    Cert `json:"operator"`
	// Department and Portal are by district node name, Coordinators by
	// coordinator node name (province and cities): each looks subjects
	// up through its own node.
	Department   map[string]Cert `json:"department"`
	Coordinators map[string]Cert `json:"coordinators"`
	Portal       map[string]Cert `json:"portal"`
}

// Showcase is a synthetic subject with records in several districts, for
// the lines the demo prints.
type Showcase struct {
	Subject   string   `json:"subject"`
	Districts []string `json:"districts"`
}

// Demo returns demo.json's content for the layout.
func (l Layout) Demo(showcase *Showcase) DemoFile {
	cert := func(c ClientFiles) Cert { return Cert{Cert: c.Cert, Key: c.Key} }
	d := DemoFile{Federation: l.Federation, CA: l.CA, Showcase: showcase,
		Clients: Clients{Coordinator: cert(l.Coordinator), Operator: cert(l.Operator),
			Department: map[string]Cert{}, Coordinators: map[string]Cert{}, Portal: map[string]Cert{}}}
	for _, n := range l.Nodes {
		d.Nodes = append(d.Nodes, DemoNode{Name: n.Name, Role: string(n.Role), Region: n.Region,
			API: "https://" + n.API, Exchange: n.Exchange, Metrics: "http://" + n.Metrics})
		switch {
		case n.Role == certs.District:
			d.Clients.Department[n.Name] = cert(l.Departments[n.Name])
			d.Clients.Portal[n.Name] = cert(l.Portals[n.Name])
		case n.Role.IsCoordinatorNode():
			d.Clients.Coordinators[n.Name] = cert(l.Coordinators[n.Name])
		}
	}
	return d
}

// DemoFileName is demo.json's name in the federation's directory.
const DemoFileName = "demo.json"

// WriteDemoFile writes DIR/demo.json atomically.
func WriteDemoFile(dir string, d DemoFile) error {
	data, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, DemoFileName), append(data, '\n'), 0o644)
}

// ReadDemoFile reads DIR/demo.json.
func ReadDemoFile(dir string) (DemoFile, error) {
	var d DemoFile
	data, err := os.ReadFile(filepath.Join(dir, DemoFileName))
	if err != nil {
		return d, err
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return d, fmt.Errorf("localfed: %s: %w", filepath.Join(dir, DemoFileName), err)
	}
	return d, nil
}

// Client returns an API client of node name with one of the demo's
// certificates: as is coordinator, operator, department or portal, and
// name may be empty for the usual node of that role (the province for
// coordinators and operators, the first district otherwise).
func (d DemoFile) Client(name, as string, timeout time.Duration) (*api.Client, error) {
	var n *DemoNode
	for i := range d.Nodes {
		dn := &d.Nodes[i]
		switch {
		case name != "" && dn.Name == name,
			name == "" && (as == "coordinator" || as == "operator") && dn.Role == string(certs.Province),
			name == "" && (as == "department" || as == "portal") && dn.Role == string(certs.District):
			if n == nil {
				n = dn
			}
		}
	}
	if n == nil {
		return nil, fmt.Errorf("localfed: the demo has no node %q", name)
	}
	var c Cert
	switch as {
	case "coordinator":
		c = d.Clients.Coordinators[n.Name]
		if c.Cert == "" && n.Role == string(certs.Province) {
			c = d.Clients.Coordinator
		}
	case "operator":
		c = d.Clients.Operator
	case "department":
		c = d.Clients.Department[n.Name]
	case "portal":
		c = d.Clients.Portal[n.Name]
	default:
		return nil, fmt.Errorf("localfed: no client %q (coordinator, operator, department or portal)", as)
	}
	if c.Cert == "" {
		return nil, fmt.Errorf("localfed: the demo has no %s certificate for node %s", as, n.Name)
	}
	return api.NewClient(api.Config{Address: n.API, CACert: d.CA, ClientCert: c.Cert, ClientKey: c.Key, Timeout: timeout})
}

// dataMarker remembers that the synthetic data is loaded (and its showcase).
const dataMarker = "demo-data.json"

// submitBatch is how many records one request carries.
const submitBatch = 1000

// LoadData loads m synthetic records into the running federation of
// DIR/demo.json, through each district's API with its department's
// certificate, once: a marker file remembers it, and a second call loads
// nothing and returns the showcase of the first. It returns how many
// records it loaded. Every identifier is of the test province 99.
func LoadData(ctx context.Context, dir string, m int) (Showcase, int, error) {
	marker := filepath.Join(dir, dataMarker)
	var showcase Showcase
	if data, err := os.ReadFile(marker); err == nil {
		return showcase, 0, json.Unmarshal(data, &showcase)
	} else if !errors.Is(err, os.ErrNotExist) {
		return showcase, 0, err
	}
	showcase, n, err := loadData(ctx, dir, m)
	if err != nil {
		return showcase, n, err
	}
	data, err := json.Marshal(showcase)
	if err != nil {
		return showcase, n, err
	}
	return showcase, n, atomicfile.Write(marker, data, 0o600)
}

func loadData(ctx context.Context, dir string, m int) (Showcase, int, error) {
	var showcase Showcase
	d, err := ReadDemoFile(dir)
	if err != nil {
		return showcase, 0, err
	}
	coord, err := d.Client("", "coordinator", time.Minute)
	if err != nil {
		return showcase, 0, err
	}
	ac, err := coord.Catalog(ctx)
	if err != nil {
		return showcase, 0, fmt.Errorf("localfed: the catalog: %w", err)
	}
	cat := &credit.Catalog{Version: ac.Version, Items: ac.Items, Purposes: ac.Purposes, Lists: ac.Lists,
		Scenarios: ac.Scenarios, Domains: ac.Domains, Occupations: ac.Occupations, Rules: ac.Rules, Levels: ac.Levels}
	var names []string
	for _, n := range d.Nodes {
		if n.Role == string(certs.District) {
			names = append(names, n.Name)
		}
	}
	byDistrict, showcase := SyntheticRecords(cat, names, m, credit.TodayAt(time.Now()))
	loaded := 0
	for _, name := range names {
		c, err := d.Client(name, "department", time.Minute)
		if err != nil {
			return showcase, loaded, err
		}
		recs := byDistrict[name]
		for start := 0; start < len(recs); start += submitBatch {
			batch := recs[start:min(start+submitBatch, len(recs))]
			ans, _, err := c.SubmitRecords(ctx, batch)
			if err != nil {
				return showcase, loaded, fmt.Errorf("localfed: loading synthetic records into %s: %w", name, err)
			}
			for _, res := range ans.Results {
				if res.Status == api.StatusRejected {
					return showcase, loaded, fmt.Errorf("localfed: %s rejected a synthetic record: %v", name, res.Error)
				}
			}
			loaded += len(batch)
		}
		c.CloseIdle()
	}
	return showcase, loaded, nil
}

// WaitPublished waits until every district of DIR/demo.json has published
// its outbox to the index (its outbox is empty).
func WaitPublished(ctx context.Context, d DemoFile) error {
	for _, n := range d.Nodes {
		if n.Role != string(certs.District) {
			continue
		}
		c, err := d.Client(n.Name, "department", 10*time.Second)
		if err != nil {
			return err
		}
		pending := -1
		err = poll(ctx, 50*time.Millisecond, func() bool {
			f, err := c.Federation(ctx)
			if err != nil {
				return false
			}
			pending = f.Index.OutboxLength
			return pending == 0
		})
		c.CloseIdle()
		if err != nil {
			return fmt.Errorf("localfed: %s still has %d changes to publish: %w", n.Name, pending, err)
		}
	}
	return nil
}
