package predictor

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// patternBits is how many recent epochs a page's pattern code covers.
const (
	patternBits = 8
	patterns    = 1 << patternBits
	patternMask = patterns - 1
)

// Temporal codes: a page's recent history as one of codes values. A page
// dirtied in the last 8 epochs has its pattern over them, 1..255 (bit 0
// the last epoch); the others have how long ago their last write was,
// and a page not written in the last 64 epochs that lies within
// frontReach pages of one first written in the last epoch (not written in
// the 64 before) has instead how far from it, after or before, and, after
// it, how long the run of consecutive first writes it ends is: a program
// takes fresh memory in address order, about as much an epoch as the
// last, and the pages just past what it took last epoch are the likeliest
// to be taken next.
const (
	codeAge16 = patterns + iota // last write 9..16 epochs ago
	codeAge32                   // 17..32
	codeAge64                   // 33..64
	codeOld                     // longer ago
	codeNever                   // never written
	codeAfter                   // + b·runBuckets + r: 2^(b-1) < d <= 2^b pages after the nearest first write below it, b = 0..frontBuckets-1, which ends a run of first writes of run class r
)

const (
	frontBuckets = 11
	frontReach   = 1 << (frontBuckets - 1)             // 1024 pages, 4 MiB of 4 KiB pages
	runBuckets   = 5                                   // runs of 1-2, 3-4, 5-16, 17-64, more first writes
	codeBefore   = codeAfter + frontBuckets*runBuckets // + b: as codeAfter, before the nearest first write above it (and none within reach below)
	codes        = codeBefore + frontBuckets
)

// runClass is the class of a run of n consecutive first writes.
func runClass(n int) uint8 {
	switch {
	case n <= 2:
		return 0
	case n <= 4:
		return 1
	case n <= 16:
		return 2
	case n <= 64:
		return 3
	}
	return 4
}

// CodeNames names the codes of Model.Table, in order: the patterns 1..255
// (bit 0 the last epoch), then the ages.
func CodeNames() []string {
	names := make([]string, 0, codes-1)
	for c := 1; c < patterns; c++ {
		// Oldest epoch first, as a timeline reads.
		b := make([]byte, patternBits)
		for k := range patternBits {
			b[patternBits-1-k] = ".x"[c>>k&1]
		}
		names = append(names, "pattern "+string(b))
	}
	names = append(names, "last write 9-16 epochs ago", "last write 17-32 epochs ago",
		"last write 33-64 epochs ago", "last write over 64 epochs ago", "never written")
	span := func(b int) string {
		if lo := 1<<max(b-1, 0) + 1; lo < 1<<b {
			return fmt.Sprintf("%d-%d", lo, 1<<b)
		}
		return fmt.Sprint(1 << b)
	}
	for b := range frontBuckets {
		for _, run := range []string{"1-2", "3-4", "5-16", "17-64", "over 64"} {
			names = append(names, fmt.Sprintf("not written in 64 epochs, %s pages after the nearest first write of the last epoch, which ends a run of %s", span(b), run))
		}
	}
	for b := range frontBuckets {
		names = append(names, fmt.Sprintf("not written in 64 epochs, %s pages before the nearest first write of the last epoch", span(b)))
	}
	return names
}

// codeOf returns the code of a page with history hist that was dirtied in
// count epochs in all.
func codeOf(hist uint64, count uint16) uint16 {
	if p := hist & patternMask; p != 0 {
		return uint16(p)
	}
	if hist != 0 {
		return ageCode(bits.TrailingZeros64(hist))
	}
	if count != 0 {
		return codeOld
	}
	return codeNever
}

// frontRun is a run of n consecutive pages from lo first written in the
// last epoch.
type frontRun struct{ lo, n uint32 }

