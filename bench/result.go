package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Result is one run of the bench: what `credfed bench --json` prints.
type Result struct {
	Machine  Machine  `json:"machine"`
	Topology Topology `json:"topology"`
	Figures  []Figure `json:"figures"`
	// Skipped says what was not measured and why (no PostgreSQL, a figure
	// the in-process mode cannot separate).
	Skipped []string `json:"skipped,omitempty"`
	// Seconds is the wall time of the whole run.
	Seconds float64 `json:"seconds"`
}

// Machine describes where the bench ran.
type Machine struct {
	CPUs      int     `json:"cpus"`
	CPUModel  string  `json:"cpu_model"`
	MemoryMiB int64   `json:"memory_mib"`
	Kernel    string  `json:"kernel"`
	Go        string  `json:"go"`
	LoadStart float64 `json:"load_average_start"`
	Summary   string  `json:"summary"`
}

// Topology describes both sides.
type Topology struct {
	// Mode is "processes" (every node its own `credfed node` process) or
	// "in-process".
	Mode      string `json:"mode"`
	Nodes     int    `json:"nodes"`
	Districts int    `json:"districts"`
	Summary   string `json:"summary"`
	// Baseline describes the central copy, empty when it was skipped.
	Baseline string `json:"baseline,omitempty"`
	// Data is the data set loaded before the rounds.
	Data string `json:"data"`
}

// Figure is one measured figure against its baseline. Ratio is oriented
// so that above 1 always means credfed does better: for rates it is
// credfed ÷ baseline, for costs (latency, CPU, memory) baseline ÷
// credfed. Value and BaselineValue are medians over the rounds, Ratio the
// median of the rounds' ratios.
type Figure struct {
	Name          string   `json:"name"`
	Value         float64  `json:"value"`
	Unit          string   `json:"unit"`
	Baseline      string   `json:"baseline"`
	BaselineValue *float64 `json:"baseline_value"`
	Ratio         *float64 `json:"ratio"`
	DataSize      string   `json:"data_size"`
	Durability    string   `json:"durability"`
	Rounds        int      `json:"rounds"`
	// Values and BaselineValues are the rounds' own figures, in order.
	Values         []float64 `json:"values"`
	BaselineValues []float64 `json:"baseline_values,omitempty"`
	// HigherIsBetter says which way Value is good (rates: true).
	HigherIsBetter bool `json:"higher_is_better"`
	// Note is anything a reader must know about the figure (errors seen,
	// a round that did not complete, how a cost divides).
	Note string `json:"note,omitempty"`
	// label names the baseline in the table.
	label string
}

// figureSpec is what a figure is before its rounds are in.
type figureSpec struct {
	name, unit, baseline, dataSize, durability string
	higherIsBetter                             bool
	label                                      string // the baseline's short name in the table
}

// newFigure summarizes rounds of credfed and baseline values (either
// may hold NaN for a round that failed; baseline nil when there is none).
func newFigure(s figureSpec, values, baseline []float64) Figure {
	f := Figure{Name: s.name, Unit: s.unit, Baseline: s.baseline, DataSize: s.dataSize, Durability: s.durability,
		HigherIsBetter: s.higherIsBetter, Values: finite(values), Rounds: len(finite(values)), label: s.label}
	f.Value = median(values)
	if baseline == nil {
		return f
	}
	f.BaselineValues = finite(baseline)
	if bv := median(baseline); !math.IsNaN(bv) {
		f.BaselineValue = &bv
	}
	var ratios []float64
	for i := range min(len(values), len(baseline)) {
		if r := ratio(values[i], baseline[i], s.higherIsBetter); !math.IsNaN(r) {
			ratios = append(ratios, r)
		}
	}
	if r := median(ratios); !math.IsNaN(r) {
		f.Ratio = &r
	}
	return f
}

// ratio orients credfed's value against the baseline's so that above 1
// means credfed does better: credfed ÷ baseline when higher is better,
// baseline ÷ credfed otherwise. NaN when either is missing or zero.
func ratio(credfed, baseline float64, higherIsBetter bool) float64 {
	if math.IsNaN(credfed) || math.IsNaN(baseline) || credfed <= 0 || baseline <= 0 {
		return math.NaN()
	}
	if higherIsBetter {
		return credfed / baseline
	}
	return baseline / credfed
}

