package stats

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSuppressPrimary(t *testing.T) {
	got := Suppress([]int64{0, 1, 4, 5, 12}, nil)
	want := []Cell{{Value: 0}, {Suppressed: true}, {Suppressed: true}, {Value: 5}, {Value: 12}}
	if !slices.Equal(got, want) {
		t.Fatalf("Suppress = %+v, want %+v", got, want)
	}
}

func TestSuppressTotalFollowsAnySuppressedPart(t *testing.T) {
	// Row [3, 10, 0] = 13: 3 is suppressed, so is 13 (else 13-10 = 3).
	got := Suppress([]int64{3, 10, 0, 13}, []Constraint{{Total: 3, Parts: []int{0, 1, 2}}})
	if !got[0].Suppressed || !got[3].Suppressed || got[1].Suppressed || got[2].Suppressed {
		t.Fatalf("Suppress = %+v", got)
	}
	// Two suppressed cells: the total goes too (1+1 = 2 would give both).
	got = Suppress([]int64{1, 1, 10, 12}, []Constraint{{Total: 3, Parts: []int{0, 1, 2}}})
	if !got[3].Suppressed {
		t.Fatalf("a total beside two suppressed cells is published: %+v", got)
	}
	// Nothing small: nothing suppressed.
	got = Suppress([]int64{5, 10, 15}, []Constraint{{Total: 2, Parts: []int{0, 1}}})
	for i, c := range got {
		if c.Suppressed {
			t.Fatalf("cell %d suppressed: %+v", i, got)
		}
	}
}

func TestSuppressCascades(t *testing.T) {
	// A suppressed row total is a part of the column of row totals: the
	// grand total follows.
	tab := Table{Cols: 2, Cells: [][]int64{{2, 10}, {10, 10}}, RowTotals: true, ColTotals: true}
	p := tab.Publish()
	if !p.Cells[0][0].Suppressed || !p.RowTotals[0].Suppressed || !p.ColTotals[0].Suppressed || !p.Total.Suppressed {
		t.Fatalf("published %+v", p)
	}
	if p.RowTotals[1].Suppressed || p.ColTotals[1].Suppressed || p.Cells[1][0].Value != 10 || p.RowTotals[1].Value != 20 || p.ColTotals[1].Value != 20 {
		t.Fatalf("published %+v: row 2 and column 2 hold no small count", p)
	}
}

func TestSuppressedValuesAreNotCarried(t *testing.T) {
	p := Table{Cols: 3, Cells: [][]int64{{1, 2, 3}, {4, 40, 400}}, RowTotals: true, ColTotals: true}.Publish()
	check := func(c Cell) {
		if c.Suppressed && c.Value != 0 {
			t.Errorf("a suppressed cell carries its value: %+v", c)
		}
	}
	for _, row := range p.Cells {
		for _, c := range row {
			check(c)
		}
	}
	for _, c := range append(p.RowTotals, p.ColTotals...) {
		check(c)
	}
	check(*p.Total)
}

func TestPublishEmptyTable(t *testing.T) {
	p := Table{Cols: 3, RowTotals: true, ColTotals: true}.Publish()
	if len(p.Cells) != 0 || len(p.ColTotals) != 3 || p.Total == nil || p.Total.Suppressed || p.Total.Value != 0 {
		t.Fatalf("published %+v", p)
	}
}

// published is one published table as an attacker sees it: which cells of
// the hidden grid it covers (rows of the grid), and its cells and margins.
type published struct {
	rows []int
	tab  Table
	pub  Published
}