// firstWrites appends to front the runs of the pages of dirty (ascending)
// not written in the 64 epochs before (hist, before dirty is recorded).
// The race detector is off in it: Observe calls it for every page
// dirtied.
//
//go:norace
func firstWrites(hist, dirty []uint64, front []frontRun) []frontRun {
	for _, p := range dirty {
		if hist[p] != 0 {
			continue
		}
		if k := len(front) - 1; k >= 0 && uint64(front[k].lo)+uint64(front[k].n) == p {
			front[k].n++
		} else {
			front = append(front, frontRun{uint32(p), 1})
		}
	}
	return front
}

// runAbove returns the index of the first run of front that starts above
// page p.
func runAbove(front []frontRun, p uint64) int {
	i, _ := slices.BinarySearchFunc(front, p, func(r frontRun, p uint64) int {
		return cmp.Compare(uint64(r.lo), p)
	})
	return i
}

// frontCode returns the frontier code (see codeAfter and codeBefore) of
// a page p not written in the last 64 epochs (so in no run of front), or
// 0 if no run of front is within frontReach of it; i is the index of the
// first run above p. The race detector is off in it, as in Predict's
// loop, which calls it for every idle page.
//
//go:norace
func frontCode(front []frontRun, i int, p uint64) uint16 {
	if i > 0 {
		r := front[i-1]
		if d := p - (uint64(r.lo) + uint64(r.n) - 1); d <= frontReach {
			return codeAfter + uint16(bits.Len64(d-1))*runBuckets + uint16(runClass(int(r.n)))
		}
	}
	if i < len(front) {
		if d := uint64(front[i].lo) - p; d <= frontReach {
			return codeBefore + uint16(bits.Len64(d-1))
		}
	}
	return 0
}

// code returns page p's code, as Predict computes it.
func (m *Model) code(p uint64) uint16 {
	h := m.hist[p]
	if h == 0 {
		if c := frontCode(m.front, runAbove(m.front, p), p); c != 0 {
			return c
		}
	}
	return codeOf(h, m.count[p])
}

// ageCode is the code of a page last written k+1 epochs ago, k >= 8.
func ageCode(k int) uint16 {
	switch {
	case k < 16:
		return codeAge16
	case k < 32:
		return codeAge32
	case k < 64:
		return codeAge64
	}
	return codeOld
}

// Features besides the code, in samples and weights.
const (
	featLong          = iota // share of epochs 9..64 ago the page was dirtied in
	featLongLogit            // its logit
	featDue                  // the interval between its last two writes comes round (features holds δ, see dueOf)
	featNear                 // share of neighbours dirtied in the last epoch
	featNearRec              // neighbours' recency-weighted dirtiness
	featWide                 // share of the wide neighbourhood dirtied in the last epoch
	featCohortNew            // cohort rewrite rate, last write 2..8 epochs ago
	featCohortOld            // cohort rewrite rate, last write 9..64 epochs ago
	featCohortLast           // for a page dirtied in the last epoch: share of the epoch before's pages rewritten in it
	featRegion               // share of its 2 MiB region dirtied in the last epoch, page dirtied in the last 8
	featRegionRec            // share of its region dirtied in the last 8 epochs, the same
	featRegionIdle           // featRegion, page not dirtied in the last 8 epochs
	featRegionRecIdle        // featRegionRec, the same
	featFront                // for a frontier code (see codeAfter), its table entry; 0 in samples and for other codes
	featSub                  // for a page dirtied in the last epoch, its in-epoch mask's table entry (see ObserveParts); 0 in samples and without parts
	featLate                 // of its 16 nearest neighbours, those dirtied in the last part of the last epoch less those dirtied in it earlier only, over 16 (see ObserveParts); 0 without parts
	nFeat
)

// Lifetime codes: a page's transition rate over all the epochs observed,
// what a per-page Markov chain learns (the history register forgets after
// 64 epochs): for a page dirtied in the last epoch the share of its dirty
// epochs that followed a dirty one, for the others the share of its clean
// epochs that were followed by a dirty one; lifeBuckets steps of the rate's
// square root (small rates matter) for each page class (see classOf), in
// class order: what a rate says depends on how long ago the page was
// last written.
const (
	lifeBuckets = 32
	lifeCodes   = pageClasses * lifeBuckets
)

