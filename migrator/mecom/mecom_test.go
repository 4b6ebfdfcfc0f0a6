package mecom

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/pagecast/pagecast/guest"
)

// The package assumes the guest's page size; this fails to compile if
// they ever differ.
var (
	_ [PageSize - guest.PageSize]struct{}
	_ [guest.PageSize - PageSize]struct{}
)

// arena returns size bytes of guest memory (from guest physical address
// 0) whose arena guest.FillArena has filled with mix; the pages below the
// arena are zero.
func arena(mix guest.Mix, size int) []byte {
	mem := make([]byte, guest.ArenaStart+size)
	guest.FillArena(mem, mix, 1)
	return mem
}

// defaultArena is 64 MiB of the default mix, shared by the tests and
// benchmarks that only read it.
var defaultArena = sync.OnceValue(func() []byte { return arena(guest.DefaultMix, 64<<20) })

// kindClass is the class each of the generator's kinds should get, with a
// mix that makes every page of the arena that kind.
var kindClass = []struct {
	kind  string
	mix   guest.Mix
	class Class
}{
	{"zero", guest.Mix{Zero: 100}, Zero},
	{"repeat", guest.Mix{Repeat: 100}, Repeat},
	{"text", guest.Mix{Text: 100}, LowEntropy},
	{"random", guest.Mix{Random: 100}, HighEntropy},
}

// kindPages returns n arena pages all of one kind, by construction.
func kindPages(mix guest.Mix, n int) [][]byte {
	mem := arena(mix, n*PageSize)[guest.ArenaStart:]
	pages := make([][]byte, n)
	for i := range pages {
		pages[i] = mem[i*PageSize : (i+1)*PageSize]
	}
	return pages
}

// overwrite stores counter values in words of page, as the guest's
// workloads do.
func overwrite(page []byte, words int, counter uint32) {
	for i := range words {
		off := (i*1009*4 + int(counter)*4) % PageSize
		binary.LittleEndian.PutUint32(page[off:], counter+uint32(i))
	}
}

func clone(p []byte) []byte { return append([]byte(nil), p...) }

