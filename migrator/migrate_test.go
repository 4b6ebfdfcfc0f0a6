package migrator

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagecast/pagecast/bitmap"
)

// The migrations here run the test guest (memguest_test.go), so every mode
// is exercised without /dev/kvm; package vmm tests pagecast's own monitor
// through the same engine where KVM is there.

// testDowntime is the tests' downtime limit: a third of the default, so
// that what fits it is small beside the guests' 16 MiB and the rounds
// have something to do.
const testDowntime = 100 * time.Millisecond

// destination accepts one migration into d.
type destination struct {
	uri    string
	conn   chan net.Conn
	done   chan struct{}
	res    Received
	err    error
	cancel context.CancelFunc
}

func listenDestination(t *testing.T, dst Destination, cfg ReceiveConfig) *destination {
	t.Helper()
	l, err := Listen("tcp:127.0.0.1:0", cfg.TLS)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &destination{uri: "tcp:" + l.Addr().String(), conn: make(chan net.Conn, 1), done: make(chan struct{}), cancel: cancel}
	t.Cleanup(func() { cancel(); l.Close(); <-d.done })
	go func() {
		defer close(d.done)
		conn, err := l.Accept()
		l.Close()
		if err != nil {
			d.err = err
			return
		}
		defer conn.Close()
		d.conn <- conn
		d.res, d.err = Receive(ctx, conn, dst, cfg)
	}()
	return d
}

