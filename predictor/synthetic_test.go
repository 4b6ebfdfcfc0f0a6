package predictor

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pagecast/pagecast/trace"
)

// Synthetic traces of the kinds of pagecast's guest workloads (see
// guest/guest.c), in a 16 MiB VM of 4096 pages whose arena is the last
// 3072.
const (
	synthPages      = 4096
	synthArenaStart = 1024
	synthArena      = 3072
)

// synthetic returns epochs of a workload: each epoch a number of writes,
// each to a page drawn as the workload says; the epoch's dirty set is the
// pages written.
func synthetic(workload string, epochs int, seed uint64) []trace.Epoch {
	rng := rand.New(rand.NewPCG(seed, 7))
	const hot, p = 256, 0.9
	var out []trace.Epoch
	cursor := 0
	written := make([]bool, synthPages)
	for e := range epochs {
		var pages []uint64
		write := func(x int) {
			if p := synthArenaStart + x%synthArena; !written[p] {
				written[p] = true
				pages = append(pages, uint64(p))
			}
		}
		switch workload {
		case "hotset", "phased":
			base := 0
			if workload == "phased" {
				base = (e / 10) * hot // the hot set moves every 10 epochs
			}
			for range 600 {
				if rng.Float64() < p {
					write(base + rng.IntN(hot))
				} else {
					write(rng.IntN(synthArena))
				}
			}
		case "zipf":
			// Log-uniform by octave: an octave j, then a page in it.
			octaves := int(math.Log2(synthArena))
			for range 800 {
				j := rng.IntN(octaves + 1)
				lo := 1<<j - 1
				write(lo + rng.IntN(1<<j))
			}
		case "sweep":
			for range 700 {
				write(cursor)
				cursor++
			}
		case "uniform":
			for range 700 {
				write(rng.IntN(synthArena))
			}
		default:
			panic("unknown workload " + workload)
		}
		slices.Sort(pages)
		for _, p := range pages {
			written[p] = false
		}
		out = append(out, trace.Epoch{Index: uint64(e), Pages: pages})
	}
	return out
}

// TestSyntheticWorkloads: where there is locality to learn (hotset, zipf,
// phased) the model beats the last-epoch baseline on F1 and Brier; where
// there is next to none (sweep, uniform) it is at most 0.02 worse.
func TestSyntheticWorkloads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		workload string
		beat     bool
	}{
		{"hotset", true}, {"zipf", true}, {"phased", true}, {"sweep", false}, {"uniform", false},
	} {
		t.Run(tc.workload, func(t *testing.T) {
			epochs := synthetic(tc.workload, 300, 1)
			res := Evaluate(epochs, synthPages, []Predictor{NewModel(synthPages, Options{}), NewLastEpoch(synthPages)}, EvalOptions{})
			logResults(t, res)
			m, last := res[0], res[1]
			if tc.beat {
				if m.F1 <= last.F1 || m.Brier >= last.Brier {
					t.Errorf("model F1 %.3f Brier %.4f does not beat last-epoch's %.3f %.4f", m.F1, m.Brier, last.F1, last.Brier)
				}
				return
			}
			if m.F1 < last.F1-0.02 || m.Brier > last.Brier+0.02 {
				t.Errorf("model F1 %.3f Brier %.4f more than 0.02 worse than last-epoch's %.3f %.4f", m.F1, m.Brier, last.F1, last.Brier)
			}
		})
	}
}

// knownProbabilities returns a trace in which page i is dirtied each
// epoch with a fixed probability p[i], independently, and p. Pages come in
// clusters of 16 to 256 sharing a class: never written (40%), cold
// (p 0.005-0.05, 25%), warm (0.05-0.4, 15%), lukewarm (0.4-0.7, 10%) and
// hot (0.7-0.98, 10%).
func knownProbabilities(pages, epochs int, seed uint64) ([]trace.Epoch, []float64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	p := make([]float64, pages)
	for i := 0; i < pages; {
		n := 16 + rng.IntN(241)
		lo, hi := 0.0, 0.0
		switch c := rng.Float64(); {
		case c < 0.40:
		case c < 0.65:
			lo, hi = 0.005, 0.05
		case c < 0.80:
			lo, hi = 0.05, 0.4
		case c < 0.90:
			lo, hi = 0.4, 0.7
		default:
			lo, hi = 0.7, 0.98
		}
		for j := i; j < min(i+n, pages); j++ {
			p[j] = lo + (hi-lo)*rng.Float64()
		}
		i += n
	}
	out := make([]trace.Epoch, epochs)
	for e := range out {
		out[e].Index = uint64(e)
		for i, q := range p {
			if rng.Float64() < q {
				out[e].Pages = append(out[e].Pages, uint64(i))
			}
		}
	}
	return out, p
}

// TestCalibration: on pages with known, fixed dirty probabilities the
// model's forecasts are calibrated (expected calibration error at most
// 0.05), and close to the true probabilities.
func TestCalibration(t *testing.T) {
	t.Parallel()
	const pages, epochs = 8192, 300
	tr, p := knownProbabilities(pages, epochs, 1)
	res := Evaluate(tr, pages, []Predictor{NewModel(pages, Options{})}, EvalOptions{Warmup: 64, Bins: 10})
	logResults(t, res)
	m := res[0]
	for _, b := range m.Calibration {
		t.Logf("bin [%.1f, %.1f): %8d pairs, predicted %.3f, observed %.3f", b.Lo, b.Hi, b.Count, b.Predicted, b.Observed)
	}
	if m.ECE > 0.05 {
		t.Errorf("model expected calibration error %.4f, want at most 0.05", m.ECE)
	}

	// Against the truth: the mean absolute error of the forecast.
	model := NewModel(pages, Options{})
	for _, e := range tr {
		model.Observe(e.Pages)
	}
	dst := make([]float32, pages)
	model.Predict(dst)
	var mae float64
	for i, q := range p {
		mae += math.Abs(float64(dst[i]) - q)
	}
	mae /= pages
	t.Logf("mean |forecast - true probability| after %d epochs: %.4f", epochs, mae)
	if mae > 0.1 {
		t.Errorf("mean absolute error against the true probabilities %.4f, want at most 0.1", mae)
	}
}

// logResults logs a table of results.
func logResults(t *testing.T, res []Result) {
	t.Helper()
	for _, r := range res {
		t.Logf("%-10s precision %.3f recall %.3f F1 %.4f Brier %.5f AUC %.4f ECE %.4f",
			r.Name, r.Precision, r.Recall, r.F1, r.Brier, r.AUC, r.ECE)
	}
}
