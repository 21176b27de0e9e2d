package credit

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Period is a calendar length of time such as a display or retention period.
// Its text form is ISO 8601-like: "P" followed by years, months and days in
// that order, each optional but at least one present ("P3Y", "P6M",
// "P1Y6M", "P90D", "P0D" for zero). Weeks and times of day are not used.
// JSON and YAML use the text form; CBOR carries the three numbers.
type Period struct {
	Years  int `cbor:"1,keyasint,omitempty"`
	Months int `cbor:"2,keyasint,omitempty"`
	Days   int `cbor:"3,keyasint,omitempty"`
}

// Years returns a period of n years.
func Years(n int) Period { return Period{Years: n} }

// Months returns a period of n months.
func Months(n int) Period { return Period{Months: n} }

// Days returns a period of n days.
func Days(n int) Period { return Period{Days: n} }

// ParsePeriod parses the text form.
func ParsePeriod(s string) (Period, error) {
	bad := fmt.Errorf("%w: %q", ErrBadPeriod, s)
	rest, ok := strings.CutPrefix(s, "P")
	if !ok || rest == "" {
		return Period{}, bad
	}
	var p Period
	fields := []struct {
		unit byte
		dst  *int
	}{{'Y', &p.Years}, {'M', &p.Months}, {'D', &p.Days}}
	next := 0
	for rest != "" {
		i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if i <= 0 || i > 6 {
			return Period{}, bad
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil {
			return Period{}, bad
		}
		unit := rest[i]
		for next < len(fields) && fields[next].unit != unit {
			next++
		}
		if next == len(fields) {
			return Period{}, bad // unknown unit, or units out of order or repeated
		}
		*fields[next].dst = n
		next++
		rest = rest[i+1:]
	}
	return p, nil
}

// String returns the text form; the zero period is "P0D".
func (p Period) String() string {
	if p.IsZero() {
		return "P0D"
	}
	var b strings.Builder
	b.WriteByte('P')
	if p.Years != 0 {
		fmt.Fprintf(&b, "%dY", p.Years)
	}
	if p.Months != 0 {
		fmt.Fprintf(&b, "%dM", p.Months)
	}
	if p.Days != 0 {
		fmt.Fprintf(&b, "%dD", p.Days)
	}
	return b.String()
}

// IsZero reports whether the period is empty.
func (p Period) IsZero() bool { return p == Period{} }

// Positive reports whether no part is negative and at least one is positive.
func (p Period) Positive() bool {
	return p.Years >= 0 && p.Months >= 0 && p.Days >= 0 && !p.IsZero()
}

// AddTo returns d plus the period: years and months first, clamped to the
// end of a shorter month (2024-02-29 plus P1Y is 2025-02-28), then days.
func (p Period) AddTo(d Date) Date {
	return d.AddMonths(12*p.Years + p.Months).AddDays(p.Days)
}

// AtLeast reports whether p is at least as long as q from every start date
// (checked over a whole leap-year cycle of start dates, which covers every
// combination of month lengths).
func (p Period) AtLeast(q Period) bool {
	// Adding months and adding days are both monotone, so more of each is
	// always at least as long; only mixed cases need the scan.
	pm, qm := 12*p.Years+p.Months, 12*q.Years+q.Months
	if pm >= qm && p.Days >= q.Days {
		return true
	}
	start := NewDate(2023, time.January, 1)
	for d := start; d < start+4*366; d++ {
		if p.AddTo(d) < q.AddTo(d) {
			return false
		}
	}
	return true
}

// MarshalText implements encoding.TextMarshaler.
func (p Period) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Period) UnmarshalText(b []byte) error {
	v, err := ParsePeriod(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}
