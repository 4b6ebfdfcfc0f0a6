package migrator

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"github.com/pagecast/pagecast/bitmap"
)

// SimConfig is what a simulated migration needs besides Config.
type SimConfig struct {
	// Switchover is the fixed cost of a switch-over, which moves no guest
	// memory: restoring the guest's state, the commit. It is added to the
	// virtual clock when the destination is asked for its verdict.
	Switchover time.Duration
	// ChecksumRate is how fast, in bytes a second, the paused source reads
	// its memory for the checksums that follow the switch-over (see
	// sender.audit): their time lengthens the migration, not its
	// downtime. It reads what the guest holds (HeldBytes, where the guest
	// counts it; else all its memory). Zero: not counted.
	ChecksumRate float64
	// PageRate, when set, is how many pages a second the engine's own
	// path moves at most, whatever the link: the CPU reading, sending,
	// receiving and writing each page takes (MeasurePageRate). Each page
	// sent, whole or in a zero run, takes 1/PageRate of the engine's
	// time, and then its bytes take the link's: the engine runs ahead of
	// the link by at most the limiter's burst, as the live one, which
	// works a batch and then writes it through the Limiter. Coding
	// (MECOM) is charged apart.
	PageRate float64
	// PausedPageRate, when set, is PageRate while the guest is paused
	// (the stop-and-copy): where the guest's vCPUs share the host's
	// cores with both ends of the migration, a paused guest leaves its
	// cores to them (on two cores beside a TCG guest, the stop-and-copy
	// moved 866 MiB/s where round 1 moved 470). Zero: PageRate.
	PausedPageRate float64
	// PolicyTime, when set, passes the wall time the policy takes to
	// observe each harvest (the predictor's Observe and forecast) on the
	// virtual clock too: live it runs on the sender's goroutine, which
	// waits for it (on two cores, 12-17% of a 1-2 GiB guest's round 1).
	// The figures then vary with the machine's load as it simulates.
	PolicyTime bool
	// CodingScale, when set, has MECOM's coding cost that many times the
	// CPU time its memoized codings measured (mecom.Encoder.SetCPUScale):
	// what coding costs a sender on a busier machine than the
	// simulation's. Zero: as measured.
	CodingScale float64
	// Observe, when set, is given the migration's Info every ObserveEvery
	// of virtual time (default 100 ms), as a live migration's
	// query-migrate would be polled.
	Observe      func(Info)
	ObserveEvery time.Duration
}

// Simulate migrates g over a virtual link to a virtual destination, on a
// virtual clock, with the same engine as a live migration: policies, stop
// decision, throttle, TSMC's stages and MECOM's codec choice are the ones
// Outgoing runs. Only the wire differs: each record is weighed instead of
// sent, and the link's time for it (its size at cfg.MaxBandwidth, which must
// be set) passes on cfg.Clock, which must be the *VirtualClock g reads.
// g's pages come from its Contents when it implements them.
//
// The destination accepts, verifies and commits at once; its guest is g
// itself, run on (Resume) after the switch-over, so that in TSMC's stage 3
// the pages g writes before the push has sent them are the pages the
// destination pulls. Simulate returns the migration's last Info, and an
// error if it did not complete or ctx ended.
func Simulate(ctx context.Context, g Guest, cfg Config, sc SimConfig) (Info, error) {
	clock, ok := cfg.Clock.(*VirtualClock)
	if !ok {
		return Info{}, errors.New("simulate: Config.Clock must be the guest's *VirtualClock")
	}
	if cfg.MaxBandwidth == 0 {
		return Info{}, errors.New("simulate: the link's bandwidth must be set (Config.MaxBandwidth)")
	}
	m, err := start(g, "sim", "", cfg, &simLink{clock: clock, sc: sc})
	if err != nil {
		return Info{}, err
	}
	stop := context.AfterFunc(ctx, m.abort)
	defer stop()
	return m.Wait()
}

