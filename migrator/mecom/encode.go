package mecom

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Encoder compresses batches of pages, choosing per class the codec that
// pays for itself at the current link bandwidth and CPU speed (see
// choice.go). Encode calls are serialised; SetBandwidth and Stats may be
// called from other goroutines at any time.
type Encoder struct {
	encodeMu sync.Mutex // held by Encode: the workers are reused across calls
	workers  []*worker

	mu        sync.Mutex // guards the fields below
	bandwidth float64
	model     model
	choice    [numClasses]Codec
	totals    Stats
	batchCPU  float64 // seconds the last Encode's compression took, its workers running at once
	scale     float64 // SetCPUScale's; 1 until then
}

// Stats are running totals since NewEncoder.
type Stats struct {
	Pages   [4]uint64 // pages encoded, per Class
	In      [4]uint64 // bytes of those pages, per Class
	Out     [4]uint64 // bytes Encode appended for them, headers included, per Class
	ByCodec [5]uint64 // pages sent with each Codec (after any fallback to Raw)
	Choice  [4]Codec  // the codec chosen now for each Class
}

// Stats' arrays are indexed by Class and Codec; these fail to compile if
// either gains a member without them.
var (
	_ = [numClasses]uint64(Stats{}.Pages)
	_ = [numCodecs]uint64(Stats{}.ByCodec)
)

// maxCoded is the most room coding one page can take before the encoder
// falls back to Raw: a header and S2's worst case, which is above zstd's.
var maxCoded = 2 + s2.MaxEncodedLen(PageSize)

// minChunk is the fewest pages worth handing to a worker goroutine; below
// it the start-up costs more than the parallelism gains.
const minChunk = 16

// NewEncoder returns an encoder compressing on the given number of
// workers; workers ≤ 0 means runtime.GOMAXPROCS(0).
func NewEncoder(workers int) *Encoder {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	e := &Encoder{scale: 1}
	for class := range numClasses {
		e.choice[class] = candidates[class][0]
	}
	for range workers {
		e.workers = append(e.workers, newWorker())
	}
	e.rechooseLocked() // no one else has e yet
	return e
}

// SetBandwidth tells the encoder the link's rate in bytes/s; 0 (or less)
// means unknown, and then compression is assumed to pay whenever it
// shrinks a page.
func (e *Encoder) SetBandwidth(bytesPerSecond float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.bandwidth = max(bytesPerSecond, 0)
	e.rechooseLocked()
}

// SetCPUScale has a memoized encoder (Memoize) take each coding to cost
// scale times the CPU time its memo measured, in its choice of codecs and
// in BatchCPU: what a simulation asks of a busier machine than the one it
// runs on. It is set before the first Encode.
func (e *Encoder) SetCPUScale(scale float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if scale > 0 {
		e.scale = scale
	}
}

// Stats returns the running totals and the current choices.
func (e *Encoder) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.totals
	s.Choice = e.choice
	return s
}

func (e *Encoder) costingLocked() costing {
	return costing{bandwidth: e.bandwidth, workers: len(e.workers)}
}

func (e *Encoder) rechooseLocked() {
	c := e.costingLocked()
	for class := range Class(numClasses) {
		e.choice[class] = c.choose(&e.model, class, e.choice[class])
	}
}

// Measure codes pages as Encode would now, each with the codec chosen for
// its class, and returns their bytes and the bytes coded (headers
// included), without counting them in Stats or in what the choice of
// codecs learns from: an estimate of what sending them would take.
func (e *Encoder) Measure(pages [][]byte) (in, out uint64) {
	e.mu.Lock()
	choice := e.choice
	e.mu.Unlock()
	e.encodeMu.Lock()
	defer e.encodeMu.Unlock()
	w := e.workers[0] // its zstd encoder; Measure touches none of its counts
	buf := w.out[:0]
	for _, page := range pages {
		switch class := Classify(page); class {
		case Zero:
			buf = appendHeader(buf[:0], ZeroMarker, 0)
		case Repeat:
			buf, _ = w.appendCoded(buf[:0], page, Words)
		default:
			buf, _ = w.appendCoded(buf[:0], page, choice[class])
		}
		in += PageSize
		out += uint64(len(buf))
	}
	w.out = buf
	return in, out
}

// Encode appends to dst the coded form of the pages gfns[i] taken from
// mem[gfn*PageSize:], compressed by the workers in parallel, and returns
// the extended dst; the format is in the package comment. Encode never
// fails on valid input: the only error is a gfn whose page lies outside
// mem, and then nothing is appended.
func (e *Encoder) Encode(dst []byte, gfns []uint64, mem []byte) ([]byte, error) {
	return e.EncodeFrom(dst, gfns, uint64(len(mem)/PageSize), func(gfn uint64) []byte {
		return mem[gfn*PageSize : (gfn+1)*PageSize : (gfn+1)*PageSize]
	})
}

