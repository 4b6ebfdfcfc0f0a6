package predictor

import (
	"math"
	"slices"
)

// fit is the fitted forecast for one horizon.
type fit struct {
	h        int
	fitted   bool
	used     bool               // forecast since the last scheduled refit
	fittedAt uint32             // epochs observed at the last fit
	table    [codes]float64     // logit P(dirty within h | code)
	life     [lifeCodes]float64 // logit P(dirty within h | lifetime code)
	w        [3 + nFeat]float64 // intercept, table, life, features

	// The weights folded for Predict: z[code] = w0 + w1·table[code];
	// zk[k] adds, for a page last written k+1 epochs ago, its cohort
	// feature's contribution and, from k = 8 on, its code's; long[n]
	// that of featLong for n dirty epochs 9..64 ago; dz[δ+dueBias] that
	// of featDue; wNear and wNearRec weigh the fixed-point spatial
	// features.
	z               [codes]float32
	zk              [65]float32
	long            [65 - patternBits]float32
	dz              [2 * dueBias]float32
	wNear, wNearRec float32
	wLate           float32
	wWide           float32
	zl              [lifeCodes]float32 // w[2]·life
	zr, zrIdle      []float32          // per region: its features' contribution, page dirtied in the last 8 epochs or not

	// cut is the logit at and above which predicting dirty gives the
	// best F1 by the samples of the last fit; lift says whether Predict
	// moves it to the threshold, liftSeen what moving it did to the
	// epochs after each fit.
	cut      float32
	lift     bool
	liftSeen liftTally

	// alpha is, per page class, the fitted probability's share in the
	// forecast, the Markov chain's over the same horizon the rest (see
	// blendSeen);
	// blendTally the sums it is the ratio of.
	alpha      [pageClasses]float32
	blendTally [pageClasses][2]float64

	// subT is, for a page dirtied in the last epoch, the logit rate of
	// each in-epoch mask less their mean (see ObserveParts; 0 for mask
	// 0, unknown); zs its contribution, w[3+featSub]·subT.
	subT [1 << subParts]float64
	zs   [1 << subParts]float32
}

// coldStart sets the forecast used before the first fit: the page's
// recency-weighted dirtiness over the last 8 epochs, 0.001 for pages not
// dirtied in them, spread over the horizon as if epochs were independent.
func (f *fit) coldStart() {
	for c := range codes {
		p := 0.001
		if c < patterns {
			p = float64(recency[c])
		}
		p = 1 - math.Pow(1-p, float64(f.h))
		f.table[c] = logit(min(max(p, 0.001), 0.999))
	}
	clear(f.life[:])
	clear(f.subT[:])
	clear(f.w[:])
	f.alpha = [pageClasses]float32{1, 1, 1, 1}
	f.w[1], f.w[3+featFront] = 1, 1
}

// setCodes sets, in a sample's row x, the columns of its code c and
// lifetime code l: their table entries or, for a frontier code, its entry
// in its own column and nothing in theirs. Kept apart, the frontier's
// rates (up to 0.8 where the idle pages' are 0.001) would set the code's
// and the lifetime's weights for every page.
func (f *fit) setCodes(x []float32, c uint16, l, sub uint8) {
	x[3+featSub] = float32(f.subT[sub])
	if c >= codeAfter {
		x[1], x[2], x[3+featFront] = 0, 0, float32(f.table[c])
		return
	}
	x[1], x[2], x[3+featFront] = float32(f.table[c]), float32(f.life[l]), 0
}

