package simulate

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/migrator/mecom"
)

// Guest is a virtual machine that writes a Workload's pages on a virtual
// clock: the migration engine's Guest, Contents and DirtyLog source, and,
// after a TSMC switch-over, the destination's guest too (the same guest,
// run on).
type Guest struct {
	w     Workload
	clock *migrator.VirtualClock
	epoch float64 // the workload's epoch, seconds
	state []byte
	vcpus int
	*contents

	mu       sync.Mutex // Info and the engine's goroutine both ask about the guest
	running  bool
	throttle int
	pos      float64 // epochs of the workload run so far, from its start
	reach    float64 // pos, had the throttle slowed the guest by its response rather than its share
	resp     Response
	last     time.Time // when pos was last brought up to date
	start    uint64    // the epoch the migration began at
	writes   uint64    // pages written (harvested), summed over epochs
	// partial's count of harvests within one epoch, and byInstant's
	// cache: one epoch's pages in the order written.
	partialEpoch uint64
	partialCount int
	cached       bool
	cacheEpoch   uint64
	cachePages   []uint64
	cacheAt      []float64
	scratch      []uint64
	sortScratch  []uint64 // sortPages's
	// epochPages's last epoch, generated
	genOK    bool
	genEpoch uint64
	genLap   uint64
	genPages []uint64
	// once, with GuestOptions.Grow, is the pages the workload wrote in
	// one epoch only, from the start to its end: moved on each replay.
	once      *bitmap.Bitmap
	onceCount uint64  // pages in once
	moveShare float64 // the share of once that moves: those whose hash falls below it
	// drift is how far a lap moves them where the workload's new pages
	// went on as one front (see frontDrift), pages; 0: a drawn offset
	// each lap.
	drift float64
	lead  float64 // how far the front went on before the start (GuestOptions.Lead), pages
}

// HeldBytes is what a checksum of the guest's memory reads: the pages
// written, and of the others those not holding zeros (a live guest's pages
// never written are holes in its memory file, which the checksums skip).
func (g *Guest) HeldBytes() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	written := uint64(0)
	for _, w := range g.contents.written {
		written += uint64(bits.OnesCount64(w))
	}
	pages := g.w.Pages()
	zeros := float64(g.contents.cum[mecom.Zero]) / (1 << 32)
	return (written + uint64(float64(pages-written)*(1-zeros))) * migrator.PageSize
}

// written is the page writes harvested so far.
func (g *Guest) written() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.writes
}

// maxVCPUs is the most vCPUs a simulated guest has: KVM's own limit.
const maxVCPUs = 4096

// GuestOptions describe a simulated guest beyond its workload.
type GuestOptions struct {
	Start   uint64 // the workload epoch the migration starts at
	Content Mix    // page contents; zero value: DefaultMix
	Written Mix    // contents of pages once the workload writes them; zero value: Content's non-zero classes
	// Classes, where it has a page, is what the page holds once written
	// (a live guest's pages as auto watched it write them): it goes
	// before Written.
	Classes map[uint64]mecom.Class
	Samples *Samples // pages standing for each class's; nil: generated ones
	// WrittenSamples are pages standing for each class's among the pages
	// the guest writes (SampleWritten); nil: Samples.
	WrittenSamples *Samples
	StateBytes     int // vCPU and device state sent at the switch-over
	// VCPUs is how many vCPUs the guest says it has (Identity), default
	// 1: in post-copy each has a fault out at a time, and the throttle
	// takes its share of each. The workload's writes are the guest's,
	// whatever the count.
	VCPUs int
	// Response is what the guest writes while throttled; nil: Linear.
	Response Response
	// Grow: each time the workload is replayed, the pages it wrote only
	// once from Start to its end go elsewhere, all moved by one offset
	// drawn for that lap, while the pages it wrote more than once are
	// written again where they were. A few seconds of a guest that keeps
	// writing memory it had not (a growing heap, a scan, writes all over
	// a large memory) replayed as they were would write the same pages on
	// every lap, and a round longer than the lap would find fewer pages
	// dirty than the guest then dirties: a 1 GiB guest writing 15 000
	// random pages a second, watched 2 s, was predicted 11.6 s against
	// 17.2 s.
	Grow bool
	// Lead, with Grow, is how long after the workload's end the
	// migration starts: a live auto's probes and predictions. Where the
	// pages written once go on as one front (a sweep), it has gone on
	// that far before the first lap.
	Lead time.Duration
	// Shift, with Grow, starts such a front this many pages further
	// still: auto weighs a sweep at other points of it (ChooseAmong).
	Shift float64
}

