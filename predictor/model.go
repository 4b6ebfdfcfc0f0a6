package predictor

import (
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"unsafe"
)

// Model defaults and limits.
const (
	// DefaultWindow is how many pages on each side of a page count as its
	// neighbours.
	DefaultWindow = 8
	// DefaultRefitEvery is how many epochs pass between refits once the
	// model is warm.
	DefaultRefitEvery = 16
	// DefaultSamples is how many of the pages dirtied in the last 8
	// epochs but not in the one closing the model keeps, per epoch, to
	// fit on (see Options.Samples).
	DefaultSamples = 512
	// MaxHorizon is the longest horizon, in epochs, the model forecasts;
	// PredictHorizon clamps longer ones to it.
	MaxHorizon = 32
	// keepEpochs is how many epochs of training samples the model keeps:
	// as many as the 64-bit history can label.
	keepEpochs = 64
)

// Options tune a Model. The zero value is the defaults.
type Options struct {
	// Window is how many pages on each side of a page are its
	// neighbours for the spatial features; 0 means DefaultWindow.
	Window int
	// Horizon is a horizon in epochs, besides 1, that the model fits
	// from the start (PredictHorizon fits others on first use); 0 or 1
	// means only 1.
	Horizon int
	// RefitEvery is how many epochs pass between refits; 0 means
	// DefaultRefitEvery. The first fits come sooner, after 2, 4 and 8
	// epochs.
	RefitEvery int
	// Samples sets how many (page, epoch) pairs the model keeps to fit
	// on as each epoch closes: every page dirtied in it (up to
	// 4·Samples), Samples of the pages dirtied in the 8 epochs before
	// but not in it, Samples/2 of those dirtied earlier, Samples/4 of
	// those not written in 64 epochs within 1024 pages of one first
	// written in the epoch before (see codeAfter) and Samples/4 of the
	// rest, each weighted by the inverse of its sampling rate; 0 means
	// DefaultSamples.
	Samples int
	// Threshold is the probability at and above which users of the
	// forecast take a page to be dirtied next; 0 means
	// DefaultThreshold. The model keeps its probabilities
	// calibrated except where that decision would cost F1: when cutting
	// at another probability c gave a better F1 (by 0.01 or more, and by
	// a larger share than it made the Brier score worse) on the epochs
	// after its last refits (the latest weighing most), the pages between
	// c and Threshold are moved just across Threshold, keeping their
	// order. Negative: never; the probabilities stay as fitted.
	Threshold float64
	// Seed seeds the sampling: the same seed and input give the same
	// forecasts.
	Seed uint64
	// Workers is how many goroutines Observe's passes over the pages,
	// and a forecast of every page, take at once, each a run of at least
	// 512 MiB of guest; 0 means one a core. The forecasts do not depend
	// on it.
	Workers int
}

func (o Options) withDefaults() Options {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	o.Horizon = min(max(o.Horizon, 1), MaxHorizon)
	if o.RefitEvery <= 0 {
		o.RefitEvery = DefaultRefitEvery
	}
	if o.Samples <= 0 {
		o.Samples = DefaultSamples
	}
	if o.Threshold == 0 {
		o.Threshold = DefaultThreshold
	}
	if o.Workers <= 0 {
		o.Workers = defaultWorkers()
	}
	o.Threshold = min(o.Threshold, 0.999)
	return o
}

