package credit

import (
	"strings"
	"testing"
)

func TestRefRoundTrip(t *testing.T) {
	for _, r := range []Ref{
		{District: "tianjin/heping", Department: "market-supervision", ID: "R-2026-0001"},
		{District: "99/01/02", Department: "tax", ID: "a b:c"},
		{District: "zhejiang", Department: "d", ID: "x"},
	} {
		got, err := ParseRef(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRef(%q) = %+v, %v", r.String(), got, err)
		}
	}
}

func TestParseRefRefusesMalformed(t *testing.T) {
	secret := "11010519491231002X"
	for _, s := range []string{"", "x", "a/b", "/dept/id", "a//b/c", "a/b/", "a/b/c\x00", "a/b/" + strings.Repeat("i", MaxRefLength), "a/b/\u200bid" + secret} {
		_, err := ParseRef(s)
		if err == nil {
			t.Errorf("ParseRef(%q) accepted", s)
			continue
		}
		if strings.Contains(err.Error(), secret) || (s != "" && len(s) > 3 && strings.Contains(err.Error(), s)) {
			t.Errorf("ParseRef(%q) echoes its input: %v", s, err)
		}
	}
}