// migrateTo migrates src into the destination d listens for with cfg and
// waits for both ends; either failing fails the test.
func migrateTo(t *testing.T, src Guest, d *destination, cfg Config) Info {
	t.Helper()
	m, err := Outgoing(src, d.uri, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return waitBoth(t, m, d)
}

// waitBoth waits for both ends of migration m into d; either failing
// fails the test.
func waitBoth(t *testing.T, m *Migration, d *destination) Info {
	t.Helper()
	info, err := m.Wait()
	if err != nil {
		t.Fatal(err)
	}
	<-d.done
	if d.err != nil {
		t.Fatalf("destination: %v", d.err)
	}
	return info
}

// countingClock is the wall clock, counting the engine's waits on it.
type countingClock struct {
	WallClock
	waits atomic.Int64
}

func (c *countingClock) After(d time.Duration) <-chan time.Time {
	c.waits.Add(1)
	return c.WallClock.After(d)
}

func (c *countingClock) Sleep(d time.Duration) {
	c.waits.Add(1)
	c.WallClock.Sleep(d)
}

// migrated is a completed test migration.
type migrated struct {
	info     Info
	res      Received
	src, dst *memGuest
	dlog     DirtyLog // the destination's own log, opened before it started
	differed int      // pages of the destination unlike the paused source's when it started; -1: not compared
}

// migrate moves a guest of load from one test guest to another with cfg
// and checks what every mode must do: the guest verified and running on
// the destination, paused on the source, the same memory on both at the
// switch-over, the destination's writer carrying on where the source's
// stopped, and the link cap kept.
func migrate(t *testing.T, load memConfig, cfg Config) migrated {
	t.Helper()
	src := newMemGuest(t, load, true)
	dst := newMemGuest(t, load, false)
	m := migrated{src: src, dst: dst, differed: -1}
	if !NeedsPostcopy(cfg.Mode) {
		// A post-copy destination starts with the dirty pages still to come.
		dst.onStart = func() { m.differed = differingPages(src.mem, dst.mem) }
	}
	var err error
	// The destination's own log tells the pages its guest wrote after it
	// started, which may differ from the source's by then.
	if m.dlog, err = dst.StartDirtyLog(); err != nil {
		t.Fatal(err)
	}
	defer m.dlog.Close()
	d := listenDestination(t, dst, ReceiveConfig{})
	clock := &countingClock{}
	cfg.Clock = clock
	if cfg.DowntimeLimit == 0 {
		cfg.DowntimeLimit = testDowntime
	}
	m.info = migrateTo(t, src, d, cfg)
	m.res = d.res
	info := m.info
	t.Logf("%s: total %d ms, downtime %d ms, %.1f MiB (%d pages whole, %d zero), rounds %v, deferrals %d, throttle %d%%, stop: %s",
		cfg.Mode, info.TotalTime, info.Downtime, float64(info.RAM.Transferred)/(1<<20), info.RAM.Normal, info.RAM.Duplicate,
		info.Pagecast.RoundPages, info.Pagecast.DeferredAll, info.CPUThrottlePercentage, info.Pagecast.StopReason)

	// Every page sent is counted once, whole or zero, post-copy's too.
	var sent uint64
	for _, n := range info.Pagecast.RoundPages {
		sent += n
	}
	if info.RAM.Normal+info.RAM.Duplicate != sent {
		t.Errorf("%d pages whole and %d zero, but the rounds sent %d (%v)", info.RAM.Normal, info.RAM.Duplicate, sent, info.Pagecast.RoundPages)
	}
	// The destination counts the rounds as the source does, a round cut
	// short at a harvest, the stop-and-copy and a post-copy pass included.
	if m.res.Rounds != info.Pagecast.Round {
		t.Errorf("the destination counted %d rounds, the source %d (%v)", m.res.Rounds, info.Pagecast.Round, info.Pagecast.RoundPages)
	}
	if ok, st := src.Running(); ok || st != memPaused {
		t.Errorf("source after migration: %s, want paused", st)
	}
	if ok, st := dst.Running(); !ok {
		t.Fatalf("destination after migration: %s, want running", st)
	}
	if m.differed > 0 {
		t.Errorf("%d pages of the destination differed from the source's when it started", m.differed)
	}
	// The destination's writer goes on with the source's sequence: its
	// first write is the one the source would have done next.
	seq := src.seqNow()
	waitWrites(t, dst, seq)
	page, off := srcNextWrite(t, src)
	written := assertSameMemory(t, src, dst, m.dlog)
	if v := binary.LittleEndian.Uint64(dst.mem[page*PageSize+off:]); v <= seq {
		t.Errorf("the destination's writer did not go on with the source's sequence: %d at page %d+%d, want write %d or a later one", v, page, off, seq+1)
	}
	if !written.Has(page) {
		t.Errorf("the destination's first write, to page %d, is not in its dirty log", page)
	}

	// The guest's slowdown as the engine counted it, against what the
	// test guests measured themselves.
	srcThrottled, _ := src.slowed()
	_, dstStalled := dst.slowed()
	t.Logf("slowdown: throttle %d ms (the source's writer: %v), faults %d ms (the destination's writer stalled %v), %d asked for",
		info.Pagecast.ThrottleTime, srcThrottled.Round(time.Millisecond), info.Pagecast.FaultTime, dstStalled.Round(time.Millisecond), info.RAM.PostcopyRequests)
	if info.Pagecast.VCPUs != 1 {
		t.Errorf("vcpus %d in query-migrate, want the guest's 1", info.Pagecast.VCPUs)
	}
	if e := info.Pagecast.ThrottleTime - srcThrottled.Milliseconds(); e < -20-srcThrottled.Milliseconds()/10 || e > 20+srcThrottled.Milliseconds()/10 {
		t.Errorf("throttle-time %d ms, but the source's writer lost %v to the throttle", info.Pagecast.ThrottleTime, srcThrottled)
	}
	if info.RAM.PostcopyRequests == 0 && info.Pagecast.FaultTime != 0 {
		t.Errorf("fault-time %d ms with no page asked for", info.Pagecast.FaultTime)
	}
	// The destination counts each fault from its reading to its page's
	// fill, and its count is the one reported (98-100% of the writer's
	// stall, 2026-12-07; 83-85% was the source's own count, from the
	// request's arrival to the page's send); the writer's stores under a
	// millisecond are not counted. Under the race detector on a loaded
	// host a fault may wait long before it is read (CI 56: 50 ms of
	// faults, as the source counted them then, for a 238 ms stall): there
	// only the upper bound holds, and make test runs TestMigrateHeavy,
	// TestMigrateModes and TestPostcopySweepWaits again without it.
	if f, s := info.Pagecast.FaultTime, dstStalled.Milliseconds(); f > s+20 || !raceEnabled && f < s*8/10-20 {
		t.Errorf("fault-time %d ms, but the destination's writer stalled %d ms", f, s)
	}
	if !info.Pagecast.Verified || info.RAM.Transferred == 0 {
		t.Errorf("info: %+v %+v", info.RAM, info.Pagecast)
	}
	if rate := float64(info.RAM.Transferred) / (float64(info.TotalTime-info.SetupTime) / 1000); cfg.MaxBandwidth > 0 && rate > 1.1*float64(cfg.MaxBandwidth) {
		t.Errorf("sent at %.1f MiB/s through a %d MiB/s cap", rate/(1<<20), cfg.MaxBandwidth>>20)
	}
	if cfg.MaxBandwidth > 0 && clock.waits.Load() == 0 {
		t.Error("the link cap never waited on the migration's clock")
	}
	if pages := load.Memory / PageSize; d.res.Pages+d.res.ZeroPages+d.res.Pushed < pages {
		t.Errorf("destination received %d + %d zero + %d pushed pages, fewer than the %d of memory", d.res.Pages, d.res.ZeroPages, d.res.Pushed, pages)
	}
	return m
}

// differingPages counts the pages in which a and b differ.
func differingPages(a, b []byte) int {
	n := 0
	for off := 0; off < len(a); off += PageSize {
		if !bytes.Equal(a[off:off+PageSize], b[off:off+PageSize]) {
			n++
		}
	}
	return n
}

// srcNextWrite is the write the paused source would do next.
func srcNextWrite(t *testing.T, src *memGuest) (page, off uint64) {
	t.Helper()
	st, err := src.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	pcg := &rand.PCG{}
	if err := pcg.UnmarshalBinary(st[len(memStateMagic)+8:]); err != nil {
		t.Fatal(err)
	}
	return nextWrite(rand.New(pcg), src.cfg, src.seqNow()+1)
}

// assertSameMemory pauses the destination and checks memory equality
// independently of the protocol's own checksums: every page the
// destination's guest has not written since it started (its dirty log,
// opened before the migration, says which) equals the stopped source's.
// It returns the pages the destination's guest wrote.
func assertSameMemory(t *testing.T, src, dst *memGuest, dlog DirtyLog) *bitmap.Bitmap {
	t.Helper()
	if err := dst.Pause(); err != nil {
		t.Fatal(err)
	}
	written, err := dlog.Harvest()
	if err != nil {
		t.Fatal(err)
	}
	differ := 0
	for gfn := range uint64(len(src.mem) / PageSize) {
		if !written.Has(gfn) && !bytes.Equal(src.mem[gfn*PageSize:(gfn+1)*PageSize], dst.mem[gfn*PageSize:(gfn+1)*PageSize]) {
			differ++
		}
	}
	if differ > 0 {
		t.Errorf("%d pages differ between source and destination", differ)
	}
	if err := dst.Resume(); err != nil {
		t.Fatal(err)
	}
	return written
}

// TestMigrateModes migrates a running guest in every mode over loopback
// with the link capped, and checks that each did what it is for.
func TestMigrateModes(t *testing.T) {
	// The downtime limit where it is not testDowntime. mecom+postcopy must
	// converge: with testDowntime, under the race detector on a loaded CI
	// machine, the compressed link once measured under 16.5 MiB/s, round 2
	// left 381 of its 629 pages (1.5 MiB) pending, more than fit 100 ms,
	// and it switched to post-copy.
	downtime := map[string]time.Duration{MECOM + "+" + Postcopy: DefaultDowntimeLimit}
	for _, tc := range []struct {
		mode      string
		load      memConfig
		bandwidth uint64
		rounds    int
		check     func(t *testing.T, m migrated)
	}{
		{ModePrecopy, lightLoad, 32 << 20, 0, func(t *testing.T, m migrated) {
			if m.info.Pagecast.DeferredAll != 0 || m.info.CPUThrottlePercentage != 0 {
				t.Errorf("precopy deferred %d pages, throttled to %d%%", m.info.Pagecast.DeferredAll, m.info.CPUThrottlePercentage)
			}
		}},
		{ModePredictive, lightLoad, 32 << 20, 0, checkDeferred},
		{ModeThrottle, heavyLoad, 16 << 20, 12, checkThrottled},
		{ModeTSMC, lightLoad, 16 << 20, 0, checkTSMC},
		{ModePredictive + "+" + ModeTSMC, lightLoad, 16 << 20, 0, func(t *testing.T, m migrated) {
			checkDeferred(t, m)
			checkTSMC(t, m)
		}},
		{ModeTSMC + "+" + MECOM, lightLoad, 16 << 20, 0, func(t *testing.T, m migrated) {
			checkTSMC(t, m)
			checkStage1Compressed(t, m)
		}},
		{ModePredictive + "+" + ModeTSMC + "+" + MECOM, lightLoad, 16 << 20, 0, func(t *testing.T, m migrated) {
			checkDeferred(t, m)
			checkTSMC(t, m)
			checkStage1Compressed(t, m)
		}},
		{MECOM, lightLoad, 32 << 20, 0, checkCompressed},
		{ModePredictive + "+" + MECOM, lightLoad, 32 << 20, 0, func(t *testing.T, m migrated) {
			checkDeferred(t, m)
			checkCompressed(t, m)
		}},
		{ModeThrottle + "+" + MECOM, heavyLoad, 16 << 20, 12, func(t *testing.T, m migrated) {
			checkThrottled(t, m)
			checkCompressed(t, m)
		}},
		{ModePrecopy + "+" + Postcopy, heavyLoad, 16 << 20, 0, checkSwitched},
		{MECOM + "+" + Postcopy, lightLoad, 32 << 20, 0, func(t *testing.T, m migrated) {
			// It converges: no post-copy.
			if m.res.Pushed != 0 || strings.Contains(m.info.Pagecast.StopReason, "post-copy") {
				t.Errorf("a converging pre-copy switched to post-copy (%d pages pushed): %s", m.res.Pushed, m.info.Pagecast.StopReason)
			}
			checkCompressed(t, m)
		}},
		{ModePredictive + "+" + MECOM + "+" + Postcopy, heavyLoad, 16 << 20, 0, func(t *testing.T, m migrated) {
			checkDeferred(t, m)
			checkSwitched(t, m)
		}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			if NeedsPostcopy(tc.mode) {
				if err := uffdAvailable(); err != nil {
					t.Skip(err)
				}
			}
			m := migrate(t, tc.load, Config{Mode: tc.mode, MaxBandwidth: tc.bandwidth, MaxRounds: tc.rounds, Warmup: 3,
				DowntimeLimit: downtime[tc.mode]})
			if m.info.Pagecast.Mode != tc.mode {
				t.Errorf("mode %q", m.info.Pagecast.Mode)
			}
			tc.check(t, m)
		})
	}
}

func checkDeferred(t *testing.T, m migrated) {
	t.Helper()
	if m.info.Pagecast.DeferredAll == 0 {
		t.Error("predictive deferred nothing of a hot set")
	}
}

