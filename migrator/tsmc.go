package migrator

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/uffd"
)

// ModeTSMC is three-stage memory copy (Song et al. 2014): stage 1 copies
// all memory once while the guest runs and its dirty log records what it
// dirties; stage 2 stops the guest and sends its state and the dirty bitmap;
// stage 3 runs the guest on the destination at once, while the source
// pushes the dirty pages in the background and sends first any the
// destination's guest touches before they came (pulled through
// userfaultfd). Every page crosses the wire at most twice.
const ModeTSMC = "tsmc"

// StatusPostcopy is query-migrate's status while stage 3 runs, as QEMU
// names post-copy.
const StatusPostcopy = "postcopy-active"

// pushBatch is how many dirty pages stage 3 pushes between looks at the
// destination's requests: small, so that a vCPU waiting on a page waits
// behind little (32 pages at 32 MiB/s is 4 ms).
const pushBatch = 32

// tsmc runs the three stages on the source.
func (s *sender) tsmc(ctx context.Context) (err error) {
	// Stage 1: everything once, the guest running; with predictive+tsmc,
	// all but the pages the predictor expects to be dirtied before the
	// switch-over, which then go once, in stage 3.
	if s.mode.postcopy {
		bw := float64(s.m.cfg.MaxBandwidth)
		if bw == 0 {
			bw = 1 << 30
		}
		s.pol.startRound(roundPlan{round: 1, window: time.Duration(float64(s.pendingN*PageSize) / bw * float64(time.Second)),
			budget: s.pages, pending: s.pending, pendingN: s.pendingN})
	}
	// The dirty log is harvested as the pass goes, as in a pre-copy
	// round: a page written before the pass reaches it goes once, with
	// what was written; only pages written after they were sent are
	// dirty for stage 3. The pass never stops early.
	s.stopAt = 0
	s.later, s.sent = bitmap.New(s.pages), bitmap.New(s.pages)
	if _, err := s.sendPass(ctx, 1, true, s.mode.postcopy); err != nil {
		return err
	}
	if err := s.tellLater(nil); err != nil { // the pages held back since the last harvest
		return err
	}
	s.sent = nil // the pass is over: later stays, for the simulation's drop
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("stage 1: %w", err)
	}

	return s.switchToPostcopy(ctx, "stage 1 done", 2)
}

// tellLater tells the destination, in TSMC's stage 1, of the pages that
// stage 3 will bring: those among dirty, just harvested, that the pass
// has sent, and those predictive+tsmc held back since the last harvest.
// It drops them now, while the guest runs here, where at the switch-over
// each run of them cost the pause some 2 µs. The pass never sends them
// (again), so each is in the dirty bitmap of stage 2. The pages queued so
// far go first, so that the destination has every page named before it
// hears of it. (Named at the end of the pass, the pages of its last
// epoch were dropped at the destination as the pause began: the pause
// was no shorter.)
func (s *sender) tellLater(dirty []uint64) error {
	if s.sent == nil {
		return nil
	}
	held := slices.Clone(s.heldBack)
	s.heldBack = s.heldBack[:0]
	var batch []uint64
	for i, g := range slices.Concat(held, dirty) {
		if i >= len(held) && !s.sent.Has(g) || s.later.Has(g) {
			continue
		}
		if batch == nil {
			if err := s.flush(); err != nil {
				return err
			}
			batch = make([]uint64, 0, MaxBatch)
		}
		if err := s.addLater(&batch, g); err != nil {
			return err
		}
	}
	return s.sendLater(&batch)
}

// addLater names page g for post-copy (s.later), in batch, which goes as
// a RecLater record once it holds MaxBatch pages.
func (s *sender) addLater(batch *[]uint64, g uint64) error {
	s.later.Set(g)
	if *batch = append(*batch, g); len(*batch) == MaxBatch {
		return s.sendLater(batch)
	}
	return nil
}

// sendLater sends the pages in batch, if any, as a RecLater record.
func (s *sender) sendLater(batch *[]uint64) error {
	if len(*batch) == 0 {
		return nil
	}
	err := s.w.Later(*batch)
	*batch = (*batch)[:0]
	return err
}

// nameLater tells a MODE+postcopy destination, before the switch-over's
// pause, of the pages still pending, which post-copy will bring (RecLater),
// and waits for its answer to a RecSync: it drops them while the guest
// runs on here, and the pause then drops only the pages written since.
// Dropped in the pause, 106–126 thousand pages of a 512 MiB guest took
// 74–113 ms of it (walk 139). The pages written during that wait are
// harvested and named in turn, while a pass names many (walk 149: 2 500–
// 2 900 pages written during a wait of about 100 ms, dropped in the
// pause, made it 12–18 ms). Simulated, the destination's drop passes on
// the clock with the guest running.
func (s *sender) nameLater() error {
	if err := s.flush(); err != nil {
		return err
	}
	before := s.w.Bytes()
	defer s.m.update(func(i *Info) {
		// The names' bytes are the last round's, which decided the switch.
		if n := len(i.Pagecast.RoundBytes); n > 0 {
			i.Pagecast.RoundBytes[n-1] += s.w.Bytes() - before
		}
		i.RAM.Transferred = s.w.Bytes()
	})
	if s.later == nil {
		s.later = bitmap.New(s.pages)
	}
	for pass := 1; ; pass++ {
		n, err := s.namePending()
		if err != nil || n < nameAgainAbove || pass == maxNamePasses {
			return err
		}
		if _, err := s.harvestLog(); err != nil {
			return err
		}
	}
}

