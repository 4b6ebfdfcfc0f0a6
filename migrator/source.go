package migrator

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/migrator/mecom"
)

// Config tunes a migration. The zero value of a field means its default.
type Config struct {
	Mode          string        // ModePrecopy (default), ModePredictive, ModeThrottle, MECOM, or MODE+mecom
	MaxBandwidth  uint64        // link cap, bytes/s; 0: no cap
	DowntimeLimit time.Duration // how long the guest may stay stopped; default 300 ms (QEMU's)
	MaxRounds     int           // pre-copy rounds before the stop-and-copy is forced; default 30 (Xen's)
	Epoch         time.Duration // how often the dirty log is harvested during a round; default 100 ms
	Warmup        int           // predictive without a profile: epochs observed before round 1; none by default (the forecast starts as round 1's epochs pass)
	Threshold     float64       // predictive: defer pages at least this likely to be dirtied in the round; default 0.5
	Profile       string        // predictive: a trace of this VM (pagecast profile --out) to warm the predictor
	Auto          *AutoChoice   // mode auto's choice, reported in Info as it was made
	Prefer        string        // mode auto (Controller): what to optimise, time (default), bytes or downtime
	Observe       int           // mode auto (Controller): 100 ms epochs to watch the guest for; default DefaultObserve
	// ObserveGiven: Observe was set (x-pagecast-observe), and auto keeps
	// to it; otherwise it may watch a guest still writing new pages
	// again, for longer.
	ObserveGiven   bool
	TargetRound    int           // throttle: the round by which the dirty pages left should fit the downtime limit; default 4
	RecoverTimeout time.Duration // tsmc: how long a source whose link failed in stage 3 keeps redialling; default 5 min
	IdleTimeout    time.Duration // a connection that moves nothing this long is dead; default 10 s
	TLS            *tls.Config   // client side of mutual TLS; nil: plain TCP
	Log            *slog.Logger
	// Clock times epochs, rounds, the link cap and retries; default
	// WallClock. (Deadlines on the connection itself stay wall time.)
	Clock Clock
}

// downtimeShare is the part of the downtime limit the pending pages may
// take when the engine decides to stop; the rest is for what the guest
// dirties between that decision and the pause, and the fixed costs of
// switching over (pause, vCPU state, checksums, the destination's check,
// commit: 15–35 ms here, more under the race detector). 0.9 keeps a
// 300 ms limit within a few ms in plain pre-copy. Throttle keeps a
// quarter, because it can (it slows the guest until pending is that
// small) and because at 0.85 a throttled guest still overran by 13 ms.
func downtimeShare(m mode) float64 {
	if m.policy == ModeThrottle {
		return 0.75
	}
	return 0.9
}

// Defaults.
const (
	DefaultDowntimeLimit  = 300 * time.Millisecond
	DefaultMaxRounds      = 30
	DefaultObserve        = 20  // mode auto: 100 ms epochs, 2 s
	MaxObserve            = 600 // mode auto: the longest watch, a minute
	DefaultEpoch          = 100 * time.Millisecond
	DefaultThreshold      = 0.5
	DefaultIdleTimeout    = 10 * time.Second
	DefaultTargetRound    = 4
	DefaultRecoverTimeout = 5 * time.Minute
)

// MaxRoundsLimit bounds a round cap: ten thousand rounds are hours of
// pre-copy, and a cap near the int's end overflowed QEMU's plan (its
// dirty-sync count, the cap plus one, went negative: no cap at all).
const MaxRoundsLimit = 10000