// checkThrottled: the heavy workload never fits the downtime limit in plain
// pre-copy (TestMigrateHeavy); throttle slows the guest until it does, and
// lifts the throttle at the end.
func checkThrottled(t *testing.T, m migrated) {
	t.Helper()
	if m.info.CPUThrottlePercentage == 0 {
		t.Error("throttle mode never throttled")
	}
	if strings.Contains(m.info.Pagecast.StopReason, "round cap") {
		t.Errorf("throttle hit the round cap: %s", m.info.Pagecast.StopReason)
	}
	if m.info.Downtime > DefaultDowntimeLimit.Milliseconds() {
		t.Errorf("downtime %d ms, far over the %v limit", m.info.Downtime, testDowntime)
	}
	if m.src.Throttle() != 0 || m.dst.Throttle() != 0 {
		t.Errorf("throttle left on: source %d%%, destination %d%%", m.src.Throttle(), m.dst.Throttle())
	}
}

// checkStage1Compressed: tsmc+mecom compresses stage 1, whose bytes are
// fewer than its whole pages'.
func checkStage1Compressed(t *testing.T, m migrated) {
	t.Helper()
	if whole := m.res.Pages * PageSize; m.info.RAM.PrecopyBytes >= whole {
		t.Errorf("stage 1 sent %d bytes for %d whole pages (%d bytes)", m.info.RAM.PrecopyBytes, m.res.Pages, whole)
	}
}

func checkCompressed(t *testing.T, m migrated) {
	t.Helper()
	if ram := m.info.RAM; ram.Transferred >= ram.NormalBytes {
		t.Errorf("compressed migration sent %d bytes for %d bytes of whole pages", ram.Transferred, ram.NormalBytes)
	}
}

// checkTSMC: every page crossed the wire at most twice, and the
// destination's guest touched dirty pages before they were pushed, so
// that they were pulled on demand.
func checkTSMC(t *testing.T, m migrated) {
	t.Helper()
	info, res := m.info, m.res
	dirty := info.Pagecast.RoundPages[len(info.Pagecast.RoundPages)-1]
	pages := m.src.cfg.Memory / PageSize
	t.Logf("tsmc: precopy %.1f MiB, downtime %.1f MiB, postcopy %.1f MiB; %d dirty pages, %d pulled by the guest, %d pushed",
		float64(info.RAM.PrecopyBytes)/(1<<20), float64(info.RAM.DowntimeBytes)/(1<<20), float64(info.RAM.PostcopyBytes)/(1<<20),
		dirty, res.Pulled, res.Pushed)
	if res.Pulled == 0 {
		t.Error("the destination's guest never touched a page before it arrived: the on-demand path went untested")
	}
	if info.RAM.DirtySyncCount == 0 {
		t.Error("dirty-sync-count 0: stage 1's pass and the switch-over harvest the dirty log")
	}
	// predictive+tsmc leaves the pages it defers for stage 3.
	if want := pages - info.Pagecast.DeferredAll; res.Pages+res.ZeroPages != want {
		t.Errorf("stage 1 sent %d pages, want each of the %d not deferred once", res.Pages+res.ZeroPages, want)
	}
	if res.Pushed != dirty {
		t.Errorf("stage 3 delivered %d pages for %d dirty ones: some crossed more than twice, or never", res.Pushed, dirty)
	}
	if limit := pages*PageSize + dirty*PageSize + (pages+dirty)*16 + 1<<20; info.RAM.Transferred > limit {
		t.Errorf("%d bytes on the wire, more than memory + the dirty set (%d)", info.RAM.Transferred, limit)
	}
}

// checkSwitched: MODE+postcopy, on a load whose pre-copy does not
// converge, switched to post-copy within the downtime limit, and stage 3
// delivered each page left once.
func checkSwitched(t *testing.T, m migrated) {
	t.Helper()
	info, res := m.info, m.res
	left := info.Pagecast.RoundPages[len(info.Pagecast.RoundPages)-1]
	t.Logf("switched after round %d: %d pages left for post-copy, %d pulled by the guest, %d pushed",
		info.Pagecast.Round-1, left, res.Pulled, res.Pushed)
	if !strings.Contains(info.Pagecast.StopReason, "post-copy") {
		t.Errorf("did not switch to post-copy: %s", info.Pagecast.StopReason)
	}
	if left == 0 || res.Pushed != left {
		t.Errorf("stage 3 delivered %d pages for %d left", res.Pushed, left)
	}
	if info.Downtime > DefaultDowntimeLimit.Milliseconds() {
		t.Errorf("downtime %d ms, over the %v limit", info.Downtime, DefaultDowntimeLimit)
	}
}

// TestMigrateHeavy: on a link too slow for the heavy workload's hot set
// ever to fit the downtime limit, plain pre-copy resends the hot set each
// round up to the cap; predictive holds it back in the rounds that cannot
// close and sends it once per closing round, so with the same cap it
// sends fewer bytes.
func TestMigrateHeavy(t *testing.T) {
	pre := migrate(t, heavyLoad, Config{Mode: ModePrecopy, MaxBandwidth: 16 << 20, MaxRounds: 6})
	if !strings.Contains(pre.info.Pagecast.StopReason, "round cap") {
		t.Fatalf("precopy converged (%s): the workload is too light for this test", pre.info.Pagecast.StopReason)
	}
	pred := migrate(t, heavyLoad, Config{Mode: ModePredictive, MaxBandwidth: 16 << 20, MaxRounds: 6, Warmup: 3})
	if pred.info.RAM.Transferred >= pre.info.RAM.Transferred {
		t.Errorf("predictive sent %d bytes, pre-copy %d with the same cap of 6 rounds", pred.info.RAM.Transferred, pre.info.RAM.Transferred)
	}
	if err := uffdAvailable(); err != nil {
		t.Logf("precopy+postcopy not tried: %v", err)
		return
	}
	// Switching to post-copy instead of resending the hot set to the
	// cap, and forcing a stop-and-copy over the limit, sends less and
	// keeps the downtime.
	post := migrate(t, heavyLoad, Config{Mode: ModePrecopy + "+" + Postcopy, MaxBandwidth: 16 << 20, MaxRounds: 6})
	checkSwitched(t, post)
	if post.info.RAM.Transferred >= pre.info.RAM.Transferred {
		t.Errorf("precopy+postcopy sent %d bytes, pre-copy %d with the same cap of 6 rounds", post.info.RAM.Transferred, pre.info.RAM.Transferred)
	}
}

func TestMigrateRefused(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	small := lightLoad
	small.Memory = 8 << 20
	dst := newMemGuest(t, small, false)
	d := listenDestination(t, dst, ReceiveConfig{})
	m, err := Outgoing(src, d.uri, Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Wait()
	if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "memory") {
		t.Fatalf("migrating 16 MiB into 8 MiB: %v", err)
	}
	<-d.done
	if d.err == nil {
		t.Fatal("destination accepted a mismatched guest")
	}
	if ok, st := src.Running(); !ok {
		t.Fatalf("source %s after a refused migration", st)
	}
}

// noPostcopyGuest is a destination that cannot run post-copy, as a QEMU
// destination of pagecast's engine cannot.
type noPostcopyGuest struct{ *memGuest }

func (noPostcopyGuest) NoPostcopy() string { return "no userfaultfd here" }

