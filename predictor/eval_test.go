package predictor

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/pagecast/pagecast/trace"
)

// fixed predicts the same probabilities before every epoch.
type fixed []float32

func (f fixed) Name() string          { return "fixed" }
func (f fixed) Observe([]uint64)      {}
func (f fixed) Predict(dst []float32) { copy(dst, f) }

// oracle knows the trace and predicts each epoch exactly.
type oracle struct {
	epochs []trace.Epoch
	h      int
	t      int
}

func (o *oracle) Name() string          { return "oracle" }
func (o *oracle) Observe([]uint64)      { o.t++ }
func (o *oracle) Predict(dst []float32) { o.PredictHorizon(dst, 1) }
func (o *oracle) PredictHorizon(dst []float32, h int) {
	clear(dst)
	for k := o.t; k < min(o.t+h, len(o.epochs)); k++ {
		for _, p := range o.epochs[k].Pages {
			dst[p] = 1
		}
	}
}

func epochsOf(sets ...[]uint64) []trace.Epoch {
	out := make([]trace.Epoch, len(sets))
	for i, s := range sets {
		out[i] = trace.Epoch{Index: uint64(i), Pages: s}
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestEvaluateByHand(t *testing.T) {
	// 4 pages, two scored epochs: {0, 1} then {1}.
	tr := epochsOf([]uint64{0, 1}, []uint64{1})
	res := Evaluate(tr, 4, []Predictor{fixed{0.9, 0.4, 0.6, 0}}, EvalOptions{Warmup: -1})[0]
	// At 0.5: predicted dirty 0 and 2 in both epochs. Epoch 0: TP page 0,
	// FP page 2, FN page 1; epoch 1: FP 0 and 2, FN 1.
	if res.TruePositives != 1 || res.FalsePositives != 3 || res.FalseNegatives != 2 {
		t.Fatalf("TP/FP/FN %d/%d/%d, want 1/3/2", res.TruePositives, res.FalsePositives, res.FalseNegatives)
	}
	if !near(res.Precision, 0.25) || !near(res.Recall, 1.0/3) || !near(res.F1, 2.0/7) {
		t.Errorf("precision %v recall %v F1 %v, want 1/4 1/3 2/7", res.Precision, res.Recall, res.F1)
	}
	// Squared errors: epoch 0: .01+.36+.36+0, epoch 1: .81+.36+.36+0.
	if want := (0.73 + 1.53) / 8; !near(res.Brier, want) {
		t.Errorf("Brier %v, want %v", res.Brier, want)
	}
	// Positives score 0.9 (once), 0.4 (twice); negatives 0.9, 0.6 (twice),
	// 0 (twice). Pairs won: 0.9 beats 0.6×2, 0×2 and ties 0.9: 4.5; each
	// 0.4 beats 0×2: 2 each. AUC = 8.5 / (3·5).
	if want := 8.5 / 15; math.Abs(res.AUC-want) > 1e-9 {
		t.Errorf("AUC %v, want %v", res.AUC, want)
	}
	if len(res.Epochs) != 2 || math.Abs(res.Epochs[0].Predicted-1.9) > 1e-6 || res.Epochs[0].Actual != 2 || res.Epochs[1].Actual != 1 {
		t.Errorf("epochs %+v", res.Epochs)
	}
	if res.Pairs != 8 || res.Positives != 3 {
		t.Errorf("pairs %d positives %d, want 8 and 3", res.Pairs, res.Positives)
	}
}

func TestEvaluateOracle(t *testing.T) {
	tr, _ := knownProbabilities(512, 50, 3)
	for _, h := range []int{1, 3} {
		res := Evaluate(tr, 512, []Predictor{&oracle{epochs: tr}, fixed(make([]float32, 512))}, EvalOptions{Horizon: h})
		o, zero := res[0], res[1]
		if o.F1 != 1 || o.Brier != 0 || o.AUC != 1 || o.ECE != 0 {
			t.Errorf("horizon %d: oracle F1 %v Brier %v AUC %v ECE %v, want 1 0 1 0", h, o.F1, o.Brier, o.AUC, o.ECE)
		}
		if zero.AUC != 0.5 || zero.F1 != 0 || !near(zero.Brier, float64(zero.Positives)/float64(zero.Pairs)) {
			t.Errorf("horizon %d: all-zero AUC %v F1 %v Brier %v", h, zero.AUC, zero.F1, zero.Brier)
		}
		// Epochs whose horizon runs past the trace are not scored.
		if want := len(tr) - DefaultWarmup - (h - 1); len(o.Epochs) != want {
			t.Errorf("horizon %d: %d epochs scored, want %d", h, len(o.Epochs), want)
		}
		for _, e := range o.Epochs {
			if e.Predicted != float64(e.Actual) {
				t.Fatalf("horizon %d: oracle epoch %+v", h, e)
			}
		}
	}
}

// A gap in the epoch indices is observed as empty and not scored, nor
// are the epochs whose horizon reaches into it.
func TestEvaluateGap(t *testing.T) {
	tr := epochsOf([]uint64{0}, []uint64{1}, []uint64{2}, nil, []uint64{3}, []uint64{0})
	tr = append(tr[:3], tr[4:]...) // index 3 lost
	var seen [][]uint64
	rec := &recorder{seen: &seen}
	res := Evaluate(tr, 4, []Predictor{rec}, EvalOptions{Warmup: -1, Horizon: 2})[0]
	if len(seen) != 6 || seen[3] != nil {
		t.Fatalf("observed %v, want 6 epochs, the fourth empty", seen)
	}
	var idx []uint64
	for _, e := range res.Epochs {
		idx = append(idx, e.Index)
	}
	// Horizon 2: 0 (0,1), 1 (1,2) and 4 (4,5) are scored; 2 and 3 touch 3.
	if len(idx) != 3 || idx[0] != 0 || idx[1] != 1 || idx[2] != 4 {
		t.Errorf("scored epochs %v, want [0 1 4]", idx)
	}
}

// Gaps are observed as at most as many empty epochs, all together, as the
// trace has epochs and 128 more; an epoch after a gap observed short for
// that is not scored. A trace of one-page epochs 1 000 indices apart took
// 2.56 million empty epochs to walk 20 000 of them before.
func TestEvaluateGapBudget(t *testing.T) {
	var tr []trace.Epoch
	for i := range uint64(10) {
		tr = append(tr, trace.Epoch{Index: i * 1000, Pages: []uint64{i}})
	}
	var seen [][]uint64
	res := Evaluate(tr, 16, []Predictor{&recorder{seen: &seen}}, EvalOptions{Warmup: -1})[0]
	// 138 empty epochs: the first gap whole (128), the second 10, the rest none.
	if want := len(tr) + len(tr) + maxGapObserved; len(seen) != want {
		t.Errorf("observed %d epochs, want %d", len(seen), want)
	}
	var idx []uint64
	for _, e := range res.Epochs {
		idx = append(idx, e.Index)
	}
	if !slices.Equal(idx, []uint64{0, 1000}) {
		t.Errorf("scored epochs %v, want [0 1000]: those after a gap observed short are not", idx)
	}
	if n := CutGaps(tr); n != 8 {
		t.Errorf("CutGaps %d, want 8", n)
	}
	if n, longest, after := LongGaps(tr); n != 9 || longest != 999 || after != 0 {
		t.Errorf("LongGaps %d, longest %d after %d, want 9 gaps, longest 999 after epoch 0", n, longest, after)
	}
	if n, _, _ := LongGaps([]trace.Epoch{{Index: 0}, {Index: 129}, {Index: 130}}); n != 0 {
		t.Errorf("LongGaps counted a gap of 128, which is observed whole")
	}
	// After a gap cut short, epochs are not scored until 128 have been
	// observed: the predictors took pages written 1 000 epochs before for
	// pages written one before (a review: 9001 on were scored).
	for i := range uint64(200) {
		tr = append(tr, trace.Epoch{Index: 9001 + i, Pages: []uint64{i % 16}})
	}
	seen = nil
	res = Evaluate(tr, 16, []Predictor{&recorder{seen: &seen}}, EvalOptions{Warmup: -1})[0]
	idx = idx[:0]
	for _, e := range res.Epochs {
		idx = append(idx, e.Index)
	}
	// 210 epochs: 338 empty ones in all, the gaps before 1000 and 2000
	// whole, the one before 3000 cut; 9000 is after a cut gap, 9001-9127
	// stale: 9128 is the 128th epoch observed since.
	if len(idx) != 3+73 || idx[0] != 0 || idx[1] != 1000 || idx[2] != 2000 || idx[3] != 9128 || idx[len(idx)-1] != 9200 {
		t.Errorf("scored epochs %v, want 0, 1000, 2000, then 9128 to 9200", idx)
	}
}

type recorder struct{ seen *[][]uint64 }

func (r *recorder) Name() string          { return "recorder" }
func (r *recorder) Observe(d []uint64)    { *r.seen = append(*r.seen, d) }
func (r *recorder) Predict(dst []float32) { clear(dst) }

func TestCalibrationBins(t *testing.T) {
	tr := epochsOf([]uint64{0}, []uint64{0}, []uint64{1}, []uint64{})
	res := Evaluate(tr, 2, []Predictor{fixed{0.75, 0.25}}, EvalOptions{Warmup: -1, Bins: 4})[0]
	// Page 0 (0.75) dirty 2 of 4 epochs, page 1 (0.25) 1 of 4.
	if len(res.Calibration) != 2 {
		t.Fatalf("bins %+v", res.Calibration)
	}
	lo, hi := res.Calibration[0], res.Calibration[1]
	if lo.Lo != 0.25 || lo.Count != 4 || !near(lo.Observed, 0.25) || hi.Lo != 0.75 || !near(hi.Observed, 0.5) {
		t.Errorf("bins %+v", res.Calibration)
	}
	if !near(res.ECE, 0.5*0+0.5*0.25) {
		t.Errorf("ECE %v, want 0.125", res.ECE)
	}
	var n uint64
	for _, b := range res.CalibrationLog {
		n += b.Count
		if b.Predicted < b.Lo || b.Predicted >= b.Hi {
			t.Errorf("octave bin %+v holds a mean outside it", b)
		}
	}
	if n != res.Pairs {
		t.Errorf("octave bins hold %d pairs, want %d", n, res.Pairs)
	}
}

// Progress hears of every epoch each predictor walks, in order, with the
// trace's length.
func TestEvaluateProgress(t *testing.T) {
	tr, _ := knownProbabilities(256, 30, 5)
	var mu sync.Mutex
	calls := map[int]int{} // done: how many predictors reported it
	Evaluate(tr, 256, []Predictor{NewLastEpoch(256), NewMarkov(256)}, EvalOptions{Progress: func(done, total int) {
		mu.Lock()
		defer mu.Unlock()
		if total != len(tr) {
			t.Errorf("total %d, want %d", total, len(tr))
		}
		if done > 1 && calls[done-1] <= calls[done] {
			t.Errorf("epoch %d reported before epoch %d", done, done-1)
		}
		calls[done]++
	}})
	for done := 1; done <= len(tr); done++ {
		if calls[done] != 2 {
			t.Errorf("epoch %d reported %d times, want once per predictor", done, calls[done])
		}
	}
	if len(calls) != len(tr) {
		t.Errorf("%d distinct epochs reported, want %d", len(calls), len(tr))
	}
}

// TestEvaluateAUCUndefined: with no page dirtied, AUC has no pairs to
// rank; it is NaN, not a 0 that would read as the worst ranking.
func TestEvaluateAUCUndefined(t *testing.T) {
	tr := epochsOf(nil, nil, nil)
	res := Evaluate(tr, 4, []Predictor{fixed{0.9, 0.4, 0.6, 0}}, EvalOptions{Warmup: -1})[0]
	if !math.IsNaN(res.AUC) {
		t.Errorf("AUC %v with no page dirtied, want NaN", res.AUC)
	}
	if res := Evaluate(epochsOf([]uint64{0}, []uint64{1}), 4, []Predictor{fixed{0.9, 0.4, 0.6, 0}}, EvalOptions{Warmup: -1})[0]; math.IsNaN(res.AUC) {
		t.Error("AUC NaN where pages were dirtied and others not")
	}
}

// TestTimelineOutcome: the pages dirtied within each epoch's horizon are
// the union of that epoch's and the h-1 after, each once (an epoch may
// name a page twice), and the timelines take the same memory at every
// horizon: they once held each epoch's union, h times the trace at
// horizon h (a 300-epoch trace of 26 000 pages an epoch took 1.9 GB in
// predict eval --horizon 16).
func TestTimelineOutcome(t *testing.T) {
	const pages = 500
	rng := rand.New(rand.NewPCG(3, 4))
	epochs := make([]trace.Epoch, 120)
	for i := range epochs {
		for range rng.IntN(60) {
			epochs[i].Pages = append(epochs[i].Pages, rng.Uint64N(pages))
		}
		epochs[i].Index = uint64(i)
	}
	prev := previousWrites(epochs, pages)
	for _, h := range []int{1, 3, 8} {
		tl := newTimeline(epochs, h, prev)
		for i := 0; i+h <= len(epochs); i++ {
			want := map[uint64]bool{}
			for k := i; k < i+h; k++ {
				for _, pg := range epochs[k].Pages {
					want[pg] = true
				}
			}
			got := map[uint64]int{}
			n := tl.outcome(i, func(pg uint64) { got[pg]++ })
			if n != len(want) || len(got) != len(want) {
				t.Fatalf("h %d, epoch %d: %d pages counted (%d distinct), want %d", h, i, n, len(got), len(want))
			}
			for pg, c := range got {
				if !want[pg] || c != 1 {
					t.Fatalf("h %d, epoch %d: page %d counted %d times, dirtied: %v", h, i, pg, c, want[pg])
				}
			}
		}
	}
	alloc := func(h int) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tl := newTimeline(epochs, h, prev)
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(tl)
		return after.TotalAlloc - before.TotalAlloc
	}
	if a1, a16 := alloc(1), alloc(16); a16 > a1 {
		t.Errorf("a timeline at horizon 16 took %d bytes, at horizon 1 %d", a16, a1)
	}
}

// TestHorizonAloneOrTogether: a horizon scores the same asked alone or
// with others: predict eval's figures at horizon 8 on xz were F1 0.7371
// with --horizon 8 and 0.7344 with 1,2,4,8,16, its fit begun from another
// point when first asked rather than from the start.
func TestHorizonAloneOrTogether(t *testing.T) {
	const pages = 4096
	rng := rand.New(rand.NewPCG(7, 8))
	epochs := make([]trace.Epoch, 160)
	for i := range epochs {
		epochs[i].Index = uint64(i)
		for p := uint64(0); p < pages; p++ {
			hot := p < 512 && (p/64+uint64(i)/10)%3 == 0 // hot runs that move every 10 epochs
			if hot && rng.Float64() < 0.8 || rng.Float64() < 0.02 {
				epochs[i].Pages = append(epochs[i].Pages, p)
			}
		}
	}
	alone := Evaluate(epochs, pages, []Predictor{NewModel(pages, Options{Horizon: 8})}, EvalOptions{Horizon: 8})[0]
	together := EvaluateHorizons(epochs, pages, []Predictor{NewModel(pages, Options{Horizon: 16})}, EvalOptions{}, []int{1, 2, 8, 16})[0][2]
	if alone.F1 != together.F1 || alone.Brier != together.Brier || alone.AUC != together.AUC {
		t.Errorf("horizon 8 alone: F1 %.4f, Brier %.6f, AUC %.4f; with 1, 2 and 16: %.4f, %.6f, %.4f",
			alone.F1, alone.Brier, alone.AUC, together.F1, together.Brier, together.AUC)
	}
}
