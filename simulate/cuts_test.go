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
