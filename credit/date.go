package credit

import (
	"fmt"
	"time"
)

// Date is a civil date (no time of day, no zone), counted in days since
// 1970-01-01. Its zero value is 1970-01-01, which no record date can be
// (birth dates start in 1900 but are never stored as a Date of a record), so
// record fields treat 0 as "not given".
//
// JSON and YAML render it as "YYYY-MM-DD"; CBOR carries the day number, which
// keeps replicated and stored encodings small and canonical.
type Date int32

// dateLayout is the only textual form of a Date.
const dateLayout = "2006-01-02"

// DateOf returns the civil date of t in t's location.
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return NewDate(y, m, d)
}

// NewDate returns the date y-m-d; out-of-range parts are normalized the way
// time.Date normalizes them.
func NewDate(y int, m time.Month, d int) Date {
	u := time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix()
	return Date(u / 86400)
}

// ParseDate parses "YYYY-MM-DD" and refuses days that do not exist.
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(dateLayout, s)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrBadDate, s)
	}
	return DateOf(t), nil
}

// Time returns midnight UTC at the start of the date.
func (d Date) Time() time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

// String renders the date as YYYY-MM-DD.
func (d Date) String() string { return d.Time().Format(dateLayout) }

// AddDays returns the date n days later (earlier for negative n).
func (d Date) AddDays(n int) Date { return d + Date(n) }

// AddMonths returns the same day of the month n months later, clamped to the
// end of a shorter month (2024-01-31 plus one month is 2024-02-29).
func (d Date) AddMonths(n int) Date {
	y, m, day := d.Time().Date()
	first := time.Date(y, m+time.Month(n), 1, 0, 0, 0, 0, time.UTC)
	last := first.AddDate(0, 1, -1).Day()
	if day > last {
		day = last
	}
	return NewDate(first.Year(), first.Month(), day)
}

// Weekday returns the day of the week.
func (d Date) Weekday() time.Weekday { return d.Time().Weekday() }

// MarshalText implements encoding.TextMarshaler (JSON, YAML).
func (d Date) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Date) UnmarshalText(b []byte) error {
	v, err := ParseDate(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
