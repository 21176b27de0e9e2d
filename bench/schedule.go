package bench

// Side is what one step of the schedule measures.
type Side string

// The sides: credfed, and the central copy's ways in.
const (
	Credfed Side = "credfed"
	Front   Side = "front"  // PostgreSQL behind the HTTPS + mTLS + JSON front
	Direct  Side = "direct" // PostgreSQL over SQL, from the bench's own pool
	Copy    Side = "copy"   // PostgreSQL COPY
	Insert  Side = "insert" // PostgreSQL INSERT … SELECT FROM unnest(…)
)

// Phase is one kind of measurement.
type Phase string

// The phases of a round, in order.
const (
	LookupC1  Phase = "lookup_c1"
	LookupC64 Phase = "lookup_c64"
	Intake    Phase = "intake"
)

// Step is one measurement: a side in a phase of a round.
type Step struct {
	Round int
	Phase Phase
	Side  Side
}

// baselinesOf are the baseline sides measured after credfed in a phase.
var baselinesOf = map[Phase][]Side{
	LookupC1:  {Front, Direct},
	LookupC64: {Front, Direct},
	Intake:    {Copy, Insert},
}

// Schedule is the order of the measurements: round after round, each
// round every phase, each phase credfed first and then its baselines
// (none without PostgreSQL), so that whatever the machine does during a
// round moves both sides.
func Schedule(rounds int, withBaseline bool) []Step {
	var out []Step
	for r := 1; r <= rounds; r++ {
		for _, p := range []Phase{LookupC1, LookupC64, Intake} {
			out = append(out, Step{Round: r, Phase: p, Side: Credfed})
			if !withBaseline {
				continue
			}
			for _, s := range baselinesOf[p] {
				out = append(out, Step{Round: r, Phase: p, Side: s})
			}
		}
	}
	return out
}
