package predictor

import (
	"math"
	"math/bits"
)

// Baselines returns the baselines the model is judged against, in the
// order tables list them: last epoch, frequency over the last 8 epochs,
// and the per-page Markov chain.
func Baselines(pages uint64) []Predictor {
	return []Predictor{NewLastEpoch(pages), NewFrequency(pages, 8), NewMarkov(pages)}
}

// lastEpoch predicts that exactly the pages dirtied in the last epoch are
// dirtied in the next one.
type lastEpoch struct {
	pages uint64
	last  []uint64
}

// NewLastEpoch returns the simplest baseline: a page dirtied in the last
// epoch is dirtied in the next (probability 1), any other page is not
// (probability 0). For a longer horizon it predicts the same.
func NewLastEpoch(pages uint64) Predictor {
	return &lastEpoch{pages: pages}
}

func (l *lastEpoch) Name() string { return "last-epoch" }

func (l *lastEpoch) Observe(dirty []uint64) {
	l.last = append(l.last[:0], dirty...)
}

func (l *lastEpoch) Predict(dst []float32) {
	checkLen(dst, l.pages)
	clear(dst)
	for _, p := range l.last {
		dst[p] = 1
	}
}

func (l *lastEpoch) PredictHorizon(dst []float32, h int) { l.Predict(dst) }

// frequency predicts each page's share of dirty epochs among the last
// window.
type frequency struct {
	pages  uint64
	window int
	mask   uint64
	seen   int      // epochs observed, up to window
	hist   []uint64 // bit k: dirty k+1 epochs ago
}

// NewFrequency returns the write-frequency baseline: the probability that
// a page is dirtied next is the fraction of the last window epochs (1 to
// 64) it was dirtied in. Over h epochs, taken as independent, it is
// 1-(1-f)^h.
func NewFrequency(pages uint64, window int) Predictor {
	window = min(max(window, 1), 64)
	return &frequency{pages: pages, window: window, mask: ^uint64(0) >> (64 - window), hist: make([]uint64, pages)}
}

func (f *frequency) Name() string { return "frequency" }

func (f *frequency) Observe(dirty []uint64) {
	shiftHistories(f.hist, nil, 0, len(f.hist))
	for _, p := range dirty {
		f.hist[p] |= 1
	}
	f.seen = min(f.seen+1, f.window)
}

func (f *frequency) Predict(dst []float32) { f.PredictHorizon(dst, 1) }

func (f *frequency) PredictHorizon(dst []float32, h int) {
	checkLen(dst, f.pages)
	if f.seen == 0 {
		clear(dst)
		return
	}
	// One probability per possible count of dirty epochs.
	var table [65]float32
	for c := 0; c <= f.seen; c++ {
		q := float64(c) / float64(f.seen)
		table[c] = float32(1 - math.Pow(1-q, float64(max(h, 1))))
	}
	frequencyPages(dst, f.hist, f.mask, &table)
}

//go:norace
func frequencyPages(dst []float32, hist []uint64, mask uint64, table *[65]float32) {
	for i, x := range hist {
		dst[i] = table[bits.OnesCount64(x&mask)]
	}
}

// markov is a two-state (clean, dirty) Markov chain per page.
type markov struct {
	pages uint64
	now   uint32   // epochs observed
	last  []uint32 // 1 + epoch of the page's last write; 0 if never
	dirty []uint32 // epochs the page was dirtied in
	stay  []uint32 // dirty epochs that followed a dirty epoch
	// Totals over all pages, the prior's means.
	allDirty, allStay, lastCount uint64
}

// markovPrior is how many transitions' worth of weight the prior (the
// transition probabilities pooled over all pages) carries against a
// page's own counts.
const markovPrior = 2

// NewMarkov returns the Markov baseline: each page is a two-state chain
// (clean, dirty) whose transition probabilities are its own transition
// counts, smoothed towards the probabilities pooled over all pages with
// a prior worth two transitions. Before the trace a page counts as clean.
// Over h epochs it gives the chain's probability of leaving the clean
// state at least once.
func NewMarkov(pages uint64) Predictor {
	return &markov{
		pages: pages,
		last:  make([]uint32, pages),
		dirty: make([]uint32, pages),
		stay:  make([]uint32, pages),
	}
}

func (m *markov) Name() string { return "markov" }

func (m *markov) Observe(dirty []uint64) {
	var stays uint64
	for _, p := range dirty {
		if m.last[p] == m.now && m.now > 0 {
			m.stay[p]++
			stays++
		}
		m.dirty[p]++
		m.last[p] = m.now + 1
	}
	m.now++
	m.allDirty += uint64(len(dirty))
	m.allStay += stays
	m.lastCount = uint64(len(dirty))
}

func (m *markov) Predict(dst []float32) { m.PredictHorizon(dst, 1) }

func (m *markov) PredictHorizon(dst []float32, h int) {
	checkLen(dst, m.pages)
	h = max(h, 1)
	if m.now == 0 {
		clear(dst)
		return
	}
	g0, g1 := pooledTransitions(m.pages, m.now, m.allDirty, m.allStay, m.lastCount)
	m.predictPages(dst, h, g0, g1)
}

// pooledTransitions returns the transition probabilities pooled over
// pages pages after epochs epochs, from clean (to dirty) and from dirty
// (to dirty), given the dirty pages counted epoch by epoch (dirty), those
// of them dirty the epoch before too (stay), and the last epoch's (last).
// Every page has made epochs transitions, the first from the clean state
// before the trace.
func pooledTransitions(pages uint64, epochs uint32, dirty, stay, last uint64) (g0, g1 float64) {
	from1 := float64(dirty - last)
	from0 := float64(pages)*float64(epochs) - from1
	g1 = 0.5
	if from1 > 0 {
		g1 = float64(stay) / from1
	}
	if from0 > 0 {
		g0 = float64(dirty-stay) / from0
	}
	return g0, g1
}

// predictPages is PredictHorizon's loop over the pages, with the pooled
// transition probabilities g0 (from clean) and g1 (from dirty).
//
//go:norace
func (m *markov) predictPages(dst []float32, h int, g0, g1 float64) {
	k := float64(markovPrior)
	now := m.now
	// Runs of pages with the same counts and state (never written, most
	// of them) get the same forecast: it is computed once a run.
	var prevD, prevS uint32
	prevState, prev := -1.0, float32(0)
	for i := range dst {
		state := 0.0
		if m.last[i] == now {
			state = 1
		}
		if m.dirty[i] == prevD && m.stay[i] == prevS && state == prevState {
			dst[i] = prev
			continue
		}
		prevD, prevS, prevState = m.dirty[i], m.stay[i], state
		d := float64(m.dirty[i])
		s := m.stay[i]
		f1 := d - state
		f0 := float64(now) - f1
		p0 := (d - float64(s) + k*g0) / (f0 + k) // clean → dirty
		p1 := (float64(s) + k*g1) / (f1 + k)     // dirty → dirty
		switch {
		case h == 1 && state == 0:
			prev = float32(p0)
		case h == 1:
			prev = float32(p1)
		default:
			clean := powInt(1-p0, h-int(state))
			if state == 1 {
				clean *= 1 - p1
			}
			prev = float32(1 - clean)
		}
		dst[i] = prev
	}
}

// powInt is x^n for n >= 0, by squaring: math.Pow without its cost under
// the race detector.
func powInt[F float32 | float64](x F, n int) F {
	r := F(1)
	for ; n > 0; n >>= 1 {
		if n&1 == 1 {
			r *= x
		}
		x *= x
	}
	return r
}