// simLink is a simulated migration's link and destination. It lives on the
// engine's goroutine: the Writer calls weigh, the sender calls Next and
// pending.
type simLink struct {
	clock *VirtualClock
	sc    SimConfig
	m     *Migration
	tsmc  bool // post-copy: the guest runs on at the destination after the commit

	answers      []Record
	committed    bool     // the destination runs the guest
	dest         DirtyLog // the destination's guest's writes, in TSMC's stage 3
	asked        []uint64 // pages the destination's guest wants, not yet asked for
	faults       []uint64 // pages it has touched while missing, in order, not yet faulted on (see touched)
	nextFault    time.Time
	requested    []uint64 // bitmap: pages touched while missing, each asked for at most once as a receiver does
	ended        bool
	err          error // the destination's guest failed: Next reports it
	nextObs      time.Time
	owed         int           // bytes weighed whose time on the link has not passed yet
	owedPageSecs float64       // seconds of the engine's page rate for pages sent, not passed yet
	owedWork     time.Duration // the engine's coding (MECOM) of what is owed, not passed yet
	linkFree     time.Time     // when the link's token bucket has let through all that was paid for
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// sent counts n pages sent against the page rate; their time passes with
// the link's for the lot they go in.
func (l *simLink) sent(n uint64) {
	if l.sc.PageRate > 0 {
		l.owedPageSecs += float64(n) / l.pageRate()
	}
}

// pageRate is the engine's page rate now: PausedPageRate while the guest
// is paused, and between the two as far as its vCPUs are throttled,
// which leaves their cores to the migration too (review 73). Pages are
// charged at the rate of when they were sent: a live round's last lot,
// paid for in the stop-and-copy, was charged at the paused rate.
func (l *simLink) pageRate() float64 {
	paused := l.sc.PausedPageRate
	if paused <= 0 {
		return l.sc.PageRate
	}
	if running, _ := l.m.g.Running(); !running {
		return paused
	}
	return l.sc.PageRate + (paused-l.sc.PageRate)*float64(l.m.g.Throttle())/100
}

// coded counts the engine's time coding a batch (MECOM): it passes as
// the engine's work, in tandem with the link's time, as the page rate's
// does. Live, the coding of one batch runs while the Limiter's bucket
// fills (up to its burst), so a link slower than the coding is not held
// up by it: a 64 MiB guest's predictive+mecom at 32 MiB/s, coding charged
// before the link's time, was predicted 0.95–1.37 s where it took
// 0.75–0.91 s on the wire's 28–31 MiB/s.
func (l *simLink) coded(d time.Duration) {
	if d > 0 {
		l.owedWork += d
	}
}

// attach gives the sender its Writer and reader.
func (l *simLink) attach(m *Migration, md mode) (*Writer, recordReader) {
	l.m, l.tsmc = m, md.threeStage()
	l.linkFree = l.clock.Now() // the bucket starts empty, as the live Limiter's
	return newWeigher(l.weigh), l
}

// weigh takes a record of n bytes onto the link and answers as a
// receiver would. Like the live Writer's buffer, the link takes small
// records in lots: their time passes once wireBufSize bytes are owed, or
// at a flush.
func (l *simLink) weigh(t RecordType, n int) error {
	l.owed += n
	if l.owed >= wireBufSize || t == recFlush {
		if err := l.pay(); err != nil {
			return err
		}
	}
	switch t {
	case RecHello:
		l.answers = append(l.answers, Record{Type: RecAccept})
	case RecBitmap:
		l.tsmc = true // a dirty bitmap at the switch-over: post-copy follows (MODE+postcopy switching too)
	case RecDigest:
		if l.committed && !l.tsmc { // the stop-and-copy's checksums, after the commit (stage 3's end answers for TSMC's)
			l.answers = append(l.answers, Record{Type: RecVerified, OK: true})
		}
	case RecEnd:
		if !l.committed {
			l.clock.Advance(l.sc.Switchover)
		}
		l.asked, l.faults, l.ended = nil, nil, true
		l.answers = append(l.answers, Record{Type: RecVerified, OK: true})
	case RecCommit:
		l.committed = true
		if !l.tsmc {
			return nil
		}
		// Stage 3: the guest runs on at the destination.
		if err := l.m.g.Resume(); err != nil {
			return fmt.Errorf("run the guest at the destination: %w", err)
		}
		log, err := l.m.g.StartDirtyLog()
		if err != nil {
			return fmt.Errorf("watch the guest at the destination: %w", err)
		}
		l.dest, l.ended = log, false
		l.requested = make([]uint64, (l.m.g.MemoryBytes()/PageSize+63)/64)
	}
	return nil
}

// sumTime is how long the paused source's checksums take: what the guest
// holds at ChecksumRate.
func (l *simLink) sumTime() time.Duration {
	if l.sc.ChecksumRate <= 0 {
		return 0
	}
	held := l.m.g.MemoryBytes()
	if h, ok := l.m.g.(interface{ HeldBytes() uint64 }); ok {
		held = h.HeldBytes()
	}
	return time.Duration(float64(held) / l.sc.ChecksumRate * float64(time.Second))
}

// await passes the time until t, where the clock has not passed it.
func (l *simLink) await(t time.Time) {
	if d := t.Sub(l.clock.Now()); d > 0 {
		l.clock.Advance(d)
	}
}

// pay passes the time for what is owed. Two stages work in tandem, as
// live: the engine's CPU works the pages (PageRate) and codes them
// (MECOM), then their bytes pass the link's token bucket, which lets
// them through as the live Limiter does: at its rate, in bursts of at
// most what it saved up while the engine was busy or idle (limiterBurst),
// empty at the start. Each pay waits for both, so an engine faster than
// the link keeps pace with the link, whatever its page rate; a slower one
// sets the pace itself. (Before 2026-12-04 a set page rate took another
// model, whose bucket started full and whose flushes waited a burst
// more, so a page rate far above the link still changed the outcome:
// awk's precopy at 64 MiB/s had 59 ms of downtime without one and 171
// ms with 1G pages a second.)
func (l *simLink) pay() error {
	if l.owed == 0 && l.owedPageSecs == 0 && l.owedWork == 0 {
		return nil
	}
	rate := float64(l.m.limit.Rate())
	if rate == 0 {
		return errors.New("the simulated link has no bandwidth")
	}
	work := l.owedWork
	work += time.Duration(l.owedPageSecs * float64(time.Second))
	worked := l.clock.Now().Add(work)
	burst := time.Duration(max(minBurst, rate*limiterBurst.Seconds()) / rate * float64(time.Second))
	link := time.Duration(float64(l.owed) / rate * float64(time.Second))
	l.linkFree = later(l.linkFree, worked.Add(-burst)).Add(link)
	l.await(later(worked, l.linkFree))
	l.owed, l.owedPageSecs, l.owedWork = 0, 0, 0
	if l.sc.Observe != nil {
		if now := l.clock.Now(); !now.Before(l.nextObs) {
			every := l.sc.ObserveEvery
			if every <= 0 {
				every = 100 * time.Millisecond
			}
			l.nextObs = now.Add(every)
			l.sc.Observe(l.m.Info())
		}
	}
	return nil
}

// roundBegins gives Observe the migration's Info as a round begins, where
// the migration is simulated (l non-nil), besides its looks every
// ObserveEvery: a timeline of those alone placed a round's start up to
// that late, and a simulation with 1 s epochs took its rounds of 94 ms
// for 550 ms (walk 119). It pays nothing (the clock stays where the
// engine left it, bytes still owed to the link included: up to a
// batch's time early) and leaves the looks every ObserveEvery where
// they were (auto's early stops are judged at them), so the simulation
// runs as without it.
func (l *simLink) roundBegins() {
	if l == nil || l.sc.Observe == nil {
		return
	}
	l.sc.Observe(l.m.Info())
}

// Next returns the destination's next record.
func (l *simLink) Next() (*Record, error) {
	if l.err != nil {
		return nil, l.err
	}
	if len(l.answers) == 0 {
		return nil, errors.New("the simulated destination has nothing to say")
	}
	rec := l.answers[0]
	l.answers = l.answers[1:]
	return &rec, nil
}

func (*simLink) SetLimits(uint64) {}

// pending reports whether the destination has a record to read, first
// turning what its guest wrote since it was last asked into requests for
// those of the pages still missing (bits set in missing), each once.
func (l *simLink) pending(missing []uint64) bool {
	if l.dest != nil && !l.ended {
		l.touched(missing)
	}
	for len(l.asked) > 0 {
		n := min(len(l.asked), MaxBatch)
		l.answers = append(l.answers, Record{Type: RecRequest, GFNs: l.asked[:n:n]})
		l.asked = l.asked[n:]
	}
	return len(l.answers) > 0 || l.err != nil
}

// touched queues the pages the destination's guest wrote since the last
// look that are still missing, and turns the queue's first into requests
// (asked) as fast as the guest can fault on them.
//
// A live vCPU that touches a missing page stops until it arrives, so it
// has one fault out at a time; the source serves a request between two
// pushes of pushBatch pages, so a fault waits about one push's time on the
// link (or at the page rate, where that is slower). The simulated guest
// writes its epochs' pages at once: each vCPU faults on the first still
// missing page of the queue once a fault's wait has passed, and the rest
// of the queue waits, most of it pushed meanwhile. (Asking for every page
// written, as this did before 2026-12-02, gave 3 742-4 095 pulls to a
// 64 MiB tsmc migration at 32 MiB/s where the live one pulled 136-152:
// TestAgreesWithLiveTSMC.)
func (l *simLink) touched(missing []uint64) {
	if pl, ok := l.dest.(PageLister); ok {
		pages, err := pl.HarvestPages()
		if err != nil {
			l.err = fmt.Errorf("the destination's guest: %w", err)
			return
		}
		slices.Sort(pages)
		for _, g := range pages {
			if bit := uint64(1) << (g % 64); missing[g/64]&^l.requested[g/64]&bit != 0 {
				l.requested[g/64] |= bit
				l.faults = append(l.faults, g)
			}
		}
	} else {
		h, err := l.dest.Harvest()
		if err != nil {
			l.err = fmt.Errorf("the destination's guest: %w", err)
			return
		}
		for wi, w := range h.Words() {
			w &= missing[wi] &^ l.requested[wi]
			l.requested[wi] |= w
			for w != 0 {
				l.faults = append(l.faults, uint64(wi)*64+uint64(bits.TrailingZeros64(w)))
				w &= w - 1
			}
		}
	}
	now := l.clock.Now()
	if now.Before(l.nextFault) {
		return
	}
	vcpus := max(1, l.m.g.Identity().VCPUs)
	n := 0
	for n < vcpus && len(l.faults) > 0 {
		g := l.faults[0]
		l.faults = l.faults[1:]
		if missing[g/64]&(1<<(g%64)) != 0 {
			l.asked = append(l.asked, g)
			n++
		}
	}
	if n > 0 {
		l.nextFault = now.Add(l.faultWait())
	}
}

// A post-copy destination drops the dirty pages from its guest's memory
// before its verdict (receiver.prepareStage3), while the guest is paused:
// a system call for each run of dirty pages, and the freeing of each page
// (BenchmarkDrop, 2026-12-07: 2.3 µs a page where each is a run of its
// own, 0.34 µs a page in one long run; live, 25 969 pages of a hotset
// guest's 256 MiB took 57 ms).
const (
	dropRunTime  = 2 * time.Microsecond
	dropPageTime = 350 * time.Nanosecond
)

// drops passes the destination's drop of dirty's pages on the virtual
// clock, but for those it dropped in stage 1 (later: nil for none).
func (l *simLink) drops(dirty, later *bitmap.Bitmap) {
	var runs, pages uint64
	carry := uint64(0)
	for i, w := range dirty.Words() {
		if later != nil {
			w &^= later.Words()[i]
		}
		runs += uint64(bits.OnesCount64(w &^ (w<<1 | carry)))
		pages += uint64(bits.OnesCount64(w))
		carry = w >> 63
	}
	l.clock.Advance(time.Duration(runs)*dropRunTime + time.Duration(pages)*dropPageTime)
}

// faultedAt is when the vCPUs behind the requests just made faulted, in
// the model touched follows: a vCPU faults as soon as its last page
// arrived, and waits a fault's time for the next, so the requests the
// source reads now were made a fault's wait ago.
func (l *simLink) faultedAt() time.Time {
	return l.clock.Now().Add(-l.faultWait())
}

// faultWait is how long a vCPU's fault waits for its page: a push of
// pushBatch pages on the link, or at the page rate where that is slower.
func (l *simLink) faultWait() time.Duration {
	var d time.Duration
	if rate := l.m.limit.Rate(); rate > 0 {
		d = time.Duration(float64(pushBatch*PageSize) / float64(rate) * float64(time.Second))
	}
	if l.sc.PageRate > 0 {
		d = max(d, time.Duration(pushBatch/l.sc.PageRate*float64(time.Second)))
	}
	return d
}
