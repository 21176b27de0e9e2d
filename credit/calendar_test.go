package credit

import (
	"testing"
	"time"
)

func d(s string) Date {
	v, err := ParseDate(s)
	if err != nil {
		panic(err)
	}
	return v
}

func TestDefaultCalendarWorkingDays(t *testing.T) {
	cal := DefaultCalendar()
	tests := []struct {
		day  string
		work bool
	}{
		{"2025-01-01", false}, // 元旦, Wednesday
		{"2025-01-02", true},
		{"2025-01-26", true},  // Sunday make-up day before the Spring Festival
		{"2025-01-28", false}, // 除夕
		{"2025-02-04", false}, // 正月初七
		{"2025-02-05", true},
		{"2025-02-08", true}, // Saturday make-up day
		{"2025-04-04", false},
		{"2025-04-27", true}, // Sunday make-up day
		{"2025-05-05", false},
		{"2025-06-02", false},
		{"2025-09-28", true}, // Sunday make-up day
		{"2025-10-01", false},
		{"2025-10-08", false},
		{"2025-10-09", true},
		{"2025-10-11", true},  // Saturday make-up day
		{"2025-10-12", false}, // ordinary Sunday
		{"2025-11-15", false}, // ordinary Saturday
		{"2025-11-17", true},  // ordinary Monday
		{"2026-01-02", false},
		{"2026-01-04", true}, // Sunday make-up day
		{"2026-02-14", true}, // Saturday make-up day
		{"2026-02-16", false},
		{"2026-02-23", false},
		{"2026-02-24", true},
		{"2026-02-28", true},
		{"2026-05-05", false},
		{"2026-05-09", true},
		{"2026-06-19", false},
		{"2026-09-20", true},
		{"2026-09-25", false},
		{"2026-10-07", false},
		{"2026-10-08", true},
		{"2026-10-10", true},
	}
	for _, tt := range tests {
		if got := cal.IsWorkingDay(d(tt.day)); got != tt.work {
			t.Errorf("IsWorkingDay(%s, %s) = %v, want %v", tt.day, d(tt.day).Weekday(), got, tt.work)
		}
	}
}

func TestAddWorkingDays(t *testing.T) {
	cal := DefaultCalendar()
	tests := []struct {
		name string
		from string
		n    int
		want string
	}{
		{"zero", "2025-06-10", 0, "2025-06-10"},
		{"next day", "2025-06-10", 1, "2025-06-11"},
		{"over a weekend", "2025-06-13", 1, "2025-06-16"},
		{"from a Saturday", "2025-06-14", 1, "2025-06-16"},
		{"15 working days", "2025-06-03", 15, "2025-06-24"},
		// Filed Friday 26 September 2025: Sunday 28th is a make-up working day,
		// 1-8 October are off (National Day and Mid-Autumn), Saturday 11th works.
		{"into the golden week", "2025-09-26", 3, "2025-09-30"},
		{"across the golden week", "2025-09-26", 4, "2025-10-09"},
		{"onto the make-up Saturday", "2025-09-26", 6, "2025-10-11"},
		{"past the make-up Saturday", "2025-09-26", 7, "2025-10-13"},
		{"onto the make-up Saturday 2026", "2026-02-12", 2, "2026-02-14"},
		{"across the Spring Festival 2026", "2026-02-13", 2, "2026-02-24"},
		{"backwards", "2025-10-09", -1, "2025-09-30"},
		{"backwards over the make-up Sunday", "2025-09-29", -1, "2025-09-28"},
	}
	for _, tt := range tests {
		if got := cal.AddWorkingDays(d(tt.from), tt.n).String(); got != tt.want {
			t.Errorf("%s: AddWorkingDays(%s, %d) = %s, want %s", tt.name, tt.from, tt.n, got, tt.want)
		}
	}
}

func TestNewCalendar(t *testing.T) {
	sat := d("2030-01-05")
	mon := d("2030-01-07")
	cal := NewCalendar([]Date{mon, sat}, []Date{sat})
	if sat.Weekday() != time.Saturday || mon.Weekday() != time.Monday {
		t.Fatal("fixture weekdays")
	}
	if !cal.IsWorkingDay(sat) {
		t.Error("make-up Saturday listed in both is not a working day")
	}
	if cal.IsWorkingDay(mon) {
		t.Error("holiday Monday is a working day")
	}
	// Friday 4th + 1 → Saturday 5th (make-up), + 2 → Tuesday 8th.
	if got := cal.AddWorkingDays(d("2030-01-04"), 2); got != d("2030-01-08") {
		t.Errorf("AddWorkingDays = %s", got)
	}
	empty := NewCalendar(nil, nil)
	if empty.IsWorkingDay(d("2025-10-01")) != true {
		t.Error("an empty calendar knows no holidays")
	}
}
