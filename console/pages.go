package console

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"credfed/api"
	"credfed/certs"
	"credfed/credit"
	"credfed/intake"
)

// --- federation ---

type regionNode struct {
	Region api.Region
	Health *NodeHealth
	Lag    uint64
	// CertSoon: the node's certificate ends within two days (it renews at
	// two thirds of its life, so this is a renewal that keeps failing).
	CertSoon bool
	Children []*regionNode
}

type federationData struct {
	Federation  string
	Tree        []*regionNode
	Revocations *api.RevocationList
	// ShowRevocations: an operator's page, which lists the revocations
	// (RevocationsError: why it could not).
	ShowRevocations  bool
	RevocationsError string
	Now              time.Time
}

func (s *Server) federation(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	fed, err := c.Federation(r.Context())
	if err != nil {
		return err
	}
	health := map[string]*NodeHealth{}
	if s.cfg.Nodes != nil {
		for _, h := range s.cfg.Nodes(r.Context()) {
			health[h.Region] = &h
		}
	}
	var maxApplied uint64
	for _, h := range health {
		maxApplied = max(maxApplied, h.Applied)
	}
	byPath := map[string]*regionNode{}
	regions := slices.Clone(fed.Regions)
	slices.SortFunc(regions, func(a, b api.Region) int { return strings.Compare(a.Path, b.Path) })
	var roots []*regionNode
	for _, reg := range regions {
		n := &regionNode{Region: reg, Health: health[reg.Path]}
		if h := n.Health; h != nil && h.Reachable && !h.CertNotAfter.IsZero() && h.CertNotAfter.Sub(s.cfg.Now()) < 48*time.Hour {
			n.CertSoon = true
		}
		if n.Health != nil && n.Health.Reachable && maxApplied >= n.Health.Applied {
			n.Lag = maxApplied - n.Health.Applied
		}
		byPath[reg.Path] = n
		parent := ""
		if i := strings.LastIndexByte(reg.Path, '/'); i > 0 {
			parent = reg.Path[:i]
		}
		if p, ok := byPath[parent]; ok {
			p.Children = append(p.Children, n)
		} else {
			roots = append(roots, n)
		}
	}
	d := federationData{Federation: fed.Federation, Tree: roots, Now: s.cfg.Now()}
	v := s.view(r, sess, "nav.federation")
	if sess.Account.Role == certs.Operator {
		// The tree is worth showing even when the list cannot be read.
		d.ShowRevocations = true
		if d.Revocations, err = c.Revocations(r.Context()); err != nil {
			d.RevocationsError = apiMessage(v, err)
		}
	}
	v.Data = d
	s.render(w, v, "federation", http.StatusOK)
	return nil
}

// --- check ---

type checkData struct {
	Catalog *api.Catalog
	// Scenarios are those whose purpose admits the account's role.
	Scenarios []credit.Scenario
	// Printed is what a printed answer says of itself: who checked whom,
	// when, where.
	Printed printed
	Form    api.CheckRequest
	Answer  *api.CheckAnswer
	// Groups are the answer's records by district.
	Groups []districtGroup
}

type districtGroup struct {
	District api.DistrictResult
	Lists    map[string]bool
}

func (s *Server) checkForm(r *http.Request, sess *Session, c *api.Client) (*view, *checkData, error) {
	cat, err := c.Catalog(r.Context())
	if err != nil {
		return nil, nil, err
	}
	v := s.view(r, sess, "nav.check")
	d := &checkData{Catalog: cat, Scenarios: scenariosFor(cat, sess.Account.Role)}
	v.Data = d
	return v, d, nil
}

// printed heads a printed check: the subject masked, the time, the
// officer and the node.
type printed struct {
	Subject, At, Account, Institution, Node, Region string
}

// scenariosFor are the catalog's scenarios whose purpose admits role:
// the API refuses the others.
func scenariosFor(cat *api.Catalog, role certs.Role) []credit.Scenario {
	admits := map[string]bool{}
	for _, p := range cat.Purposes {
		admits[p.Code] = p.Admits(string(role))
	}
	var out []credit.Scenario
	for _, sc := range cat.Scenarios {
		if admits[sc.Purpose] {
			out = append(out, sc)
		}
	}
	return out
}

func (s *Server) getCheck(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	v, _, err := s.checkForm(r, sess, c)
	if err != nil {
		return err
	}
	s.render(w, v, "check", http.StatusOK)
	return nil
}

