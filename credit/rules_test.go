package credit

import "testing"

func rec(item, decided string, status Status) Record {
	return Record{ID: "r-" + item, Subject: "11010519491231002X", CatalogItem: item, DecisionNumber: "津和市监罚〔2025〕1号",
		OccurredOn: d(decided), DecidedOn: d(decided), Department: "market-supervision", District: "tianjin/heping",
		Status: status, Version: 1}
}

func TestDisplayAndRetention(t *testing.T) {
	c := DefaultCatalog()
	it, _ := c.Item("TAX-SERIOUS")
	r := rec("TAX-SERIOUS", "2024-02-29", StatusActive)
	if got := DisplayUntil(r, it).String(); got != "2027-02-28" {
		t.Errorf("DisplayUntil = %s", got)
	}
	if got := RetentionEnd(r, it).String(); got != "2029-02-28" {
		t.Errorf("RetentionEnd = %s", got)
	}
}

func TestIsDisplayable(t *testing.T) {
	c := DefaultCatalog()
	purpose := func(code string) Purpose {
		p, ok := c.Purpose(code)
		if !ok {
			t.Fatalf("no purpose %s", code)
		}
		return p
	}
	tests := []struct {
		name    string
		item    string
		decided string
		status  Status
		on      string
		purpose string
		want    bool
	}{
		{"active within display", "TAX-SERIOUS", "2024-05-10", StatusActive, "2025-06-01", "ADMIN-LICENSING", true},
		{"disputed within display", "TAX-SERIOUS", "2024-05-10", StatusDisputed, "2025-06-01", "ADMIN-LICENSING", true},
		{"on the decision day", "TAX-SERIOUS", "2024-05-10", StatusActive, "2024-05-10", "ADMIN-LICENSING", true},
		{"before the decision", "TAX-SERIOUS", "2024-05-10", StatusActive, "2024-05-09", "ADMIN-LICENSING", false},
		{"last day of display", "TAX-SERIOUS", "2024-05-10", StatusActive, "2027-05-09", "ADMIN-LICENSING", true},
		{"display ended", "TAX-SERIOUS", "2024-05-10", StatusActive, "2027-05-10", "ADMIN-LICENSING", false},
		{"expired", "TAX-SERIOUS", "2024-05-10", StatusExpired, "2025-06-01", "ADMIN-LICENSING", false},
		{"revoked", "TAX-SERIOUS", "2024-05-10", StatusRevoked, "2025-06-01", "ADMIN-LICENSING", false},
		{"superseded", "TAX-SERIOUS", "2024-05-10", StatusCorrected, "2025-06-01", "ADMIN-LICENSING", false},
		{"repaired, ordinary purpose", "TAX-SERIOUS", "2024-05-10", StatusRepaired, "2025-06-01", "ADMIN-LICENSING", false},
		{"repaired, repair review", "TAX-SERIOUS", "2024-05-10", StatusRepaired, "2025-06-01", "CREDIT-REPAIR-REVIEW", true},
		{"repaired, subject", "TAX-SERIOUS", "2024-05-10", StatusRepaired, "2025-06-01", "SELF-INQUIRY", true},
		{"purpose not admitted", "ADMINISTRATIVE-LICENCE", "2024-05-10", StatusActive, "2025-06-01", "CIVIL-SERVICE-RECRUITMENT", false},
		{"authorized item, public purpose", "TRAFFIC-SERIOUS", "2024-05-10", StatusActive, "2025-06-01", "STATISTICS", false},
		{"authorized item, authorized purpose", "TRAFFIC-SERIOUS", "2024-05-10", StatusActive, "2025-06-01", "LAW-ENFORCEMENT", true},
		{"public item, public purpose", "TAX-SERIOUS", "2024-05-10", StatusActive, "2025-06-01", "STATISTICS", true},
		{"internal item, lookup", "BLOOD-DONATION", "2024-05-10", StatusActive, "2025-06-01", "ADMIN-LICENSING", false},
		{"internal item, subject", "BLOOD-DONATION", "2024-05-10", StatusActive, "2025-06-01", "SELF-INQUIRY", true},
		{"subject, display ended", "BLOOD-DONATION", "2020-05-10", StatusActive, "2025-06-01", "SELF-INQUIRY", false},
	}
	for _, tt := range tests {
		it, _ := c.Item(tt.item)
		r := rec(tt.item, tt.decided, tt.status)
		if got := IsDisplayable(r, it, d(tt.on), purpose(tt.purpose)); got != tt.want {
			t.Errorf("%s: IsDisplayable = %v, want %v", tt.name, got, tt.want)
		}
	}
	// A record is never shown under another item's rules.
	it, _ := c.Item("TAX-SERIOUS")
	if IsDisplayable(rec("FOOD-DRUG-PENALTY", "2025-01-01", StatusActive), it, d("2025-06-01"), purpose("ADMIN-LICENSING")) {
		t.Error("record displayed under a foreign item")
	}
}

