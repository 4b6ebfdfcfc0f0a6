package predictor

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// observed returns a model that has seen the epochs of a synthetic
// workload.
func observed(o Options, workload string, epochs int) *Model {
	m := NewModel(synthPages, o)
	for _, e := range synthetic(workload, epochs, 5) {
		m.Observe(e.Pages)
	}
	return m
}

// observedParts is observed, each epoch shown in subParts parts: a page
// in one, two or all, at random.
func observedParts(o Options, workload string, epochs int) *Model {
	m := NewModel(synthPages, o)
	rng := rand.New(rand.NewPCG(7, 7))
	for _, e := range synthetic(workload, epochs, 5) {
		parts := make([][]uint64, subParts)
		for _, p := range e.Pages {
			for k := range parts {
				if rng.IntN(3) == 0 || k == int(p%subParts) {
					parts[k] = append(parts[k], p)
				}
			}
		}
		m.ObserveParts(parts)
	}
	return m
}

// Predict, with its folded tables, gives what the logistic regression
// gives on the features the model fits on.
func TestPredictMatchesFeatures(t *testing.T) {
	t.Parallel()
	for _, workload := range []string{"phased", "uniform", "phased in parts"} {
		for _, thr := range []float64{-1, 0.5} {
			var m *Model
			if name, ok := strings.CutSuffix(workload, " in parts"); ok {
				m = observedParts(Options{Threshold: thr, Horizon: 3}, name, 70)
			} else {
				m = observed(Options{Threshold: thr, Horizon: 3}, workload, 70)
			}
			// On these workloads the fit leaves the chain no share
			// (alpha 1 in every class); give it one, so that the
			// blend is checked too, at each horizon.
			m.horizon(1).alpha = [pageClasses]float32{0.3, 0.6, 0.9, 0.5}
			m.horizon(3).alpha = [pageClasses]float32{0.7, 0.2, 0.4, 0.8}
			chain := chainForecasts(m, workload, 70, 1, 3)
			for _, h := range []int{1, 3} {
				dst := make([]float32, synthPages)
				m.PredictHorizon(dst, h)
				f := m.horizon(h)
				var sum float64
				late := 0 // pages with neighbours dirtied late in the last epoch
				for p := range uint64(synthPages) {
					x := m.features(p)
					x[featDue] = dueOf(int(x[featDue]), h)
					x[featSub] = float32(f.subT[m.subOf(p)]) // as setCodes
					if x[featLate] != 0 {
						late++
					}
					z := f.w[0] + codeTerm(f, m.code(p), lifeCode(m.hist[p], m.count[p], m.stay[p], float32(m.now)))
					for k, v := range x {
						z += f.w[3+k] * float64(v)
					}
					raw := sigmoid32(float32(z))
					if f.lift && thr > 0 {
						z = float64(lifted(float32(z), f.cut, m.zt))
					}
					want := sigmoid(z)
					{
						// Blended with the chain's forecast at h, kept
						// on the side of the threshold the logit puts
						// the page.
						a := f.alpha[classOf(m.hist[p])]
						b := float64(a*raw + (1-a)*chain[h][p])
						raw = float32(b)
						want = b
						if thr > 0 && z >= float64(m.zt) {
							want = max(b, thr)
						} else if thr > 0 {
							want = min(b, thr)
						}
					}
					sum += float64(raw)
					if math.Abs(float64(dst[p])-want) > 1e-4 {
						t.Fatalf("%s, threshold %v, horizon %d: page %d: Predict %v, features %v (logit %v)",
							workload, thr, h, p, dst[p], want, z)
					}
				}
				if math.Abs(m.Expected()-sum) > 1e-3*sum+1e-3 {
					t.Errorf("%s, threshold %v, horizon %d: Expected %v, want %v", workload, thr, h, m.Expected(), sum)
				}
				if parts := m.sub != nil; parts && (late == 0 || f.w[3+featLate] == 0 || f.w[3+featSub] == 0) {
					t.Errorf("%s, threshold %v, horizon %d: %d pages with late neighbours, weights %v (late) and %v (parts): the parts' features not checked",
						workload, thr, h, late, f.w[3+featLate], f.w[3+featSub])
				}
			}
		}
	}
}

