package predictor

import (
	"context"
	"math"
	"runtime"
	"sync"

	"github.com/pagecast/pagecast/trace"
)

// Evaluation defaults.
const (
	// DefaultThreshold is the probability at and above which a page
	// counts as predicted dirty.
	DefaultThreshold = 0.5
	// DefaultWarmup is how many epochs Evaluate lets predictors observe
	// before it starts scoring them.
	DefaultWarmup = 8
	// DefaultBins is the number of equal-width reliability bins.
	DefaultBins = 10
)

// EvalOptions set how Evaluate scores. The zero value is the defaults.
type EvalOptions struct {
	// Threshold is the probability at and above which a page counts as
	// predicted dirty for precision, recall and F1; 0 means
	// DefaultThreshold.
	Threshold float64
	// Warmup is how many epochs are observed before scoring starts; 0
	// means DefaultWarmup, negative means none.
	Warmup int
	// Horizon is how many epochs ahead a prediction reaches: a page is
	// an actual positive if it is dirtied in any of the next Horizon
	// epochs. 0 means 1. Predictors that are not HorizonPredictors are
	// asked for their one-epoch forecast.
	Horizon int
	// Bins is the number of equal-width reliability bins over [0, 1]
	// used for Result.Calibration and the expected calibration error;
	// 0 means DefaultBins.
	Bins int
	// Pages, if set, is the PageMap the epochs were remapped with: the
	// predictors forecast its dense pages, and the scores count every
	// guest page, Far standing for those outside its runs.
	Pages *PageMap
	// Parts, if set, are each epoch's parts (see GroupEpochs), shown to
	// the predictors that take them (PartsObserver) instead of the
	// epoch's pages.
	Parts [][][]uint64
	// Progress, if set, is called once a predictor has walked another
	// epoch of the trace: done of total, for that predictor. Predictors
	// are walked GOMAXPROCS at a time, each in a goroutine of its own, so
	// it is called from several goroutines, and some predictors may not
	// have started while others are far on.
	Progress func(done, total int)
	// Context, if set, stops the walk once it is done: the results are
	// then of the epochs walked so far, and the caller, who knows why it
	// stopped, says so.
	Context context.Context
}

func (o EvalOptions) withDefaults() EvalOptions {
	if o.Threshold == 0 {
		o.Threshold = DefaultThreshold
	}
	switch {
	case o.Warmup == 0:
		o.Warmup = DefaultWarmup
	case o.Warmup < 0:
		o.Warmup = 0
	}
	o.Horizon = max(o.Horizon, 1)
	if o.Bins <= 0 {
		o.Bins = DefaultBins
	}
	return o
}

// Result is how one predictor scored on a trace, over every (page,
// scored epoch) pair.
type Result struct {
	// Name is the predictor's.
	Name string
	// Threshold is the probability at and above which a page counted as
	// predicted dirty.
	Threshold float64
	// Horizon is how many epochs ahead the predictions reached.
	Horizon int
	// Epochs are the scored epochs, predicted against actual dirty pages.
	Epochs []EpochScore
	// Pairs is the number of (page, epoch) pairs scored, Positives those
	// dirtied within the horizon.
	Pairs, Positives uint64
	// TruePositives, FalsePositives and FalseNegatives count pairs at
	// Threshold.
	TruePositives, FalsePositives, FalseNegatives uint64
	// Precision, Recall and F1 are at Threshold; 0 where undefined.
	Precision, Recall, F1 float64
	// Brier is the mean squared difference between the predicted
	// probability and the outcome (1 dirty, 0 not); lower is better.
	Brier float64
	// AUC is the area under the ROC curve: the probability that a
	// random dirtied pair scores above a random clean one (ties count
	// half). Scores are grouped in buckets 0.8% apart (relative), so
	// scores closer than that count as ties. NaN where it is not defined:
	// no pair was dirtied, or every one was.
	AUC float64
	// Calibration are equal-width reliability bins over [0, 1]; empty
	// bins are left out.
	Calibration []Bin
	// CalibrationLog are reliability bins one octave wide, [2^-k,
	// 2^-k+1), from [0, 2^-19) to [0.5, 1]: on
	// sparse traces almost every prediction is near 0, and these bins
	// show how well the small probabilities are calibrated. Empty bins
	// are left out.
	CalibrationLog []Bin
	// ECE is the expected calibration error over Calibration: the mean
	// over bins of |mean predicted - observed frequency|, weighted by
	// the bins' pair counts.
	ECE float64
}

