package credit

import "slices"

// The rules of display, retention, repair and objection (DESIGN §6-§8, §10).
// All periods count from the record's decision date. End dates are
// exclusive: DisplayUntil is the first day on which the record is no longer
// displayed.

// DisplayUntil returns the first day on which the record is no longer
// displayed: its decision date plus the item's display period.
func DisplayUntil(r Record, it Item) Date { return it.DisplayPeriod.AddTo(r.DecidedOn) }

// RetentionEnd returns the day on which the record is to be deleted: its
// decision date plus the item's retention period.
func RetentionEnd(r Record, it Item) Date { return it.RetentionPeriod.AddTo(r.DecidedOn) }

// IsDisplayable reports whether the record may be shown and used for the
// purpose on the given day:
//
//   - it belongs to the item, and its status is active or disputed (disputed
//     records are shown marked as such), or repaired for a purpose that
//     includes repaired records;
//   - the day is within the display period (decision date ≤ on < DisplayUntil);
//   - the purpose may see the item: the subject's own purpose sees every
//     item at every disclosure level; any other purpose must be named in the
//     item's purposes and see the item's disclosure level (never internal).
func IsDisplayable(r Record, it Item, on Date, p Purpose) bool {
	if r.CatalogItem != it.Code {
		return false
	}
	switch r.Status {
	case StatusActive, StatusDisputed:
	case StatusRepaired:
		if !p.IncludesRepaired {
			return false
		}
	default:
		return false
	}
	if on < r.DecidedOn || on >= DisplayUntil(r, it) {
		return false
	}
	if p.SubjectOwn {
		return true
	}
	if it.Disclosure == Internal || disclosureRank(it.Disclosure) > disclosureRank(p.MaxDisclosure) {
		return false
	}
	return slices.Contains(it.Purposes, p.Code)
}

// PubliclyDisclosable reports whether the record belongs on the public
// disclosure pages on the given day (DESIGN §10): a serious negative record
// of a public item, active or disputed, within its display period. The
// identifier is then shown masked (MaskIdentifier).
func PubliclyDisclosable(r Record, it Item, on Date) bool {
	if r.CatalogItem != it.Code || it.Polarity != Negative || it.Severity != Serious || it.Disclosure != Public {
		return false
	}
	if r.Status != StatusActive && r.Status != StatusDisputed {
		return false
	}
	return on >= r.DecidedOn && on < DisplayUntil(r, it)
}

// RepairEligibleFrom returns the first day on which the subject may apply for
// credit repair of the record (decision date plus the item's minimum
// publicity period), and false if the item cannot be repaired or the record
// is not active (a disputed record waits for its objection; a repaired,
// revoked or expired one has nothing left to repair).
func RepairEligibleFrom(r Record, it Item) (Date, bool) {
	if !it.Repairable || it.Polarity != Negative || r.CatalogItem != it.Code || r.Status != StatusActive {
		return 0, false
	}
	return it.MinPublicity.AddTo(r.DecidedOn), true
}

// ObjectionDeadline returns the day by which an objection filed on the given
// day must be resolved: the item's objection deadline counted in working
// days after the filing day. A nil calendar means DefaultCalendar.
func ObjectionDeadline(filed Date, it Item, cal *Calendar) Date {
	if cal == nil {
		cal = DefaultCalendar()
	}
	return cal.AddWorkingDays(filed, it.ObjectionDeadlineDays)
}
