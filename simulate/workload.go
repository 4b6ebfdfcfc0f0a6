package simulate

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pagecast/pagecast/internal/units"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/trace"
)

// A Workload is what the simulated guest writes: for each epoch, the pages
// written in it.
type Workload interface {
	// Pages is the guest's page count.
	Pages() uint64
	// Epoch is how long one epoch lasts.
	Epoch() time.Duration
	// Len is the number of epochs before the workload repeats; 0 for one
	// that never ends (synthetic).
	Len() uint64
	// Dirty appends to buf the pages written in epoch i (i < Len unless
	// Len is 0), ascending and each once, and returns it. The same i gives
	// the same pages. It is safe to call from several goroutines at once
	// (RunAll's simulations share their workload).
	Dirty(buf []uint64, i uint64) []uint64
	// Name says what the workload is, for tables.
	Name() string
}

// Trace is a recorded workload: a pagecast trace or CSV, read whole.
type Trace struct {
	meta   trace.Meta
	epochs [][]uint64 // by index from the first epoch; gaps are empty
	first  uint64     // the first epoch's index in the trace
	name   string
}

// NewTrace makes a workload of a trace's epochs. Epoch indices are kept
// relative to the first: a gap in the trace is epochs without writes.
func NewTrace(name string, meta trace.Meta, epochs []trace.Epoch) (*Trace, error) {
	if meta.PageSize != 4096 {
		return nil, fmt.Errorf("trace %s: pages of %d bytes; the engine moves 4096-byte pages", name, meta.PageSize)
	}
	if meta.Epoch <= 0 {
		return nil, fmt.Errorf("trace %s: epoch length %v", name, meta.Epoch)
	}
	if len(epochs) == 0 {
		return nil, fmt.Errorf("trace %s: no epochs", name)
	}
	first, last := epochs[0].Index, epochs[len(epochs)-1].Index
	// The reader has bounded indices (trace.MaxEpochIndex); a trace of
	// more empty epochs than this is not a workload anyone records.
	const maxSpan = 1 << 24
	if last-first >= maxSpan {
		return nil, fmt.Errorf("trace %s: epochs %d to %d, more than %d: too sparse to replay", name, first, last, maxSpan)
	}
	t := &Trace{meta: meta, name: name, epochs: make([][]uint64, last-first+1), first: first}
	pages := meta.Pages()
	for _, e := range epochs {
		// The guest harvests an epoch's pages ascending (its harvests
		// merge them so), and sorts them by a radix of the page count.
		ps := e.Pages
		if !increasing(ps) {
			ps = slices.Compact(slices.Sorted(slices.Values(ps)))
		}
		if len(ps) > 0 && ps[len(ps)-1] >= pages {
			return nil, fmt.Errorf("trace %s: epoch %d writes page %d of a %d-page guest", name, e.Index, ps[len(ps)-1], pages)
		}
		t.epochs[e.Index-first] = ps
	}
	return t, nil
}

// increasing reports whether ps ascends, each page once.
func increasing(ps []uint64) bool {
	for i := 1; i < len(ps); i++ {
		if ps[i] <= ps[i-1] {
			return false
		}
	}
	return true
}

// ReadTrace reads a pagecast trace file (pagecast profile --out) as a
// workload named after the file; a damaged trace is refused.
func ReadTrace(path string) (*Trace, error) {
	meta, epochs, damage, err := trace.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(damage) > 0 {
		return nil, fmt.Errorf("%s: %d damaged stretches", path, len(damage))
	}
	return NewTrace(strings.TrimSuffix(filepath.Base(path), ".pct"), meta, epochs)
}

func (t *Trace) Pages() uint64        { return t.meta.Pages() }
func (t *Trace) Epoch() time.Duration { return t.meta.Epoch }
func (t *Trace) Len() uint64          { return uint64(len(t.epochs)) }
func (t *Trace) Name() string         { return t.name }

// Source is what the trace says it was recorded from (trace.Meta.Source:
// "qemu pid N" from pagecast profile of a QEMU VM).
func (t *Trace) Source() string { return t.meta.Source }

