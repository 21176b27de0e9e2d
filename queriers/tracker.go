// Package queriers holds the institutions that query the federation to
// account: quotas per institution and purpose (over quota is
// too_many_requests with the reset time), anomaly flags on their use, and
// the reviewers' report of GET /v1/audit/queriers, in counts only.
package queriers

import (
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"credfed/api"
	"credfed/fault"
)

// otherName is the shared account of the institutions beyond
// Config.MaxInstitutions, and of the purposes beyond maxPurposes; no
// institution or purpose code is written so (they are [a-z0-9-]).
const otherName = "(other)"

// Bounds of an institution's account.
const (
	// maxPurposes bounds the purposes counted one by one; the others are
	// counted under otherName.
	maxPurposes = 64
	// batchHistory is how many of its last batch sizes an institution's
	// median is of.
	batchHistory = 32
	// maxPending bounds the batch sizes whose rows are being counted.
	maxPending = 64
)

// Query is one query that ran, as Observe notes it.
type Query struct {
	// Institution and Purpose are as given to Admit.
	Institution, Purpose string
	// Subject is the subject's pseudonym (hex) and Reference the case
	// reference; the tracker keeps neither, only keyed 64-bit hashes of
	// them, for distinct counts within a window.
	Subject, Reference string
	// At is when the query was made (default: the tracker's clock).
	At time.Time
	// Batch is the number of rows of its batch, 1 (or 0) for a single
	// query. A batch is observed row by row, each with the same Batch:
	// every Batch rows of one size count as one batch.
	Batch int
}

// Tracker holds the quotas and the flags. It is safe for concurrent use;
// all of it sits behind one mutex (each call is a few map operations).
type Tracker struct {
	cfg      Config
	loc      *time.Location
	epoch    time.Time // windows are aligned to it: Monday 2000-01-03 00:00 in loc
	workFrom int       // working hours, minutes of the day
	workTo   int
	disabled map[string]bool
	// overrides holds the (institution, purpose, per) of the quotas naming
	// an institution, which replace the default quota with the same
	// purpose and per; named the institutions named in a quota, always
	// tracked. Both bounded by MaxQuotas.
	overrides map[overrideKey]bool
	named     map[string]bool
	seed      maphash.Seed

	mu    sync.Mutex
	insts map[string]*account // bounded: MaxInstitutions + len(named) + 1
	// entries counts the distinct-set entries of all accounts (at most
	// Flags.DistinctBudget); nextSweep is when the sets of an ended window
	// may next be given back.
	entries   int
	nextSweep time.Time

	flagsTotal *prometheus.CounterVec
	refusals   prometheus.Counter
}

type overrideKey struct {
	inst, purpose string
	per           Duration
}

// account is one institution's (or the overflow's) state. Every map is
// bounded: purposes by maxPurposes+1, windows by the quotas, subjects and
// refs by Flags.DistinctCap, pending by maxPending, flags by the four flags.
type account struct {
	name     string
	overflow bool
	queries  uint64
	admitted uint64
	refused  uint64
	purposes map[string]uint64
	windows  map[int]*window // quota index → its current window

	// The flags' window, and what it counted.
	winEnd                  time.Time
	winQueries, offHours    uint64
	subjects, refs          map[uint64]struct{}
	subjectsFull, refsFull  bool
	pending                 map[int]int // batch size → rows of its current batch seen
	history                 [batchHistory]int
	historyLen, historyNext int
	flags                   map[string]*flag
}

type window struct {
	used int
	end  time.Time
}

type flag struct {
	since, at           time.Time
	count               uint64
	observed, threshold float64
	basis               uint64
	purpose             string
}

// New returns a tracker of a configuration that Validate accepts; it
// panics on one that Validate refuses (node.Config.Validate runs it at
// start).
func New(cfg Config) *Tracker {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	cfg = cfg.withDefaults()
	loc, _ := loadLocation(cfg.TimeZone) // Validate loaded it
	from, to, _ := parseHours(cfg.Flags.WorkingHours)
	t := &Tracker{cfg: cfg, loc: loc, epoch: time.Date(2000, 1, 3, 0, 0, 0, 0, loc), workFrom: from, workTo: to,
		disabled: map[string]bool{}, overrides: map[overrideKey]bool{}, named: map[string]bool{},
		seed: maphash.MakeSeed(), insts: map[string]*account{},
		flagsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_querier_flags_total",
			Help: "Anomaly flags raised on querying institutions, by flag (a flag raised again within its hold period counts once).",
		}, []string{"flag"}),
		refusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "credfed_querier_quota_refusals_total", Help: "Requests of institutions refused over a query quota.",
		}),
	}
	for _, name := range cfg.Flags.Disable {
		t.disabled[name] = true
	}
	for _, name := range flagNames {
		t.flagsTotal.WithLabelValues(name)
	}
	for _, q := range cfg.Quotas {
		if q.Institution != "" {
			t.named[q.Institution] = true
			t.overrides[overrideKey{q.Institution, q.Purpose, q.Per}] = true
		}
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(t.flagsTotal, t.refusals, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "credfed_querier_institutions", Help: "Institutions whose queries the node accounts for one by one.",
		}, func() float64 {
			t.mu.Lock()
			defer t.mu.Unlock()
			return float64(len(t.insts))
		}))
	}
	return t
}