func (c Config) withDefaults() Config {
	if c.Mode == "" {
		c.Mode = ModePrecopy
	}
	if c.Prefer == "" {
		c.Prefer = "time"
	}
	if c.Observe <= 0 {
		c.Observe = DefaultObserve
	}
	if c.DowntimeLimit <= 0 {
		c.DowntimeLimit = DefaultDowntimeLimit
	}
	if c.MaxRounds <= 0 {
		c.MaxRounds = DefaultMaxRounds
	}
	if c.Epoch <= 0 {
		c.Epoch = DefaultEpoch
	}
	c.Warmup = max(c.Warmup, 0)
	if c.Threshold <= 0 {
		c.Threshold = DefaultThreshold
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.TargetRound <= 0 {
		c.TargetRound = DefaultTargetRound
	}
	if c.RecoverTimeout <= 0 {
		c.RecoverTimeout = DefaultRecoverTimeout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = WallClock{}
	}
	return c
}

// ParseURI turns a QEMU migration URI, tcp:HOST:PORT, into a dial address.
func ParseURI(uri string) (string, error) {
	addr, ok := strings.CutPrefix(uri, "tcp:")
	if !ok {
		return "", fmt.Errorf("migration URI %q: want tcp:HOST:PORT", uri)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", fmt.Errorf("migration URI %q: %w", uri, err)
	}
	return addr, nil
}

// Migration is one outgoing migration of a VM.
type Migration struct {
	g      Guest
	cfg    Config
	clock  Clock
	uri    string
	addr   string
	limit  *Limiter
	log    *slog.Logger
	cancel context.CancelFunc // stops the migration at its next record's end
	cut    context.CancelFunc // closes its connections
	done   chan struct{}
	sim    *simLink // set when the migration is simulated (Simulate)
	// downtime is the downtime limit in force, in nanoseconds: cfg's
	// until SetDowntimeLimit changes it during the migration.
	downtime atomic.Int64
	// postcopyAsked is migrate-start-postcopy's: a MODE+postcopy
	// migration switches at its next dirty log harvest (StartPostcopy).
	postcopyAsked atomic.Bool

	mu        sync.Mutex
	info      Info
	start     time.Time
	cancelled bool
	committed bool  // the commit is sent: a cancel could run the guest twice
	gone      error // the source VM went (Goner) during the migration
	goneAsked bool  // noteGone has looked
	// Throttle time accrues in Info from throttleFrom at throttleRate
	// vCPU-seconds a second (the throttle's share times the vCPUs), on
	// top of info's, which counts to throttleFrom: Info says it as it
	// grows. (It grew only when the throttle changed, at a round's end,
	// and a guest throttled 89% for a whole round was shown as slowed 0%;
	// walk 52.)
	throttleFrom time.Time
	throttleRate float64

	closeLog func() error // the dirty log's Close, run (by run's goroutine) once finish has ended the migration
}

// Outgoing begins migrating guest g to uri in the background. The guest
// must be running. Errors in uri or cfg come back at once; everything later
// is reported by Info.
func Outgoing(g Guest, uri string, cfg Config) (*Migration, error) {
	addr, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	return start(g, uri, addr, cfg, nil)
}

// start checks g and cfg and runs the migration in the background: over
// the network to addr, or on sim's virtual link.
func start(g Guest, uri, addr string, cfg Config, sim *simLink) (*Migration, error) {
	cfg = cfg.withDefaults()
	md, err := parseMode(cfg.Mode)
	if err != nil {
		return nil, err
	}
	memory := g.MemoryBytes()
	mapped := uint64(len(g.Memory()))
	if _, ok := g.(Contents); ok {
		mapped = memory // its pages come from Contents, not from Memory
	}
	if memory == 0 || memory%PageSize != 0 || mapped != memory {
		return nil, fmt.Errorf("migrate: guest memory of %d bytes (%d mapped) is not a whole number of %d-byte pages", memory, mapped, PageSize)
	}
	pol, err := newPolicy(cfg, md, memory/PageSize)
	if err != nil {
		return nil, err
	}
	if ok, st := g.Running(); !ok {
		return nil, NotRunning(st)
	}
	// Two ends: cancel stops the engine between records, so that it can
	// still tell the destination why; cut, the parent, closes the link.
	linkCtx, cut := context.WithCancel(context.Background())
	ctx, cancel := context.WithCancel(linkCtx)
	m := &Migration{
		g: g, cfg: cfg, clock: cfg.Clock, uri: uri, addr: addr, sim: sim,
		limit:  NewLimiterClock(cfg.Clock, cfg.MaxBandwidth),
		log:    cfg.Log.With("component", "migrate", "to", uri, "mode", cfg.Mode),
		cancel: cancel,
		cut:    cut,
		done:   make(chan struct{}),
		start:  cfg.Clock.Now(),
	}
	m.downtime.Store(int64(cfg.DowntimeLimit))
	m.info = Info{Status: StatusSetup, RAM: &RAMStats{Total: memory, PageSize: PageSize, Remaining: memory},
		Pagecast: &Extra{Mode: cfg.Mode, Bandwidth: cfg.MaxBandwidth, Destination: uri, Auto: cfg.Auto, Slowdown: Slowdown{VCPUs: g.Identity().VCPUs}}}
	go func() {
		defer close(m.done)
		defer cut()
		// A source VM that goes (its QEMU killed) ends the migration
		// at once, before the switch-over: it sent on from the memory
		// left mapped until the pause failed. After it (post-copy) the
		// pages left go on from that memory.
		_, unwatch := WatchGone(g, func(reason error) {
			m.mu.Lock()
			m.gone = reason
			early := m.info.Status == StatusSetup || m.info.Status == StatusActive
			m.mu.Unlock()
			if early {
				m.cancel()
			}
		})
		err := m.run(ctx, linkCtx, md, pol)
		unwatch()
		m.finish(err)
		if m.closeLog != nil {
			if err := m.closeLog(); err != nil {
				m.log.Warn("close the dirty log", "err", err)
			}
		}
	}()
	return m, nil
}

// noteGone sets m.gone where the migration failed (err) as its source VM
// went, before WatchGone's next look: a QEMU killed as the migration began
// failed it with "find plugin area: process N (.) is not a QEMU process"
// (its command line gone as it exited), and both ends said the guest ran
// on at the source. A process on its way out is not a zombie at once: it
// is asked a few times, once a migration.
func (m *Migration) noteGone(err error) {
	goner, ok := m.g.(Goner)
	m.mu.Lock()
	asked := m.goneAsked || m.gone != nil
	m.goneAsked = true
	m.mu.Unlock()
	if err == nil || !ok || asked {
		return
	}
	for try := range 4 {
		if why := goner.Gone(); why != nil {
			m.mu.Lock()
			if m.gone == nil {
				m.gone = why
			}
			m.mu.Unlock()
			return
		}
		if try < 3 {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Info is the migration's state in query-migrate's shape.
func (m *Migration) Info() Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.info
	ram := *m.info.RAM
	out.RAM = &ram
	extra := *m.info.Pagecast
	// Copies, [] where no round ran (null read as no list; walk 65).
	extra.RoundPages = append([]uint64{}, extra.RoundPages...)
	extra.RoundBytes = append([]uint64{}, extra.RoundBytes...)
	out.Pagecast = &extra
	if !m.finished() {
		now := m.clock.Now()
		out.TotalTime = now.Sub(m.start).Milliseconds()
		if m.throttleRate > 0 && now.After(m.throttleFrom) {
			extra.ThrottleTime += int64(float64(now.Sub(m.throttleFrom).Milliseconds()) * m.throttleRate)
		}
	}
	return out
}

func (m *Migration) finished() bool {
	switch m.info.Status {
	case StatusCompleted, StatusFailed, StatusCancelled:
		return true
	}
	return false
}

// ErrPostcopyUncancellable is Cancel's error once post-copy has begun:
// the guest runs on the destination, needing pages only the source
// holds, and a cancel would lose it. The migration goes on.
var ErrPostcopyUncancellable = errors.New("the migration is in post-copy: the guest runs on the destination and needs pages only the source holds, " +
	"so it cannot be cancelled without losing the guest; it goes on")

// ErrCommitted is Cancel's error once the commit is sent: the destination
// runs the guest, or starts it once the commit reaches it (a lost one is
// repeated), so resuming it here could run it twice. The migration goes
// on to its end.
var ErrCommitted = errors.New(CommittedText)

// CommittedText is ErrCommitted's text, which a QMP client reads back.
const CommittedText = "the migration has committed: the destination runs the guest, or starts it once the commit reaches it, " +
	"so it cannot be cancelled without the guest running twice; it goes on to its end"

// NotRunningError is a migration refused for its source's run state.
type NotRunningError struct {
	State string // QEMU's query-status run state
	msg   string
}

func (e *NotRunningError) Error() string { return e.msg }

// NotRunning is the error for a source whose guest is not running, in run
// state st (QEMU's query-status), saying what to do where the state says:
// a *NotRunningError.
func NotRunning(st string) error {
	return &NotRunningError{State: st, msg: notRunning(st)}
}

// notRunning is NotRunning's text.
func notRunning(st string) string {
	const prefix = "migrate: virtual machine is "
	switch st {
	case "paused":
		return prefix + "paused, not running: resume it (QMP cont), then migrate " +
			"(where a pagecast migrate was killed in its switch-over, check first that the guest does not run on that migration's destination)"
	case "postmigrate":
		return prefix + "postmigrate: it has migrated away already, and its guest runs on that migration's destination: migrate from there"
	case "inmigrate":
		return prefix + "inmigrate: it is a destination waiting for an incoming migration; give the source's monitor"
	case "prelaunch":
		return prefix + "prelaunch: its QEMU was started with -S and the guest has not run yet: start it (QMP cont), then migrate"
	case "suspended":
		return prefix + "suspended (ACPI S3): wake it (QMP system_wakeup), then migrate"
	}
	return prefix + st + ", not running"
}

// Cancel stops the migration; the source keeps running. Once post-copy has
// begun it refuses with ErrPostcopyUncancellable, and once the commit is
// sent with ErrCommitted, and the migration goes on.
func (m *Migration) Cancel() error {
	m.mu.Lock()
	if st := m.info.Status; st == StatusPostcopy || st == StatusPostcopyPaused {
		m.mu.Unlock()
		return ErrPostcopyUncancellable
	}
	if m.committed && !m.finished() {
		m.mu.Unlock()
		return ErrCommitted
	}
	m.cancelled = true
	m.mu.Unlock()
	m.cancel()
	if m.cut == nil {
		return nil // made by hand, as a test's
	}
	// The engine stops at the end of the record it is writing and tells
	// the destination; a link that holds it up longer is cut.
	go func() {
		select {
		case <-m.done:
		case <-time.After(cancelGrace):
			m.cut()
		}
	}()
	return nil
}

// cancelGrace is how long a cancelled migration may take to finish the
// record it is writing and tell the destination, before its link is cut.
const cancelGrace = 2 * time.Second

// Abort stops the migration whatever its stage, for a source going away
// whatever: in post-copy the guest on the destination loses the pages
// only this source holds, and after the commit the destination may run it
// or not. Done is closed once the engine has stopped reading the guest.
func (m *Migration) Abort() { m.abort() }

// abort stops the migration whatever its stage: for a simulation or a
// measurement, where no guest can be lost.
func (m *Migration) abort() {
	m.mu.Lock()
	m.cancelled = true
	m.mu.Unlock()
	m.cancel()
	if m.cut != nil {
		m.cut()
	}
}

// SetDowntimeLimit changes the downtime limit of a migration under way,
// as QEMU's migrate-set-parameters downtime-limit does: the next check of
// whether what is pending fits the stop-and-copy takes it. d must be
// positive.
func (m *Migration) SetDowntimeLimit(d time.Duration) {
	if d > 0 {
		m.downtime.Store(int64(d))
	}
}

// StartPostcopy is QMP migrate-start-postcopy: a MODE+postcopy migration
// still in pre-copy switches to post-copy at its next dirty log harvest
// (within an epoch), whatever its rounds would have done, as QEMU's does
// once asked (KubeVirt asks at its completion timeout with
// allowPostCopy). Other modes are refused, as QEMU refuses it without the
// postcopy-ram capability.
func (m *Migration) StartPostcopy() error {
	mode, err := parseMode(m.cfg.Mode)
	if err != nil {
		return err
	}
	if !mode.fallback {
		if mode.threeStage() {
			return fmt.Errorf("mode %s goes to post-copy after its one pass by itself: there is nothing to start", m.cfg.Mode)
		}
		return fmt.Errorf("mode %s has no post-copy: give x-pagecast-mode %s+postcopy before migrate (as QEMU wants the postcopy-ram capability set before it)", m.cfg.Mode, m.cfg.Mode)
	}
	m.mu.Lock()
	st := m.info.Status
	m.mu.Unlock()
	if st != StatusActive && st != StatusSetup {
		return fmt.Errorf("the migration is %s: post-copy starts only from pre-copy", st)
	}
	m.postcopyAsked.Store(true)
	return nil
}

// DowntimeLimit is the downtime limit in force.
func (m *Migration) DowntimeLimit() time.Duration { return time.Duration(m.downtime.Load()) }

// Bandwidth is the link cap in force, bytes/s; 0: none.
func (m *Migration) Bandwidth() uint64 { return m.limit.Rate() }

// SetBandwidth changes the link cap of a migration under way.
func (m *Migration) SetBandwidth(bytesPerSecond uint64) {
	m.limit.SetRate(bytesPerSecond)
	m.mu.Lock()
	m.info.Pagecast.Bandwidth = bytesPerSecond
	m.mu.Unlock()
}

// HandedOver reports whether the migration has committed the guest to its
// destination, which runs it (or starts it once the commit reaches it):
// whatever the migration's end, the source's copy must not run again but
// by the user's explicit choice.
func (m *Migration) HandedOver() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.committed
}

// Done is closed when the migration has completed, failed or been
// cancelled, with the source VM resumed if it did not complete.
func (m *Migration) Done() <-chan struct{} { return m.done }

// Wait waits for the migration to end and returns its last Info, and an
// error if it did not complete.
func (m *Migration) Wait() (Info, error) {
	<-m.done
	info := m.Info()
	if info.Status != StatusCompleted {
		return info, statusError(info)
	}
	return info, nil
}

// statusError is a migration's end other than completed as an error:
// "migration STATUS: why", without saying the status twice.
func statusError(info Info) error {
	desc := strings.TrimPrefix(info.ErrorDesc, "migration "+info.Status)
	desc = strings.TrimPrefix(desc, ": ")
	if desc == "" {
		return fmt.Errorf("migration %s", info.Status)
	}
	return fmt.Errorf("migration %s: %s", info.Status, desc)
}

func (m *Migration) update(fn func(*Info)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fn(&m.info)
}

func (m *Migration) finish(err error) {
	m.noteGone(err)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.info.TotalTime = m.clock.Now().Sub(m.start).Milliseconds()
	m.info.ExpectedDowntime = 0
	switch {
	case err == nil:
		if g, ok := m.g.(MigratedOuter); ok {
			g.MigratedOut()
		}
		m.info.Status = StatusCompleted
		m.info.RAM.Remaining = 0
		m.log.Info("migration completed", "total", time.Duration(m.info.TotalTime)*time.Millisecond,
			"downtime", time.Duration(m.info.Downtime)*time.Millisecond, "bytes", m.info.RAM.Transferred,
			"rounds", m.info.Pagecast.Round)
	case m.info.Status == StatusPostcopy || m.info.Status == StatusPostcopyPaused:
		// The destination ran the guest; this side holds the pages it
		// still lacks, and the guest paused as it was at the switch-over.
		why := "interrupted"
		if m.cancelled {
			why = "cancelled"
		}
		m.info.Status = StatusFailed
		m.info.ErrorDesc = fmt.Sprintf("post-copy %s: the guest ran on the destination after the switch-over, needing pages only this source holds "+
			"(this source keeps the guest paused as it was at the switch-over; resuming it here with cont would lose what it did since): %v", why, linkHint(err, m.cfg.IdleTimeout))
		m.log.Error("post-copy "+why, "err", err)
	case m.gone != nil:
		m.info.Status = StatusFailed
		m.info.ErrorDesc = fmt.Sprintf("%v during the migration, and the guest with it: the destination did not start it", m.gone)
		if !errors.Is(err, context.Canceled) { // the watch's own stop says nothing more
			m.info.ErrorDesc += fmt.Sprintf(" (%v)", err)
		}
		m.log.Error("the source VM went during the migration", "why", m.gone, "err", err)
	case m.cancelled:
		m.info.Status = StatusCancelled
		m.info.ErrorDesc = "migration cancelled"
		m.log.Info("migration cancelled")
	default:
		m.info.Status = StatusFailed
		m.info.ErrorDesc = linkHint(err, m.cfg.IdleTimeout).Error()
		if m.info.Pagecast.HeldPaused {
			m.log.Error("migration failed; the guest stays paused here, as its user left it (QMP cont runs it)", "err", err)
		} else {
			m.log.Error("migration failed; the guest keeps running here", "err", err)
		}
	}
}

// run is the migration from dial to commit. Whatever goes wrong, the VM
// runs on here afterwards: it is resumed if the stop-and-copy had paused it.
func (m *Migration) run(ctx, linkCtx context.Context, md mode, pol policy) (err error) {
	s := &sender{m: m, pol: pol, mem: m.g.Memory(), pages: m.g.MemoryBytes() / PageSize, mode: md, linkCtx: linkCtx}
	s.contents = mappedContents(s.mem)
	if c, ok := m.g.(Contents); ok {
		s.contents = c
	}
	if m.sim != nil {
		s.w, s.r = m.sim.attach(m, md)
	} else {
		conn, err := m.dial(ctx)
		if err != nil {
			return err
		}
		defer s.closeConns()
		s.attach(conn)
	}
	defer func() {
		if err != nil && m.sim == nil {
			s.tellAbort(err)
		}
	}()
	if md.mecom {
		s.enc = mecom.NewEncoder(0)
		if c, ok := m.g.(Contents); ok {
			s.enc.Memoize(c.Memo()) // its pages are a few unchanging buffers
		}
		if m.sim != nil {
			s.enc.SetCPUScale(m.sim.sc.CodingScale)
		}
		s.enc.SetBandwidth(float64(m.cfg.MaxBandwidth))
	}
	if err := s.handshake(m.cfg.Mode); err != nil {
		return err
	}

	if s.log, err = m.g.StartDirtyLog(); err != nil {
		return fmt.Errorf("start the dirty log: %w", err)
	}
	// Closed once the migration has ended (finish): closing a KVM QEMU's
	// takes it up to a second (cancel-vcpu-dirty-limit waits for QEMU's
	// dirty-limit thread to end its 1 s sample), which a 64 MiB
	// migration's total time counted, 1.01 s for 226 ms of migration, and
	// mode auto's prediction missed by 83% (found by a new-user walk).
	// QEMU's own total-time ends before its cleanup too.
	m.closeLog = s.log.Close
	if _, ok := m.g.(Contents); !ok {
		s.log, s.contents = trackHoles(m.g, s.mem, s.log)
	}
	s.pending = bitmap.New(s.pages)
	s.lastHarvest = m.clock.Now()
	s.throttledSince = s.lastHarvest
	s.nextHarvest = s.lastHarvest.Add(m.cfg.Epoch)
	if md.policy == ModeThrottle {
		defer func() {
			s.accountThrottle()
			m.g.SetThrottle(0) // lifted whatever happens: completed (the guest runs elsewhere) or not
			s.publishThrottle()
			if err != nil {
				// The guest runs on here at full pace: query-migrate and
				// the metrics said 87% after a failed migration (found
				// by a new-user walk). A completed one keeps the last
				// figure, which described its end.
				m.update(func(i *Info) { i.CPUThrottlePercentage = 0 })
			}
		}()
	}
	if md.policy == ModePredictive && m.cfg.Profile == "" {
		// Nothing is known of the guest yet: watch it for a few epochs
		// so that round 1 already holds back its hot pages.
		for range m.cfg.Warmup {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-m.clock.After(s.lastHarvest.Add(m.cfg.Epoch).Sub(m.clock.Now())):
			}
			if err := s.harvest(); err != nil {
				return err
			}
		}
	}
	m.update(func(i *Info) {
		i.Status = StatusActive
		i.SetupTime = m.clock.Now().Sub(m.start).Milliseconds()
	})

	for gfn := range s.pages {
		s.pending.Set(gfn)
	}
	s.pendingN = s.pages
	if md.threeStage() {
		return s.why(s.tsmc(ctx))
	}
	stopReason, post, err := s.precopy(ctx)
	if err != nil {
		return s.why(err)
	}
	if post {
		if err := s.nameLater(); err != nil {
			return s.why(err)
		}
		return s.why(s.switchToPostcopy(ctx, stopReason, s.m.Info().Pagecast.Round+1))
	}
	return s.why(s.stopAndCopy(ctx, stopReason))
}

// why adds the destination's own reason to a failure, when it sent one:
// a destination that gives up sends an abort record before it hangs up,
// which a source busy writing would otherwise never read.
func (s *sender) why(err error) error {
	if st := s.m.Info().Status; err == nil || st == StatusPostcopy || st == StatusPostcopyPaused {
		return err
	}
	// Briefly: the connection's idle timeout would otherwise hold the
	// report of a failure already known (the guest runs on here anyway).
	if s.link != nil {
		s.link.idle = 200 * time.Millisecond
	}
	for range 16 { // skip requests or verdicts in flight
		rec, rerr := s.r.Next()
		if rerr != nil {
			return err
		}
		if rec.Type == RecAbort {
			if strings.Contains(err.Error(), rec.Text) {
				return err // its verdict said it already
			}
			return fmt.Errorf("the destination aborted: %s (%w)", rec.Text, err)
		}
	}
	return err
}

func (m *Migration) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{Timeout: m.cfg.IdleTimeout}
	conn, err := d.DialContext(ctx, "tcp", m.addr)
	if err != nil {
		return nil, fmt.Errorf("connect to the destination: %w", err)
	}
	if m.cfg.TLS == nil {
		return conn, nil
	}
	tc := m.cfg.TLS.Clone()
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(m.addr) // the certificate must name the host dialled
	}
	tconn := tls.Client(conn, tc)
	hctx, cancel := context.WithTimeout(ctx, m.cfg.IdleTimeout)
	defer cancel()
	if err := tconn.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS handshake with the destination: %w", tlsHint(err, "destination"))
	}
	return tconn, nil
}