// Hook is what recorded the trace's writes (trace.Meta.Hook: "tcg-plugin"
// for a QEMU VM under TCG).
func (t *Trace) Hook() string { return t.meta.Hook }

// Guest is the traced guest where it is known (trace.Meta.Guest:
// trace.GuestPagecast for pagecast's own guest), else "".
func (t *Trace) Guest() string { return t.meta.Guest() }

// First returns the trace's index of the workload's epoch 0: pagecast's
// recordings start at 1, so that trace info's epoch n is the workload's
// n-1.
func (t *Trace) First() uint64 { return t.first }
func (t *Trace) Dirty(buf []uint64, i uint64) []uint64 {
	return append(buf, t.epochs[i]...)
}

// Synthetic is a workload generated epoch by epoch, never held whole:
// a 1 TiB guest's costs only the pages each epoch writes.
type Synthetic struct {
	kind    string
	pages   uint64
	epoch   time.Duration
	hot     uint64  // hot set pages (hotset)
	p       float64 // share of an epoch's pages in the hot set (hotset)
	rate    float64 // pages written per second
	seed    uint64
	spec    string
	perEp   float64   // pages an epoch writes, on average: epoch i writes the whole pages its share brings the sum to (count)
	perHot  float64   // of which in the hot set
	scratch sync.Pool // of *[]uint64, for sortPages
}

// SyntheticKinds lists the synthetic workloads, for --help. The names are
// the pagecast guest's.
var SyntheticKinds = []struct{ Name, Description string }{
	{"hotset", "each epoch writes rate×epoch distinct pages (a fraction carried to the next), a share p of them in the hot set (the first hot pages), the rest anywhere; hot=1024 pages, p=0.9, rate=10000 pages/s, seed=1"},
	{"uniform", "each epoch writes rate×epoch distinct pages anywhere (a fraction carried to the next); rate=10000 pages/s, seed=1"},
	{"sweep", "writes memory in address order, rate pages/s, and starts over; rate=10000 pages/s"},
}

// ParseSynthetic reads NAME[:key=val,...] (see SyntheticKinds) for a guest
// of pages pages and epochs of epoch. hot takes pages, or bytes with a
// unit (hot=1G); rate takes pages/s, with an optional k, M or G.
func ParseSynthetic(spec string, pages uint64, epoch time.Duration) (*Synthetic, error) {
	name, params, _ := strings.Cut(strings.TrimSpace(spec), ":")
	s := &Synthetic{kind: name, pages: pages, epoch: epoch, hot: 1024, p: 0.9, rate: 10000, seed: 1, spec: spec}
	var allowed []string
	switch name {
	case "hotset":
		allowed = []string{"hot", "p", "rate", "seed"}
	case "uniform":
		allowed = []string{"rate", "seed"}
	case "sweep":
		allowed = []string{"rate"}
	default:
		return nil, fmt.Errorf("synthetic workload %q: want hotset, uniform or sweep", name)
	}
	if pages == 0 || epoch <= 0 {
		return nil, fmt.Errorf("synthetic workload %s: needs the guest's memory and an epoch", name)
	}
	var given []string
	for kv := range strings.SplitSeq(params, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		key, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if !slices.Contains(allowed, key) {
			return nil, fmt.Errorf("synthetic workload %s: unknown parameter %q (want one of %s)", name, key, strings.Join(allowed, ", "))
		}
		if slices.Contains(given, key) {
			// The last one won, unsaid (walk 129: rate=1k,rate=2k).
			return nil, fmt.Errorf("synthetic workload %s: %s given twice", name, key)
		}
		given = append(given, key)
		var err error
		switch key {
		case "hot":
			s.hot, err = parsePages(val)
		case "p":
			s.p, err = strconv.ParseFloat(val, 64)
			if err == nil && !(s.p >= 0 && s.p <= 1) {
				err = errors.New("want a probability in [0, 1]")
			}
		case "rate":
			s.rate, err = ParsePageRate(val)
		case "seed":
			if s.seed, err = strconv.ParseUint(val, 10, 64); errors.Is(err, strconv.ErrRange) {
				err = fmt.Errorf("at most %d", uint64(math.MaxUint64)) // a whole number, too large (walk 136)
			} else if err != nil {
				// Not strconv's words (walk 134).
				err = errors.New("want a whole number, 0 or more")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("synthetic workload %s: %s=%s: %w", name, key, val, err)
		}
	}
	if name == "hotset" && (s.hot == 0 || s.hot > pages) {
		// Only hotset has one: uniform and sweep in a guest under 4 MiB
		// were refused for hotset's default (walk 53).
		return nil, fmt.Errorf("synthetic workload %s: hot set of %d pages in a guest of %d: want 1 to %d pages (or a size such as 4M)", name, s.hot, pages, pages)
	}
	per := s.rate * epoch.Seconds()
	if per > float64(pages) {
		return nil, fmt.Errorf("synthetic workload %s: rate %.0f pages/s writes %.0f pages an epoch, more than the guest's %d", name, s.rate, per, pages)
	}
	// Each epoch writes its share, the fractions carried on: rounded an
	// epoch at a time, rate=10000 wrote 20 000 pages a second in epochs
	// of 50 µs and none in epochs of 20 µs (walk 53).
	s.perEp = per
	if name == "hotset" {
		s.perHot = min(float64(s.hot), s.p*per)
	}
	return s, nil
}

// count is how many of its per pages an epoch writes on average epoch i
// writes: the whole pages by which its share raises the sum.
func count(per float64, i uint64) uint64 {
	// A hair over, so that a share a rounding puts just under a whole
	// number (0.29×100 is 28.999999999999996) is that number (review 54).
	const hair = 1e-9
	return uint64(math.Floor(float64(i+1)*per+hair)) - uint64(math.Floor(float64(i)*per+hair))
}

// parsePages reads a page count, or a size with a unit.
func parsePages(v string) (uint64, error) {
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		return n, nil
	}
	b, err := units.ParseBytes(v)
	if err != nil {
		return 0, err
	}
	if b%4096 != 0 {
		// hot=1k is 1 KiB, where rate=10k is 10 000 pages a second.
		return 0, fmt.Errorf("%s is %d bytes, not a whole number of 4 KiB pages: give pages as a plain number (1000) or a size in whole pages (4M)", v, b)
	}
	return b / 4096, nil
}

