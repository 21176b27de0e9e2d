package credit

import (
	"testing"
	"time"
)

// TestCheckBirthAgreesWithTimeParse: the hand-written birth date check
// accepts exactly the dates time.Parse("20060102") accepts (within the
// range and not in the future), over every day of several years (leap
// and not, 1900 and 2000) and impossible days and months.
func TestCheckBirthAgreesWithTimeParse(t *testing.T) {
	opt := ParseOptions{Today: NewDate(2026, time.June, 1)}
	want := func(s string) bool {
		tm, err := time.Parse("20060102", s)
		if err != nil {
			return false
		}
		d := DateOf(tm)
		return d >= minBirth && d <= opt.today()
	}
	n := 0
	for _, y := range []int{1899, 1900, 1904, 1999, 2000, 2023, 2024, 2026, 2027} {
		for m := 0; m <= 13; m++ {
			for d := 0; d <= 32; d++ {
				s := pad(y, 4) + pad(m, 2) + pad(d, 2)
				if got := checkBirth(s, opt) == nil; got != want(s) {
					t.Fatalf("checkBirth(%s) accepted %v, time.Parse says %v", s, got, want(s))
				}
				n++
			}
		}
	}
	for _, s := range []string{"", "2000010", "200001011", "2000a101", "20000101 "} {
		if checkBirth(s, opt) == nil {
			t.Fatalf("checkBirth(%q) accepted", s)
		}
	}
	if n < 4000 {
		t.Fatalf("only %d dates tried", n)
	}
}

func pad(v, w int) string {
	s := ""
	for range w {
		s = string(rune('0'+v%10)) + s
		v /= 10
	}
	return s
}
