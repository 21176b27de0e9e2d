package stats

// MinCount is the smallest count published: a count from 1 to MinCount-1
// is suppressed (primary suppression). Zero is published: it names nobody,
// and suppressing it would let a reader bound the suppressed cells less
// (a suppressed cell is then known to be from 1 to MinCount-1 anyway).
const MinCount = 5

// Cell is one published count: Value when Suppressed is false.
type Cell struct {
	Value      int64
	Suppressed bool
}

// Constraint says that the value at Total is the sum of the values at
// Parts (indices into the values Suppress is given): a table's row with its
// row total, a column with its column total, the row of column totals with
// the grand total.
type Constraint struct {
	Total int
	Parts []int
}

// Suppress decides which of values are published. Primary suppression:
// every value from 1 to MinCount-1. Complementary suppression: a
// constraint with any suppressed part has its total suppressed too, to a
// fixed point (a suppressed total is the part of another constraint).
//
// Why the total and not a second cell: a reader knows a suppressed cell is
// from 1 to MinCount-1, so two suppressed cells beside a published total
// may be computed back (cells summing to 2 are both 1; to 8, both 4), and a
// second suppressed cell chosen among published ones may be small too.
// With every constraint that holds a suppressed part losing its total,
// each equation a reader has holds at least two unknowns, a total among
// them, and for a table with margins (rows, columns, grand total) no
// combination of them isolates a cell (the row and column equations cancel
// only all together, where every cell cancels too); every assignment of
// 1..MinCount-1 to the suppressed cells is consistent with what is
// published. The attack tests check this by enumeration.
//
// Suppress is valid for constraints that form tables with margins, or
// trees of subtotals; two different breakdowns of the same total that are
// not the two margins of one table must not both be published (a reader
// subtracts them and the shared total cancels).
//
// Negative values are treated as published; the caller gives counts.
func Suppress(values []int64, constraints []Constraint) []Cell {
	out := make([]Cell, len(values))
	for i, v := range values {
		out[i] = Cell{Value: v, Suppressed: v > 0 && v < MinCount}
	}
	// Each pass suppresses at least one more total or stops: at most
	// len(values)+1 passes.
	for pass := 0; pass <= len(values); pass++ {
		changed := false
		for _, c := range constraints {
			if c.Total < 0 || c.Total >= len(out) || out[c.Total].Suppressed {
				continue
			}
			for _, p := range c.Parts {
				if p >= 0 && p < len(out) && out[p].Suppressed {
					out[c.Total].Suppressed = true
					changed = true
					break
				}
			}
		}
		if !changed {
			break
		}
	}
	for i := range out {
		if out[i].Suppressed {
			out[i].Value = 0 // never carried past this point
		}
	}
	return out
}

// Table is a table of exact counts: Cells[r][c], with row totals (the sum
// of each row), column totals (the sum of each column) and, when both, the
// grand total. Every row has Cols cells (missing ones count 0).
type Table struct {
	Cols      int
	Cells     [][]int64
	RowTotals bool
	ColTotals bool
}

// Published is a table after suppression. RowTotals and ColTotals are nil
// when the table has none; Total is set when it has both.
type Published struct {
	Cells     [][]Cell
	RowTotals []Cell
	ColTotals []Cell
	Total     *Cell
}

// Publish computes the table's margins from its cells and suppresses
// (Suppress) cells and margins together.
func (t Table) Publish() Published {
	rows, cols := len(t.Cells), t.Cols
	var values []int64
	cell := func(r, c int) int { return r*cols + c }
	for r := range rows {
		for c := range cols {
			var v int64
			if c < len(t.Cells[r]) {
				v = t.Cells[r][c]
			}
			values = append(values, v)
		}
	}
	var cons []Constraint
	rowTotal, colTotal, grand := -1, -1, -1
	if t.RowTotals {
		rowTotal = len(values)
		for r := range rows {
			var sum int64
			parts := make([]int, cols)
			for c := range cols {
				sum += values[cell(r, c)]
				parts[c] = cell(r, c)
			}
			cons = append(cons, Constraint{Total: len(values), Parts: parts})
			values = append(values, sum)
		}
	}
	if t.ColTotals {
		colTotal = len(values)
		for c := range cols {
			var sum int64
			parts := make([]int, rows)
			for r := range rows {
				sum += values[cell(r, c)]
				parts[r] = cell(r, c)
			}
			cons = append(cons, Constraint{Total: len(values), Parts: parts})
			values = append(values, sum)
		}
	}
	if t.RowTotals && t.ColTotals {
		grand = len(values)
		var sum int64
		var byRow, byCol []int
		for r := range rows {
			sum += values[rowTotal+r]
			byRow = append(byRow, rowTotal+r)
		}
		for c := range cols {
			byCol = append(byCol, colTotal+c)
		}
		cons = append(cons, Constraint{Total: grand, Parts: byRow}, Constraint{Total: grand, Parts: byCol})
		values = append(values, sum)
	}
	cells := Suppress(values, cons)
	out := Published{Cells: make([][]Cell, rows)}
	for r := range rows {
		out.Cells[r] = cells[cell(r, 0) : cell(r, 0)+cols]
	}
	if t.RowTotals {
		out.RowTotals = cells[rowTotal : rowTotal+rows]
	}
	if t.ColTotals {
		out.ColTotals = cells[colTotal : colTotal+cols]
	}
	if grand >= 0 {
		g := cells[grand]
		out.Total = &g
	}
	return out
}