// EpochScore compares one epoch's forecast with what happened.
type EpochScore struct {
	// Index is the epoch's index in the trace.
	Index uint64
	// Predicted is the expected number of pages dirtied within the
	// horizon: the sum of the predicted probabilities.
	Predicted float64
	// Actual is the number of pages dirtied within the horizon.
	Actual int
}

// Bin is one reliability bin: the pairs whose predicted probability fell
// in [Lo, Hi).
type Bin struct {
	Lo, Hi float64
	// Count is the number of pairs in the bin.
	Count uint64
	// Predicted is their mean predicted probability, Observed the
	// fraction of them that were dirtied.
	Predicted, Observed float64
}

// Evaluate walks the epochs of a trace forward and scores each predictor
// on it: before epoch t it asks for a forecast, then shows the predictor
// epoch t. The first Warmup epochs are only observed. The predictors must
// be fresh (they see the whole trace) and are scored in parallel, one
// result each, in order. Epoch indices that the trace skips (lost to
// damage) are observed as empty (at most maxGapObserved of each gap) and
// not scored, nor are epochs whose horizon reaches past the trace or into
// a skipped epoch.
func Evaluate(epochs []trace.Epoch, pages uint64, preds []Predictor, o EvalOptions) []Result {
	res := EvaluateHorizons(epochs, pages, preds, o, []int{max(o.Horizon, 1)})
	out := make([]Result, len(preds))
	for i := range preds {
		out[i] = res[i][0]
	}
	return out
}

// EvaluateHorizons is Evaluate at several horizons in one walk of the
// trace (o.Horizon is ignored): each predictor observes every epoch once
// and forecasts each horizon before it. It returns, per predictor in
// order, a result per horizon in order.
func EvaluateHorizons(epochs []trace.Epoch, pages uint64, preds []Predictor, o EvalOptions, horizons []int) [][]Result {
	o = o.withDefaults()
	prev := previousWrites(epochs, pages)
	tls := make([]*timeline, len(horizons))
	for k, h := range horizons {
		tls[k] = newTimeline(epochs, max(h, 1), prev)
	}
	for _, p := range preds {
		if f, ok := p.(interface{ FitHorizons(...int) }); ok {
			f.FitHorizons(horizons...)
		}
	}
	results := make([][]Result, len(preds))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, p := range preds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = evaluate(tls, horizons, pages, p, o)
		}()
	}
	wg.Wait()
	return results
}

// maxGapObserved is how many epochs of an index gap (lost to damage) the
// predictors observe as empty: after 64 every page's history is clean, so
// more change little, and a few bytes claiming a gap of 2^40 epochs must
// not cost 2^40 steps. All gaps together are observed as at most as many
// empty epochs as the trace has epochs, and maxGapObserved more: a trace
// of many gaps then takes about the time of one without (a 536 KB trace
// of 20 000 one-page epochs 1 000 apart took 72 s, 2.56 million empty
// epochs, before this bound). After a gap observed short of
// maxGapObserved, or of the whole gap, for that bound, epochs are not
// scored until maxGapObserved more have been observed: the predictors have
// not seen the time go by, and took pages written long before for pages
// written just before (a review: only the first epoch after was left out).
const maxGapObserved = 2 * keepEpochs

// timeline is a trace's epochs in order, with the gap before each (the
// indices the trace skips) and whether each can be scored at the horizon.
// Its size follows the epochs, not their indices, nor the horizon: the
// pages dirtied within an epoch's horizon are found as they are scored
// (outcome), not kept.
type timeline struct {
	h     int
	steps []step
}

type step struct {
	index uint64
	pages []uint64
	// prev holds, for each of pages, the step at which that page was
	// last dirtied before this one, or -1.
	prev []int32
	gap  int // empty epochs observed before this one: min(skipped, maxGapObserved)
	// scored says whether this epoch and the h-1 after it are all in
	// the trace, so that the outcome is what they are.
	scored bool
}