// sender is the state of one migration's stream.
type sender struct {
	m        *Migration
	mode     mode
	answer   *Record        // the destination's answer to the checksums, read before they went (awaitStarted)
	enc      *mecom.Encoder // pages are compressed (MECOM) when set
	coded    []byte
	conn     net.Conn        // the connection in use (nil when simulated)
	link     *linkConn       // conn, paced and with idle timeouts
	linkCtx  context.Context // its end (Migration.cut) closes the connections
	close    []func()        // undo attach, for every connection (post-copy recovery makes more)
	stateTag string          // of the guest state sent (a repeated commit names it)
	// startedThere: the destination said its guest runs (RecStarted).
	startedThere bool
	// postcopyNow: migrate-start-postcopy ended the pass under way
	// (Migration.StartPostcopy).
	postcopyNow bool
	// held says the guest was already paused when the switch-over came:
	// its user stopped it during the migration (QMP stop). The
	// destination then holds it paused, and a failure leaves it paused
	// here, as QEMU's own migration does (walk 114: the destination ran
	// it).
	held     bool
	w        *Writer
	r        recordReader
	pol      policy
	mem      []byte
	contents Contents // the pages' contents: mem, or the simulated guest's
	pages    uint64

	log         DirtyLog
	pending     *bitmap.Bitmap // pages whose latest content the destination lacks
	pendingN    uint64         // pending's count, kept as it changes: counting a terabyte guest's bitmap is slow
	lastHarvest time.Time
	nextHarvest time.Time // lastHarvest + Epoch: compared for every page sent, so made once
	harvests    uint64
	harvested   uint64 // pages the current pass's harvests made pending again (clean before: sent, or never dirtied)

	batch                []uint64
	zeroFirst, zeroCount uint64
	passPages            uint64         // pages sent in the current pass
	deferred             uint64         // pages deferred in the current pass
	stopAt               uint64         // pages the link moves within the downtime limit
	round                roundRate      // what the current round has moved, for stopAt until the link is measured
	polTime              time.Duration  // wall time the policy took to observe harvests in the current round (the predictor's)
	wireShare            float64        // wire bytes per byte of a page pending: see measureCoding
	coded0               mecom.Stats    // the encoder's totals when the round began
	last                 *bitmap.Bitmap // pages the policy put last in the current pass
	// later, in TSMC's stage 1 (nil elsewhere), has the pages sent in the
	// pass and written again since, which stage 3 brings and which the
	// destination has been told of (RecLater); sent, the pages sent.
	later, sent *bitmap.Bitmap
	heldBack    []uint64 // pages held back for stage 3 since the last harvest, to be named

	throttledSince time.Time     // when the guest's throttle last changed (or the guest resumed)
	throttled      time.Duration // vCPU time the throttle withheld before throttledSince
}

// accountThrottle adds the vCPU time the guest's throttle withheld since
// it last changed to Info's throttle-time, up to now.
func (s *sender) accountThrottle() {
	now := s.m.clock.Now()
	if pct := s.m.g.Throttle(); pct > 0 && !s.throttledSince.IsZero() {
		vcpus := max(1, s.m.g.Identity().VCPUs)
		s.throttled += time.Duration(float64(now.Sub(s.throttledSince)) * float64(pct) / 100 * float64(vcpus))
	}
	s.throttledSince = now
	s.publishThrottle()
}