// NewGuest returns a running guest at workload epoch o.Start, on clock.
// Pages the workload wrote before o.Start (a trace's), or its hot set (a
// synthetic hotset's), hold data, not zeros.
func NewGuest(w Workload, clock *migrator.VirtualClock, o GuestOptions) (*Guest, error) {
	if w.Len() > 0 && o.Start >= w.Len() {
		return nil, fmt.Errorf("start at epoch %d of a workload of %d epochs", o.Start, w.Len())
	}
	if o.Content == (Mix{}) {
		o.Content = DefaultMix
	}
	c, err := newContents(o.Content, o.Written, o.Classes, o.Samples, o.WrittenSamples, w.Pages())
	if err != nil {
		return nil, err
	}
	if o.VCPUs < 0 || o.VCPUs > maxVCPUs {
		return nil, fmt.Errorf("%d vCPUs: want 1 to %d", o.VCPUs, maxVCPUs)
	}
	g := &Guest{w: w, clock: clock, epoch: w.Epoch().Seconds(), state: make([]byte, o.StateBytes), contents: c, vcpus: max(1, o.VCPUs),
		running: true, pos: float64(o.Start), last: clock.Now(), start: o.Start, resp: o.Response}
	g.reach = g.pos
	// What was written before the start holds data: a synthetic hot set;
	// a trace's epochs before the start, and, for a window of one (what
	// was observed before a migration, replayed as what comes), before
	// the window's end: the guest wrote the window's pages before the
	// migration it predicts (a steady 101 MiB/s guest, its window's
	// pages taken for zeros, was predicted 23.9 MiB against 43.8).
	under, prior := w, min(o.Start, w.Len())
	if v, ok := w.(window); ok {
		under = v.w
		if under.Len() > 0 {
			prior = 0
			for i := range min(v.from%under.Len()+v.n, under.Len()) {
				for _, p := range under.Dirty(g.scratch[:0], i) {
					c.write(p)
				}
			}
		}
	}
	if s, ok := under.(*Synthetic); ok {
		for p := range s.Hot() {
			c.write(p)
		}
	}
	for i := range prior {
		for _, p := range w.Dirty(g.scratch[:0], i) {
			c.write(p)
		}
	}
	if o.Grow && w.Len() > 0 {
		g.once, g.onceCount, g.moveShare, g.drift = writtenOnce(w, o.Start)
		if g.drift != 0 && o.Lead > 0 {
			g.lead = g.drift / float64(w.Len()-o.Start) * (o.Lead.Seconds() / g.epoch)
		}
		if g.drift != 0 {
			g.lead += o.Shift
		}
		if g.moveShare == 0 {
			g.once = nil
		}
	}
	return g, nil
}