// nameAgainAbove is how many pages a pass of nameLater names at least for
// another to follow, and maxNamePasses how many passes it makes at most:
// a drop in the pause of fewer pages takes a few ms at most (2 µs a run,
// 0.35 µs a page).
const (
	nameAgainAbove = 1024
	maxNamePasses  = 3
)

// namePending names the pending pages not named yet and waits for the
// destination to have dropped them. It returns how many it named.
func (s *sender) namePending() (uint64, error) {
	named := bitmap.New(s.pages)
	batch := make([]uint64, 0, MaxBatch)
	var n uint64
	for i, w := range s.pending.Words() {
		for b := w &^ s.later.Words()[i]; b != 0; b &= b - 1 {
			g := uint64(i)*64 + uint64(bits.TrailingZeros64(b))
			named.Set(g)
			n++
			if err := s.addLater(&batch, g); err != nil {
				return n, fmt.Errorf("name the pages post-copy brings: %w", err)
			}
		}
	}
	if err := s.sendLater(&batch); err != nil {
		return n, fmt.Errorf("name the pages post-copy brings: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	start := s.m.clock.Now()
	if s.m.sim != nil {
		if err := s.w.Flush(); err != nil {
			return n, err
		}
		s.m.sim.drops(named, nil)
		return n, nil
	}
	if err := s.w.Sync(); err != nil {
		return n, fmt.Errorf("name the pages post-copy brings: %w", err)
	}
	if err := s.w.Flush(); err != nil {
		return n, fmt.Errorf("name the pages post-copy brings: %w", err)
	}
	rec, err := s.r.Next()
	switch {
	case err != nil:
		return n, fmt.Errorf("wait for the destination to drop the %d pages post-copy brings: %w", n, err)
	case rec.Type == RecAbort:
		return n, fmt.Errorf("the destination aborted: %s", rec.Text)
	case rec.Type != RecSync:
		return n, fmt.Errorf("the destination answered the pages post-copy brings with a %s record: %w", rec.Type, ErrMalformed)
	}
	s.m.log.Debug("switch-over", "named-for-postcopy", n, "dropped-in", s.m.clock.Now().Sub(start))
	return n, nil
}

// switchToPostcopy runs TSMC's stages 2 and 3 after a live copy (tsmc's
// stage 1, or MODE+postcopy's rounds): stop, send the guest's state and
// the dirty bitmap, hand over once the destination has all the other
// pages, then push the dirty pages while the destination runs, and last
// the checksums of the paused memory, summed meanwhile (see audit). If the
// destination finds the pages it had at the hand-over unlike them, it
// stops its guest and the guest runs on here. round numbers the
// switch-over in Info.
func (s *sender) switchToPostcopy(ctx context.Context, reason string, round int) (err error) {
	paused, err := s.pause(reason)
	if err != nil {
		return err
	}
	committed := false
	defer func() { err = s.resumeUnless(committed, err) }()
	precopyBytes := s.w.Bytes()
	dirty, err := s.log.Harvest() // everything written since the last harvest
	if err != nil {
		return fmt.Errorf("harvest the dirty log: %w", err)
	}
	dirty.Or(s.pending) // the pages stage 1 left out (predictive+tsmc), or the rounds did (MODE+postcopy)
	s.harvests++
	// The pages the monitor itself reads on the destination (the pagecast
	// guest's status page) go now, during the pause, and are not left to
	// stage 3: a Go goroutine touching a page still absent there could
	// stall the whole process (see package uffd).
	early := s.earlyPages(dirty)
	for _, step := range []func() error{
		s.sendState,
		func() error { return s.w.Bitmap(dirty.Words()) },
		func() error { return s.sendPages(early) },
		func() error { return s.w.Text(RecEnd, "") },
		s.w.Flush,
	} {
		if err := step(); err != nil {
			return fmt.Errorf("stage 2: %w", err)
		}
	}
	if s.m.sim != nil {
		s.m.sim.drops(dirty, s.later) // before the destination's verdict, as receiver.prepareStage3
	}
	flushed := s.m.clock.Now()
	if err := s.awaitVerified("stage 2"); err != nil {
		return err
	}
	verdict := s.m.clock.Now()
	s.m.log.Debug("switch-over", "stage-2", flushed.Sub(paused), "verdict-wait", s.m.clock.Now().Sub(flushed), "dirty", dirty.Count())
	for _, g := range early {
		dirty.Unset(g) // sent already
	}
	// As at a stop-and-copy: a cancel that came before stops the
	// migration. (A cancel accepted in stage 2 was followed by the
	// commit, and the guest, handed over, was left without its pages;
	// found by a review walk.)
	if err := s.commitUnlessCancelled(); err != nil {
		return err
	}
	committed = true // the destination runs the guest from here
	pause := pauseTimes{paused: paused, verdict: verdict, commit: s.m.clock.Now()}
	// The paused memory does not change until stage 3 is over: summed
	// while stage 2 waited for it, a 2 GiB guest's pause took 247 ms.
	// Summed from the commit, on the destination's host (loopback), the
	// sums took its CPUs as its guest started (walk 140: the start 4.5–
	// 11.4 ms late on two cores, a pause the downtime did not count): they
	// wait for the destination to say its guest runs, or startedWait.
	started := make(chan struct{})
	sums, summed := make(chan Digest, 1), make(chan struct{})
	go func() {
		defer close(summed)
		if s.m.sim == nil {
			t := time.NewTimer(startedWait)
			select {
			case <-started:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		sums <- s.digest(PageSize)
	}()
	// The downtime until the destination says its guest runs
	// (RecStarted), which the listener of stage 3 takes; until then, to
	// the commit.
	downtime := s.m.clock.Now().Sub(paused)
	s.m.update(func(i *Info) {
		i.Status = StatusPostcopy
		i.Downtime = downtime.Round(time.Millisecond).Milliseconds()
		i.RAM.DirtySyncCount = s.harvests
		i.RAM.PrecopyBytes = precopyBytes
		i.RAM.DowntimeBytes = s.w.Bytes() - precopyBytes
		i.RAM.Remaining = dirty.Count() * PageSize
		i.Pagecast.Round = round
		i.Pagecast.RoundPages = append(i.Pagecast.RoundPages, 0)
		i.Pagecast.RoundBytes = append(i.Pagecast.RoundBytes, s.w.Bytes()-precopyBytes)
	})
	s.m.sim.roundBegins()

	// Stage 3. Its pages go whole (with +mecom too): the destination
	// fills each into the running guest's memory as it arrives.
	s.enc = nil
	err = s.postcopy(ctx, dirty, uint64(len(early)), sums, pause, started)
	if err != nil {
		<-summed // the sums read the guest's memory: over before a failure lets the guest run on, or its VM go
	}
	if errors.Is(err, errCommitNeverCame) {
		// The destination never ran the guest, and says it never will:
		// it runs on here, as after any failure before the commit.
		s.m.update(func(i *Info) { i.Status = StatusDevice })
		err = fmt.Errorf("%w; the guest %s", err, s.onHere())
		if rerr := s.resumeHere(); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	if errors.Is(err, errDestinationStopped) {
		err = fmt.Errorf("%w; the destination stopped its guest, which %s", err, s.onHere())
		if rerr := s.resumeHere(); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// awaitVerified reads the destination's verdict on its memory.
func (s *sender) awaitVerified(stage string) error {
	rec, err := s.r.Next()
	if err != nil {
		return fmt.Errorf("%s: wait for the destination to verify its memory: %w", stage, err)
	}
	switch {
	case rec.Type == RecVerified && rec.OK:
		return nil
	case rec.Type == RecVerified:
		// Pages missing, or a state the destination could not load.
		return fmt.Errorf("%s: the destination could not take the guest: %s", stage, rec.Text)
	case rec.Type == RecAbort:
		return fmt.Errorf("%s: the destination aborted: %s", stage, rec.Text)
	}
	return fmt.Errorf("%s: the destination answered with a %s record", stage, rec.Type)
}

// postcopy pushes the dirty pages (in address order, or predictive+tsmc's
// order of likely touch) and, first, any the destination asks for; each
// goes once. early dirty pages went in stage 2.
// If the link fails, the destination's guest waits for its missing pages:
// the source redials (every second, for RecoverTimeout), learns from the
// destination which pages it still lacks, and goes on — QEMU's post-copy
// recovery.
func (s *sender) postcopy(ctx context.Context, dirty *bitmap.Bitmap, early uint64, sums <-chan Digest, pause pauseTimes, started chan struct{}) error {
	st := &postcopyState{total: dirty.Count(), early: early, pending: slices.Clone(dirty.Words()),
		start: s.m.clock.Now(), startBytes: s.w.Bytes(), sums: sums, pause: pause, started: started}
	if p, ok := s.pol.(*predictive); ok {
		// Ordered once the destination's records are listened to: its
		// word that its guest runs ends the downtime as it comes.
		st.orderBy = func() []uint64 { return p.touchOrder(dirty) }
	}
	st.left = st.total
	if s.m.sim != nil {
		st.summed = st.start.Add(s.m.sim.sumTime()) // the sums begin at the commit, on memory as it paused
	}
	for {
		err := s.push(ctx, st)
		if err == nil || ctx.Err() != nil || errors.Is(err, errDestinationVerdict) {
			return err
		}
		s.m.log.Warn("post-copy link lost; reconnecting", "err", err, "pages-left", st.left)
		s.m.update(func(i *Info) { i.Status = StatusPostcopyPaused; i.ErrorDesc = err.Error() })
		if rerr := s.reconnect(ctx, st); errors.Is(rerr, errCommitNeverCame) {
			return rerr
		} else if rerr != nil {
			return fmt.Errorf("%w; recovery failed: %w", err, rerr)
		}
		st.recoveries++
		s.m.update(func(i *Info) { i.Status = StatusPostcopy; i.ErrorDesc = "" })
	}
}

// pauseTimes are the source's marks of a post-copy's switch-over.
type pauseTimes struct {
	paused  time.Time // the guest paused
	verdict time.Time // the destination's verdict read
	commit  time.Time // the commit sent
}

// end is when the destination's guest ran, from the source's clock: read
// at now, since after the destination sent its verdict. Both now and the
// verdict's reading plus since come at or after it (a record arrives after
// it is sent), so the earlier of them is the nearer bound; and the guest
// ran after the commit went. Read alone, the word came up to 4.6 ms after
// the guest ran, where the source waited for a CPU (walk 143).
func (p pauseTimes) end(now time.Time, since time.Duration) time.Time {
	end := now
	if at := p.verdict.Add(since); at.Before(end) {
		end = at
	}
	if end.Before(p.commit) {
		end = p.commit
	}
	return end
}

// startedWait bounds how long a post-copy's source waits for the
// destination to say its guest runs (RecStarted) before it sums its
// memory anyway: a start takes a millisecond or less, but its record may
// be lost with the link.
const startedWait = time.Second

// StatusPostcopyPaused is query-migrate's status while a post-copy whose
// link failed waits to reconnect, as QEMU names it.
const StatusPostcopyPaused = "postcopy-paused"

// errDestinationVerdict marks a stage-3 failure the destination reported:
// no reconnection will mend it. errDestinationStopped marks one after which
// the destination stopped its guest (a verdict, not an abort): the guest
// runs on at the source.
var (
	errDestinationVerdict = errors.New("the destination reported a failure")
	errDestinationStopped = errors.New("its guest is stopped")
)

type postcopyState struct {
	total, left, early, asked uint64
	pending                   []uint64 // bit set: not sent yet
	// order, if set, is the order to push in (predictive+tsmc: the pages
	// the guest is likeliest to touch first); then address order
	// catches what is left.
	order      []uint64
	orderBy    func() []uint64 // makes order, on the first push
	next       int
	start      time.Time
	startBytes uint64
	recoveries int
	sums       <-chan Digest // the paused memory's checksums, sent last
	// pause is when the source paused the guest, read the verdict and
	// sent the commit; started is closed once the destination says its
	// guest runs (RecStarted), at most once (startedOnce), which ends the
	// downtime.
	pause       pauseTimes
	started     chan struct{}
	startedOnce sync.Once
	digest      *Digest       // taken from sums
	summed      time.Time     // simulated: when the sums are done
	sumWait     time.Duration // how long the sums kept the migration waiting once the last page had gone
	// faultTime is the vCPU time the destination's guest waited for
	// pages: while stage 3 runs, as counted here for the pages it asked
	// for; at its end, as the destination counted it (its verdict's).
	faultTime time.Duration
}

// request is a destination's request for pages, and when it arrived (or,
// simulated, when its guest faulted).
type request struct {
	gfns []uint64
	at   time.Time
}

// push runs stage 3 on the current connection until every page is sent
// and the destination confirms, or the connection fails.
func (s *sender) push(ctx context.Context, st *postcopyState) error {
	requests := make(chan request, 64)
	verdict := make(chan error, 1)
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	// listen reads the destination's records until its verdict: requests
	// go to requests, the verdict to verdict. It returns false once the
	// verdict is in, or when readCtx ends with requests full.
	r := s.r                 // this connection's: a reconnection replaces s.r while a listener may still read
	var waited time.Duration // the destination's count of its guest's waits, set before a good verdict is sent on
	listen := func() bool {
		rec, err := r.Next()
		if err != nil {
			verdict <- fmt.Errorf("stage 3: %w", err)
			return false
		}
		switch rec.Type {
		case RecRequest:
			at := s.m.clock.Now()
			if s.m.sim != nil {
				at = s.m.sim.faultedAt()
			}
			select {
			case requests <- request{gfns: slices.Clone(rec.GFNs), at: at}:
				return true
			case <-readCtx.Done():
				return false
			}
		case RecStarted:
			st.startedOnce.Do(func() {
				s.guestRuns(st.pause, rec.Since)
				close(st.started)
			})
			return true
		case RecVerified:
			if rec.OK {
				waited = rec.Waited
				verdict <- nil
			} else {
				verdict <- fmt.Errorf("stage 3: %w (%w): %s", errDestinationVerdict, errDestinationStopped, rec.Text)
			}
		case RecAbort:
			verdict <- fmt.Errorf("stage 3: %w: aborted: %s", errDestinationVerdict, rec.Text)
		default:
			verdict <- fmt.Errorf("stage 3: unexpected %s record from the destination: %w", rec.Type, ErrMalformed)
		}
		return false
	}
	// poll hands over what the destination has said by now. Live, a
	// goroutine listens all along; simulated, the virtual destination
	// speaks only when asked, on the engine's own goroutine, so that the
	// virtual clock is read in one order.
	poll := func() {}
	if s.m.sim != nil {
		poll = func() {
			for s.m.sim.pending(st.pending) && len(requests) < cap(requests) && listen() {
			}
		}
	} else {
		go func() {
			for listen() {
			}
		}()
	}
	if st.orderBy != nil {
		st.order, st.orderBy = st.orderBy(), nil
	}

	batch := make([]uint64, 0, MaxBatch)
	take := func(g uint64) bool {
		w, b := g/64, g%64
		if st.pending[w]&(1<<b) == 0 {
			return false
		}
		st.pending[w] &^= 1 << b
		st.left--
		return true
	}
	send := func(gfns []uint64) error {
		if err := s.sendPages(gfns); err != nil {
			return err
		}
		if err := s.w.Flush(); err != nil {
			return fmt.Errorf("stage 3: %w", err)
		}
		s.m.update(func(i *Info) {
			i.RAM.Transferred = s.w.Bytes()
			i.RAM.PostcopyBytes = s.w.Bytes() - st.startBytes
			i.RAM.Remaining = st.left * PageSize
			i.RAM.PostcopyRequests = st.asked
			n := len(i.Pagecast.RoundPages) - 1
			i.Pagecast.RoundPages[n] = st.early + st.total - st.left    // the dirty pages sent, stage 2's included
			i.Pagecast.RoundBytes[n] = s.w.Bytes() - i.RAM.PrecopyBytes // and their bytes, the switch-over's with them
		})
		return nil
	}
	// A page taken from pending but lost with a failed connection is put
	// back by reconnect, from what the destination says it lacks.
	cursor := 0
	for st.left > 0 {
		poll()
		select {
		case req := <-requests:
			batch = batch[:0]
			for _, g := range req.gfns {
				st.asked++
				if take(g) {
					batch = append(batch, g)
				}
			}
			if len(batch) > 0 {
				if err := send(batch); err != nil {
					return err
				}
				// Each page asked for held a vCPU (or a device) of the
				// destination's guest from the request to its arrival.
				// A page asked for but pushed already is not counted
				// here: its wait is known at the destination, whose
				// count replaces this one at the end.
				st.faultTime += time.Duration(len(batch)) * s.m.clock.Now().Sub(req.at)
				s.m.update(func(i *Info) { i.Pagecast.FaultTime = st.faultTime.Milliseconds() })
			}
			continue
		case err := <-verdict:
			if err == nil {
				err = fmt.Errorf("stage 3: %w: done before every page was sent", errDestinationVerdict)
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		batch = batch[:0]
		for st.next < len(st.order) && len(batch) < pushBatch {
			if g := st.order[st.next]; take(g) {
				batch = append(batch, g)
			}
			st.next++
		}
		for cursor < len(st.pending) && len(batch) < pushBatch {
			word := st.pending[cursor]
			if word == 0 {
				cursor++
				continue
			}
			g := uint64(cursor)*64 + uint64(bits.TrailingZeros64(word))
			take(g)
			batch = append(batch, g)
		}
		if err := send(batch); err != nil {
			return err
		}
	}
	// Requests still come for pages the destination touched while they
	// were on their way (hundreds, in the buffers between the two): they
	// are answered already, and are read and counted until the verdict,
	// or the listener, its queue full, would never read the verdict.
	late := func(req request) { st.asked += uint64(len(req.gfns)) }
	pushed := s.m.clock.Now()
	for st.digest == nil {
		select {
		case d := <-st.sums:
			st.digest = &d
			if s.m.sim != nil {
				s.m.sim.await(st.summed)
			}
			st.sumWait = s.m.clock.Now().Sub(pushed)
		case req := <-requests:
			late(req)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := s.w.Digest(*st.digest); err != nil {
		return fmt.Errorf("stage 3: send memory checksums: %w", err)
	}
	if err := s.w.Text(RecEnd, ""); err != nil {
		return err
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("stage 3: %w", err)
	}
	if s.m.sim != nil {
		for listen() { // requests left in flight, then the verdict
		}
	}
	for judged := false; !judged; {
		select {
		case req := <-requests:
			late(req)
		case err := <-verdict:
			if err != nil {
				return err
			}
			for len(requests) > 0 { // the listener queued them before it read the verdict
				late(<-requests)
			}
			if waited > 0 { // a simulated destination counts nothing: the model's count stands
				st.faultTime = waited
			}
			judged = true
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.m.update(func(i *Info) {
		i.RAM.Transferred = s.w.Bytes()
		i.RAM.PostcopyBytes = s.w.Bytes() - st.startBytes
		i.RAM.PostcopyRequests = st.asked
		i.Pagecast.RoundPages[len(i.Pagecast.RoundPages)-1] = st.early + st.total
		i.Pagecast.RoundBytes[len(i.Pagecast.RoundBytes)-1] = s.w.Bytes() - i.RAM.PrecopyBytes
		i.Pagecast.Verified = true
		i.Pagecast.CheckTime = st.sumWait.Milliseconds()
		i.Pagecast.FaultTime = st.faultTime.Milliseconds()
		i.Pagecast.StopReason = fmt.Sprintf("%s; stage 3 pushed %d dirty pages in %v, %d asked for by the destination, %d reconnections",
			i.Pagecast.StopReason, st.early+st.total, s.m.clock.Now().Sub(st.start).Round(time.Millisecond), st.asked, st.recoveries)
	})
	return nil
}

// reconnect dials the destination again until it answers (or
// RecoverTimeout passes), says this is a post-copy resuming, and takes the
// destination's list of pages it still lacks as what is left to send.
func (s *sender) reconnect(ctx context.Context, st *postcopyState) error {
	deadline := s.m.clock.Now().Add(s.m.cfg.RecoverTimeout)
	for {
		err := s.resume(ctx, st)
		if err == nil {
			return nil
		}
		if strings.Contains(err.Error(), noCommitText) {
			return errCommitNeverCame
		}
		if s.m.clock.Now().After(deadline) {
			return fmt.Errorf("gave up after %v: %w", s.m.cfg.RecoverTimeout, err)
		}
		s.m.log.Warn("post-copy reconnect failed; trying again", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.m.clock.After(time.Second):
		}
	}
}

func (s *sender) resume(ctx context.Context, st *postcopyState) error {
	conn, err := s.m.dial(ctx)
	if err != nil {
		return err
	}
	s.attach(conn)
	if err := s.handshake(resumeMode); err != nil {
		conn.Close()
		return err
	}
	missing := make([]uint64, len(st.pending))
	var chunks bitmapChunks
	for chunks.have < uint64(len(missing)) {
		rec, err := s.r.Next()
		if err == nil && rec.Type != RecBitmap {
			err = fmt.Errorf("expected the destination's missing pages, got a %s record", rec.Type)
		}
		if err == nil {
			err = chunks.add(missing, rec)
		}
		if err != nil {
			conn.Close()
			return err
		}
	}
	left := uint64(0)
	for i, w := range missing {
		st.pending[i] = w
		left += uint64(bits.OnesCount64(w))
	}
	st.left = left
	s.m.log.Info("post-copy reconnected", "pages-missing", left)
	return nil
}

// resumeMode is the hello's mode when a post-copy source reconnects.
const resumeMode = ModeTSMC + "-resume"

// noCommitText is a destination's refusal of a post-copy source that
// reconnects where the link broke before the commit came: the source
// then runs the guest on (errCommitNeverCame).
const noCommitText = "the commit never came: this destination has not started the guest, and will not"

// errCommitNeverCame is a post-copy source's reconnection refused with
// noCommitText.
var errCommitNeverCame = errors.New("the destination says " + noCommitText)

// earlyPages are the guest's EarlyPages among dirty, checked: each a
// dirty page, each once.
func (s *sender) earlyPages(dirty *bitmap.Bitmap) []uint64 {
	var out []uint64
	seen := map[uint64]bool{}
	for _, g := range s.m.g.EarlyPages(dirty) {
		if g < s.pages && dirty.Has(g) && !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return out
}

// sendPages sends gfns, zero pages as runs.
func (s *sender) sendPages(gfns []uint64) error {
	var normal, zero uint64
	for _, g := range gfns {
		n, err := s.queue(g)
		if err != nil {
			return err
		}
		if n == 0 {
			zero++
		} else {
			normal++
		}
	}
	s.m.update(func(i *Info) {
		i.RAM.Normal += normal
		i.RAM.NormalBytes += normal * PageSize
		i.RAM.Duplicate += zero
	})
	return s.flush()
}

// receiveTSMC finishes an incoming three-stage copy: stage 1's pages have
// arrived; the records up to RecEnd brought the guest's state, the dirty bitmap
// and the source's checksums. It checks every chunk without dirty pages
// and restores the guest's state; on the source's commit it drops the
// dirty pages from guest memory, starts the guest and fills them as the
// source pushes them or the guest touches them.
func (rc *receiver) receiveTSMC(dirty *bitmap.Bitmap) (err error) {
	// Asked of the guest aside from this loop (below), and waited for
	// once the region is closed, which gives a guest held in a fault
	// its page; for stopWait at most, as a stop is (a guest that never
	// stopped may hold the answer too).
	asked := make(chan struct{})
	close(asked) // until it is asked
	defer func() {
		select {
		case <-asked:
		case <-time.After(stopWait):
		}
	}()
	end := rc.cfg.Clock.Now() // of stage 2
	problem := rc.complete(dirty)
	var region *uffd.Region
	if problem == nil {
		region, problem = rc.prepareStage3(dirty)
	}
	if region != nil {
		defer region.Close()
	}
	prepared := rc.cfg.Clock.Now()
	if err := rc.verdict(problem); err != nil {
		return err
	}
	committed := rc.cfg.Clock.Now()
	if err := rc.start(); err != nil {
		return err
	}
	started := rc.cfg.Clock.Now()
	rc.started() // a link lost now is found by the reads below, which wait for the source to come back
	rc.status(StatusPostcopy)
	rc.log.Debug("switch-over", "prepare", prepared.Sub(end), "commit-wait", committed.Sub(prepared),
		"start", started.Sub(committed), "dropped-early", rc.droppedEarly)
	// A stage 3 that fails stops the guest here before the region goes:
	// closed, it gives the pages still missing as zeros, and the guest
	// would run on them. (Run before region.Close, deferred above.) A
	// panic going through (a fault, which guardFaults turns into the
	// error) stops it as an error does, then goes on (review 75).
	defer func() {
		if p := recover(); p != nil {
			defer panic(p)
			err = fmt.Errorf("stage 3: %v", p)
		}
		var told *toldSource
		if err == nil || errors.As(err, &told) { // stopGuest's, stopped already
			return
		}
		missing := region.Missing()
		stopped := make(chan error, 1)
		go func() { stopped <- rc.d.Stop() }()
		var serr error
		select {
		case serr = <-stopped:
		case <-time.After(stopWait):
			// A vCPU held in a fault takes the stop only once its page
			// comes: with the region gone it comes as zeros, and the
			// vCPU stops before it runs far.
			rc.log.Warn("stage 3: the guest has not stopped; letting its missing pages go as zeros for it to", "after", stopWait)
			region.Close()
			select {
			case serr = <-stopped:
			case <-time.After(stopWait):
				err = fmt.Errorf("%w; the guest here is told to stop%s", err, neverCame(missing))
				return
			}
		}
		if serr != nil {
			err = fmt.Errorf("%w; stop the guest here: %w", err, serr)
			return
		}
		err = fmt.Errorf("%w; the guest is stopped here%s", err, neverCame(missing))
	}()
	// The guest's state, for the log: running, or paused where it was
	// stopped while it waited. Asked aside, as the answer can wait on
	// a vCPU held in a fault, which only this loop's requests and fills
	// free: a test guest's writer faults holding the lock its state
	// needs (it hung a test for 19 minutes), as a VM's vCPU may hold
	// one its monitor needs. A panic there is said, not the process's
	// end: it is only the log's.
	// The pages stage 2 brought (the guest's status page) are said
	// apart, as the source counts them with stage 3's (walk 139: 52 079
	// here against 52 080 pushed).
	asked = make(chan struct{})
	pages, early := dirty.Count(), rc.pushed
	go func() {
		defer close(asked)
		defer func() {
			if p := recover(); p != nil {
				rc.log.Error("stage 3: asking the guest's state panicked", "panic", p)
			}
		}()
		_, st := rc.d.Waiting()
		rc.log.Info("stage 3: fetching dirty pages", "guest", st, "pages", pages, "sent-in-stage-2", early)
	}()

	// Faults become requests; the writer is shared with the final verdict.
	var wmu sync.Mutex
	stop := make(chan struct{})
	requested := bitmap.New(rc.pages)
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		var batch []uint64
		var lost *Writer // the link's writer that last failed
		for {
			select {
			case <-stop:
				return
			case g, ok := <-region.Faults():
				if !ok {
					return
				}
				batch = append(batch[:0], g)
			drain:
				for len(batch) < MaxBatch {
					select {
					case g := <-region.Faults():
						batch = append(batch, g)
					default:
						break drain
					}
				}
				wmu.Lock()
				ask := batch[:0]
				for _, g := range batch {
					if !requested.Has(g) {
						requested.Set(g)
						ask = append(ask, g)
					}
				}
				if len(ask) == 0 {
					wmu.Unlock()
					continue
				}
				err := rc.w.Request(ask)
				if err == nil {
					err = rc.w.Flush()
				}
				w := rc.w
				wmu.Unlock()
				rc.pulled += uint64(len(ask))
				// On a lost link the pages stay requested: a source that
				// reconnects is asked for them again (resumeFrom), and
				// the faults that come meanwhile are forwarded on the new
				// link once there is one.
				if err != nil && w != lost {
					rc.log.Warn("stage 3: ask the source for pages: the link is lost; asking again once the source is back", "err", err)
					lost = w
				}
			}
		}
	}()
	defer func() { close(stop); <-forwarded }()
	if rc.cfg.Pause != nil {
		// migrate-pause, as QEMU's destination takes it: the link is
		// broken here, the reads below find it lost, and the migration
		// turns postcopy-paused and waits for the source to come back
		// (a source stopped without its link closing left it
		// postcopy-active: walk 149).
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-rc.cfg.Pause:
					wmu.Lock() // a reconnection replaces the link under it
					l := rc.link
					wmu.Unlock()
					rc.log.Warn("stage 3: migrate-pause: the link to the source is broken here; waiting for it to reconnect")
					l.Conn.Close()
				}
			}
		}()
	}

	var zero [PageSize]byte
	// lastPages: once every dirty page is in, only the source's checksums
	// are left, summed since the hand-over, which for a terabyte takes
	// longer than the idle timeout.
	lastPages := func() {
		if region.Missing() == 0 {
			wmu.Lock() // the fault forwarder writes on the link
			rc.awaitChecksums()
			wmu.Unlock()
		}
	}
	for {
		rec, err := rc.r.Next()
		if err == nil && stage3Read != nil {
			stage3Read(rec)
		}
		if err != nil {
			err = fmt.Errorf("stage 3: read the source's pages (the guest waits on %d missing pages): %w", region.Missing(), err)
			if rc.cfg.Reconnect == nil || errors.Is(err, ErrMalformed) {
				return err
			}
			// vCPUs touching a missing page wait in the kernel until it
			// comes; the rest of the guest runs on.
			rc.log.Warn("stage 3: source lost; waiting for it to reconnect", "err", err, "missing", region.Missing())
			rc.status(StatusPostcopyPaused)
			if rerr := rc.awaitSource(region, &wmu, requested); rerr != nil {
				return fmt.Errorf("%w; %w", err, rerr)
			}
			rc.status(StatusPostcopy)
			continue
		}
		switch rec.Type {
		case RecPages:
			for i, g := range rec.GFNs {
				if err := region.Fill(g, rec.Data[i*PageSize:(i+1)*PageSize]); err != nil && !errors.Is(err, uffd.ErrPresent) {
					return fmt.Errorf("stage 3: %w", err)
				}
			}
			rc.pushed += uint64(len(rec.GFNs))
			lastPages()
		case RecZero:
			for g := rec.First; g < rec.First+rec.Count; g++ {
				if err := region.Fill(g, zero[:]); err != nil && !errors.Is(err, uffd.ErrPresent) {
					return fmt.Errorf("stage 3: %w", err)
				}
			}
			rc.pushed += rec.Count
			lastPages()
		case RecDigest:
			d := Digest{ChunkBytes: rec.Digest.ChunkBytes, Sums: append([]uint32(nil), rec.Digest.Sums...)}
			rc.digest = &d
		case RecEnd:
			wmu.Lock()
			defer wmu.Unlock()
			if missing := region.Missing(); missing > 0 {
				// An abort: the source keeps its copy paused, as the
				// guest here, waiting on those pages, may not stop.
				return fmt.Errorf("stage 3: the source ended with %d dirty pages never sent", missing)
			}
			if problem := rc.verifyClean(dirty); problem != nil {
				return rc.stopGuest(problem)
			}
			rc.verified = true // the pages held at the hand-over; the dirty ones came under their records' checksums
			rc.waited = region.Blocked()
			if err := rc.w.Stage3Verified(rc.waited); err != nil {
				return err
			}
			return rc.w.Flush()
		case RecAbort:
			return fmt.Errorf("%w: %s", errSourceAborted, rec.Text)
		default:
			return fmt.Errorf("stage 3: unexpected %s record: %w", rec.Type, ErrMalformed)
		}
	}
}

// prepareStage3 puts the guest's memory under userfaultfd and drops the
// dirty pages, which stage 3 brings, while it restores the guest's state.
// It runs before the verdict, while the source holds its guest paused
// for it, and so counts it in the downtime: after the commit, as it ran
// until 2026-12-07, dropping 25 969 scattered pages of a 256 MiB guest
// paused it 57 ms more, which no count saw (walk 138: 73 ms from the
// source's STOP to the destination's RESUME, against a downtime of under
// 1 ms). A region it cannot set up is a verdict the source hears, and its
// guest runs on there.
func (rc *receiver) prepareStage3(dirty *bitmap.Bitmap) (*uffd.Region, error) {
	region, err := uffd.Register(rc.mem)
	if err != nil {
		return nil, fmt.Errorf("stage 3 needs userfaultfd: %w", err)
	}
	// Those stage 1 named are out of memory already (dropEarly), marked a
	// word at a time.
	var drop []uint64
	var early uint64
	out := make([]uint64, len(dirty.Words()))
	for i, w := range dirty.Words() {
		var named uint64
		if rc.later != nil {
			named = rc.later.Words()[i]
		}
		out[i] = w & named
		early += uint64(bits.OnesCount64(out[i]))
		for d := w &^ named; d != 0; d &= d - 1 {
			drop = append(drop, uint64(i)*64+uint64(bits.TrailingZeros64(d)))
		}
	}
	if err := region.AbsentWords(out); err != nil {
		return region, err
	}
	rc.droppedEarly = early
	dropped := make(chan error, 1)
	go func() { dropped <- region.Drop(drop) }()
	err = rc.restore()
	if derr := <-dropped; err == nil {
		err = derr
	}
	return region, err
}

// stage3Read, where a test sets it, sees each record stage 3 reads, in
// its loop: a panic there is one in stage 3 (TestStage3PanicStopsGuest).
var stage3Read func(*Record)

// stopWait is how long a failed stage 3 waits for the guest it started to
// stop before the pages it lacks are let go (see receiveTSMC).
const stopWait = 2 * time.Second

// neverCame says how many of the dirty pages never came, if any.
func neverCame(missing uint64) string {
	if missing == 0 {
		return ""
	}
	return fmt.Sprintf(", %d of its pages never came", missing)
}

// awaitSource accepts the source's reconnection, tells it which pages are
// still missing, and asks again for those the guest is already waiting on.
func (rc *receiver) awaitSource(region *uffd.Region, wmu *sync.Mutex, requested *bitmap.Bitmap) error {
	for {
		conn, err := rc.cfg.Reconnect(rc.ctx)
		if err != nil {
			return fmt.Errorf("wait for the source to reconnect: %w", err)
		}
		if err := rc.resumeFrom(conn, region, wmu, requested); err != nil {
			rc.log.Warn("stage 3: reconnection refused", "err", err)
			conn.Close()
			continue
		}
		rc.conns = append(rc.conns, conn)
		rc.log.Info("stage 3: source reconnected", "missing", region.Missing())
		return nil
	}
}

func (rc *receiver) resumeFrom(conn net.Conn, region *uffd.Region, wmu *sync.Mutex, requested *bitmap.Bitmap) error {
	lc := &linkConn{Conn: conn, ctx: rc.ctx, limit: NewLimiter(0), idle: rc.cfg.IdleTimeout}
	w, r := NewWriter(lc), NewReader(lc)
	rec, err := r.Next()
	if err != nil {
		return err
	}
	if rec.Type != RecHello || rec.Hello.Mode != resumeMode {
		return fmt.Errorf("expected a resuming post-copy source, got a %s record", rec.Type)
	}
	if err := rc.checkHello(rec.Hello); err != nil {
		w.Text(RecRefuse, err.Error())
		w.Flush()
		return err
	}
	r.SetLimits(rc.pages)
	missing := region.MissingWords()
	wmu.Lock()
	defer wmu.Unlock()
	if err := w.Text(RecAccept, ""); err != nil {
		return err
	}
	if err := w.Bitmap(missing); err != nil {
		return err
	}
	// Pages asked for on the lost link and still missing: a vCPU may be
	// waiting on one, and its fault will not be reported again.
	var again []uint64
	for i, word := range missing {
		word &= requested.Words()[i]
		for word != 0 {
			again = append(again, uint64(i)*64+uint64(bits.TrailingZeros64(word)))
			word &= word - 1
		}
	}
	for len(again) > 0 {
		n := min(len(again), MaxBatch)
		if err := w.Request(again[:n]); err != nil {
			return err
		}
		again = again[n:]
	}
	if err := w.Flush(); err != nil {
		return err
	}
	rc.read += rc.r.Bytes() // the broken connection's, counted before its reader goes
	rc.w, rc.r, rc.link = w, r, lc
	return nil
}

// verifyClean checks the pages the destination held when its guest
// started against the source's checksums, which came last: every chunk
// without a dirty page (those came in stage 3, each under its record's
// checksum). The pages' own checksums, taken as they arrived, give the
// chunks' as they were then.
func (rc *receiver) verifyClean(dirty *bitmap.Bitmap) error {
	if rc.digest == nil {
		return errors.New("stage 3: the source ended without its memory checksums")
	}
	chunkPages := uint64(rc.digest.ChunkBytes) / PageSize
	if chunkPages == 0 || rc.digest.ChunkBytes%PageSize != 0 || uint64(len(rc.digest.Sums)) != (rc.pages+chunkPages-1)/chunkPages {
		return fmt.Errorf("verify memory: %d checksums of %d-byte chunks do not cover %d pages: %w",
			len(rc.digest.Sums), rc.digest.ChunkBytes, rc.pages, ErrMalformed)
	}
	differ, checked := 0, 0
	for i := range rc.digest.Sums {
		lo, hi := uint64(i)*chunkPages, min(uint64(i+1)*chunkPages, rc.pages)
		if dirty.Any(lo, hi) {
			continue
		}
		checked++
		if rc.sums.combine(lo, hi) != rc.digest.Sums[i] {
			differ++
		}
	}
	if differ > 0 {
		return fmt.Errorf("verify memory after the switch-over: %d of %d clean chunks differ from the source's", differ, checked)
	}
	return nil
}