// publishThrottle puts the throttle time counted so far in Info, and what
// accrues from now on at the guest's throttle (none while it is paused).
func (s *sender) publishThrottle() {
	rate := 0.0
	if pct := s.m.g.Throttle(); pct > 0 && !s.throttledSince.IsZero() {
		rate = float64(pct) / 100 * float64(max(1, s.m.g.Identity().VCPUs))
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.info.Pagecast.ThrottleTime = s.throttled.Milliseconds()
	s.m.throttleFrom, s.m.throttleRate = s.throttledSince, rate
}

// attach makes conn the migration's connection: writes go through the
// link cap, reads and writes time out when idle, the link's cut closes it,
// and the byte count carries on from the connection before.
func (s *sender) attach(conn net.Conn) {
	stop := context.AfterFunc(s.linkCtx, func() { conn.Close() }) // unblocks reads and writes
	s.close = append(s.close, func() { stop(); conn.Close() })
	lc := &linkConn{Conn: conn, ctx: s.linkCtx, limit: s.m.limit, idle: s.m.cfg.IdleTimeout}
	w := NewWriter(lc)
	if s.w != nil {
		w.n = s.w.Bytes()
	}
	s.conn, s.link, s.w, s.r = conn, lc, w, NewReader(lc)
}

// tellAbort tells the destination why the source gives up, where the
// stream still allows it, so that it says more than that the source hung
// up. Not once post-copy has begun (that failure is the destination's to
// see), nor after a write cut short, which leaves a record half sent:
// Flush reports that (bufio keeps a write's failure).
func (s *sender) tellAbort(err error) {
	if st := s.m.Info().Status; st == StatusPostcopy || st == StatusPostcopyPaused || s.linkCtx.Err() != nil {
		return
	}
	s.link.idle = abortWait
	if s.w.Flush() != nil {
		return
	}
	s.m.noteGone(err)
	s.m.mu.Lock()
	reason := fmt.Sprintf("the source failed, and its guest runs on there: %v", err)
	switch {
	case s.m.gone != nil:
		reason = fmt.Sprintf("%v, and the guest with it", s.m.gone)
	case s.m.cancelled:
		reason = "cancelled on the source, where the guest runs on"
	}
	s.m.mu.Unlock()
	if s.w.Text(RecAbort, reason) == nil { // the Writer cuts long reasons
		s.w.Flush()
	}
}

// abortWait bounds each write of tellAbort's: the migration has failed
// already, and a destination that reads no more must not hold it up.
const abortWait = 200 * time.Millisecond

func (s *sender) closeConns() {
	for _, c := range s.close {
		c()
	}
}

// handshake says who the source is and how it sends (mode), and reads the
// destination's answer.
func (s *sender) handshake(mode string) error {
	id := s.m.g.Identity()
	if err := s.w.Hello(Hello{Version: ProtocolVersion, PageSize: PageSize, MemoryBytes: s.m.g.MemoryBytes(),
		VCPUs: uint32(id.VCPUs), Image: id.Image, Mode: mode}); err != nil {
		return fmt.Errorf("send handshake: %w", err)
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("send handshake: %w", err)
	}
	rec, err := s.r.Next()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Something took the connection and says nothing: not pagecast.
		return fmt.Errorf("read the destination's answer to the handshake: %w (the peer at the destination's address took the connection and has not answered: is it a pagecast receiver, vm run --incoming or pagecast receive, and not busy with another migration?)", err)
	}
	if errors.Is(err, ErrMalformed) {
		// Something answered, in another protocol (an HTTP server's
		// reply read as a record header claimed 1.3 GB).
		return fmt.Errorf("read the destination's answer to the handshake: %w (the peer at the destination's address answered in another protocol: it is not a pagecast receiver, vm run --incoming or pagecast receive)", err)
	}
	if err != nil && s.m.cfg.TLS == nil {
		// A TLS destination hangs up on a plain handshake (a TLS
		// record it cannot parse), which reads here as a bare EOF.
		return fmt.Errorf("read the destination's answer to the handshake: %w (the destination hung up: a destination that requires TLS closes plain connections: give this side its certificate, key and CA; so does QEMU's own -incoming, which takes QEMU's migration only (pagecast migrate --engine qemu) and exits; and a pagecast destination flooded with more than 256 connections at once closes those that have not finished their handshake, oldest first)", err)
	}
	if err != nil {
		// Under TLS 1.3 the destination checks this side's
		// certificate after the client's handshake has returned: a
		// refusal arrives as an alert at the first read.
		return fmt.Errorf("read the destination's answer to the handshake: %w", tlsHint(err, "destination"))
	}
	switch rec.Type {
	case RecAccept:
		s.r.SetLimits(s.pages) // the destination may ask for pages (TSMC)
		return nil
	case RecRefuse:
		return fmt.Errorf("the destination refused the migration: %s", rec.Text)
	case RecAbort:
		return fmt.Errorf("the destination aborted: %s", rec.Text)
	}
	return fmt.Errorf("the destination answered the handshake with a %s record", rec.Type)
}

// harvest collects the dirty log: one epoch for the policy.
func (s *sender) harvest() error {
	dirty, err := s.harvestLog()
	if err != nil {
		return err
	}
	s.observe(dirty)
	return nil
}

// harvestLog is harvest without telling the policy: the caller decides
// first whether the migration stops here. The policy's Observe takes
// time (a predictor's, with a refit, over 100 ms on a 2 GiB guest),
// which the guest spends dirtying pages the stop would not have counted
// (simulated with the policy's time: a hot set of 20 000 pages at 30 000
// writes a second stopped with 8 545 pages pending, paused with 11 261,
// and took 350 ms against 300).
func (s *sender) harvestLog() ([]uint64, error) {
	var dirty []uint64
	before := s.pendingN
	if l, ok := s.log.(PageLister); ok {
		pages, err := l.HarvestPages()
		if err != nil {
			return nil, fmt.Errorf("harvest the dirty log: %w", err)
		}
		for _, g := range pages {
			if !s.pending.Has(g) {
				s.pending.Set(g)
				s.pendingN++
			}
		}
		dirty = pages
	} else {
		h, err := s.log.Harvest()
		if err != nil {
			return nil, fmt.Errorf("harvest the dirty log: %w", err)
		}
		s.pending.Or(h)
		s.pendingN = s.pending.Count()
		dirty = h.List()
	}
	s.lastHarvest = s.m.clock.Now()
	s.nextHarvest = s.lastHarvest.Add(s.m.cfg.Epoch)
	s.harvests++
	// Pages dirtied that were pending already go out once whatever: the
	// dirty rate counts those made pending again, what the migration must
	// send anew, as QEMU's dirty-pages-rate counts the bits a sync newly
	// sets. (Counting every harvest's pages, a page written all through a
	// round counted once an epoch: a 128 MiB guest's migration that
	// converged in 2 rounds showed 2.4 times its transfer rate.)
	s.harvested += s.pendingN - before
	n := s.harvests
	s.m.update(func(i *Info) { i.RAM.DirtySyncCount = n }) // live, not only at a round's end (the metrics read it)
	return dirty, nil
}

// observe tells the policy of a harvest's dirty pages.
func (s *sender) observe(dirty []uint64) {
	t0 := time.Now()
	s.pol.observe(dirty)
	took := time.Since(t0)
	s.polTime += took
	if s.m.sim != nil && s.m.sim.sc.PolicyTime {
		// Live, the sender waits while the predictor observes.
		s.m.sim.clock.Advance(took)
	}
}