// lifeCode returns the lifetime code of a page with history hist, dirtied
// in count epochs, stay of them right after a dirty one, after now epochs.
// The race detector is off in it, as in Predict's loop, which calls it for
// every page.
//
//go:norace
func lifeCode(hist uint64, count, stay uint16, now float32) uint8 {
	var r float32
	if hist&1 != 0 {
		if count > 1 {
			r = float32(stay) / float32(count-1)
		}
	} else if clean := now - float32(count); clean > 0 {
		r = float32(count-stay) / clean
	}
	b := int(float32(math.Sqrt(float64(min(max(r, 0), 1)))) * (lifeBuckets - 0.001))
	return uint8(b + lifeBuckets*classOf(hist))
}

// Page classes, by the age of the last write, for the lifetime codes.
const (
	classLast   = iota // dirtied in the last epoch
	classRecent        // in the 7 before, not in the last
	classOlder         // last written 9 to 64 epochs ago
	classIdle          // longer ago, or never
	pageClasses
)

// classOf returns the class of a page with history hist.
func classOf(hist uint64) int {
	switch {
	case hist&1 != 0:
		return classLast
	case hist&patternMask != 0:
		return classRecent
	case hist != 0:
		return classOlder
	}
	return classIdle
}

// regionShift: a region is 1<<regionShift pages (2 MiB of 4 KiB pages).
const regionShift = 9

// FeatureNames names the model's weights, in the order Model.Weights
// returns them.
func FeatureNames() []string {
	return []string{
		"intercept",
		"temporal: logit P(dirty | code), code = pattern over the last 8 epochs, or age of the last write",
		"temporal: logit P(dirty | lifetime code), the page's transition rate over all epochs, by the age of its last write",
		"temporal: share of epochs 9-64 ago it was dirtied in",
		"temporal: logit of that share, smoothed",
		"temporal: the interval between its last two writes comes round",
		"spatial: share of neighbours dirtied in the last epoch",
		"spatial: neighbours' recency-weighted dirtiness over the last 8 epochs",
		"spatial: share of the pages 8 windows each side (64 pages by default) dirtied in the last epoch",
		"cohort: log(1+100 × share of its cohort rewritten in the last epoch), last write 2-8 epochs ago",
		"cohort: the same, last write 9-64 epochs ago",
		"cohort: dirtied in the last epoch: log(1+100 × share of the pages dirtied the epoch before that were dirtied again in it)",
		"spatial: share of its 2 MiB region dirtied in the last epoch, page dirtied in the last 8 epochs",
		"spatial: share of its 2 MiB region dirtied in the last 8 epochs, page dirtied in the last 8 epochs",
		"spatial: share of its 2 MiB region dirtied in the last epoch, page not dirtied in the last 8 epochs",
		"spatial: share of its 2 MiB region dirtied in the last 8 epochs, page not dirtied in the last 8 epochs",
		"spatial: logit P(dirty | frontier code), for a page not written in 64 epochs within 1024 pages of one first written in the last epoch (the code's own weight)",
		"temporal: dirtied in the last epoch: logit P(dirty | which parts of the epoch it was written in), less their mean (0 without parts: see ObserveParts)",
		"spatial: of its 16 nearest neighbours, those dirtied in the last part of the last epoch less those dirtied in it earlier only, over 16 (0 without parts)",
	}
}

// longShare is the share of the epochs 9..64 ago a page dirtied in n of
// them was dirtied in; longLogit the logit of that share, smoothed.
func longShare(n int) float32 {
	return float32(n) / (64 - patternBits)
}

func longLogit(n int) float32 {
	return float32(logit((float64(n) + 0.5) / (64 - patternBits + 1)))
}

// dueBias offsets δ, the epochs by which a page's next write is overdue
// if it repeats the interval between its last two (-62..62), as an index.
const dueBias = 64