// chainForecasts returns the Markov baseline's forecasts at horizons hs
// after the epochs model m observed of workload (" in parts": whole), by
// horizon: what the model blends its own with.
func chainForecasts(m *Model, workload string, epochs int, hs ...int) map[int][]float32 {
	c := NewMarkov(synthPages)
	for _, e := range synthetic(strings.TrimSuffix(workload, " in parts"), epochs, 5) {
		c.Observe(e.Pages)
	}
	out := make(map[int][]float32)
	for _, h := range hs {
		out[h] = make([]float32, synthPages)
		c.(HorizonPredictor).PredictHorizon(out[h], h)
	}
	return out
}

// The chain's forecast the model blends with at horizon h, from the
// counts it keeps, is the Markov baseline's, for pages in every state.
func TestChainMatchesMarkov(t *testing.T) {
	t.Parallel()
	for _, workload := range []string{"phased", "uniform"} {
		m := observed(Options{}, workload, 40)
		chain := chainForecasts(m, workload, 40, 1, 2, 8, 16)
		now := float32(m.now)
		states := map[bool]int{}
		for _, h := range []int{1, 2, 8, 16} {
			for p := range uint64(synthPages) {
				hv, c, st := m.hist[p], m.count[p], m.stay[p]
				// As the fit's samples keep it, and as Predict scores it.
				got := chainH(chainP(hv, c, st, now, &m.pool), chainClean(hv, c, st, now, &m.pool), hv&1 != 0, h)
				scored := chainP(hv, c, st, now, &m.pool)
				if h > 1 {
					scored = chainHorizon(hv, c, st, now, &m.pool, h)
				}
				if want := chain[h][p]; math.Abs(float64(got-want)) > 1e-5*max(1, float64(want)) || math.Abs(float64(scored-want)) > 1e-5*max(1, float64(want)) {
					t.Fatalf("%s, horizon %d, page %d (history %#x, %d dirty, %d stayed): the model's chain %v in its samples, %v scored; the Markov baseline %v",
						workload, h, p, hv, c, st, got, scored, want)
				}
				states[hv&1 != 0]++
			}
		}
		if states[true] == 0 || states[false] == 0 {
			t.Fatalf("%s: pages dirty in the last epoch %d, clean %d: a state not checked", workload, states[true], states[false])
		}
	}
}

// The chain's forecast kept with each sample, what the fit's blend
// shares are chosen on, is the Markov baseline's forecast at the
// sample's epoch, over the fit's horizon (walk 124: the state inverted in
// it passed every other test).
func TestSampledChainMatchesMarkov(t *testing.T) {
	t.Parallel()
	m := NewModel(synthPages, Options{})
	c := NewMarkov(synthPages).(HorizonPredictor)
	hs := []int{1, 2, 8}
	want := map[int][]float32{}
	for _, h := range hs {
		want[h] = make([]float32, synthPages)
	}
	states := map[bool]int{}
	for i, e := range synthetic("phased", 40, 5) {
		for _, h := range hs {
			c.PredictHorizon(want[h], h) // for the epochs from this one on
		}
		m.Observe(e.Pages)
		c.Observe(e.Pages)
		if i < 2 {
			continue // the baseline forecasts nothing before its first epoch
		}
		s := &m.ring[(m.now-1)%keepEpochs] // this epoch's samples
		if s.t != m.now-1 || len(s.page) == 0 {
			t.Fatalf("epoch %d: the ring holds epoch %d's %d samples", m.now-1, s.t, len(s.page))
		}
		for j, p := range s.page {
			last := s.life[j]/lifeBuckets == classLast
			for _, h := range hs {
				got := s.chainAt(j, h)
				if w := want[h][p]; math.Abs(float64(got-w)) > 1e-5*max(1, float64(w)) {
					t.Fatalf("epoch %d, page %d (dirtied in the last epoch: %v), horizon %d: the sample's chain %v, the Markov baseline %v", s.t, p, last, h, got, w)
				}
			}
			states[last]++
		}
	}
	if states[true] == 0 || states[false] == 0 {
		t.Fatalf("samples of pages dirtied in the last epoch %d, not %d: a state not checked", states[true], states[false])
	}
}