// ParsePageRate reads pages per second: 10000, 10k, 1.5M, optionally
// followed by "pages/s" or "/s".
func ParsePageRate(v string) (float64, error) {
	v = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(v), "/s"), "pages")
	mult := 1.0
	switch {
	case strings.HasSuffix(v, "k"), strings.HasSuffix(v, "K"): // sizes take K too
		mult, v = 1e3, v[:len(v)-1]
	case strings.HasSuffix(v, "M"):
		mult, v = 1e6, strings.TrimSuffix(v, "M")
	case strings.HasSuffix(v, "G"):
		mult, v = 1e9, strings.TrimSuffix(v, "G")
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= 0) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("want pages per second, e.g. 10000, 40k or 1.5M (k, M or G)")
	}
	if r := f * mult; r > 0 && r < 1 || math.IsInf(r, 0) {
		// Below a page a second the times it bounds overflow (1e-9 was
		// taken as no bound at all).
		return 0, errors.New("want at least 1 page a second, and a finite rate (0: no bound)")
	}
	return f * mult, nil
}

func (s *Synthetic) Pages() uint64        { return s.pages }
func (s *Synthetic) Epoch() time.Duration { return s.epoch }
func (s *Synthetic) Len() uint64          { return 0 }
func (s *Synthetic) Name() string         { return s.spec }

// Hot is the hot set's size in pages (0 for workloads without one): the
// pages written before the migration starts.
func (s *Synthetic) Hot() uint64 {
	if s.kind == "hotset" {
		return s.hot
	}
	return 0
}