// fold precomputes the weights' contributions for Predict, with the
// model's current cohort and region features.
func (f *fit) fold(m *Model) {
	cohort := &m.cohort
	w := &f.w
	for c := range lifeCodes {
		f.zl[c] = float32(w[2] * f.life[c])
	}
	if len(f.zr) != len(m.region) {
		f.zr, f.zrIdle = make([]float32, len(m.region)), make([]float32, len(m.region))
	}
	for r := range f.zr {
		f.zr[r] = float32(w[3+featRegion]*float64(m.region[r]) + w[3+featRegionRec]*float64(m.regionRec[r]))
		f.zrIdle[r] = float32(w[3+featRegionIdle]*float64(m.region[r]) + w[3+featRegionRecIdle]*float64(m.regionRec[r]))
	}
	for c := range codes {
		f.z[c] = float32(w[0] + w[1]*f.table[c])
		if c >= codeAfter {
			f.z[c] = float32(w[0] + w[3+featFront]*f.table[c])
		}
	}
	for k := range f.zk {
		var v float64
		switch {
		case k == 0:
			v = w[3+featCohortLast] * float64(cohort[0])
		case k < patternBits:
			v = w[3+featCohortNew] * float64(cohort[k])
		case k < 64:
			v = w[3+featCohortOld]*float64(cohort[k]) + float64(f.z[ageCode(k)])
		}
		f.zk[k] = float32(v)
	}
	for n := range f.long {
		f.long[n] = float32(w[3+featLong]*float64(longShare(n)) + w[3+featLongLogit]*float64(longLogit(n)))
	}
	for d := range f.dz {
		f.dz[d] = float32(w[3+featDue] * float64(dueOf(d-dueBias, f.h)))
	}
	for k := range f.zs {
		f.zs[k] = float32(w[3+featSub] * f.subT[k])
	}
	f.wNear = float32(w[3+featNear] / nearScale)
	f.wLate = float32(w[3+featLate] / (2 * lateReach))
	f.wNearRec = float32(w[3+featNearRec] / nearScale)
	f.wWide = float32(w[3+featWide] / nearScale)
}

// epochSamples are the pages sampled as one epoch closed, with the
// inputs their forecast for that epoch had.
type epochSamples struct {
	t      uint32 // the epoch
	page   []uint32
	code   []uint16
	life   []uint8
	sub    []uint8   // the page's in-epoch mask (see Model.subOf)
	feat   []float32 // nFeat a row
	weight []float32
	chain  []float32 // the Markov chain's one-epoch probability
	chain0 []float32 // and its rate from the clean state (see chainH)
}

// chainAt is the Markov chain's forecast over h epochs that sample j had
// (see chainH): what the blend's shares at horizon h are chosen against.
func (e *epochSamples) chainAt(j, h int) float32 {
	return chainH(e.chain[j], e.chain0[j], e.life[j]/lifeBuckets == classLast, h)
}

