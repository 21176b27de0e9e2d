package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"credfed/api"
	"credfed/credit"
)

// Purpose is the purpose of every lookup the bench makes; it sees the
// bench's catalog items and needs no authorization of the subject.
const Purpose = "ADMIN-LICENSING"

// benchItems are the catalog items of the synthetic records (persons,
// negative, displayed for a year, visible to Purpose).
var benchItems = []string{"FOOD-DRUG-PENALTY", "PRODUCTION-SAFETY-PENALTY"}

// Row is one synthetic record, as credfed takes it and as the central
// copy stores it.
type Row struct {
	District   string // region path of the holding district
	Department string
	ID         string
	api.RecordInput
	Polarity, Severity, LegalBasis string
	DisplayUntil                   credit.Date
}

// person is the i-th synthetic subject: a citizen identity number of the
// reserved test province 99, distinct for every i below 10^7 × 18,000.
func person(i int) string {
	birth := credit.NewDate(1950, time.January, 1).AddDays(i / 10_000_000)
	return credit.SyntheticPerson(i%10_000_000, birth)
}

// rowMaker builds synthetic rows against the catalog.
type rowMaker struct {
	cat     *credit.Catalog
	decided credit.Date
	dept    string
}

func newRowMaker(cat *credit.Catalog, department string, now time.Time) (*rowMaker, error) {
	for _, code := range benchItems {
		it, ok := cat.Item(code)
		if !ok {
			return nil, fmt.Errorf("bench: the catalog has no item %s", code)
		}
		if !visibleTo(it, Purpose) {
			return nil, fmt.Errorf("bench: catalog item %s is not visible to purpose %s", code, Purpose)
		}
	}
	return &rowMaker{cat: cat, decided: credit.TodayAt(now).AddDays(-4), dept: department}, nil
}

func visibleTo(it credit.Item, purpose string) bool {
	for _, p := range it.Purposes {
		if p == purpose {
			return true
		}
	}
	return false
}

// row is the synthetic record id of subject at district.
func (m *rowMaker) row(district, id, subject string, n int) Row {
	it, _ := m.cat.Item(benchItems[n%len(benchItems)])
	return Row{District: district, Department: m.dept, ID: id,
		RecordInput: api.RecordInput{ID: id, Subject: subject, CatalogItem: it.Code,
			DecisionNumber: fmt.Sprintf("基准罚〔%d〕%d号", m.decided.Time().Year(), n),
			OccurredOn:     m.decided.AddDays(-8).String(), DecidedOn: m.decided.String(),
			Summary: fmt.Sprintf("%s（合成基准数据，第%d号）", it.Name, n)},
		Polarity: string(it.Polarity), Severity: string(it.Severity), LegalBasis: it.LegalBasis,
		DisplayUntil: it.DisplayPeriod.AddTo(m.decided)}
}

// Dataset is the data loaded before the rounds: subjects spread over the
// districts, every dualEvery-th of them in a second district too. Its rows
// are made when they are loaded (Rows), a chunk at a time, so that the
// bench's memory does not grow with the data set (12 M rows held at once
// took 14 GiB).
type Dataset struct {
	Subjects int
	// Districts are the districts' region paths, in the order rows are
	// spread over them.
	Districts []string
	// Dual are the subjects with a record in two districts: the ones the
	// lookups ask for.
	Dual []string
	// Records counts the rows.
	Records int
	m       *rowMaker
}

// dualEvery makes every 5th subject present in two districts.
const dualEvery = 5

// newDataset states n subjects' rows over the districts.
func newDataset(m *rowMaker, districts []string, n int) *Dataset {
	d := &Dataset{Subjects: n, Districts: districts, m: m}
	for i := range n {
		if d.dual(i) {
			d.Dual = append(d.Dual, person(i))
		}
	}
	d.Records = n + len(d.Dual)
	return d
}

func (d *Dataset) dual(i int) bool { return i%dualEvery == 0 && len(d.Districts) > 1 }

// Rows calls fn with district's rows in order, in new slices of at most
// size rows (fn may keep them); fn's error stops it. Subject i's record is
// in district i mod the districts, and a dual subject's second one in
// another district chosen by i; rows are numbered across the data set in
// subject order (the home record, then the second), which picks each
// row's catalog item, and ids count up within the district.
func (d *Dataset) Rows(district string, size int, fn func([]Row) error) error {
	k := slices.Index(d.Districts, district)
	if k < 0 {
		return fmt.Errorf("bench: %s is not a district of the data set", district)
	}
	nd := len(d.Districts)
	var chunk []Row
	local := 0
	add := func(subject string, n int) error {
		if chunk == nil {
			chunk = make([]Row, 0, size)
		}
		chunk = append(chunk, d.m.row(district, fmt.Sprintf("BENCH-%08d", local), subject, n))
		local++
		if len(chunk) < size {
			return nil
		}
		full := chunk
		chunk = nil
		return fn(full)
	}
	for i := range d.Subjects {
		n := i // the rows before subject i's
		if nd > 1 {
			n += (i + dualEvery - 1) / dualEvery
		}
		home := i % nd
		if home == k {
			if err := add(person(i), n); err != nil {
				return err
			}
		}
		if d.dual(i) && (home+1+(i/nd)%(nd-1))%nd == k {
			if err := add(person(i), n+1); err != nil {
				return err
			}
		}
	}
	if len(chunk) > 0 {
		return fn(chunk)
	}
	return nil
}

// String states the data set's size.
func (d *Dataset) String() string {
	return fmt.Sprintf("%s subjects, %s records over %d districts (%s subjects in 2 districts; lookups ask for those)",
		thousands(int64(d.Subjects)), thousands(int64(d.Records)), len(d.Districts), thousands(int64(len(d.Dual))))
}

// intakeRows are n rows of new subjects for one district, numbered from
// first (each intake step gets subjects and ids of its own).
func intakeRows(m *rowMaker, district string, first, n int, prefix string) []Row {
	rows := make([]Row, n)
	for i := range rows {
		rows[i] = m.row(district, fmt.Sprintf("%s-%08d", prefix, i), person(first+i), first+i)
	}
	return rows
}

// ndjsonBatches encodes rows as NDJSON bodies of size rows each, as
// POST /v1/records takes them.
func ndjsonBatches(rows []Row, size int) ([][]byte, error) {
	var out [][]byte
	for start := 0; start < len(rows); start += size {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		for _, r := range rows[start:min(start+size, len(rows))] {
			if err := enc.Encode(r.RecordInput); err != nil {
				return nil, err
			}
		}
		out = append(out, b.Bytes())
	}
	return out, nil
}