// Model forecasts dirty pages from temporal and spatial locality (Wei et
// al.). Its state is 15 bytes a page: a 64-epoch history shift register
// (8 bytes, bit 0 the last epoch), the number of epochs it was dirtied in
// since the model started and, of them, those that followed a dirty one
// (2 each), and the three neighbour features of the current epoch (a byte
// each); besides, a bit per 8 pages (calm), 8 bytes per 2 MiB region, 8
// per region for each horizon fitted, and 8 per run of consecutive pages
// first written in the last epoch.
//
// The forecast is a logistic regression (see FeatureNames) over:
//   - temporal: the page's code, its pattern over the last 8 epochs or,
//     if it was not dirtied in them, how long ago it last was, through a
//     table of the empirical probability, for this VM, that a page with
//     that code is dirtied next; how often it was dirtied 9 to 64 epochs
//     ago; whether the interval between its last two writes says the
//     next is due;
//   - lifetime: its transition rate over all epochs observed (what a
//     per-page Markov chain learns; the history register forgets after
//     64 epochs), through a table like the code's, one per class of the
//     age of its last write (the last epoch, 2-8, 9-64 epochs ago,
//     longer);
//   - spatial: the share of its neighbours (Window pages each side)
//     dirtied in the last epoch, and their recency-weighted dirtiness
//     over the last 8; the share of the pages 8·Window each side dirtied
//     in the last epoch (where a program's first writes spread); the
//     share of its 2 MiB region dirtied in the last epoch and in the last
//     8, weighted apart for pages dirtied in the last 8 epochs and the
//     others (an active region wakes its idle pages; it says little about
//     a page already hot);
//   - frontier: for a page not written in the last 64 epochs, how far
//     after (or, if none is near below, before) the nearest page first
//     written in the last epoch it lies, up to 1024 pages, in powers of
//     two, and how long the run of consecutive first writes that page
//     ends is, through a table of this VM's rates with its own weight: a
//     program takes fresh memory in address order, about as much an epoch
//     as the last (on awk, tar, xz and perl, 73-95% of the idle pages 1-8
//     pages past a run of 17 to 256 first writes are written in the next
//     epoch, 5-23% past a run of 1 or 2, 0.01-0.04% of those over 1024
//     pages past any);
//   - cohort: the share of the pages last written in the same epoch as it
//     that were rewritten in the last epoch (pages written together are
//     rewritten together: a buffer refilled, a table rebuilt);
//   - in parts (see ObserveParts): for a page written in the last epoch,
//     which of its parts it was written in, through a table of this VM's
//     rates; for every page, of its 16 nearest neighbours, those written
//     in the last part of the last epoch less those written in it earlier
//     only.
//
// Each horizon's forecast is then blended with the per-page Markov
// chain's probability of a write within that horizon (the baseline's), in
// shares per page class fitted on the epochs after each fit (see
// fit.blendSeen), and kept on the side of Options.Threshold the fitted
// logit puts the page.
//
// The tables and the weights are refitted every RefitEvery epochs, per
// horizon, on a weighted sample of the last 64 epochs' (features, outcome)
// pairs (see Options.Samples), by Newton's method. Until the first fit
// the model predicts a page's recency-weighted dirtiness over the last 8
// epochs. The fitted probabilities are calibrated; Options.Threshold says
// where they are not.
//
// Predict is one pass over flat arrays with the weights folded into small
// tables; Observe computes the per-epoch terms. A Model is not safe for
// concurrent use.
type Model struct {
	o     Options
	pages uint64
	now   uint32 // epochs observed

	hist    []uint64 // bit k: dirtied k+1 epochs ago
	count   []uint16 // epochs the page was dirtied in, in all (halved with stay when full)
	stay    []uint16 // of them, those that followed a dirty epoch
	near    []uint8  // share of neighbours dirtied last epoch, × nearScale
	nearRec []uint8  // neighbours' mean recency score, × nearScale
	wide    []uint8  // share of the wide neighbourhood dirtied last epoch, × nearScale

	// region and regionRec are the region features of each region.
	region, regionRec []float32

	// cohort[k] is the cohort feature of a page last written k+1 epochs
	// ago (k = 0..63).
	cohort [64]float32

	// front are the runs of consecutive pages first written in the last
	// epoch (not in the 64 before), ascending: the frontier codes'
	// reference.
	front []frontRun

	horizons []*fit // 1 first

	zt            float32 // logit of Options.Threshold
	pBelow        float32 // the probability just below Options.Threshold
	expected      float64 // see Expected
	rng           *rand.Rand
	ring          [keepEpochs]epochSamples
	recent, older []uint32 // sampling scratch
	edge          []uint32
	scratch       samples // fitting scratch
	codeScratch   []uint16
	lifeScratch   []uint8
	chainScratch  []float32
	subScratch    []uint8
	partsDirty    []uint64 // ObserveParts's scratch
	partsMasks    []uint8
	// allDirty counts the pages dirtied, epoch by epoch; allStay those
	// dirtied in the epoch before too; pool is the chain's transition
	// probabilities pooled over all pages, from clean and from dirty.
	allDirty, allStay uint64
	pool              [2]float32
	// calm has a bit for each chunk of quietChunk pages, set where none
	// was written in 64 epochs or has a neighbour feature (see
	// neighbours).
	calm []uint64
	// sub holds, for each page dirtied in the last epoch, which of
	// subParts parts of it the page was written in (a nibble a page, two
	// a byte; see ObserveParts); nil until parts are first observed.
	sub []uint8
	// slow turns off the passes' shortcuts over quiet pages (see
	// quietKey), for tests that check they change nothing.
	slow bool
	// spans are the runs of pages Observe's passes take at once (see
	// eachSpan), and spanLists each one's strata.
	spans     [][2]int
	spanLists []strataLists
	// far is the page that stands for outside more guest pages, none
	// ever dirtied, and farRate the rate at which a clean page of all of
	// them is dirtied (see SetOutside).
	far, outside uint64
	farRate      float64
}