// previousWrites returns, for each epoch's pages, the step (the epoch's
// place in epochs) of each page's write before, or -1: 4 bytes a page
// the trace holds, and 4 a guest page while it is made.
func previousWrites(epochs []trace.Epoch, pages uint64) [][]int32 {
	n := 0
	for _, e := range epochs {
		n += len(e.Pages)
	}
	flat := make([]int32, n)
	last := make([]int32, pages)
	for i := range last {
		last[i] = -1
	}
	prev := make([][]int32, len(epochs))
	for i, e := range epochs {
		prev[i], flat = flat[:len(e.Pages):len(e.Pages)], flat[len(e.Pages):]
		for j, pg := range e.Pages {
			if pg >= pages {
				prev[i][j] = int32(i) // not a page of the guest: never counted
				continue
			}
			prev[i][j] = last[pg]
			last[pg] = int32(i)
		}
	}
	return prev
}

// observedGaps returns, for each epoch, how many empty epochs of the gap
// before it are observed; whether that is fewer than maxGapObserved and
// the gap, for the bound on all gaps together (cut); and whether fewer
// than maxGapObserved epochs have been observed since the last gap cut so
// (stale: the epoch is not scored).
func observedGaps(epochs []trace.Epoch) (gaps []int, cut, stale []bool) {
	gaps, cut, stale = make([]int, len(epochs)), make([]bool, len(epochs)), make([]bool, len(epochs))
	budget := uint64(len(epochs) + maxGapObserved) // empty epochs left to observe
	since := maxGapObserved                        // epochs observed since the last gap cut short
	for i := 1; i < len(epochs); i++ {
		want := min(epochs[i].Index-epochs[i-1].Index-1, maxGapObserved)
		g := min(want, budget)
		gaps[i], cut[i], budget = int(g), g < want, budget-g
		if cut[i] {
			since = 0
		} else {
			since += int(g)
		}
		stale[i] = since < maxGapObserved
		since++ // epoch i itself
	}
	return gaps, cut, stale
}

// CutGaps counts the gaps in a trace's epoch indices that Evaluate
// observes short of maxGapObserved, for the bound on all gaps together:
// the epochs after them are not scored until maxGapObserved have gone by.
func CutGaps(epochs []trace.Epoch) int {
	_, cut, _ := observedGaps(epochs)
	n := 0
	for _, c := range cut {
		if c {
			n++
		}
	}
	return n
}

// LongGaps counts the gaps in a trace's epoch indices longer than the
// maxGapObserved empty epochs Evaluate observes of each, and gives the
// longest and the index of the epoch before it. A trace pagecast records
// holds its idle epochs, so a gap is epochs lost to damage or a trace
// made elsewhere; one of 2^36 epochs was scored as 128 without a word
// (walk 153).
func LongGaps(epochs []trace.Epoch) (n int, longest, after uint64) {
	for i := 1; i < len(epochs); i++ {
		g := epochs[i].Index - epochs[i-1].Index - 1
		if g <= maxGapObserved {
			continue
		}
		n++
		if g > longest {
			longest, after = g, epochs[i-1].Index
		}
	}
	return n, longest, after
}

func newTimeline(epochs []trace.Epoch, h int, prev [][]int32) *timeline {
	tl := &timeline{h: h, steps: make([]step, len(epochs))}
	gaps, _, stale := observedGaps(epochs)
	for i, e := range epochs {
		st := &tl.steps[i]
		st.index, st.pages, st.prev, st.gap = e.Index, e.Pages, prev[i], gaps[i]
	}
	for t := 0; t+h <= len(epochs); t++ {
		ok := !stale[t]
		for k := t + 1; k < t+h; k++ {
			ok = ok && epochs[k].Index == epochs[t].Index+uint64(k-t)
		}
		tl.steps[t].scored = ok
	}
	return tl
}

// outcome calls f for each page dirtied within the horizon of step t
// (in it or the h-1 after), once each, and returns how many there were:
// a page is counted at its first write at or after t, the one whose
// write before came before t.
func (tl *timeline) outcome(t int, f func(pg uint64)) int {
	n := 0
	for k := t; k < t+tl.h; k++ {
		st := &tl.steps[k]
		for j, pg := range st.pages {
			if int(st.prev[j]) < t {
				f(pg)
				n++
			}
		}
	}
	return n
}