// writtenOnce is the pages w writes in one epoch only from epoch start to
// its end, how many, the share of them a lap should move, and how far
// where they go on as one front (frontDrift; 0 where they do not). The
// share has a lap write as many pages it had not as the workload did in
// its last fifth: a guest whose new pages dwindled as it ran (a program
// that has taken the memory it works in) moves few. Unless they go on as
// a front (a sweep of memory comes round again to what it wrote), a lap
// writes no more new pages than the workload left unwritten: one that
// wrote nearly all its memory moves few too (walk 130: a hot-set guest
// whose cold writes had covered its 256 MiB in 2 s was said to be still
// taking memory).
func writtenOnce(w Workload, start uint64) (*bitmap.Bitmap, uint64, float64, float64) {
	once, more := bitmap.New(w.Pages()), bitmap.New(w.Pages())
	var buf []uint64
	var onceCount, moreCount, fresh uint64      // pages written once, more than once; pages first written in the last fifth
	tail := w.Len() - max(1, (w.Len()-start)/5) // the last fifth's first epoch
	fronts := make([]front, 0, min(w.Len()-start, maxFrontEpochs))
	for i := start; i < w.Len(); i++ {
		buf = w.Dirty(buf[:0], i)
		var f front
		for _, p := range buf {
			switch {
			case more.Has(p):
			case once.Has(p):
				once.Unset(p)
				more.Set(p)
				onceCount--
				moreCount++
			default:
				once.Set(p)
				onceCount++
				f.add(p, w.Pages())
				if i >= tail {
					fresh++
				}
			}
		}
		if len(fronts) < cap(fronts) {
			fronts = append(fronts, f)
		}
	}
	if onceCount == 0 || tail == start {
		return once, onceCount, 0, 0
	}
	drift := frontDrift(fronts, w.Pages()) * float64(w.Len()-start)
	lapFresh := float64(fresh) * float64(w.Len()-start) / float64(w.Len()-tail)
	if drift == 0 {
		lapFresh = min(lapFresh, float64(w.Pages()-onceCount-moreCount))
	}
	return once, onceCount, min(1, lapFresh/float64(onceCount)), drift
}

// front is where an epoch's new pages lie in memory, taken as a circle:
// the sum of their unit vectors at angle 2π page/pages.
type front struct {
	x, y float64
	n    int
}

func (f *front) add(p, pages uint64) {
	s, c := math.Sincos(2 * math.Pi * float64(p) / float64(pages))
	f.x, f.y, f.n = f.x+c, f.y+s, f.n+1
}

// maxFrontEpochs bounds the epochs frontDrift weighs: a window's first
// ones tell as well as more would.
const maxFrontEpochs = 4096

// frontDrift is how many pages an epoch the workload's new pages move on
// where they go as one front: in at least four epochs of five with new
// pages (eight or more), those pages lie together (the length of their
// mean vector at least half theirs), and the steps between such epochs'
// centres agree (four in five the same way as their median, within a
// factor of 3 of it). A sweep of
// memory in address order is such a front, and so is a heap taken in
// order; pages taken all over are not. Replayed, a front goes on from
// where it was, its next lap after its last, where a drawn offset would
// put laps over each other and write fewer pages: a 256 MiB guest sweeping
// 20 000 pages a second, watched 2 s, was predicted 21% short under
// post-copy, and MECOM 53–89%.
func frontDrift(fronts []front, pages uint64) float64 {
	const minPages, together, agree = 8, 0.5, 0.8
	var centres []float64 // the epoch and angle of each front that lies together
	var epochs []float64
	withNew := 0
	for i, f := range fronts {
		if f.n < minPages {
			continue
		}
		withNew++
		if math.Hypot(f.x, f.y) < together*float64(f.n) {
			continue
		}
		epochs = append(epochs, float64(i))
		centres = append(centres, math.Atan2(f.y, f.x))
	}
	if len(centres) < 4 || float64(len(centres)) < agree*float64(withNew) {
		return 0
	}
	steps := make([]float64, 0, len(centres)-1)
	var moved float64 // the centres' whole way, radians
	for k := 1; k < len(centres); k++ {
		d := math.Remainder(centres[k]-centres[k-1], 2*math.Pi)
		steps = append(steps, d/(epochs[k]-epochs[k-1]))
		moved += d
	}
	sorted := slices.Clone(steps)
	slices.Sort(sorted)
	median := sorted[len(sorted)/2]
	near := 0
	for _, s := range steps {
		// The same way, within a factor of 3: a live watch's epochs
		// are harvested with some jitter, and a vCPU slowed for part of
		// one writes less in it (walk 131: a sweep's front missed where
		// steps had to agree within a fifth).
		if r := s / median; r >= 1.0/3 && r <= 3 {
			near++
		}
	}
	if median == 0 || float64(near) < agree*float64(len(steps)) {
		return 0
	}
	// The whole way over the epochs it took: the median of steps that
	// come in two sizes is one of them.
	return moved / (epochs[len(epochs)-1] - epochs[0]) * float64(pages) / (2 * math.Pi)
}

