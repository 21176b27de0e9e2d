package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"credfed/api"
	"credfed/certs"
	"credfed/checks"
	"credfed/fault"
)

// Checks is the check before a decision (checks.Service).
type Checks interface {
	// Check runs one check; allowed or refused, it is audited before it
	// returns, and a restriction is an answer.
	Check(ctx context.Context, caller certs.Identity, in api.CheckRequest) (api.CheckAnswer, error)
	// SubmitBatch queues a batch check; Job is its progress, JobResults
	// writes its results as NDJSON.
	SubmitBatch(ctx context.Context, caller certs.Identity, in api.BatchCheckRequest) (api.Job, error)
	Job(ctx context.Context, caller certs.Identity, id string) (api.Job, error)
	JobResults(ctx context.Context, caller certs.Identity, id string, w io.Writer) error
	// Classify is a subject's informational classification.
	Classify(ctx context.Context, caller certs.Identity, in api.ClassificationRequest) (api.Classification, error)
}

// MaxBatchRowBytes bounds one row of a batch check.
const MaxBatchRowBytes = 4 << 10

// Checks admit any certificate so that a refusal is audited like any
// other check; the service decides who may check.
func (s *Server) checkRoutes() []route {
	return []route{
		{method: "POST", pattern: "/v1/checks", access: anyCertificate, handle: s.postCheck},
		{method: "POST", pattern: "/v1/checks/batch", access: roles(certs.Coordinator), maxBody: 32 << 20, bulk: true, handle: s.postBatchCheck},
		{method: "GET", pattern: "/v1/jobs/{id}", access: roles(certs.Coordinator, certs.Operator), handle: s.getJob},
		{method: "GET", pattern: "/v1/jobs/{id}/results", access: roles(certs.Coordinator), handle: s.getJobResults},
		{method: "POST", pattern: "/v1/classification", access: roles(certs.Coordinator, certs.Portal), handle: s.postClassification},
	}
}

func (s *Server) checks() (Checks, error) {
	if s.cfg.Checks == nil {
		return nil, fault.New(fault.Unavailable, "this node does not serve checks")
	}
	return s.cfg.Checks, nil
}

func (s *Server) postCheck(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.checks()
	if err != nil {
		return err
	}
	var in api.CheckRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	ans, err := svc.Check(r.Context(), c.id, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ans)
	return nil
}

// postBatchCheck takes the rows as a JSON object (api.BatchCheckRequest),
// as NDJSON (application/x-ndjson) or as CSV (text/csv, a header row
// naming subject, reference and optionally authorization); with the latter
// two, scenario, purpose and user are query parameters. 202 with the job.
func (s *Server) postBatchCheck(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.checks()
	if err != nil {
		return err
	}
	var in api.BatchCheckRequest
	switch mediaType(r) {
	case "application/x-ndjson", "application/jsonl":
		q := r.URL.Query()
		in = api.BatchCheckRequest{Scenario: q.Get("scenario"), Purpose: q.Get("purpose"), User: q.Get("user")}
		if in.Rows, err = readNDJSONRows(r.Body); err != nil {
			return err
		}
	case "text/csv":
		q := r.URL.Query()
		in = api.BatchCheckRequest{Scenario: q.Get("scenario"), Purpose: q.Get("purpose"), User: q.Get("user")}
		if in.Rows, err = readCSVRows(r.Body); err != nil {
			return err
		}
	default:
		if err := decodeJSON(r, &in); err != nil {
			return err
		}
	}
	job, err := svc.SubmitBatch(r.Context(), c.id, in)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/jobs/"+job.ID)
	writeJSON(w, http.StatusAccepted, job)
	return nil
}

func tooManyRows() *fault.Error {
	return fault.Field(fault.BadRequest, "rows", "at most %d rows per batch", checks.MaxBatchRows)
}

func readNDJSONRows(body io.Reader) ([]api.BatchRow, error) {
	sc := bufio.NewScanner(body)
	// The scanner's bound is the larger of its max and the buffer's
	// capacity: both are the row bound.
	sc.Buffer(make([]byte, 0, MaxBatchRowBytes+1), MaxBatchRowBytes+1)
	var rows []api.BatchRow
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var row api.BatchRow
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if len(line) > MaxBatchRowBytes {
			return nil, fault.Field(fault.BadRequest, "rows", "row %d is longer than %d bytes", len(rows)+1, MaxBatchRowBytes)
		}
		if err := dec.Decode(&row); err != nil {
			e := jsonError(err)
			return nil, fault.Field(fault.BadRequest, "rows", "row %d: %s", len(rows)+1, e.Message)
		}
		if dec.More() {
			return nil, fault.Field(fault.BadRequest, "rows", "row %d: a line holds one row, and this one holds more", len(rows)+1)
		}
		if rows = append(rows, row); len(rows) > checks.MaxBatchRows {
			return nil, tooManyRows()
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fault.Field(fault.BadRequest, "rows", "row %d is longer than %d bytes", len(rows)+1, MaxBatchRowBytes)
		}
		return nil, readError(err)
	}
	return rows, nil
}

func readCSVRows(body io.Reader) ([]api.BatchRow, error) {
	cr := csv.NewReader(bufio.NewReader(io.LimitReader(body, 1<<62)))
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return nil, fault.Field(fault.BadRequest, "rows", "a CSV batch starts with a header row: subject,reference[,authorization]")
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	si, ok1 := col["subject"]
	ri, ok2 := col["reference"]
	ai, hasAuth := col["authorization"]
	if !ok1 || !ok2 {
		return nil, fault.Field(fault.BadRequest, "rows", "the CSV header must name the columns subject and reference (and optionally authorization)")
	}
	var rows []api.BatchRow
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return rows, nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, fault.Field(fault.BadRequest, "rows", "CSV line %d: %s", pe.Line, pe.Err)
			}
			return nil, readError(err)
		}
		get := func(i int) string {
			if i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		row := api.BatchRow{Subject: get(si), Reference: get(ri)}
		if hasAuth {
			row.Authorization = get(ai)
		}
		if len(row.Subject)+len(row.Reference)+len(row.Authorization) > MaxBatchRowBytes {
			return nil, fault.Field(fault.BadRequest, "rows", "row %d is longer than %d bytes", len(rows)+1, MaxBatchRowBytes)
		}
		if rows = append(rows, row); len(rows) > checks.MaxBatchRows {
			return nil, tooManyRows()
		}
	}
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.checks()
	if err != nil {
		return err
	}
	job, err := svc.Job(r.Context(), c.id, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, job)
	return nil
}

// getJobResults streams a job's results so far as NDJSON.
func (s *Server) getJobResults(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.checks()
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if _, err := svc.Job(r.Context(), c.id, id); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	// Headers are sent: a failure from here on cuts the stream, which the
	// client sees as a short body against the job's row count.
	if err := svc.JobResults(r.Context(), c.id, id, w); err != nil {
		s.log.Warn("job results cut short", "error_type", fmt.Sprintf("%T", err))
	}
	return nil
}

func (s *Server) postClassification(w http.ResponseWriter, r *http.Request, c caller) error {
	svc, err := s.checks()
	if err != nil {
		return err
	}
	var in api.ClassificationRequest
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	ans, err := svc.Classify(r.Context(), c.id, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ans)
	return nil
}