// A horizon longer than the refit period is blended too: its shares are
// chosen on the samples whose outcomes came after the last fit (walk 124:
// on those of the epochs since the fit alone, a horizon past 16 had none,
// and was never blended).
func TestBlendPastRefitPeriod(t *testing.T) {
	t.Parallel()
	for _, h := range []int{MaxHorizon} {
		m := NewModel(synthPages, Options{Samples: 128}) // few samples: the fits' cost under the race detector
		m.FitHorizons(h)
		dst := make([]float32, synthPages)
		for i, e := range synthetic("phased", 72, 5) {
			m.Observe(e.Pages)
			if i%8 == 0 { // forecast between refits, so that each is made
				m.PredictHorizon(dst, h)
			}
		}
		f := m.horizon(h)
		if f.blendTally == [pageClasses][2]float64{} {
			t.Errorf("horizon %d: no sample ever chose the blend's shares (alpha %v)", h, f.alpha)
		}
	}
}

// codeTerm is what a page's code c and lifetime code l add to its logit,
// as setCodes puts them in a sample's row: their table entries, weighted
// by their weights, or for a frontier code its entry alone, weighted by
// its own weight.
func codeTerm(f *fit, c uint16, l uint8) float64 {
	if c >= codeAfter {
		return f.w[3+featFront] * f.table[c]
	}
	return f.w[1]*f.table[c] + f.w[2]*f.life[l]
}

// The model keeps 15 bytes a page, and at most 16 in all (issue 13's
// budget) with its per-region state for horizons 1 and 8, and with the
// in-epoch masks once parts are observed.
func TestStatePerPage(t *testing.T) {
	m := NewModel(1, Options{})
	size := unsafe.Sizeof(m.hist[0]) + unsafe.Sizeof(m.count[0]) + unsafe.Sizeof(m.stay[0]) +
		unsafe.Sizeof(m.near[0]) + unsafe.Sizeof(m.nearRec[0]) + unsafe.Sizeof(m.wide[0])
	if size != 15 {
		t.Errorf("%d bytes a page, want 15", size)
	}
	const pages = 1 << 20
	m = NewModel(pages, Options{Horizon: 8})
	if b := float64(m.StateBytes()) / pages; b > 16 {
		t.Errorf("%.4f bytes of state a page with horizons 1 and 8, want at most 16", b)
	}
	// Told when in the epoch pages were written: half a byte a page more.
	m.ObserveParts([][]uint64{{1}, {2}, nil, {1}})
	if b := float64(m.StateBytes()) / pages; b > 16 {
		t.Errorf("%.4f bytes of state a page with horizons 1 and 8 and the parts, want at most 16", b)
	}
}

func TestModelDeterministic(t *testing.T) {
	t.Parallel()
	a, b := observed(Options{Seed: 9}, "zipf", 80), observed(Options{Seed: 9}, "zipf", 80)
	da, db := make([]float32, synthPages), make([]float32, synthPages)
	a.Predict(da)
	b.Predict(db)
	for i := range da {
		if da[i] != db[i] {
			t.Fatalf("page %d: %v and %v from the same seed and input", i, da[i], db[i])
		}
	}
}

func TestModelColdStart(t *testing.T) {
	m := NewModel(8, Options{})
	dst := make([]float32, 8)
	m.Predict(dst)
	for i, v := range dst {
		if v <= 0 || v > 0.01 {
			t.Fatalf("page %d before any epoch: %v, want a small probability", i, v)
		}
	}
	m.Observe([]uint64{3})
	m.Predict(dst)
	if dst[3] < 0.5 || dst[2] > 0.1 {
		t.Errorf("after page 3 was dirtied: %v", dst)
	}
	if w := m.Weights(); len(w) != len(FeatureNames()) {
		t.Errorf("%d weights, %d names", len(w), len(FeatureNames()))
	}
	if tab := m.Table(); len(tab) != len(CodeNames()) {
		t.Errorf("%d table entries, %d names", len(tab), len(CodeNames()))
	}
}

// Forecasts for several epochs ahead are calibrated too, and more likely
// than for one.
func TestHorizonCalibration(t *testing.T) {
	t.Parallel()
	const pages = 2048
	tr, _ := knownProbabilities(pages, 250, 2)
	for _, h := range []int{2, 4} {
		res := Evaluate(tr, pages, []Predictor{NewModel(pages, Options{Horizon: h})}, EvalOptions{Warmup: 64, Horizon: h})[0]
		t.Logf("horizon %d: F1 %.3f Brier %.4f AUC %.3f ECE %.4f", h, res.F1, res.Brier, res.AUC, res.ECE)
		if res.ECE > 0.05 {
			t.Errorf("horizon %d: expected calibration error %.4f, want at most 0.05", h, res.ECE)
		}
	}
	m := NewModel(pages, Options{})
	for _, e := range tr {
		m.Observe(e.Pages)
	}
	one, four := make([]float32, pages), make([]float32, pages)
	m.Predict(one)
	m.PredictHorizon(four, 4) // fitted on first use
	var s1, s4 float64
	for i := range one {
		s1 += float64(one[i])
		s4 += float64(four[i])
	}
	if s4 <= s1 {
		t.Errorf("expected dirty pages within 4 epochs %.0f, not above within 1 %.0f", s4, s1)
	}
}