// SetOutside says that page far stands for n more guest pages than the
// model keeps, none of them ever dirtied: a PageMap's Far. Its forecast is
// then at most the chance that a clean page, of all the guest's, is
// dirtied within the horizon: the pooled rate from clean with the n pages
// counted. Without it far got the rate the model learned of the idle
// pages it keeps, mostly ones near pages written (a PageMap keeps those),
// for every page it stands for: awk in a 1 TiB guest scored a Brier of
// 0.000004 against the Markov chain's 0.000000 (2026-12-02). (Counting the
// n pages in the fits' idle weight instead drove the fits' other
// forecasts down: past some millions of pages the idle rate falls under
// the tables' floor.)
func (m *Model) SetOutside(far, n uint64) {
	if far < m.pages {
		m.far, m.outside = far, n
	}
}

// capFar caps far's forecast within h epochs by the pooled rate from
// clean (see SetOutside).
func (m *Model) capFar(p float32, h int) float32 {
	return min(p, float32(1-math.Pow(1-m.farRate, float64(min(max(h, 1), MaxHorizon)))))
}

// NewModel returns a model of a VM with pages guest pages.
func NewModel(pages uint64, o Options) *Model {
	o = o.withDefaults()
	m := &Model{
		o:       o,
		pages:   pages,
		hist:    make([]uint64, pages),
		count:   make([]uint16, pages),
		stay:    make([]uint16, pages),
		near:    make([]uint8, pages),
		nearRec: make([]uint8, pages),
		wide:    make([]uint8, pages),
		calm:    make([]uint64, (pages+calmBlock-1)/calmBlock), // a word a block, the last too however short
		rng:     rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15)),
	}
	m.setWorkers(o.Workers)
	regions := (pages + 1<<regionShift - 1) >> regionShift
	m.region, m.regionRec = make([]float32, regions), make([]float32, regions)
	if o.Threshold > 0 {
		m.zt = float32(logit(o.Threshold))
	}
	m.pBelow = math.Nextafter32(float32(o.Threshold), 0)
	m.horizon(1)
	m.horizon(o.Horizon)
	return m
}

// Name returns "model".
func (m *Model) Name() string { return "model" }

// Pages returns the number of pages the model forecasts.
func (m *Model) Pages() uint64 { return m.pages }

// Epochs returns the number of epochs the model has observed.
func (m *Model) Epochs() int { return int(m.now) }

// horizon returns the fit for horizon h, adding it if new.
func (m *Model) horizon(h int) *fit {
	for _, f := range m.horizons {
		if f.h == h {
			return f
		}
	}
	f := &fit{h: h}
	f.coldStart()
	f.fold(m)
	m.horizons = append(m.horizons, f)
	return f
}

// FitHorizons tells the model the horizons it will be asked for, so that
// each is fitted from the start, as Options.Horizon's is. A horizon first
// fitted when first asked starts its fits from another point, and the
// forecasts it gives differ a little: on xz at horizon 8, F1 0.7371 fitted
// from the start and 0.7344 from the first forecast, so predict eval's
// figures for a horizon depended on which others it was asked for.
func (m *Model) FitHorizons(hs ...int) {
	for _, h := range hs {
		m.horizon(min(max(h, 1), MaxHorizon))
	}
}