// dueOf is the due feature at horizon h: 1 when the interval between a
// page's last two writes says the next is within the next h epochs (δ
// from 1-h to 1: intervals are counted in whole epochs and writes drift;
// at h = 1 it is 0.75 at δ 0 and 1), falling to 0 two epochs either side.
func dueOf(delta, h int) float32 {
	lo, hi := float64(1-h), 1.0
	c, half := (lo+hi)/2, (hi-lo)/2
	return float32(max(0, 1-max(0, math.Abs(float64(delta)-c)-half+0.5)/2))
}

// noDue is the δ features give a page that has none (dirtied in the last
// epoch, or fewer than two writes in the history): its due feature is 0
// at every horizon.
const noDue = 1 << 10

// dueDelta returns δ for a history, and false if the page was dirtied in
// the last epoch or has fewer than two writes in the history.
func dueDelta(hist uint64) (int, bool) {
	k := bits.TrailingZeros64(hist) // last write k+1 epochs ago
	if k == 0 || k >= 63 {
		return 0, false
	}
	r := hist >> k >> 1
	if r == 0 {
		return 0, false
	}
	// The write before was k2 = k+1+tz(r) bits back: the interval is
	// k2-k, due at k+1 = k2-k, so δ = 2k+1-k2.
	return k - bits.TrailingZeros64(r), true
}

// recency is a page's recency-weighted dirtiness over the last 8 epochs,
// by its pattern: Σ 2^-k·bit_k, normalised to [0, 1]; recencyQ is the
// same in units of 1/recencyOne.
var recency, recencyQ = func() (t [patterns]float32, q [patterns]int32) {
	for p := range patterns {
		var s, n float64
		for k := range patternBits {
			w := math.Ldexp(1, -k)
			n += w
			if p>>k&1 == 1 {
				s += w
			}
		}
		t[p] = float32(s / n)
		q[p] = int32(math.Round(s / n * recencyOne))
	}
	return t, q
}()

const (
	// recencyOne is the fixed-point unit of recencyQ.
	recencyOne = 1 << 12
	// nearScale is the fixed-point unit of the neighbour features, a
	// byte each.
	nearScale = 255
)

// wideFactor: the wide neighbourhood is wideFactor times the window.
const wideFactor = 8

// neighbours computes the spatial features of every page from the
// histories: sliding windows over the pages' last-epoch bits and recency
// scores, Window pages each side, and over the last-epoch bits,
// wideFactor·Window pages each side, the page itself left out. In
// integers. It marks in m.calm the chunks of quietChunk pages none of
// which was written in 64 epochs or has a neighbour feature, and takes
// the stretches where no window holds a write a chunk at a time. A chunk
// calm after the epoch before, with no page written in the last epoch
// within reach of its windows, is calm still, its features 0 as they
// were: it is passed over, 64 chunks at a time where a whole region is,
// so the pass costs what the pages near writes of the last 64 epochs
// number, not every page (dirty is the last epoch's pages, ascending).
// Then it computes the region features. Each of the model's spans goes
// at once.
func (m *Model) neighbours(dirty []uint64) {
	if m.slow {
		clear(m.calm) // and every chunk is passed over
	}
	m.eachSpan(func(_, lo, hi int) {
		m.neighbourSpan(dirty, lo, hi)
		m.regions(m.hist, m.calmBlocks(), lo, hi)
	})
}

