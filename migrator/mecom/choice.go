package mecom

import (
	"math"
	"slices"
)

// The cost model: how the encoder learns what each codec costs on each
// class of page and picks the cheapest.
//
// A page's cost is max(cpu/workers, bytes/bandwidth): the seconds it adds
// to a migration whose compression (on workers cores) and sending (on the
// link) overlap, as they do when the migrator sends one batch while the
// next is being encoded. The slower of the two stages sets the pace, so
// CPU spent compressing is free until it becomes the bottleneck; a sum
// would charge it even while the link is busy and so under-compress on
// slow links, where MECOM gains most. CPU time is divided by the workers
// because a batch is coded by all of them at once.
//
// CPU time is measured as the wall time a worker takes to code a page. On
// a busy machine that includes waiting for a core, which is what the page
// then really costs; a single long wait is bounded (cpuOutlier) so one
// preemption does not teach the encoder that a codec is slow.

// candidates lists, per class, the codecs the encoder chooses among. Zero
// and Repeat pages have one obvious coding; the others are measured.
var candidates = [numClasses][]Codec{
	Zero:        {ZeroMarker},
	Repeat:      {Words},
	LowEntropy:  {S2, Zstd, Raw},
	HighEntropy: {Raw, S2, Zstd},
}

const (
	// alpha is the weight of a new observation in the running averages:
	// about the last 32 pages count, enough to ride out the noise of a
	// single page and still follow a change of content within a batch.
	alpha = 1.0 / 32

	// warmup is how many observations a codec gets, per class, before
	// the encoder trusts its average: it tries each candidate this many
	// times first.
	warmup = 4

	// cpuOutlier bounds one observation's CPU time at this multiple of
	// the average, so a worker descheduled in mid-page (the test machines
	// are shared) moves the average by at most 3/32. Pages of one class
	// vary far less than fourfold in coding time.
	cpuOutlier = 4

	// sampleEvery: of every sampleEvery pages of a class, each candidate
	// that is not the current choice codes one, so the averages of
	// codecs not in use keep up with the content.
	sampleEvery = 64

	// hysteresis is how much cheaper another codec must look before the
	// encoder switches to it, so that two codecs of nearly equal cost do
	// not take turns on noise.
	hysteresis = 0.05

	// shrinkTolerance is how many bytes a codec must save per page to
	// count as shrinking it when the bandwidth is unknown.
	shrinkTolerance = PageSize / 100

	// rawCPU is what Raw is taken to cost: a 4 KiB copy. It is not
	// measured: timing a 100 ns operation catches every interrupt and
	// preemption at a hundred times its weight, and, at a tenth of the
	// cheapest compressor's time on any page, its exact value never
	// decides a choice.
	rawCPU = 100e-9
)

// rawEstimate is Raw's cost on any class: its size is exact (a header
// byte and the page) and its CPU time is rawCPU.
var rawEstimate = estimate{bytes: PageSize + 1, cpu: rawCPU}

// estimate is a running average of one codec's cost on one class.
type estimate struct {
	n     uint64  // observations so far
	bytes float64 // wire bytes per page, header included
	cpu   float64 // seconds per page
}

// observe folds one page's figures in. Until 1/alpha observations the
// average is the plain mean, so the first pages are not weighed against
// an arbitrary starting value.
func (e *estimate) observe(bytes, cpu float64) {
	if e.n >= warmup && cpu > cpuOutlier*e.cpu {
		cpu = cpuOutlier * e.cpu
	}
	e.n++
	w := max(alpha, 1/float64(e.n))
	e.bytes += w * (bytes - e.bytes)
	e.cpu += w * (cpu - e.cpu)
}

// fold merges k observations whose means are bytes and cpu, as observe
// would have, near enough, had it seen them one by one.
func (e *estimate) fold(k uint64, bytes, cpu float64) {
	if k == 0 {
		return
	}
	e.n += k
	w := max(1-math.Pow(1-alpha, float64(k)), float64(k)/float64(e.n))
	e.bytes += w * (bytes - e.bytes)
	e.cpu += w * (cpu - e.cpu)
}

// tally sums a worker's observations during one batch, to fold into the
// encoder's shared model afterwards.
type tally struct {
	n          uint64
	bytes, cpu float64
}

func (t *tally) add(bytes, cpu float64) {
	t.n++
	t.bytes += bytes
	t.cpu += cpu
}

// model is what the encoder has learned: the cost of each codec on each
// class, Raw's entry unused (rawEstimate stands for it).
type model struct {
	est [numClasses][numCodecs]estimate
}

// get returns the estimate for codec on class.
func (m *model) get(class Class, codec Codec) estimate {
	if codec == Raw {
		return rawEstimate
	}
	return m.est[class][codec]
}

// known reports whether the model has enough observations of codec on
// class to judge it by.
func (m *model) known(class Class, codec Codec) bool {
	return codec == Raw || m.est[class][codec].n >= warmup
}

// fold merges a worker's tallies for one batch.
func (m *model) fold(t *[numClasses][numCodecs]tally) {
	for class := range numClasses {
		for codec, s := range t[class] {
			if s.n > 0 {
				n := float64(s.n)
				m.est[class][codec].fold(s.n, s.bytes/n, s.cpu/n)
			}
		}
	}
}

// costing is the context a cost is computed in.
type costing struct {
	bandwidth float64 // bytes/s; 0 when unknown
	workers   int
}

// cost is a page's time under e; see the top of this file.
func (c costing) cost(e estimate) float64 {
	return max(e.cpu/float64(c.workers), e.bytes/c.bandwidth)
}

// better reports whether a is cheaper than b by more than margin, a
// fraction of b's cost. With the bandwidth unknown, compression is taken
// to pay whenever it shrinks a page: fewer bytes win, and CPU time decides
// only between codecs within shrinkTolerance of each other.
func (c costing) better(a, b estimate, margin float64) bool {
	if c.bandwidth <= 0 {
		if math.Abs(a.bytes-b.bytes) > shrinkTolerance {
			return a.bytes < b.bytes
		}
		return a.cpu < (1-margin)*b.cpu
	}
	if ca, cb := c.cost(a), c.cost(b); ca != cb {
		return ca < (1-margin)*cb
	}
	// Equal costs happen when both are bound by the link and send the
	// same bytes (a codec that falls back to Raw, say): spend less CPU.
	return a.cpu < (1-margin)*b.cpu
}

// choose returns the codec to use on class: the cheapest known candidate,
// unless current is known and not clearly dearer.
func (c costing) choose(m *model, class Class, current Codec) Codec {
	cands := candidates[class]
	best := cands[0]
	found := false
	for _, codec := range cands {
		if !m.known(class, codec) {
			continue
		}
		if !found || c.better(m.get(class, codec), m.get(class, best), 0) {
			best, found = codec, true
		}
	}
	if !found {
		return cands[0]
	}
	if current != best && slices.Contains(candidates[class], current) && m.known(class, current) &&
		!c.better(m.get(class, best), m.get(class, current), hysteresis) {
		return current
	}
	return best
}