// EncodeFrom is Encode for a guest of pages pages whose memory is not
// mapped in one piece: page returns page gfn's PageSize bytes. It is
// called from several goroutines at once, and what it returns must stay
// unchanged until EncodeFrom returns.
func (e *Encoder) EncodeFrom(dst []byte, gfns []uint64, pages uint64, page func(gfn uint64) []byte) ([]byte, error) {
	for i, gfn := range gfns {
		if gfn >= pages {
			return dst, fmt.Errorf("encode page %d of %d: gfn %#x outside guest memory of %d pages",
				i, len(gfns), gfn, pages)
		}
	}
	if len(gfns) == 0 {
		return dst, nil
	}

	e.encodeMu.Lock()
	defer e.encodeMu.Unlock()

	// Split the batch into contiguous chunks, one per worker, so the
	// output is the chunks' outputs in order.
	chunks := min(len(e.workers), (len(gfns)+minChunk-1)/minChunk)
	if e.workers[0].memo != nil {
		// Memoized pages cost a copy each: one goroutine does them
		// faster than several and a concatenation. (The costing still
		// counts every worker, so the codecs chosen are the same.)
		chunks = 1
	}
	size := (len(gfns) + chunks - 1) / chunks
	chunks = (len(gfns) + size - 1) / size
	used := e.workers[:chunks]

	e.mu.Lock()
	for _, w := range used {
		w.start(&e.model, e.choice, e.costingLocked(), e.scale)
	}
	e.mu.Unlock()

	// The first chunk is coded straight onto dst by this goroutine; the
	// others into their workers' buffers, appended after.
	var wg sync.WaitGroup
	for i := 1; i < chunks; i++ {
		w := used[i]
		part := gfns[i*size : min((i+1)*size, len(gfns))]
		wg.Go(func() { w.out = w.encode(w.out[:0], part, page) })
	}
	dst = used[0].encode(dst, gfns[:min(size, len(gfns))], page)
	wg.Wait()
	for _, w := range used[1:] {
		dst = append(dst, w.out...)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	e.batchCPU = 0
	for _, w := range used {
		e.model.fold(&w.tally)
		e.totals.add(&w.stats)
		e.batchCPU += w.cpu
	}
	// Live, the batch is split over this many workers coding at once.
	e.batchCPU /= float64(min(len(e.workers), (len(gfns)+minChunk-1)/minChunk))
	e.rechooseLocked()
	return dst, nil
}

func (s *Stats) add(o *Stats) {
	for i := range s.Pages {
		s.Pages[i] += o.Pages[i]
		s.In[i] += o.In[i]
		s.Out[i] += o.Out[i]
	}
	for i := range s.ByCodec {
		s.ByCodec[i] += o.ByCodec[i]
	}
}

// worker is one encoding goroutine's state, kept across batches.
type worker struct {
	zstd *zstd.Encoder // this worker's own: its tables are not shared
	out  []byte        // output of a chunk that is not the batch's first

	// Set by start at each batch: a copy of the encoder's model that the
	// worker keeps learning in during the batch, the choices that follow
	// from it, and the costing they are made under.
	model  model
	choice [numClasses]Codec
	cost   costing

	tally [numClasses][numCodecs]tally // this batch's observations
	stats Stats                        // this batch's counts

	// seen counts pages per class over the worker's life; it paces the
	// sampling of codecs not chosen.
	seen [numClasses]uint64

	cpu   float64 // seconds spent coding in this batch (timed codecs only)
	scale float64 // memoized codings' CPU time taken at this many times (SetCPUScale)

	// Set by Memoize: codings and classes by buffer, shared with other
	// encoders (memo) and this worker's copy of what it used (read
	// without a lock, page after page).
	memo    *Memo
	codings map[memoKey]memoEntry
	classes map[*byte]Class
}

func newWorker() *worker {
	z, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false), // the migration stream has its own checksums
		zstd.WithLowerEncoderMem(true),
	)
	if err != nil {
		// The options are constants; only a change to them can fail.
		panic(fmt.Sprintf("mecom: zstd encoder: %v", err))
	}
	w := &worker{zstd: z}
	// Code a page with each codec once, so that the first page timed
	// does not pay for allocating the codecs' tables.
	var page [PageSize]byte
	copy(page[:], "warm up the codecs' tables before the first timed page")
	for _, c := range []Codec{S2, Zstd} {
		w.out, _ = w.appendCoded(w.out[:0], page[:], c)
	}
	return w
}

func (w *worker) start(m *model, choice [numClasses]Codec, c costing, scale float64) {
	w.model = *m
	w.scale = scale
	w.choice = choice
	w.cost = c
	w.tally = [numClasses][numCodecs]tally{}
	w.stats = Stats{}
	w.cpu = 0
}