// windowOf returns the end of the window of length per that holds at:
// windows follow each other from t.epoch, so that a 24h window starts at
// midnight in the time zone and a 1h one on the hour.
func (t *Tracker) windowOf(at time.Time, per time.Duration) time.Time {
	d := at.Sub(t.epoch)
	n := d / per
	if d < 0 && d%per != 0 {
		n-- // floor, before the epoch
	}
	return t.epoch.Add((n + 1) * per)
}

// account returns the account of an institution, creating it; an
// institution beyond the cap (and not named in a quota) gets the overflow
// account.
func (t *Tracker) account(name string) *account {
	if a := t.insts[name]; a != nil {
		return a
	}
	if len(name) > maxName || name == otherName || (len(t.insts) >= t.cfg.MaxInstitutions && !t.named[name]) {
		a := t.insts[otherName]
		if a == nil {
			a = newAccount(otherName)
			a.overflow = true
			t.insts[otherName] = a
		}
		return a
	}
	a := newAccount(name)
	t.insts[name] = a
	return a
}

func newAccount(name string) *account {
	return &account{name: name, purposes: map[string]uint64{}, windows: map[int]*window{},
		subjects: map[uint64]struct{}{}, refs: map[uint64]struct{}{}, pending: map[int]int{}, flags: map[string]*flag{}}
}

// applies says whether quota i holds institution inst: it names it, or is
// a default quota that no quota naming inst replaces.
func (t *Tracker) applies(i int, inst string) bool {
	q := t.cfg.Quotas[i]
	if q.Institution != "" {
		return q.Institution == inst
	}
	return !t.overrides[overrideKey{inst, q.Purpose, q.Per}]
}

// Admit takes n queries of institution for purpose against every quota
// that holds them, all or nothing. Over a quota, it takes none and returns
// a fault.TooManyRequests whose message gives the time (RFC 3339, UTC) by
// which every quota it is over resets, and whose RetryAfter is the wait
// until then. A batch checks its rows at once: n is its number of rows.
func (t *Tracker) Admit(institution, purpose string, n int) error {
	if n < 0 {
		return errors.New("queriers: a negative number of queries")
	}
	if n == 0 {
		return nil
	}
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.account(institution)
	var over *Quota
	var overWin *window
	for i := range t.cfg.Quotas {
		q := &t.cfg.Quotas[i]
		if (q.Purpose != "" && q.Purpose != purpose) || !t.applies(i, institution) {
			continue
		}
		w := a.windows[i]
		if w == nil || !now.Before(w.end) {
			w = &window{end: t.windowOf(now, time.Duration(q.Per))}
			a.windows[i] = w
		}
		// The refusal names the quota that resets last: once it has, every
		// quota this request is over has.
		if w.used+n > q.Limit && (overWin == nil || w.end.After(overWin.end)) {
			over, overWin = q, w
		}
	}
	if over != nil {
		a.refused += uint64(n)
		t.refusals.Inc()
		return t.refusal(institution, purpose, n, over, overWin, now)
	}
	for i := range t.cfg.Quotas {
		q := &t.cfg.Quotas[i]
		if (q.Purpose != "" && q.Purpose != purpose) || !t.applies(i, institution) {
			continue
		}
		a.windows[i].used += n
	}
	a.admitted += uint64(n)
	return nil
}

// refusal is the too_many_requests of a request over quota q. The message
// names the caller's own institution and purpose (no personal data).
func (t *Tracker) refusal(institution, purpose string, n int, q *Quota, w *window, now time.Time) error {
	scope := "of every purpose"
	if q.Purpose != "" {
		scope = fmt.Sprintf("for purpose %q", q.Purpose)
	}
	who := "this institution"
	if len(institution) <= maxName && institution != "" {
		who = fmt.Sprintf("institution %q", institution)
	}
	reset := w.end.UTC().Format(time.RFC3339)
	var e *fault.Error
	if n > q.Limit {
		e = fault.New(fault.TooManyRequests, "%d queries at once are more than the quota of %s itself, %d queries %s per %s: send at most %d at a time; the quota resets at %s",
			n, who, q.Limit, scope, shortDuration(time.Duration(q.Per)), q.Limit, reset)
	} else {
		e = fault.New(fault.TooManyRequests, "%s has used %d of its %d queries %s per %s, and %d more do not fit; the quota resets at %s",
			who, w.used, q.Limit, scope, shortDuration(time.Duration(q.Per)), n, reset)
	}
	e.RetryAfter = w.end.Sub(now)
	return e
}

