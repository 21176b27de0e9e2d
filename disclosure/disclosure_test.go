package disclosure

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/text/unicode/norm"

	"credfed/certs"
	"credfed/consensus"
	"credfed/credit"
	"credfed/exchange"
	"credfed/fault"
	"credfed/internal/exchangetest"
	"credfed/storage"
)

const fed = "disclosuretest"

// registry is a fixed region registry.
type registry []consensus.Region

func (r registry) Regions() []consensus.Region { return r }

// clock is a clock a test moves.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time       { return time.Unix(0, c.ns.Load()) }
func (c *clock) setDay(d credit.Date) { c.ns.Store(d.Time().Add(12 * time.Hour).UnixNano()) }
func newClock(d credit.Date) *clock   { c := &clock{}; c.setDay(d); return c }
func addr(s string) netip.Addr        { return netip.MustParseAddr(s) }
func first(svc *Service) (Page, error) {
	return svc.List(context.Background(), addr("192.0.2.1"), Query{})
}

func openDB(t *testing.T) *storage.DB {
	t.Helper()
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// accepted is a record as intake stores it, recorded at the given time.
func accepted(t *testing.T, cat *credit.Catalog, district, id, subject, item string, decided credit.Date, at time.Time) credit.Record {
	t.Helper()
	r, err := cat.Accept(credit.Record{ID: id, Subject: subject, CatalogItem: item, DecisionNumber: "罚〔2026〕" + id,
		OccurredOn: decided - 5, DecidedOn: decided, Summary: "当事人 " + subject + " 的处罚事由", Department: "market-supervision",
		District: district}, at, credit.ParseOptions{TestMode: true})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func submit(t *testing.T, db *storage.DB, recs ...credit.Record) {
	t.Helper()
	out, err := db.SubmitRecords(recs)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if o != storage.Accepted {
			t.Fatalf("record %d: %v", i, o)
		}
	}
}

// district is a district node's service on a real endpoint and store.
type district struct {
	id  certs.Identity
	ep  *exchange.Endpoint
	db  *storage.DB
	svc *Service
	reg consensus.Region
}

func newDistrict(t *testing.T, ca *certs.CA, path string, cat *credit.Catalog, now func() time.Time) *district {
	id := certs.Identity{Federation: fed, Role: certs.District, Region: path}
	d := &district{id: id, ep: exchangetest.Endpoint(t, ca, id), db: openDB(t)}
	d.reg = consensus.Region{Path: path, Name: path[strings.LastIndexByte(path, '/')+1:] + "区", Role: certs.District, Exchange: d.ep.Addr().String()}
	d.svc = New(Config{Self: id, Records: d.db, Registry: registry{d.reg}, Endpoint: d.ep,
		Catalog: func() *credit.Catalog { return cat }, Now: now, Registerer: prometheus.NewRegistry()})
	return d
}

// pageIDs returns the decision numbers of a page's entries.
func pageIDs(p Page) []string {
	var out []string
	for _, e := range p.Entries {
		out = append(out, e.DecisionNumber)
	}
	return out
}

// TestListAtDistrictAndCity: each district lists its publicly disclosable
// records only, masked and newest recorded first; the city gathers its
// districts (not those of another city), and its pages, one entry at a
// time or more, return every entry once. Past the display period, or once
// revoked, a record leaves the list.
func TestListAtDistrictAndCity(t *testing.T) {
	ca := exchangetest.CA(t, fed)
	cat := credit.DefaultCatalog()
	today := credit.TodayAt(time.Now())
	clk := newClock(today)
	a := newDistrict(t, ca, "zhejiang/quzhou/kecheng", cat, clk.Now)
	b := newDistrict(t, ca, "zhejiang/quzhou/qujiang", cat, clk.Now)
	other := newDistrict(t, ca, "zhejiang/hangzhou/xihu", cat, clk.Now)

	at := today.Time().Add(9 * time.Hour)
	min := func(n int) time.Time { return at.Add(time.Duration(n) * time.Minute) }
	p1 := credit.SyntheticPerson(11, credit.NewDate(1980, 1, 2))
	p2 := credit.SyntheticPerson(12, credit.NewDate(1981, 3, 4))
	org := credit.SyntheticOrganization(13)
	submit(t, a.db,
		accepted(t, cat, a.id.Region, "A-FOOD", p1, "FOOD-SAFETY-SERIOUS", today-10, min(1)),
		accepted(t, cat, a.id.Region, "A-ORG", org, "GOVERNMENT-JUDGMENT-DEFAULT", today-10, min(5)),
		// Not listed: ordinary, serious but authorized, positive.
		accepted(t, cat, a.id.Region, "A-ORD", p1, "FOOD-DRUG-PENALTY", today-10, min(6)),
		accepted(t, cat, a.id.Region, "A-TRAFFIC", p2, "TRAFFIC-SERIOUS", today-10, min(7)),
		accepted(t, cat, a.id.Region, "A-MORAL", p2, "MORAL-MODEL", today-10, min(8)),
		// Decided 3 years and a day ago: its display period has ended.
		accepted(t, cat, a.id.Region, "A-OLD", p2, "TAX-SERIOUS", today.AddMonths(-36)-1, min(9)),
	)
	submit(t, b.db,
		accepted(t, cat, b.id.Region, "B-TAX", p2, "TAX-SERIOUS", today-20, min(3)),
		accepted(t, cat, b.id.Region, "B-WAGE", p1, "WAGE-ARREARS-SERIOUS", today-2, min(4)),
		accepted(t, cat, b.id.Region, "B-EIA", p2, "EIA-FRAUD", today-400, min(2)),
	)
	submit(t, other.db, accepted(t, cat, other.id.Region, "X-FOOD", p1, "FOOD-SAFETY-SERIOUS", today-1, min(10)))

	page, err := first(a.svc)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(pageIDs(page), " "); got != "罚〔2026〕A-ORG 罚〔2026〕A-FOOD" {
		t.Fatalf("district A lists %q, want A-ORG then A-FOOD", got)
	}
	e := page.Entries[1]
	want := Entry{Subject: p1[:6] + "***********" + p1[17:], CatalogItem: "FOOD-SAFETY-SERIOUS", Reason: "食品安全严重违法失信行为",
		LegalBasis: e.LegalBasis, DecisionNumber: "罚〔2026〕A-FOOD", District: a.id.Region, DistrictName: "kecheng区",
		Department: "market-supervision", DecidedOn: today - 10, DisplayUntil: (today - 10).AddMonths(36), Status: credit.StatusActive,
		RecordedAt: min(1), Tie: e.Tie}
	if fmt.Sprint(e) != fmt.Sprint(want) || !strings.Contains(e.LegalBasis, "食品安全法") {
		t.Errorf("entry\n%+v\nwant\n%+v", e, want)
	}
	if o := page.Entries[0].Subject; o != "**"+org[2:8]+"*********"+org[17:] {
		t.Errorf("organization masked as %q", o)
	}
	if page.Next != "" || len(page.Districts) != 1 || page.Districts[0].Status != exchange.StatusOK {
		t.Errorf("district page: next %q, districts %+v", page.Next, page.Districts)
	}
	noIdentifier(t, page, p1, p2, org)

	city := newCity(t, ca, "zhejiang/quzhou", []*district{a, b, other}, cat, clk.Now)
	page, err = first(city)
	if err != nil {
		t.Fatal(err)
	}
	all := "罚〔2026〕A-ORG 罚〔2026〕B-WAGE 罚〔2026〕B-TAX 罚〔2026〕B-EIA 罚〔2026〕A-FOOD"
	if got := strings.Join(pageIDs(page), " "); got != all {
		t.Fatalf("the city lists %q, want %q", got, all)
	}
	if len(page.Districts) != 2 || page.Districts[0].Region != a.id.Region || page.Districts[1].Region != b.id.Region ||
		page.Districts[0].Status != exchange.StatusOK || page.Districts[1].Name != "qujiang区" {
		t.Errorf("city districts %+v", page.Districts)
	}
	noIdentifier(t, page, p1, p2, org)
	for _, n := range []int{1, 2, 4, 5} {
		if got := strings.Join(pageThrough(t, city, n), " "); got != all {
			t.Errorf("pages of %d: %q, want %q", n, got, all)
		}
	}

	// Revoked, or past its display period: gone.
	rec, err := b.db.Record("market-supervision", "B-TAX")
	if err != nil {
		t.Fatal(err)
	}
	next, err := credit.Transition(rec, credit.StatusRevoked, "objection upheld", clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.db.UpdateRecord(next); err != nil {
		t.Fatal(err)
	}
	lists := func(want string) {
		t.Helper()
		page, err := first(city)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(pageIDs(page), " "); got != want {
			t.Errorf("on %s the city lists %q, want %q", credit.DateOf(clk.Now()), got, want)
		}
	}
	lists("罚〔2026〕A-ORG 罚〔2026〕B-WAGE 罚〔2026〕B-EIA 罚〔2026〕A-FOOD")
	end := (today - 10).AddMonths(36) // the first day A-FOOD and A-ORG are not displayed
	clk.setDay(end - 1)
	lists("罚〔2026〕A-ORG 罚〔2026〕B-WAGE 罚〔2026〕A-FOOD")
	clk.setDay(end)
	lists("罚〔2026〕B-WAGE")
}

// pageThrough pages through the list with page size n.
func pageThrough(t *testing.T, svc *Service, n int) []string {
	t.Helper()
	var out []string
	cursor := ""
	for range 100 {
		page, err := svc.List(context.Background(), addr("192.0.2.7"), Query{Cursor: cursor, Limit: n})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Entries) > n {
			t.Fatalf("page of %d entries, limit %d", len(page.Entries), n)
		}
		out = append(out, pageIDs(page)...)
		if page.Next == "" {
			return out
		}
		cursor = page.Next
	}
	t.Fatal("paging does not end")
	return nil
}

func newCity(t *testing.T, ca *certs.CA, path string, ds []*district, cat *credit.Catalog, now func() time.Time) *Service {
	t.Helper()
	id := certs.Identity{Federation: fed, Role: certs.City, Region: path}
	reg := registry{{Path: path, Role: certs.City}}
	for _, d := range ds {
		reg = append(reg, d.reg)
	}
	return New(Config{Self: id, Registry: reg, Endpoint: exchangetest.Endpoint(t, ca, id), Catalog: func() *credit.Catalog { return cat },
		Now: now, Burst: 1000, Rate: 1000, Registerer: prometheus.NewRegistry()})
}

// noIdentifier fails if a page, in any encoding, holds an identifier.
func noIdentifier(t *testing.T, p Page, ids ...string) {
	t.Helper()
	j, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	c, err := exchange.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if bytes.Contains(j, []byte(id)) || bytes.Contains(c, []byte(id)) || strings.Contains(p.Next, id) {
			t.Errorf("the page holds identifier %s", credit.MaskIdentifier(id))
		}
	}
}