// Observe closes an epoch: dirty are the pages written in it, ascending.
// It updates the histories and the per-epoch terms and, when due, refits.
func (m *Model) Observe(dirty []uint64) { m.observe(dirty, nil) }

// subParts is how many parts of an epoch the model tells apart: a page's
// in-epoch mask has a bit for each.
const subParts = 4

// ObserveParts closes an epoch given as its parts in time order, each the
// pages written in it, ascending (a trace recorded in epochs a fraction of
// the model's; part j of k counts as part j·subParts/k of subParts). Besides
// what Observe does, the model keeps which parts each page was written
// in: within an epoch, a page written late or in several parts is likelier
// to be written again in the next than one written once early (on xz,
// recorded in parts of 25 ms, 39% of the pages written only in the first
// quarter of an epoch were written in the next, 64% of those written only
// in the last, 95% of those written in all four).
func (m *Model) ObserveParts(parts [][]uint64) {
	if len(parts) <= 1 {
		var dirty []uint64
		if len(parts) == 1 {
			dirty = parts[0]
		}
		m.Observe(dirty)
		return
	}
	dirty, masks := mergeParts(parts, m.partsDirty[:0], m.partsMasks[:0])
	m.partsDirty, m.partsMasks = dirty, masks
	m.observe(dirty, masks)
}

// mergeParts appends to dirty the union of parts, each ascending, and to
// masks each page's in-epoch mask (see ObserveParts).
//
//go:norace
func mergeParts(parts [][]uint64, dirty []uint64, masks []uint8) ([]uint64, []uint8) {
	at := make([]int, len(parts))
	for {
		next, any := uint64(math.MaxUint64), false
		for j, p := range parts {
			if at[j] < len(p) && p[at[j]] <= next {
				next, any = p[at[j]], true
			}
		}
		if !any {
			return dirty, masks
		}
		var mask uint8
		for j, p := range parts {
			if at[j] < len(p) && p[at[j]] == next {
				mask |= 1 << (j * subParts / len(parts))
				at[j]++
			}
		}
		dirty = append(dirty, next)
		masks = append(masks, mask)
	}
}

// subOf returns page p's in-epoch mask: 0 if it was not dirtied in the
// last epoch or no parts were observed.
func (m *Model) subOf(p uint64) uint8 {
	if m.sub == nil || m.hist[p]&1 == 0 {
		return 0
	}
	return m.sub[p>>1] >> ((p & 1) << 2) & 0xf
}

// observe is Observe, with each dirty page's in-epoch mask if masks is not
// nil.
func (m *Model) observe(dirty []uint64, masks []uint8) {
	m.sample(dirty)
	m.front = firstWrites(m.hist, dirty, m.front[:0])
	calm := m.calmBlocks()
	m.eachSpan(func(_, lo, hi int) { shiftHistories(m.hist, calm, lo, hi) })
	var stays uint64
	for _, p := range dirty {
		m.hist[p] |= 1
		if m.count[p] == math.MaxUint16 {
			m.count[p] >>= 1
			m.stay[p] >>= 1
		}
		m.count[p]++
		if m.hist[p]&2 != 0 {
			m.stay[p]++
			stays++
		}
	}
	if masks != nil && m.sub == nil {
		m.sub = make([]uint8, (m.pages+1)/2)
	}
	if m.sub != nil {
		for k, p := range dirty {
			var mask uint8 // unknown: an epoch observed whole
			if masks != nil {
				mask = masks[k]
			}
			sh := (p & 1) << 2
			m.sub[p>>1] = m.sub[p>>1]&^(0xf<<sh) | mask<<sh
		}
	}
	m.now++
	// The chain's transition probabilities pooled over all pages (see
	// chainP), as the Markov baseline's.
	m.allDirty += uint64(len(dirty))
	m.allStay += stays
	g0, g1 := pooledTransitions(m.pages, m.now, m.allDirty, m.allStay, uint64(len(dirty)))
	m.pool = [2]float32{float32(g0), float32(g1)}
	if m.outside > 0 {
		m.farRate, _ = pooledTransitions(m.pages+m.outside, m.now, m.allDirty, m.allStay, uint64(len(dirty)))
	}
	m.neighbours(dirty)
	m.cohorts()
	if m.refitDue(m.now) {
		for _, f := range m.horizons {
			// A horizon not forecast since its last fit waits until
			// it is asked for (PredictHorizon refits it then).
			if f.used || !f.fitted {
				m.refit(f)
				f.used = false
			}
		}
	}
	for _, f := range m.horizons {
		f.fold(m)
	}
}