func (s *Server) postCheck(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	v, d, err := s.checkForm(r, sess, c)
	if err != nil {
		return err
	}
	d.Form = api.CheckRequest{Subject: strings.TrimSpace(r.PostFormValue("subject")), Scenario: r.PostFormValue("scenario"),
		Reference:     strings.TrimSpace(r.PostFormValue("reference")),
		Authorization: strings.TrimSpace(r.PostFormValue("authorization")), User: sess.Account.Name}
	if _, err := credit.ParseSubject(d.Form.Subject, s.cfg.Identifiers); err != nil {
		v.Error = identifierMessage(v.Lang, err)
		s.render(w, v, "check", http.StatusBadRequest)
		return nil
	}
	ans, err := c.Check(r.Context(), d.Form)
	if err != nil {
		v.Error = apiMessage(v, err)
		s.render(w, v, "check", statusOf(err))
		return nil
	}
	d.Answer = ans
	d.Printed = printed{Subject: credit.MaskIdentifier(d.Form.Subject), At: s.cfg.Now().In(credit.ChinaStandardTime).Format("2006-01-02 15:04:05 MST"),
		Account: sess.Account.Name, Institution: sess.Account.Institution, Node: s.cfg.NodeName, Region: s.cfg.Region}
	for _, dr := range ans.Districts {
		d.Groups = append(d.Groups, districtGroup{District: dr})
	}
	d.Form.Subject = "" // the identifier is not written back into the page
	s.render(w, v, "check", http.StatusOK)
	return nil
}

func statusOf(err error) int {
	var se *api.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return http.StatusBadGateway
}

// postValidate checks an identifier as it is typed; it answers JSON.
func (s *Server) postValidate(w http.ResponseWriter, r *http.Request, sess *Session, _ *api.Client) error {
	id := strings.TrimSpace(r.PostFormValue("subject"))
	ans := struct {
		OK      bool   `json:"ok"`
		Kind    string `json:"kind,omitempty"`
		Message string `json:"message,omitempty"`
	}{}
	lang := langOf(r)
	if sub, err := credit.ParseSubject(id, s.cfg.Identifiers); err != nil {
		ans.Message = identifierMessage(lang, err)
	} else {
		ans.OK = true
		ans.Kind = message(lang, "kind."+sub.Kind.String())
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(ans)
}

// identifierMessage is an identifier's refusal in the page's language;
// it never repeats the identifier.
func identifierMessage(lang string, err error) string {
	var ie *credit.IdentifierError
	if errors.As(err, &ie) {
		if lang == "en" {
			return "Invalid identifier: " + ie.Message
		}
		return message(lang, "idrule."+ie.Rule) + "（" + ie.Message + "）"
	}
	return message(lang, "idrule.other")
}

// --- batch checks ---

type batchData struct {
	Catalog   *api.Catalog
	Scenarios []credit.Scenario
	// Jobs are the session's recent jobs, newest first.
	Jobs    []string
	Job     *api.Job
	Percent int
}

// MaxBatchRows bounds the rows of one uploaded batch file, and
// MaxBatchUpload its request.
const (
	MaxBatchRows   = 100000
	MaxBatchUpload = 32 << 20
)

func (s *Server) getBatch(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	cat, err := c.Catalog(r.Context())
	if err != nil {
		return err
	}
	v := s.view(r, sess, "nav.batch")
	v.Data = batchData{Catalog: cat, Scenarios: scenariosFor(cat, sess.Account.Role), Jobs: sess.recentJobs()}
	s.render(w, v, "batch", http.StatusOK)
	return nil
}

func (s *Server) postBatch(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	cat, err := c.Catalog(r.Context())
	if err != nil {
		return err
	}
	v := s.view(r, sess, "nav.batch")
	v.Data = batchData{Catalog: cat, Scenarios: scenariosFor(cat, sess.Account.Role), Jobs: sess.recentJobs()}
	f, _, err := r.FormFile("file")
	if err != nil {
		v.Error = v.T("batch.nofile")
		s.render(w, v, "batch", http.StatusBadRequest)
		return nil
	}
	defer f.Close()
	rows, err := readBatchRows(f)
	if err != nil {
		v.Error = v.T("batch.badfile") + ": " + err.Error()
		s.render(w, v, "batch", http.StatusBadRequest)
		return nil
	}
	job, err := c.SubmitBatch(r.Context(), api.BatchCheckRequest{Scenario: r.PostFormValue("scenario"),
		User: sess.Account.Name, Rows: rows})
	if err != nil {
		v.Error = apiMessage(v, err)
		s.render(w, v, "batch", statusOf(err))
		return nil
	}
	sess.addJob(job.ID)
	http.Redirect(w, r, "/console/jobs/"+url.PathEscape(job.ID), http.StatusSeeOther)
	return nil
}

// readBatchRows reads a CSV of subject,reference[,authorization]; a first
// line naming the columns is skipped. Errors name the line, never its
// content.
func readBatchRows(f io.Reader) ([]api.BatchRow, error) {
	body, err := io.ReadAll(io.LimitReader(f, MaxBatchUpload))
	if err != nil {
		return nil, errors.New("the file could not be read")
	}
	if err := csvWidth(body); err != nil {
		return nil, err
	}
	cr := csv.NewReader(bytes.NewReader(body))
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	var rows []api.BatchRow
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("line %d is not CSV", line)
		}
		if line == 1 && len(rec) > 0 && strings.EqualFold(strings.TrimSpace(rec[0]), "subject") {
			continue
		}
		if len(rec) < 2 || len(rec) > 3 {
			return nil, fmt.Errorf("line %d has %d columns (subject, reference and an optional authorization)", line, len(rec))
		}
		row := api.BatchRow{Subject: strings.TrimSpace(rec[0]), Reference: strings.TrimSpace(rec[1])}
		if len(rec) == 3 {
			row.Authorization = strings.TrimSpace(rec[2])
		}
		rows = append(rows, row)
		if len(rows) > MaxBatchRows {
			return nil, fmt.Errorf("more than %d rows", MaxBatchRows)
		}
	}
	if len(rows) == 0 {
		return nil, errors.New("no rows")
	}
	return rows, nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	job, err := c.Job(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	v := s.view(r, sess, "batch.job")
	v.Data = batchData{Job: job, Percent: percent(job)}
	s.render(w, v, "job", http.StatusOK)
	return nil
}