// sample keeps, to fit on, the inputs the forecast of the epoch being
// closed had, for a stratified sample of pages (see Options.Samples).
func (m *Model) sample(dirty []uint64) {
	s := &m.ring[m.now%keepEpochs]
	s.t = m.now
	s.page, s.code, s.life, s.sub, s.feat, s.weight, s.chain, s.chain0 = s.page[:0], s.code[:0], s.life[:0], s.sub[:0], s.feat[:0], s.weight[:0], s.chain[:0], s.chain0[:0]
	// Room for as many rows as the epoch before kept, and a quarter
	// more, made at once: grown by appending, each epoch's slices were
	// made again and again in the first 64 epochs.
	if want := len(m.ring[(m.now+keepEpochs-1)%keepEpochs].page) * 5 / 4; cap(s.page) < want {
		s.page, s.code, s.life, s.sub = make([]uint32, 0, want), make([]uint16, 0, want), make([]uint8, 0, want), make([]uint8, 0, want)
		s.feat, s.weight, s.chain, s.chain0 = make([]float32, 0, want*nFeat), make([]float32, 0, want), make([]float32, 0, want), make([]float32, 0, want)
	}
	now := float32(m.now)
	keep := func(p uint32, w float64) {
		x := m.features(uint64(p))
		s.page = append(s.page, p)
		s.code = append(s.code, m.code(uint64(p)))
		s.life = append(s.life, lifeCode(m.hist[p], m.count[p], m.stay[p], now))
		s.sub = append(s.sub, m.subOf(uint64(p)))
		s.feat = append(s.feat, x[:]...)
		s.weight = append(s.weight, float32(w))
		s.chain = append(s.chain, chainP(m.hist[p], m.count[p], m.stay[p], now, &m.pool))
		s.chain0 = append(s.chain0, chainClean(m.hist[p], m.count[p], m.stay[p], now, &m.pool))
	}
	// pick keeps k of list, drawn without replacement.
	pick := func(list []uint32, k int) {
		k = min(k, len(list))
		for i := range k { // a partial Fisher-Yates shuffle
			j := i + m.rng.IntN(len(list)-i)
			list[i], list[j] = list[j], list[i]
			keep(list[i], float64(len(list))/float64(k))
		}
	}
	// The pages not dirtied, by stratum.
	recent, older, edge, idle := m.strata(dirty)
	if len(dirty) <= 4*m.o.Samples {
		for _, p := range dirty {
			keep(uint32(p), 1)
		}
	} else {
		list := older[len(older):] // spare room
		for _, p := range dirty {
			list = append(list, uint32(p))
		}
		pick(list, 4*m.o.Samples)
	}
	pick(recent, m.o.Samples)
	pick(older, m.o.Samples/2)
	pick(edge, m.o.Samples/4) // few among the idle, and likelier to be written than the rest
	m.recent, m.older, m.edge = recent, older, edge
	// Idle pages by rejection, which is uniform among them: most pages
	// are idle in a sparse VM; in a dense one few tries are wasted on
	// few idle pages.
	want := uint64(max(m.o.Samples/4, 1))
	if idle == 0 {
		return
	}
	first := len(s.page)
	for try := uint64(0); try < 32*want && uint64(len(s.page)-first) < min(want, idle); try++ {
		p := m.rng.Uint64N(m.pages)
		if m.hist[p] != 0 {
			continue
		}
		if frontCode(m.front, runAbove(m.front, p), p) != 0 {
			continue // in edge
		}
		if _, found := slices.BinarySearch(dirty, p); !found {
			keep(uint32(p), 0)
		}
	}
	w := float32(float64(idle) / float64(len(s.page)-first))
	for i := first; i < len(s.page); i++ {
		s.weight[i] = w
	}
}

// strata lists the pages not in dirty that were dirtied in the last 8
// epochs (recent), those dirtied before (older), those never dirtied in
// 64 epochs within frontReach of a run of the frontier (edge), in
// address order, and counts the others. The chunks calm marks (see
// Model.neighbours) are counted at once where no run of the frontier is
// near. Each of the model's spans goes at once.
func (m *Model) strata(dirty []uint64) (recent, older, edge []uint32, idle uint64) {
	calm := m.calmBlocks()
	if len(m.spans) == 1 {
		l := strataLists{recent: m.recent[:0], older: m.older[:0], edge: m.edge[:0]}
		l.walk(m.hist, dirty, m.front, calm, 0, len(m.hist))
		return l.recent, l.older, l.edge, l.idle
	}
	m.eachSpan(func(i, lo, hi int) {
		l := &m.spanLists[i]
		l.recent, l.older, l.edge, l.idle = l.recent[:0], l.older[:0], l.edge[:0], 0
		l.walk(m.hist, dirty, m.front, calm, lo, hi)
	})
	recent, older, edge = m.recent[:0], m.older[:0], m.edge[:0]
	for _, l := range m.spanLists {
		recent, older, edge = append(recent, l.recent...), append(older, l.older...), append(edge, l.edge...)
		idle += l.idle
	}
	return recent, older, edge, idle
}

// strataLists are strata's lists over some pages.
type strataLists struct {
	recent, older, edge []uint32
	idle                uint64
}