// precopy runs the live rounds: passes through guest memory in address
// order sending the pending pages, while every epoch the dirty log is
// harvested into the pending set (a page dirtied ahead of the pass goes out
// in this pass, one behind it in the next). A page sent is no longer
// pending until it is dirtied again. It returns, leaving the pending set
// for the stop-and-copy, as soon as what is pending fits the downtime
// limit at the link's rate — checked at every harvest, as QEMU checks at
// every sync — or when the round cap is reached. With +postcopy it also
// returns, postcopy true, when a round leaves more than half of the pages
// it set out with pending, and at the round cap: what is left goes in
// post-copy.
func (s *sender) precopy(ctx context.Context) (reason string, postcopy bool, err error) {
	cfg := s.m.cfg
	bw := float64(cfg.MaxBandwidth)
	if bw == 0 {
		bw = guessBW // a guess until round 1 has measured the link
	}
	s.wireShare = 1
	reserve := float64(s.switchoverBytes())
	// fits says whether pending bytes of pages, coded as the last round's
	// were, go out within the downtime limit with the rest of the
	// switch-over.
	fits := func(pending uint64) bool {
		return float64(pending)*s.wireShare+reserve <= downtimeShare(s.mode)*bw*s.m.DowntimeLimit().Seconds()
	}
	measured := false // bw is a round's measure, not the cap or a guess
	for round := 1; ; round++ {
		if s.enc != nil {
			s.coded0 = s.enc.Stats()
		}
		window := time.Duration(float64(s.pendingN*PageSize) * s.wireShare / bw * float64(time.Second))
		transferable := s.transferable(bw, reserve)
		s.stopAt = uint64(transferable / PageSize)
		last := round >= cfg.MaxRounds
		s.pol.startRound(roundPlan{round: round, window: window, budget: uint64(0.8 * transferable / PageSize),
			pending: s.pending, pendingN: s.pendingN, last: last})
		s.harvested = 0
		startPending := s.pendingN
		s.polTime = 0
		start, startBytes := s.m.clock.Now(), s.w.Bytes()
		s.round = roundRate{start: start, bytes: startBytes, bw: bw, stopBW: bw, reserve: reserve, guessed: !measured,
			limit: s.m.DowntimeLimit()}
		fitted, err := s.sendPass(ctx, round, true, true)
		if err != nil {
			return "", false, err
		}
		var dirty []uint64 // the round's last harvest, told to the policy once the migration goes on
		if !fitted {
			if dirty, err = s.harvestLog(); err != nil {
				return "", false, err
			}
		}
		elapsed := s.m.clock.Now().Sub(start)
		sent := s.w.Bytes() - startBytes
		if (sent >= minMeasure || bw == guessBW) && elapsed > 0 { // a round this short says little about the link
			bw = float64(sent) / elapsed.Seconds()
			// The cap as it is now: migrate-set-parameters may have set
			// or lifted it (0) since the start. (Going by the cap the
			// migration started with, a cap lifted took bw to 0, and the
			// migration never fitted: found by a review walk.)
			if r := s.m.limit.Rate(); r > 0 {
				bw = min(bw, float64(r))
			}
			measured = true
		}
		if s.enc != nil {
			s.enc.SetBandwidth(bw) // what a codec must beat to pay for itself
			s.measureCoding()
			if s.m.log.Enabled(context.Background(), slog.LevelDebug) {
				s.m.log.Debug("coding", "round", round, "classes", codingSummary(s.enc.Stats()), "wire-share", s.wireShare)
			}
		}
		pending := s.pendingN
		remaining := pending * PageSize
		dirtyRate := float64(s.harvested) / max(elapsed.Seconds(), 1e-9)
		s.m.update(func(i *Info) {
			i.RAM.DirtySyncCount = s.harvests
			i.RAM.DirtyPagesRate = uint64(dirtyRate)
			i.RAM.Remaining = remaining
			i.ExpectedDowntime = int64((float64(remaining)*s.wireShare + reserve) / bw * 1000)
			i.Pagecast.Deferred = s.deferred
		})
		s.m.log.Debug("round done", "round", round, "pages", s.passPages, "bytes", sent, "elapsed", elapsed, "policy-time", s.polTime,
			"harvested", s.harvested, "deferred", s.deferred, "pending", pending, "bandwidth", uint64(bw))
		if s.mode.policy == ModeThrottle && !fitted && round < cfg.MaxRounds {
			if err := s.throttle(round, startPending, pending); err != nil {
				return "", false, err
			}
		}
		switch {
		case s.postcopyNow:
			return fmt.Sprintf("migrate-start-postcopy in round %d with %s", round, s.pendingSaid(remaining)) + stopPostcopy, true, nil
		case fitted:
			return fmt.Sprintf("%s fit the downtime limit at a dirty log harvest in round %d", s.pendingSaid(remaining), round), false, nil
		case fits(remaining):
			return fmt.Sprintf("%s fit the downtime limit at the end of round %d", s.pendingSaid(remaining), round), false, nil
		case s.mode.fallback && stalled(startPending, pending):
			return fmt.Sprintf("round %d left %d of its %d pages pending"+stopPostcopy, round, pending, startPending), true, nil
		case round >= cfg.MaxRounds:
			reason := fmt.Sprintf(stopRoundCap+"%d reached with %d bytes pending", cfg.MaxRounds, remaining)
			if s.mode.fallback {
				reason += stopPostcopy
			}
			return reason, s.mode.fallback, nil
		}
		if !fitted {
			s.observe(dirty)
		}
		if s.passPages == 0 {
			// Everything pending was deferred: let an epoch pass so the
			// forecast can change, rather than spin.
			select {
			case <-ctx.Done():
				return "", false, ctx.Err()
			case <-s.m.clock.After(s.lastHarvest.Add(cfg.Epoch).Sub(s.m.clock.Now())):
			}
		}
	}
}

// codingSummary says, per class, the pages coded so far, what they coded
// to as a share of their size, and the codec chosen now.
func codingSummary(st mecom.Stats) string {
	var parts []string
	for c := range st.Pages {
		if st.Pages[c] == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s:%d pages at %.3f, %s", mecom.Class(c), st.Pages[c], float64(st.Out[c])/float64(max(st.In[c], 1)), st.Choice[c]))
	}
	return strings.Join(parts, "; ")
}

// minCoded is the fewest bytes of non-zero pages a round must have coded
// for measureCoding to go by it: 64 pages.
const minCoded = 64 * PageSize

// codingSample is how many pending pages measureCoding looks at.
const codingSample = 128

// measureCoding sets wireShare, the wire bytes a pending page is expected
// to take. The pages pending are not the round's: predictive holds back
// the pages likeliest to be written, and a program's hot pages are not
// its cold ones (a 64 MiB TCG guest's hot set coded to 0.53 of its size,
// the pages sent around it to 0.34, and the stop-and-copy took 435 ms
// where 300 were promised). So it codes up to codingSample pending pages,
// spread over them, as the encoder would code them now (Encoder.Measure:
// counted nowhere), and takes their share. Zero pages, which cost almost
// nothing, are left out, so that memory mostly empty does not promise what
// the dirtied pages will not keep. A round that coded fewer than minCoded
// bytes of non-zero pages leaves it as it was (1 until one has: what fits
// is then judged uncompressed). (Until 2026-12-04 each sampled page
// counted as its class's share over the migration so far: the hot pages
// predictive holds back are sent at the stop-and-copy alone, and their
// class's share came from other pages; a 32 MiB demo guest's predictive+
// mecom then judged its stop-and-copy at 0.56 of the pages' size, sent it
// at 0.80, and paused 377 ms against a limit of 300.)
func (s *sender) measureCoding() {
	if share, ok := s.pendingShare(); ok {
		s.wireShare = share
	}
}

// fitsCoded says, once the pending pages' count has come within stopAt at
// a harvest, whether they fit coded as they are now: wireShare was
// measured on the pages pending when the round began, and those the guest
// has written since may code worse (measured: a 64 MiB TCG guest whose
// predictor was warmed by a profile sent 1 119 pages in round 1, coded to
// a wire share of 0.20, stopped in round 2 with 9 687 pages pending that
// coded to 0.37, and paused for 461 ms against a limit of 300). Where the
// pages pending now code worse, wireShare and stopAt follow them.
func (s *sender) fitsCoded() bool {
	if s.enc == nil {
		return true
	}
	share, ok := s.pendingShare()
	if !ok || share <= s.wireShare {
		return true
	}
	s.m.log.Debug("pending pages code worse than the round's start said", "wire-share", s.wireShare, "now", share, "pending", s.pendingN)
	s.wireShare = share
	s.stopAt = uint64(s.transferable(s.round.stopBW, s.round.reserve) / PageSize)
	return s.pendingN <= s.stopAt
}

// pendingShare is measureCoding's estimate of the wire bytes a pending
// page takes: a sample of them coded now; ok is false where the round has
// coded too little to go by.
func (s *sender) pendingShare() (float64, bool) {
	now := s.enc.Stats()
	var in, out uint64
	for c := range now.In {
		if mecom.Class(c) == mecom.Zero {
			continue
		}
		in += now.In[c] - s.coded0.In[c]
		out += now.Out[c] - s.coded0.Out[c]
	}
	if in < minCoded || out == 0 {
		return 0, false
	}
	round := min(float64(out)/float64(in), 1)
	// Every step-th pending page, the words without one taken whole: a
	// terabyte guest's bitmap is millions of words.
	step := max(s.pendingN/codingSample, 1)
	var seen, next uint64 // pending pages passed, the index of the next to look at
	var sampleIn, sampleOut uint64
	one := make([][]byte, 1)
	for wi, w := range s.pending.Words() {
		c := uint64(bits.OnesCount64(w))
		if seen+c <= next {
			seen += c
			continue
		}
		for ; w != 0; w &= w - 1 {
			if seen++; seen-1 != next {
				continue
			}
			next += step
			if gfn := uint64(wi)*64 + uint64(bits.TrailingZeros64(w)); !s.contents.Zero(gfn) {
				one[0] = s.contents.Page(gfn)
				i, o := s.enc.Measure(one)
				sampleIn += i
				sampleOut += min(o, i)
			}
		}
	}
	if sampleIn == 0 {
		return round, true
	}
	return float64(sampleOut) / float64(sampleIn), true
}

// transferable is the bytes of pages the link moves at bw within the
// downtime limit, less the switch-over's other bytes (reserve: the guest's
// state) and a share of the limit kept for the rest of it (pausing, the
// destination's check, the commit); compressed, a page takes wireShare of
// its size on the wire.
func (s *sender) transferable(bw, reserve float64) float64 {
	return max(downtimeShare(s.mode)*bw*s.m.DowntimeLimit().Seconds()-reserve, 0) / s.wireShare
}

// roundRate is where the current round began, for the rate it moves.
type roundRate struct {
	start       time.Time
	bytes       uint64        // written before it
	bw, reserve float64       // the rate and other bytes its stop was set for
	stopBW      float64       // the rate stopAt is set for now: bw, or lower (see remeasure)
	guessed     bool          // bw is the cap, or a guess without one: no round has measured the link
	limit       time.Duration // the downtime limit stopAt is set for (see restop)
}

// guessBW is the link's rate the first round plans with where there is no
// cap, until it has moved minMeasure bytes and can tell.
const guessBW = 1 << 30

// minMeasure is the fewest bytes a round must have moved for its rate to
// be taken as the link's.
const minMeasure = 1 << 20

// known says whether a harvest may stop the round on its rate, written
// being the bytes the link has been given so far: not while no round has
// measured the link (the rate is the cap, an upper bound, or guessBW) and
// this one has moved too little to. (A harvest that came before the first
// page went, the source's CPU busy elsewhere, took a 256 MiB guest to fit
// the 1 GiB/s guess whole, and stopped it with everything pending: 416 ms
// of downtime against 300, found by a walk; a cap of 1 GiB/s did the same,
// found by a review. At the end of round 1 the round's rate is taken,
// whatever it moved.)
func (r *roundRate) known(written uint64) bool {
	return !r.guessed || written-r.bytes >= minMeasure
}

// remeasure, at a harvest in a round begun before any round had measured
// the link (round 1: bw is the cap, or a guess of 1 GiB/s without one),
// sets the stop for the rate the round has moved so far where that is
// lower: a link slower than the guess, or a source whose CPU and not the
// link sets the pace, would otherwise stop with more pending than the
// limit lets it send (measured: a 1 GiB TCG guest migrated on loopback
// with no cap stopped in round 1 with 285 MB pending, 801 ms of downtime
// against a limit of 300 ms).
func (s *sender) remeasure() {
	r := &s.round
	if !r.guessed {
		return
	}
	sent, elapsed := s.w.Bytes()-r.bytes, s.m.clock.Now().Sub(r.start)
	if sent < minMeasure || elapsed <= 0 {
		return // too little to say
	}
	if bw := float64(sent) / elapsed.Seconds(); bw < r.bw {
		r.stopBW = bw
		s.stopAt = uint64(s.transferable(bw, r.reserve) / PageSize)
	}
}