// TestHostileOrBrokenDistricts: a district that answers with an unmasked
// identifier, with entries of another district or out of order is not
// shown; one that cannot be reached is reported; the others are listed.
func TestHostileOrBrokenDistricts(t *testing.T) {
	ca := exchangetest.CA(t, fed)
	cat := credit.DefaultCatalog()
	today := credit.TodayAt(time.Now())
	clk := newClock(today)
	good := newDistrict(t, ca, "zhejiang/quzhou/kecheng", cat, clk.Now)
	subject := credit.SyntheticPerson(21, credit.NewDate(1990, 6, 7))
	submit(t, good.db, accepted(t, cat, good.id.Region, "G-1", subject, "FOOD-SAFETY-SERIOUS", today-3, time.Now()))

	hostileID := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/qujiang"}
	hostile := exchangetest.Endpoint(t, ca, hostileID)
	var answer atomic.Value
	hostile.Handle(Op, func(ctx context.Context, req *exchange.Request) (any, error) { return answer.Load(), nil })
	entry := func(district, subj string, at time.Time) wireEntry {
		return wireEntry{Entry: Entry{Subject: subj, CatalogItem: "TAX-SERIOUS", DecisionNumber: "X-1", District: district,
			Tie: make([]byte, storage.TieSize)}, At: at.UnixNano()}
	}
	now := time.Now()
	city := newCity(t, ca, "zhejiang/quzhou", []*district{good, {reg: consensus.Region{Path: hostileID.Region, Role: certs.District,
		Exchange: hostile.Addr().String()}}, {reg: consensus.Region{Path: "zhejiang/quzhou/longyou", Role: certs.District}}}, cat, clk.Now)
	for _, tc := range []struct {
		name, why string
		reply     reply
	}{
		{"an unmasked identifier", "not masked", reply{Entries: []wireEntry{entry(hostileID.Region, subject, now)}}},
		{"entries of another district", "another district", reply{Entries: []wireEntry{entry(good.id.Region, credit.MaskIdentifier(subject), now)}}},
		{"entries out of order", "out of order", reply{Entries: []wireEntry{entry(hostileID.Region, credit.MaskIdentifier(subject), now),
			entry(hostileID.Region, credit.MaskIdentifier(subject), now.Add(time.Second))}}},
		{"an identifier in the decision number", "not scrubbed", reply{Entries: []wireEntry{func() wireEntry {
			e := entry(hostileID.Region, credit.MaskIdentifier(subject), now)
			e.DecisionNumber = "罚" + subject
			return e
		}()}}},
		{"an identifier in the decision number in another writing", "not scrubbed", reply{Entries: []wireEntry{func() wireEntry {
			e := entry(hostileID.Region, credit.MaskIdentifier(subject), now)
			e.DecisionNumber = "罚" + fullWidth(subject[:6]) + "-" + subject[6:14] + " " + subject[14:] + "号"
			return e
		}()}}},
	} {
		answer.Store(tc.reply)
		page, err := first(city)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := strings.Join(pageIDs(page), " "); got != "罚〔2026〕G-1" {
			t.Errorf("%s: the city lists %q, want the good district's entry alone", tc.name, got)
		}
		byRegion := map[string]District{}
		for _, d := range page.Districts {
			byRegion[d.Region] = d
		}
		if d := byRegion[hostileID.Region]; d.Status != exchange.StatusError || !strings.Contains(d.Error, tc.why) {
			t.Errorf("%s: the hostile district's part %+v", tc.name, d)
		}
		if d := byRegion["zhejiang/quzhou/longyou"]; d.Status != exchange.StatusUnreachable {
			t.Errorf("%s: the district without an address: %+v", tc.name, d)
		}
		noIdentifier(t, page, subject)
	}
	// An honest answer is merged.
	answer.Store(reply{Entries: []wireEntry{entry(hostileID.Region, credit.MaskIdentifier(subject), now.Add(time.Hour))}})
	page, err := first(city)
	if err != nil || len(page.Entries) != 2 || page.Entries[0].DecisionNumber != "X-1" {
		t.Errorf("an honest answer: %+v, %v", page, err)
	}
}

