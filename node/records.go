package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"credfed/certs"
	"credfed/credit"
	"credfed/storage"
)

// MaxRecordsPerRequest bounds one POST /v1/records.
const MaxRecordsPerRequest = 10000

// recordInput is one submitted record as JSON carries it. Department and
// district may be given only to repeat what the certificate says.
type recordInput struct {
	ID             string `json:"id"`
	Subject        string `json:"subject"`
	CatalogItem    string `json:"catalog_item"`
	DecisionNumber string `json:"decision_number"`
	OccurredOn     string `json:"occurred_on"`
	DecidedOn      string `json:"decided_on"`
	Summary        string `json:"summary"`
	Department     string `json:"department,omitempty"`
	District       string `json:"district,omitempty"`
}

type recordResult struct {
	Index  int       `json:"index"`
	ID     string    `json:"id"`
	Status string    `json:"status"` // accepted, duplicate, rejected
	Error  *apiError `json:"error,omitempty"`
}

// recordView is a record as the API shows it.
type recordView struct {
	ID             string        `json:"id"`
	Subject        string        `json:"subject"`
	CatalogItem    string        `json:"catalog_item"`
	DecisionNumber string        `json:"decision_number,omitempty"`
	OccurredOn     credit.Date   `json:"occurred_on"`
	DecidedOn      credit.Date   `json:"decided_on"`
	Summary        string        `json:"summary,omitempty"`
	Department     string        `json:"department"`
	District       string        `json:"district"`
	Polarity       string        `json:"polarity"`
	Severity       string        `json:"severity"`
	LegalBasis     string        `json:"legal_basis"`
	Status         credit.Status `json:"status"`
	Version        int           `json:"version"`
	CatalogVersion int           `json:"catalog_version"`
	RecordedAt     string        `json:"recorded_at"`
	Reason         string        `json:"reason,omitempty"`
	DisplayUntil   *credit.Date  `json:"display_until,omitempty"`
	Versions       []recordView  `json:"versions,omitempty"`
}

func viewOf(r credit.Record, cat *credit.Catalog) recordView {
	v := recordView{
		ID: r.ID, Subject: r.Subject, CatalogItem: r.CatalogItem, DecisionNumber: r.DecisionNumber,
		OccurredOn: r.OccurredOn, DecidedOn: r.DecidedOn, Summary: r.Summary, Department: r.Department,
		District: r.District, Polarity: string(r.Polarity), Severity: string(r.Severity), LegalBasis: r.LegalBasis,
		Status: r.Status, Version: r.Version, CatalogVersion: r.CatalogVersion,
		RecordedAt: r.RecordedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"), Reason: r.Reason,
	}
	if cat != nil {
		if it, ok := cat.Item(r.CatalogItem); ok {
			d := credit.DisplayUntil(r, it)
			v.DisplayUntil = &d
		}
	}
	return v
}

// sameDistrict refuses a user of another district's node.
func (h *handlers) sameDistrict(c caller) error {
	if c.id.Region != h.n.cfg.Region {
		return errorf(codeForbidden, "a %s of %s may not act on the node of %s", c.id.Role, c.id.Region, h.n.cfg.Region)
	}
	if h.n.cfg.Role != certs.District {
		return errorf(codeForbidden, "records are kept by district nodes; this is a %s node", h.n.cfg.Role)
	}
	return nil
}

// postRecords accepts one record, a JSON array of records, or NDJSON
// (Content-Type application/x-ndjson). Every item is answered; the answer
// is sent only after the accepted ones are durable (synced), together with
// their outbox entries.
func (h *handlers) postRecords(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := h.sameDistrict(c); err != nil {
		return err
	}
	cat, err := h.catalog()
	if err != nil {
		return err
	}
	items, err := readRecordItems(r)
	if err != nil {
		return err
	}
	results := make([]recordResult, len(items))
	var accepted []credit.Record
	var acceptedAt []int
	now := h.now()
	opt := h.parseOptions()
	for i, raw := range items {
		res := &results[i]
		res.Index = i
		in, aerr := decodeRecordInput(raw)
		if aerr == nil {
			res.ID = in.ID
			aerr = h.checkCollector(in, c)
		}
		var rec credit.Record
		if aerr == nil {
			rec, aerr = inputRecord(in)
		}
		if aerr == nil {
			rec.Department, rec.District = c.id.Institution, h.n.cfg.Region
			var err error
			if rec, err = cat.Accept(rec, now, opt); err != nil {
				aerr = recordError(err)
			}
		}
		if aerr != nil {
			res.Status, res.Error = "rejected", aerr
			continue
		}
		accepted = append(accepted, rec)
		acceptedAt = append(acceptedAt, i)
	}
	if len(accepted) > 0 {
		outcomes, err := h.n.db.SubmitRecords(accepted)
		if err != nil {
			return err
		}
		for k, o := range outcomes {
			res := &results[acceptedAt[k]]
			switch o {
			case storage.Accepted:
				res.Status = "accepted"
			case storage.Duplicate:
				res.Status = "duplicate"
			default:
				res.Status = "rejected"
				res.Error = fieldError(codeConflict, "id", "record %q was submitted before with other content; send a correction instead", accepted[k].ID)
			}
		}
		h.n.notifyPublisher()
	}
	rejected := 0
	for _, res := range results {
		h.n.metrics.records.WithLabelValues(res.Status).Inc()
		if res.Status == "rejected" {
			rejected++
		}
	}
	status := http.StatusOK
	switch {
	case rejected == len(results):
		status = http.StatusBadRequest
	case rejected > 0:
		status = http.StatusMultiStatus
	}
	writeJSON(w, status, map[string]any{"results": results})
	return nil
}