// restop, at a harvest, sets stopAt anew where the downtime limit or the
// link cap has changed since the round set it (migrate-set-parameters
// midway): a limit raised was taken only at the end of the round, seconds
// later on a slow link (walk 101: some 8 s at 4 MiB/s), and a cap lowered
// below the round's rate left stopAt promising what the link no longer
// moves.
//
// The cap is applied at every harvest, after remeasure: in round 1
// remeasure sets the stop for the round's average rate, which a cap
// lowered midway is below (review 105: lowered from 64 to 1 MiB/s, the
// stop was set back to the 4.9 MiB/s averaged, and the pause took 491 ms
// against a limit of 300).
func (s *sender) restop() {
	r := &s.round
	if r.limit == 0 {
		return // no round set a stop: tsmc's stage 1 never stops early
	}
	limit, bw := s.m.DowntimeLimit(), r.stopBW
	if rate := s.m.limit.Rate(); rate > 0 {
		bw = min(bw, float64(rate))
	}
	if limit == r.limit && bw == r.stopBW {
		return // nothing changed
	}
	r.limit, r.stopBW = limit, bw
	s.stopAt = uint64(s.transferable(bw, r.reserve) / PageSize)
}

// switchoverBytes is what the stop-and-copy sends besides pages before
// the destination runs the guest: the guest's state, as big as the guest
// says it will be (see StateSizer; 0 if it does not say). The checksums go
// after (see audit).
func (s *sender) switchoverBytes() uint64 {
	if g, ok := s.m.g.(StateSizer); ok {
		return g.StateBytes()
	}
	return 0
}

// throttle sets the vCPUs' share of CPU for the next round (Jin et al.
// 2011). A round that started with before pages pending ended with after:
// the guest, at its current share, shrinks the pending set by r =
// after/before a round. To fit the downtime limit by the target round the
// remaining rounds must each shrink it by q = (stopAt/after)^(1/rounds
// left), aiming at half the limit. If dirtying scaled with the CPU share the share to give q would
// be share·q/r; but a hot set rewritten many times a round goes on being
// dirtied almost whole until the guest is slowed a lot (measured: 80 %
// throttle left a 2048-page hot set 60 % dirtied each round), so the
// correction is applied squared.
func (s *sender) throttle(round int, before, after uint64) error {
	g := s.m.g
	share := 1 - float64(g.Throttle())/100
	left := max(1, s.m.cfg.TargetRound-round)
	if after == 0 || before == 0 {
		return nil
	}
	r := float64(after) / float64(before)
	// Aim at half the limit: at the limit itself pending hovers around it.
	q := math.Pow(0.5*float64(s.stopAt)/float64(after), 1/float64(left))
	// Never relax within a migration: loosening near the goal only lets
	// pending grow back over it.
	next := min(share, share*math.Pow(q/r, 2))
	pct := min(99, max(0, int(math.Ceil(100*(1-next)))))
	s.accountThrottle()
	if err := g.SetThrottle(pct); err != nil {
		return fmt.Errorf("throttle the guest to %d%%: %w", pct, err)
	}
	s.publishThrottle()
	s.m.update(func(i *Info) { i.CPUThrottlePercentage = pct })
	s.m.log.Debug("throttle", "round", round, "ratio", r, "want", q, "cpu-throttle-percentage", pct, "stopAt", s.stopAt, "after", after)
	return nil
}

// stopAndCopy pauses the guest, sends what is left and the guest's state,
// and commits once the destination has all of it; the destination runs
// the guest from the commit. Until then a failure resumes the guest here.
// The checksums of the paused memory, which catch a write the dirty log
// missed, are taken after the commit and follow it (see audit): summed
// before the guest could run on, they took the switch-over as long as
// reading all the memory the guest holds does (a 3 GiB guest holding
// 2 GiB: 360 ms of a 578 ms pause beyond the pages and the state).
// A cancel (ctx) stops it at the end of a record, before the commit: the
// guest resumes here and the destination is told (it went on to the
// commit, ignoring the cancel, or was cut mid-record after cancelGrace).
func (s *sender) stopAndCopy(ctx context.Context, reason string) (err error) {
	paused, err := s.pause(reason)
	if err != nil {
		return err
	}
	committed := false
	defer func() { err = s.resumeUnless(committed, err) }()
	precopyBytes := s.w.Bytes()
	h, err := s.log.Harvest() // everything written up to the pause
	if err != nil {
		return fmt.Errorf("harvest the dirty log: %w", err)
	}
	s.harvests++
	s.pending.Or(h)
	s.pendingN = s.pending.Count()
	round := s.m.Info().Pagecast.Round + 1
	pending, harvested := s.pendingN, s.m.clock.Now()
	// The guest's state is saved while the last pages go: the paused
	// guest's memory does not change, and on QEMU saving it (QEMU's own
	// migration into a socket) took 12–50 ms that added to the pause.
	state := make(chan savedState, 1)
	pack := s.packState()
	go func() { state <- s.saveState(pack) }()
	var st savedState
	stateWait := func() savedState {
		if state != nil {
			st, state = <-state, nil
		}
		return st
	}
	defer stateWait() // before a failure resumes the guest: QEMU's save must be over
	if _, err := s.sendPass(ctx, round, false, false); err != nil {
		return err
	}
	pagesBytes, sent := s.w.Bytes()-precopyBytes, s.m.clock.Now()
	if err := s.sendSaved(stateWait()); err != nil {
		return err
	}
	saved := s.m.clock.Now()
	if err := s.w.Text(RecEnd, ""); err != nil {
		return fmt.Errorf("send end: %w", err)
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("send the stop-and-copy: %w", err)
	}
	flushed := s.m.clock.Now()
	if err := s.awaitVerified("stop-and-copy"); err != nil {
		return err
	}
	verdict := s.m.clock.Now()
	if err := s.commitUnlessCancelled(); err != nil {
		return err
	}
	committed = true                        // the destination runs the guest from here; this copy stays paused
	downtime := s.m.clock.Now().Sub(paused) // to the commit; to the destination's start once it says (awaitStarted)
	s.m.update(func(i *Info) {
		i.Downtime = downtime.Round(time.Millisecond).Milliseconds()
		i.RAM.DirtySyncCount = s.harvests
		i.RAM.PrecopyBytes = precopyBytes
		i.RAM.DowntimeBytes = s.w.Bytes() - precopyBytes
		i.RAM.Transferred = s.w.Bytes()
		if n := len(i.Pagecast.RoundBytes); n > 0 {
			// The stop-and-copy's round: its pages, the state and
			// the verdict's records with them, as tsmc's last.
			i.Pagecast.RoundBytes[n-1] = i.RAM.DowntimeBytes
		}
	})
	// The paused guest's memory does not change until the audit is over.
	// Summed from the pause on, on every core, it slowed the last pages:
	// a 5 GiB guest holding 2.4 GiB paused 343 ms, the 60 MB of pages
	// going at 200 MB/s through a 256 MiB/s cap. Summed from the commit,
	// it kept the destination's start from a CPU on a host of two cores
	// (7–19 ms in TestDowntimeCoversStart under load, as walk 140 found in
	// post-copy): summed once the destination says its guest runs.
	if s.m.sim == nil {
		s.awaitStarted(pauseTimes{paused: paused, verdict: verdict, commit: paused.Add(downtime)})
	}
	digest := s.digest(DigestChunk)
	if s.m.sim != nil {
		s.m.sim.clock.Advance(s.m.sim.sumTime())
	}
	summed := s.m.clock.Now()
	err = s.audit(digest)
	s.m.log.Debug("stop-and-copy", "pages", pending, "pages-bytes", pagesBytes, "other-bytes", s.w.Bytes()-precopyBytes-pagesBytes,
		"harvest", harvested.Sub(paused), "pages-time", sent.Sub(harvested), "state-time", saved.Sub(sent),
		"flush-time", flushed.Sub(saved), "verify-and-commit", paused.Add(downtime).Sub(flushed), "downtime", downtime,
		"checksum-wait", summed.Sub(paused.Add(downtime)), "audit", s.m.clock.Now().Sub(summed))
	s.m.update(func(i *Info) {
		i.RAM.Transferred = s.w.Bytes()
		// The checksums go after the commit, the destination's guest
		// running: in no phase above, they are counted apart so the
		// phases add up to Transferred.
		i.Pagecast.AfterSwitchoverBytes = s.w.Bytes() - i.RAM.PrecopyBytes - i.RAM.DowntimeBytes
		i.Pagecast.CheckTime = s.m.clock.Now().Sub(paused.Add(downtime)).Milliseconds()
	})
	return err
}

