package simulate

import (
	"errors"
	"testing"
	"time"

	"github.com/pagecast/pagecast/migrator"
)

// TestSettleCuts: which modes are cut short, and where, follows from the
// results alone, not from which simulation finished first: a mode more
// than CutMargin past the best is cut at the first point of its timeline
// that was, whether it was cut later, by a bound not yet the best, or not
// at all; the best, one within the margin, one past it only at its end,
// one over the downtime limit's best and the spare are left whole.
func TestSettleCuts(t *testing.T) {
	ms := time.Millisecond
	done := func(mode string, total, downtime int64, at ...time.Duration) Result {
		r := Result{Mode: mode, Info: migrator.Info{TotalTime: total, Downtime: downtime}}
		for _, a := range at {
			r.Timeline = append(r.Timeline, Point{At: a, Transferred: uint64(a / ms)})
		}
		return r
	}
	cutAt := func(r Result, at time.Duration) Result {
		r.Err = &CutShort{At: at, By: "an earlier one", Prefer: PreferTime, Best: 170}
		return r
	}
	results := []Result{
		done("best", 100, 50, 50*ms, 100*ms),
		done("late", 200, 50, 50*ms, 110*ms, 150*ms, 200*ms),                  // finished before best did
		cutAt(done("cut-later", 0, 0, 60*ms, 120*ms, 180*ms, 185*ms), 180*ms), // cut by a worse bound
		done("near", 104, 50, 50*ms, 104*ms),
		done("end-only", 106, 50, 50*ms, 104*ms, 106*ms, 110*ms), // its last point is past its end (the switch-over's checks)
		done("over-limit", 90, 900, 50*ms, 90*ms),                // faster, but its downtime breaks the limit
		done("spare", 300, 50, 50*ms, 200*ms, 300*ms),
	}
	settleCuts(results, PreferTime, 300*ms, "spare")
	want := map[string]time.Duration{"late": 110 * ms, "cut-later": 120 * ms}
	for _, r := range results {
		var cut *CutShort
		isCut := errors.As(r.Err, &cut)
		at, wantCut := want[r.Mode]
		switch {
		case wantCut && !isCut:
			t.Errorf("%s: not cut (err %v), want cut at %v", r.Mode, r.Err, at)
		case wantCut && (cut.At != at || cut.By != "best" || cut.Best != 100):
			t.Errorf("%s: cut at %v by %s (%v), want at %v by best (100)", r.Mode, cut.At, cut.By, cut.Best, at)
		case !wantCut && r.Err != nil:
			t.Errorf("%s: %v, want it whole", r.Mode, r.Err)
		}
	}
}

// TestLaterRounds: the mean length of the pre-copy rounds after the
// first, from each round's first point, the switch-over left out; the
// first's where it is the only one (walk 119: 550 ms said of a migration
// whose lone pre-copy round took 441 ms, its stop-and-copy 93 ms, and the
// check the rest).
func TestLaterRounds(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, tc := range []struct {
		name string
		tl   []Point
		want time.Duration
	}{
		{"one round, then the switch-over", []Point{{At: 0, Round: 1}, {At: ms(100), Round: 1}, {At: ms(441), Round: 2}, {At: ms(550), Round: 2}}, ms(441)},
		{"three rounds", []Point{{At: 0, Round: 1}, {At: ms(800), Round: 2}, {At: ms(900), Round: 2}, {At: ms(1000), Round: 3}, {At: ms(1100), Round: 4}, {At: ms(1300), Round: 4}}, ms(150)},
		{"not past round 1", []Point{{At: 0, Round: 1}, {At: ms(500), Round: 1}}, 0},
		{"no timeline", nil, 0},
	} {
		if got := (Result{Timeline: tc.tl}).LaterRounds(); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestTimelineRoundStarts: the timeline has a point as each round begins,
// however long the step between its other points.
func TestTimelineRoundStarts(t *testing.T) {
	w, err := ParseSynthetic("hotset:hot=2048,p=0.95,rate=8000", 16384, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := Run(t.Context(), Options{Workload: w, Bandwidth: 16 << 20, Step: time.Hour}, migrator.ModePrecopy)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if r.Info.Pagecast.Round < 3 {
		t.Fatalf("%d rounds: want a migration of several", r.Info.Pagecast.Round)
	}
	seen := map[int]bool{}
	for _, p := range r.Timeline {
		seen[p.Round] = true
	}
	for round := 1; round <= r.Info.Pagecast.Round; round++ {
		if !seen[round] {
			t.Errorf("no point of round %d in the timeline %+v", round, r.Timeline)
		}
	}
}
