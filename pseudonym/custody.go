package pseudonym

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"credfed/audit"
	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/jobs"
	"credfed/storage"
)

// A coordinator's pseudonym key turns any identifier into the key of the
// index, so handing out pseudonyms is custody, not a service: a district
// that could pseudonymize freely could learn, for anyone, whether and
// where they have records, without a lookup and without an audit entry at
// the holding district. So a coordinator
//
//   - answers registered district nodes only (a district pseudonymizes the
//     subjects it writes to the index; coordinators compute their own),
//     and only those of its own region: a district's nearest coordinator
//     (its city) serves it at its full rate, a coordinator further up its
//     region tree (the province, asked when the city does not answer) at
//     FallbackShare of it, and any other coordinator refuses, so what a
//     district gets does not grow with the coordinators it can reach;
//   - limits each district's identifiers per second (generous enough for
//     a bulk intake of new subjects, far too few for a sweep of the
//     identifier space; configurable per district);
//   - registers every request in its audit log: the district, how many
//     identifiers, the pseudonyms handed out;
//   - notes a sample of the pseudonyms it hands out and, once the district
//     has had Window to publish, checks them against the district's index
//     entries that hold something (an empty entry, which no lookup ever
//     reaches, does not count): a district whose pseudonyms mostly never
//     show up is flagged (metric, GET /v1/custody), since it asked for
//     subjects it does not hold. A key rotation re-pseudonymizes every
//     subject on purpose and withdraws the old pseudonyms' entries: notes
//     taken before the last key switch are settled without being counted
//     (CustodyConfig.Superseded).

// Defaults of CustodyConfig.
const (
	DefaultDistrictRate = 100_000 // identifiers per second
	DefaultRequestRate  = 200     // requests per second per caller
	DefaultWindow       = time.Hour
	DefaultNotesPerSec  = 10
	DefaultMinChecked   = 20
	DefaultFlagShare    = 0.5
)

// FallbackShare is the share of a district's rate that a coordinator
// further up its region tree than its nearest one gives it.
const FallbackShare = 0.1

// CustodyStore keeps the notes and the accounts (storage.DB).
type CustodyStore interface {
	RecordIssued(district string, at time.Time, issued int, sample []credit.Pseudonym) error
	IssuedBefore(cutoff time.Time, limit int) ([]storage.Issued, error)
	SettleIssued(checked []storage.Issued, unmatched map[string]uint64, flag map[string]time.Time) error
	CustodyStats() ([]storage.Custody, error)
}

// Entries reads the coordinator's own index replica.
type Entries func(p credit.Pseudonym) ([]consensus.IndexEntry, error)

