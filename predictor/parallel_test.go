package predictor

import (
	"slices"
	"testing"
)

// spans covers the pages in order, each run whole calm blocks from its
// start, at least parallelPages long but when there is one.
func TestSpans(t *testing.T) {
	for _, c := range []struct{ pages, workers, want int }{
		{1000, 8, 1}, {2*parallelPages - 1, 8, 1}, {2 * parallelPages, 8, 2},
		{10*parallelPages + 777, 4, 4}, {10*parallelPages + 777, 1, 1}, {3*parallelPages + 5, 64, 3},
	} {
		s := spans(c.pages, c.workers)
		if len(s) != c.want {
			t.Errorf("%d pages, %d workers: %d spans, want %d", c.pages, c.workers, len(s), c.want)
		}
		at := 0
		for _, r := range s {
			if r[0] != at || r[0]%calmBlock != 0 || r[1] <= r[0] || (len(s) > 1 && r[1]-r[0] < parallelPages) {
				t.Fatalf("%d pages, %d workers: spans %v", c.pages, c.workers, s)
			}
			at = r[1]
		}
		if at != c.pages {
			t.Fatalf("%d pages, %d workers: spans %v end at %d", c.pages, c.workers, s, at)
		}
	}
}

// A model whose passes take four spans at once keeps the same state,
// samples and forecasts as one that takes one, epoch after epoch, with
// writes near and across the spans' ends; and the pages, scored in parts,
// get what one pass over them all gives.
func TestSpansExact(t *testing.T) {
	const pages = 4*parallelPages + 5*calmBlock + 3 // the last span longer, its end not a block's nor a chunk's
	epochs := sparseEpochs(pages, 40, 5)
	for e := range epochs {
		set := epochs[e].Pages
		for k := 1; k < 4; k++ {
			edge := k*(pages/4/calmBlock)*calmBlock + calmBlock // near where spans meet
			if e%3 != 0 {
				for p := edge - 40; p < edge+40; p++ {
					set = append(set, uint64(p))
				}
			}
			set = append(set, uint64(edge+200+e*30)) // a frontier that crosses over
		}
		set = append(set, pages-1)
		slices.Sort(set)
		epochs[e].Pages = slices.Compact(set)
	}
	o := Options{Horizon: 8, Workers: 1}
	one := NewModel(pages, o)
	o.Workers = 4
	four := NewModel(pages, o)
	if len(one.spans) != 1 || len(four.spans) != 4 {
		t.Fatalf("%d and %d spans", len(one.spans), len(four.spans))
	}
	a, b := make([]float32, pages), make([]float32, pages)
	for e, ep := range epochs {
		one.Observe(ep.Pages)
		four.Observe(ep.Pages)
		if !same(one.hist, four.hist) || !same(one.near, four.near) || !same(one.nearRec, four.nearRec) || !same(one.wide, four.wide) ||
			!same(one.calm, four.calm) || !same(one.region, four.region) || !same(one.regionRec, four.regionRec) || one.cohort != four.cohort {
			t.Fatalf("epoch %d: the state differs", e)
		}
		r, s := &one.ring[one.now%keepEpochs], &four.ring[four.now%keepEpochs]
		if !same(r.page, s.page) || !same(r.weight, s.weight) || !same(r.feat, s.feat) {
			t.Fatalf("epoch %d: samples differ", e)
		}
		for _, h := range []int{1, 8} {
			one.PredictHorizon(a, h)
			four.PredictHorizon(b, h)
			if p := firstDifference(a, b); p >= 0 {
				t.Fatalf("epoch %d horizon %d page %d: %v in one span, %v in four", e, h, p, a[p], b[p])
			}
			if one.Expected() != four.Expected() {
				t.Fatalf("epoch %d horizon %d: %v pages expected in one span, %v in four", e, h, one.Expected(), four.Expected())
			}
			// Scored in parts, the pages get the probabilities they get
			// scored in one pass.
			sum := one.predictRange(b, one.ready(h), 0, pages)
			if p := firstDifference(a, b); p >= 0 {
				t.Fatalf("epoch %d horizon %d page %d: %v scored in parts, %v in one pass", e, h, p, a[p], b[p])
			}
			if d := sum - one.Expected(); d < -1e-6*sum || d > 1e-6*sum {
				t.Fatalf("epoch %d horizon %d: %v pages expected in parts, %v in one pass", e, h, one.Expected(), sum)
			}
		}
	}
}

// A VM of any page count, a last chunk however short, is observed and
// forecast, with the shortcuts over quiet pages as without (a count of 8k
// plus 1 to 7 pages past a block had no word in the calm bitmap, and
// Observe failed on it).
func TestOddPageCounts(t *testing.T) {
	for _, pages := range []uint64{1, 7, 9, calmBlock + 3, 8*calmBlock + 5, 8*calmBlock + 8 + 5} {
		var epochs [][]uint64
		for e := range 30 {
			dirty := []uint64{0, pages - 1}
			if e%3 == 0 {
				dirty = []uint64{pages / 2, pages - 1}
			}
			epochs = append(epochs, slices.Compact(dirty))
		}
		shortcutsAlike(t, pages, epochs, 1, 8)
	}
}

// shortcutsAlike has a model of pages pages, and one without the
// shortcuts over quiet pages, observe epochs, and fails t unless after
// each both forecast the same at the horizons, every probability in
// [0, 1].
func shortcutsAlike(t testing.TB, pages uint64, epochs [][]uint64, horizons ...int) {
	t.Helper()
	fast, slow := NewModel(pages, Options{}), NewModel(pages, Options{})
	slow.slow = true
	a, b := make([]float32, pages), make([]float32, pages)
	for e, dirty := range epochs {
		fast.Observe(dirty)
		slow.Observe(dirty)
		for _, h := range horizons {
			fast.PredictHorizon(a, h)
			slow.PredictHorizon(b, h)
			if p := firstDifference(a, b); p >= 0 {
				t.Fatalf("%d pages, epoch %d, horizon %d, page %d: %v with shortcuts, %v without", pages, e, h, p, a[p], b[p])
			}
			for p, v := range a {
				if !(v >= 0 && v <= 1) {
					t.Fatalf("%d pages, epoch %d, horizon %d: page %d's probability %v", pages, e, h, p, v)
				}
			}
		}
	}
}
