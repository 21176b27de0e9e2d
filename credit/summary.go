package credit

// IndexSummary is what a district's index entry says about one subject: flags
// and counts, never content or identifiers (DESIGN §4). Districts compute it
// with Summarize and replicate it through Raft.
type IndexSummary struct {
	// Counts of displayed records by polarity (repaired records excluded).
	Positive int `json:"positive" cbor:"1,keyasint,omitempty"`
	Negative int `json:"negative" cbor:"2,keyasint,omitempty"`
	Neutral  int `json:"neutral" cbor:"3,keyasint,omitempty"`
	// Serious counts the serious negative records among Negative.
	Serious int `json:"serious" cbor:"4,keyasint,omitempty"`
	// OnRedList and OnDishonestyList say whether a displayed record puts the
	// subject on a red or a serious-dishonesty list.
	OnRedList        bool `json:"on_red_list" cbor:"5,keyasint,omitempty"`
	OnDishonestyList bool `json:"on_dishonesty_list" cbor:"6,keyasint,omitempty"`
	// HasDisputed says whether an objection is open against a displayed
	// record.
	HasDisputed bool `json:"has_disputed" cbor:"7,keyasint,omitempty"`
	// DisplayUntil is the latest end of display among the counted records:
	// from that day on the entry holds nothing. (The counts change earlier,
	// on each record's own end; the district's sweep recomputes the summary
	// on each of those days.)
	DisplayUntil Date `json:"display_until,omitzero" cbor:"8,keyasint,omitempty"`
	// Repaired counts repaired records still within their display period,
	// which only repair review and objection handling may see. They are in
	// no other count and set no list flag.
	Repaired int `json:"repaired" cbor:"9,keyasint,omitempty"`
	// Withdrawn, in an index update, withdraws the entry: the district
	// publishes the subject under another pseudonym now (a key rotation),
	// and the entry under this one is deleted. It counts nothing.
	Withdrawn bool `json:"withdrawn,omitempty" cbor:"10,keyasint,omitempty"`
}

// Records is how many records the summary counts, at least 1.
func (s IndexSummary) Records() int { return max(1, s.Positive+s.Negative+s.Neutral+s.Repaired) }

// Empty reports whether the summary counts nothing, in which case the
// district has nothing to show for the subject and its index entry can go.
func (s IndexSummary) Empty() bool {
	return s.Positive == 0 && s.Negative == 0 && s.Neutral == 0 && s.Repaired == 0
}

// SummaryFields returns r with only the fields Summarize reads (its item,
// status and decision date): what a district keeps beside its subject index
// so that publishing a subject's summary need not read its records.
// Summarize gives the same summary for these as for the whole records
// (TestSummarizeReadsOnlySummaryFields).
func (r Record) SummaryFields() Record {
	return Record{CatalogItem: r.CatalogItem, Status: r.Status, DecidedOn: r.DecidedOn}
}

// Summarize builds a subject's index summary from the current versions of
// the district's records about it. A record counts if, on the given day, it
// is displayable (IsDisplayable) for at least one purpose other than the
// subject's own; records of items unknown to the catalog are skipped.
// Repaired records (which only purposes that include repaired records see)
// count in Repaired alone. List flags come from the lists of the counted
// records' items.
func Summarize(records []Record, c *Catalog, on Date) IndexSummary {
	var s IndexSummary
	for _, r := range records {
		it, ok := c.Item(r.CatalogItem)
		if !ok || !displayableToOthers(r, it, c, on) {
			continue
		}
		if until := DisplayUntil(r, it); until > s.DisplayUntil {
			s.DisplayUntil = until
		}
		if r.Status == StatusRepaired {
			s.Repaired++
			continue
		}
		switch it.Polarity {
		case Positive:
			s.Positive++
		case Negative:
			s.Negative++
			if it.Severity == Serious {
				s.Serious++
			}
		case Neutral:
			s.Neutral++
		}
		if r.Status == StatusDisputed {
			s.HasDisputed = true
		}
		for _, lc := range it.Lists {
			l, ok := c.List(lc)
			if !ok {
				continue
			}
			switch l.Kind {
			case RedList:
				s.OnRedList = true
			case SeriousDishonestyList:
				s.OnDishonestyList = true
			}
		}
	}
	return s
}

func displayableToOthers(r Record, it Item, c *Catalog, on Date) bool {
	for _, p := range c.Purposes {
		if !p.SubjectOwn && IsDisplayable(r, it, on, p) {
			return true
		}
	}
	return false
}

// ListsOn returns the codes of the lists the records put their subject on,
// on the given day, as seen for the purpose (a record counts only while it is
// displayable for it), each code once, in catalog order. A check (DESIGN §9)
// feeds them to Scenario.Applicable.
func ListsOn(records []Record, c *Catalog, on Date, p Purpose) []string {
	found := map[string]bool{}
	for _, r := range records {
		it, ok := c.Item(r.CatalogItem)
		if !ok || !IsDisplayable(r, it, on, p) {
			continue
		}
		for _, lc := range it.Lists {
			found[lc] = true
		}
	}
	var out []string
	for _, l := range c.Lists {
		if found[l.Code] {
			out = append(out, l.Code)
		}
	}
	return out
}

// ThreeYearsClean reports whether the subject has had no bad record for
// three years (连续三年无不良信用记录, DESIGN §9): no negative record decided
// within the three years up to the given day that the purpose may use on
// that day. Records the purpose may not use — expired, repaired (for
// ordinary purposes), revoked, or hidden from it — do not count against the
// subject; a disputed record does.
func ThreeYearsClean(records []Record, c *Catalog, on Date, p Purpose) bool {
	since := on.AddMonths(-36)
	for _, r := range records {
		it, ok := c.Item(r.CatalogItem)
		if !ok || it.Polarity != Negative || r.DecidedOn <= since {
			continue
		}
		if IsDisplayable(r, it, on, p) {
			return false
		}
	}
	return true
}