// encode appends the coded pages gfns, read with pageOf, to dst.
func (w *worker) encode(dst []byte, gfns []uint64, pageOf func(uint64) []byte) []byte {
	for _, gfn := range gfns {
		page := pageOf(gfn)
		start := len(dst)
		class := w.classify(page)
		var sent Codec
		switch class {
		case Zero:
			dst, sent = appendHeader(dst, ZeroMarker, 0), ZeroMarker
		case Repeat:
			if w.memo != nil {
				dst, sent, _ = w.memoCoded(dst, page, Words)
				break
			}
			dst, sent = w.appendCoded(dst, page, Words)
		default:
			codec := w.pick(class)
			if codec == Raw { // its cost is known: see rawCPU
				dst, sent = w.appendCoded(dst, page, Raw)
				break
			}
			// Room first, so that the time taken is the codec's and not
			// that of growing dst.
			dst = slices.Grow(dst, maxCoded)
			var cpu float64
			if w.memo != nil {
				dst, sent, cpu = w.memoCoded(dst, page, codec)
				cpu *= w.scale
			} else {
				t0 := time.Now()
				dst, sent = w.appendCoded(dst, page, codec)
				cpu = time.Since(t0).Seconds()
			}
			bytes := float64(len(dst) - start)
			w.cpu += cpu
			w.model.est[class][codec].observe(bytes, cpu)
			w.tally[class][codec].add(bytes, cpu)
			w.choice[class] = w.cost.choose(&w.model, class, w.choice[class])
		}
		w.stats.Pages[class]++
		w.stats.In[class] += PageSize
		w.stats.Out[class] += uint64(len(dst) - start)
		w.stats.ByCodec[sent]++
	}
	return dst
}

// classify is Classify, remembered per buffer when memoizing.
func (w *worker) classify(page []byte) Class {
	if w.memo == nil {
		return Classify(page)
	}
	p := unsafe.SliceData(page)
	if c, ok := w.classes[p]; ok {
		return c
	}
	m := w.memo
	m.mu.Lock()
	c, ok := m.classes[p]
	if !ok {
		c = Classify(page)
		m.classes[p] = c
	}
	m.mu.Unlock()
	w.classes[p] = c
	return c
}

// memoCoded appends page coded with codec as appendCoded does, coding each
// buffer once per codec and reusing the bytes, the codec sent and the CPU
// time the coding took.
func (w *worker) memoCoded(dst, page []byte, codec Codec) ([]byte, Codec, float64) {
	key := memoKey{unsafe.SliceData(page), codec}
	if m, ok := w.codings[key]; ok {
		return append(dst, m.coded...), m.sent, m.cpu
	}
	w.memo.mu.Lock()
	m, ok := w.memo.codings[key]
	w.memo.mu.Unlock()
	if ok {
		w.codings[key] = m
		return append(dst, m.coded...), m.sent, m.cpu
	}
	// The fastest of three codings: one timing on a busy machine can be
	// several times the codec's cost, and every page this buffer stands
	// for would inherit it.
	start := len(dst)
	var sent Codec
	cpu := math.Inf(1)
	for range 3 {
		t0 := time.Now()
		dst, sent = w.appendCoded(dst[:start], page, codec)
		cpu = min(cpu, time.Since(t0).Seconds())
	}
	m = memoEntry{coded: slices.Clone(dst[start:]), sent: sent, cpu: cpu}
	w.memo.mu.Lock()
	if first, ok := w.memo.codings[key]; ok { // another encoder timed it meanwhile: one timing per buffer
		m = first
	} else {
		w.memo.codings[key] = m
	}
	w.memo.mu.Unlock()
	w.codings[key] = m
	return append(dst[:start], m.coded...), m.sent, m.cpu
}