// walk appends to l the strata of the pages from lo to hi, a whole
// number of calm blocks from lo (calm nil: none calm).
//
//go:norace
func (l *strataLists) walk(hist, dirty []uint64, front []frontRun, calm []uint64, lo0, hi0 int) {
	d, _ := slices.BinarySearch(dirty, uint64(lo0))
	st := strataWalk{hist: hist, dirty: dirty, front: front, d: d, j: runAbove(front, uint64(lo0)),
		recent: l.recent, older: l.older, edge: l.edge, idle: l.idle}
	for b := lo0; b < hi0; b += calmBlock {
		e := min(b+calmBlock, hi0)
		pos := b // the pages before pos are sorted
		for lo, hi := liveSpan(calm, b, b, e); ; lo, hi = liveSpan(calm, b, hi, e) {
			if pos < lo {
				st.calm(pos, lo)
			}
			if lo >= hi {
				break
			}
			st.pages(lo, hi)
			pos = hi
		}
	}
	l.recent, l.older, l.edge, l.idle = st.recent, st.older, st.edge, st.idle
}

// strataWalk is strata's walk over the pages.
type strataWalk struct {
	hist, dirty         []uint64
	front               []frontRun
	d, j                int // dirty[d] and front[j]: the first at or above the next page
	recent, older, edge []uint32
	idle                uint64
}

// calm sorts the pages from lo to hi, calm chunks, the pages before lo
// sorted: all idle but for those in dirty, unless within reach of the
// frontier (then chunk by chunk).
//
//go:norace
func (st *strataWalk) calm(lo, hi int) {
	if st.idleBlock(lo, hi) {
		return
	}
	for c := lo; c < hi; c += quietChunk {
		if !st.idleBlock(c, c+quietChunk) {
			st.pages(c, c+quietChunk)
		}
	}
}

// idleBlock counts the pages from lo to hi, all calm, as idle but for
// those in dirty, if none is within reach of the frontier, and reports
// whether it did.
//
//go:norace
func (st *strataWalk) idleBlock(lo, hi int) bool {
	for st.j < len(st.front) && uint64(st.front[st.j].lo) < uint64(lo) {
		st.j++
	}
	if !frontFree(st.front, st.j, uint64(lo), uint64(hi-1)) {
		return false
	}
	n := hi - lo
	for st.d < len(st.dirty) && st.dirty[st.d] < uint64(hi) {
		st.d++
		n--
	}
	st.idle += uint64(n)
	return true
}

// pages sorts the pages from lo to hi, the pages before lo sorted.
//
//go:norace
func (st *strataWalk) pages(lo, hi int) {
	hist, dirty, front := st.hist, st.dirty, st.front
	d, j := st.d, st.j
	recent, older, edge, idle := st.recent, st.older, st.edge, st.idle
	for k, h := range hist[lo:hi] {
		p := lo + k
		if d < len(dirty) && dirty[d] == uint64(p) {
			d++
			continue
		}
		switch {
		case h&patternMask != 0:
			recent = append(recent, uint32(p))
		case h != 0:
			older = append(older, uint32(p))
		default:
			for j < len(front) && uint64(front[j].lo) < uint64(p) {
				j++
			}
			if frontCode(front, j, uint64(p)) != 0 {
				edge = append(edge, uint32(p))
			} else {
				idle++
			}
		}
	}
	st.d, st.j = d, j
	st.recent, st.older, st.edge, st.idle = recent, older, edge, idle
}

// Refitting and decision tuning.
const (
	// ridge is the L2 penalty on the weights, per unit of sample weight.
	ridge = 1e-4
	// tablePrior is how many (weighted) pairs' worth of the mean rate a
	// code's rate is shrunk towards.
	tablePrior = 2
	// minLiftGain is the least F1 gain the last fit's cut must have had,
	// on the epochs since, for Predict to use the new one.
	minLiftGain = 0.01
	// minCutP is the lowest cut, minCut its logit: the F1-best cut of
	// calibrated probabilities is half the best F1, and a forecast whose
	// F1 is below 2·minCutP is too poor to gain from moving it.
	minCutP = 0.1
	minCut  = -2.1972245773362196 // logit(minCutP)
	// cutBuckets of 1/32 logit from cutLo: where cuts are looked for.
	cutBuckets = 768
	cutLo      = -12
	cutStep    = 1.0 / 32
	// liftSlope is the slope, in logits, of the forecast between a cut
	// and the threshold once moved: their order is kept.
	liftSlope = 1.0 / 16
)