// TestPostcopyRefused: a destination that cannot run post-copy refuses a
// mode that may switch to it, at the handshake, saying why; the source
// runs on.
func TestPostcopyRefused(t *testing.T) {
	for _, mode := range []string{ModeTSMC, ModePrecopy + "+" + Postcopy, ModePredictive + "+" + MECOM + "+" + Postcopy} {
		src := newMemGuest(t, lightLoad, true)
		d := listenDestination(t, noPostcopyGuest{newMemGuest(t, lightLoad, false)}, ReceiveConfig{})
		m, err := Outgoing(src, d.uri, Config{Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.Wait()
		if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "no userfaultfd here") {
			t.Errorf("%s to a destination without post-copy: %v", mode, err)
		}
		<-d.done
		if ok, st := src.Running(); !ok {
			t.Errorf("%s: source %s after a refused migration", mode, st)
		}
	}
}

// TestRestoreFails: a destination that cannot load the guest's state fails
// the switch-over like a memory mismatch: the source runs on.
func TestRestoreFails(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	dst := newMemGuest(t, lightLoad, false)
	dst.restoreErr = errors.New("device model refuses the state")
	d := listenDestination(t, dst, ReceiveConfig{})
	m, err := Outgoing(src, d.uri, Config{MaxBandwidth: 64 << 20, DowntimeLimit: testDowntime})
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Wait()
	if err == nil || strings.Count(info.ErrorDesc, "device model refuses the state") != 1 {
		t.Fatalf("migration into a destination that cannot restore: %v; want its reason, once", err)
	}
	<-d.done
	if d.err == nil {
		t.Fatal("destination reported success")
	}
	if ok, st := src.Running(); !ok {
		t.Fatalf("source is %s after the failed restore", st)
	}
	waitWrites(t, src, src.seqNow())
	if ok, st := dst.Waiting(); !ok {
		t.Fatalf("destination is %s, want never started", st)
	}
}

// proxy forwards a connection and can cut it, or stall it, on demand.
type proxy struct {
	uri        string
	forward    atomic.Uint64 // bytes forwarded source→destination
	mu         sync.Mutex
	conns      []net.Conn
	stall      atomic.Bool
	corrupt    atomic.Uint64 // if nonzero: flip a bit of the byte at this offset of the source's stream
	dropCommit atomic.Bool   // once: after the destination's verdict, swallow what the source sends and hang up on the destination
}

// proxyPair is one connection the proxy forwards: the source's end and
// the destination's.
type proxyPair struct {
	a, b net.Conn
	hole atomic.Bool // the source's stream is swallowed (dropCommit)
}

func newProxy(t *testing.T, to string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &proxy{uri: "tcp:" + l.Addr().String()}
	addr, _ := ParseURI(to)
	go func() {
		for { // every connection, so that a source can reconnect
			a, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", addr)
			if err != nil {
				a.Close()
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, a, b)
			p.mu.Unlock()
			pair := &proxyPair{a: a, b: b}
			go p.copy(b, a, true, pair)
			go p.copy(a, b, false, pair)
		}
	}()
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) copy(dst, src net.Conn, count bool, pair *proxyPair) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.stall.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 && count && pair.hole.Load() {
			dst.Close() // the destination sees the link break before the commit
			n = 0
		}
		if n > 0 && !count && hasVerdict(buf[:n]) && p.dropCommit.CompareAndSwap(true, false) {
			pair.hole.Store(true) // before the source can answer the verdict
		}
		if n > 0 {
			if at := p.corrupt.Load(); count && at > 0 {
				if start := p.forward.Load(); at >= start && at < start+uint64(n) {
					buf[at-start] ^= 0x10
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if count {
				p.forward.Add(uint64(n))
			}
		}
		if err != nil {
			// Either end gone: drop both, as the kernel does for a
			// killed process's sockets.
			pair.a.Close()
			pair.b.Close()
			return
		}
	}
}

// hasVerdict says whether the records in b hold the destination's verdict.
func hasVerdict(b []byte) bool {
	r := NewReader(bytes.NewReader(b))
	for {
		rec, err := r.Next()
		if err != nil {
			return false
		}
		if rec.Type == RecVerified {
			return true
		}
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestAbort breaks the migration in each phase and checks that the source
// ends up running, with its guest writing, and reports failed.
func TestAbort(t *testing.T) {
	for _, tc := range []struct {
		name  string
		phase string // StatusActive or StatusDevice
		how   string // "kill" the destination, "cut" the link, "stall" it
	}{
		{"kill destination in round 1", StatusActive, "kill"},
		{"kill destination in stop-and-copy", StatusDevice, "kill"},
		{"cut link in round 1", StatusActive, "cut"},
		{"cut link in stop-and-copy", StatusDevice, "cut"},
		{"stall link in round 1", StatusActive, "stall"},
		{"corrupt a compressed batch in round 1", StatusActive, "corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newMemGuest(t, heavyLoad, true)
			dst := newMemGuest(t, heavyLoad, false)
			d := listenDestination(t, dst, ReceiveConfig{})
			p := newProxy(t, d.uri)
			cfg := Config{MaxBandwidth: 8 << 20, MaxRounds: 1, IdleTimeout: time.Second}
			if tc.how == "corrupt" {
				// A byte 3 MiB in, inside some compressed batch: the
				// record checksum must catch it.
				cfg.Mode = MECOM
				p.corrupt.Store(3 << 20)
			}
			// One live round, then a stop-and-copy of most of memory at
			// 8 MiB/s: long enough to be caught in either phase.
			m, err := Outgoing(src, p.uri, cfg)
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for tc.how != "corrupt" {
				info := m.Info()
				if info.Status == tc.phase && (tc.phase != StatusActive || p.forward.Load() > 2<<20) {
					break
				}
				if info.Status == StatusCompleted || info.Status == StatusFailed || time.Now().After(deadline) {
					t.Fatalf("never caught the migration in %s: %s %s", tc.phase, info.Status, info.ErrorDesc)
				}
				time.Sleep(2 * time.Millisecond)
			}
			switch tc.how {
			case "kill":
				d.cancel()
			case "cut":
				p.cut()
			case "stall":
				p.stall.Store(true)
			case "corrupt": // already on its way
			}
			info, err := m.Wait()
			if err == nil || info.Status != StatusFailed {
				t.Fatalf("migration %s (%v), want failed", info.Status, err)
			}
			t.Logf("source reports: %s", info.ErrorDesc)
			if tc.how == "corrupt" && !strings.Contains(info.ErrorDesc, "checksum") {
				t.Errorf("the source does not say the destination found a damaged record: %s", info.ErrorDesc)
			}
			if ok, st := src.Running(); !ok {
				t.Fatalf("source is %s after the failed migration", st)
			}
			waitWrites(t, src, src.seqNow())
			p.stall.Store(false)
			p.cut()
			<-d.done
			if d.err == nil {
				t.Fatal("destination reported success")
			}
			if ok, st := dst.Waiting(); !ok {
				t.Fatalf("destination is %s, want never started", st)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	dst := newMemGuest(t, lightLoad, false)
	d := listenDestination(t, dst, ReceiveConfig{})
	p := newProxy(t, d.uri)
	m, err := Outgoing(src, p.uri, Config{MaxBandwidth: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	m.Cancel()
	info, err := m.Wait()
	if err == nil || info.Status != StatusCancelled {
		t.Fatalf("cancelled migration: %s %v", info.Status, err)
	}
	if ok, st := src.Running(); !ok {
		t.Fatalf("source is %s after cancel", st)
	}
	// What went before the cancel went in pre-copy, as QEMU counts it
	// (it said 0; walk 65).
	if r := info.RAM; r == nil || r.Transferred == 0 || r.PrecopyBytes == 0 || r.PrecopyBytes > r.Transferred {
		t.Errorf("cancelled migration's ram: %+v", r)
	}
	// The source told the destination why before it hung up.
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		p.cut()
		<-d.done
	}
	if d.err == nil {
		t.Fatal("destination reported success for a cancelled migration")
	}
	if !strings.Contains(d.err.Error(), "the source aborted the migration: cancelled on the source, where the guest runs on") {
		t.Errorf("destination: %v; want it to say the source cancelled", d.err)
	}
}

// TestCancelThrottled: a throttle migration cancelled once it throttles
// lifts the throttle and says so: cpu-throttle-percentage 0 in
// query-migrate (it kept the last figure, 87%; found by a new-user walk).
func TestCancelThrottled(t *testing.T) {
	src := newMemGuest(t, heavyLoad, true)
	dst := newMemGuest(t, heavyLoad, false)
	d := listenDestination(t, dst, ReceiveConfig{})
	m, err := Outgoing(src, d.uri, Config{Mode: ModeThrottle, MaxBandwidth: 4 << 20, DowntimeLimit: testDowntime})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); m.Info().CPUThrottlePercentage == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no throttle within 30 s")
		}
	}
	m.Cancel()
	info, _ := m.Wait()
	if info.Status != StatusCancelled || info.CPUThrottlePercentage != 0 || src.Throttle() != 0 {
		t.Errorf("cancelled throttle migration: %s, cpu-throttle-percentage %d, guest throttled %d%%", info.Status, info.CPUThrottlePercentage, src.Throttle())
	}
	<-d.done
}

// TestCancelInStopAndCopy: a cancel during the stop-and-copy stops it at
// a record's end, before the commit: the guest resumes here and the
// destination is told, where the stop-and-copy ignored the cancel and
// committed (walk 14: "completed" after Ctrl-C), or went on sending until
// cancelGrace cut it mid-record.
func TestCancelInStopAndCopy(t *testing.T) {
	busy := memConfig{Memory: 8 << 20, Hot: 1024, P: 0.95, Rate: 50000}
	src := newMemGuest(t, busy, true)
	dst := newMemGuest(t, busy, false)
	d := listenDestination(t, dst, ReceiveConfig{})
	m, err := Outgoing(src, d.uri, Config{Mode: ModePrecopy, MaxBandwidth: 8 << 20, MaxRounds: 1})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); m.Info().Status != StatusDevice; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) || m.finishedNow() {
			t.Fatalf("no stop-and-copy: %+v", m.Info())
		}
	}
	start := time.Now()
	if err := m.Cancel(); err != nil {
		t.Fatalf("Cancel in the stop-and-copy: %v", err)
	}
	info, err := m.Wait()
	if err == nil || info.Status != StatusCancelled {
		t.Fatalf("cancelled in the stop-and-copy: %s %v", info.Status, err)
	}
	if took := time.Since(start); took >= cancelGrace {
		t.Errorf("the cancel took %v: the link was cut, not the migration stopped", took)
	}
	if ok, st := src.Running(); !ok {
		t.Fatalf("source is %s after the cancel", st)
	}
	<-d.done
	if d.err == nil || !strings.Contains(d.err.Error(), "the source aborted the migration: cancelled on the source, where the guest runs on") {
		t.Errorf("destination: %v; want it to say the source cancelled", d.err)
	}
	if ok, st := dst.Running(); ok {
		t.Errorf("destination is %s after a cancelled migration", st)
	}
}

func TestBudgetCut(t *testing.T) {
	prob := []float32{0.1, 0.5, 0.9, 0.99, 1, 1, 0.3}
	for _, tc := range []struct {
		budget uint64
		want   float32
	}{{0, 1}, {1, 1}, {2, 1}, {3, 1013.0 / 1024}, {4, 921.0 / 1024}, {100, 0}} {
		if got := budgetCut(prob, tc.budget); got != tc.want {
			t.Errorf("budgetCut(budget %d) = %v, want %v", tc.budget, got, tc.want)
		}
	}
	// A large VM's, counted in parts: the bucket of the budget-th most
	// likely page.
	rng := rand.New(rand.NewPCG(3, 3))
	big := make([]float32, 3<<20+17)
	for i := range big {
		big[i] = float32(rng.Float64() * rng.Float64())
	}
	big[5] = 1
	sorted := slices.Clone(big)
	slices.Sort(sorted)
	for _, budget := range []uint64{1, 1000, 1 << 20, uint64(len(big)) - 1} {
		v := sorted[len(sorted)-int(budget)]
		if got, want := budgetCut(big, budget), float32(min(int(v*1024), 1024))/1024; got != want {
			t.Errorf("%d pages, budget %d: cut %v, want %v", len(big), budget, got, want)
		}
	}
	// Ties at the top: the cut admits all of them; in the closing round
	// holding back stops at the budget and the rest go last. In a round
	// that cannot close, every likely page is held back.
	for _, tc := range []struct {
		closing    bool
		held, last int
	}{{true, 2, 2}, {false, 4, 0}} {
		p := &predictive{prob: []float32{1, 1, 1, 1, 0.2, 0}, full: true, cut: 1, lastCut: 0.125, budget: 2, closing: tc.closing}
		var got [3]int
		for gfn := range uint64(6) {
			got[p.verdict(gfn)]++
		}
		if got[holdBack] != tc.held || got[sendLast] != tc.last+1 || got[sendNow] != 1 {
			t.Errorf("closing %v: %d now, %d last, %d held back; want 1, %d, %d", tc.closing, got[sendNow], got[sendLast], got[holdBack], tc.last+1, tc.held)
		}
	}
}

// TestTouchOrder: predictive+tsmc pushes the dirty pages the guest is
// likeliest to touch next first.
func TestTouchOrder(t *testing.T) {
	p, err := newPredictive(Config{Clock: WallClock{}, Epoch: 100 * time.Millisecond, Threshold: 0.5}, 64)
	if err != nil {
		t.Fatal(err)
	}
	p.observe([]uint64{1, 2, 5, 9})
	for range 40 {
		p.observe([]uint64{5, 9}) // written every epoch
	}
	dirty := bitmap.New(64)
	for _, g := range []uint64{1, 2, 5, 9} {
		dirty.Set(g)
	}
	if got := p.touchOrder(dirty); !slices.Equal(got, []uint64{5, 9, 1, 2}) {
		t.Errorf("push order %v, want the pages written every epoch (5, 9) before those written once (1, 2)", got)
	}
}

// stateWatch is a source whose SaveState tells whether the stop-and-copy
// still sent pages while it ran: it waits for the proxy to forward another
// buffer's worth of the stream, at most 5 s, and then saves (or fails
// with err).
type stateWatch struct {
	*memGuest
	p      *proxy
	during atomic.Bool
	err    error
}

func (g *stateWatch) SaveState() ([]byte, error) {
	at := g.p.forward.Load()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if g.p.forward.Load() >= at+wireBufSize {
			g.during.Store(true)
			break
		}
	}
	if g.err != nil {
		return nil, g.err
	}
	return g.memGuest.SaveState()
}