// audit sends the checksums of the paused source's memory to the
// destination, whose guest runs from the memory it was started with, and
// reads its answer. If they differ the destination has stopped its guest,
// and it runs on here, from where it was paused: a write the dirty log
// missed is caught as before the guest ran, at the price of the little
// the destination's guest did meanwhile (pagecast's guests have no
// devices that act outside them). Should the answer not come, the
// migration is complete but unconfirmed (Extra.Unconfirmed): the
// destination runs the guest if the commit reached it, and no one does if
// the link broke before it did. This side cannot tell the two apart, so it
// connects again and repeats the commit (recommit), which a destination
// still waiting for it takes; where none takes it, the guest stays paused
// here, as resuming it could run it twice.
func (s *sender) audit(d Digest) error {
	unchecked := func(err error) error {
		if s.startedThere {
			s.m.log.Warn("the destination said its guest runs, then did not answer the memory check: the guest went there unverified; this source keeps its copy paused", "err", err)
		} else {
			s.m.log.Warn("the destination did not answer after the commit: it runs the guest if the commit reached it, no one does if not; this source keeps the guest paused (check the destination before resuming it here)", "err", err)
		}
		s.m.update(func(i *Info) { i.Pagecast.Unconfirmed, i.Pagecast.GuestStarted = err.Error(), s.startedThere })
		return nil
	}
	rec, err := s.sendDigest(d)
	if err != nil && s.m.sim == nil {
		s.m.log.Warn("the link broke after the commit; connecting again to repeat it", "err", err)
		if rerr := s.recommit(); rerr != nil {
			err = fmt.Errorf("%w; then, connecting again to repeat the commit: %w", err, rerr)
		} else {
			s.m.log.Info("the destination took the repeated commit")
			s.m.update(func(i *Info) {
				i.Pagecast.StopReason += "; the link broke after the commit, which was repeated on a new connection"
			})
			rec, err = s.sendDigest(d)
		}
	}
	if err != nil {
		return unchecked(err)
	}
	switch {
	case rec.Type == RecVerified && rec.OK:
		s.m.update(func(i *Info) { i.Pagecast.Verified = true })
		return nil
	case rec.Type == RecVerified:
		err := fmt.Errorf("after the switch-over: the destination's memory does not match the source's (%s); the destination stopped its guest, which %s", rec.Text, s.onHere())
		if rerr := s.resumeHere(); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	case rec.Type == RecAbort:
		return fmt.Errorf("after the switch-over: the destination's memory does not match the source's, and it could not stop its guest, so this copy stays paused: %s", rec.Text)
	}
	return unchecked(fmt.Errorf("the destination answered the checksums with a %s record: %w", rec.Type, ErrMalformed))
}

// pendingSaid is bytes pending as the stop reason says them: with MECOM,
// also what they come to coded, which is what must fit.
func (s *sender) pendingSaid(bytes uint64) string {
	if s.wireShare >= 1 {
		return fmt.Sprintf("%d bytes pending", bytes)
	}
	return fmt.Sprintf("%d bytes pending (about %d coded: %.0f%% of their size)", bytes, uint64(float64(bytes)*s.wireShare), 100*s.wireShare)
}

// awaitStarted reads the destination's word, after a stop-and-copy's
// commit, that its guest runs (RecStarted), and ends the downtime there
// (pauseTimes.end). Another record is kept for the audit, which reads
// the destination's answer next; a link that failed is the audit's to
// find, and the downtime then ends at the commit.
func (s *sender) awaitStarted(p pauseTimes) {
	rec, err := s.r.Next()
	switch {
	case err != nil:
		s.m.log.Debug("the destination's word that its guest runs did not come", "err", err)
	case rec.Type == RecStarted:
		s.guestRuns(p, rec.Since)
	default:
		kept := *rec
		s.answer = &kept
	}
}

// guestRuns ends the downtime where the destination's word that its guest
// runs, read now, says it ran (pauseTimes.end): since after its verdict.
func (s *sender) guestRuns(p pauseTimes, since time.Duration) {
	s.startedThere = true
	now := s.m.clock.Now()
	downtime := p.end(now, since).Sub(p.paused)
	s.m.log.Debug("the destination's guest runs", "read-after-commit", now.Sub(p.commit), "after-verdict", since, "downtime", downtime)
	s.m.update(func(i *Info) { i.Downtime = downtime.Round(time.Millisecond).Milliseconds() })
}

// sendDigest sends the checksums of the paused memory and reads the
// destination's answer: one read already (awaitStarted), or the next
// record but the word that the guest runs, which a destination that took
// a repeated commit (recommit) sends on the new link first.
func (s *sender) sendDigest(d Digest) (*Record, error) {
	if err := s.w.Digest(d); err != nil {
		return nil, fmt.Errorf("send memory checksums: %w", err)
	}
	if err := s.w.Flush(); err != nil {
		return nil, fmt.Errorf("send memory checksums: %w", err)
	}
	if rec := s.answer; rec != nil {
		s.answer = nil
		return rec, nil
	}
	for {
		rec, err := s.r.Next()
		if err != nil {
			return nil, fmt.Errorf("wait for the destination's check: %w", err)
		}
		if rec.Type != RecStarted {
			return rec, nil
		}
	}
}

// commitMode is the hello's mode, followed by ":" and the migration's
// stateTag, when a source that committed connects again because the link
// broke before the destination answered: a destination whose guest has
// not started, the commit lost with the link, waits for it
// (receiver.awaitCommit).
const commitMode = "commit"

// recommitFor is how long a source tries to repeat its commit. The
// destination notices a link that died without a word after its
// IdleTimeout (30 s) and then waits commitWait for the source.
const recommitFor = 45 * time.Second

// recommit connects to the destination again and repeats the commit,
// until a destination takes it or recommitFor has passed. It gives up at
// once where no one listens at the destination's address (a destination
// that started the guest has closed its listener) or the destination
// refuses (it has no migration waiting for a commit).
func (s *sender) recommit() error {
	deadline := s.m.clock.Now().Add(recommitFor)
	for {
		conn, err := s.m.dial(s.linkCtx)
		if err == nil {
			s.attach(conn)
			if err = s.handshake(commitMode + ":" + s.stateTag); err == nil {
				err = s.commit()
			}
			if err != nil {
				conn.Close()
			}
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.ECONNREFUSED), strings.HasPrefix(err.Error(), "the destination refused"):
			return err
		case s.linkCtx.Err() != nil || s.m.clock.Now().After(deadline):
			return fmt.Errorf("gave up after %v: %w", recommitFor, err)
		}
		s.m.log.Warn("repeating the commit failed; trying again", "err", err)
		select {
		case <-s.linkCtx.Done():
		case <-s.m.clock.After(time.Second):
		}
	}
}

// sendState sends the paused guest's state (Guest.SaveState).
func (s *sender) sendState() error { return s.sendSaved(s.saveState(s.packState())) }

// savedState is what Guest.SaveState returned, as it goes on the wire.
type savedState struct {
	kind uint8 // StateGuest, compressed or not
	b    []byte
	err  error
}

// packState says whether the state is to be packed (PackState): where
// the link, as the rounds measured it, is slow enough for that to pay. A
// simulated guest's state is a size standing for the bytes on the wire,
// and goes as it is.
func (s *sender) packState() bool { return s.m.sim == nil && s.round.bw < packBelow }

// saveState saves the paused guest's state, packed if pack says so. It
// touches nothing of the sender's but the guest: it may run beside the
// last pass.
func (s *sender) saveState(pack bool) savedState {
	b, err := s.m.g.SaveState()
	if err != nil || !pack {
		return savedState{StateGuest, b, err}
	}
	kind, packed := PackState(b)
	if len(packed) < len(b) {
		s.m.log.Debug("state packed", "bytes", len(b), "packed", len(packed))
	}
	return savedState{kind, packed, nil}
}

// sendSaved sends a state saveState returned.
func (s *sender) sendSaved(st savedState) error {
	if st.err != nil {
		return fmt.Errorf("save the guest's state: %w", st.err)
	}
	if err := s.w.State(st.kind, st.b); err != nil {
		return fmt.Errorf("send the guest's state: %w", err)
	}
	s.stateTag = stateTag(st.b)
	return nil
}