// attack is an attacker who knows the rule: every suppressed cell is from
// 1 to MinCount-1, a published zero is zero, and every published total is
// the sum of its line. It tries every value of the suppressed cells of
// the hidden grid (cells suppressed in any of the tables) and returns, for
// each suppressed cell, the values consistent with everything published,
// and for each suppressed margin whose true value is small, the values it
// can take. A value that is a single one is computed back.
func attack(t *testing.T, cols int, truth [][]int64, tables []published) (cells map[[2]int][]int64, margins map[string][]int64) {
	t.Helper()
	var unknown [][2]int
	known := map[[2]int]int64{}
	for _, tb := range tables {
		for i, r := range tb.rows {
			for c := range cols {
				cell := tb.pub.Cells[i][c]
				if cell.Suppressed {
					if !slices.Contains(unknown, [2]int{r, c}) {
						unknown = append(unknown, [2]int{r, c})
					}
				} else {
					known[[2]int{r, c}] = cell.Value
				}
			}
		}
	}
	if len(unknown) > 8 {
		t.Skipf("%d suppressed cells: too many to enumerate", len(unknown))
	}
	cells = map[[2]int][]int64{}
	margins = map[string][]int64{}
	grid := make([][]int64, len(truth))
	for r := range grid {
		grid[r] = make([]int64, cols)
	}
	vals := make([]int64, len(unknown))
	var try func(i int)
	try = func(i int) {
		if i < len(unknown) {
			for v := int64(1); v < MinCount; v++ {
				vals[i] = v
				try(i + 1)
			}
			return
		}
		for k, v := range known {
			grid[k[0]][k[1]] = v
		}
		for j, k := range unknown {
			grid[k[0]][k[1]] = vals[j]
		}
		implied := map[string]int64{}
		for ti, tb := range tables {
			var grand int64
			for i, r := range tb.rows {
				var sum int64
				for c := range cols {
					sum += grid[r][c]
				}
				grand += sum
				if tb.tab.RowTotals {
					if rt := tb.pub.RowTotals[i]; !rt.Suppressed && rt.Value != sum {
						return
					}
					implied[key(ti, "row", i)] = sum
				}
			}
			if tb.tab.ColTotals {
				for c := range cols {
					var sum int64
					for _, r := range tb.rows {
						sum += grid[r][c]
					}
					if ct := tb.pub.ColTotals[c]; !ct.Suppressed && ct.Value != sum {
						return
					}
					implied[key(ti, "col", c)] = sum
				}
			}
			if tb.pub.Total != nil {
				if !tb.pub.Total.Suppressed && tb.pub.Total.Value != grand {
					return
				}
				implied[key(ti, "total", 0)] = grand
			}
		}
		for j, k := range unknown {
			if !slices.Contains(cells[k], vals[j]) {
				cells[k] = append(cells[k], vals[j])
			}
		}
		for k, v := range implied {
			if !slices.Contains(margins[k], v) {
				margins[k] = append(margins[k], v)
			}
		}
	}
	try(0)
	// Only suppressed margins whose true value is small are protected.
	for ti, tb := range tables {
		var grand int64
		for i, r := range tb.rows {
			var sum int64
			for c := range cols {
				sum += truth[r][c]
			}
			grand += sum
			if !tb.tab.RowTotals || !tb.pub.RowTotals[i].Suppressed || sum < 1 || sum >= MinCount {
				delete(margins, key(ti, "row", i))
			}
		}
		for c := range cols {
			var sum int64
			for _, r := range tb.rows {
				sum += truth[r][c]
			}
			if !tb.tab.ColTotals || !tb.pub.ColTotals[c].Suppressed || sum < 1 || sum >= MinCount {
				delete(margins, key(ti, "col", c))
			}
		}
		if tb.pub.Total == nil || !tb.pub.Total.Suppressed || grand < 1 || grand >= MinCount {
			delete(margins, key(ti, "total", 0))
		}
	}
	return cells, margins
}

func key(table int, kind string, i int) string {
	return string(rune('0'+table)) + kind + string(rune('0'+i))
}

// assertSafe fails if the attacker computes any suppressed cell, or any
// small suppressed margin, back.
func assertSafe(t *testing.T, cols int, truth [][]int64, tables []published) {
	t.Helper()
	cells, margins := attack(t, cols, truth, tables)
	for k, vs := range cells {
		if len(vs) < 2 {
			t.Errorf("table %v: the suppressed cell %v is computed back: %v", truth, k, vs)
		}
		if !slices.Contains(vs, truth[k[0]][k[1]]) {
			t.Fatalf("attack is wrong: the true value %d of %v is not among %v", truth[k[0]][k[1]], k, vs)
		}
	}
	for k, vs := range margins {
		if len(vs) < 2 {
			t.Errorf("table %v: the small suppressed margin %s is computed back: %v", truth, k, vs)
		}
	}
}

func whole(truth [][]int64, cols int, rowTotals, colTotals bool) published {
	rows := make([]int, len(truth))
	for i := range rows {
		rows[i] = i
	}
	tab := Table{Cols: cols, Cells: truth, RowTotals: rowTotals, ColTotals: colTotals}
	return published{rows: rows, tab: tab, pub: tab.Publish()}
}

