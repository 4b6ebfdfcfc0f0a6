package simulate_test

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/pagecast/pagecast/simulate"
)

// autoGrid judges mode auto (issue 14) on five real programs' traces at
// four bandwidths, 20 cases: auto predicts every mode of AutoModes from the
// 50 epochs (5 s) the program ran before the migration starts, 100 epochs
// (10 s) into the program, and picks by total time, the downtime limit a
// bound; then every mode runs on the trace from there. It returns how many
// cases the choice's outcome was within 5% of the best mode's, and how
// many its predicted total time was within 20% of the outcome. The traces
// are Linux guests': throttled, they write as LinuxResponse says (on
// 2026-12-06 the grid came out the same as with Linear, 20 and 19: throttle
// was neither chosen nor best in any case).
func autoGrid(tb testing.TB) (cases, chooseWell, predictWell int) {
	const observe, into = 50, 100
	for _, tr := range []struct {
		name  string
		start uint64 // the program's first epoch, after the guest's boot
	}{{"awk", 224}, {"tar", 224}, {"gcc", 100}, {"sqlite", 100}, {"xz", 100}} {
		name, start := tr.name, tr.start+into
		w, err := simulate.ReadTrace(filepath.Join("..", "predictor", "testdata", "real", name+".pct"))
		if err != nil {
			tb.Fatal(err)
		}
		for _, bw := range []uint64{4 << 20, 16 << 20, 64 << 20, 256 << 20} {
			o := simulate.Options{Workload: w, Bandwidth: bw, Start: start, Response: simulate.LinuxResponse}
			choice, err := simulate.Choose(context.Background(), o, simulate.Window(w, start-observe, observe), simulate.PreferTime)
			if err != nil {
				tb.Fatal(err)
			}
			h, err := simulate.Judge(context.Background(), o, choice)
			if err != nil {
				tb.Fatalf("%s at %d MiB/s: %v", name, bw>>20, err)
			}
			predicted, actual := float64(choice.Predicted().Info.TotalTime), float64(h.Chosen.Info.TotalTime)
			off := (predicted - actual) / actual
			cases++
			verdict := ""
			switch regret := h.Regret(simulate.PreferTime); {
			case regret <= 0.05:
				chooseWell++
			case math.IsInf(regret, 1):
				verdict = " — the choice broke the downtime limit"
			default:
				verdict = fmt.Sprintf(" — %.0f%% over the best", 100*regret)
			}
			if off >= -0.2 && off <= 0.2 {
				predictWell++
			} else {
				verdict += " — prediction off"
			}
			tb.Logf("%-6s at %3d MiB/s: chose %s, %.1f s (predicted %.1f s, %+.0f%%); best %s, %.1f s%s", name, bw>>20,
				choice.Mode, actual/1e3, predicted/1e3, 100*off, h.Best.Mode, float64(h.Best.Info.TotalTime)/1e3, verdict)
		}
	}
	return cases, chooseWell, predictWell
}

// TestAutoGrid asserts issue 14's second acceptance item: the choice
// within 5% of the best mode in 90% of the cases (18 of 20), and the
// predicted total time within 20% of the outcome in 90%. Measured in four
// runs on 2026-12-03 (MECOM's coding in tandem with the link): 20 and 19
// twice, 19 and 18 twice. The misses: gcc at 4 MiB/s, predicted +21% each
// time, and in two runs xz at 4 MiB/s, where predictive+mecom, predicted 24
// s, took 43–46 s and broke the downtime limit (xz writes more after its
// window; +postcopy, predicted alike or not by the timings of the process,
// bounds that). Until then the grid started every trace at epoch 200, 24
// epochs before awk's and tar's programs start, so their window was the
// guest's boot: with the coding charged before the link's time 20 and 19 or
// 19 and 18, with it in tandem 20 and 17 (awk and tar at 4 MiB/s +22–23%;
// the old +1–18% there was which round met which phase of the boot). The
// MECOM modes pick their codecs by the CPU time coding really takes; within
// a process every simulation shares the same timings, so a prediction and
// its outcome see the same costs, but from one process to the next they
// differ a little. On 2026-12-04, once the window's own pages held data
// at the predictions' start (they were zeros): 20 and 19, gcc at 4 MiB/s
// predicted +31%. On 2026-12-06, once a replay moved the pages written
// once (GuestOptions.Grow; 5-13% of them on awk, tar and gcc, all on
// sqlite and xz): 19 and 18, as without it that day; at 4 MiB/s awk +0%,
// tar +1%, gcc +38%, sqlite +10%, xz -34% (without: -1, 0, +33, -3, -46%).
func TestAutoGrid(t *testing.T) {
	if raceDetector {
		t.Skip("minutes of simulation: run without the race detector (make test does)")
	}
	cases, chooseWell, predictWell := autoGrid(t)
	t.Logf("%d cases: choice within 5%% of the best in %d, prediction within 20%% in %d (goal: 90%% each)", cases, chooseWell, predictWell)
	if want := (cases*9 + 9) / 10; chooseWell < want {
		t.Errorf("choice within 5%% of the best mode in %d of %d cases, want at least %d (19 measured)", chooseWell, cases, want)
	}
	if want := (cases*9 + 9) / 10; predictWell < want {
		t.Errorf("predicted total time within 20%% of the outcome in %d of %d cases, want at least %d (18 measured)", predictWell, cases, want)
	}
}

// BenchmarkAutoGrid reports TestAutoGrid's shares (goal 0.9 each) for make
// bench's table.
func BenchmarkAutoGrid(b *testing.B) {
	var cases, chooseWell, predictWell int
	for range b.N {
		c, cw, pw := autoGrid(b)
		cases, chooseWell, predictWell = cases+c, chooseWell+cw, predictWell+pw
	}
	b.ReportMetric(float64(chooseWell)/float64(cases), "choice-within-5%")
	b.ReportMetric(float64(predictWell)/float64(cases), "prediction-within-20%")
	b.ReportMetric(0, "ns/op")
}