// refit refits one horizon on the samples whose outcome is known: the
// code table, then the weights, then the F1-best cut. Before, it checks on
// the samples that came since the last fit whether that fit's cut beat
// the plain threshold: only then does Predict use the new one. The race
// detector is off in it and the three below, which loop over the model's
// own samples (see doc.go, Tests); Observe, which calls them, is not.
//
//go:norace
func (m *Model) refit(f *fit) {
	h := uint32(f.h)
	s := &m.scratch
	s.d = 3 + nFeat
	s.reset()
	rows := 0
	for i := range m.ring {
		rows += len(m.ring[i].page)
	}
	// Grown once to the most rows there can be, not by doubling.
	s.x, s.y, s.c = slices.Grow(s.x, rows*s.d), slices.Grow(s.y, rows), slices.Grow(s.c, rows)
	cs := slices.Grow(m.codeScratch[:0], rows)
	ls := slices.Grow(m.lifeScratch[:0], rows)
	qs := slices.Grow(m.chainScratch[:0], rows)
	ss := slices.Grow(m.subScratch[:0], rows)
	fresh := 0 // rows from fresh on are from epochs since the last fit
	// Rows from unseen on were not in the last fit: their outcomes were
	// not all known when it was made. The blend's shares are chosen on
	// them. (On those since the fit alone, as the cut's test, a horizon
	// past RefitEvery had none, and its forecast was never blended; walk
	// 124.) At a horizon past 1 their outcomes overlap those of rows the
	// fit had, by up to h-1 epochs, which may favour the fit's share
	// (walk 126); chosen on the rows since the fit, as first built (and
	// so never past RefitEvery), horizon 8's Brier ratios were better on
	// two of the nine real traces (perl, gcc) and worse on five, and the
	// regimes' downtime worse on three of the four where pre-copy is
	// capped.
	unseen := 0
	x := make([]float32, 3+nFeat)
	for i := range uint32(keepEpochs) {
		e := &m.ring[(m.now+i)%keepEpochs] // oldest first
		if len(e.page) == 0 || e.t+h > m.now || m.now-e.t > keepEpochs {
			continue
		}
		if e.t < f.fittedAt {
			fresh = s.len() + len(e.page)
		}
		if e.t+h <= f.fittedAt {
			unseen = s.len() + len(e.page)
		}
		// Epochs e.t .. e.t+h-1 are bits now-1-e.t down to now-e.t-h.
		mask := (uint64(1)<<h - 1) << (m.now - e.t - h)
		for j, p := range e.page {
			x[0] = 1
			for k := range nFeat {
				x[3+k] = e.feat[j*nFeat+k]
			}
			x[3+featDue] = dueOf(int(e.feat[j*nFeat+featDue]), f.h)
			s.add(x, m.hist[p]&mask != 0, float64(e.weight[j]))
			cs = append(cs, e.code[j])
			ls = append(ls, e.life[j])
			ss = append(ss, e.sub[j])
			qs = append(qs, e.chainAt(j, f.h))
		}
	}
	m.codeScratch, m.lifeScratch, m.chainScratch, m.subScratch = cs, ls, qs, ss
	if s.len() < 64 {
		return
	}

	// Out of sample: did the last fit's cut help since, and what share
	// of the chain's forecast would have?
	if f.fitted && unseen < s.len() {
		for i := unseen; i < s.len(); i++ {
			f.setCodes(s.x[i*s.d:], cs[i], ls[i], ss[i])
		}
		if fresh < s.len() {
			tail := &samples{d: s.d, x: s.x[fresh*s.d:], y: s.y[fresh:], c: s.c[fresh:]}
			f.lift = f.liftSeen.helps(tail, f.w[:], f.cut, m.zt)
		}
		tail := &samples{d: s.d, x: s.x[unseen*s.d:], y: s.y[unseen:], c: s.c[unseen:]}
		f.blendSeen(tail, ls[unseen:], m.chainScratch[unseen:])
	}

	// The table: each code's rate, shrunk towards the mean.
	var n, pos [codes]float64
	var all, allPos float64
	for i, c := range cs {
		n[c] += s.c[i]
		pos[c] += s.c[i] * s.y[i]
	}
	for c := range codes {
		all += n[c]
		allPos += pos[c]
	}
	if allPos == 0 {
		return
	}
	mean := allPos / all
	for c := range codes {
		p := (pos[c] + tablePrior*mean) / (n[c] + tablePrior)
		f.table[c] = logit(min(max(p, 1e-6), 1-1e-6))
	}
	var ln, lpos [lifeCodes]float64
	for i, c := range ls {
		if cs[i] < codeAfter { // see setCodes
			ln[c] += s.c[i]
			lpos[c] += s.c[i] * s.y[i]
		}
	}
	for c := range lifeCodes {
		p := (lpos[c] + tablePrior*mean) / (ln[c] + tablePrior)
		f.life[c] = logit(min(max(p, 1e-6), 1-1e-6))
	}
	f.subTable(s, ss)
	for i, c := range cs {
		f.setCodes(s.x[i*s.d:], c, ls[i], ss[i])
	}

	if !f.fitted {
		clear(f.w[:])
		f.w[1], f.w[3+featFront] = 1, 1
	}
	fitLogistic(s, f.w[:], ridge, m.o.Workers)
	f.fitted, f.fittedAt = true, m.now
	f.cut = bestCut(s, f.w[:], m.zt)
}