// shortDuration writes 24h for 24h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Observe notes one query that ran (after Admit), for the counts and the
// anomaly flags; a batch's rows are observed one by one.
func (t *Tracker) Observe(q Query) {
	at := q.At
	if at.IsZero() {
		at = t.cfg.Now()
	}
	f := t.cfg.Flags
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.account(q.Institution)
	if !at.Before(a.winEnd) {
		t.newWindow(a, at)
	}
	a.winQueries++

	// rare_purpose: the purpose's share of the queries, counting this one.
	purpose := q.Purpose
	if _, known := a.purposes[purpose]; !known && (len(purpose) > maxName || len(a.purposes) >= maxPurposes) {
		purpose = otherName
	}
	prior, total := a.purposes[purpose], a.queries
	a.purposes[purpose]++
	a.queries++
	if share := float64(prior+1) / float64(total+1); total >= uint64(f.RarePurposeAfter) && share < f.RarePurposeShare {
		t.raise(a, api.FlagRarePurpose, at, share, f.RarePurposeShare, total+1, purpose)
	}

	// distinct_subjects: distinct references per distinct subject.
	if q.Subject != "" {
		a.subjectsFull = t.add(a.subjects, q.Subject, at) || a.subjectsFull
	}
	if q.Reference != "" {
		a.refsFull = t.add(a.refs, q.Reference, at) || a.refsFull
	}
	// A full subject set is a lower bound on the subjects (the ratio is
	// lower still); a full reference set may hide any number of them.
	if s, r := len(a.subjects), len(a.refs); s >= f.DistinctSubjects && !a.refsFull && float64(r) < f.ReferenceRatio*float64(s) {
		t.raise(a, api.FlagDistinctSubjects, at, float64(r)/float64(s), f.ReferenceRatio, uint64(s), "")
	}

	// off_hours.
	if t.offHours(at) {
		a.offHours++
		if a.offHours >= uint64(f.OffHoursQueries) {
			t.raise(a, api.FlagOffHours, at, float64(a.offHours), float64(f.OffHoursQueries), a.winQueries, "")
		}
	}

	// large_batch: every Batch rows of one size are one batch, judged on
	// its first row against the median of the batches before it.
	if b := q.Batch; b > 1 {
		seen, counting := a.pending[b]
		if !counting && len(a.pending) >= maxPending {
			for size := range a.pending { // drop one: its batch counts again
				delete(a.pending, size)
				break
			}
		}
		if seen == 0 {
			if a.historyLen >= f.BatchAfter && b >= f.BatchMinRows {
				if limit := f.BatchFactor * float64(a.median()); float64(b) > limit {
					t.raise(a, api.FlagLargeBatch, at, float64(b), limit, uint64(a.historyLen), "")
				}
			}
			a.history[a.historyNext] = b
			a.historyNext = (a.historyNext + 1) % batchHistory
			a.historyLen = min(a.historyLen+1, batchHistory)
		}
		if seen+1 >= b {
			delete(a.pending, b)
		} else {
			a.pending[b] = seen + 1
		}
	}
}

// newWindow starts the flags' window of a that holds at, giving its
// distinct sets' entries back to the budget.
func (t *Tracker) newWindow(a *account, at time.Time) {
	t.entries -= len(a.subjects) + len(a.refs)
	clear(a.subjects)
	clear(a.refs)
	a.subjectsFull, a.refsFull = false, false
	a.winQueries, a.offHours = 0, 0
	a.winEnd = t.windowOf(at, time.Duration(t.cfg.Flags.Window))
}

// add puts a hash of v in set, within the set's cap and the budget of all
// sets; it reports whether the set is full (v may not be in it). When the
// budget is spent, the sets of windows that have ended are given back
// first (once per window end: nextSweep is the earliest end of a window
// holding entries).
func (t *Tracker) add(set map[uint64]struct{}, v string, at time.Time) (full bool) {
	h := maphash.String(t.seed, v)
	if _, ok := set[h]; ok {
		return false
	}
	if len(set) >= t.cfg.Flags.DistinctCap {
		return true
	}
	if t.entries >= t.cfg.Flags.DistinctBudget && !at.Before(t.nextSweep) {
		t.sweep(at)
	}
	if t.entries >= t.cfg.Flags.DistinctBudget {
		return true
	}
	set[h] = struct{}{}
	t.entries++
	return false
}

