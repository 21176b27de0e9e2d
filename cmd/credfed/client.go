package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"credfed/certs"
)

// demoFile is DIR/demo.json (API.md): how to reach a demo federation.
type demoFile struct {
	Federation string       `json:"federation"`
	CA         string       `json:"ca"`
	Console    string       `json:"console,omitempty"`
	Nodes      []demoNode   `json:"nodes"`
	Clients    demoClients  `json:"clients"`
	Showcase   *demoSubject `json:"showcase,omitempty"`
}

type demoNode struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Region   string `json:"region"`
	API      string `json:"api"`
	Exchange string `json:"exchange"`
	Metrics  string `json:"metrics"`
}

type demoCert struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

type demoClients struct {
	Coordinator demoCert            `json:"coordinator"`
	Operator    demoCert            `json:"operator"`
	Department  map[string]demoCert `json:"department"`
	Portal      map[string]demoCert `json:"portal"`
}

// demoSubject is a synthetic subject with records in several districts,
// for the lines the demo prints.
type demoSubject struct {
	Subject   string   `json:"subject"`
	Districts []string `json:"districts"`
}

// clientFlags are the connection flags every API client command shares.
type clientFlags struct {
	api, ca, cert, key string
	demo, nodeName, as string
	timeout            time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet, defaultAs string) {
	fs.StringVar(&c.api, "api", "", "node API base URL, e.g. https://127.0.0.1:8443")
	fs.StringVar(&c.ca, "ca", "", "federation CA certificate (PEM)")
	fs.StringVar(&c.cert, "cert", "", "client certificate (PEM)")
	fs.StringVar(&c.key, "key", "", "client certificate's key (PEM)")
	fs.StringVar(&c.demo, "demo", "", "a demo directory: take --api, --ca, --cert and --key from its demo.json")
	fs.StringVar(&c.nodeName, "node", "", "with --demo: the node to call (default: the province for coordinators and operators, the first district otherwise)")
	fs.StringVar(&c.as, "as", defaultAs, "with --demo: whose certificate to use: coordinator, operator, department or portal")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "how long to wait for an answer")
}

// client builds an HTTPS client and the API base URL from the flags.
func (c *clientFlags) client() (*http.Client, string, error) {
	if c.demo != "" {
		if err := c.fromDemo(); err != nil {
			return nil, "", err
		}
	}
	if c.api == "" || c.ca == "" {
		return nil, "", usageErrorf("name the node with --api and --ca (and --cert/--key), or use --demo DIR")
	}
	pool, err := certs.LoadPool(c.ca)
	if err != nil {
		return nil, "", err
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if c.cert != "" || c.key != "" {
		pair, err := certs.LoadKeyPair(c.cert, c.key)
		if err != nil {
			return nil, "", err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	hc := &http.Client{Timeout: c.timeout, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
	return hc, strings.TrimSuffix(c.api, "/"), nil
}

func readDemoFile(dir string) (demoFile, error) {
	var d demoFile
	data, err := os.ReadFile(filepath.Join(dir, "demo.json"))
	if err != nil {
		return d, fmt.Errorf("%w (is `credfed demo --dir %s` running?)", err, dir)
	}
	return d, json.Unmarshal(data, &d)
}

func (c *clientFlags) fromDemo() error {
	d, err := readDemoFile(c.demo)
	if err != nil {
		return err
	}
	var n *demoNode
	for i := range d.Nodes {
		switch {
		case c.nodeName != "" && d.Nodes[i].Name == c.nodeName,
			c.nodeName == "" && (c.as == "coordinator" || c.as == "operator") && d.Nodes[i].Role == "province",
			c.nodeName == "" && (c.as == "department" || c.as == "portal") && d.Nodes[i].Role == "district":
			if n == nil {
				n = &d.Nodes[i]
			}
		}
	}
	if n == nil {
		return usageErrorf("demo has no node %q", c.nodeName)
	}
	var cert demoCert
	switch c.as {
	case "coordinator":
		cert = d.Clients.Coordinator
	case "operator":
		cert = d.Clients.Operator
	case "department":
		cert = d.Clients.Department[n.Name]
	case "portal":
		cert = d.Clients.Portal[n.Name]
	default:
		return usageErrorf("--as must be coordinator, operator, department or portal")
	}
	if cert.Cert == "" {
		return usageErrorf("demo has no %s certificate for node %s", c.as, n.Name)
	}
	if c.api == "" {
		c.api = n.API
	}
	if c.ca == "" {
		c.ca = d.CA
	}
	if c.cert == "" {
		c.cert, c.key = cert.Cert, cert.Key
	}
	return nil
}

// apiError is the API's error body.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

// call sends a request and decodes a 2xx JSON answer into out; any other
// answer becomes an error naming the API's code and message.
func call(hc *http.Client, method, url, contentType string, body []byte, out any) (int, error) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 && !(resp.StatusCode == http.StatusBadRequest && out != nil && bytes.Contains(data, []byte(`"results"`))) {
		var e apiError
		if json.Unmarshal(data, &e) == nil && e.Error.Code != "" {
			msg := e.Error.Code + ": " + e.Error.Message
			if e.Error.Field != "" {
				msg += " (field " + e.Error.Field + ")"
			}
			return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, msg)
		}
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: answer is not JSON: %w", method, url, err)
		}
	}
	return resp.StatusCode, nil
}