// TestStateSavedWhileLastPagesGo checks that the stop-and-copy saves the
// guest's state while it sends the last pages, not after them (on QEMU
// saving took 12–50 ms of the pause), and that a save that fails meanwhile
// leaves the guest running on the source.
func TestStateSavedWhileLastPagesGo(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(map[bool]string{false: "saved", true: "save fails"}[fail], func(t *testing.T) {
			src := &stateWatch{memGuest: newMemGuest(t, heavyLoad, true)}
			if fail {
				src.err = errors.New("device state refused")
			}
			dst := newMemGuest(t, heavyLoad, false)
			d := listenDestination(t, dst, ReceiveConfig{})
			src.p = newProxy(t, d.uri)
			// heavy never converges: the round cap stops it with its
			// hot set of 768 pages (3 MiB) pending, some 50 buffers.
			m, err := Outgoing(src, src.p.uri, Config{MaxBandwidth: 64 << 20, DowntimeLimit: testDowntime, MaxRounds: 2})
			if err != nil {
				t.Fatal(err)
			}
			info, err := m.Wait()
			if !src.during.Load() {
				t.Error("the guest's state was saved after the last pages went, not while")
			}
			if fail {
				if err == nil || !strings.Contains(info.ErrorDesc, "device state refused") {
					t.Fatalf("a migration whose state could not be saved: %v", err)
				}
				if ok, st := src.Running(); !ok {
					t.Fatalf("source is %s after its state failed to save", st)
				}
				waitWrites(t, src.memGuest, src.seqNow())
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			<-d.done
			if d.err != nil {
				t.Fatalf("destination: %v", d.err)
			}
			if !info.Pagecast.Verified {
				t.Errorf("memory not verified: %+v", info.Pagecast)
			}
			if n := info.Pagecast.RoundPages; len(n) == 0 || n[len(n)-1] < 2*wireBufSize/PageSize {
				t.Errorf("stop-and-copy pages %v: too few to tell", n)
			}
		})
	}
}

