package credit

import (
	"sync"
	"time"
)

// Calendar tells working days from rest days: Monday to Friday work, Saturday
// and Sunday rest, except for public holidays (rest even on a weekday) and
// make-up working days (调休上班, work even on a weekend).
//
// A Calendar is immutable once built and safe for concurrent use.
type Calendar struct {
	holidays map[Date]bool
	makeup   map[Date]bool
}

// NewCalendar builds a calendar from the days off of public holidays and the
// make-up working days. A day listed in both is a working day. Listing
// weekend days among the holidays is harmless.
func NewCalendar(holidays, makeupWorkdays []Date) *Calendar {
	c := &Calendar{holidays: make(map[Date]bool, len(holidays)), makeup: make(map[Date]bool, len(makeupWorkdays))}
	for _, d := range holidays {
		c.holidays[d] = true
	}
	for _, d := range makeupWorkdays {
		c.makeup[d] = true
	}
	return c
}

// IsWorkingDay reports whether d is a working day.
func (c *Calendar) IsWorkingDay(d Date) bool {
	if c.makeup[d] {
		return true
	}
	if c.holidays[d] {
		return false
	}
	wd := d.Weekday()
	return wd != time.Saturday && wd != time.Sunday
}

// AddWorkingDays returns the n-th working day after from (from itself is
// not counted, whether or not it is a working day). For n = 0 it returns
// from; for negative n it counts backwards, returning the |n|-th working day
// before from.
func (c *Calendar) AddWorkingDays(from Date, n int) Date {
	step := Date(1)
	if n < 0 {
		step, n = -1, -n
	}
	d := from
	for n > 0 {
		d += step
		if c.IsWorkingDay(d) {
			n--
		}
	}
	return d
}

// DefaultCalendar returns China's public-holiday arrangements for 2025 and
// 2026 as published by the General Office of the State Council:
//
//   - 国务院办公厅关于2025年部分节假日安排的通知（国办发明电〔2024〕12号,
//     12 November 2024);
//   - 国务院办公厅关于2026年部分节假日安排的通知 (4 November 2025).
//
// Both texts were checked against their Xinhua publication. Other years are
// not covered: their weekdays count as working days and their weekends as
// rest days, so a deadline reaching into 2027 ignores that year's holidays
// until its notice is added here.
func DefaultCalendar() *Calendar { return defaultCalendar() }

var defaultCalendar = sync.OnceValue(func() *Calendar {
	var holidays, makeup []Date
	span := func(y int, m time.Month, from, to int) {
		for d := from; d <= to; d++ {
			holidays = append(holidays, NewDate(y, m, d))
		}
	}
	work := func(y int, m time.Month, d int) { makeup = append(makeup, NewDate(y, m, d)) }

	// 2025 (国办发明电〔2024〕12号).
	span(2025, time.January, 1, 1)   // 元旦
	span(2025, time.January, 28, 31) // 春节 1月28日（除夕）至2月4日
	span(2025, time.February, 1, 4)
	work(2025, time.January, 26)   // 周日上班
	work(2025, time.February, 8)   // 周六上班
	span(2025, time.April, 4, 6)   // 清明节
	span(2025, time.May, 1, 5)     // 劳动节
	work(2025, time.April, 27)     // 周日上班
	span(2025, time.May, 31, 31)   // 端午节 5月31日至6月2日
	span(2025, time.June, 1, 2)    //
	span(2025, time.October, 1, 8) // 国庆节、中秋节
	work(2025, time.September, 28) // 周日上班
	work(2025, time.October, 11)   // 周六上班

	// 2026 (国务院办公厅 2025年11月4日).
	span(2026, time.January, 1, 3)     // 元旦
	work(2026, time.January, 4)        // 周日上班
	span(2026, time.February, 15, 23)  // 春节
	work(2026, time.February, 14)      // 周六上班
	work(2026, time.February, 28)      // 周六上班
	span(2026, time.April, 4, 6)       // 清明节
	span(2026, time.May, 1, 5)         // 劳动节
	work(2026, time.May, 9)            // 周六上班
	span(2026, time.June, 19, 21)      // 端午节
	span(2026, time.September, 25, 27) // 中秋节
	span(2026, time.October, 1, 7)     // 国庆节
	work(2026, time.September, 20)     // 周日上班
	work(2026, time.October, 10)       // 周六上班

	return NewCalendar(holidays, makeup)
})