// moveOnce moves those of pages written once (g.once) whose hash falls
// within g.moveShare by lap's offset, and sorts them again.
func (g *Guest) moveOnce(pages []uint64, lap uint64) []uint64 {
	n := g.w.Pages()
	off := mix(lap, growSalt) % n
	if g.drift != 0 {
		// The front's next lap after its last, as far on as the
		// workload's length: lap times the drift, taken round memory.
		d := math.Mod(g.drift*float64(lap)+g.lead, float64(n))
		off = uint64(math.Round(d+float64(n))) % n
	}
	below := uint64(g.moveShare * (1 << 63) * 2)
	if g.moveShare >= 1 {
		below = math.MaxUint64
	}
	moved := false
	for j, p := range pages {
		if g.once.Has(p) && mix(p, growSalt) <= below {
			pages[j] = (p + off) % n
			moved = true
		}
	}
	if !moved {
		return pages
	}
	g.sortScratch = sortPages(pages, g.sortScratch, n)
	return slices.Compact(pages)
}

// growSalt keeps moveOnce's offsets apart from the workloads' own hashes.
const growSalt = 0x67726f77

// advance brings pos and reach up to the clock. g.mu is held.
func (g *Guest) advance() {
	now := g.clock.Now()
	if g.running {
		d, share := now.Sub(g.last).Seconds()/g.epoch, 1-float64(g.throttle)/100
		g.pos += d * share
		g.reach += d * g.resp.At(share)
	}
	g.last = now
}

// Replays is how many times the workload has been started over.
func (g *Guest) Replays() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.advance()
	if g.w.Len() == 0 || uint64(g.pos) < g.w.Len() {
		return 0
	}
	return 1 + (uint64(g.pos)-g.w.Len())/(g.w.Len()-g.start)
}

func (g *Guest) MemoryBytes() uint64 { return g.w.Pages() * migrator.PageSize }
func (g *Guest) Memory() []byte      { return nil }

func (g *Guest) Identity() migrator.Identity { return migrator.Identity{VCPUs: g.vcpus} }

func (g *Guest) Running() (bool, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running {
		return true, "running"
	}
	return false, "paused"
}

func (g *Guest) Pause() error  { return g.setRunning(false) }
func (g *Guest) Resume() error { return g.setRunning(true) }

func (g *Guest) setRunning(run bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.advance()
	g.running = run
	return nil
}

func (g *Guest) Throttle() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.throttle
}