// fitLogistic gives the same weights, bit for bit, whatever the number of
// workers its passes take.
func TestFitLogisticWorkers(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	want := []float64{-1, 2, -0.5, 0.25}
	s := &samples{d: 4}
	for range 3*fitRows + 100 {
		x := []float32{1, float32(rng.NormFloat64()), float32(rng.NormFloat64()), float32(rng.IntN(2))}
		s.add(x, rng.Float64() < sigmoid(dot(x, want)), 0.5+rng.Float64())
	}
	one := make([]float64, 4)
	fitLogistic(s, one, 1e-3, 1)
	for _, workers := range []int{2, 3, 8} {
		w := make([]float64, 4)
		fitLogistic(s, w, 1e-3, workers)
		if !slices.Equal(w, one) {
			t.Errorf("%d workers: weights %v, one worker %v", workers, w, one)
		}
	}
}

// fitLogistic recovers the weights data were drawn with.
func TestFitLogistic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	want := []float64{-1, 2, -0.5}
	s := &samples{d: 3}
	for range 20000 {
		x := []float32{1, float32(rng.NormFloat64()), float32(rng.NormFloat64())}
		s.add(x, rng.Float64() < sigmoid(dot(x, want)), 1)
	}
	w := make([]float64, 3)
	fitLogistic(s, w, 0, 1)
	for j := range w {
		if math.Abs(w[j]-want[j]) > 0.1 {
			t.Errorf("weights %.3f, want %.3f", w, want)
			break
		}
	}
}

func TestSigmoid32(t *testing.T) {
	for z := -20.0; z <= 20; z += 0.001 {
		want := sigmoid(math.Max(math.Min(z, 16), -16))
		if got := sigmoid32(float32(z)); math.Abs(float64(got)-want) > 2e-6 {
			t.Fatalf("sigmoid32(%v) = %v, want %v", z, got, want)
		}
	}
	if v := sigmoid32(float32(math.NaN())); v != sigmoidTab[0].v {
		t.Errorf("sigmoid32(NaN) = %v", v)
	}
}

// The fitting's own exponential and logarithm agree with the math
// package's.
func TestExpLog1p(t *testing.T) {
	for x := -750.0; x <= 0; x += 0.0173 {
		want := math.Exp(x)
		if got := expNonPositive(x); math.Abs(got-want) > 1e-14*want+1e-300 {
			t.Fatalf("expNonPositive(%v) = %v, want %v", x, got, want)
		}
	}
	for e := 0.0; e <= 1; e += 0.000731 {
		want := math.Log1p(e)
		if got := log1pUnit(e); math.Abs(got-want) > 1e-15 {
			t.Fatalf("log1pUnit(%v) = %v, want %v", e, got, want)
		}
	}
}

// A forecast asked for first after the scheduled refits it was not
// there for (epochs 4 and 8) is made by a fit of the epochs seen, not by
// the one fitted after the second epoch on its samples alone.
func TestLateFirstForecastRefits(t *testing.T) {
	m := observed(Options{}, "hotset", 9)
	f := m.horizons[0]
	if f.fittedAt != 2 {
		t.Fatalf("fitted at epoch %d before any forecast, want 2 (the first fit, made unasked)", f.fittedAt)
	}
	m.Predict(make([]float32, synthPages))
	if f.fittedAt != 9 {
		t.Errorf("first forecast at epoch 9 used the fit of epoch %d, want one made at 9", f.fittedAt)
	}
	// Forecast every epoch from then on, it follows the schedule.
	for range 7 {
		m.Observe(nil)
		m.Predict(make([]float32, synthPages))
	}
	if f.fittedAt != 16 {
		t.Errorf("at epoch 16 the fit is of epoch %d, want 16", f.fittedAt)
	}
}