// TestRateLimitPerClientAddress: past its burst an address is refused
// too_many_requests, and counted; another address, or another /64 in
// IPv6, is not; addresses of one /64 share a limiter.
func TestRateLimitPerClientAddress(t *testing.T) {
	cat := credit.DefaultCatalog()
	db := openDB(t)
	id := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	svc := New(Config{Self: id, Records: db, Registry: registry{}, Catalog: func() *credit.Catalog { return cat },
		Rate: 0.001, Burst: 3, Registerer: prometheus.NewRegistry()})
	ctx := context.Background()
	for i := range 3 {
		if _, err := svc.List(ctx, addr("198.51.100.1"), Query{}); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	_, err := svc.List(ctx, addr("198.51.100.1"), Query{})
	if e := fault.As(err); e == nil || e.Kind != fault.TooManyRequests {
		t.Fatalf("past the burst: %v, want too_many_requests", err)
	}
	if _, err := svc.List(ctx, addr("198.51.100.2"), Query{}); err != nil {
		t.Errorf("another address: %v", err)
	}
	if got := testutil.ToFloat64(svc.requests.WithLabelValues("limited")); got != 1 {
		t.Errorf("limited requests counted: %v", got)
	}
	if got := testutil.ToFloat64(svc.requests.WithLabelValues("served")); got != 4 {
		t.Errorf("served requests counted: %v", got)
	}
	for i := range 3 {
		if _, err := svc.List(ctx, addr(fmt.Sprintf("2001:db8:1:2::%x", i+1)), Query{}); err != nil {
			t.Fatalf("IPv6 request %d: %v", i, err)
		}
	}
	if _, err := svc.List(ctx, addr("2001:db8:1:2:ffff::9"), Query{}); fault.As(err) == nil || fault.As(err).Kind != fault.TooManyRequests {
		t.Errorf("a fourth address of the same /64: %v, want too_many_requests", err)
	}
	if _, err := svc.List(ctx, addr("2001:db8:1:3::1"), Query{}); err != nil {
		t.Errorf("another /64: %v", err)
	}
}

// TestBadQueries: a cursor that is not one, or a limit out of range, is
// refused bad_request naming the parameter.
func TestBadQueries(t *testing.T) {
	cat := credit.DefaultCatalog()
	db := openDB(t)
	id := certs.Identity{Federation: fed, Role: certs.District, Region: "zhejiang/quzhou/kecheng"}
	svc := New(Config{Self: id, Records: db, Registry: registry{}, Catalog: func() *credit.Catalog { return cat },
		Rate: 1000, Burst: 1000})
	good := encodeCursor(storage.RecordPosition{RecordedAt: time.Now(), District: id.Region})
	raw, _ := exchange.Marshal(cursor{Version: 2, District: "x", Tie: make([]byte, storage.TieSize)})
	short, _ := exchange.Marshal(cursor{Version: 1, District: "x", Tie: []byte{1}})
	for _, q := range []Query{{Cursor: "not base64!"}, {Cursor: good[:len(good)-3]}, {Cursor: strings.Repeat("A", 600)},
		{Cursor: base64.RawURLEncoding.EncodeToString(raw)}, {Cursor: base64.RawURLEncoding.EncodeToString(short)}, {Limit: -1}, {Limit: MaxLimit + 1}} {
		_, err := svc.List(context.Background(), netip.Addr{}, q)
		e := fault.As(err)
		if e == nil || e.Kind != fault.BadRequest || (e.Field != "cursor" && e.Field != "limit") {
			t.Errorf("query %+v: %v, want bad_request on cursor or limit", q, err)
		}
	}
	if _, err := svc.List(context.Background(), netip.Addr{}, Query{Cursor: good, Limit: MaxLimit}); err != nil {
		t.Errorf("a good cursor: %v", err)
	}
	// Without a catalog: unavailable.
	svc.cfg.Catalog = func() *credit.Catalog { return nil }
	if _, err := svc.List(context.Background(), netip.Addr{}, Query{}); fault.As(err) == nil || fault.As(err).Kind != fault.Unavailable {
		t.Errorf("no catalog: %v", err)
	}
}

// fullWidth writes the ASCII letters and digits of s in their full-width
// forms.
func fullWidth(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' {
			return r + 0xFEE0
		}
		return r
	}, s)
}

