package predictor

import (
	"math"
	"testing"
)

func predict(p Predictor, pages uint64, h int) []float32 {
	dst := make([]float32, pages)
	if hp, ok := p.(HorizonPredictor); ok {
		hp.PredictHorizon(dst, h)
	} else {
		p.Predict(dst)
	}
	return dst
}

func TestLastEpoch(t *testing.T) {
	p := NewLastEpoch(4)
	p.Observe([]uint64{0, 2})
	p.Observe([]uint64{1})
	for _, h := range []int{1, 5} {
		if got := predict(p, 4, h); got[0] != 0 || got[1] != 1 || got[2] != 0 || got[3] != 0 {
			t.Errorf("horizon %d: %v, want only page 1", h, got)
		}
	}
}

func TestFrequency(t *testing.T) {
	p := NewFrequency(3, 4)
	if got := predict(p, 3, 1); got[0] != 0 {
		t.Errorf("before any epoch: %v, want zeros", got)
	}
	// Page 0 dirty in 3 of the last 4 epochs, page 1 in 1 (the fifth
	// epoch back is out of the window), page 2 never.
	for _, e := range [][]uint64{{1}, {0}, {0, 1}, {}, {0}} {
		p.Observe(e)
	}
	got := predict(p, 3, 1)
	if got[0] != 0.75 || got[1] != 0.25 || got[2] != 0 {
		t.Errorf("%v, want [0.75 0.25 0]", got)
	}
	if got := predict(p, 3, 2); math.Abs(float64(got[0])-(1-0.25*0.25)) > 1e-6 {
		t.Errorf("horizon 2: page 0 %v, want 1-(1-0.75)²", got[0])
	}
}

func TestMarkov(t *testing.T) {
	p := NewMarkov(2)
	// Page 0 alternates dirty, clean, dirty, clean; page 1 always dirty.
	for _, e := range [][]uint64{{0, 1}, {1}, {0, 1}, {1}} {
		p.Observe(e)
	}
	// Pooled over the 8 transitions (the first from the clean state
	// before the trace): from dirty 5 (page 0's 2 to clean, page 1's 3
	// to dirty), g1 = 3/5; from clean 3, all to dirty, g0 = 1.
	// Page 0 is clean, left clean 2 of 2 times: (2 + 2·1)/(2 + 2) = 1.
	// Page 1 is dirty, stayed 3 of 3 times: (3 + 2·0.6)/(3 + 2) = 0.84.
	got := predict(p, 2, 1)
	if math.Abs(float64(got[0])-1) > 1e-6 || math.Abs(float64(got[1])-4.2/5) > 1e-6 {
		t.Errorf("%v, want [1 0.84]", got)
	}
	// Over 2 epochs page 1 escapes only by leaving (0.16) and not coming
	// back (1-1): it is certain to be dirtied.
	if got := predict(p, 2, 2); math.Abs(float64(got[1])-1) > 1e-6 {
		t.Errorf("horizon 2: page 1 %v, want 1", got[1])
	}
}

// Every baseline gives probabilities in [0, 1] for every page, before
// and after it has seen epochs.
func TestBaselinesInRange(t *testing.T) {
	tr := synthetic("hotset", 20, 1)
	for _, p := range Baselines(synthPages) {
		for _, e := range tr {
			for _, h := range []int{1, 4} {
				for i, v := range predict(p, synthPages, h) {
					if !(v >= 0 && v <= 1) {
						t.Fatalf("%s: page %d probability %v", p.Name(), i, v)
					}
				}
			}
			p.Observe(e.Pages)
		}
	}
}

func TestPowInt(t *testing.T) {
	for _, x := range []float64{0, 0.001, 0.37, 0.999, 1} {
		for n := range 40 {
			if got, want := powInt(x, n), math.Pow(x, float64(n)); math.Abs(got-want) > 1e-14 {
				t.Errorf("powInt(%v, %d) = %v, want %v", x, n, got, want)
			}
		}
	}
}
