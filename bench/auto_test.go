package bench

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagecast/pagecast/simulate"
)

// BenchmarkAutoGrid measures mode auto (issue 14) on real programs'
// traces at four bandwidths, 20 cases: auto predicts every mode from the
// 50 epochs (5 s) before the start and picks by total time, the downtime
// limit a bound. It reports the share of cases where the choice's outcome
// is within 5% of the best mode's (goal 0.9), and where the predicted
// total time is within 20% of the outcome (goal 0.9).
func BenchmarkAutoGrid(b *testing.B) {
	traces := []string{"awk", "tar", "gcc", "sqlite", "xz"}
	bandwidths := []uint64{4 << 20, 16 << 20, 64 << 20, 256 << 20}
	var cases, chooseWell, predictWell int
	for range b.N {
		for _, name := range traces {
			w, err := simulate.ReadTrace(filepath.Join("..", "predictor", "testdata", "real", name+".pct"))
			if err != nil {
				b.Fatal(err)
			}
			const start, observe = 200, 50
			for _, bw := range bandwidths {
				o := simulate.Options{Workload: w, Bandwidth: bw, Start: start}
				choice, err := simulate.Choose(context.Background(), o, simulate.Window(w, start-observe, observe), simulate.PreferTime)
				if err != nil {
					b.Fatal(err)
				}
				best, chosen := -1.0, -1.0
				for _, mode := range simulate.AutoModes {
					r := simulate.Run(context.Background(), o, mode)
					if r.Err != nil {
						b.Fatalf("%s at %d MiB/s, %s: %v", name, bw>>20, mode, r.Err)
					}
					m := simulate.Merit(r, simulate.PreferTime)
					if time.Duration(r.Info.Downtime)*time.Millisecond <= 300*time.Millisecond && (best < 0 || m < best) {
						best = m
					}
					if mode == choice.Mode {
						chosen = m
						if e := (float64(choice.Predicted().Info.TotalTime) - m) / m; e >= -0.2 && e <= 0.2 {
							predictWell++
						}
					}
				}
				cases++
				if best < 0 || chosen <= 1.05*best {
					chooseWell++
				}
			}
		}
	}
	b.ReportMetric(float64(chooseWell)/float64(cases), "choice-within-5%")
	b.ReportMetric(float64(predictWell)/float64(cases), "prediction-within-20%")
	b.ReportMetric(0, "ns/op")
}
