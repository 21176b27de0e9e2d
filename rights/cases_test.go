package rights

import (
	"strings"
	"testing"

	"credfed/storage"
)

func TestCaseIDNamesItsDistrict(t *testing.T) {
	for _, kind := range []string{KindObjection, KindRepair} {
		id := NewCaseID(kind, "zhejiang/quzhou/kecheng")
		got, err := caseDistrict(kind, id)
		if err != nil || got != "zhejiang/quzhou/kecheng" {
			t.Errorf("%s id %q names %q, %v", kind, id, got, err)
		}
		if NewCaseID(kind, "x/y") == NewCaseID(kind, "x/y") {
			t.Error("two case ids are equal")
		}
	}
	for _, bad := range []string{"", "ob-", "ob-short.zhejiang", "rp-" + strings.Repeat("a", 26) + ".zhejiang",
		"ob-" + strings.Repeat("a", 26) + ".", "ob-" + strings.Repeat("a", 26) + ".Bad_Region", "ob-" + strings.Repeat("a", 26) + ".a..b"} {
		if d, err := caseDistrict(KindObjection, bad); err == nil {
			t.Errorf("caseDistrict(%q) = %q, want not found", bad, d)
		}
	}
}

func TestCheckFiling(t *testing.T) {
	ok := Filing{Kind: KindObjection, Subject: "s", Record: "zhejiang/d/dept/R-1", Reason: "错了", Authentication: "FACE"}
	if e := checkFiling(ok); e != nil {
		t.Fatalf("a good filing: %v", e)
	}
	secret := "99010119900307001X"
	for name, mod := range map[string]func(*Filing){
		"no record":             func(f *Filing) { f.Record = "" },
		"bad ref":               func(f *Filing) { f.Record = secret },
		"no reason":             func(f *Filing) { f.Reason = " " },
		"invisible reason":      func(f *Filing) { f.Reason = "a\u200bb" + secret },
		"long reason":           func(f *Filing) { f.Reason = strings.Repeat("长", MaxReason) },
		"too much evidence":     func(f *Filing) { f.Evidence = make([]string, MaxEvidence+1) },
		"grounds on objection":  func(f *Filing) { f.Grounds = "training" },
		"repair without ground": func(f *Filing) { f.Kind = storage.CaseRepair },
	} {
		f := ok
		mod(&f)
		e := checkFiling(f)
		if e == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(e.Error(), secret) {
			t.Errorf("%s: the error echoes the input: %v", name, e)
		}
	}
}
