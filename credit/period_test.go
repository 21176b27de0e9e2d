package credit

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParsePeriod(t *testing.T) {
	good := map[string]Period{
		"P3Y":      {Years: 3},
		"P6M":      {Months: 6},
		"P1Y6M":    {Years: 1, Months: 6},
		"P90D":     {Days: 90},
		"P1Y2M10D": {Years: 1, Months: 2, Days: 10},
		"P0D":      {},
	}
	for s, want := range good {
		got, err := ParsePeriod(s)
		if err != nil || got != want {
			t.Errorf("ParsePeriod(%q) = %+v, %v; want %+v", s, got, err, want)
		}
		if got.String() != s {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), s)
		}
	}
	for _, s := range []string{"", "P", "3Y", "P3", "PY", "P-1Y", "P1M1Y", "P1Y1Y", "P1W", "P1YT1H", "p1y", "P1.5Y", "P1234567D", " P1Y"} {
		if _, err := ParsePeriod(s); !errors.Is(err, ErrBadPeriod) {
			t.Errorf("ParsePeriod(%q) error = %v, want ErrBadPeriod", s, err)
		}
	}
}

func TestPeriodAddTo(t *testing.T) {
	tests := []struct {
		from string
		p    Period
		want string
	}{
		{"2024-05-10", Years(3), "2027-05-10"},
		{"2024-02-29", Years(1), "2025-02-28"},
		{"2024-01-31", Months(1), "2024-02-29"},
		{"2024-08-31", Months(6), "2025-02-28"},
		{"2024-12-15", Days(90), "2025-03-15"},
		{"2024-01-31", Period{Years: 1, Months: 1, Days: 1}, "2025-03-01"},
		{"2025-01-01", Period{}, "2025-01-01"},
	}
	for _, tt := range tests {
		from, _ := ParseDate(tt.from)
		if got := tt.p.AddTo(from).String(); got != tt.want {
			t.Errorf("%s + %s = %s, want %s", tt.from, tt.p, got, tt.want)
		}
	}
}

func TestPeriodAtLeast(t *testing.T) {
	tests := []struct {
		p, q Period
		want bool
	}{
		{Years(5), Years(3), true},
		{Years(1), Months(12), true},
		{Months(12), Years(1), true},
		{Days(365), Years(1), false}, // leap years
		{Days(366), Years(1), true},
		{Months(1), Days(30), false}, // February
		{Days(31), Months(1), true},
		{Months(3), Years(1), false},
	}
	for _, tt := range tests {
		if got := tt.p.AtLeast(tt.q); got != tt.want {
			t.Errorf("%s.AtLeast(%s) = %v, want %v", tt.p, tt.q, got, tt.want)
		}
	}
}

func TestPeriodJSON(t *testing.T) {
	type wrap struct {
		P Period `json:"p"`
	}
	b, err := json.Marshal(wrap{Period{Years: 1, Months: 6}})
	if err != nil || string(b) != `{"p":"P1Y6M"}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var w wrap
	if err := json.Unmarshal([]byte(`{"p":"P90D"}`), &w); err != nil || w.P != Days(90) {
		t.Errorf("Unmarshal = %+v, %v", w, err)
	}
	if err := json.Unmarshal([]byte(`{"p":"90 days"}`), &w); err == nil {
		t.Error("bad period accepted")
	}
	if !Years(1).Positive() || (Period{}).Positive() || (Period{Years: 1, Days: -1}).Positive() {
		t.Error("Positive")
	}
}
