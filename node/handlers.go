package node

import (
	"net/http"
	"time"

	"credfed/certs"
	"credfed/credit"
)

// handlers holds the API's route handlers.
type handlers struct {
	n   *Node
	now func() time.Time
}

// routes is the API of this issue; docs/openapi.yaml documents the same
// list (a test compares them).
func (h *handlers) routes() []route {
	return []route{
		{method: "GET", pattern: "/v1/catalog", access: anyCertificate, handle: h.getCatalog},
		{method: "GET", pattern: "/v1/federation", access: anyCertificate, handle: h.getFederation},
		{method: "POST", pattern: "/v1/records", access: roles(certs.Department), maxBody: 64 << 20, handle: h.postRecords},
		{method: "GET", pattern: "/v1/records/{id}", access: roles(certs.Department, certs.Portal), handle: h.getRecord},
		{method: "POST", pattern: "/v1/records/{id}/corrections", access: roles(certs.Department), handle: h.postCorrection},
		// Lookups admit any certificate so that a refusal (a department
		// trying to look someone up) is audited like any other lookup; the
		// handler admits coordinators only.
		{method: "POST", pattern: "/v1/lookups", access: anyCertificate, handle: h.postLookup},
	}
}

// catalog returns the replicated catalog or an unavailable error.
func (h *handlers) catalog() (*credit.Catalog, error) {
	c := h.n.rep.State().Catalog()
	if c == nil {
		return nil, errorf(codeUnavailable, "this node has not received the federation's catalog yet")
	}
	return c, nil
}

func (h *handlers) parseOptions() credit.ParseOptions {
	return credit.ParseOptions{TestMode: h.n.cfg.TestMode, Today: credit.TodayAt(h.now())}
}

// catalogView is GET /v1/catalog's body (API.md).
type catalogView struct {
	Version     int                         `json:"version"`
	Items       []credit.Item               `json:"items"`
	Purposes    []credit.Purpose            `json:"purposes"`
	Lists       []credit.List               `json:"lists"`
	Scenarios   []credit.Scenario           `json:"scenarios"`
	Domains     []credit.Domain             `json:"domains"`
	Occupations []credit.Occupation         `json:"occupations"`
	Rules       []credit.ClassificationRule `json:"rules"`
	Levels      []credit.Level              `json:"levels"`
}

func (h *handlers) getCatalog(w http.ResponseWriter, r *http.Request, c caller) error {
	cat, err := h.catalog()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, catalogView{
		Version: cat.Version, Items: cat.Items, Purposes: cat.Purposes, Lists: cat.Lists,
		Scenarios: cat.Scenarios, Domains: cat.Domains, Occupations: cat.Occupations,
		Rules: cat.Rules, Levels: cat.Levels,
	})
	return nil
}

type federationView struct {
	Federation     string       `json:"federation"`
	Node           nodeView     `json:"node"`
	Raft           raftView     `json:"raft"`
	Index          indexView    `json:"index"`
	CatalogVersion int          `json:"catalog_version"`
	Regions        []regionView `json:"regions"`
}

type nodeView struct {
	Name     string     `json:"name"`
	Role     certs.Role `json:"role"`
	Region   string     `json:"region"`
	Exchange string     `json:"exchange"`
	Ready    bool       `json:"ready"`
	Status   string     `json:"status"`
}

type raftView struct {
	State        string `json:"state"`
	Leader       string `json:"leader"`
	Term         string `json:"term"`
	CommitIndex  string `json:"commit_index"`
	AppliedIndex string `json:"applied_index"`
	LastLogIndex string `json:"last_log_index"`
	Voter        bool   `json:"voter"`
}

type indexView struct {
	AppliedIndex uint64 `json:"applied_index"`
	OutboxLength int    `json:"outbox_length,omitempty"`
}

type regionView struct {
	Path     string     `json:"path"`
	Name     string     `json:"name"`
	Role     certs.Role `json:"role"`
	Exchange string     `json:"exchange,omitempty"`
	API      string     `json:"api,omitempty"`
	Voter    bool       `json:"voter"`
	Raft     string     `json:"raft"` // voter, nonvoter or absent from the configuration
}

func (h *handlers) getFederation(w http.ResponseWriter, r *http.Request, c caller) error {
	n := h.n
	st := n.rep.Stats()
	leaderRegion, _ := n.rep.Leader()
	ready, why := n.Ready()
	v := federationView{
		Federation: n.cfg.Federation,
		Node: nodeView{Name: n.cfg.Name, Role: n.cfg.Role, Region: n.cfg.Region, Exchange: n.ExchangeAddr(),
			Ready: ready, Status: why},
		Raft: raftView{State: st["state"], Leader: leaderRegion, Term: st["term"], CommitIndex: st["commit_index"],
			AppliedIndex: st["applied_index"], LastLogIndex: st["last_log_index"], Voter: n.cfg.IsVoter()},
		Index: indexView{AppliedIndex: n.rep.State().Applied()},
	}
	if cat := n.rep.State().Catalog(); cat != nil {
		v.CatalogVersion = cat.Version
	}
	if n.cfg.Role == certs.District {
		v.Index.OutboxLength, _ = n.db.OutboxLen()
	}
	suffrage := map[string]string{}
	if servers, err := n.rep.Servers(); err == nil {
		for _, s := range servers {
			suffrage[string(s.ID)] = map[bool]string{true: "voter", false: "nonvoter"}[s.Suffrage.String() == "Voter"]
		}
	}
	for _, reg := range n.rep.State().Regions() {
		raft := suffrage[reg.Path]
		if raft == "" {
			raft = "absent"
		}
		v.Regions = append(v.Regions, regionView{Path: reg.Path, Name: reg.Name, Role: reg.Role, Exchange: reg.Exchange,
			API: reg.API, Voter: reg.Voter, Raft: raft})
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