// Prime codes each of pages with every codec its class may take and keeps
// the codings in m, each timed as a live encoder times its pages: on
// workers goroutines at once (GOMAXPROCS where workers is 0), the mean of
// three codings, while whatever else runs on the machine (a guest's vCPUs)
// runs on. Memoized codings of these buffers then reuse those timings, so
// that a simulation's codec choice sees the machine's load as a live
// migration's does, not the fastest coding of an idle moment.
func (m *Memo) Prime(pages [][]byte, workers int) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type job struct {
		page  []byte
		codec Codec
	}
	var jobs []job
	for _, p := range pages {
		if len(p) != PageSize {
			continue
		}
		class := Classify(p)
		m.mu.Lock()
		m.classes[unsafe.SliceData(p)] = class
		m.mu.Unlock()
		for _, c := range candidates[class] {
			if c != Raw && c != ZeroMarker {
				jobs = append(jobs, job{p, c})
			}
		}
	}
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for range min(workers, len(jobs)) {
		w := newWorker()
		wg.Go(func() {
			for {
				next.Lock()
				if i >= len(jobs) {
					next.Unlock()
					return
				}
				j := jobs[i]
				i++
				next.Unlock()
				var coded []byte
				var sent Codec
				total := 0.0
				for range 3 {
					coded = slices.Grow(coded[:0], maxCoded)
					t0 := time.Now()
					coded, sent = w.appendCoded(coded, j.page, j.codec)
					total += time.Since(t0).Seconds()
				}
				m.mu.Lock()
				m.codings[memoKey{unsafe.SliceData(j.page), j.codec}] = memoEntry{coded: slices.Clone(coded), sent: sent, cpu: total / 3}
				m.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

type memoKey struct {
	page  *byte
	codec Codec
}

type memoEntry struct {
	coded []byte
	sent  Codec
	cpu   float64
}

// BatchCPU is how long the last Encode spent compressing, with the batch
// split over the workers as it is when pages are not memoized: what a
// simulated migration charges to its clock, memoized codings included at
// the time they first took.
func (e *Encoder) BatchCPU() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return time.Duration(e.batchCPU * float64(time.Second))
}

// Memo holds codings and classes of unchanging buffers, by buffer (see
// Encoder.Memoize). It is safe for concurrent use by several encoders.
type Memo struct {
	mu      sync.Mutex
	codings map[memoKey]memoEntry
	classes map[*byte]Class
}

// NewMemo returns an empty Memo.
func NewMemo() *Memo {
	return &Memo{codings: map[memoKey]memoEntry{}, classes: map[*byte]Class{}}
}

// Memoize tells e that the pages it codes are drawn from a small set of
// buffers whose contents never change, as the simulator's sample pages
// are: each buffer is then classified and coded once per codec, and the
// result — its bytes, and the CPU time the coding took — kept in m and
// reused for every later page that is the same buffer. The codec choice
// sees the same observations as if each page had been coded afresh.
// Encoders that share m (simulations of the same buffers) see the same
// timings, so their codec choices do not differ by when each timed a
// coding. Call it before the first Encode.
func (e *Encoder) Memoize(m *Memo) {
	e.encodeMu.Lock()
	defer e.encodeMu.Unlock()
	for _, w := range e.workers {
		w.memo, w.codings, w.classes = m, map[memoKey]memoEntry{}, map[*byte]Class{}
	}
}

// pick returns the codec to try on the next page of class: a candidate
// still warming up, a sample of one not chosen, or the choice.
func (w *worker) pick(class Class) Codec {
	cands := candidates[class]
	for _, c := range cands {
		if !w.model.known(class, c) {
			return c
		}
	}
	chosen := w.choice[class]
	k := w.seen[class] % sampleEvery
	w.seen[class]++
	// Raw is never sampled: its cost is known without trying it.
	others := 0
	for _, c := range cands {
		if c != chosen && c != Raw {
			others++
		}
	}
	if others == 0 || k%(sampleEvery/uint64(others)) != 0 {
		return chosen
	}
	want := k / (sampleEvery / uint64(others))
	for _, c := range cands {
		if c == chosen || c == Raw {
			continue
		}
		if want == 0 {
			return c
		}
		want--
	}
	return chosen
}

// appendCoded appends page coded with codec, header first, and returns
// the codec actually sent: Raw when the coding would not be smaller.
func (w *worker) appendCoded(dst, page []byte, codec Codec) ([]byte, Codec) {
	hdr := len(dst)
	switch codec {
	case Words:
		dst = append(dst, 0, 0)
		if out, ok := appendWords(dst, page, maxPayload); ok {
			return patchHeader(out, hdr, Words), Words
		}
		// Not runs after all; a general compressor may still do well.
		return w.appendCoded(dst[:hdr], page, S2)
	case S2:
		dst = slices.Grow(dst, maxCoded)
		dst = append(dst, 0, 0)
		// s2.Encode writes from the start of the slice it is given and
		// uses it in place when its capacity suffices, as it does here.
		enc := s2.Encode(dst[len(dst):cap(dst)], page)
		dst = dst[:len(dst)+len(enc)]
		if len(enc) <= maxPayload {
			return patchHeader(dst, hdr, S2), S2
		}
	case Zstd:
		dst = w.zstd.EncodeAll(page, append(dst, 0, 0))
		if len(dst)-hdr-2 <= maxPayload {
			return patchHeader(dst, hdr, Zstd), Zstd
		}
	}
	return append(appendHeader(dst[:hdr], Raw, 0), page...), Raw
}

// patchHeader writes the two-byte header of the payload that follows it
// at dst[hdr:], now that the payload's length is known.
func patchHeader(dst []byte, hdr int, codec Codec) []byte {
	appendHeader(dst[hdr:hdr], codec, len(dst)-hdr-2)
	return dst
}