// preparingDest is a destination that gets ready for Restore (or fails
// to, with err) and records when.
type preparingDest struct {
	*memGuest
	err      error
	prepared atomic.Int32 // PrepareRestore calls
	early    atomic.Bool  // whether Restore came after one
}

func (d *preparingDest) PrepareRestore() error {
	d.prepared.Add(1)
	return d.err
}

func (d *preparingDest) Restore(state []byte) error {
	d.early.Store(d.prepared.Load() > 0)
	return d.memGuest.Restore(state)
}

// TestPrepareRestore checks that the receiver lets a destination get ready
// for the guest's state once it accepts the source, before the switch-over,
// and that a destination that could not still takes the guest.
func TestPrepareRestore(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(map[bool]string{false: "ready", true: "not ready"}[fail], func(t *testing.T) {
			src := newMemGuest(t, lightLoad, true)
			dst := &preparingDest{memGuest: newMemGuest(t, lightLoad, false)}
			if fail {
				dst.err = errors.New("no socket for the state")
			}
			d := listenDestination(t, dst, ReceiveConfig{})
			migrateTo(t, src, d, Config{MaxBandwidth: 64 << 20, DowntimeLimit: testDowntime})
			if n := dst.prepared.Load(); n != 1 || !dst.early.Load() {
				t.Errorf("PrepareRestore called %d times, before Restore: %v; want once, before", n, dst.early.Load())
			}
			if ok, st := dst.Running(); !ok {
				t.Errorf("destination is %s, want running", st)
			}
		})
	}
}

// TestStrangePeers: a peer that is not a pagecast receiver is said to be
// one, not taken for a TLS destination that hung up: one that takes the
// connection and never answers the handshake times out saying so, and one
// that answers in another protocol (an HTTP server) is named for that.
func TestStrangePeers(t *testing.T) {
	for _, tc := range []struct {
		name, reply string // reply "": the connection is held open, unread, until the test ends
		idle        time.Duration
		want        string
	}{
		{"silent", "", 300 * time.Millisecond, "took the connection and has not answered: is it a pagecast receiver, vm run --incoming or pagecast receive, and not busy with another migration?"},
		{"http", "HTTP/1.0 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html>no</html>\n", time.Second, "answered in another protocol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					if tc.reply == "" {
						defer c.Close()
						continue
					}
					io.WriteString(c, tc.reply)
					c.Close()
				}
			}()
			m, err := Outgoing(newMemGuest(t, lightLoad, true), "tcp:"+l.Addr().String(), Config{IdleTimeout: tc.idle})
			if err == nil {
				_, err = m.Wait()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "TLS") {
				t.Fatalf("migration to a %s peer: %v, want %q", tc.name, err, tc.want)
			}
		})
	}
}

// TestDirtySyncsLive: query-migrate's dirty-sync-count counts the dirty
// log's harvests as they happen, not only at a round's end (the metric
// pagecast_migration_dirty_syncs_total read 0 well into round 1).
func TestDirtySyncsLive(t *testing.T) {
	src := newMemGuest(t, lightLoad, true)
	dst := newMemGuest(t, lightLoad, false)
	d := listenDestination(t, dst, ReceiveConfig{})
	// 16 MiB at 8 MiB/s: round 1 takes 2 s, some 20 epochs of 100 ms.
	m, err := Outgoing(src, d.uri, Config{Mode: ModePrecopy, MaxBandwidth: 8 << 20, DowntimeLimit: testDowntime})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	i := m.Info()
	if i.Pagecast.Round != 1 || i.RAM.DirtySyncCount < 3 {
		t.Errorf("a second into round 1: round %d, dirty-sync-count %d, want round 1 and a count of its harvests so far", i.Pagecast.Round, i.RAM.DirtySyncCount)
	}
	m.Cancel() // the rest is not what this test is about
	m.Wait()
	<-d.done
}

// slowLogClose is a guest whose dirty log takes closeTime to close, as a
// KVM QEMU's does (QEMU's cancel-vcpu-dirty-limit waits up to a second).
type slowLogClose struct {
	*memGuest
	closeTime time.Duration
	closed    atomic.Bool
}

func (g *slowLogClose) StartDirtyLog() (DirtyLog, error) {
	l, err := g.memGuest.StartDirtyLog()
	if err != nil {
		return nil, err
	}
	return &slowLog{DirtyLog: l, g: g}, nil
}

type slowLog struct {
	DirtyLog
	g *slowLogClose
}

func (l *slowLog) Close() error {
	time.Sleep(l.g.closeTime)
	l.g.closed.Store(true)
	return l.DirtyLog.Close()
}