// subTable sets subT from the samples' in-epoch masks ss (see
// ObserveParts): each mask's rate among the pages dirtied in the last
// epoch, shrunk towards their mean, as a logit less the mean's. Without
// masks it stays 0, and so does the feature.
func (f *fit) subTable(s *samples, ss []uint8) {
	var n, pos [1 << subParts]float64
	var all, allPos float64
	for i, k := range ss {
		if k != 0 {
			n[k] += s.c[i]
			pos[k] += s.c[i] * s.y[i]
			all += s.c[i]
			allPos += s.c[i] * s.y[i]
		}
	}
	clear(f.subT[:])
	if all == 0 {
		return
	}
	mean := min(max(allPos/all, 1e-6), 1-1e-6)
	for k := 1; k < len(n); k++ {
		p := (pos[k] + tablePrior*mean) / (n[k] + tablePrior)
		f.subT[k] = logit(min(max(p, 1e-6), 1-1e-6)) - logit(mean)
	}
}

// liftTally counts what moving a fit's cut to the threshold did to the
// samples of the epochs after the fit, over the fits so far, each fit's
// samples weighing liftMemory times those of the next: true and predicted
// positives at the threshold and at the cut, positives, and the squared
// errors without the move and with it.
type liftTally struct {
	tp, pp, tpCut, ppCut, pos, sq, sqCut float64
}

// liftMemory is the weight of the tally so far against the samples after
// the latest fit: the decision follows what moving did over about the
// last two fits, not one (at horizon 8 the epochs after a fit whose
// outcome is known are 8, too few to decide on alone).
const liftMemory = 0.5

