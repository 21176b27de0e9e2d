package httpapi

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"

	"credfed/disclosure"
	"credfed/fault"
)

// Disclosures is the public disclosure list (disclosure.Service).
type Disclosures interface {
	// List is one page of the list at this node; it rate-limits the
	// client's address.
	List(ctx context.Context, client netip.Addr, q disclosure.Query) (disclosure.Page, error)
}

// The list of serious-dishonesty records is public: no certificate.
func (s *Server) disclosureRoutes() []route {
	return []route{{method: "GET", pattern: "/v1/disclosures", access: publicAccess, handle: s.getDisclosures}}
}

// DisclosureEntry is one entry of GET /v1/disclosures.
type DisclosureEntry struct {
	// Subject is the masked identifier: region and check character kept.
	Subject     string `json:"subject"`
	CatalogItem string `json:"catalog_item"`
	// Reason is the catalog item's name.
	Reason         string `json:"reason"`
	LegalBasis     string `json:"legal_basis"`
	DecisionNumber string `json:"decision_number"`
	District       string `json:"district"`
	DistrictName   string `json:"district_name,omitempty"`
	Department     string `json:"department"`
	DecidedOn      string `json:"decided_on"`
	// DisplayUntil is the first day the record is no longer listed.
	DisplayUntil string `json:"display_until"`
	Status       string `json:"status"`
	RecordedAt   string `json:"recorded_at"`
}

// DisclosureDistrict is one district's part of a page.
type DisclosureDistrict struct {
	District string `json:"district"`
	Name     string `json:"name,omitempty"`
	Status   string `json:"status"`
	Error    string `json:"error,omitempty"`
}

// DisclosurePage is the answer of GET /v1/disclosures.
type DisclosurePage struct {
	Entries []DisclosureEntry `json:"entries"`
	// Next is the cursor of the next page, absent on the last.
	Next      string               `json:"next,omitempty"`
	Districts []DisclosureDistrict `json:"districts"`
}

// getDisclosures is one page of the public list (?cursor=, ?limit=).
func (s *Server) getDisclosures(w http.ResponseWriter, r *http.Request, c caller) error {
	if s.cfg.Disclosures == nil {
		return fault.New(fault.Unavailable, "this node does not serve the disclosure list")
	}
	q := disclosure.Query{Cursor: r.URL.Query().Get("cursor")}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > disclosure.MaxLimit {
			return fault.Field(fault.BadRequest, "limit", "must be a whole number from 1 to %d", disclosure.MaxLimit)
		}
		q.Limit = n
	}
	// The connection's address, never a header: a client sets headers.
	var client netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		client = ap.Addr()
	}
	page, err := s.cfg.Disclosures.List(r.Context(), client, q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, disclosureView(page))
	return nil
}

func disclosureView(p disclosure.Page) DisclosurePage {
	out := DisclosurePage{Entries: make([]DisclosureEntry, 0, len(p.Entries)), Next: p.Next,
		Districts: make([]DisclosureDistrict, 0, len(p.Districts))}
	for _, e := range p.Entries {
		out.Entries = append(out.Entries, DisclosureEntry{Subject: e.Subject, CatalogItem: e.CatalogItem, Reason: e.Reason,
			LegalBasis: e.LegalBasis, DecisionNumber: e.DecisionNumber, District: e.District, DistrictName: e.DistrictName,
			Department: e.Department, DecidedOn: e.DecidedOn.String(), DisplayUntil: e.DisplayUntil.String(),
			Status: string(e.Status), RecordedAt: e.RecordedAt.UTC().Format(recordTimeLayout)})
	}
	for _, d := range p.Districts {
		out.Districts = append(out.Districts, DisclosureDistrict{District: d.Region, Name: d.Name, Status: string(d.Status), Error: d.Error})
	}
	return out
}