// sweep gives back the distinct sets of every window that ended by at.
func (t *Tracker) sweep(at time.Time) {
	next := at.Add(time.Duration(t.cfg.Flags.Window))
	for _, a := range t.insts {
		if len(a.subjects)+len(a.refs) == 0 {
			continue
		}
		if !at.Before(a.winEnd) {
			t.newWindow(a, at)
		} else if a.winEnd.Before(next) {
			next = a.winEnd
		}
	}
	t.nextSweep = next
}

// offHours says whether at is outside the working hours.
func (t *Tracker) offHours(at time.Time) bool {
	l := at.In(t.loc)
	m := l.Hour()*60 + l.Minute()
	if t.workFrom < t.workTo {
		return m < t.workFrom || m >= t.workTo
	}
	return m < t.workFrom && m >= t.workTo // working hours span midnight
}

// median is the median of the recent batch sizes (the upper one of an
// even count).
func (a *account) median() int {
	s := slices.Clone(a.history[:a.historyLen])
	slices.Sort(s)
	return s[len(s)/2]
}

// raise notes that a flag's condition held at at: a new episode if the
// flag was not up, or had not held for Flags.Hold.
func (t *Tracker) raise(a *account, name string, at time.Time, observed, threshold float64, basis uint64, purpose string) {
	if t.disabled[name] {
		return
	}
	f := a.flags[name]
	if f != nil && at.Sub(f.at) > time.Duration(t.cfg.Flags.Hold) {
		f = nil
	}
	if f == nil {
		f = &flag{since: at, at: at}
		a.flags[name] = f
		t.flagsTotal.WithLabelValues(name).Inc()
		// Institutions are no personal data; the numbers are counts.
		t.cfg.Logger.Warn("querier flagged", "flag", name, "institution", a.name,
			slog.Float64("observed", observed), slog.Float64("threshold", threshold), slog.Uint64("basis", basis))
	}
	if at.After(f.at) {
		f.at = at
	}
	f.count++
	f.observed, f.threshold, f.basis, f.purpose = observed, threshold, basis, purpose
}

// Report is GET /v1/audit/queriers's answer: every institution's counts,
// quotas in their current window and flags within their hold period,
// ordered by institution with the overflow account last.
func (t *Tracker) Report() api.Queriers {
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	out := api.Queriers{At: now.UTC().Format(time.RFC3339), Institutions: make([]api.Querier, 0, len(t.insts))}
	for _, a := range t.insts {
		r := api.Querier{Institution: a.name, Overflow: a.overflow, Queries: a.queries, Admitted: a.admitted, Refused: a.refused,
			Purposes: make(map[string]uint64, len(a.purposes)), Quotas: []api.QuotaUsage{}, Flags: []api.QuerierFlag{}}
		for p, n := range a.purposes {
			r.Purposes[p] = n
		}
		for i, q := range t.cfg.Quotas {
			if !t.applies(i, a.name) {
				continue
			}
			u := api.QuotaUsage{Purpose: q.Purpose, Default: q.Institution == "", Limit: q.Limit, Per: shortDuration(time.Duration(q.Per))}
			end := t.windowOf(now, time.Duration(q.Per))
			if w := a.windows[i]; w != nil && now.Before(w.end) {
				u.Used, end = w.used, w.end
			}
			u.ResetsAt = end.UTC().Format(time.RFC3339)
			r.Quotas = append(r.Quotas, u)
		}
		for _, name := range flagNames {
			f := a.flags[name]
			if f == nil {
				continue
			}
			if now.Sub(f.at) > time.Duration(t.cfg.Flags.Hold) {
				delete(a.flags, name)
				continue
			}
			r.Flags = append(r.Flags, api.QuerierFlag{Flag: name, Since: f.since.UTC().Format(time.RFC3339), At: f.at.UTC().Format(time.RFC3339),
				Count: f.count, Observed: f.observed, Threshold: f.threshold, Basis: f.basis, Purpose: f.purpose})
		}
		out.Institutions = append(out.Institutions, r)
	}
	slices.SortFunc(out.Institutions, func(x, y api.Querier) int {
		if x.Overflow != y.Overflow {
			if x.Overflow {
				return 1
			}
			return -1
		}
		return strings.Compare(x.Institution, y.Institution)
	})
	return out
}
