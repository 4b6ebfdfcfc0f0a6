package predictor

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pagecast/pagecast/trace"
)

// sparseEpochs returns epochs of a large, mostly idle VM: a hot set, a
// program taking fresh memory in address order, and writes scattered
// over the rest, some of them to pages written once long before.
func sparseEpochs(pages uint64, epochs int, seed uint64) []trace.Epoch {
	rng := rand.New(rand.NewPCG(seed, 11))
	var out []trace.Epoch
	cursor := pages / 3
	for e := range epochs {
		set := map[uint64]bool{}
		for range 150 {
			set[4096+uint64(rng.IntN(1024))] = true // the hot set
		}
		for range 40 + rng.IntN(200) { // fresh memory, in runs
			set[cursor%pages] = true
			cursor++
		}
		if e%5 == 0 {
			cursor += uint64(rng.IntN(4000))
		}
		for range 20 {
			set[rng.Uint64N(pages)] = true // anywhere
		}
		if e > 70 {
			for range 30 {
				set[pages/3+rng.Uint64N(8000)] = true // pages written long ago
			}
		}
		var dirty []uint64
		for p := range set {
			dirty = append(dirty, p)
		}
		slices.Sort(dirty)
		out = append(out, trace.Epoch{Pages: dirty})
	}
	return out
}

// The shortcuts over quiet pages change nothing: a model that takes them
// and one that does not forecast exactly the same, at every horizon,
// epoch after epoch, on a sparse VM and on a real program's trace, with
// and without the threshold move, and keep the same features and samples.
func TestQuietShortcutsExact(t *testing.T) {
	t.Parallel()
	if raceDetector {
		t.Skip("scores two models page by page, 13-16 s under the race detector (off in the loops it checks), which the package's 60 s cannot spare; make test runs it without")
	}
	awk, awkPages := loadRealTrace(t, "awk")
	sparse := sparseEpochs(1<<17, 100, 3)
	cases := []struct {
		name       string
		epochs     []trace.Epoch
		pages      uint64
		window     int
		thresholds []float64
		parts      bool // each epoch shown in parts (see ObserveParts)
	}{
		{"sparse", sparse, 1 << 17, 0, []float64{-1, 0.5}, false},
		{"sparse, window 2", sparse[:60], 1 << 17, 2, []float64{-1}, false}, // windows narrower than a chunk
		{"sparse, window 2, in parts", sparse[:40], 1 << 17, 2, []float64{0.5}, true},
		{"awk", awk[:min(len(awk), 150)], awkPages, 0, []float64{-1, 0.5}, false},
	}
	for _, c := range cases {
		for _, thr := range c.thresholds {
			o := Options{Threshold: thr, Horizon: 8, Window: c.window}
			fast, slow := NewModel(c.pages, o), NewModel(c.pages, o)
			slow.slow = true
			a, b := make([]float32, c.pages), make([]float32, c.pages)
			var quiet, calmBlocks int
			for e, ep := range c.epochs {
				observeAs(fast, ep.Pages, c.parts)
				observeAs(slow, ep.Pages, c.parts)
				if !same(fast.near, slow.near) || !same(fast.nearRec, slow.nearRec) || !same(fast.wide, slow.wide) || !same(fast.calm, slow.calm) {
					t.Fatalf("%s threshold %v epoch %d: neighbour features differ", c.name, thr, e)
				}
				r, s := &fast.ring[fast.now%keepEpochs], &slow.ring[slow.now%keepEpochs]
				if !same(r.page, s.page) || !same(r.weight, s.weight) || !same(r.feat, s.feat) {
					t.Fatalf("%s threshold %v epoch %d: samples differ", c.name, thr, e)
				}
				for _, h := range []int{1, 8} {
					fast.PredictHorizon(a, h)
					slow.PredictHorizon(b, h)
					if p := firstDifference(a, b); p >= 0 {
						t.Fatalf("%s threshold %v epoch %d horizon %d page %d: %v with shortcuts, %v without", c.name, thr, e, h, p, a[p], b[p])
					}
					if fast.Expected() != slow.Expected() {
						t.Fatalf("%s threshold %v epoch %d horizon %d: expected %v with shortcuts, %v without", c.name, thr, e, h, fast.Expected(), slow.Expected())
					}
				}
				if e == len(c.epochs)-1 {
					quiet = fast.quietPages()
				}
				for _, w := range fast.calm {
					if w == allCalm {
						calmBlocks++
					}
				}
			}
			// The shortcuts were taken: on the sparse VM for a good
			// share of its pages, and over whole blocks.
			if c.name == "sparse" && quiet < int(c.pages)/3 {
				t.Errorf("sparse: %d of %d pages quiet at the end", quiet, c.pages)
			}
			if calmBlocks == 0 {
				t.Errorf("%s: no block of %d pages calm", c.name, calmBlock)
			}
			t.Logf("%s threshold %v: %d of %d pages quiet at the end; %d blocks of %d pages calm, summed over the epochs", c.name, thr, quiet, c.pages, calmBlocks, calmBlock)
		}
	}
}

// observeAs shows m an epoch's pages, whole or, if parts, as subParts
// parts (a page in one, by its number).
func observeAs(m *Model, pages []uint64, parts bool) {
	if !parts {
		m.Observe(pages)
		return
	}
	ps := make([][]uint64, subParts)
	for _, p := range pages {
		ps[p*7%subParts] = append(ps[p*7%subParts], p)
	}
	m.ObserveParts(ps)
}