// scoreBuckets is the number of fine score buckets: a float32
// probability's bits shifted right by 16 (sign, exponent and 7 bits of
// mantissa) order the buckets as the scores, and 1.0 is bucket 0x3f80.
const scoreBuckets = 0x3f80 + 1

// bucketOf returns a probability's fine bucket, clamping it to [0, 1].
func bucketOf(p float32) uint32 {
	if !(p > 0) { // also NaN
		return 0
	}
	if p >= 1 {
		return scoreBuckets - 1
	}
	return math.Float32bits(p) >> 16
}

// tally accumulates a predictor's scores.
type tally struct {
	n, pos []uint64  // per fine bucket: pairs, positives
	sum    []float64 // per fine bucket: sum of predictions
	bn     []uint64  // per reliability bin: pairs, positives, sum
	bpos   []uint64
	bsum   []float64
	sq     float64 // sum of squared error
	tp, pp uint64  // true positives, predicted positives
	pairs  uint64
	posAll uint64
}

func evaluate(tls []*timeline, horizons []int, pages uint64, p Predictor, o EvalOptions) []Result {
	rs := make([]Result, len(horizons))
	ts := make([]*tally, len(horizons))
	for k, h := range horizons {
		rs[k] = Result{Name: p.Name(), Threshold: o.Threshold, Horizon: max(h, 1)}
		ts[k] = &tally{
			n: make([]uint64, scoreBuckets), pos: make([]uint64, scoreBuckets), sum: make([]float64, scoreBuckets),
			bn: make([]uint64, o.Bins), bpos: make([]uint64, o.Bins), bsum: make([]float64, o.Bins),
		}
	}
	hp, _ := p.(HorizonPredictor)
	dst := make([]float32, pages)
	thr := float32(o.Threshold)
	bins := float32(o.Bins)
	// With a PageMap, the dense pages past pm.Mapped() are Far's block:
	// Far is scored once for every guest page outside the runs, the
	// others not at all.
	scoredPages, realPages := pages, pages
	var far uint64
	farWeight := uint64(0)
	if pm := o.Pages; pm != nil {
		scoredPages, realPages, far = pm.Mapped(), pm.Total, pm.Far
		farWeight = pm.Total - pm.Mapped()
		if m, ok := p.(interface{ SetOutside(far, n uint64) }); ok {
			m.SetOutside(pm.Far, pm.Outside())
		}
	}
	observed := 0
	for i, st0 := range tls[0].steps {
		for range st0.gap {
			p.Observe(nil)
			observed++
		}
		for k, tl := range tls {
			st := &tl.steps[i]
			if observed < o.Warmup || !st.scored {
				continue
			}
			t, r, h := ts[k], &rs[k], rs[k].Horizon
			if hp != nil && h > 1 {
				hp.PredictHorizon(dst, h)
			} else {
				p.Predict(dst)
			}
			sumP, sq, pp := t.scoreAll(dst[:scoredPages], thr, bins, o.Bins)
			if farWeight > 0 {
				v := min(max(dst[far], 0), 1) // also maps NaN to 0
				t.add(v, farWeight, bins, o.Bins)
				wf := float64(farWeight)
				sumP += wf * float64(v)
				sq += wf * float64(v) * float64(v)
				if v >= thr {
					pp += farWeight
				}
			}
			actual := tl.outcome(i, func(pg uint64) {
				v := min(max(dst[pg], 0), 1)
				t.pos[bucketOf(v)]++
				t.bpos[min(int(v*bins), o.Bins-1)]++
				sq += 1 - 2*float64(v) // (1-v)² replaces v²
				if v >= thr {
					t.tp++
				}
			})
			t.sq += sq
			t.pp += pp
			t.pairs += realPages
			t.posAll += uint64(actual)
			r.Epochs = append(r.Epochs, EpochScore{Index: st.index, Predicted: sumP, Actual: actual})
		}
		if po, ok := p.(PartsObserver); ok && o.Parts != nil {
			po.ObserveParts(o.Parts[i])
		} else {
			p.Observe(st0.pages)
		}
		observed++
		if o.Progress != nil {
			o.Progress(i+1, len(tls[0].steps))
		}
		if o.Context != nil && o.Context.Err() != nil {
			break
		}
	}
	for k := range ts {
		ts[k].finish(&rs[k], o.Bins)
	}
	return rs
}