// neighbourSpan is neighbours over the pages from lo to hi, a whole
// number of calm blocks from lo.
//
//go:norace
func (m *Model) neighbourSpan(dirty []uint64, lo0, hi0 int) {
	w := m.o.Window
	ww := wideFactor * w
	hist := m.hist
	n := len(hist)
	near, nearRec, wide := m.near[:n], m.nearRec[:n], m.wide[:n]
	var s1, s2 int32                              // last-epoch bits and recency scores over [i-w, i+w]
	var s3 int32                                  // last-epoch bits over [i-ww, i+ww]
	full, fullWide := float32(2*w), float32(2*ww) // neighbours away from the ends
	calm := m.calm
	next := -1 // the sums stand before page next
	// dirty[d] is the first written page within reach of the block
	d, _ := slices.BinarySearch(dirty, uint64(max(lo0-ww, 0)))
	for b := lo0; b < hi0; b += calmBlock {
		e := min(b+calmBlock, hi0)
		todo := allCalm // the block's chunks to pass over
		if !m.slow {
			todo = ^calm[b/calmBlock] | nearWrites(dirty, &d, b, e, ww)
		}
		if nk := (e - b + quietChunk - 1) / quietChunk; nk < 64 {
			todo &= 1<<nk - 1
		}
		for ; todo != 0; todo &= todo - 1 {
			k := bits.TrailingZeros64(todo)
			lo, hi := b+k*quietChunk, min(b+k*quietChunk+quietChunk, n)
			calm[b/calmBlock] &^= 1 << k
			switch {
			case lo == next:
			case next >= 0 && lo-next <= slideReach:
				s1, s2, s3 = slideSums(hist, next, lo, w, ww, s1, s2, s3)
			default:
				s1, s2, s3 = windowSums(hist, lo, w, ww)
			}
			next = hi
			// Where no window holds a write and none comes into them
			// within the chunk, its pages' features are 0 and the sums
			// stay 0.
			if s1|s2|s3 == 0 && lo+ww+quietChunk <= n && !m.slow && quietAhead(hist, lo, w, ww) {
				clear(near[lo:hi])
				clear(nearRec[lo:hi])
				clear(wide[lo:hi])
				markCalm(calm, lo/quietChunk)
				continue
			}
			var acc uint64 // the chunk's histories and window sums, ORed
			for i := lo; i < hi; i++ {
				s1, s2 = slideNear(hist, i, w, s1, s2)
				s3 = slideWide(hist, i, ww, s3)
				h := hist[i]
				acc |= h | uint64(s1|s2|s3)
				if c := s3 - int32(h&1); c == 0 {
					wide[i] = 0
				} else {
					cnt := fullWide
					if i < ww || i+ww >= n {
						cnt = float32(min(i+ww, n-1) - max(i-ww, 0))
					}
					wide[i] = uint8(float32(c)/cnt*nearScale + 0.5)
				}
				if s1 == 0 && s2 == 0 {
					near[i], nearRec[i] = 0, 0
					continue
				}
				cnt := full
				if i < w || i+w >= n {
					cnt = float32(min(i+w, n-1) - max(i-w, 0))
				}
				last := float32(s1 - int32(h&1))
				rec := float32(s2 - recencyQ[h&patternMask])
				near[i] = uint8(last/cnt*nearScale + 0.5)
				nearRec[i] = uint8(rec/(cnt*recencyOne)*nearScale + 0.5)
			}
			if acc == 0 && hi-lo == quietChunk {
				markCalm(calm, lo/quietChunk)
			}
		}
	}
}

// windowSums returns neighbours' sums as they stand before page lo: the
// last-epoch bits and recency scores of the pages from lo-w-1 to lo+w-1,
// and the last-epoch bits from lo-ww-1 to lo+ww-1 (within the pages).
//
//go:norace
func windowSums(hist []uint64, lo, w, ww int) (s1, s2, s3 int32) {
	for _, h := range hist[max(lo-w-1, 0):min(lo+w, len(hist))] {
		s1 += int32(h & 1)
		s2 += recencyQ[h&patternMask]
	}
	for _, h := range hist[max(lo-ww-1, 0):min(lo+ww, len(hist))] {
		s3 += int32(h & 1)
	}
	return s1, s2, s3
}

// slideReach is the most pages neighbours slides its sums over to the
// next chunk it passes over rather than make them again: four loads a
// page against the windows' 2·(Window+wideFactor·Window)+2, 146 for the
// default window.
const slideReach = 4 * quietChunk

