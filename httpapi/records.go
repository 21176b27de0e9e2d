package httpapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/fault"
	"credfed/intake"
)

// recordTimeLayout is how record times are shown (api.RecordTimeLayout).
const recordTimeLayout = api.RecordTimeLayout

func (s *Server) recordRoutes() []route {
	return []route{
		{method: "POST", pattern: "/v1/records", access: roles(certs.Department), maxBody: 64 << 20, bulk: true, handle: s.postRecords},
		{method: "GET", pattern: "/v1/records", access: roles(certs.Department), handle: s.getRecords},
		{method: "GET", pattern: "/v1/records/{id}", access: roles(certs.Department), handle: s.getRecord},
		{method: "POST", pattern: "/v1/records/{id}/corrections", access: roles(certs.Department), handle: s.postCorrection},
	}
}

// recordView is a record as the API shows it (api.RecordOf).
func recordView(r credit.Record, cat *credit.Catalog) api.Record { return api.RecordOf(r, cat) }

// postRecords accepts one record, a JSON array of records, or NDJSON
// (Content-Type application/x-ndjson). Every item is answered; the answer
// is sent only after the accepted ones are durable: 200 when every item is
// accepted or a duplicate, 207 when some are rejected, 400 when all are.
func (s *Server) postRecords(w http.ResponseWriter, r *http.Request, c caller) error {
	items, err := readRecordItems(r)
	if err != nil {
		return err
	}
	subs := make([]intake.Submission, len(items))
	for i, raw := range items {
		subs[i] = submission(raw)
	}
	results, err := s.cfg.Records.Submit(r.Context(), c.id, subs)
	if err != nil {
		return err
	}
	out := api.SubmitAnswer{Results: make([]api.RecordResult, len(results))}
	rejected := 0
	for i, res := range results {
		out.Results[i] = api.RecordResult{Index: i, ID: res.ID, Status: string(res.Status)}
		if res.Status == intake.Rejected {
			rejected++
			out.Results[i].Error = errorOf(res.Err)
			if out.Results[i].Error == nil {
				out.Results[i].Error = &api.Error{Code: api.CodeInternal, Message: "record refused"}
			}
		}
	}
	status := http.StatusOK
	switch {
	case rejected == len(results):
		status = http.StatusBadRequest
	case rejected > 0:
		status = http.StatusMultiStatus
	}
	writeJSON(w, status, out)
	return nil
}

// MaxRecordBytes bounds one record as submitted (its JSON object); a
// larger one is refused while it is being read, before it is held whole.
const MaxRecordBytes = 64 << 10

// lineArena is the size of the allocations NDJSON lines are copied into.
const lineArena = 256 << 10

// readRecordItems splits the body into raw JSON values, one per record,
// reading an array element by element and NDJSON line by line, so that
// no record larger than MaxRecordBytes is ever held.
func readRecordItems(r *http.Request) ([]json.RawMessage, error) {
	var items []json.RawMessage
	tooMany := fault.New(fault.BadRequest, "at most %d records per request", intake.MaxRecordsPerRequest)
	tooLarge := func(n int) *fault.Error {
		return fault.New(fault.BadRequest, "record %d is larger than %d bytes", n, MaxRecordBytes)
	}
	if mt := mediaType(r); mt == "application/x-ndjson" || mt == "application/jsonl" {
		sc := bufio.NewScanner(r.Body)
		sc.Buffer(make([]byte, 0, 64<<10), MaxRecordBytes)
		var arena []byte // the lines' copies, many to an allocation
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			if cap(arena)-len(arena) < len(line) {
				arena = make([]byte, 0, max(lineArena, len(line)))
			}
			n := len(arena)
			arena = append(arena, line...)
			items = append(items, json.RawMessage(arena[n:len(arena):len(arena)]))
			if len(items) > intake.MaxRecordsPerRequest {
				return nil, tooMany
			}
		}
		if err := sc.Err(); err != nil {
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				return nil, fault.New(fault.BadRequest, "request body is larger than %d bytes", tooBig.Limit)
			case errors.Is(err, bufio.ErrTooLong):
				return nil, tooLarge(len(items) + 1)
			}
			return nil, readError(err)
		}
	} else {
		cr := &capReader{r: r.Body}
		dec := json.NewDecoder(cr)
		cr.dec = dec
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonError(err)
		}
		if tok == json.Delim('[') {
			for dec.More() {
				var raw json.RawMessage
				cr.start()
				if err := dec.Decode(&raw); err != nil {
					if errors.Is(err, errRecordTooLarge) {
						return nil, tooLarge(len(items) + 1)
					}
					return nil, jsonError(err)
				}
				items = append(items, raw)
				if len(items) > intake.MaxRecordsPerRequest {
					return nil, tooMany
				}
			}
			if _, err := dec.Token(); err != nil {
				return nil, jsonError(err)
			}
			if dec.More() {
				return nil, fault.New(fault.BadRequest, "request body holds more than one JSON value")
			}
		} else if tok == json.Delim('{') {
			// One record: read it again whole, within the cap.
			cr.start()
			body, err := io.ReadAll(io.MultiReader(strings.NewReader("{"), dec.Buffered(), cr))
			if err != nil {
				if errors.Is(err, errRecordTooLarge) {
					return nil, tooLarge(1)
				}
				return nil, readError(err)
			}
			one := json.NewDecoder(bytes.NewReader(body))
			var raw json.RawMessage
			if err := one.Decode(&raw); err != nil {
				return nil, jsonError(err)
			}
			if one.More() {
				return nil, fault.New(fault.BadRequest, "request body holds more than one JSON value")
			}
			items = []json.RawMessage{raw}
		} else {
			return nil, fault.New(fault.BadRequest, "the body is a JSON object (one record) or an array of them")
		}
	}
	if len(items) == 0 {
		return nil, fault.New(fault.BadRequest, "no records in the request")
	}
	return items, nil
}

