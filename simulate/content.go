package simulate

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/migrator/mecom"
)

// Mix is the share of guest pages in each of mecom's content classes:
// zero, repeat (a few words in long runs), text (low entropy) and random
// (high entropy). Shares are normalised to sum to 1.
type Mix [4]float64

// The classes as --content names them, in mecom.Class order.
var mixNames = [4]string{"zero", "repeat", "text", "random"}

// DefaultMix is the content of a guest of which nothing is known: half its
// pages zero (free memory of a guest that has not used it all), the rest
// mostly text-like data and code, some already compressed or encrypted.
var DefaultMix = Mix{0.5, 0.05, 0.35, 0.10}

// ParseMix reads "zero=0.5,repeat=0.05,text=0.35,random=0.1"; classes left
// out have no pages.
func ParseMix(s string) (Mix, error) {
	var m Mix
	sum := 0.0
	for kv := range strings.SplitSeq(s, ",") {
		key, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		i := -1
		for j, n := range mixNames {
			if n == key {
				i = j
			}
		}
		if i < 0 {
			return Mix{}, fmt.Errorf("content mix %q: unknown class %q (want zero, repeat, text or random)", s, key)
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil || !(f >= 0) || math.IsInf(f, 0) {
			return Mix{}, fmt.Errorf("content mix %q: %s=%s: want a share ≥ 0", s, key, val)
		}
		m[i] += f
		sum += f
	}
	if !(sum > 0) {
		return Mix{}, fmt.Errorf("content mix %q: no class has a share", s)
	}
	for i := range m {
		m[i] /= sum
	}
	return m, nil
}

// ClassMix is the mix of pages whose classes are known: as MeasureMix
// would give for them, without classifying them again.
func ClassMix(classes map[uint64]mecom.Class) Mix {
	var m Mix
	for _, c := range classes {
		m[c]++
	}
	for i := range m {
		m[i] /= max(float64(len(classes)), 1)
	}
	return m
}

// MeasureMix classifies pages of mem as mecom does (every stride-th page,
// at least 1): the mix of a real guest, to simulate it. Pages in holes
// (if not nil: the holes of the file mem maps, migrator.Holes) are zero
// pages, and are not read: reading them would allocate them.
func MeasureMix(mem []byte, stride int, holes *bitmap.Bitmap) Mix {
	var m Mix
	n := 0.0
	stride = max(1, stride)
	for off := 0; off+mecom.PageSize <= len(mem); off += stride * mecom.PageSize {
		if holes != nil && holes.Has(uint64(off/mecom.PageSize)) {
			m[mecom.Zero]++
		} else {
			m[mecom.Classify(mem[off:off+mecom.PageSize])]++
		}
		n++
	}
	for i := range m {
		m[i] /= max(n, 1)
	}
	return m
}

func (m Mix) String() string {
	var parts []string
	for i, f := range m {
		if f > 0 {
			parts = append(parts, fmt.Sprintf("%s=%.3g", mixNames[i], f))
		}
	}
	return strings.Join(parts, ",")
}

// samplesPerClass is how many distinct sample pages each class has.
const samplesPerClass = 32

// contents gives every page a class by a hash of its number and the mix,
// and a sample page of that class; a page once written takes its class
// from known, where it has one there, or else from the written mix (by
// default the mix's other classes: a trace says nothing of what its pages
// hold, and a page written is seldom all zeros). A written mix or a known
// class measured from a live guest may be zero: a guest that zeroes its
// memory (tmpfs from /dev/zero, init_on_free) writes zero pages, which a
// migration sends as such. (Until 2026-12-03 they were taken for text:
// auto predicted a 256 MiB Linux guest writing /dev/zero into tmpfs at
// 2.6 s and 40.4 MiB where it took 1.2 s and 17.8 MiB, 57 153 of its
// pages sent as zeros.)
type contents struct {
	cum     [4]uint64 // cumulative shares of the mix, scaled to 2^32
	cumData [4]uint64 // the same of the written mix
	samples [4][samplesPerClass][]byte
	wsample [4][samplesPerClass][]byte // those standing for pages written: samples, or a guest's written ones
	written []uint64                   // bitmap: pages the guest has written
	known   map[uint64]mecom.Class
}

func newContents(m, written Mix, known map[uint64]mecom.Class, own, ownWritten *Samples, pages uint64) (*contents, error) {
	c := &contents{written: make([]uint64, (pages+63)/64), known: known}
	if written == (Mix{}) {
		written = m // the mix's data classes
		written[mecom.Zero] = 0
	}
	data := written[mecom.Zero] + written[mecom.Repeat] + written[mecom.LowEntropy] + written[mecom.HighEntropy]
	if data == 0 {
		written = Mix{0, 0, 1, 0} // written pages of an all-zero mix hold text
		data = 1
	}
	acc, accData := 0.0, 0.0
	for i := range m {
		acc += m[i]
		accData += written[i] / data
		c.cum[i] = uint64(acc * (1 << 32))
		c.cumData[i] = uint64(accData * (1 << 32))
	}
	c.cum[3], c.cumData[3] = 1<<32, 1<<32
	samples, err := sampleSet()
	if err != nil {
		return nil, err
	}
	c.samples = *samples
	if err := takeSamples(&c.samples, own); err != nil {
		return nil, err
	}
	c.wsample = c.samples
	if err := takeSamples(&c.wsample, ownWritten); err != nil {
		return nil, err
	}
	return c, nil
}

// takeSamples puts own's pages of each class that has some in place of
// samples'.
func takeSamples(samples *[4][samplesPerClass][]byte, own *Samples) error {
	if own == nil {
		return nil
	}
	for class := range own {
		if len(own[class]) == 0 {
			continue
		}
		for j := range samplesPerClass {
			p := own[class][j%len(own[class])]
			if len(p) != migrator.PageSize || mecom.Classify(p) != mecom.Class(class) {
				return fmt.Errorf("simulate: sample page %d of class %s is not a %s page of %d bytes", j, mecom.Class(class), mecom.Class(class), migrator.PageSize)
			}
			samples[class][j] = p
		}
	}
	return nil
}

// Samples are pages of each class (mecom's: zero, repeat, text, random) to
// stand for a guest's own, in place of generated ones: a live guest's, as
// mode auto takes them (SamplePages), so that the simulated compression
// codes what the guest holds. A class without pages keeps generated ones.
type Samples [4][][]byte

// Prime codes the samples with every codec their classes may take, timed
// on the machine as it is now (see mecom.Memo.Prime): simulations of a
// guest whose pages these are then choose codecs as a live migration from
// this machine, under its load, would.
func (s *Samples) Prime() {
	var pages [][]byte
	for _, class := range s {
		pages = append(pages, class...)
	}
	codingMemo.Prime(pages, 0)
}

// SamplePages takes up to samplesPerClass pages of each class from mem,
// spread evenly over the pages of that class among those looked at (up to
// 64 a class would need, evenly spread over mem), skipping holes (pages
// never written, which a live source does not read), each copied, and
// kept only where the copy is still of its class. Taken
// in address order instead, a 1 GiB guest's text samples came from its
// low memory and coded to 0.56 of their size under S2, where its text
// coded to 0.80 live.
func SamplePages(mem []byte, holes *bitmap.Bitmap) *Samples {
	pages := uint64(len(mem)) / migrator.PageSize
	looks := min(pages, 64*samplesPerClass*4)
	var gfns []uint64
	for i := range looks {
		gfn := i * pages / looks
		if holes == nil || !holes.Has(gfn) {
			gfns = append(gfns, gfn)
		}
	}
	return samplesOf(mem, gfns)
}

// SampleWritten is SamplePages over the pages gfns of mem alone, those a
// guest wrote while it was watched: pages standing for the pages it writes
// (Options.WrittenSamples), whose content may code otherwise than its
// memory at large. (A 32 MiB guest's hot set of text coded to 0.80 of its
// size where its text at large coded to 0.56; simulated with the latter,
// its predictive+mecom took 2 rounds and 372 ms, live 4 and 685-705 ms.)
func SampleWritten(mem []byte, gfns []uint64) *Samples {
	pages := uint64(len(mem)) / migrator.PageSize
	var in []uint64
	for _, g := range gfns {
		if g < pages {
			in = append(in, g)
		}
	}
	slices.Sort(in)
	looks := min(uint64(len(in)), 64*samplesPerClass*4)
	picked := make([]uint64, 0, looks)
	for i := range looks {
		picked = append(picked, in[i*uint64(len(in))/looks])
	}
	return samplesOf(mem, picked)
}

// samplesOf takes up to samplesPerClass pages of each class among gfns,
// spread evenly over each class's, each copied and kept only where the
// copy is still of its class.
func samplesOf(mem []byte, gfns []uint64) *Samples {
	var found [4][]uint64
	for _, gfn := range gfns {
		class := mecom.Classify(mem[gfn*migrator.PageSize : (gfn+1)*migrator.PageSize])
		found[class] = append(found[class], gfn)
	}
	var s Samples
	for class, gfns := range found {
		n := min(len(gfns), samplesPerClass)
		for j := range n {
			gfn := gfns[j*len(gfns)/n]
			// A running guest may have written the page since it was
			// classified (a zero page taken as a zero sample once was
			// not one by its copy, 2026-12-02): the copy is checked.
			p := bytes.Clone(mem[gfn*migrator.PageSize : (gfn+1)*migrator.PageSize])
			if mecom.Classify(p) == mecom.Class(class) {
				s[class] = append(s[class], p)
			}
		}
	}
	return &s
}

// sampleSet makes the sample pages, once for the process: every simulated
// guest's pages are these buffers, so the compressor's codings and their
// timings (codingMemo) serve every simulation alike.
var sampleSet = sync.OnceValues(func() (*[4][samplesPerClass][]byte, error) {
	var samples [4][samplesPerClass][]byte
	rng := rand.New(rand.NewPCG(1, 2))
	for class := range 4 {
		for j := range samplesPerClass {
			p := samplePage(mecom.Class(class), rng)
			if got := mecom.Classify(p); got != mecom.Class(class) {
				return nil, fmt.Errorf("simulate: a sample %s page classifies as %s", mecom.Class(class), got)
			}
			samples[class][j] = p
		}
	}
	return &samples, nil
})

// codingMemo holds the compressor's codings of the sample pages, and the
// CPU time each took, for every simulation in the process: timed once,
// they cannot differ from one simulation to the next, so auto's prediction
// and the outcome it is judged against code alike.
var codingMemo = mecom.NewMemo()

// Memo is where the compressor keeps the sample pages' codings.
func (c *contents) Memo() *mecom.Memo { return codingMemo }

// class is page gfn's class.
func (c *contents) class(gfn uint64) mecom.Class {
	h := (gfn * 0x9E3779B97F4A7C15) >> 32 // Fibonacci hashing: one multiply
	cum := &c.cum
	if c.written[gfn/64]&(1<<(gfn%64)) != 0 {
		if c.known != nil {
			if k, ok := c.known[gfn]; ok {
				return k
			}
		}
		cum = &c.cumData
	}
	for i, v := range cum {
		if h < v {
			return mecom.Class(i)
		}
	}
	return mecom.HighEntropy
}

func (c *contents) Zero(gfn uint64) bool { return c.class(gfn) == mecom.Zero }

func (c *contents) Page(gfn uint64) []byte {
	samples := &c.samples
	if c.written[gfn/64]&(1<<(gfn%64)) != 0 {
		samples = &c.wsample
	}
	return samples[c.class(gfn)][(gfn*0xBF58476D1CE4E5B9)>>59%samplesPerClass]
}

func (c *contents) write(gfn uint64) { c.written[gfn/64] |= 1 << (gfn % 64) }

// words of text for sample text pages.
var words = strings.Fields(`the of and to in is was for on that with as by at from his it an were are which
this be or has had not first one their its new after but who they have her she two been other when there
all during into school time may years more most only over city some world would where later up such used many
can state about national out known university united then made page memory guest write dirty round copy`)

// samplePage makes a page of class with rng.
func samplePage(class mecom.Class, rng *rand.Rand) []byte {
	p := make([]byte, mecom.PageSize)
	switch class {
	case mecom.Repeat:
		// A few words, each in a long run, as in tables and counters.
		off := 0
		for off < len(p) {
			w := rng.Uint32() | 1
			run := 4 * (64 + rng.IntN(256))
			for end := min(len(p), off+run); off < end; off += 4 {
				binary.LittleEndian.PutUint32(p[off:], w)
			}
		}
	case mecom.LowEntropy:
		off := 0
		for off < len(p) {
			off += copy(p[off:], words[rng.IntN(len(words))])
			if off < len(p) {
				p[off] = ' '
				off++
			}
		}
	case mecom.HighEntropy:
		for i := 0; i < len(p); i += 8 {
			binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
		}
	}
	return p
}
