package predictor

import (
	"testing"

	"github.com/pagecast/pagecast/trace"
)

// TestRecordedWorkloads scores the model against the last-epoch baseline on
// traces of the pagecast guest's workloads, recorded with pagecast profile
// (testdata/record.sh): it must beat the baseline on F1 and Brier where
// there is locality to learn (hotset, zipf, phased) and stay within 0.02 of
// it where there is none to speak of (sweep, uniform).
func TestRecordedWorkloads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		workload string
		beat     bool
	}{
		{"hotset", true}, {"zipf", true}, {"phased", true}, {"sweep", false}, {"uniform", false},
	} {
		t.Run(tc.workload, func(t *testing.T) {
			meta, epochs, damage, err := trace.ReadFile("testdata/" + tc.workload + ".pct")
			if err != nil {
				t.Fatal(err)
			}
			if len(damage) > 0 {
				t.Fatalf("testdata trace damaged: %v", damage)
			}
			pages := meta.Pages()
			res := Evaluate(epochs, pages, []Predictor{NewModel(pages, Options{}), NewLastEpoch(pages)}, EvalOptions{})
			m, last := res[0], res[1]
			t.Logf("%s: model F1 %.3f Brier %.4f; last-epoch F1 %.3f Brier %.4f", tc.workload, m.F1, m.Brier, last.F1, last.Brier)
			if tc.beat {
				if m.F1 <= last.F1 || m.Brier >= last.Brier {
					t.Fatalf("model does not beat last-epoch on %s", tc.workload)
				}
				return
			}
			if m.F1 < last.F1-0.02 || m.Brier > last.Brier+0.02 {
				t.Fatalf("model worse than last-epoch by more than 0.02 on %s", tc.workload)
			}
		})
	}
}