// TestTotalTimeBeforeLogClose: a migration's total time ends with the
// migration, not with its dirty log's close after it (a KVM QEMU's took a
// second, and a 226 ms migration said 1.01 s: mode auto's prediction
// missed by 83%; found by a new-user walk); Done waits for the close.
func TestTotalTimeBeforeLogClose(t *testing.T) {
	src := &slowLogClose{memGuest: newMemGuest(t, lightLoad, true), closeTime: time.Second}
	dst := newMemGuest(t, lightLoad, false)
	d := listenDestination(t, dst, ReceiveConfig{})
	start := time.Now()
	m, err := Outgoing(src, d.uri, Config{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Wait()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if !src.closed.Load() {
		t.Error("Done before the dirty log closed")
	}
	if total := time.Duration(info.TotalTime) * time.Millisecond; total > took-800*time.Millisecond {
		t.Errorf("total time %v of a migration that took %v with a 1 s log close: the close is counted", total, took)
	}
	<-d.done
}

// TestThrottleTimeWithinRound: the vCPU time the throttle withholds grows
// in Info while a round goes on, not only when it ends (walk 52: the
// metrics showed a guest throttled 89% for a whole round as slowed 0%).
func TestThrottleTimeWithinRound(t *testing.T) {
	load := memConfig{Memory: 2 << 20, Hot: 256, P: 0.95, Rate: 50000}
	src := newMemGuest(t, load, true)
	dst := newMemGuest(t, load, false)
	d := listenDestination(t, dst, ReceiveConfig{})
	m, err := Outgoing(src, d.uri, Config{Mode: ModeThrottle, MaxBandwidth: 1 << 20, DowntimeLimit: testDowntime})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { m.Cancel(); m.Wait(); <-d.done }()
	var round int
	var since time.Time
	var first, last int64
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !m.finishedNow(); time.Sleep(20 * time.Millisecond) {
		i := m.Info()
		if i.CPUThrottlePercentage == 0 || i.Pagecast == nil {
			continue
		}
		if i.Pagecast.ThrottleTime < last {
			t.Fatalf("throttle-time went back from %d to %d ms in round %d", last, i.Pagecast.ThrottleTime, i.Pagecast.Round)
		}
		last = i.Pagecast.ThrottleTime
		if i.Pagecast.Round != round {
			round, since, first = i.Pagecast.Round, time.Now(), i.Pagecast.ThrottleTime
			continue
		}
		if took := time.Since(since); took >= 300*time.Millisecond {
			// What the throttle withheld: its share of every vCPU's time.
			want := float64(took.Milliseconds()) * float64(i.CPUThrottlePercentage) / 100 * float64(max(1, src.Identity().VCPUs))
			if got := float64(i.Pagecast.ThrottleTime - first); got < 0.75*want || got > 1.25*want {
				t.Fatalf("round %d throttled at %d%%: throttle-time %d ms at its start and %d ms %v later, want about %.0f ms more",
					round, i.CPUThrottlePercentage, first, i.Pagecast.ThrottleTime, took.Round(time.Millisecond), want)
			}
			t.Logf("round %d at %d%%: throttle-time %d → %d ms in %v", round, i.CPUThrottlePercentage, first, i.Pagecast.ThrottleTime, time.Since(since).Round(time.Millisecond))
			return
		}
	}
	t.Fatal("no throttled round lasted 300 ms to watch")
}

// A harvest that comes before round 1 has moved enough to measure the
// link does not stop the migration on the 1 GiB/s guess made without a
// cap. An epoch of a microsecond makes the first harvest come before the
// first page, as a source starved of CPU had it: a 256 MiB guest then
// fitted the guess whole and was stopped with every page pending (a walk:
// rounds [0 65536], 416 ms of downtime against 300).
// A cap is an upper bound, not a measure: the same holds with one (a
// review: a cap of 1 GiB/s stopped the guest whole as the guess did).
func TestNoStopOnTheGuess(t *testing.T) {
	for _, cap := range []uint64{0, 256 << 20} { // at 256 MiB/s the 16 MiB guest fits the cap's 100 ms whole
		// Not migrate: a harvest at every page keeps the engine under
		// the cap, which then never waits.
		src, dst := newMemGuest(t, lightLoad, true), newMemGuest(t, lightLoad, false)
		info := migrateTo(t, src, listenDestination(t, dst, ReceiveConfig{}), Config{Mode: ModePrecopy, Epoch: time.Microsecond,
			MaxBandwidth: cap, DowntimeLimit: testDowntime})
		rp := info.Pagecast.RoundPages
		if len(rp) < 2 || rp[0]*PageSize < 1<<20 || !info.Pagecast.Verified {
			t.Errorf("cap %d: round 1 sent %v pages before the stop (%s), verified %v: the link's rate was not measured until it had sent %d bytes",
				cap, rp, info.Pagecast.StopReason, info.Pagecast.Verified, 1<<20)
		}
	}
}

// TestRoundsListedEmpty: a migration that ends before its first round lists
// no round as [] in query-migrate, not null, which a script had to allow
// for (walk 65).
func TestRoundsListedEmpty(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uri := "tcp:" + l.Addr().String()
	l.Close() // nobody listens
	m, err := Outgoing(newMemGuest(t, lightLoad, true), uri, Config{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Wait()
	if err == nil {
		t.Fatal("a migration to nobody succeeded")
	}
	b, _ := json.Marshal(info)
	if !strings.Contains(string(b), `"round-pages":[]`) || !strings.Contains(string(b), `"round-bytes":[]`) {
		t.Errorf("query-migrate of a migration with no round: %s", b)
	}
}

// TestDowntimeFromStop: the downtime runs from when the guest has
// stopped, not from when the engine asked it to: a stop that takes 400 ms
// (a QMP stop on a loaded host), the guest running meanwhile, is not
// downtime (walk 79: 292 ms against the 117 the guest was paused).
func TestDowntimeFromStop(t *testing.T) {
	cfg := memConfig{Memory: 4 << 20, Hot: 1}
	src, dst := newMemGuest(t, cfg, true), newMemGuest(t, cfg, false)
	src.pauseTakes = 400 * time.Millisecond
	info := migrateTo(t, src, listenDestination(t, dst, ReceiveConfig{}), Config{})
	t.Logf("downtime %d ms, total %d ms", info.Downtime, info.TotalTime)
	if info.Downtime >= 400 {
		t.Errorf("downtime %d ms counts the 400 ms the stop took", info.Downtime)
	}
}

// TestUserPauseHeld: a guest its user paused during the migration (QMP
// stop) is held paused at the destination once it has come, as QEMU's own
// migration holds it, and stays paused at the source should the migration
// fail (walk 114: the destination ran it). Both modes that pause: the
// stop-and-copy's, and tsmc's hand-over.
func TestUserPauseHeld(t *testing.T) {
	for _, mode := range []string{ModePrecopy, ModeTSMC} {
		t.Run(mode, func(t *testing.T) {
			src := newMemGuest(t, lightLoad, true)
			dst := newMemGuest(t, lightLoad, false)
			d := listenDestination(t, dst, ReceiveConfig{})
			m, err := Outgoing(src, d.uri, Config{Mode: mode, MaxBandwidth: 8 << 20, DowntimeLimit: testDowntime})
			if err != nil {
				t.Fatal(err)
			}
			pauseDuringRound1(t, m, src)
			stopped := src.seqNow()
			userPause := src.PausedAt()
			info := waitBoth(t, m, d)
			if info.Pagecast == nil || !info.Pagecast.HeldPaused {
				t.Errorf("query-migrate does not say the guest was held paused: %+v", info.Pagecast)
			}
			// The downtime is the switch-over's, from its own stop, not
			// from the user's, rounds before it.
			since := time.Since(userPause)
			t.Logf("downtime %d ms; the user paused the guest %v before the end", info.Downtime, since.Round(time.Millisecond))
			if d := time.Duration(info.Downtime) * time.Millisecond; d > since/2 {
				t.Errorf("downtime %v of a migration whose guest its user paused %v before it ended: counted from the user's stop", d, since.Round(time.Millisecond))
			}
			if _, st := dst.Waiting(); st != memPaused {
				t.Fatalf("destination is %s, want paused, as the source was", st)
			}
			if !d.res.HeldPaused {
				t.Error("the receiver does not say it held the guest paused")
			}
			if ok, st := src.Running(); ok {
				t.Fatalf("source is %s after the migration", st)
			}
			if !bytes.Equal(src.mem, dst.mem) {
				t.Fatalf("%d pages differ", differingPages(src.mem, dst.mem))
			}
			time.Sleep(20 * time.Millisecond)
			if n := dst.seqNow(); n != stopped {
				t.Fatalf("the destination's guest wrote (%d writes, %d at the pause): it ran", n, stopped)
			}
			// cont at the destination runs it on from where it stopped.
			if err := dst.Resume(); err != nil {
				t.Fatal(err)
			}
			waitWrites(t, dst, stopped)
		})
	}
	t.Run("failed", func(t *testing.T) {
		src := newMemGuest(t, lightLoad, true)
		dst := newMemGuest(t, lightLoad, false)
		dst.restoreErr = errors.New("device model refuses the state")
		d := listenDestination(t, dst, ReceiveConfig{})
		m, err := Outgoing(src, d.uri, Config{MaxBandwidth: 8 << 20, DowntimeLimit: testDowntime})
		if err != nil {
			t.Fatal(err)
		}
		pauseDuringRound1(t, m, src)
		stopped := src.seqNow()
		info, err := m.Wait()
		if err == nil {
			t.Fatal("migration into a destination that cannot restore succeeded")
		}
		<-d.done
		if info.Pagecast == nil || !info.Pagecast.HeldPaused {
			t.Errorf("query-migrate does not say the guest was held paused: %+v", info.Pagecast)
		}
		if _, st := src.Running(); st != memPaused {
			t.Fatalf("source is %s after the failed migration, want paused, as its user left it", st)
		}
		time.Sleep(20 * time.Millisecond)
		if n := src.seqNow(); n != stopped {
			t.Fatalf("the source's guest wrote after the failure (%d writes, %d at the pause): it was resumed", n, stopped)
		}
	})
}

// pauseDuringRound1 pauses src, as its user would with QMP stop, once m
// has sent a MiB of round 1.
func pauseDuringRound1(t *testing.T, m *Migration, src *memGuest) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		i := m.Info()
		if i.RAM != nil && i.RAM.Transferred > 1<<20 {
			break
		}
		if time.Now().After(deadline) || i.Status == StatusFailed || i.Status == StatusCompleted {
			t.Fatalf("round 1 did not get under way: %+v", i)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := src.Pause(); err != nil {
		t.Fatal(err)
	}
}

// TestPostcopySweepWaits: a guest that writes its memory in address
// order, the order stage 3 pushes in, catches up with the push and rides
// its front, waiting on pages already on their way, which the source
// never sees asked for (walk 137: 7% slowdown reported where the guest
// lost about 88%). The fault-time reported is the destination's count of
// its guest's waits.
func TestPostcopySweepWaits(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	load := memConfig{Memory: 8 << 20, Rate: 20000, Sweep: true}
	m := migrate(t, load, Config{Mode: ModeTSMC, MaxBandwidth: 16 << 20}) // checks fault-time against the writer's stall
	_, stalled := m.dst.slowed()
	t.Logf("fault-time %d ms, the destination's writer stalled %v, the destination counted %v; %d pages asked for, %d pushed in stage 3",
		m.info.Pagecast.FaultTime, stalled.Round(time.Millisecond), m.res.Waited.Round(time.Millisecond), m.info.RAM.PostcopyRequests, m.res.Pushed)
	// The sweep must have ridden the push: a stall of most of stage 3
	// (8 MiB at 16 MiB/s, 0.5 s), with few pages asked for.
	if stalled < 200*time.Millisecond || m.info.RAM.PostcopyRequests > m.res.Pushed/4 {
		t.Errorf("the writer stalled %v with %d of %d pages asked for: it did not ride the push", stalled, m.info.RAM.PostcopyRequests, m.res.Pushed)
	}
	if got, want := m.info.Pagecast.FaultTime, m.res.Waited.Milliseconds(); got != want {
		t.Errorf("fault-time %d ms, but the destination counted %d ms", got, want)
	}
}

// TestPostcopyDowntimeCoversDrop: a post-copy destination drops the dirty
// pages from its memory, which stage 3 brings; the downtime reported covers
// what of that falls in the pause, from the source's pause to the
// destination's start (walk 138: 25 969 scattered pages dropped after the
// commit paused the guest 73 ms, where the downtime said under 1 ms), and
// most of it falls in stage 1, as the source names the pages it sent and
// that were written again (RecLater).
// pauseGap is how long the guest stood still: from the source's pause to
// the destination's start.
func (m migrated) pauseGap() time.Duration {
	m.src.mu.Lock()
	paused := m.src.pausedAt
	m.src.mu.Unlock()
	m.dst.mu.Lock()
	defer m.dst.mu.Unlock()
	return m.dst.startedAt.Sub(paused)
}

// pauseSlack is what of pauseGap a downtime may leave out: the source's
// pause before its clock starts, longer on a loaded host and under the
// race detector (CI 105: 1 ms counted, 5.9 ms paused).
func pauseSlack() time.Duration {
	if raceEnabled {
		return 10 * time.Millisecond
	}
	return 5 * time.Millisecond
}

// TestDowntimeCoversStart: a downtime runs until the destination's guest
// runs, which it says (RecStarted), not until the commit is sent: walk 140
// saw the destination's start 4.5–11.4 ms after the commit on a loaded
// host of two cores, uncounted, and a stop-and-copy's 7–19 ms under load.
func TestDowntimeCoversStart(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	const takes = 40 * time.Millisecond
	for _, mode := range []string{ModeTSMC, ModePrecopy + "+" + Postcopy, ModePrecopy, MECOM} {
		t.Run(mode, func(t *testing.T) {
			load, bw := heavyLoad, uint64(16<<20) // post-copy's switch
			if !NeedsPostcopy(mode) {
				load, bw = lightLoad, 32<<20 // a stop-and-copy that converges
			}
			load.StartTakes = takes
			m := migrate(t, load, Config{Mode: mode, MaxBandwidth: bw})
			gap := m.pauseGap()
			d := time.Duration(m.info.Downtime) * time.Millisecond
			t.Logf("downtime %v; the destination started its guest %v after the source paused it, its start taking %v", d, gap.Round(100*time.Microsecond), takes)
			if d < takes {
				t.Errorf("downtime %v, but the destination's start alone took %v", d, takes)
			}
			if d+pauseSlack() < gap {
				t.Errorf("downtime %v, but the guest was paused %v from the source's pause to the destination's start", d, gap)
			}
		})
	}
}

// TestDowntimeFromTheStop: the downtime counts from when the guest
// stopped, as it says (PauseMarker), not from when Pause returned to the
// engine: walk 145 saw the engine's thread wait 34 ms for a CPU between.
func TestDowntimeFromTheStop(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	const late = 40 * time.Millisecond
	for _, mode := range []string{ModeTSMC, ModePrecopy} {
		t.Run(mode, func(t *testing.T) {
			load := lightLoad
			load.PauseLate = late
			m := migrate(t, load, Config{Mode: mode, MaxBandwidth: 32 << 20})
			d := time.Duration(m.info.Downtime) * time.Millisecond
			t.Logf("downtime %v; the guest paused %v; Pause returned %v after the stop", d, m.pauseGap(), late)
			if d < late {
				t.Errorf("downtime %v, but Pause returned %v after the guest stopped", d, late)
			}
		})
	}
}

// TestPostcopyDowntimeCoversDrop: most of the pages post-copy brings are
// dropped at the destination before the pause (TSMC's stage 1, or named
// as MODE+postcopy switches), and the downtime covers the pause to the
// destination's start.
func TestPostcopyDowntimeCoversDrop(t *testing.T) {
	if err := uffdAvailable(); err != nil {
		t.Skip(err)
	}
	for _, tc := range []struct {
		mode string
		load memConfig
		bw   uint64
		min  uint64 // dirty pages at the switch-over
	}{
		// Writes at random over 64 MiB, through a stage 1 of about two
		// seconds: thousands of dirty pages at the switch-over, each a
		// run of its own. The links are 32 MiB/s, which the engine
		// outruns under the race detector on a loaded host, so that the
		// cap binds (CI 128: at 128 MiB/s over 128 MiB it moved 57 MiB/s
		// and "the link cap never waited").
		{ModeTSMC, memConfig{Memory: 64 << 20, Rate: 100000}, 32 << 20, 5000},
		// A hot set the predictor holds back for stage 3, whose pages
		// are named as they are held back (1 265 of 4 348 dirty pages
		// were dropped in stage 1 before they were, 4 197 of 4 350
		// since).
		{ModePredictive + "+" + ModeTSMC, memConfig{Memory: 64 << 20, Hot: 2048, P: 0.95, Rate: 100000}, 32 << 20, 2000},
		// Pre-copy whose round 2 leaves most of memory pending, named
		// and dropped before the pause (wire protocol 10).
		{ModePrecopy + "+postcopy", memConfig{Memory: 64 << 20, Rate: 100000}, 32 << 20, 5000},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			m := migrate(t, tc.load, Config{Mode: tc.mode, MaxBandwidth: tc.bw})
			gap := m.pauseGap()
			t.Logf("downtime %d ms; the source paused its guest %v before the destination started it; %d dirty pages, %d of them dropped in stage 1",
				m.info.Downtime, gap.Round(100*time.Microsecond), m.res.Pushed, m.res.DroppedEarly)
			if m.res.Pushed < tc.min {
				t.Fatalf("%d dirty pages at the switch-over: too few for the test", m.res.Pushed)
			}
			if m.res.DroppedEarly < m.res.Pushed/2 {
				t.Errorf("%d of %d dirty pages dropped in stage 1, want most: the rest were dropped in the pause", m.res.DroppedEarly, m.res.Pushed)
			}
			// The downtime ends when the destination says its guest
			// runs (a drop of thousands of pages after the commit was
			// 35 ms more: 41 ms against 6).
			if d := time.Duration(m.info.Downtime) * time.Millisecond; d+pauseSlack() < gap {
				t.Errorf("downtime %v, but the guest was paused %v from the source's pause to the destination's start", d, gap)
			}
		})
	}
}