// readRecordItems splits the body into raw JSON objects.
func readRecordItems(r *http.Request) ([]json.RawMessage, error) {
	var items []json.RawMessage
	if mt := mediaType(r); mt == "application/x-ndjson" || mt == "application/jsonl" {
		sc := bufio.NewScanner(r.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			items = append(items, append(json.RawMessage(nil), line...))
			if len(items) > MaxRecordsPerRequest {
				return nil, errorf(codeBadRequest, "at most %d records per request", MaxRecordsPerRequest)
			}
		}
		if err := sc.Err(); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return nil, errorf(codeBadRequest, "request body is larger than %d bytes", tooBig.Limit)
			}
			return nil, errorf(codeBadRequest, "a line of the NDJSON body is too long or unreadable")
		}
	} else {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, jsonError(err)
		}
		body = bytes.TrimSpace(body)
		switch {
		case len(body) == 0:
			return nil, errorf(codeBadRequest, "request body is empty")
		case body[0] == '[':
			if err := json.Unmarshal(body, &items); err != nil {
				return nil, jsonError(err)
			}
			if len(items) > MaxRecordsPerRequest {
				return nil, errorf(codeBadRequest, "at most %d records per request", MaxRecordsPerRequest)
			}
		default:
			items = []json.RawMessage{body}
		}
	}
	if len(items) == 0 {
		return nil, errorf(codeBadRequest, "no records in the request")
	}
	return items, nil
}

func decodeRecordInput(raw json.RawMessage) (recordInput, *apiError) {
	var in recordInput
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return in, jsonError(err)
	}
	return in, nil
}

// checkCollector refuses a body that names a collector other than the
// certificate's: whoever collects a record is responsible for it.
func (h *handlers) checkCollector(in recordInput, c caller) *apiError {
	if in.Department != "" && in.Department != c.id.Institution {
		return fieldError(codeForbidden, "department", "the department is %s, from the client certificate; a record cannot be submitted in the name of %s", c.id.Institution, in.Department)
	}
	if in.District != "" && in.District != h.n.cfg.Region {
		return fieldError(codeForbidden, "district", "this node keeps the records of %s, not %s", h.n.cfg.Region, in.District)
	}
	return nil
}

func inputRecord(in recordInput) (credit.Record, *apiError) {
	rec := credit.Record{ID: in.ID, Subject: in.Subject, CatalogItem: in.CatalogItem,
		DecisionNumber: in.DecisionNumber, Summary: in.Summary}
	for _, d := range []struct {
		field string
		text  string
		dst   *credit.Date
	}{{"occurred_on", in.OccurredOn, &rec.OccurredOn}, {"decided_on", in.DecidedOn, &rec.DecidedOn}} {
		if d.text == "" {
			return rec, fieldError(codeBadRequest, d.field, "required (YYYY-MM-DD)")
		}
		v, err := credit.ParseDate(d.text)
		if err != nil {
			return rec, fieldError(codeBadRequest, d.field, "must be a real day written YYYY-MM-DD")
		}
		*d.dst = v
	}
	return rec, nil
}

// recordError turns credit's validation errors into API errors; their
// messages are built to be shown (no identifier, no content).
func recordError(err error) *apiError {
	var fe *credit.FieldError
	if errors.As(err, &fe) {
		return fieldError(fe.Code, fe.Field, "%s", fe.Message)
	}
	return errorf(codeBadRequest, "record refused")
}