// earlyRefits are the epochs after which the model refits before it
// refits every RefitEvery.
var earlyRefits = [...]uint32{2, 4, 8}

// refitDue says whether the horizons forecast are refitted as epoch n
// closes.
func (m *Model) refitDue(n uint32) bool {
	return slices.Contains(earlyRefits[:], n) || n%uint32(m.o.RefitEvery) == 0
}

// skippedRefit says whether a refit was due after epoch at, up to now: a
// fit made at at that was not forecast since is stale. (A fit of the
// second epoch, used at the eighth, rests on one epoch of samples.)
func (m *Model) skippedRefit(at uint32) bool {
	for _, n := range earlyRefits {
		if at < n && n <= m.now {
			return true
		}
	}
	r := uint32(m.o.RefitEvery)
	return m.now/r > at/r
}

// shiftHistories moves every history from lo to hi (a whole number of
// calm blocks from lo) one epoch back, but for those of the chunks calm
// says are calm (nil: none), which are 0.
//
//go:norace
func shiftHistories(hist []uint64, calm []uint64, lo, hi int) {
	for b := lo; b < hi; b += calmBlock {
		e := min(b+calmBlock, hi)
		for a, z := liveSpan(calm, b, b, e); a < z; a, z = liveSpan(calm, b, z, e) {
			h := hist[a:z]
			for i := range h {
				h[i] <<= 1
			}
		}
	}
}

// calmBlocks returns m.calm, or nil if the shortcuts are off.
func (m *Model) calmBlocks() []uint64 {
	if m.slow {
		return nil
	}
	return m.calm
}

// Predict writes to dst the probability that each page is dirtied in the
// next epoch; len(dst) must be the page count.
func (m *Model) Predict(dst []float32) { m.PredictHorizon(dst, 1) }

// PredictHorizon writes to dst the probability that each page is dirtied
// at least once in the next h epochs, 1 <= h <= MaxHorizon (others are
// clamped). A horizon asked for the first time is fitted first, on the
// samples kept.
func (m *Model) PredictHorizon(dst []float32, h int) {
	checkLen(dst, m.pages)
	m.expected = m.predictPages(dst, m.ready(h))
	if m.outside > 0 {
		p := m.capFar(dst[m.far], h)
		m.expected -= float64(dst[m.far] - p)
		dst[m.far] = p
	}
}

// ready returns the fit of horizon h (clamped to 1..MaxHorizon), about to
// be used. A horizon a scheduled refit skipped since its last fit (it was
// not forecast in between), or never fitted, is refitted first.
func (m *Model) ready(h int) *fit {
	f := m.horizon(min(max(h, 1), MaxHorizon))
	if stale := !f.fitted || m.skippedRefit(f.fittedAt); stale && !f.used && m.now > uint32(f.h) {
		m.refit(f)
		f.fold(m)
	}
	f.used = true
	return f
}

// Scorer gives pages' probabilities one at a time, each the one
// PredictHorizon would give it, as of the last Observe: a caller that
// asks about few of the pages an epoch pays for those only.
type Scorer struct {
	m    *Model
	f    *fit
	now  uint32 // the model's epochs when made
	next uint64 // the page after the last scored
	st   scoring
}

// Scorer returns a Scorer of the probability that a page is dirtied
// within the next h epochs, as PredictHorizon (whose refits it makes). It
// holds until the next Observe.
func (m *Model) Scorer(h int) *Scorer {
	return &Scorer{m: m, f: m.ready(h), now: m.now}
}