// inScript writes the digits of s in the decimal digits that start at zero.
func inScript(s string, zero rune) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return zero + r - '0'
		}
		return r
	}, s)
}

// showsWhole reports whether out, read with width folded and everything
// but ASCII letters and digits dropped, holds id.
func showsWhole(out, id string) bool {
	var b strings.Builder
	for _, c := range []byte(norm.NFKC.String(out)) {
		if c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' {
			b.WriteByte(c)
		}
	}
	return strings.Contains(strings.ToUpper(b.String()), strings.ToUpper(id))
}

func TestScrub(t *testing.T) {
	id := credit.SyntheticPerson(31, credit.NewDate(1970, 1, 1))
	org := credit.SyntheticOrganization(31)
	masked := credit.MaskIdentifier(id)
	groups := func(sep ...string) string { // 6, 8 and 4, as an identifier is read
		return id[:6] + sep[0] + id[6:14] + sep[len(sep)-1] + id[14:]
	}
	fours := func(sep string) string {
		return id[:4] + sep + id[4:8] + sep + id[8:12] + sep + id[12:16] + sep + id[16:]
	}
	each := func(sep string) string { return strings.Join(strings.Split(id, ""), sep) }
	for _, tc := range []struct{ name, in, want string }{
		// Ordinary decision numbers stay as written.
		{"ordinary", "津市监罚〔2024〕17号", "津市监罚〔2024〕17号"},
		{"ordinary", "浙市监罚〔2026〕123号", "浙市监罚〔2026〕123号"},
		{"ordinary, 17 letters and digits", "shangcheng〔2026〕605号", "shangcheng〔2026〕605号"},
		{"ordinary, full-width", "浙市监罚〔２０２６〕１２３号", "浙市监罚〔２０２６〕１２３号"},
		{"ordinary, ASCII", "ZJ-HZ 2026/000123", "ZJ-HZ 2026/000123"},
		{"17 digits", "12345678901234567", "12345678901234567"},
		{"Han characters end a run", "2026001234号第56789012345号", "2026001234号第56789012345号"},
		{"more than maxGap separators end a run", "(2026) 12345678 ---- 1234567890", "(2026) 12345678 ---- 1234567890"},
		{"empty", "", ""},
		// Plain ASCII runs.
		{"plain", "罚" + id + "号", "罚" + masked + "号"},
		{"plain, longer", "X" + id, strings.Repeat("*", 19)},
		{"plain, organization", "罚" + org + "号", "罚" + credit.MaskIdentifier(org) + "号"},
		// Full-width.
		{"full-width", "罚决字" + fullWidth(id) + "号", "罚决字" + masked + "号"},
		{"full-width, lower case", "罚" + fullWidth(strings.ToLower(org)) + "号", "罚" + credit.MaskIdentifier(org) + "号"},
		// Separated.
		{"hyphens", "罚决字" + groups("-") + "号", "罚决字" + masked + "号"},
		{"spaces", "罚决字" + groups(" ") + "号", "罚决字" + masked + "号"},
		{"groups of four", "罚" + fours(" ") + "号", "罚" + masked + "号"},
		{"dots", groups("."), masked},
		{"slashes", groups("/"), masked},
		{"underscores", groups("_"), masked},
		{"brackets", groups("〔", "〕"), masked},
		{"en dash", groups("–"), masked},
		{"em dash", groups("—"), masked},
		{"hyphen U+2010", groups("‐"), masked},
		{"minus sign", groups("−"), masked},
		{"full-width hyphen", groups("－"), masked},
		{"ideographic space", groups("\u3000"), masked},
		{"spaced hyphen", groups(" - "), masked},
		{"a separator after every character", each("."), masked},
		{"zero-width spaces", each("\u200b\u200b\u200b\u200b"), masked},
		{"joined to a word", "A-" + id + "-" + id[:5], strings.Repeat("*", 24)},
		{"No.", "No." + id, strings.Repeat("*", 20)},
		// Mixed writings.
		{"full-width and hyphens", "罚" + fullWidth(id[:9]) + "-" + id[9:] + "号", "罚" + masked + "号"},
		{"full-width groups", fullWidth(groups(" ")), masked},
		{"Arabic-Indic digits", inScript(groups("-"), '٠'), masked},
		{"Devanagari digits", inScript(id, '०'), masked},
		{"mathematical digits", inScript(fours(" "), '𝟘'), masked},
		{"circled digits", strings.Map(func(r rune) rune {
			if r >= '1' && r <= '9' {
				return '①' + r - '1'
			}
			return r
		}, id), masked},
		{"a Cyrillic check character", id[:17] + "Х", strings.Repeat("*", 18)},
	} {
		got := scrub(tc.in)
		if got != tc.want {
			t.Errorf("%s: scrub(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
		if again := scrub(got); again != got {
			t.Errorf("%s: scrub(%q) = %q, not scrubbed already", tc.name, got, again)
		}
		if tc.in != tc.want && (showsWhole(got, id) || showsWhole(got, org)) {
			t.Errorf("%s: scrub(%q) = %q shows the identifier", tc.name, tc.in, got)
		}
	}
}

func TestDigitValue(t *testing.T) {
	for _, zero := range []rune{'0', '٠', '۰', '०', '০', '๐', '０', '𝟎', '𝟘', '𝟢', '𝟬', '𝟶'} {
		for v := range rune(10) {
			if got := digitValue(zero + v); got != v {
				t.Errorf("digitValue(%U) = %d, want %d", zero+v, got, v)
			}
		}
	}
}

// FuzzScrub: what scrub writes, it leaves as it is, so a coordinator never
// drops the answer of a district that scrubs; and no run of 18 ASCII
// letters and digits survives it.
func FuzzScrub(f *testing.F) {
	id := credit.SyntheticPerson(32, credit.NewDate(1971, 2, 3))
	for _, s := range []string{"", "罚" + id, fullWidth(id), id[:6] + " - " + id[6:], "A-" + id + "-B", "shangcheng〔2026〕605号", "**" + id[2:]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := scrub(s)
		if again := scrub(got); again != got {
			t.Fatalf("scrub(%q) = %q; scrubbed again %q", s, got, again)
		}
		n := 0
		for i := range len(got) {
			if c := got[i]; c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' {
				if n++; n >= 18 {
					t.Fatalf("scrub(%q) = %q keeps a run of 18", s, got)
				}
			} else {
				n = 0
			}
		}
	})
}