// errRecordTooLarge is capReader's refusal.
var errRecordTooLarge = errors.New("record too large")

// capReader fails a read once the decoder has been handed more than
// MaxRecordBytes (and a read-ahead chunk) past the start of the value it
// is decoding: a huge record is refused while it streams in.
type capReader struct {
	r     io.Reader
	dec   *json.Decoder
	read  int64 // bytes handed to the decoder
	since int64 // InputOffset when the current value started
}

func (c *capReader) start() { c.since = c.dec.InputOffset() }

func (c *capReader) Read(p []byte) (int, error) {
	const chunk = 16 << 10 // read ahead at most this much past the cap
	if c.read-c.since > MaxRecordBytes+chunk {
		return 0, errRecordTooLarge
	}
	n, err := c.r.Read(p[:min(len(p), chunk)])
	c.read += int64(n)
	return n, err
}

// readError is the refusal of a body that could not be read.
func readError(err error) *fault.Error {
	if e := fault.As(err); e != nil {
		return e // the body budget's refusal
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return fault.New(fault.BadRequest, "request body is larger than %d bytes", tooBig.Limit)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fault.New(fault.BadRequest, "the request body was not sent in time")
	}
	return fault.New(fault.BadRequest, "the request body could not be read")
}

// submission reads one submitted record; what cannot be read is a
// submission with its refusal.
func submission(raw json.RawMessage) intake.Submission {
	in, err := decodeRecordInput(raw)
	if err != nil {
		return intake.Submission{Err: err}
	}
	sub := intake.Submission{Department: in.Department, District: in.District,
		Record: credit.Record{ID: in.ID, Subject: in.Subject, CatalogItem: in.CatalogItem,
			DecisionNumber: in.DecisionNumber, Summary: in.Summary}}
	for _, d := range []struct {
		field string
		text  string
		dst   *credit.Date
	}{{"occurred_on", in.OccurredOn, &sub.Record.OccurredOn}, {"decided_on", in.DecidedOn, &sub.Record.DecidedOn}} {
		if d.text == "" {
			sub.Err = fault.Field(fault.BadRequest, d.field, "required (YYYY-MM-DD)")
			return sub
		}
		v, err := credit.ParseDate(d.text)
		if err != nil {
			sub.Err = fault.Field(fault.BadRequest, d.field, "must be a real day written YYYY-MM-DD")
			return sub
		}
		*d.dst = v
	}
	return sub
}

// decodeRecordInput reads one submitted record: one JSON object of
// api.RecordInput's fields and nothing after it.
func decodeRecordInput(raw []byte) (api.RecordInput, error) {
	var in api.RecordInput
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return in, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		// An NDJSON line of two records: the second was dropped unsaid.
		return in, fault.New(fault.BadRequest, "a record is one JSON object: this one is followed by more (one record a line)")
	}
	return in, nil
}

func (s *Server) getRecord(w http.ResponseWriter, r *http.Request, c caller) error {
	rec, versions, err := s.cfg.Records.Record(r.Context(), c.id, r.PathValue("id"))
	if err != nil {
		return err
	}
	v := recordView(rec, s.cfg.Cluster.Catalog())
	for _, old := range versions {
		v.Versions = append(v.Versions, recordView(old, nil))
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// getRecords is GET /v1/records: a page of the calling department's
// records, latest versions in id order, each shown as GET
// /v1/records/{id} shows it (without its older versions), filtered by
// ?item= and ?status=, paged with ?after= and ?limit= (1 to 500, default
// 100).
func (s *Server) getRecords(w http.ResponseWriter, r *http.Request, c caller) error {
	v := r.URL.Query()
	q := intake.RecordQuery{CatalogItem: v.Get("item"), Status: v.Get("status"), After: v.Get("after")}
	if l, ok := v["limit"]; ok {
		n, err := strconv.Atoi(l[0])
		if err != nil || n < 1 || n > intake.MaxRecordLimit {
			return fault.Field(fault.BadRequest, "limit", "must be a whole number from 1 to %d", intake.MaxRecordLimit)
		}
		q.Limit = n
	}
	page, err := s.cfg.Records.Records(r.Context(), c.id, q)
	if err != nil {
		return err
	}
	cat := s.cfg.Cluster.Catalog()
	out := api.RecordPage{Records: make([]api.Record, 0, len(page.Records)), Next: page.Next}
	for _, rec := range page.Records {
		out.Records = append(out.Records, recordView(rec, cat))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) postCorrection(w http.ResponseWriter, r *http.Request, c caller) error {
	var in api.Correction
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	corr, err := correctionOf(in)
	if err != nil {
		return err
	}
	next, err := s.cfg.Records.Correct(r.Context(), c.id, r.PathValue("id"), corr, in.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, recordView(next, s.cfg.Cluster.Catalog()))
	return nil
}

// correctionOf reads a correction's fields.
func correctionOf(in api.Correction) (credit.Correction, error) {
	corr := credit.Correction{CatalogItem: in.CatalogItem, DecisionNumber: in.DecisionNumber, Summary: in.Summary}
	for _, d := range []struct {
		field string
		text  *string
		dst   **credit.Date
	}{{"occurred_on", in.OccurredOn, &corr.OccurredOn}, {"decided_on", in.DecidedOn, &corr.DecidedOn}} {
		if d.text == nil {
			continue
		}
		v, err := credit.ParseDate(*d.text)
		if err != nil {
			return corr, fault.Field(fault.BadRequest, d.field, "must be a real day written YYYY-MM-DD")
		}
		*d.dst = &v
	}
	return corr, nil
}

// mediaType returns the request's content type without parameters.
func mediaType(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}