// median of the finite values, NaN if there are none.
func median(v []float64) float64 {
	f := finite(v)
	if len(f) == 0 {
		return math.NaN()
	}
	slices.Sort(f)
	if len(f)%2 == 1 {
		return f[len(f)/2]
	}
	return (f[len(f)/2-1] + f[len(f)/2]) / 2
}

func finite(v []float64) []float64 {
	out := make([]float64, 0, len(v))
	for _, x := range v {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			out = append(out, x)
		}
	}
	return out
}

// JSON encodes the result as `credfed bench --json` prints it.
func (r Result) JSON() ([]byte, error) {
	for i := range r.Figures {
		if math.IsNaN(r.Figures[i].Value) {
			r.Figures[i].Value = 0
			if r.Figures[i].Note == "" {
				r.Figures[i].Note = "not measured"
			}
		}
	}
	return json.MarshalIndent(r, "", "  ")
}

// Rows are the result as a table: a header, one row per figure, and the
// figures' notes, numbered as the rows refer to them.
func (r Result) Rows() ([]string, [][]string, []string) {
	header := []string{"figure", "credfed", "baseline", "ratio", "rounds: credfed | baseline"}
	var rows [][]string
	var notes []string
	for _, f := range r.Figures {
		base := "—"
		if f.BaselineValue != nil {
			base = formatValue(*f.BaselineValue, f.Unit)
			if f.label != "" {
				base += " " + f.label
			}
		}
		rat := "—"
		if f.Ratio != nil {
			rat = fmt.Sprintf("%.2f×", *f.Ratio)
		}
		val := formatValue(f.Value, f.Unit)
		if f.Note != "" {
			notes = append(notes, fmt.Sprintf("[%d] %s: %s", len(notes)+1, f.Name, f.Note))
			val += fmt.Sprintf(" [%d]", len(notes))
		}
		rounds := joinValues(f.Values, f.Unit)
		if len(f.BaselineValues) > 0 {
			rounds += " | " + joinValues(f.BaselineValues, f.Unit)
		}
		rows = append(rows, []string{f.Name, val, base, rat, rounds})
	}
	return header, rows, notes
}

func joinValues(v []float64, unit string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = formatNumber(x)
	}
	return strings.Join(s, " ")
}

// formatValue writes a value with its unit, e.g. "1,405 lookups/s",
// "21.3 ms".
func formatValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "—"
	}
	return formatNumber(v) + " " + unit
}

// formatNumber writes three significant digits at most below 1,000 and
// whole numbers with thousands separators above.
func formatNumber(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "—"
	case a >= 999.5:
		return thousands(int64(math.Round(v)))
	case a >= 99.95:
		return fmt.Sprintf("%.0f", v)
	case a >= 9.995:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func thousands(n int64) string {
	neg := n < 0
	if neg {
		n = -n
	}
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// noisyRatio is the spread of a figure's rounds (largest ÷ smallest) above
// which Spread warns that the machine was busy.
const noisyRatio = 1.5

// Spread names the figures whose rounds differ by more than noisyRatio on
// either side (a busy or noisy machine moves both sides, which is why the
// rounds interleave, but a reader should know), "" if none.
func (r Result) Spread() string {
	var noisy []string
	for _, f := range r.Figures {
		for _, vs := range [][]float64{f.Values, f.BaselineValues} {
			if len(vs) < 2 {
				continue
			}
			lo, hi := slices.Min(vs), slices.Max(vs)
			if lo > 0 && hi/lo > noisyRatio {
				noisy = append(noisy, fmt.Sprintf("%s (%.1f×)", f.Name, hi/lo))
				break
			}
		}
	}
	if len(noisy) == 0 {
		return ""
	}
	return "noisy: the rounds of " + strings.Join(noisy, ", ") + " differ by more than " + fmt.Sprint(noisyRatio) +
		"×: the machine was busy; compare the ratios, and run again with more --rounds"
}