func percent(j *api.Job) int {
	if j.Rows == 0 {
		return 0
	}
	return j.Done * 100 / j.Rows
}

// getJobStatus is the job's progress as JSON, which the job page polls.
func (s *Server) getJobStatus(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	job, err := c.Job(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(struct {
		Status  string `json:"status"`
		Rows    int    `json:"rows"`
		Done    int    `json:"done"`
		Failed  int    `json:"failed"`
		Percent int    `json:"percent"`
		Label   string `json:"label"`
	}{job.Status, job.Rows, job.Done, job.Failed, percent(job), message(langOf(r), "job."+job.Status)})
}

// getJobResults downloads a job's results as CSV, one row per input row,
// as the API streams them: a job's results are too many to hold (100,000
// rows of whole check answers), and downloads may be several at once.
func (s *Server) getJobResults(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	id := r.PathValue("id")
	pr, pw := io.Pipe()
	defer pr.Close() // stops the copy if the download ends early
	go func() {
		_, err := c.JobResultsTo(r.Context(), id, pw)
		pw.CloseWithError(err)
	}()
	dec := json.NewDecoder(pr)
	var br api.BatchResult
	err := dec.Decode(&br)
	if err != nil && !errors.Is(err, io.EOF) {
		return err // the API's refusal: nothing is written yet
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="check-results.csv"`)
	cw := csv.NewWriter(w)
	// A byte-order mark: a spreadsheet on Chinese Windows reads the file
	// as UTF-8 only with one.
	_, _ = io.WriteString(w, "\ufeff")
	_ = cw.Write([]string{"row", "reference", "subject", "status", "lists", "measures", "complete", "error"})
	for n := 1; err == nil; n, err = n+1, dec.Decode(&br) {
		var lists, measures []string
		complete, errText := "", ""
		if br.Check != nil {
			for _, l := range br.Check.Lists {
				lists = append(lists, strings.TrimSpace(l.Name+" ("+l.List+")"))
			}
			for _, m := range br.Check.Measures {
				measures = append(measures, m.Code)
			}
			complete = strconv.FormatBool(br.Check.Complete)
		}
		if br.Error != nil {
			errText = br.Error.Code + ": " + br.Error.Message
		}
		if werr := cw.Write([]string{strconv.Itoa(br.Row + 1), csvSafe(br.Reference), br.Subject, br.Status,
			csvSafe(strings.Join(lists, "; ")), strings.Join(measures, "; "), complete, csvSafe(errText)}); werr != nil {
			return nil // the browser went away
		}
		if n == 1 || n%1000 == 0 { // the download shows it has begun
			cw.Flush()
			_ = http.NewResponseController(w).Flush()
		}
		br = api.BatchResult{}
	}
	cw.Flush()
	if !errors.Is(err, io.EOF) {
		// Cut short: the download fails rather than look complete.
		s.log.Warn("console: a job's results were cut short", "error_type", fmt.Sprintf("%T", err))
		panic(http.ErrAbortHandler)
	}
	return nil
}

// csvSafe keeps a spreadsheet from reading a cell as a formula.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// --- records ---

type recordsData struct {
	Record *api.Record
	Find   string
	Upload *uploadResult
	// List is a page of the department's records (GET /v1/records),
	// filtered by Item and Status, from the cursor After on; Statuses are
	// the statuses the filter offers.
	List                *api.RecordPage
	Item, Status, After string
	Statuses            []string
}

// listStatuses are the statuses the records list filters by (a latest
// version is never "corrected").
var listStatuses = []string{string(credit.StatusActive), string(credit.StatusDisputed), string(credit.StatusRepaired),
	string(credit.StatusExpired), string(credit.StatusRevoked)}

type uploadResult struct {
	Accepted, Duplicates, Rejected int
	Report                         string // path of the rejection report
}

func (s *Server) getRecords(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	v := s.view(r, sess, "nav.records")
	in := r.URL.Query()
	d := recordsData{Find: strings.TrimSpace(in.Get("id")), Item: strings.TrimSpace(in.Get("item")),
		Status: in.Get("status"), After: in.Get("after"), Statuses: listStatuses}
	status := http.StatusOK
	if n, err := strconv.Atoi(in.Get("corrected")); err == nil && n > 0 && sess.did(doneAct{"records", in.Get("id"), strconv.Itoa(n), ""}) {
		v.Notice = v.Tf("records.corrected", n)
	}
	if d.Find != "" {
		rec, err := c.Record(r.Context(), d.Find)
		if err != nil {
			v.Error, status = apiMessage(v, err), statusOf(err)
		} else {
			d.Record = rec
		}
	}
	// The department's records, below the search: the API refuses a bad
	// filter or cursor with its reason.
	page, err := c.Records(r.Context(), api.RecordQuery{Item: d.Item, Status: d.Status, After: d.After, Limit: recordsPerPage})
	switch {
	case err == nil:
		d.List = page
	case v.Error == "":
		v.Error, status = apiMessage(v, err), statusOf(err)
	}
	v.Data = d
	s.render(w, v, "records", status)
	return nil
}

// recordsPerPage is the Records page's list: a screen's worth.
const recordsPerPage = 25

// MaxUpload bounds an uploaded records file.
const MaxUpload = 64 << 20

// postRecords submits an uploaded file of records (NDJSON, a JSON array,
// or CSV with a header of the API's field names). A request that asks
// for JSON (the page's script, which shows the upload's progress) gets
// the counts as JSON.
func (s *Server) postRecords(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	v := s.view(r, sess, "nav.records")
	d := recordsData{}
	v.Data = d
	wantJSON := strings.Contains(r.Header.Get("Accept"), "application/json")
	fail := func(status int, msg string) error {
		if wantJSON {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			return json.NewEncoder(w).Encode(map[string]string{"error": msg})
		}
		v.Error = msg
		s.render(w, v, "records", status)
		return nil
	}
	f, hdr, err := r.FormFile("file")
	if err != nil {
		return fail(http.StatusBadRequest, v.T("records.nofile"))
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, MaxUpload+1))
	if err != nil || len(body) > MaxUpload {
		return fail(http.StatusBadRequest, v.T("records.toolarge"))
	}
	ndjson, lines, err := toNDJSONLines(hdr.Filename, body)
	if errors.Is(err, errNotUTF8) {
		return fail(http.StatusBadRequest, v.T("records.not_utf8"))
	}
	if err != nil {
		return fail(http.StatusBadRequest, v.T("records.badfile")+": "+err.Error())
	}
	ans, _, err := c.SubmitNDJSON(r.Context(), ndjson)
	if err != nil {
		return fail(statusOf(err), apiMessage(v, err))
	}
	res := &uploadResult{}
	var rep bytes.Buffer
	cw := csv.NewWriter(&rep)
	_ = cw.Write([]string{"record", "line", "id", "status", "code", "field", "message"})
	for _, rr := range ans.Results {
		switch rr.Status {
		case "accepted":
			res.Accepted++
		case "duplicate":
			res.Duplicates++
		default:
			res.Rejected++
			code, field, msg := "", "", ""
			if rr.Error != nil {
				code, field, msg = rr.Error.Code, rr.Error.Field, rr.Error.Message
			}
			line := ""
			if rr.Index >= 0 && rr.Index < len(lines) {
				line = strconv.Itoa(lines[rr.Index])
			}
			_ = cw.Write([]string{strconv.Itoa(rr.Index + 1), line, csvSafe(rr.ID), rr.Status, code, field, csvSafe(msg)})
		}
	}
	cw.Flush()
	if res.Rejected > 0 {
		res.Report = "/console/records/reports/" + s.reports.add(sess, rep.Bytes(), s.cfg.Now())
	}
	if wantJSON {
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(map[string]any{"accepted": res.Accepted, "duplicates": res.Duplicates,
			"rejected": res.Rejected, "report": res.Report,
			"summary": v.Tf("records.summary", res.Accepted, res.Duplicates, res.Rejected)})
	}
	d.Upload = res
	v.Data = d
	s.render(w, v, "records", http.StatusOK)
	return nil
}

// maxCSVColumns bounds the fields of one line of an uploaded CSV file:
// the reader holds a record's fields at once, 16 bytes and more each,
// so that a line of commas would take a hundred times its size.
const maxCSVColumns = 64

// csvWidth refuses a CSV file with a record of more than maxCSVColumns
// fields, before it is parsed. It counts the commas outside quotes, as
// the reader splits; where the two could differ (a stray quote) the
// reader refuses the record where it differs.
func csvWidth(body []byte) error {
	quoted := false
	fields, line := 1, 1
	for _, b := range body {
		switch {
		case b == '"':
			quoted = !quoted
		case b == '\n':
			line++
			if !quoted {
				fields = 1
			}
		case b == ',' && !quoted:
			if fields++; fields > maxCSVColumns {
				return fmt.Errorf("line %d has more than %d columns", line, maxCSVColumns)
			}
		}
	}
	return nil
}

// toNDJSON turns an uploaded file into the API's NDJSON: at most
// intake.MaxRecordsPerRequest records, what the API takes at once.
func toNDJSON(name string, body []byte) ([]byte, error) {
	out, _, err := toNDJSONLines(name, body)
	return out, err
}

// errNotUTF8: the file is not UTF-8 text (a GBK export of a spreadsheet).
var errNotUTF8 = errors.New("the file is not UTF-8 text")

// toNDJSONLines is toNDJSON that also says on which line of the file
// each record starts (nil for a JSON array: records are counted there).
func toNDJSONLines(name string, body []byte) ([]byte, []int, error) {
	if !utf8.Valid(body) {
		return nil, nil, errNotUTF8
	}
	out, lines, err := convertRecords(body)
	return out, lines, err
}

func convertRecords(body []byte) ([]byte, []int, error) {
	tooMany := fmt.Errorf("more than %d records (the most one upload may hold)", intake.MaxRecordsPerRequest)
	trimmed := bytes.TrimSpace(body)
	switch {
	case len(trimmed) == 0:
		return nil, nil, errors.New("the file is empty")
	case trimmed[0] == '[':
		// Element by element: a slice of all of them would take forty
		// times the file's size.
		notArray := errors.New("not a JSON array of records")
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		if _, err := dec.Token(); err != nil {
			return nil, nil, notArray
		}
		var out bytes.Buffer
		for n := 0; dec.More(); n++ {
			if n == intake.MaxRecordsPerRequest {
				return nil, nil, tooMany
			}
			var rec json.RawMessage
			if err := dec.Decode(&rec); err != nil {
				return nil, nil, notArray
			}
			if err := json.Compact(&out, rec); err != nil {
				return nil, nil, notArray
			}
			out.WriteByte('\n')
		}
		if t, err := dec.Token(); err != nil || t != json.Delim(']') {
			return nil, nil, notArray
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, nil, notArray
		}
		return out.Bytes(), nil, nil
	case trimmed[0] == '{':
		// NDJSON: the lines with a record, and where each is.
		var out bytes.Buffer
		var lines []int
		// Line by line, not bytes.Split: a slice of every line would take
		// 24 bytes for each byte of a file of newlines.
		for n, rest := 1, body; len(rest) > 0; n++ {
			var line []byte
			line, rest, _ = bytes.Cut(rest, []byte("\n"))
			if line = bytes.TrimSpace(line); len(line) == 0 {
				continue
			}
			if len(lines) == intake.MaxRecordsPerRequest {
				return nil, nil, tooMany
			}
			lines = append(lines, n)
			out.Write(line)
			out.WriteByte('\n')
		}
		return out.Bytes(), lines, nil
	}
	// CSV: the first line names the fields (the API's JSON names).
	if err := csvWidth(body); err != nil {
		return nil, nil, err
	}
	cr := csv.NewReader(bytes.NewReader(body))
	cr.TrimLeadingSpace = true
	head, err := cr.Read()
	if err != nil {
		return nil, nil, errors.New("neither NDJSON, a JSON array nor CSV with a header line")
	}
	for i := range head {
		head[i] = strings.TrimSpace(strings.TrimPrefix(head[i], "\ufeff"))
	}
	var out bytes.Buffer
	var lines []int
	enc := json.NewEncoder(&out)
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("line %d is not CSV with %d columns", line, len(head))
		}
		if line-1 > intake.MaxRecordsPerRequest {
			return nil, nil, tooMany
		}
		at, _ := cr.FieldPos(0)
		lines = append(lines, at)
		obj := map[string]string{}
		for i, h := range head {
			if rec[i] != "" {
				obj[h] = rec[i]
			}
		}
		if err := enc.Encode(obj); err != nil {
			return nil, nil, err
		}
	}
	return out.Bytes(), lines, nil
}

func (s *Server) getReport(w http.ResponseWriter, r *http.Request, sess *Session, _ *api.Client) error {
	rep, ok := s.reports.get(sess, r.PathValue("id"))
	if !ok {
		s.renderError(w, r, sess, http.StatusNotFound, "error.notfound")
		return nil
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="rejections.csv"`)
	_, err := w.Write(rep)
	return err
}

func (s *Server) postCorrect(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	id := r.PathValue("id")
	corr := api.Correction{Reason: strings.TrimSpace(r.PostFormValue("reason"))}
	set := func(field string, p **string) {
		if val := strings.TrimSpace(r.PostFormValue(field)); val != "" {
			*p = &val
		}
	}
	set("summary", &corr.Summary)
	set("decision_number", &corr.DecisionNumber)
	set("occurred_on", &corr.OccurredOn)
	set("decided_on", &corr.DecidedOn)
	v := s.view(r, sess, "nav.records")
	rec, err := c.Correct(r.Context(), id, corr)
	if err != nil {
		v.Error = apiMessage(v, err)
		old, _ := c.Record(r.Context(), id)
		v.Data = recordsData{Record: old, Find: id}
		s.render(w, v, "records", statusOf(err))
		return nil
	}
	// Post/redirect/get: a reload does not correct again, and the page's
	// address is one the language switch can open.
	sess.addDone(doneAct{"records", id, strconv.Itoa(rec.Version), ""})
	http.Redirect(w, r, "/console/records?"+url.Values{"id": {id}, "corrected": {strconv.Itoa(rec.Version)}}.Encode(), http.StatusSeeOther)
	return nil
}

// --- objections and repairs ---

type casesData struct {
	Kind, State string
	Cases       []api.Case
	Outcomes    []string
}

var caseKinds = map[string][]string{"objections": {"upheld", "corrected", "revoked"}, "repairs": {"approved", "rejected"}}

func (s *Server) getCases(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	notice := ""
	q := r.URL.Query()
	if id, outcome := q.Get("decided"), q.Get("outcome"); id != "" && slices.Contains(caseKinds[q.Get("kind")], outcome) &&
		sess.did(doneAct{"cases", q.Get("kind"), id, outcome}) {
		// After a decision of this session (postDecide's redirect), not
		// because a link says so: the id is shown escaped.
		v := s.view(r, sess, "nav.cases")
		notice = v.Tf("cases.decided", id, v.T("outcome."+outcome))
	}
	return s.showCases(w, r, sess, c, "", notice)
}

func (s *Server) showCases(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client, errText, notice string) error {
	kind := r.FormValue("kind")
	if _, ok := caseKinds[kind]; !ok {
		kind = "objections"
	}
	state := r.FormValue("state")
	if state != "decided" {
		state = "open"
	}
	cs, err := c.Cases(r.Context(), kind, state)
	if err != nil {
		return err
	}
	// Overdue first, then the nearest deadline.
	slices.SortStableFunc(cs.Cases, func(a, b api.Case) int {
		if a.Overdue != b.Overdue {
			if a.Overdue {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Deadline, b.Deadline)
	})
	v := s.view(r, sess, "nav.cases")
	v.Error, v.Notice = errText, notice
	v.Data = casesData{Kind: kind, State: state, Cases: cs.Cases, Outcomes: caseKinds[kind]}
	status := http.StatusOK
	if errText != "" {
		status = http.StatusBadRequest
	}
	s.render(w, v, "cases", status)
	return nil
}

func (s *Server) postDecide(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	kind := r.PathValue("kind")
	if _, ok := caseKinds[kind]; !ok {
		s.renderError(w, r, sess, http.StatusNotFound, "error.notfound")
		return nil
	}
	d := api.CaseDecision{Outcome: r.PostFormValue("outcome"), Reason: strings.TrimSpace(r.PostFormValue("reason"))}
	if sum := strings.TrimSpace(r.PostFormValue("summary")); sum != "" && d.Outcome == "corrected" {
		d.Correction = &api.Correction{Summary: &sum, Reason: d.Reason}
	}
	v := s.view(r, sess, "nav.cases")
	got, err := c.Decide(r.Context(), kind, r.PathValue("id"), d)
	if err != nil {
		return s.showCases(w, r, sess, c, apiMessage(v, err), "")
	}
	sess.addDone(doneAct{"cases", kind, got.ID, got.Outcome})
	http.Redirect(w, r, "/console/cases?"+url.Values{"kind": {kind}, "decided": {got.ID}, "outcome": {got.Outcome}}.Encode(), http.StatusSeeOther)
	return nil
}

// --- audit ---

type auditData struct {
	Filter url.Values
	Page   *api.AuditPage
	Flags  []querierFlag
}

type querierFlag struct {
	Institution string
	Flag        api.QuerierFlag
}

func (s *Server) getAudit(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	q := url.Values{}
	in := r.URL.Query()
	for _, k := range []string{"operation", "institution"} {
		if val := strings.TrimSpace(in.Get(k)); val != "" {
			q.Set(k, val)
		}
	}
	for _, k := range []string{"from", "to"} {
		if val := strings.TrimSpace(in.Get(k)); val != "" {
			t, err := time.ParseInLocation("2006-01-02T15:04", val, credit.ChinaStandardTime)
			if err != nil {
				if t, err = time.ParseInLocation("2006-01-02", val, credit.ChinaStandardTime); err != nil {
					v := s.view(r, sess, "nav.audit")
					v.Error = v.T("audit.baddate")
					v.Data = auditData{Filter: in}
					s.render(w, v, "audit", http.StatusBadRequest)
					return nil
				}
				if k == "to" {
					t = t.Add(24*time.Hour - time.Nanosecond)
				}
			}
			q.Set(k, t.UTC().Format(time.RFC3339))
		}
	}
	if after := in.Get("after"); after != "" {
		q.Set("after", after)
	}
	q.Set("limit", "100")
	var page api.AuditPage
	if _, err := c.Do(r.Context(), "GET", "/v1/audit?"+q.Encode(), "", nil, &page); err != nil {
		return err
	}
	d := auditData{Filter: in, Page: &page}
	var qs api.Queriers
	// A node that tracks no queriers answers not found: no flags to show.
	if _, err := c.Do(r.Context(), "GET", "/v1/audit/queriers", "", nil, &qs); err == nil {
		for _, q := range qs.Institutions {
			for _, f := range q.Flags {
				d.Flags = append(d.Flags, querierFlag{Institution: q.Institution, Flag: f})
			}
		}
	}
	v := s.view(r, sess, "nav.audit")
	v.Data = d
	s.render(w, v, "audit", http.StatusOK)
	return nil
}

// --- statistics ---

type bar struct {
	Label string
	Value int64
	Known bool
	// Width is the bar's share of the chart's width, 0–100.
	Width float64
}

type chart struct {
	Title string
	Bars  []bar
	// Height is the SVG's height.
	Height int
}

// maxBars bounds a chart: the largest counts are shown, the rest summed
// in the table of GET /v1/stats.
const maxBars = 12

// newChart is a ranking: the largest counts first, zeros left out (the
// statistics' JSON has them), at most maxBars.
func newChart(title string, labels []string, cells []api.Cell) chart {
	ch := orderedChart(title, labels, cells)
	ch.Bars = slices.DeleteFunc(ch.Bars, func(b bar) bool { return b.Known && b.Value == 0 })
	slices.SortStableFunc(ch.Bars, func(a, b bar) int { return cmp.Compare(b.Value, a.Value) })
	if len(ch.Bars) > maxBars {
		ch.Bars = ch.Bars[:maxBars]
	}
	ch.Height = 28*len(ch.Bars) + 8
	return ch
}

// orderedChart keeps its bars in the order given, zeros too (the age
// buckets: a scale, not a ranking). A suppressed count (under 5) is a
// bar of unknown length.
func orderedChart(title string, labels []string, cells []api.Cell) chart {
	ch := chart{Title: title}
	var top int64 = 1
	for _, c := range cells {
		if c.Value != nil {
			top = max(top, *c.Value)
		}
	}
	for i, c := range cells {
		b := bar{Label: labels[i]}
		if c.Value != nil {
			b.Value, b.Known = *c.Value, true
			b.Width = float64(*c.Value) * 100 / float64(top)
		}
		ch.Bars = append(ch.Bars, b)
	}
	ch.Height = 28*len(ch.Bars) + 8
	return ch
}

type statsData struct {
	Stats  *api.Stats
	Charts []chart
}

func (s *Server) getStats(w http.ResponseWriter, r *http.Request, sess *Session, c *api.Client) error {
	st, err := c.Stats(r.Context())
	if err != nil {
		return err
	}
	purposeName := map[string]string{}
	if cat, err := c.Catalog(r.Context()); err == nil {
		for _, p := range cat.Purposes {
			purposeName[p.Code] = p.Name
		}
	}
	v := s.view(r, sess, "nav.stats")
	d := statsData{Stats: st}
	var labels []string
	var cells []api.Cell
	for _, row := range st.Records.Districts {
		labels = append(labels, cmp.Or(row.Name, row.District))
		cells = append(cells, row.Total)
	}
	d.Charts = append(d.Charts, newChart(v.T("stats.records_by_district"), labels, cells))
	labels, cells = nil, nil
	for _, cat := range st.Records.Categories {
		labels = append(labels, cmp.Or(cat.DomainName, cat.Domain)+" · "+v.T("polarity."+cat.Polarity)+v.T("severity."+cat.Severity))
		cells = append(cells, cat.Total)
	}
	d.Charts = append(d.Charts, newChart(v.T("stats.records_by_domain"), labels, cells))
	labels, cells = nil, nil
	for _, p := range st.Lookups.Purposes {
		labels = append(labels, cmp.Or(purposeName[p.Purpose], p.Purpose))
		cells = append(cells, p.Total)
	}
	d.Charts = append(d.Charts, newChart(v.T("stats.lookups_by_purpose"), labels, cells))
	labels, cells = nil, nil
	for _, p := range st.Checks.Purposes {
		labels = append(labels, cmp.Or(purposeName[p.Purpose], p.Purpose))
		cells = append(cells, p.Total)
	}
	d.Charts = append(d.Charts, newChart(v.T("stats.checks_by_purpose"), labels, cells))
	labels, cells = nil, nil
	for _, row := range st.Cases.Districts {
		name := cmp.Or(row.Name, row.District)
		labels = append(labels, name+" · "+v.T("stats.open"), name+" · "+v.T("stats.overdue"))
		cells = append(cells, row.Objections.Open, row.Objections.Overdue)
	}
	d.Charts = append(d.Charts, newChart(v.T("stats.objections"), labels, cells))
	if ages := st.Cases.ObjectionAges; len(ages) == len(st.Cases.AgeBuckets)+1 {
		labels = nil
		lo := 0
		for _, hi := range st.Cases.AgeBuckets {
			labels = append(labels, v.Tf("stats.age_range", lo, hi))
			lo = hi + 1
		}
		labels = append(labels, v.Tf("stats.age_over", lo-1))
		d.Charts = append(d.Charts, orderedChart(v.T("stats.objection_ages"), labels, ages))
	}
	v.Data = d
	s.render(w, v, "stats", http.StatusOK)
	return nil
}