// CustodyConfig configures a coordinator's custody.
type CustodyConfig struct {
	// Key pseudonymizes; Keys, if set, replaces it: the current key
	// version, whose number the answer carries (a key rotation).
	Key         credit.PseudonymKey
	Keys        Keys
	Identifiers credit.ParseOptions
	Registry    Registry
	Entries     Entries
	Store       CustodyStore
	Audit       *audit.Recorder
	// DistrictRate is each district's identifiers per second, with bursts
	// of ten seconds' worth; DistrictRates overrides it per district
	// (region path).
	DistrictRate  float64
	DistrictRates map[string]float64
	// RequestRate limits each caller's requests per second (bursts of
	// twice as many).
	RequestRate float64
	// Window is how long a district has to publish the subjects it
	// pseudonymized before they are checked; NotesPerSec how many of its
	// pseudonyms per second are noted for the check.
	Window      time.Duration
	NotesPerSec float64
	// A district is flagged when, in one check, at least MinChecked of its
	// notes were checked and more than FlagShare of them never showed up.
	MinChecked int
	FlagShare  float64
	// Superseded, if set, reports whether a note taken at a time was of a
	// key version no longer current (taken before the last key switch):
	// its district withdraws that pseudonym's entry when it republishes,
	// so the check settles it without counting it.
	Superseded func(at time.Time) bool
	// Now is the clock of the notes (real time: not a test's record clock).
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Custodian is a coordinator's custody of the pseudonym key.
type Custodian struct {
	cfg  CustodyConfig
	log  *slog.Logger
	self certs.Identity // set by Serve

	mu    sync.Mutex
	ids   map[string]*rate.Limiter // per district: identifiers
	notes map[string]*rate.Limiter // per district: notes

	served    *prometheus.CounterVec
	refused   *prometheus.CounterVec
	unmatched *prometheus.CounterVec
	flagged   *prometheus.GaugeVec
}

// NewCustodian returns a coordinator's custodian.
func NewCustodian(cfg CustodyConfig) (*Custodian, error) {
	if !cfg.Key.Valid() && cfg.Keys == nil {
		return nil, errors.New("pseudonym: custody needs the pseudonym key")
	}
	if cfg.Registry == nil || cfg.Store == nil || cfg.Audit == nil || cfg.Entries == nil {
		return nil, errors.New("pseudonym: custody needs a registry, a store, an audit recorder and the index")
	}
	def := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.DistrictRate, DefaultDistrictRate)
	def(&cfg.RequestRate, DefaultRequestRate)
	def(&cfg.NotesPerSec, DefaultNotesPerSec)
	def(&cfg.FlagShare, DefaultFlagShare)
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MinChecked <= 0 {
		cfg.MinChecked = DefaultMinChecked
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Custodian{cfg: cfg, log: cfg.Logger, ids: map[string]*rate.Limiter{}, notes: map[string]*rate.Limiter{},
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_pseudonyms_served_total", Help: "Identifiers this coordinator pseudonymized for districts, by district.",
		}, []string{"district"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_pseudonym_requests_refused_total", Help: "Pseudonymization requests this coordinator refused, by reason.",
		}, []string{"reason"}),
		unmatched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "credfed_pseudonym_custody_unmatched_total", Help: "Noted pseudonyms that never showed up in the index updates of the district that asked for them.",
		}, []string{"district"}),
		flagged: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "credfed_pseudonym_custody_flagged", Help: "1 for a district flagged for asking pseudonyms of subjects it does not publish.",
		}, []string{"district"}),
	}
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{c.served, c.refused, c.unmatched, c.flagged} {
			if err := cfg.Registerer.Register(m); err != nil {
				return nil, fmt.Errorf("pseudonym: %w", err)
			}
		}
	}
	// Flags survive restarts: they are in the accounts.
	stats, err := cfg.Store.CustodyStats()
	if err != nil {
		return nil, fmt.Errorf("pseudonym: %w", err)
	}
	for _, st := range stats {
		if !st.FlaggedAt.IsZero() {
			c.flagged.WithLabelValues(st.District).Set(1)
		}
	}
	return c, nil
}

// Serve registers Op on the coordinator's endpoint, whose identity is the
// coordinator's.
func (c *Custodian) Serve(ep *exchange.Endpoint) {
	c.self = ep.Identity()
	ep.Handle(Op, c.handle, exchange.RateLimit(c.cfg.RequestRate, int(2*c.cfg.RequestRate)), exchange.MaxBody(MaxBatch*64))
}

// share is the share of a district's rate this coordinator gives it: 1 if
// it is the district's nearest coordinator up the region tree (the one
// its resolver asks first), FallbackShare if a nearer one is registered,
// 0 if it is not above the district at all.
func (c *Custodian) share(district string) float64 {
	self := c.self.Region
	if self == "" || district == self || !certs.InRegion(district, self) {
		return 0
	}
	for p := parent(district); p != self && p != ""; p = parent(p) {
		// The resolver's criteria (consensus.CoordinatorPeers): a
		// coordinator without an exchange address is never asked.
		if reg, ok := c.cfg.Registry.Region(p); ok && reg.Role.IsCoordinatorNode() && reg.Exchange != "" {
			return FallbackShare
		}
	}
	return 1
}

func parent(region string) string {
	if i := strings.LastIndexByte(region, '/'); i > 0 {
		return region[:i]
	}
	return ""
}