// slideSums moves neighbours' sums s1, s2, s3 as they stand before page
// from to as they stand before page to, from < to.
//
//go:norace
func slideSums(hist []uint64, from, to, w, ww int, s1, s2, s3 int32) (int32, int32, int32) {
	for i := from; i < to; i++ {
		s1, s2 = slideNear(hist, i, w, s1, s2)
		s3 = slideWide(hist, i, ww, s3)
	}
	return s1, s2, s3
}

// slideNear moves neighbours' sums over Window pages each side from
// before page i to page i: the page Window after it comes in, the one
// Window and one before it leaves. (slideWide does the wide window; the
// two are apart so that the compiler inlines each.)
//
//go:norace
func slideNear(hist []uint64, i, w int, s1, s2 int32) (int32, int32) {
	if j := i + w; j < len(hist) {
		s1 += int32(hist[j] & 1)
		s2 += recencyQ[hist[j]&patternMask]
	}
	if j := i - w - 1; j >= 0 {
		s1 -= int32(hist[j] & 1)
		s2 -= recencyQ[hist[j]&patternMask]
	}
	return s1, s2
}

// slideWide is slideNear for the wide window.
//
//go:norace
func slideWide(hist []uint64, i, ww int, s3 int32) int32 {
	if j := i + ww; j < len(hist) {
		s3 += int32(hist[j] & 1)
	}
	if j := i - ww - 1; j >= 0 {
		s3 -= int32(hist[j] & 1)
	}
	return s3
}

// nearWrites returns the chunks, as bits, of the block of pages from b
// to e within reach pages of a page of dirty (ascending); *d, the first
// page of dirty at or above b-reach, moves on as b grows.
func nearWrites(dirty []uint64, d *int, b, e, reach int) uint64 {
	for *d < len(dirty) && int(dirty[*d]) < b-reach {
		*d++
	}
	var near uint64
	for _, p := range dirty[*d:] {
		if int(p) >= e+reach {
			break
		}
		from := max(int(p)-reach, b) - b
		to := min(int(p)+reach, e-1) - b
		near |= allCalm >> (63 - to/quietChunk) &^ (1<<(from/quietChunk) - 1)
	}
	return near
}

// quietAhead reports whether the chunk of pages from i is unwritten in
// the last 64 epochs and no write comes into neighbours' windows
// (Window w, wide ww) as they slide over it: none in the last 8 epochs
// among the quietChunk pages w on, none in the last epoch among those ww
// on.
//
//go:norace
func quietAhead(hist []uint64, i, w, ww int) bool {
	h := hist[i : i+quietChunk : i+quietChunk]
	a := hist[i+w : i+w+quietChunk : i+w+quietChunk]
	b := hist[i+ww : i+ww+quietChunk : i+ww+quietChunk]
	return h[0]|h[1]|h[2]|h[3]|h[4]|h[5]|h[6]|h[7] == 0 &&
		(a[0]|a[1]|a[2]|a[3]|a[4]|a[5]|a[6]|a[7])&patternMask == 0 &&
		(b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7])&1 == 0
}

// regions computes the region features: the share of each region's pages
// dirtied in the last epoch, and in the last 8, over the chunks calm does
// not say are calm (nil: none), for the regions from page lo to hi.
//
//go:norace
func (m *Model) regions(hist []uint64, calm []uint64, lo0, hi0 int) {
	size := 1 << regionShift
	for r := lo0 >> regionShift; r < (hi0+size-1)>>regionShift; r++ {
		lo := r << regionShift
		hi := min(lo+size, len(hist))
		var last, recent int
		for a, z := liveSpan(calm, lo, lo, hi); a < z; a, z = liveSpan(calm, lo, z, hi) {
			for _, h := range hist[a:z] { // calm chunks count nothing
				last += int(h & 1)
				if h&patternMask != 0 {
					recent++
				}
			}
		}
		n := float32(hi - lo)
		m.region[r] = float32(last) / n
		m.regionRec[r] = float32(recent) / n
	}
}