// add counts w pairs predicted v, in [0, 1].
func (t *tally) add(v float32, w uint64, bins float32, nbins int) {
	wf := float64(w)
	b := bucketOf(v)
	t.n[b] += w
	t.sum[b] += wf * float64(v)
	c := min(int(v*bins), nbins-1)
	t.bn[c] += w
	t.bsum[c] += wf * float64(v)
}

// scoreAll counts one epoch's predictions dst, each clamped to [0, 1],
// and returns their sum, the sum of their squares and how many are at or
// above thr. Runs of equal predictions (the pages a predictor cannot tell
// apart: never written, far from any written) are counted once each.
//
//go:norace
func (t *tally) scoreAll(dst []float32, thr, bins float32, nbins int) (sum, sq float64, pp uint64) {
	// The race detector is off here: a loop over one predictor's own
	// buffer, which it made 40 times slower (see doc.go, "Tests").
	for i := 0; i < len(dst); {
		v := dst[i]
		j := i + 1
		for j < len(dst) && dst[j] == v {
			j++
		}
		n := uint64(j - i)
		i = j
		v = min(max(v, 0), 1) // also maps NaN to 0
		t.add(v, n, bins, nbins)
		nf, vf := float64(n), float64(v)
		sum += nf * vf
		sq += nf * vf * vf
		if v >= thr {
			pp += n
		}
	}
	return sum, sq, pp
}

// finish turns the tally into r's scores.
func (t *tally) finish(r *Result, bins int) {
	r.Pairs, r.Positives = t.pairs, t.posAll
	r.TruePositives = t.tp
	r.FalsePositives = t.pp - t.tp
	r.FalseNegatives = t.posAll - t.tp
	if t.pp > 0 {
		r.Precision = float64(t.tp) / float64(t.pp)
	}
	if t.posAll > 0 {
		r.Recall = float64(t.tp) / float64(t.posAll)
	}
	if r.Precision+r.Recall > 0 {
		r.F1 = 2 * r.Precision * r.Recall / (r.Precision + r.Recall)
	}
	if t.pairs == 0 {
		return
	}
	r.Brier = t.sq / float64(t.pairs)

	// AUC: walk the buckets from the lowest score up.
	neg := t.pairs - t.posAll
	r.AUC = math.NaN()
	if t.posAll > 0 && neg > 0 {
		var below, area float64
		for b := range t.n {
			nb := float64(t.n[b] - t.pos[b])
			area += float64(t.pos[b]) * (below + nb/2)
			below += nb
		}
		r.AUC = area / (float64(t.posAll) * float64(neg))
	}

	for c := range bins {
		if t.bn[c] == 0 {
			continue
		}
		b := Bin{
			Lo: float64(c) / float64(bins), Hi: float64(c+1) / float64(bins), Count: t.bn[c],
			Predicted: t.bsum[c] / float64(t.bn[c]), Observed: float64(t.bpos[c]) / float64(t.bn[c]),
		}
		r.Calibration = append(r.Calibration, b)
		r.ECE += float64(b.Count) / float64(t.pairs) * math.Abs(b.Predicted-b.Observed)
	}

	// Octave bins from the fine buckets: a bucket's octave is its
	// float32 exponent. The lowest bin also holds everything below it,
	// the highest holds 1.
	const lowest = -20
	var oct [-lowest]struct {
		n, pos uint64
		sum    float64
	}
	for b := range t.n {
		if t.n[b] == 0 {
			continue
		}
		e := int(b>>7) - 127 // the bucket's values lie in [2^e, 2^(e+1))
		k := min(max(e, lowest), -1) - lowest
		oct[k].n += t.n[b]
		oct[k].pos += t.pos[b]
		oct[k].sum += t.sum[b]
	}
	for k, o := range oct {
		if o.n == 0 {
			continue
		}
		lo, hi := math.Ldexp(1, k+lowest), math.Ldexp(1, k+lowest+1)
		if k == 0 {
			lo = 0
		}
		r.CalibrationLog = append(r.CalibrationLog, Bin{Lo: lo, Hi: hi, Count: o.n,
			Predicted: o.sum / float64(o.n), Observed: float64(o.pos) / float64(o.n)})
	}
}