// stateTag names a migration by the guest state it sent, as both ends
// hold it: a repeated commit carries it (commitMode), so that a
// destination takes only its own migration's.
func stateTag(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// commit tells the destination to run the guest.
// commitUnlessCancelled sends the commit, unless a cancel came first,
// which then stops the migration (context.Canceled). From here a cancel is
// refused (ErrCommitted).
func (s *sender) commitUnlessCancelled() error {
	s.m.mu.Lock()
	cancelled := s.m.cancelled
	s.m.committed = !cancelled
	s.m.mu.Unlock()
	if cancelled {
		return context.Canceled
	}
	return s.commit()
}

func (s *sender) commit() error {
	if err := s.w.Commit(!s.held); err != nil {
		return fmt.Errorf("send commit: %w", err)
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("send commit: %w", err)
	}
	return nil
}

// pause stops the guest for the switch-over; the stop-and-copy (or TSMC's
// stage 2) begins.
func (s *sender) pause(reason string) (time.Time, error) {
	s.m.update(func(i *Info) {
		i.Status = StatusDevice
		i.Pagecast.StopReason = reason
	})
	s.accountThrottle() // paused, the guest loses its time to the downtime instead
	s.throttledSince = time.Time{}
	s.publishThrottle()
	if running, st := s.m.g.Running(); !running && st == "paused" {
		s.held = true
		s.m.log.Info("the guest was paused before the switch-over (QMP stop): the destination will hold it paused, as a failure would leave it here")
		s.m.update(func(i *Info) { i.Pagecast.HeldPaused = true })
	}
	// From when the guest has stopped: QEMU answers stop once its vCPUs
	// have (its STOP event); the guest runs until then. Timed from the
	// request, a stop that took 175 ms on a loaded host counted in the
	// downtime, 292 ms against the 117 the guest was paused (walk 79).
	if err := s.m.g.Pause(); err != nil {
		return s.m.clock.Now(), fmt.Errorf("stop the guest: %w", err)
	}
	now := s.m.clock.Now()
	// Where the guest says when its vCPUs stopped, from then: on a loaded
	// host the engine's thread waited 34 ms for a CPU after the stop,
	// before it read its clock (walk 145). Not a guest its user paused
	// before: its stop was theirs, rounds ago (a review: 1.36 s of
	// downtime counted for a switch-over of a few ms).
	if pm, ok := s.m.g.(PauseMarker); ok && s.m.sim == nil && !s.held {
		if at := pm.PausedAt(); !at.IsZero() && at.Before(now) && now.Sub(at) < time.Minute {
			return at, nil
		}
	}
	return now, nil
}

// PauseMarker is a Guest that says when its last Pause stopped its vCPUs
// (its STOP event), which the downtime counts from: Pause returns later,
// by as long as the engine's thread waits for a CPU after the stop.
type PauseMarker interface {
	PausedAt() time.Time
}

// resumeUnless runs the guest here again unless the destination was told
// to take it: until the commit, a failed switch-over leaves the guest with
// the source.
func (s *sender) resumeUnless(committed bool, err error) error {
	if committed {
		return err
	}
	if rerr := s.resumeHere(); rerr != nil {
		return errors.Join(err, rerr)
	}
	if !s.held { // held, it stays paused: no throttle's time runs
		s.throttledSince = s.m.clock.Now()
		s.publishThrottle()
	}
	return err
}

// onHere says what becomes of the guest here after a failed switch-over.
func (s *sender) onHere() string {
	if s.held {
		return "stays paused here, as its user left it (QMP cont runs it)"
	}
	return "runs on here"
}

// resumeHere runs the guest here again after a failed switch-over, unless its
// user had paused it (held): it then stays paused, as it was.
func (s *sender) resumeHere() error {
	if s.held {
		if g, ok := s.m.g.(Repauser); ok {
			if err := g.Repause(); err != nil {
				return fmt.Errorf("leave the guest paused as its user left it: %w", err)
			}
		}
		return nil
	}
	if err := s.m.g.Resume(); err != nil {
		return fmt.Errorf("resume the guest: %w", err)
	}
	return nil
}

// sendPass makes one pass over the pending pages in address order and
// ends the round. In a live pass the policy may defer a page (it stays
// pending), the dirty log is harvested every epoch, and the pass stops
// early, reporting true, once what is pending fits the downtime limit. The
// stop-and-copy's pass sends everything. consult asks the policy about
// every page even when not live (predictive+tsmc's stage 1).
func (s *sender) sendPass(ctx context.Context, round int, live, consult bool) (fits bool, err error) {
	s.passPages, s.deferred = 0, 0
	startBytes := s.w.Bytes()
	s.m.update(func(i *Info) {
		i.Pagecast.Round = round
		i.Pagecast.RoundPages = append(i.Pagecast.RoundPages, 0)
		i.Pagecast.RoundBytes = append(i.Pagecast.RoundBytes, 0)
	})
	s.m.sim.roundBegins()
	var normal, zero, deferredNow uint64
	report := func() {
		pending := s.pendingN
		s.m.update(func(i *Info) {
			n := len(i.Pagecast.RoundPages) - 1
			i.Pagecast.RoundPages[n] = s.passPages
			i.Pagecast.RoundBytes[n] = s.w.Bytes() - startBytes
			i.RAM.Transferred = s.w.Bytes()
			if live {
				// As QEMU's grows: a failed or cancelled migration said
				// 0 of its 24 MB (walk 65). The switch-over sets it last.
				i.RAM.PrecopyBytes = s.w.Bytes()
			}
			i.RAM.Normal += normal
			i.RAM.NormalBytes += normal * PageSize
			i.RAM.Duplicate += zero
			i.RAM.Remaining = pending * PageSize
			i.Pagecast.Deferred = s.deferred
			i.Pagecast.DeferredAll += deferredNow
			if elapsed := s.m.clock.Now().Sub(s.m.start).Seconds(); elapsed > 0 {
				i.RAM.Mbps = float64(s.w.Bytes()) * 8 / 1e6 / elapsed
				i.RAM.PagesPerSecond = uint64(float64(i.RAM.Normal+i.RAM.Duplicate) / elapsed)
			}
		})
		normal, zero, deferredNow = 0, 0, 0
	}
	finish := func() error {
		if err := s.flush(); err != nil {
			return err
		}
		report()
		return nil
	}
	lastReport := s.m.clock.Now()
	// visit handles page gfn, pending: it reports true once what is
	// pending fits the downtime limit at a harvest.
	visit := func(gfn uint64, consult bool) (bool, error) {
		if live && !s.m.clock.Now().Before(s.nextHarvest) {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			dirty, err := s.harvestLog()
			if err != nil {
				return false, err
			}
			if err := s.tellLater(dirty); err != nil {
				return false, err
			}
			s.remeasure()
			s.restop()
			if s.pendingN <= s.stopAt && s.round.known(s.w.Bytes()) && s.fitsCoded() {
				return true, nil
			}
			if s.mode.fallback && s.m.postcopyAsked.Load() {
				s.postcopyNow = true // the pass ends here; precopy switches
				return true, nil
			}
			s.observe(dirty)
		}
		if consult {
			switch s.pol.verdict(gfn) {
			case holdBack:
				s.deferred++
				deferredNow++
				if s.sent != nil { // TSMC's stage 1: held back for stage 3
					s.heldBack = append(s.heldBack, gfn)
				}
				return false, nil
			case sendLast:
				if s.last == nil {
					s.last = bitmap.New(s.pages)
				}
				s.last.Set(gfn)
				return false, nil
			}
		}
		s.pending.Unset(gfn) // sent: clean until dirtied again
		s.pendingN--
		s.passPages++
		if s.sent != nil {
			s.sent.Set(gfn)
		}
		flushed, err := s.queue(gfn)
		if err != nil {
			return false, err
		}
		if flushed == 0 {
			zero++
			return false, nil
		}
		normal++
		if flushed == 2 {
			if err := ctx.Err(); err != nil { // a cancel stops at a record's end
				return false, err
			}
			if s.m.clock.Now().Sub(lastReport) >= 50*time.Millisecond {
				report()
				lastReport = s.m.clock.Now()
			}
		}
		return false, nil
	}
	// First the pages to send now, in address order (a page dirtied ahead
	// of the pass joins it), then those the policy put last.
	for phase := range 2 {
		first, set := phase == 0, s.pending
		if !first {
			if set = s.last; set == nil { // nothing was put last
				break
			}
		}
		words := set.Words()
		for wi := range words {
			var seen uint64 // bits of this word handled in this pass
			for {
				word := words[wi] &^ seen
				if word == 0 {
					break
				}
				bit := uint64(bits.TrailingZeros64(word))
				seen |= 1 << bit
				gfn := uint64(wi)*64 + bit
				if !first {
					words[wi] &^= 1 << bit
					if !s.pending.Has(gfn) {
						continue
					}
				}
				fits, err := visit(gfn, consult && first)
				if err != nil || fits {
					if s.last != nil {
						s.last.Clear()
					}
					if err != nil {
						return false, err
					}
					return true, finish()
				}
			}
		}
	}
	if err := finish(); err != nil {
		return false, err
	}
	if err := s.w.EndRound(uint32(round)); err != nil {
		return false, fmt.Errorf("send end of round %d: %w", round, err)
	}
	if live {
		// Push the round out so its time is the link's, not the buffer's.
		if err := s.w.Flush(); err != nil {
			return false, fmt.Errorf("send round %d: %w", round, err)
		}
	}
	return false, nil
}

// queue adds page gfn to what goes out next: a zero page to the current
// run of zero pages, any other to the batch, which is sent once full. It
// reports 0 for a zero page, 1 for a page batched, 2 for one that filled
// and sent the batch.
func (s *sender) queue(gfn uint64) (int, error) {
	if s.contents.Zero(gfn) {
		if s.zeroCount > 0 && s.zeroFirst+s.zeroCount == gfn {
			s.zeroCount++
			return 0, nil
		}
		if err := s.flushZero(); err != nil {
			return 0, err
		}
		s.zeroFirst, s.zeroCount = gfn, 1
		return 0, nil
	}
	s.batch = append(s.batch, gfn)
	if len(s.batch) < MaxBatch {
		return 1, nil
	}
	return 2, s.flushBatch()
}

// digest checksums guest memory in chunks of chunk bytes, or finer where
// a digest of so many chunks would not fit in a record; a simulated
// migration sends one of the same size without reading memory.
func (s *sender) digest(chunk int) Digest {
	memory := s.pages * PageSize
	chunk = digestChunk(memory, chunk)
	if s.m.sim != nil {
		return Digest{ChunkBytes: uint32(chunk), Sums: make([]uint32, (memory+uint64(chunk)-1)/uint64(chunk))}
	}
	return computeDigest(s.mem, chunk, memoryFD(s.m.g))
}

// digestChunk is the chunk the checksums of memory bytes are taken over:
// chunk, doubled until their record fits MaxPayload.
func digestChunk(memory uint64, chunk int) int {
	for 8+4*((memory+uint64(chunk)-1)/uint64(chunk)) > MaxPayload {
		chunk *= 2
	}
	return chunk
}

// flush sends what queue holds.
func (s *sender) flush() error {
	if err := s.flushBatch(); err != nil {
		return err
	}
	return s.flushZero()
}

// flushBatch sends the batch, compressed when the mode says so.
func (s *sender) flushBatch() error {
	if len(s.batch) == 0 {
		return nil
	}
	what, err := "pages", error(nil)
	if s.m.sim != nil {
		s.m.sim.sent(uint64(len(s.batch)))
	}
	if s.enc != nil {
		what = "compressed pages"
		s.coded, err = s.enc.EncodeFrom(s.coded[:0], s.batch, s.pages, s.contents.Page)
		if s.m.sim != nil {
			s.m.sim.coded(s.enc.BatchCPU())
		}
		if err == nil {
			err = s.w.Compressed(s.batch, s.coded)
		}
	} else {
		err = s.w.Pages(s.batch, s.mem)
	}
	s.batch = s.batch[:0]
	if err != nil {
		return fmt.Errorf("send %s: %w", what, err)
	}
	return nil
}

func (s *sender) flushZero() error {
	if s.zeroCount == 0 {
		return nil
	}
	if s.m.sim != nil {
		s.m.sim.sent(s.zeroCount)
	}
	err := s.w.Zero(s.zeroFirst, s.zeroCount)
	s.zeroCount = 0
	if err != nil {
		return fmt.Errorf("send zero pages: %w", err)
	}
	return nil
}