// cohorts computes the cohort feature per age of last write: for the
// pages whose last write before the last epoch was k+1 epochs before it,
// ρ is the share that were rewritten in the last epoch, and the feature
// log(1+100ρ), over the chunks not calm.
func (m *Model) cohorts() {
	counts := make([]cohortCounts, len(m.spans))
	m.eachSpan(func(i, lo, hi int) { counts[i].count(m.hist, m.calmBlocks(), lo, hi) })
	all := &counts[0]
	for i := range counts[1:] {
		all.add(&counts[i+1])
	}
	rewritten, left, before, again := &all.rewritten, &all.left, all.before, all.again
	m.cohort[0] = 0
	if before > 0 {
		m.cohort[0] = float32(math.Log1p(100 * float64(again) / float64(before)))
	}
	for k := 1; k < 64; k++ {
		rho := 0.0
		if n := rewritten[k] + left[k]; n > 0 {
			rho = float64(rewritten[k]) / float64(n)
		}
		m.cohort[k] = float32(math.Log1p(100 * rho))
	}
}

// cohortCounts are what cohorts counts over some pages.
type cohortCounts struct {
	rewritten, left [65]uint32
	before, again   uint32 // pages dirtied two epochs ago; of them, dirtied again in the last
}

func (c *cohortCounts) add(o *cohortCounts) {
	for k := range c.rewritten {
		c.rewritten[k] += o.rewritten[k]
		c.left[k] += o.left[k]
	}
	c.before += o.before
	c.again += o.again
}

// count counts the pages from lo to hi, a whole number of calm blocks
// from lo.
//
//go:norace
func (c *cohortCounts) count(hist, calm []uint64, lo0, hi0 int) {
	rewritten, left := &c.rewritten, &c.left
	var before, again uint32
	for b := lo0; b < hi0; b += calmBlock {
		e := min(b+calmBlock, hi0)
		// Calm chunks, none written in 64 epochs, count for nothing.
		for lo, hi := liveSpan(calm, b, b, e); lo < hi; lo, hi = liveSpan(calm, b, hi, e) {
			for _, h := range hist[lo:hi] {
				before += uint32(h >> 1 & 1)
				again += uint32(h & h >> 1 & 1)
				switch {
				case h == 0:
				case h&1 == 0:
					left[bits.TrailingZeros64(h)]++
				case h > 1:
					// Rewritten: its write before was tz(h>>1)+1 bits back.
					rewritten[bits.TrailingZeros64(h>>1)+1]++
				}
			}
		}
	}
	c.before += before
	c.again += again
}

// features returns page p's features besides its code, as Predict
// computes them.
func (m *Model) features(p uint64) [nFeat]float32 {
	h := m.hist[p]
	var x [nFeat]float32
	x[featDue] = noDue
	x[featNear] = float32(m.near[p]) / nearScale
	x[featNearRec] = float32(m.nearRec[p]) / nearScale
	x[featWide] = float32(m.wide[p]) / nearScale
	if h&patternMask != 0 {
		x[featRegion] = m.region[p>>regionShift]
		x[featRegionRec] = m.regionRec[p>>regionShift]
	} else {
		x[featRegionIdle] = m.region[p>>regionShift]
		x[featRegionRecIdle] = m.regionRec[p>>regionShift]
	}
	n := bits.OnesCount64(h >> patternBits)
	x[featLong], x[featLongLogit] = longShare(n), longLogit(n)
	if m.sub != nil {
		x[featLate] = float32(m.lateSum(p)-m.lateOf(p)) / (2 * lateReach)
	}
	if h == 0 {
		return x
	}
	if d, ok := dueDelta(h); ok {
		x[featDue] = float32(d)
	}
	switch k := bits.TrailingZeros64(h); {
	case k == 0:
		x[featCohortLast] = m.cohort[0]
	case k < patternBits:
		x[featCohortNew] = m.cohort[k]
	default:
		x[featCohortOld] = m.cohort[k]
	}
	return x
}