// Prob returns the probability of page p, which must be below the page
// count. Pages asked in ascending order cost least.
func (s *Scorer) Prob(p uint64) float32 {
	if s.m.now != s.now {
		panic("predictor: Scorer used after Observe")
	}
	if p >= s.m.pages {
		panic(fmt.Sprintf("predictor: page %d of %d", p, s.m.pages))
	}
	if p != s.next {
		s.st.j = runAbove(s.m.front, p)
	}
	var dst [1]float32
	s.m.scoreRange(dst[:], s.f, int(p), int(p)+1, &s.st)
	s.next = p + 1
	if s.m.outside > 0 && p == s.m.far {
		return s.m.capFar(dst[0], s.f.h)
	}
	return dst[0]
}

// predictPages is PredictHorizon's loop over the pages with the fit f; it
// returns the expected number of dirty pages. Quiet pages (see quietKey)
// with the key of the last quiet page scored get its probability without
// computing it again.
//
// A VM of at least twice parallelPages is scored parallelPages at a time,
// one a core (Options.Workers) at once, the expected number summed over
// them in order, so that it does not depend on how many there are.
func (m *Model) predictPages(dst []float32, f *fit) float64 {
	n := len(m.hist)
	dst = dst[:n]
	if n < 2*parallelPages {
		return m.predictRange(dst, f, 0, n)
	}
	parts := make([]float64, (n+parallelPages-1)/parallelPages)
	eachRun(len(parts), m.o.Workers, func(c int) {
		parts[c] = m.predictRange(dst, f, c*parallelPages, min((c+1)*parallelPages, n))
	})
	var sum float64
	for _, s := range parts {
		sum += s
	}
	return sum
}

// predictRange is predictPages over the pages from lo to hi, lo a whole
// number of calm blocks.
//
//go:norace
func (m *Model) predictRange(dst []float32, f *fit, lo0, hi0 int) float64 {
	st := scoring{qKey: noQuietKey, j: runAbove(m.front, uint64(lo0))}
	n := hi0
	lo, j := lo0, st.j // pages from lo on are still to score; front[j] is the first run at or above the chunk
	for wi := lo0 / calmBlock; wi < (hi0+calmBlock-1)/calmBlock; wi++ {
		w := m.calm[wi]
		for ; w != 0 && !m.slow; w &= w - 1 {
			base := (wi*64 + bits.TrailingZeros64(w)) * quietChunk
			for j < len(m.front) && uint64(m.front[j].lo) < uint64(base) {
				j++
			}
			k, ok := quietKey(m.count, m.stay, m.front, j, base)
			if !ok {
				continue
			}
			if lo < base {
				m.scoreRange(dst[lo:], f, lo, base, &st)
			}
			from := base
			if k != st.qKey {
				// Scored apart, to learn what its move took off: added
				// in, it is as if scored with the others.
				one := scoring{j: st.j}
				m.scoreRange(dst[base:], f, base, base+1, &one)
				st.j = one.j
				st.block += one.block
				st.moved += one.moved
				st.qKey, st.qP, st.qMoved = k, dst[base], one.moved
				from++
			}
			for i := from; i < base+quietChunk; i++ {
				dst[i] = st.qP
				st.block += st.qP
				if st.qMoved != 0 {
					st.moved += st.qMoved
				}
			}
			if (base+quietChunk)&1023 == 0 {
				st.sum += float64(st.block)
				st.block = 0
			}
			lo = base + quietChunk
		}
	}
	m.scoreRange(dst[lo:], f, lo, n, &st)
	return st.sum + float64(st.block) + st.moved
}

// scoring is what predictPages carries from one range of pages to the
// next.
type scoring struct {
	j          int     // front[j] is the first run above the page
	sum, moved float64 // the probabilities summed, and what moves across the threshold took off them
	block      float32 // sums of 1024 pages, added to sum
	qKey       uint64  // the quiet pages' key (see quietKey) last scored
	qP         float32 // and their probability
	qMoved     float64 // and what its move took off
}