func TestPubliclyDisclosable(t *testing.T) {
	c := DefaultCatalog()
	tests := []struct {
		item   string
		status Status
		on     string
		want   bool
	}{
		{"DISHONEST-JUDGMENT-DEBTOR", StatusActive, "2025-06-01", true},
		{"DISHONEST-JUDGMENT-DEBTOR", StatusDisputed, "2025-06-01", true},
		{"DISHONEST-JUDGMENT-DEBTOR", StatusActive, "2026-05-10", false}, // two-year display ended
		{"DISHONEST-JUDGMENT-DEBTOR", StatusRepaired, "2025-06-01", false},
		{"FOOD-DRUG-PENALTY", StatusActive, "2025-01-01", false}, // ordinary
		{"TRAFFIC-SERIOUS", StatusActive, "2025-06-01", false},   // authorized, not public
		{"OUTSTANDING-YOUTH-VOLUNTEER", StatusActive, "2025-06-01", false},
	}
	for _, tt := range tests {
		it, _ := c.Item(tt.item)
		if got := PubliclyDisclosable(rec(tt.item, "2024-05-10", tt.status), it, d(tt.on)); got != tt.want {
			t.Errorf("PubliclyDisclosable(%s, %s, %s) = %v", tt.item, tt.status, tt.on, got)
		}
	}
}

func TestRepairEligibleFrom(t *testing.T) {
	c := DefaultCatalog()
	tests := []struct {
		item   string
		status Status
		want   string // "" for not repairable
	}{
		{"FOOD-DRUG-PENALTY", StatusActive, "2024-08-10"}, // ordinary: 3 months
		{"TAX-SERIOUS", StatusActive, "2025-05-10"},       // serious: 1 year
		{"TAX-SERIOUS", StatusDisputed, ""},
		{"TAX-SERIOUS", StatusRepaired, ""},
		{"DISHONEST-JUDGMENT-DEBTOR", StatusActive, ""}, // not repairable
		{"MORAL-MODEL", StatusActive, ""},
	}
	for _, tt := range tests {
		it, _ := c.Item(tt.item)
		got, ok := RepairEligibleFrom(rec(tt.item, "2024-05-10", tt.status), it)
		switch {
		case tt.want == "" && ok:
			t.Errorf("%s %s: repairable from %s", tt.item, tt.status, got)
		case tt.want != "" && (!ok || got.String() != tt.want):
			t.Errorf("%s %s: RepairEligibleFrom = %s, %v; want %s", tt.item, tt.status, got, ok, tt.want)
		}
	}
}

func TestObjectionDeadline(t *testing.T) {
	c := DefaultCatalog()
	it, _ := c.Item("TAX-SERIOUS") // 15 working days
	// Filed Thursday 18 September 2025: working days 19, 22-26, 28 (Sunday,
	// make-up), 29, 30 = 9; 1-8 October off; 9, 10, 11 (Saturday, make-up),
	// 13, 14, 15 = 15.
	if got := ObjectionDeadline(d("2025-09-18"), it, nil).String(); got != "2025-10-15" {
		t.Errorf("deadline = %s, want 2025-10-15", got)
	}
	// Without the holiday arrangements the same count ends on 9 October.
	if got := ObjectionDeadline(d("2025-09-18"), it, NewCalendar(nil, nil)).String(); got != "2025-10-09" {
		t.Errorf("deadline without holidays = %s, want 2025-10-09", got)
	}
}