// helps adds to the tally the samples, scored with weights w, and
// reports whether, over the tally, moving the forecasts from cut to the
// threshold's logit zt gives an F1 of at least 2·minCutP, better by
// minLiftGain or more and by a larger share than it makes the Brier score
// worse.
//
//go:norace
func (t *liftTally) helps(s *samples, w []float64, cut, zt float32) bool {
	var n liftTally
	for i := range s.len() {
		c, y := s.c[i], s.y[i]
		z := float32(dot(s.x[i*s.d:(i+1)*s.d], w))
		n.pos += c * y
		p := float64(sigmoid32(z))
		n.sq += c * (p - y) * (p - y)
		if z >= zt {
			n.pp += c
			n.tp += c * y
		}
		if z = lifted(z, cut, zt); z >= zt {
			n.ppCut += c
			n.tpCut += c * y
		}
		p = float64(sigmoid32(z))
		n.sqCut += c * (p - y) * (p - y)
	}
	if n.pos == 0 || n.sq == 0 {
		return false
	}
	// Each fit's samples count as much as another's, whatever their
	// number of positives.
	k := 1 / n.pos
	t.tp = liftMemory*t.tp + k*n.tp
	t.pp = liftMemory*t.pp + k*n.pp
	t.tpCut = liftMemory*t.tpCut + k*n.tpCut
	t.ppCut = liftMemory*t.ppCut + k*n.ppCut
	t.pos = liftMemory*t.pos + k*n.pos
	t.sq = liftMemory*t.sq + k*n.sq
	t.sqCut = liftMemory*t.sqCut + k*n.sqCut
	f1, f1Cut := 2*t.tp/(t.pp+t.pos), 2*t.tpCut/(t.ppCut+t.pos)
	if f1Cut < 2*minCutP || f1Cut-f1 < minLiftGain {
		return false
	}
	return f1 == 0 || f1Cut/f1-1 > t.sqCut/t.sq-1
}

// lifted moves logit z as Predict does when the F1-best cut is cut and
// the threshold's logit zt.
func lifted(z, cut, zt float32) float32 {
	if cut < zt && z >= cut {
		return max(z, zt+liftSlope*(z-cut))
	}
	if cut > zt && z < cut {
		return min(z, zt-liftSlope*(cut-z))
	}
	return z
}

// bestCut returns the logit, at least minCut, at and above which
// predicting dirty gives the samples, scored with weights w, their best
// F1 (below zt: as half that F1 puts it); zt, the threshold's, if no
// other cut beats it.
//
//go:norace
func bestCut(s *samples, w []float64, zt float32) float32 {
	var n, pos [cutBuckets]float64
	var allPos, tpAt, ppAt float64
	for i := range s.len() {
		z := dot(s.x[i*s.d:(i+1)*s.d], w)
		b := min(max(int((z-cutLo)/cutStep), 0), cutBuckets-1)
		c, y := s.c[i], s.y[i]
		n[b] += c
		pos[b] += c * y
		allPos += c * y
		if z >= float64(zt) {
			ppAt += c
			tpAt += c * y
		}
	}
	if allPos == 0 {
		return zt
	}
	best, bestF1 := zt, 2*tpAt/(ppAt+allPos)
	var tp, pp float64
	for b := cutBuckets - 1; b >= 0; b-- {
		lo := cutLo + float64(b)*cutStep
		if lo < minCut {
			break
		}
		tp += pos[b]
		pp += n[b]
		if f1 := 2 * tp / (pp + allPos); f1 > bestF1 {
			best, bestF1 = float32(lo), f1
		}
	}
	if best >= zt {
		return best
	}
	// For calibrated probabilities the F1-best cut is half the best F1.
	// F1 is flat around its best, so the cut where the samples peak is
	// noisy; the peak's height is not.
	return float32(max(logit(bestF1/2), minCut))
}