func TestNames(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{Zero.String(), "zero"},
		{Repeat.String(), "repeat"},
		{LowEntropy.String(), "low-entropy"},
		{HighEntropy.String(), "high-entropy"},
		{Class(9).String(), "class(9)"},
		{Raw.String(), "raw"},
		{ZeroMarker.String(), "zero-marker"},
		{Words.String(), "words"},
		{S2.String(), "s2"},
		{Zstd.String(), "zstd"},
		{Codec(7).String(), "codec(7)"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestIsZero(t *testing.T) {
	set := func(n, at int) []byte {
		p := make([]byte, n)
		if at >= 0 {
			p[at] = 1
		}
		return p
	}
	tests := []struct {
		name string
		page []byte
		want bool
	}{
		{"empty", nil, true},
		{"zero page", set(PageSize, -1), true},
		{"first byte", set(PageSize, 0), false},
		{"eighth byte", set(PageSize, 7), false},
		{"ninth byte", set(PageSize, 8), false},
		{"last byte", set(PageSize, PageSize-1), false},
		{"short zero", set(5, -1), true},
		{"short", set(5, 4), false},
		{"three zero pages", set(3*PageSize, -1), true},
		{"three pages, last byte", set(3*PageSize, 3*PageSize-1), false},
		{"page and a bit, last byte", set(PageSize+3, PageSize+2), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsZero(tt.page); got != tt.want {
				t.Errorf("IsZero = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	kinds := map[string][]byte{}
	for _, k := range kindClass {
		kinds[k.kind] = kindPages(k.mix, 1)[0]
	}
	words := func(ws ...uint32) []byte {
		p := make([]byte, PageSize)
		part := PageSize / len(ws) &^ 3
		for i := 0; i < PageSize; i += 4 {
			binary.LittleEndian.PutUint32(p[i:], ws[min(i/part, len(ws)-1)])
		}
		return p
	}
	with := func(p []byte, n int) []byte {
		p = clone(p)
		overwrite(p, n, 1000)
		return p
	}
	// Sixteen-byte records of one counter and constant fields: regular,
	// but many distinct words.
	records := make([]byte, PageSize)
	for i := 0; i < PageSize; i += 16 {
		binary.LittleEndian.PutUint32(records[i:], uint32(i))
		binary.LittleEndian.PutUint32(records[i+8:], 0xdeadbeef)
	}
	tests := []struct {
		name string
		page []byte
		want Class
	}{
		{"zero", make([]byte, PageSize), Zero},
		{"one word", words(0x01020304), Repeat},
		{"four words", words(1, 2, 3, 4), Repeat},
		{"zero but one counter", with(make([]byte, PageSize), 1), Repeat},
		{"one word, ten counters", with(words(7), 10), Repeat},
		{"one word, a hundred counters", with(words(7), 100), LowEntropy},
		{"16-byte records", records, LowEntropy},
		{"generator repeat", kinds["repeat"], Repeat},
		{"generator text", kinds["text"], LowEntropy},
		{"generator text, counters", with(kinds["text"], 20), LowEntropy},
		{"generator random", kinds["random"], HighEntropy},
		{"generator random, counters", with(kinds["random"], 20), HighEntropy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.page); got != tt.want {
				t.Errorf("Classify = %v, want %v (entropy estimate %.2f, words %d bytes)",
					got, tt.want, sampleEntropy(tt.page), wordsSize(tt.page, PageSize))
			}
		})
	}
}

// TestClassifyAgreesWithGenerator classifies pages whose kind is known by
// construction (an arena of one kind only), then checks that the default
// mix's classes come out in its proportions.
func TestClassifyAgreesWithGenerator(t *testing.T) {
	const n = 1024
	for _, k := range kindClass {
		t.Run(k.kind, func(t *testing.T) {
			agree := 0
			var got [numClasses]int
			for _, p := range kindPages(k.mix, n) {
				c := Classify(p)
				got[c]++
				if c == k.class {
					agree++
				}
			}
			t.Logf("%d of %d pages %v; all: %v", agree, n, k.class, got)
			if agree < n*95/100 {
				t.Errorf("%d of %d %s pages classified %v, want ≥ 95%%; classes %v", agree, n, k.kind, k.class, got)
			}
		})
	}
	t.Run("default mix", func(t *testing.T) {
		arena := defaultArena()[guest.ArenaStart:]
		var got [numClasses]int
		pages := len(arena) / PageSize
		for i := range pages {
			got[Classify(arena[i*PageSize:(i+1)*PageSize])]++
		}
		m := guest.DefaultMix
		want := [numClasses]int{m.Zero, m.Repeat, m.Text, m.Random}
		for c, share := range want {
			if pct := 100 * float64(got[c]) / float64(pages); pct < float64(share)-1 || pct > float64(share)+1 {
				t.Errorf("%v: %.1f%% of pages, want %d%% ± 1", Class(c), pct, share)
			}
		}
		t.Logf("classes of %d pages: %v", pages, got)
	})
}

func TestSampleEntropy(t *testing.T) {
	// The estimates the threshold sits between, over many pages.
	for _, k := range kindClass[2:] {
		lo, hi := 8.0, 0.0
		for _, p := range kindPages(k.mix, 512) {
			h := sampleEntropy(p)
			lo, hi = min(lo, h), max(hi, h)
		}
		t.Logf("%s pages: entropy estimate %.2f to %.2f bits/byte", k.kind, lo, hi)
		if k.class == LowEntropy && hi > highEntropyBits-1 || k.class == HighEntropy && lo < highEntropyBits+0.3 {
			t.Errorf("%s pages estimate %.2f to %.2f, too near the threshold %.1f", k.kind, lo, hi, highEntropyBits)
		}
	}
}

// testPages returns named pages of every class and some awkward cases.
func testPages() []struct {
	name string
	page []byte
} {
	type named = struct {
		name string
		page []byte
	}
	var ps []named
	for _, k := range kindClass {
		for i, p := range kindPages(k.mix, 4) {
			ps = append(ps, named{k.kind, p})
			if i > 0 {
				q := clone(p)
				overwrite(q, i*i*3, uint32(i))
				ps = append(ps, named{k.kind + " with counters", q})
			}
		}
	}
	// A page of runs just too many for Words to beat the page.
	runs := make([]byte, PageSize)
	for i := 0; i < PageSize; i += 8 {
		binary.LittleEndian.PutUint32(runs[i:], uint32(i))
		binary.LittleEndian.PutUint32(runs[i+4:], uint32(i))
	}
	ps = append(ps, named{"pairs of words", runs})
	alt := make([]byte, PageSize)
	for i := 0; i < PageSize; i += 4 {
		binary.LittleEndian.PutUint32(alt[i:], uint32(i/4%2))
	}
	ps = append(ps, named{"alternating words", alt})
	last := make([]byte, PageSize)
	last[PageSize-1] = 0xff
	ps = append(ps, named{"last byte set", last})
	return ps
}

// TestRoundTripEveryCodec codes every test page with every codec and
// decodes it.
func TestRoundTripEveryCodec(t *testing.T) {
	w := newWorker()
	for _, tp := range testPages() {
		for codec := range Codec(numCodecs) {
			if codec == ZeroMarker && !IsZero(tp.page) {
				continue
			}
			t.Run(tp.name+"/"+codec.String(), func(t *testing.T) {
				var blob []byte
				var sent Codec
				if codec == ZeroMarker {
					blob, sent = appendHeader(nil, ZeroMarker, 0), ZeroMarker
				} else {
					blob, sent = w.appendCoded(nil, tp.page, codec)
				}
				if sent != codec && sent != Raw && !(codec == Words && sent == S2) {
					t.Errorf("coded with %v, sent %v", codec, sent)
				}
				if len(blob) > MaxEncodedLen(1) {
					t.Errorf("%d bytes, more than MaxEncodedLen(1) = %d", len(blob), MaxEncodedLen(1))
				}
				checkDecode(t, blob, [][]byte{tp.page})
			})
		}
	}
}

// checkDecode decodes blob and compares its pages with want.
func checkDecode(t *testing.T, blob []byte, want [][]byte) {
	t.Helper()
	got := 0
	err := Decode(blob, len(want), func(i int, data []byte) {
		if i != got {
			t.Fatalf("page %d delivered as %d", got, i)
		}
		if !bytes.Equal(data, want[i]) {
			t.Fatalf("page %d differs", i)
		}
		got++
	})
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if got != len(want) {
		t.Fatalf("decoded %d pages, want %d", got, len(want))
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	var pages [][]byte
	for _, tp := range testPages() {
		pages = append(pages, tp.page)
	}
	mem := bytes.Join(pages, nil)
	gfns := make([]uint64, len(pages))
	for i := range gfns {
		gfns[i] = uint64(i)
	}
	for _, workers := range []int{1, 2, 7} {
		e := NewEncoder(workers)
		prefix := []byte("kept")
		blob, err := e.Encode(clone(prefix), gfns, mem)
		if err != nil {
			t.Fatalf("workers %d: %v", workers, err)
		}
		if !bytes.HasPrefix(blob, prefix) {
			t.Fatalf("workers %d: dst's bytes were not kept", workers)
		}
		checkDecode(t, blob[len(prefix):], pages)
		checkStats(t, e.Stats(), len(pages), len(blob)-len(prefix))
	}
}

// checkStats checks that stats account for pages pages and out bytes.
func checkStats(t *testing.T, s Stats, pages, out int) {
	t.Helper()
	var n, in, o, byCodec uint64
	for c := range numClasses {
		n += s.Pages[c]
		in += s.In[c]
		o += s.Out[c]
	}
	for _, k := range s.ByCodec {
		byCodec += k
	}
	if n != uint64(pages) || byCodec != uint64(pages) || in != uint64(pages)*PageSize || o != uint64(out) {
		t.Errorf("stats count %d pages (%d by codec), %d bytes in, %d out; want %d pages, %d in, %d out",
			n, byCodec, in, o, pages, pages*PageSize, out)
	}
	if s.Choice[Zero] != ZeroMarker || s.Choice[Repeat] != Words {
		t.Errorf("choices %v, want zero-marker for zero pages and words for repeat", s.Choice)
	}
}

// TestEncodeArena round-trips the 64 MiB arena of the default mix, as
// generated and with counters written into every 13th page, in shuffled
// batches of the migrator's size, and reports the compression ratios.
func TestEncodeArena(t *testing.T) {
	pristine := defaultArena()
	counted := clone(pristine)
	for gfn := guest.ArenaStart / PageSize; gfn < len(counted)/PageSize; gfn += 13 {
		overwrite(counted[gfn*PageSize:(gfn+1)*PageSize], gfn%3+1, uint32(gfn))
	}
	// The arena's pages, shuffled: the lower pages are all zero and not
	// part of the mix.
	order := rand.New(rand.NewPCG(1, 2)).Perm(len(pristine)/PageSize - guest.ArenaStart/PageSize)
	for i := range order {
		order[i] += guest.ArenaStart / PageSize
	}
	const batch = 256 // the migrator's MaxBatch

	for _, tt := range []struct {
		name      string
		mem       []byte
		bandwidth float64
	}{
		{"default mix", pristine, 0},
		{"default mix", pristine, 10e9},
		{"with counters", counted, 1e6},
	} {
		t.Run(fmt.Sprintf("%s/%g B/s", tt.name, tt.bandwidth), func(t *testing.T) {
			encodeArena(t, tt.mem, order, batch, tt.bandwidth)
		})
	}
}

func encodeArena(t *testing.T, mem []byte, order []int, batch int, bandwidth float64) {
	e := NewEncoder(0)
	e.SetBandwidth(bandwidth)
	total, zero := 0, 0
	gfns := make([]uint64, 0, batch)
	want := make([][]byte, 0, batch)
	var blob []byte
	for first := 0; first < len(order); first += batch {
		gfns, want = gfns[:0], want[:0]
		for _, p := range order[first:min(first+batch, len(order))] {
			gfns = append(gfns, uint64(p))
			want = append(want, mem[p*PageSize:(p+1)*PageSize])
			if IsZero(want[len(want)-1]) {
				zero++
			}
		}
		var err error
		if blob, err = e.Encode(blob[:0], gfns, mem); err != nil {
			t.Fatal(err)
		}
		if len(blob) > MaxEncodedLen(len(gfns)) {
			t.Fatalf("%d bytes for %d pages, more than MaxEncodedLen", len(blob), len(gfns))
		}
		total += len(blob)
		checkDecode(t, blob, want)
	}
	s := e.Stats()
	pages := len(order)
	checkStats(t, s, pages, total)
	t.Logf("%d pages (%d zero) in %d bytes: %.3f of all pages, %.3f of non-zero pages; choices %v, pages by codec %v",
		pages, zero, total, float64(total)/float64(pages*PageSize),
		float64(total)/float64((pages-zero)*PageSize), s.Choice, s.ByCodec)
	for c := range numClasses {
		t.Logf("  %-12v %6d pages, ratio %.4f", Class(c), s.Pages[c], float64(s.Out[c])/float64(s.In[c]))
	}
}

func TestEncodeBadGFN(t *testing.T) {
	mem := make([]byte, 4*PageSize)
	e := NewEncoder(1)
	for _, gfns := range [][]uint64{{4}, {0, 1, 2, 3, 4}, {1 << 63}, {^uint64(0) / PageSize}} {
		dst := []byte("kept")
		out, err := e.Encode(dst, gfns, mem)
		if err == nil {
			t.Errorf("gfns %v: no error", gfns)
		}
		if string(out) != "kept" {
			t.Errorf("gfns %v: dst became %q", gfns, out)
		}
	}
	if out, err := e.Encode(nil, nil, mem); err != nil || len(out) != 0 {
		t.Errorf("empty batch: %q, %v", out, err)
	}
	if s := e.Stats(); s.Pages != [4]uint64{} {
		t.Errorf("failed encodes counted pages: %v", s.Pages)
	}
}

func TestMaxEncodedLen(t *testing.T) {
	random := kindPages(guest.Mix{Random: 100}, 64)
	mem := bytes.Join(random, nil)
	gfns := make([]uint64, len(random))
	for i := range gfns {
		gfns[i] = uint64(i)
	}
	blob, err := NewEncoder(1).Encode(nil, gfns, mem)
	if err != nil {
		t.Fatal(err)
	}
	if len(blob) > MaxEncodedLen(len(gfns)) {
		t.Errorf("%d random pages took %d bytes, more than MaxEncodedLen %d", len(gfns), len(blob), MaxEncodedLen(len(gfns)))
	}
	for n, want := range map[int]int{-1: 0, 0: 0, 1: PageSize + 1, 256: 256 * (PageSize + 1)} {
		if got := MaxEncodedLen(n); got != want {
			t.Errorf("MaxEncodedLen(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestChoiceFollowsBandwidth checks that a slow link gets low-entropy
// pages compressed and a very fast one gets them sent raw, and that a new
// bandwidth changes the choice at once.
func TestChoiceFollowsBandwidth(t *testing.T) {
	mem := defaultArena()
	gfns := make([]uint64, 256)
	encode := func(bw float64) *Encoder {
		e := NewEncoder(1)
		e.SetBandwidth(bw)
		var blob []byte
		for first := guest.ArenaStart / PageSize; first+len(gfns) <= guest.ArenaStart/PageSize+4096; first += len(gfns) {
			for i := range gfns {
				gfns[i] = uint64(first + i)
			}
			var err error
			if blob, err = e.Encode(blob[:0], gfns, mem); err != nil {
				t.Fatal(err)
			}
		}
		return e
	}
	slow, fast := encode(1e6), encode(10e9)
	ss, fs := slow.Stats(), fast.Stats()
	t.Logf("1 MB/s: choices %v, low-entropy ratio %.3f", ss.Choice, float64(ss.Out[LowEntropy])/float64(ss.In[LowEntropy]))
	t.Logf("10 GB/s: choices %v, low-entropy ratio %.3f", fs.Choice, float64(fs.Out[LowEntropy])/float64(fs.In[LowEntropy]))
	if c := ss.Choice[LowEntropy]; c != S2 && c != Zstd {
		t.Errorf("1 MB/s: low-entropy pages coded %v, want s2 or zstd", c)
	}
	if c := fs.Choice[LowEntropy]; c != Raw {
		t.Errorf("10 GB/s: low-entropy pages coded %v, want raw (compressing a page costs microseconds, sending it 0.4)", c)
	}
	for name, s := range map[string]Stats{"1 MB/s": ss, "10 GB/s": fs} {
		if s.Choice[HighEntropy] != Raw {
			t.Errorf("%s: high-entropy pages coded %v, want raw", name, s.Choice[HighEntropy])
		}
	}
	if ss.Out[LowEntropy] >= fs.Out[LowEntropy] {
		t.Errorf("low-entropy pages took %d bytes at 1 MB/s, not fewer than %d at 10 GB/s", ss.Out[LowEntropy], fs.Out[LowEntropy])
	}
	slow.SetBandwidth(10e9)
	if c := slow.Stats().Choice[LowEntropy]; c != Raw {
		t.Errorf("after SetBandwidth(10e9): low-entropy pages coded %v, want raw", c)
	}
}

// TestChoose checks the cost model on made-up measurements.
func TestChoose(t *testing.T) {
	const us = 1e-6
	est := func(bytes, cpu float64) estimate { return estimate{n: warmup, bytes: bytes, cpu: cpu} }
	lowModel := func(s2, zstd estimate) *model {
		var m model
		m.est[LowEntropy][S2] = s2
		m.est[LowEntropy][Zstd] = zstd
		return &m
	}
	s2, zstd := est(2900, 10*us), est(2000, 35*us)
	tests := []struct {
		name      string
		m         *model
		bandwidth float64
		workers   int
		current   Codec
		want      Codec
	}{
		{"unknown bandwidth: fewest bytes", lowModel(s2, zstd), 0, 1, S2, Zstd},
		{"unknown bandwidth: same bytes, less cpu", lowModel(est(2000, 10*us), zstd), 0, 1, Zstd, S2},
		{"unknown bandwidth: not shrinking", lowModel(est(4097, 1*us), est(4090, 2*us)), 0, 1, S2, Raw},
		{"1 MB/s", lowModel(s2, zstd), 1e6, 1, S2, Zstd},
		{"100 MB/s: zstd's cpu is the bottleneck", lowModel(s2, zstd), 100e6, 1, Zstd, S2},
		{"100 MB/s, 4 workers: link again", lowModel(s2, zstd), 100e6, 4, S2, Zstd},
		{"1 GB/s", lowModel(s2, zstd), 1e9, 1, S2, Raw},
		{"10 GB/s, 8 workers", lowModel(s2, zstd), 10e9, 8, S2, Raw},
		{"hysteresis keeps a near tie", lowModel(est(2000, 10*us), est(1950, 40*us)), 1e6, 1, S2, S2},
		{"unmeasured zstd is not chosen", lowModel(s2, estimate{n: 1, bytes: 100, cpu: us}), 1e6, 1, S2, S2},
		{"nothing measured: raw, known without measuring", &model{}, 1e6, 1, S2, Raw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := costing{bandwidth: tt.bandwidth, workers: tt.workers}
			if got := c.choose(tt.m, LowEntropy, tt.current); got != tt.want {
				t.Errorf("choose = %v, want %v", got, tt.want)
			}
		})
	}
	if got := (costing{workers: 1}).choose(&model{}, Zero, Raw); got != ZeroMarker {
		t.Errorf("zero pages: %v, want zero-marker", got)
	}
}

// TestPickSamples checks that, once warm, a worker codes one page in 64
// with each codec it has not chosen, and never samples Raw.
func TestPickSamples(t *testing.T) {
	w := newWorker()
	for _, c := range []Codec{S2, Zstd} {
		w.model.est[LowEntropy][c] = estimate{n: warmup, bytes: 2000, cpu: 1e-5}
	}
	w.choice[LowEntropy] = Zstd
	var got [numCodecs]int
	for range 64 * 10 {
		got[w.pick(LowEntropy)]++
	}
	if got[S2] != 10 || got[Raw] != 0 || got[Zstd] != 630 {
		t.Errorf("640 picks: %v by codec, want 10 s2, 630 zstd", got)
	}

	cold := newWorker()
	for i := range 2 * warmup {
		want := []Codec{S2, Zstd}[i/warmup]
		c := cold.pick(LowEntropy)
		if c != want {
			t.Fatalf("warm-up pick %d: %v, want %v", i, c, want)
		}
		cold.model.est[LowEntropy][c].observe(2000, 1e-5)
	}
}

func TestEstimate(t *testing.T) {
	var e estimate
	for _, cpu := range []float64{1, 2, 3, 2} {
		e.observe(100, cpu)
	}
	if math.Abs(e.cpu-2) > 1e-12 || e.bytes != 100 {
		t.Errorf("first observations average to %+v, want the mean cpu 2", e)
	}
	e.observe(100, 1000)
	if want := 2 + (cpuOutlier*2-2)/5.0; math.Abs(e.cpu-want) > 1e-12 {
		t.Errorf("an outlier moved the average to %v, want it bounded to %v", e.cpu, want)
	}
	var a, b estimate
	for range 100 {
		a.observe(50, 1)
	}
	b.fold(100, 50, 1)
	for range 40 {
		a.observe(80, 3)
	}
	b.fold(40, 80, 3)
	if d := a.bytes - b.bytes; d > 1 || d < -1 {
		t.Errorf("fold %.2f bytes, observe %.2f", b.bytes, a.bytes)
	}
}

func TestDecodeCorrupt(t *testing.T) {
	w := newWorker()
	text := kindPages(guest.Mix{Text: 100}, 1)[0]
	coded := func(c Codec) []byte {
		b, sent := w.appendCoded(nil, text, c)
		if sent != c {
			t.Fatalf("text page sent %v, not %v", sent, c)
		}
		return b
	}
	s2Page, zstdPage := coded(S2), coded(Zstd)
	raw := append([]byte{0}, text...)
	withLen := func(c Codec, payload []byte) []byte {
		return append(appendHeader(nil, c, len(payload)), payload...)
	}
	// A zstd frame of a page one byte short, and one of two pages.
	short, _ := w.appendCoded(nil, text[:PageSize-1], Zstd)
	long := w.zstd.EncodeAll(append(clone(text), text...), nil)

	tests := []struct {
		name string
		blob []byte
		n    int
	}{
		{"empty blob, one page", nil, 1},
		{"more pages than bytes", []byte{0x20, 0x20}, 3},
		{"trailing byte", []byte{0x20, 0x20, 0x20}, 2},
		{"unknown codec 5", []byte{5 << codecShift}, 1},
		{"unknown codec 7", []byte{0xff, 0xff, 0xff}, 1},
		{"zero marker with length bits", []byte{0x21}, 1},
		{"raw with length bits", append([]byte{0x01}, text...), 1},
		{"raw truncated", raw[:PageSize], 1},
		{"length header truncated", []byte{0x60}, 1},
		{"zero length", []byte{0x60, 0}, 1},
		{"length over the limit", append([]byte{0x6f, 0xff}, make([]byte, 0xfff)...), 1},
		{"payload truncated", s2Page[:len(s2Page)-1], 1},
		{"words: run too long", withLen(Words, []byte{0x81, 0x08, 1, 2, 3, 4}), 1},
		{"words: zero run", withLen(Words, []byte{0, 1, 2, 3, 4, 0x80, 0x08, 1, 2, 3, 4}), 1},
		{"words: short of a page", withLen(Words, []byte{0xff, 0x07, 1, 2, 3, 4}), 1},
		{"words: word truncated", withLen(Words, []byte{0x80, 0x08, 1, 2, 3}), 1},
		{"words: bad uvarint", withLen(Words, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}), 1},
		{"s2: decoded length 4095", withLen(S2, append(binaryUvarint(PageSize-1), s2Page[4:]...)), 1},
		{"s2: decoded length 4 GiB", withLen(S2, append(binaryUvarint(1<<32-1), s2Page[4:]...)), 1},
		{"s2: garbage", withLen(S2, append(binaryUvarint(PageSize), 0xff, 0xff, 0xff, 0xff)), 1},
		{"zstd: garbage", withLen(Zstd, []byte("not a zstd frame at all")), 1},
		{"zstd: truncated frame", withLen(Zstd, zstdPage[2:len(zstdPage)-5]), 1},
		{"zstd: page one byte short", short, 1},
		{"zstd: two pages", withLen(Zstd, long[:min(len(long), maxPayload)]), 1},
		{"zstd: frame claiming 1 GiB", withLen(Zstd, hugeZstdFrame()), 1},
		{"good page then bad", append(clone(zstdPage), 0xff), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Decode(tt.blob, tt.n, func(i int, data []byte) {
				if len(data) != PageSize {
					t.Errorf("page %d of %d bytes", i, len(data))
				}
			})
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Decode = %v, want ErrCorrupt", err)
			}
			t.Log(err)
		})
	}
	if err := Decode(nil, -1, func(int, []byte) {}); err == nil {
		t.Errorf("n = -1: no error")
	}
	if err := Decode(nil, 0, func(int, []byte) { t.Error("called for no pages") }); err != nil {
		t.Errorf("no pages: %v", err)
	}
}

func binaryUvarint(v uint64) []byte { return binary.AppendUvarint(nil, v) }

// hugeZstdFrame is a zstd frame that claims 1 GiB of content and a 16 MiB
// window, then carries 1 MiB of zeros in RLE blocks: the kind of input a
// bounded decoder must refuse before allocating.
func hugeZstdFrame() []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd} // magic
	// Frame header: content size in 4 bytes, window descriptor present.
	f = append(f, 0x80, 0x70) // FHD: FCS 4 bytes; window 1<<(10+14) = 16 MiB
	f = binary.LittleEndian.AppendUint32(f, 1<<30)
	for i := range 8 {
		// RLE block of 128 KiB of one byte; last flag on the last.
		last := 0
		if i == 7 {
			last = 1
		}
		h := uint32(last) | 1<<1 | (128<<10)<<3
		f = append(f, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return f
}

// TestDecodeFlips flips each byte of a valid batch in turn: Decode must
// not panic, and must either fail with ErrCorrupt or hand over whole pages.
func TestDecodeFlips(t *testing.T) {
	var pages [][]byte
	for _, k := range kindClass {
		pages = append(pages, kindPages(k.mix, 2)...)
	}
	mem := bytes.Join(pages, nil)
	gfns := make([]uint64, len(pages))
	for i := range gfns {
		gfns[i] = uint64(i)
	}
	e := NewEncoder(1)
	e.SetBandwidth(1e6)
	blob, err := e.Encode(nil, gfns, mem)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for i := range blob {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := clone(blob)
			b[i] ^= x
			err := Decode(b, len(pages), func(_ int, data []byte) {
				if len(data) != PageSize {
					t.Fatalf("flip %#x at %d: a page of %d bytes", x, i, len(data))
				}
			})
			if err != nil {
				bad++
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("flip %#x at %d: %v, not ErrCorrupt", x, i, err)
				}
			}
		}
		if err := Decode(blob[:i], len(pages), func(int, []byte) {}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: %v, want ErrCorrupt", i, err)
		}
	}
	t.Logf("%d of %d flips detected in a %d-byte batch (raw bytes flipped go unnoticed: the wire's CRC catches those)",
		bad, 3*len(blob), len(blob))
}

// TestDecodeAllocations checks that hostile input does not make Decode
// allocate beyond a page and the decoders' fixed state.
func TestDecodeAllocations(t *testing.T) {
	hostile := [][]byte{
		append(appendHeader(nil, Zstd, len(hugeZstdFrame())), hugeZstdFrame()...),
		append(appendHeader(nil, S2, 7), append(binaryUvarint(1<<32-1), 0, 0)...),
	}
	// Once to set up the zstd decoder's lazily built state.
	for _, h := range hostile {
		_ = Decode(h, 1, func(int, []byte) {})
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 100 {
		for _, h := range hostile {
			if err := Decode(h, 1, func(int, []byte) {}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("hostile page: %v", err)
			}
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 200; per > 4*PageSize {
		t.Errorf("%d bytes allocated per hostile decode, want ≤ %d", per, 4*PageSize)
	}
}

// TestMemoize: with Memoize, pages that are the same few buffers still
// decode to their contents, however often each buffer recurs.
func TestMemoize(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var bufs [][]byte
	for i := range 6 {
		p := make([]byte, PageSize)
		switch i % 3 {
		case 0: // text
			for j := range p {
				p[j] = "abcdefgh ij"[rng.IntN(11)]
			}
		case 1: // runs of a word
			for j := 0; j < PageSize; j += 4 {
				p[j] = byte(j / 1024)
			}
		default: // random
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
		}
		bufs = append(bufs, p)
	}
	e := NewEncoder(2)
	e.Memoize(NewMemo())
	gfns := make([]uint64, 256)
	for i := range gfns {
		gfns[i] = uint64(i)
	}
	page := func(g uint64) []byte { return bufs[g*7%uint64(len(bufs))] }
	for range 3 {
		coded, err := e.EncodeFrom(nil, gfns, 256, page)
		if err != nil {
			t.Fatal(err)
		}
		err = Decode(coded, len(gfns), func(i int, data []byte) {
			if !bytes.Equal(data, page(gfns[i])) {
				t.Fatalf("page %d decodes to other bytes", i)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if st := e.Stats(); st.Pages[LowEntropy]+st.Pages[Repeat]+st.Pages[HighEntropy] != 3*256 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSharedMemo: encoders that share a Memo see the same timings, so
// the same pages at the same bandwidth are coded alike, codec for codec and
// byte for byte, however busy the machine was when each ran.
func TestSharedMemo(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var bufs [][]byte
	for i := range 12 {
		p := make([]byte, PageSize)
		for j := range p {
			switch i % 3 {
			case 0:
				p[j] = "abcdefgh ij"[rng.IntN(11)]
			case 1:
				p[j] = byte(j / 512)
			default:
				p[j] = byte(rng.Uint32())
			}
		}
		bufs = append(bufs, p)
	}
	gfns := make([]uint64, 512)
	for i := range gfns {
		gfns[i] = uint64(i)
	}
	page := func(g uint64) []byte { return bufs[g*5%uint64(len(bufs))] }
	memo := NewMemo()
	run := func() ([]byte, Stats) {
		e := NewEncoder(2)
		e.Memoize(memo)
		e.SetBandwidth(64 << 20)
		var out []byte
		for range 4 {
			coded, err := e.EncodeFrom(nil, gfns, 512, page)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, coded...)
		}
		return out, e.Stats()
	}
	first, firstStats := run()
	for i := range 3 {
		again, stats := run()
		if !bytes.Equal(again, first) || stats != firstStats {
			t.Fatalf("run %d coded otherwise than the first, sharing its memo: stats %+v, first %+v", i+2, stats, firstStats)
		}
	}
}

// TestMemoPrime: Prime codes each page with every codec of its class, and
// memoized encoders then reuse those codings and their timings: a zstd
// timing primed as slow makes an encoder that would take zstd for text at
// this bandwidth take S2.
func TestMemoPrime(t *testing.T) {
	mem := arena(guest.Mix{Text: 50, Random: 50}, 1<<20)[guest.ArenaStart:]
	var text, random [][]byte
	for g := range len(mem) / PageSize {
		p := mem[g*PageSize : (g+1)*PageSize]
		switch Classify(p) {
		case LowEntropy:
			text = append(text, p)
		case HighEntropy:
			random = append(random, p)
		}
	}
	if len(text) < 8 || len(random) < 8 {
		t.Fatalf("%d text pages, %d random", len(text), len(random))
	}
	text, random = text[:8], random[:8]
	gfns := make([]uint64, 256)
	for i := range gfns {
		gfns[i] = uint64(i)
	}
	page := func(g uint64) []byte { return text[g%uint64(len(text))] }
	choice := func(m *Memo) Codec {
		e := NewEncoder(2)
		e.Memoize(m)
		e.SetBandwidth(1 << 20) // slow enough that zstd's smaller pages pay, even under the race detector
		for range 8 {
			if _, err := e.EncodeFrom(nil, gfns, 256, page); err != nil {
				t.Fatal(err)
			}
		}
		return e.Stats().Choice[LowEntropy]
	}

	m := NewMemo()
	m.Prime(append(slices.Clone(text), random...), 2)
	for _, p := range append(slices.Clone(text), random...) {
		class := Classify(p)
		for _, c := range candidates[class] {
			if c == Raw {
				continue
			}
			entry, ok := m.codings[memoKey{unsafe.SliceData(p), c}]
			if !ok || entry.cpu <= 0 {
				t.Fatalf("a %s page's %s coding is not primed: %+v", class, c, entry)
			}
			if err := Decode(entry.coded, 1, func(_ int, data []byte) {
				if !bytes.Equal(data, p) {
					t.Fatalf("a %s page's primed %s coding decodes to other bytes", class, c)
				}
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := choice(m); got != Zstd {
		t.Fatalf("text at 1 MiB/s, primed as timed: %s, want zstd", got)
	}
	for _, p := range text {
		k := memoKey{unsafe.SliceData(p), Zstd}
		e := m.codings[k]
		e.cpu = 0.02 // 20 ms a page: a machine too busy for zstd
		m.codings[k] = e
	}
	if got := choice(m); got != S2 {
		t.Fatalf("text at 1 MiB/s with zstd primed at 20 ms a page: %s, want s2", got)
	}
}

// TestCPUScale: a memoized encoder told its codings cost k times the CPU
// time measured chooses as a machine that much busier would, and charges
// that much in BatchCPU (a simulation's sender on a busier host).
func TestCPUScale(t *testing.T) {
	mem := arena(guest.Mix{Text: 100}, 1<<20)[guest.ArenaStart:]
	var text [][]byte
	for g := range len(mem) / PageSize {
		if p := mem[g*PageSize : (g+1)*PageSize]; Classify(p) == LowEntropy {
			text = append(text, p)
		}
	}
	if len(text) < 8 {
		t.Fatalf("%d text pages", len(text))
	}
	text = text[:8]
	m := NewMemo()
	m.Prime(text, 2)
	gfns := make([]uint64, 256)
	for i := range gfns {
		gfns[i] = uint64(i)
	}
	page := func(g uint64) []byte { return text[g%uint64(len(text))] }
	run := func(scale, bandwidth float64) (Codec, time.Duration) {
		e := NewEncoder(2)
		e.Memoize(m)
		e.SetCPUScale(scale)
		e.SetBandwidth(bandwidth)
		var cpu time.Duration
		for range 8 {
			if _, err := e.EncodeFrom(nil, gfns, 256, page); err != nil {
				t.Fatal(err)
			}
			cpu += e.BatchCPU()
		}
		return e.Stats().Choice[LowEntropy], cpu
	}
	if got, _ := run(1, 1<<20); got != Zstd {
		t.Fatalf("text at 1 MiB/s as timed: %s, want zstd", got)
	}
	// zstd at 10 000 times its time (some 0.1-1 s a page) is dearer than
	// S2's 3 ms or Raw's 4 ms a page on the link.
	if got, _ := run(1e4, 1<<20); got == Zstd {
		t.Fatalf("text at 1 MiB/s, coding 10 000 times as dear: %s, want s2 or raw", got)
	}
	// With the bandwidth unknown, the fewest bytes win whatever the time:
	// the same codings, charged three times over.
	c1, cpu1 := run(1, 0)
	c3, cpu3 := run(3, 0)
	if c1 != c3 || cpu1 <= 0 || math.Abs(float64(cpu3)-3*float64(cpu1)) > 1e-6*float64(cpu3)+8 {
		t.Fatalf("coding as timed: %s, %v; three times as dear: %s, %v, want the same codec and 3 times the CPU", c1, cpu1, c3, cpu3)
	}
}