func (s *Synthetic) Dirty(buf []uint64, i uint64) []uint64 {
	scratch, _ := s.scratch.Get().(*[]uint64)
	if scratch == nil {
		scratch = new([]uint64)
	}
	defer s.scratch.Put(scratch)
	start := len(buf)
	switch s.kind {
	case "sweep":
		from := (uint64(math.Floor(float64(i)*s.perEp + 1e-9))) % s.pages
		for j := range count(s.perEp, i) {
			buf = append(buf, (from+j)%s.pages)
		}
		*scratch = sortPages(buf[start:], *scratch, s.pages)
		return buf
	case "hotset":
		r := mix(s.seed, i)
		n, hot := count(s.perEp, i), min(s.hot, count(s.perHot, i))
		hot = min(hot, n)
		buf = appendDistinct(buf, hot, s.hot, r)
		buf = appendDistinct(buf, n-hot, s.pages, mix(r, 1))
	default:
		buf = appendDistinct(buf, count(s.perEp, i), s.pages, mix(s.seed, i))
	}
	out := buf[start:]
	*scratch = sortPages(out, *scratch, s.pages)
	return buf[:start+len(slices.Compact(out))]
}

// sortPages sorts pages, all below limit, ascending: a radix sort, 11 bits
// a pass, which beats a comparison sort several times on the tens of
// thousands of random pages a synthetic epoch writes. scratch is reused
// and returned.
func sortPages(pages, scratch []uint64, limit uint64) []uint64 {
	if len(pages) < 256 {
		slices.Sort(pages)
		return scratch
	}
	const radix = 11
	scratch = slices.Grow(scratch[:0], len(pages))[:len(pages)]
	src, dst := pages, scratch
	for shift := uint(0); shift < uint(bits.Len64(limit)); shift += radix {
		var count [1<<radix + 1]int
		for _, p := range src {
			count[(p>>shift)&(1<<radix-1)+1]++
		}
		for i := 1; i < len(count); i++ {
			count[i] += count[i-1]
		}
		for _, p := range src {
			d := (p >> shift) & (1<<radix - 1)
			dst[count[d]] = p
			count[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &pages[0] {
		copy(pages, src)
	}
	return scratch
}

// appendDistinct appends n (≤ limit) distinct pseudo-random numbers below
// limit: consecutive integers from a random start, modulo limit, put
// through a bijection of [0, 2^k) (k the bits of limit), walking the cycle
// past values ≥ limit. Each walk starts below limit, so it ends, and the
// walks make a bijection of [0, limit).
func appendDistinct(buf []uint64, n, limit, seed uint64) []uint64 {
	if n == 0 {
		return buf
	}
	k := uint(bits.Len64(limit - 1))
	mask := uint64(1)<<k - 1
	if limit == 1 {
		return append(buf, 0)
	}
	start := seed % limit
	for j := range n {
		x := (start + j) % limit
		for {
			x = permute(x, k, mask, seed)
			if x < limit {
				break
			}
		}
		buf = append(buf, x)
	}
	return buf
}

// permute is a bijection of [0, 2^k): odd multiplications and xor-shifts,
// each invertible modulo 2^k.
func permute(x uint64, k uint, mask, seed uint64) uint64 {
	h := uint(max(1, k/2))
	x = (x * 0x9E3779B97F4A7C15) & mask
	x ^= x >> h
	x = (x * ((seed << 1) | 1)) & mask
	x ^= x >> h
	x = (x * 0xBF58476D1CE4E5B9) & mask
	x ^= x >> h
	return x
}

// mix hashes a and b into a seed (splitmix64's finaliser).
func mix(a, b uint64) uint64 {
	z := a*0x9E3779B97F4A7C15 + b + 0x632BE59BD9B4E019
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// DirtyRate is how fast w writes memory from epoch from on, in bytes a
// second: the pages written each epoch (each once an epoch), averaged to
// the end of a trace or over 100 epochs of a workload without end. A
// pre-copy round resends what was written during the round before, so
// the link's bandwidth against this rate says which regime a migration
// is in: about 1 or more times it, pre-copy converges; a quarter of it,
// it usually does not.
func DirtyRate(w Workload, from uint64) float64 {
	end := w.Len()
	if end == 0 {
		end = from + 100
	}
	if from >= end {
		return 0
	}
	var pages uint64
	var buf []uint64
	for i := from; i < end; i++ {
		buf = w.Dirty(buf[:0], i)
		pages += uint64(len(buf))
	}
	return float64(pages) * migrator.PageSize / (float64(end-from) * w.Epoch().Seconds())
}