func (h *handlers) getRecord(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := h.sameDistrict(c); err != nil {
		return err
	}
	id := r.PathValue("id")
	if len(id) > credit.MaxRecordIDLength {
		return fieldError(codeBadRequest, "id", "a record id has at most %d bytes", credit.MaxRecordIDLength)
	}
	dept := c.id.Institution
	portal := c.id.Role == certs.Portal
	authn := r.URL.Query().Get("authentication")
	if portal {
		// A portal shows a record to its subject: it must say how it
		// verified the person, and the read is audited (DESIGN §5).
		if authn == "" {
			return fieldError(codeBadRequest, "authentication", "a portal names the real-name authentication of the subject (?authentication=REF)")
		}
		dept = r.URL.Query().Get("department")
		if dept == "" {
			found, err := h.n.db.FindRecord(id)
			switch {
			case errors.Is(err, storage.ErrNotFound):
				return errorf(codeNotFound, "no record %q in %s", id, h.n.cfg.Region)
			case err != nil:
				return err
			case len(found) > 1:
				return errorf(codeConflict, "%d departments hold a record %q; name one with ?department=", len(found), id)
			}
			dept = found[0].Department
		}
	}
	rec, err := h.n.db.Record(dept, id)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return errorf(codeNotFound, "no record %q of %s", id, dept)
	case errors.Is(err, storage.ErrInvalidRecord):
		return errorf(codeBadRequest, "department or record id is malformed")
	case err != nil:
		return err
	}
	versions, err := h.n.db.Versions(dept, id)
	if err != nil {
		return err
	}
	if portal {
		ps, err := h.n.resolvePseudonyms(r.Context(), []string{rec.Subject})
		if err != nil {
			return errorf(codeUnavailable, "the read cannot be audited now (no coordinator answered for the pseudonym); nothing was shown")
		}
		if err := h.audit(storage.AuditEntry{At: h.now().UTC(), Node: h.n.cfg.Region, Caller: c.id.String(),
			Role: string(c.id.Role), Institution: c.id.Institution, Operation: "record.read",
			Authentication: authn, Subject: ps[0].String(), District: h.n.cfg.Region,
			Records: []string{dept + "/" + id}, Decision: storage.DecisionAllowed}); err != nil {
			return err
		}
	}
	cat := h.n.rep.State().Catalog()
	v := viewOf(rec, cat)
	for _, old := range versions {
		v.Versions = append(v.Versions, viewOf(old, nil))
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// correctionInput is a correction as JSON carries it; dates are parsed
// here so that a bad one is refused naming its field.
type correctionInput struct {
	CatalogItem    *string `json:"catalog_item,omitempty"`
	DecisionNumber *string `json:"decision_number,omitempty"`
	OccurredOn     *string `json:"occurred_on,omitempty"`
	DecidedOn      *string `json:"decided_on,omitempty"`
	Summary        *string `json:"summary,omitempty"`
	Reason         string  `json:"reason"`
}

func (in correctionInput) correction() (credit.Correction, *apiError) {
	c := credit.Correction{CatalogItem: in.CatalogItem, DecisionNumber: in.DecisionNumber, Summary: in.Summary}
	for _, d := range []struct {
		field string
		text  *string
		dst   **credit.Date
	}{{"occurred_on", in.OccurredOn, &c.OccurredOn}, {"decided_on", in.DecidedOn, &c.DecidedOn}} {
		if d.text == nil {
			continue
		}
		v, err := credit.ParseDate(*d.text)
		if err != nil {
			return c, fieldError(codeBadRequest, d.field, "must be a real day written YYYY-MM-DD")
		}
		*d.dst = &v
	}
	return c, nil
}

func (h *handlers) postCorrection(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := h.sameDistrict(c); err != nil {
		return err
	}
	cat, err := h.catalog()
	if err != nil {
		return err
	}
	var in correctionInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	id := r.PathValue("id")
	prev, err := h.n.db.Record(c.id.Institution, id)
	if errors.Is(err, storage.ErrNotFound) {
		return errorf(codeNotFound, "no record %q of %s", id, c.id.Institution)
	}
	if err != nil {
		return err
	}
	fields, aerr := in.correction()
	if aerr != nil {
		return aerr
	}
	next, err := cat.Correct(prev, fields, in.Reason, h.now(), h.parseOptions())
	if err != nil {
		return recordError(err)
	}
	if err := h.n.db.UpdateRecord(next); errors.Is(err, storage.ErrConflict) {
		return errorf(codeConflict, "record %q changed meanwhile; read it again and resend the correction", id)
	} else if err != nil {
		return err
	}
	h.n.notifyPublisher()
	writeJSON(w, http.StatusOK, viewOf(next, cat))
	return nil
}