// scoreRange is predictPages's loop over the pages from lo to hi with the
// fit f; dst[i-lo] is page i's probability.
//
//go:norace
func (m *Model) scoreRange(dst []float32, f *fit, lo, hi int, st *scoring) {
	// The race detector is off in this loop over the model's own arrays
	// (see doc.go, Tests): PredictHorizon, which calls it, still reads
	// the fields Observe writes, so unguarded concurrent use is caught.
	var (
		z, zk, long, dz = &f.z, &f.zk, &f.long, &f.dz
		zOld, zNever    = f.z[codeOld], f.z[codeNever]
		wn, wr          = f.wNear, f.wNearRec
		lift            = f.lift && m.o.Threshold > 0
		up              = f.cut < m.zt
		cut, zt         = f.cut, m.zt
		hist            = m.hist[:hi]
		count           = m.count[:len(hist)]
		stay            = m.stay[:len(hist)]
		zl, zr, zrIdle  = &f.zl, f.zr, f.zrIdle
		now             = float32(m.now)
		near            = m.near[:len(hist)]
		nearRec         = m.nearRec[:len(hist)]
		wide            = m.wide[:len(hist)]
		ww              = f.wWide
		front           = m.front
		subs, zs        = m.sub, &f.zs
		wl              = f.wLate
		late            int // featLate's sum (see lateSum) at the page
		blend           = f.fitted
		h               = f.h
		alpha           = &f.alpha
		decide          = m.o.Threshold > 0
		pt              = float32(m.o.Threshold)
		pBelow          = m.pBelow
		pool            = &m.pool
		j               = st.j
		sum, moved      = st.sum, st.moved
		block           = st.block
	)
	dst = dst[:len(hist)-lo]
	if subs != nil && lo < len(hist) {
		late = m.lateSum(uint64(lo))
	}
	// i is unsigned so that the compiler knows it is within hist.
	for i := uint(lo); i < uint(len(hist)); i++ {
		hv := hist[i]
		c := count[i]
		var cls int
		lz := zl[lifeCode(hv, c, stay[i], now)]
		v := wn*float32(near[i]) + wr*float32(nearRec[i]) + ww*float32(wide[i]) + long[bits.OnesCount64(hv>>patternBits)]
		switch {
		case hv&patternMask != 0:
			v += lz + z[hv&patternMask] + zk[bits.TrailingZeros64(hv)] + zr[i>>regionShift]
			cls = classRecent - int(hv&1) // classLast if dirtied in the last epoch
			if subs != nil && hv&1 != 0 {
				v += zs[subs[i>>1]>>((i&1)<<2)&0xf]
			}
		case hv != 0:
			v += lz + zk[bits.TrailingZeros64(hv)] + zrIdle[i>>regionShift]
			cls = classOlder
		default:
			cls = classIdle
			zc := lz + zNever
			if c != 0 {
				zc = lz + zOld
			}
			for j < len(front) && uint64(front[j].lo) < uint64(i) {
				j++
			}
			if k := frontCode(front, j, uint64(i)); k != 0 {
				zc = z[k] // without the lifetime term: see setCodes
			}
			v += zc + zrIdle[i>>regionShift]
		}
		if hv != 0 {
			// The due feature: the gap between the last two writes.
			k := bits.TrailingZeros64(hv)
			if r := hv >> k >> 1; k > 0 && r != 0 {
				v += dz[k-bits.TrailingZeros64(r)+dueBias]
			}
		}
		if subs != nil {
			// featLate: the sum over the pages within lateReach, less
			// the page's own part, then the window moved on a page.
			own := m.lateOf(uint64(i))
			v += wl * float32(late-own)
			late += m.lateOf(uint64(i) + lateReach + 1)
			if i >= lateReach {
				late -= m.lateOf(uint64(i) - lateReach)
			}
		}
		raw := v
		if lift && (up && v >= cut || !up && v < cut) {
			// As lifted does.
			if up {
				v = max(v, zt+liftSlope*(v-cut))
			} else {
				v = min(v, zt-liftSlope*(cut-v))
			}
		}
		var p float32
		if blend {
			// The fitted probability blended with the chain's (see
			// fit.alpha), and kept on the side of the threshold the
			// logit, moved or not, puts the page.
			a := alpha[cls]
			var q float32
			if h == 1 {
				q = chainP(hv, c, stay[i], now, pool)
			} else {
				q = chainHorizon(hv, c, stay[i], now, pool, h)
			}
			b := a*sigmoid32(raw) + (1-a)*q
			switch {
			case !decide:
				p = b
			case v >= zt:
				p = max(b, pt)
			default:
				p = min(b, pBelow)
			}
			if p != b {
				moved += float64(b - p)
			}
		} else {
			p = sigmoid32(v)
			if v != raw {
				moved += float64(sigmoid32(raw) - p)
			}
		}
		dst[i-uint(lo)] = p
		block += p
		if i&1023 == 1023 {
			sum += float64(block)
			block = 0
		}
	}
	st.j, st.sum, st.moved, st.block = j, sum, moved, block
}

