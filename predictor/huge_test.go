package predictor

import (
	"testing"
)

// TestHugeGuest: a real program's trace placed in guests of 2 GiB and
// 1 TiB, where the predictors keep a PageMap's pages and Far stands for
// the rest, still finds the model ahead of every baseline on F1 and
// Brier, as in the trace's own 256 MiB. Before Far's forecast was capped
// (Model.SetOutside) and its block moved past the frontier's reach, awk's
// F1 fell from 0.596 in 1 GiB to 0.197 in 2 GiB and 0 in 1 TiB, its Brier
// behind the Markov chain's (2026-12-02).
func TestHugeGuest(t *testing.T) {
	for _, pages := range []uint64{1 << 19, 1 << 28} {
		epochs, _ := loadRealTrace(t, "awk")
		n, pm := MapPages(epochs, pages)
		if pm == nil {
			t.Fatalf("%d pages: no map", pages)
		}
		res := Evaluate(epochs, n, Contenders(n, Options{}), EvalOptions{Pages: pm})
		model := res[0]
		t.Logf("%d pages (%d kept): model F1 %.4f Brier %.3g", pages, n, model.F1, model.Brier)
		for _, b := range res[1:] {
			t.Logf("  %s F1 %.4f Brier %.3g", b.Name, b.F1, b.Brier)
			if model.F1 <= b.F1 || model.Brier >= b.Brier {
				t.Errorf("%d pages: the model's F1 %.4f and Brier %.3g, %s's %.4f and %.3g", pages, model.F1, model.Brier, b.Name, b.F1, b.Brier)
			}
		}
	}
}