// Quiet pages. In a large VM most pages are idle: not written in 64
// epochs, none of their neighbours written lately (calm, see neighbours),
// far from the allocation frontier. Such pages with the same count and
// stay in the same region have the same forecast and add nothing to the
// spatial features, so Predict and Observe's passes take them quietChunk
// at a time.
const (
	quietChunk = 8 // pages, a power of two
	noQuietKey = uint64(math.MaxUint64)
	// calmBlock is the pages of a word of Model.calm: a 2 MiB region.
	calmBlock = 64 * quietChunk
	allCalm   = ^uint64(0)
)

// markCalm marks chunk k in calm.
func markCalm(calm []uint64, k int) { calm[k/64] |= 1 << (k % 64) }

// quietKey reports whether the calm chunk of quietChunk pages from i (see
// neighbours) is quiet: none of its pages within frontReach of a run of
// front (j is the first run at or above i), all with the same count and
// stay. If so it returns their key, the region, count and stay, which
// decide their forecast.
//
//go:norace
func quietKey(count, stay []uint16, front []frontRun, j, i int) (uint64, bool) {
	c, s := count[i], stay[i]
	cs, ss := count[i:i+quietChunk:i+quietChunk], stay[i:i+quietChunk:i+quietChunk]
	for k := 1; k < quietChunk; k++ {
		if cs[k] != c || ss[k] != s {
			return 0, false
		}
	}
	if !frontFree(front, j, uint64(i), uint64(i+quietChunk-1)) {
		return 0, false
	}
	return uint64(i>>regionShift)<<32 | uint64(c)<<16 | uint64(s), true
}

// frontFree reports whether no page from lo to hi is within frontReach of
// a run of front or in one; j is the first run at or above lo.
//
//go:norace
func frontFree(front []frontRun, j int, lo, hi uint64) bool {
	if j > 0 {
		r := front[j-1]
		if end := uint64(r.lo) + uint64(r.n) - 1; end >= lo || lo-end <= frontReach {
			return false
		}
	}
	return j == len(front) || uint64(front[j].lo) > hi && uint64(front[j].lo)-hi > frontReach
}

// liveSpan returns the first span of pages from lo to before hi, in the
// block of calmBlock pages from b, of chunks calm does not mark calm (nil:
// none), as [lo, hi); an empty one when there is none. Each span of the
// block in turn: liveSpan(calm, b, b, e), then from the end of the last.
func liveSpan(calm []uint64, b, lo, hi int) (int, int) {
	var word uint64
	if b/calmBlock < len(calm) {
		word = calm[b/calmBlock]
	}
	k := (lo - b) / quietChunk // lo is at a chunk's start
	live := ^word >> k << k
	if lo >= hi || live == 0 {
		return hi, hi
	}
	a := bits.TrailingZeros64(live)
	z := 64
	if rest := word >> a; rest != 0 {
		z = a + bits.TrailingZeros64(rest)
	}
	return min(b+a*quietChunk, hi), min(b+z*quietChunk, hi)
}

// lateReach is how far each side featLate looks: its 16 nearest
// neighbours.
const lateReach = 8

// lateOf is what page q adds to featLate's sum: +1 if it was dirtied in
// the last part of the last epoch, -1 if in the epoch but not its last
// part, 0 if not in the epoch, if the epoch was observed whole (its mask
// 0, unknown) or if q is past the last page.
//
//go:norace
func (m *Model) lateOf(q uint64) int {
	if q >= uint64(len(m.hist)) || m.hist[q]&1 == 0 {
		return 0
	}
	switch k := m.sub[q>>1] >> ((q & 1) << 2) & 0xf; {
	case k&lateMask != 0:
		return 1
	case k != 0:
		return -1
	}
	return 0
}

// lateMask is the bit of an in-epoch mask for the epoch's last part.
const lateMask = 1 << (subParts - 1)

// lateSum sums lateOf over the pages within lateReach of p, p included.
//
//go:norace
func (m *Model) lateSum(p uint64) int {
	n := 0
	for q := max(p, lateReach) - lateReach; q <= p+lateReach; q++ {
		n += m.lateOf(q)
	}
	return n
}