// quietPages counts the pages in quiet chunks, as Predict finds them.
func (m *Model) quietPages() int {
	n, j := 0, 0
	for c := range len(m.hist) / quietChunk {
		if !calmChunk(m.calm, c) {
			continue
		}
		i := c * quietChunk
		for j < len(m.front) && uint64(m.front[j].lo) < uint64(i) {
			j++
		}
		if _, ok := quietKey(m.count, m.stay, m.front, j, i); ok {
			n += quietChunk
		}
	}
	return n
}

// firstDifference returns the first index where a and b differ, or -1
// (a NaN differs from everything). The race detector is off in it, as in
// the loops it checks.
//
//go:norace
func firstDifference(a, b []float32) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// same reports whether a and b are equal, without the race detector.
//
//go:norace
func same[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A Scorer gives each page exactly the probability PredictHorizon gives
// it, whatever order the pages are asked in, at every horizon, with and
// without the threshold move, and refits as PredictHorizon would.
func TestScorerMatchesPredict(t *testing.T) {
	t.Parallel()
	awk, awkPages := loadRealTrace(t, "awk")
	sparse := sparseEpochs(1<<16, 60, 5)
	cases := []struct {
		name   string
		epochs []trace.Epoch
		pages  uint64
		parts  bool // each epoch shown in parts (see ObserveParts)
	}{
		{"sparse", sparse, 1 << 16, false},
		{"sparse in parts", sparse[:30], 1 << 16, true},
		{"awk", awk[:min(len(awk), 80)], awkPages, false},
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for _, c := range cases {
		for _, thr := range []float64{-1, 0.5} {
			o := Options{Threshold: thr}
			// Without the threshold move, a model only ever asked
			// through Scorers refits as one asked through
			// PredictHorizon; with it, one model answers both.
			byScorer := NewModel(c.pages, o)
			byPredict := byScorer
			if thr < 0 {
				byPredict = NewModel(c.pages, o)
			}
			want := make([]float32, c.pages)
			var asked int
			for e, ep := range c.epochs {
				observeAs(byScorer, ep.Pages, c.parts)
				if byPredict != byScorer {
					observeAs(byPredict, ep.Pages, c.parts)
				}
				if e < 4 || e%5 != 0 {
					continue // horizons are also refitted when not asked every epoch
				}
				h := []int{1, 2, 8, 16}[e/5%4]
				s := byScorer.Scorer(h)
				byPredict.PredictHorizon(want, h)
				// Ascending with gaps, then at random.
				for p := uint64(0); p < c.pages; p += 1 + uint64(rng.IntN(6)) {
					if got := s.Prob(p); got != want[p] {
						t.Fatalf("%s threshold %v epoch %d horizon %d: page %d: Scorer %v, PredictHorizon %v", c.name, thr, e, h, p, got, want[p])
					}
					asked++
				}
				for range 500 {
					p := rng.Uint64N(c.pages)
					if got := s.Prob(p); got != want[p] {
						t.Fatalf("%s threshold %v epoch %d horizon %d: page %d asked at random: Scorer %v, PredictHorizon %v", c.name, thr, e, h, p, got, want[p])
					}
				}
			}
			if asked == 0 {
				t.Fatalf("%s: no page asked", c.name)
			}
		}
	}
}

// The neighbour features are what their definition says, page by page,
// however many chunks the pass over them leaves out: the share of the
// Window pages each side (the page left out) written in the last epoch,
// their mean recency score, and the share of the wideFactor·Window each
// side written in the last epoch.
func TestNeighboursByDefinition(t *testing.T) {
	t.Parallel()
	const pages = 1<<13 + 40 // a partial block at the end
	epochs := sparseEpochs(pages, 40, 9)
	for _, window := range []int{0, 2} {
		m := NewModel(pages, Options{Window: window})
		w := m.o.Window
		ww := wideFactor * w
		share := func(sum, cnt float32) uint8 { return uint8(sum/cnt*nearScale + 0.5) }
		for e, ep := range epochs {
			m.Observe(ep.Pages)
			for i := range pages {
				var last, rec, wideLast int32
				for j := max(i-ww, 0); j <= min(i+ww, pages-1); j++ {
					if j == i {
						continue
					}
					h := m.hist[j]
					wideLast += int32(h & 1)
					if j >= i-w && j <= i+w {
						last += int32(h & 1)
						rec += recencyQ[h&patternMask]
					}
				}
				cnt := float32(min(i+w, pages-1) - max(i-w, 0))
				wantNear, wantRec := share(float32(last), cnt), uint8(float32(rec)/(cnt*recencyOne)*nearScale+0.5)
				wantWide := share(float32(wideLast), float32(min(i+ww, pages-1)-max(i-ww, 0)))
				if m.near[i] != wantNear || m.nearRec[i] != wantRec || m.wide[i] != wantWide {
					t.Fatalf("window %d epoch %d page %d: near %d, recency %d, wide %d; by definition %d, %d, %d",
						w, e, i, m.near[i], m.nearRec[i], m.wide[i], wantNear, wantRec, wantWide)
				}
			}
		}
	}
}

// calmChunk reports whether calm marks chunk k (pages k·quietChunk on).
func calmChunk(calm []uint64, k int) bool { return k/64 < len(calm) && calm[k/64]&(1<<(k%64)) != 0 }