func (g *Guest) SetThrottle(pct int) error {
	if pct < 0 || pct > 99 {
		return fmt.Errorf("throttle %d%%: want 0 to 99", pct)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.advance()
	g.throttle = pct
	return nil
}

func (g *Guest) SaveState() ([]byte, error) { return g.state, nil }

// StateBytes is the size of SaveState's state (see migrator.StateSizer).
func (g *Guest) StateBytes() uint64 { return uint64(len(g.state)) }

var _ migrator.StateSizer = (*Guest)(nil)

func (g *Guest) EarlyPages(*bitmap.Bitmap) []uint64 { return nil }

// StartDirtyLog returns a log of the writes the guest makes from now.
func (g *Guest) StartDirtyLog() (migrator.DirtyLog, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.advance()
	return &dirtyLog{g: g, at: g.pos, reach: g.reach}, nil
}

// dirtyLog hands over the workload's writes up to the guest's position.
// Within an epoch, each page is written at an instant of its own (a hash
// of the page and the epoch), so a harvest in the middle of an epoch
// returns the pages written in its first part, as a live guest's dirty
// log would, and the next harvest the rest. A throttled guest's harvest
// reaches back further than its position moved: the last stretch of the
// workload as long as its Response says (reach), rewritten.
type dirtyLog struct {
	g     *Guest
	at    float64        // the position, in epochs, handed over up to
	reach float64        // the guest's reach at the last harvest
	seen  *bitmap.Bitmap // HarvestPages's over more than two epochs, made then
	runs  []int          // HarvestPages's
}

// maxHarvestEpochs bounds one harvest's epochs: a log left unharvested for
// longer than this many epochs would otherwise grow without end. A
// workload's pages repeat every Len epochs, so more than one lap adds
// nothing.
const maxHarvestEpochs = 1 << 20

// growLaps bounds one harvest's laps of a workload replayed with its
// pages written once moved (GuestOptions.Grow), whose laps differ.
const growLaps = 256

func (l *dirtyLog) HarvestPages() ([]uint64, error) {
	g := l.g
	g.mu.Lock()
	defer g.mu.Unlock()
	g.advance()
	if math.IsInf(g.pos, 0) || math.IsNaN(g.pos) || g.pos > 1<<62 {
		return nil, errors.New("the simulated guest's clock overflowed")
	}
	from, upto := l.at, g.pos
	if span := g.reach - l.reach; span > upto-from {
		from = max(0, upto-span)
	}
	l.reach = g.reach
	if upto <= from {
		return nil, nil
	}
	l.at = upto
	span := float64(maxHarvestEpochs)
	if n := g.w.Len(); n > 0 && g.once == nil {
		span = min(span, float64(n)) // one lap holds every page the workload writes
	} else if n > 0 {
		span = min(span, float64(n)*growLaps)
	}
	from = max(from, upto-span)
	first, end := uint64(from), uint64(math.Ceil(upto))
	var out []uint64
	runs := l.runs[:0] // where each epoch's pages start in out: each epoch's are ascending
	if end-first > 2 && l.seen == nil {
		l.seen = bitmap.New(g.w.Pages())
	}
	for i := first; i < end; i++ {
		lo, hi := max(0, from-float64(i)), min(1, upto-float64(i))
		start := len(out)
		runs = append(runs, start)
		if lo > 0 || hi < 1 {
			out = g.partial(out, i, lo, hi)
		} else {
			out = g.epochPages(out, i)
		}
		if end-first <= 2 {
			continue // one epoch, or two: their duplicates go once merged
		}
		// Several epochs: each page once, as it comes (their sum could
		// be far more than the guest's pages).
		kept := out[:start]
		for _, p := range out[start:] {
			if !l.seen.Has(p) {
				l.seen.Set(p)
				kept = append(kept, p)
			}
		}
		out = kept
	}
	if end-first > 2 {
		for _, p := range out {
			l.seen.Unset(p)
		}
	}
	if end-first > 1 {
		g.sortScratch = mergeRuns(out, runs, g.sortScratch)
		out = slices.Compact(out)
	}
	l.runs = runs
	for _, p := range out {
		g.write(p)
	}
	g.writes += uint64(len(out))
	return out, nil
}

// partial appends the pages of epoch i written in [lo, hi) of it,
// ascending. The first harvests of an epoch filter its pages; an epoch
// harvested in many stretches (TSMC's destination looks at every push)
// is put in the order written once, and each stretch taken from that.
// g.mu is held.
func (g *Guest) partial(out []uint64, i uint64, lo, hi float64) []uint64 {
	if g.partialEpoch != i {
		g.partialEpoch, g.partialCount = i, 0
	}
	g.partialCount++
	start := len(out)
	if g.partialCount <= 4 {
		out = g.epochPages(out, i)
		kept := out[:start]
		for _, p := range out[start:] {
			if f := instant(p, i); lo <= f && f < hi {
				kept = append(kept, p)
			}
		}
		return kept
	}
	pages, at := g.byInstant(i)
	a, _ := slices.BinarySearch(at, lo)
	b, _ := slices.BinarySearch(at, hi)
	out = append(out, pages[a:b]...)
	g.sortScratch = sortPages(out[start:], g.sortScratch, g.w.Pages())
	return out
}

// byInstant returns epoch i's pages in the order they are written, with
// their instants: a harvest within the epoch takes a stretch of them. The
// last epoch asked for is kept, since harvests come many to an epoch (TSMC's
// destination looks at every push). g.mu is held.
func (g *Guest) byInstant(i uint64) ([]uint64, []float64) {
	if g.cached && g.cacheEpoch == i {
		return g.cachePages, g.cacheAt
	}
	pages := g.epochPages(g.cachePages[:0], i)
	at := slices.Grow(g.cacheAt[:0], len(pages))[:len(pages)]
	for j, p := range pages {
		at[j] = instant(p, i)
	}
	sort.Sort(byAt{pages, at})
	g.cached, g.cacheEpoch, g.cachePages, g.cacheAt = true, i, pages, at
	return pages, at
}

// byAt sorts pages by their instants.
type byAt struct {
	pages []uint64
	at    []float64
}

func (b byAt) Len() int           { return len(b.pages) }
func (b byAt) Less(i, j int) bool { return b.at[i] < b.at[j] }
func (b byAt) Swap(i, j int) {
	b.pages[i], b.pages[j] = b.pages[j], b.pages[i]
	b.at[i], b.at[j] = b.at[j], b.at[i]
}

// instant is when in epoch i page p is written, as a fraction of the
// epoch.
func instant(p, i uint64) float64 {
	return float64(mix(p, i)>>11) / (1 << 53)
}

// epochPages appends the workload's pages of epoch i counted from its
// start. Once the workload has ended it is replayed from the epoch the
// migration started at, not from its beginning: what runs on goes on
// running, and a trace's boot does not happen again.
func (g *Guest) epochPages(buf []uint64, i uint64) []uint64 {
	lap := uint64(0)
	if n := g.w.Len(); n > 0 && i >= n {
		lap = 1 + (i-n)/(n-g.start)
		i = g.start + (i-n)%(n-g.start)
	}
	if g.once == nil {
		lap = 0 // every lap writes the same pages
	} else if g.drift != 0 {
		lap++ // a front goes on from where the workload left it
	}
	// Kept: harvests cut epochs in two, so each is asked for twice in a
	// row, and a synthetic one is generated (and sorted) each time.
	if !g.genOK || g.genEpoch != i || g.genLap != lap {
		g.genPages = g.w.Dirty(g.genPages[:0], i)
		if lap > 0 {
			g.genPages = g.moveOnce(g.genPages, lap)
		}
		g.genEpoch, g.genLap, g.genOK = i, lap, true
	}
	return append(buf, g.genPages...)
}

// mergeRuns sorts pages, made of ascending runs starting at runs[k], by
// merging the runs pairwise; scratch is reused, and returned.
func mergeRuns(pages []uint64, runs []int, scratch []uint64) []uint64 {
	scratch = slices.Grow(scratch[:0], len(pages))[:len(pages)]
	src, dst := pages, scratch
	bounds := append(runs, len(pages))
	for len(bounds) > 2 {
		next := make([]int, 1, len(bounds)/2+2)
		next[0] = bounds[0]
		for k := 0; k+1 < len(bounds); k += 2 {
			lo, mid := bounds[k], bounds[k+1]
			hi := mid
			if k+2 < len(bounds) {
				hi = bounds[k+2]
			}
			a, b, o := lo, mid, lo
			for a < mid && b < hi {
				if src[b] < src[a] {
					dst[o] = src[b]
					b++
				} else {
					dst[o] = src[a]
					a++
				}
				o++
			}
			o += copy(dst[o:], src[a:mid])
			copy(dst[o:], src[b:hi])
			next = append(next, hi)
		}
		bounds = next
		src, dst = dst, src
	}
	if len(pages) > 0 && &src[0] != &pages[0] {
		copy(pages, src)
	}
	return scratch
}

func (l *dirtyLog) Harvest() (*bitmap.Bitmap, error) {
	pages, err := l.HarvestPages()
	if err != nil {
		return nil, err
	}
	b := bitmap.New(l.g.w.Pages())
	for _, p := range pages {
		b.Set(p)
	}
	return b, nil
}

func (l *dirtyLog) Close() error { return nil }