// StateBytes returns the bytes the model keeps in proportion to the
// guest: 15 a page (15.5 once parts are observed: see ObserveParts), a
// bit for each 8 pages (see Model.calm), 8 a 2 MiB
// region plus 8 a region for each horizon fitted, and 8 a run of pages
// first written in the last epoch (at most
// 4 a page, when every other page is one; on the nine real traces they
// numbered 0.8% of the pages at most, 0.06 bytes a page). Training
// samples and fitting scratch, bounded by Options.Samples and not by the
// page count, are not counted.
func (m *Model) StateBytes() uint64 {
	perPage := unsafe.Sizeof(m.hist[0]) + unsafe.Sizeof(m.count[0]) + unsafe.Sizeof(m.stay[0]) +
		unsafe.Sizeof(m.near[0]) + unsafe.Sizeof(m.nearRec[0]) + unsafe.Sizeof(m.wide[0])
	n := uint64(perPage)*m.pages + uint64(len(m.sub)) + 8*uint64(len(m.calm)) + 4*uint64(len(m.region)+len(m.regionRec)) + uint64(unsafe.Sizeof(frontRun{}))*uint64(len(m.front))
	for _, f := range m.horizons {
		n += 4 * uint64(len(f.zr)+len(f.zrIdle))
	}
	return n
}

// Expected returns the expected number of pages dirtied within the
// horizon of the last forecast (Predict or PredictHorizon): the sum of its
// probabilities as fitted, before Options.Threshold moved any across the
// threshold.
func (m *Model) Expected() float64 { return m.expected }

// Weights returns the weights of the one-epoch forecast's logistic
// regression, in the order FeatureNames names them.
func (m *Model) Weights() []float64 {
	return slices.Clone(m.horizons[0].w[:])
}

// Table returns the one-epoch forecast's code table: for each code, in
// the order CodeNames names them, the fitted probability that a page with
// it is dirtied in the next epoch.
func (m *Model) Table() []float64 {
	t := make([]float64, codes-1)
	for c := 1; c < codes; c++ {
		t[c-1] = sigmoid(m.horizons[0].table[c])
	}
	return t
}

// sigmoidTab holds the logistic function at sigmoidSteps points over
// [-sigmoidMax, sigmoidMax), each with the slope to the next.
const (
	sigmoidMax   = 16
	sigmoidSteps = 1 << 12 // a power of two: indices are masked, not checked
)

var sigmoidTab = func() (t [sigmoidSteps]struct{ v, d float32 }) {
	at := func(i int) float64 { return sigmoid(float64(i)*2*sigmoidMax/sigmoidSteps - sigmoidMax) }
	for i := range t {
		t[i].v = float32(at(i))
		t[i].d = float32(at(i+1) - at(i))
	}
	return t
}()

// sigmoid32 is the logistic function, interpolated from a table: within
// 1e-6 of the exact value on [-16, 16), σ(-16) below and σ(16) above.
func sigmoid32(z float32) float32 {
	x := (z + sigmoidMax) * (sigmoidSteps / (2 * sigmoidMax))
	if !(x > 0) { // also NaN
		x = 0
	}
	x = min(x, sigmoidSteps-1)
	i := int(x)
	e := sigmoidTab[i&(sigmoidSteps-1)]
	return e.v + (x-float32(i))*e.d
}

// logit is the inverse of sigmoid.
func logit(p float64) float64 { return math.Log(p / (1 - p)) }

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }
