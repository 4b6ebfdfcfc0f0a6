package predictor

import (
	"os"
	"testing"
)

// TestRealTraces: on traces of a real Linux guest running awk and tar
// (../shared/traces), the model is at least as good as the best baseline
// on both F1 and Brier.
func TestRealTraces(t *testing.T) {
	if testing.Short() {
		t.Skip("scores two ~1000-epoch traces; skipped in short mode")
	}
	for _, name := range []string{"awk", "tar"} {
		t.Run(name, func(t *testing.T) {
			path := "../../shared/traces/" + name + ".csv.gz"
			if _, err := os.Stat(path); err != nil {
				t.Skipf("real trace not here: %v", err)
			}
			meta, epochs, _, err := ReadTrace(path, CSVOptions{MemoryBytes: 256 << 20})
			if err != nil {
				t.Fatal(err)
			}
			pages := meta.Pages()
			preds := append([]Predictor{NewModel(pages, Options{})}, Baselines(pages)...)
			res := Evaluate(epochs, pages, preds, EvalOptions{})
			m := res[0]
			bestF1, bestBrier := 0.0, 1.0
			for _, b := range res[1:] {
				t.Logf("%s %-10s F1 %.4f Brier %.6f", name, b.Name, b.F1, b.Brier)
				bestF1, bestBrier = max(bestF1, b.F1), min(bestBrier, b.Brier)
			}
			t.Logf("%s %-10s F1 %.4f Brier %.6f", name, m.Name, m.F1, m.Brier)
			if m.F1 < bestF1 || m.Brier > bestBrier {
				t.Fatalf("model F1 %.4f Brier %.6f; best baseline F1 %.4f Brier %.6f", m.F1, m.Brier, bestF1, bestBrier)
			}
		})
	}
}