// limiters returns a district's limiters at this coordinator, at share of
// its rate: with bursts of ten seconds' worth, at least one full request
// at the full rate.
func (c *Custodian) limiters(district string, share float64) (ids, notes *rate.Limiter) {
	r := c.cfg.DistrictRate
	if o, ok := c.cfg.DistrictRates[district]; ok && o > 0 {
		r = o
	}
	r *= share
	burst := max(int(10*r), 1)
	if share >= 1 {
		burst = max(burst, MaxBatch)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.ids[district]; ok && float64(l.Limit()) == r && l.Burst() == burst {
		return l, c.notes[district]
	}
	// New, or its share changed with the registry (a city registered or
	// removed above the district).
	ids = rate.NewLimiter(rate.Limit(r), burst)
	c.ids[district] = ids
	if notes = c.notes[district]; notes == nil {
		c.flagged.WithLabelValues(district).Add(0) // shown as 0 until flagged
		notes = rate.NewLimiter(rate.Limit(c.cfg.NotesPerSec), max(int(10*c.cfg.NotesPerSec), 1))
		c.notes[district] = notes
	}
	return ids, notes
}

func (c *Custodian) handle(ctx context.Context, req *exchange.Request) (any, error) {
	var in request
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	caller := req.Caller
	entry := audit.By(caller, "pseudonymize")
	entry.District, entry.Count = caller.Region, len(in.IDs)
	deny := func(code exchange.Code, msg string) (any, error) {
		entry.Decision, entry.Reason = storage.DecisionDenied, string(code)
		c.refused.WithLabelValues(string(code)).Inc()
		if err := c.cfg.Audit.Record(entry); err != nil {
			return nil, exchange.Errorf(exchange.CodeUnavailable, "the request cannot be registered now; nothing was answered")
		}
		return nil, exchange.Errorf(code, "%s", msg)
	}
	if reg, ok := c.cfg.Registry.Region(caller.Region); caller.Role != certs.District || !ok || reg.Role != certs.District {
		return deny(exchange.CodeForbidden, fmt.Sprintf("pseudonyms are handed to registered district nodes only, not to %s", caller))
	}
	if len(in.IDs) == 0 || len(in.IDs) > MaxBatch {
		return deny(exchange.CodeBadRequest, fmt.Sprintf("a request holds 1 to %d identifiers, not %d", MaxBatch, len(in.IDs)))
	}
	share := c.share(caller.Region)
	if share == 0 {
		return deny(exchange.CodeForbidden, fmt.Sprintf("coordinator %s hands pseudonyms to the districts of its own region only, not to %s: "+
			"a district asks its own city (or, when the city does not answer, its province)", c.self.Region, caller.Region))
	}
	ids, notes := c.limiters(caller.Region, share)
	now := c.cfg.Now()
	if !ids.AllowN(now, len(in.IDs)) {
		how := ""
		if share < 1 {
			how = fmt.Sprintf(" here, a coordinator above its own city, which serves it at %.0f%% of its rate", 100*share)
		}
		return deny(exchange.CodeTooManyRequests, fmt.Sprintf("district %s asks for more than %.0f identifiers a second (%d at once)%s",
			caller.Region, float64(ids.Limit()), ids.Burst(), how))
	}
	version, key := uint32(1), c.cfg.Key
	if c.cfg.Keys != nil {
		version, key = c.cfg.Keys.CurrentPseudonymKey()
	}
	out, err := compute(key, in.IDs, c.cfg.Identifiers)
	if err != nil {
		return deny(exchange.CodeBadRequest, err.Error())
	}
	entry.Pseudonyms = make([]string, len(out))
	for i, p := range out {
		entry.Pseudonyms[i] = p.String()
	}
	entry.Decision = storage.DecisionAllowed
	if err := c.cfg.Audit.Record(entry); err != nil {
		return nil, exchange.Errorf(exchange.CodeUnavailable, "the request cannot be registered now; nothing was answered")
	}
	// Count them all; note a sample, spread over the batch, for the check.
	var sample []credit.Pseudonym
	if k := min(int(notes.TokensAt(now)), len(out)); k > 0 && notes.AllowN(now, k) {
		sample = make([]credit.Pseudonym, k)
		for i := range sample {
			sample[i] = out[i*len(out)/k]
		}
	}
	if err := c.cfg.Store.RecordIssued(caller.Region, now, len(out), sample); err != nil {
		c.log.Warn("noting pseudonyms for the custody check failed", "district", caller.Region, "error_type", fmt.Sprintf("%T", err))
	}
	c.served.WithLabelValues(caller.Region).Add(float64(len(out)))
	return reply{Pseudonyms: out, Version: version}, nil
}

// CheckJobName is the custody check's name in the job runner.
const CheckJobName = "custody"

// Job is the check as a background job.
func (c *Custodian) Job() jobs.Job {
	interval := min(max(c.cfg.Window/12, 10*time.Second), 5*time.Minute)
	return jobs.Job{Name: CheckJobName, Interval: interval, Timeout: time.Hour, Run: func(ctx context.Context, p *jobs.Progress) error {
		res, err := c.Check(ctx)
		p.Set("checked", int64(res.Checked))
		p.Set("unmatched", int64(res.Unmatched))
		p.Set("flagged", int64(len(res.Flagged)))
		return err
	}}
}

// CheckResult says what one check found.
type CheckResult struct {
	Checked, Unmatched int
	// Flagged are the districts flagged by this check.
	Flagged []string
}

// Check checks the notes older than the window against the districts'
// index entries, counts those that never showed up and flags districts.
func (c *Custodian) Check(ctx context.Context) (CheckResult, error) {
	var res CheckResult
	cutoff := c.cfg.Now().Add(-c.cfg.Window)
	for {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		due, err := c.cfg.Store.IssuedBefore(cutoff, 10000)
		if err != nil || len(due) == 0 {
			return res, err
		}
		checked := map[string]int{}
		unmatched := map[string]uint64{}
		for _, it := range due {
			if c.cfg.Superseded != nil && c.cfg.Superseded(it.At) {
				continue // settled below, not counted
			}
			entries, err := c.cfg.Entries(it.Pseudonym)
			if err != nil {
				return res, err
			}
			// Only an entry that holds something counts: an empty one
			// costs nothing and no lookup ever reaches it.
			found := false
			for _, e := range entries {
				if e.District == it.District && e.Holds() {
					found = true
					break
				}
			}
			checked[it.District]++
			if !found {
				unmatched[it.District]++
			}
		}
		flag := map[string]time.Time{}
		for d, n := range checked {
			if u := unmatched[d]; n >= c.cfg.MinChecked && float64(u) > c.cfg.FlagShare*float64(n) {
				flag[d] = c.cfg.Now()
				res.Flagged = append(res.Flagged, d)
				c.log.Warn("pseudonym custody: a district asked for pseudonyms of subjects it does not publish", "district", d,
					"checked", n, "unmatched", u)
			}
			c.unmatched.WithLabelValues(d).Add(float64(unmatched[d]))
			res.Unmatched += int(unmatched[d])
		}
		if err := c.cfg.Store.SettleIssued(due, unmatched, flag); err != nil {
			return res, err
		}
		res.Checked += len(due)
		for d := range flag {
			c.flagged.WithLabelValues(d).Set(1)
		}
	}
}

// Account is one district's pseudonymization account, as reviewers see it.
type Account struct {
	District  string
	Issued    uint64
	Checked   uint64
	Unmatched uint64
	// FlaggedAt is when the district was flagged; zero if it is not.
	FlaggedAt time.Time
}

// Accounts returns every district's account (GET /v1/custody).
func (c *Custodian) Accounts(ctx context.Context) ([]Account, error) {
	stats, err := c.cfg.Store.CustodyStats()
	if err != nil {
		return nil, err
	}
	out := make([]Account, len(stats))
	for i, s := range stats {
		out[i] = Account(s)
	}
	return out, nil
}

// ErrNoCustody is the refusal of the accounts at a node that keeps none.
var ErrNoCustody = fault.New(fault.Forbidden, "pseudonym custody is kept by coordinator nodes (province, city)")