// blendSeen adds to the blend's tally the samples the last fit did not
// have (see refit's unseen; lifetime codes ls, which hold the page class, and the chain's
// probabilities q of a write within the fit's horizon), scored with its
// weights, and
// sets alpha: per page class, the share a of the fitted probability p in
// a·p + (1-a)·q that gives them, and those after the fits before
// (weighing blendMemory times less each fit back), the least squared
// error, from 0 to 1. Out of sample, as the weights were fitted on
// epochs before. The fit describes the last 64 epochs, the chain every
// epoch of each page, and where a program's phases change what the
// features mean the two err apart: on perl the fitted model's Brier
// score at horizon 1 was 0.985 of the chain's, the blend's is 0.932.
// At longer horizons too: on steady loops (busybox sort and gzip) the
// fit's Brier score at horizon 8 was 1.144 and 1.104 of the chain's, the
// blend's is 1.041 and 1.035 (see docs/predictor.md).
//
//go:norace
func (f *fit) blendSeen(s *samples, ls []uint8, q []float32) {
	var n [pageClasses][2]float64
	for i := range s.len() {
		p := float64(sigmoid32(float32(dot(s.x[i*s.d:(i+1)*s.d], f.w[:]))))
		d := p - float64(q[i])
		k := int(ls[i]) / lifeBuckets // see lifeCode
		n[k][0] += s.c[i] * (s.y[i] - float64(q[i])) * d
		n[k][1] += s.c[i] * d * d
	}
	for k := range n {
		t := &f.blendTally[k]
		t[0] = blendMemory*t[0] + n[k][0]
		t[1] = blendMemory*t[1] + n[k][1]
		if t[1] > 0 {
			f.alpha[k] = float32(min(max(t[0]/t[1], 0), 1))
		}
	}
}

// blendMemory is the weight of the blend's tally so far against the
// samples after the latest fit: the shares follow about the last four
// fits (on the dev traces, 0.5 had perl's horizon-1 Brier ratio 0.951
// and xz's 0.883, 0.75 0.932 and 0.881, 0.875 0.929 and 0.879 with tar's
// 0.768 as before the blend).
const blendMemory = 0.75

// chainP is the Markov baseline's one-epoch probability for a page with
// history hist, dirtied in count epochs, stay of them right after a dirty
// one, after now epochs: its own transition rate from its state, smoothed
// with markovPrior transitions at pool's (from clean, from dirty).
//
//go:norace
func chainP(hist uint64, count, stay uint16, now float32, pool *[2]float32) float32 {
	// Without a branch: whether the page was dirtied in the last epoch
	// is as good as random to the processor.
	d, s, st := float32(count), float32(stay), float32(hist&1)
	num := st*(s+markovPrior*pool[1]) + (1-st)*(d-s+markovPrior*pool[0])
	den := st*(d-1+markovPrior) + (1-st)*(now-d+markovPrior)
	return num / den
}

// chainClean is the Markov baseline's rate from the clean state for a
// page as chainP's: for a page dirtied in the last epoch, whose last
// epoch has made no transition yet, over now-count+1 clean epochs.
//
//go:norace
func chainClean(hist uint64, count, stay uint16, now float32, pool *[2]float32) float32 {
	d, s := float32(count), float32(stay)
	return (d - s + markovPrior*pool[0]) / (now - d + float32(hist&1) + markovPrior)
}

// chainHorizon is chainH for a page as chainP's, from its counts: the
// clean state's rate divided out once, not for chainP and chainClean
// both, as Predict scores every page.
//
//go:norace
func chainHorizon(hist uint64, count, stay uint16, now float32, pool *[2]float32, h int) float32 {
	d, s, st := float32(count), float32(stay), float32(hist&1)
	clean := powInt(1-(d-s+markovPrior*pool[0])/(now-d+st+markovPrior), h-int(hist&1))
	if hist&1 != 0 {
		clean *= 1 - (s+markovPrior*pool[1])/(d-1+markovPrior)
	}
	return 1 - clean
}

// chainH is the Markov baseline's probability of a write within the next
// h epochs for a page whose one-epoch probability is q and whose rate
// from the clean state is q0, dirtied in the last epoch or not: the
// chain's own h-step forecast, what NewMarkov's PredictHorizon gives.
//
//go:norace
func chainH(q, q0 float32, last bool, h int) float32 {
	if h <= 1 {
		return q
	}
	if last {
		return 1 - (1-q)*powInt(1-q0, h-1)
	}
	return 1 - powInt(1-q0, h)
}