// TestAttackCannotComputeBack: the attacker fails on the tables that
// defeat weaker rules.
func TestAttackCannotComputeBack(t *testing.T) {
	for _, truth := range [][][]int64{
		{{3, 10}, {10, 10}},        // one small cell: its row and column give it
		{{1, 1, 10}, {10, 10, 10}}, // two small cells summing to 2
		{{4, 4, 10}, {10, 10, 10}}, // two small cells summing to 8
		{{1, 0}, {0, 1}},           // small totals
		{{2, 0, 0}, {0, 0, 0}},     // a lone count: every margin 2
		{{1, 3}, {2, 4}},           // everything small
		{{4, 20, 1}, {20, 3, 20}, {2, 20, 20}},
	} {
		assertSafe(t, len(truth[0]), truth, []published{whole(truth, len(truth[0]), true, true)})
		assertSafe(t, len(truth[0]), truth, []published{whole(truth, len(truth[0]), false, true)})
		assertSafe(t, len(truth[0]), truth, []published{whole(truth, len(truth[0]), true, false)})
	}
}

// TestAttackBreaksWeakerRules shows the attacker works: against no
// complementary suppression, and against "suppress the total only where
// exactly one cell is suppressed", it computes cells back.
func TestAttackBreaksWeakerRules(t *testing.T) {
	weak := func(truth [][]int64, exactlyOne bool) published {
		p := whole(truth, len(truth[0]), true, true)
		// Rebuild the margins with the weak rule: publish every total
		// unless (exactlyOne) exactly one cell of its line is suppressed.
		for r, row := range p.pub.Cells {
			n := 0
			var sum int64
			for c, cell := range row {
				sum += truth[r][c]
				if cell.Suppressed {
					n++
				}
			}
			p.pub.RowTotals[r] = Cell{Value: sum, Suppressed: exactlyOne && n == 1}
		}
		for c := range truth[0] {
			n := 0
			var sum int64
			for r := range truth {
				sum += truth[r][c]
				if p.pub.Cells[r][c].Suppressed {
					n++
				}
			}
			p.pub.ColTotals[c] = Cell{Value: sum, Suppressed: exactlyOne && n == 1}
		}
		var g int64
		for _, row := range truth {
			for _, v := range row {
				g += v
			}
		}
		p.pub.Total = &Cell{Value: g}
		return p
	}
	computed := func(truth [][]int64, p published) bool {
		cells, _ := attack(t, len(truth[0]), truth, []published{p})
		for _, vs := range cells {
			if len(vs) == 1 {
				return true
			}
		}
		return false
	}
	one := [][]int64{{3, 10}, {10, 10}}
	if !computed(one, weak(one, false)) {
		t.Error("the attacker did not compute back a lone small cell beside published totals")
	}
	two := [][]int64{{1, 1, 10}, {10, 10, 10}}
	if !computed(two, weak(two, true)) {
		t.Error("the attacker did not compute back two cells of 1 beside their published total of 2 (the 'exactly one' rule)")
	}
}

// TestAttackRandomTables runs the attacker on random tables.
func TestAttackRandomTables(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	values := []int64{0, 0, 1, 2, 3, 4, 5, 6, 9, 30}
	ran := 0
	for range 400 {
		rows, cols := 1+rng.IntN(3), 1+rng.IntN(4)
		truth := make([][]int64, rows)
		small := 0
		for r := range truth {
			truth[r] = make([]int64, cols)
			for c := range truth[r] {
				truth[r][c] = values[rng.IntN(len(values))]
				if truth[r][c] > 0 && truth[r][c] < MinCount {
					small++
				}
			}
		}
		if small > 7 {
			continue
		}
		ran++
		assertSafe(t, cols, truth, []published{whole(truth, cols, rng.IntN(2) == 0, true)})
	}
	if ran < 200 {
		t.Fatalf("only %d random tables were attacked", ran)
	}
}

// TestAttackAcrossLevels: a province's table holds the rows of its two
// cities' tables; the attacker combines the three.
func TestAttackAcrossLevels(t *testing.T) {
	truth := [][]int64{{3, 10, 12}, {10, 10, 10}, {20, 2, 30}, {6, 7, 8}}
	cols := 3
	level := func(rows []int) published {
		sub := make([][]int64, len(rows))
		for i, r := range rows {
			sub[i] = truth[r]
		}
		tab := Table{Cols: cols, Cells: sub, RowTotals: true, ColTotals: true}
		return published{rows: rows, tab: tab, pub: tab.Publish()}
	}
	assertSafe(t, cols, truth, []published{level([]int{0, 1}), level([]int{2, 3}), level([]int{0, 1, 2, 3})})
}
