package migrator

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/vmm"
)

const testMemory = 64 << 20

// newGuest builds a pagecast VM running workload; the source is started,
// a destination is left waiting.
func newGuest(t *testing.T, memory uint64, workload string, start bool) *vmm.VM {
	t.Helper()
	w, err := guest.ParseWorkload(workload)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := vmm.New(vmm.Config{MemoryBytes: memory, Cmdline: w.Cmdline(1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if start {
		guest.FillArena(vm.Memory(), guest.DefaultMix, 1)
		if err := vm.Start(); err != nil {
			t.Fatal(err)
		}
		waitProgress(t, vm, 0)
	}
	return vm
}

// waitProgress waits until the guest's progress counter passes from.
func waitProgress(t *testing.T, vm *vmm.VM, from uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := vm.GuestStatus()
		if err != nil {
			t.Fatal(err)
		}
		if p := st.TotalProgress(); p > from {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest progress stuck at %d", from)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// destination accepts one migration into vm; through is an optional
// wrapper of the accepted connection (a link to cut).
type destination struct {
	uri    string
	conn   chan net.Conn
	done   chan struct{}
	res    Received
	err    error
	cancel context.CancelFunc
}

func listenDestination(t *testing.T, vm *vmm.VM, cfg ReceiveConfig) *destination {
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
		d.res, d.err = Receive(ctx, conn, vm, cfg)
	}()
	return d
}

func migrateAndCheck(t *testing.T, mode string, bandwidth uint64) Info {
	testutil.RequiresKVM(t)
	src := newGuest(t, testMemory, "hotset:hot=1024", true)
	dst := newGuest(t, testMemory, "hotset:hot=1024", false)
	// The destination's own dirty log tells the pages its guest wrote
	// after it started, which may differ from the source's by then.
	dlog, err := dst.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer dlog.Close()
	d := listenDestination(t, dst, ReceiveConfig{})

	m, err := Outgoing(src, d.uri, Config{Mode: mode, MaxBandwidth: bandwidth})
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Wait()
	if err != nil {
		t.Fatal(err)
	}
	<-d.done
	if d.err != nil {
		t.Fatalf("destination: %v", d.err)
	}
	t.Logf("%s: normal %d zero %d; total %d ms, downtime %d ms, setup %d ms, %d bytes, %d rounds %v, deferrals %d, stop: %s",
		mode, info.RAM.Normal, info.RAM.Duplicate, info.TotalTime, info.Downtime, info.SetupTime, info.RAM.Transferred, info.Pagecast.Round,
		info.Pagecast.RoundPages, info.Pagecast.DeferredAll, info.Pagecast.StopReason)

	if st, _ := src.State(); st != vmm.StatePaused {
		t.Errorf("source after migration: %s, want paused", st)
	}
	if st, _ := dst.State(); st != vmm.StateRunning {
		t.Fatalf("destination after migration: %s, want running", st)
	}
	srcStatus, _ := src.GuestStatus()
	waitProgress(t, dst, srcStatus.TotalProgress())

	written := assertSameMemory(t, src, dst, dlog)
	if written.Count() > 2048 {
		t.Errorf("destination guest wrote %d pages in its first moments; comparison too weak", written.Count())
	}
	if !info.Pagecast.Verified || info.RAM.Transferred == 0 || info.Downtime <= 0 {
		t.Errorf("info: %+v %+v", info.RAM, info.Pagecast)
	}
	// The link cap holds: sleeping can only make a noisy machine slower.
	if rate := float64(info.RAM.Transferred) / (float64(info.TotalTime-info.SetupTime) / 1000); rate > 1.1*float64(bandwidth) {
		t.Errorf("sent at %.1f MiB/s through a %d MiB/s cap", rate/(1<<20), bandwidth>>20)
	}
	if d.res.Pages+d.res.ZeroPages < testMemory/PageSize {
		t.Errorf("destination received %d + %d zero pages, fewer than the %d of memory", d.res.Pages, d.res.ZeroPages, testMemory/PageSize)
	}
	return info
}

// assertSameMemory pauses the destination and checks memory equality
// independently of the protocol's own checksums: every page the
// destination's guest has not written since it started (its dirty log,
// opened before the migration, says which) equals the stopped source's.
// It returns the pages the destination's guest wrote.
func assertSameMemory(t *testing.T, src, dst *vmm.VM, dlog *vmm.DirtyLog) *vmm.Bitmap {
	t.Helper()
	if err := dst.Pause(); err != nil {
		t.Fatal(err)
	}
	written, err := dlog.Harvest()
	if err != nil {
		t.Fatal(err)
	}
	smem, dmem := src.Memory(), dst.Memory()
	differ := 0
	for gfn := range uint64(len(smem) / PageSize) {
		if !written.Has(gfn) && !bytes.Equal(smem[gfn*PageSize:(gfn+1)*PageSize], dmem[gfn*PageSize:(gfn+1)*PageSize]) {
			differ++
		}
	}
	if differ > 0 {
		t.Errorf("%d pages differ between source and destination", differ)
	}
	return written
}

func TestMigratePrecopy(t *testing.T) {
	info := migrateAndCheck(t, ModePrecopy, 32<<20)
	if info.Pagecast.DeferredAll != 0 {
		t.Errorf("precopy deferred %d pages", info.Pagecast.DeferredAll)
	}
}

func TestMigratePredictive(t *testing.T) {
	info := migrateAndCheck(t, ModePredictive, 32<<20)
	if info.Pagecast.DeferredAll == 0 {
		t.Errorf("predictive deferred nothing on hotset")
	}
}

func TestMigrateRefused(t *testing.T) {
	testutil.RequiresKVM(t)
	src := newGuest(t, testMemory, "hotset", true)
	dst := newGuest(t, 32<<20, "hotset", false)
	d := listenDestination(t, dst, ReceiveConfig{})
	m, err := Outgoing(src, d.uri, Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Wait()
	if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "memory") {
		t.Fatalf("migrating 64 MiB into 32 MiB: %v", err)
	}
	<-d.done
	if d.err == nil {
		t.Fatal("destination accepted a mismatched guest")
	}
	if st, _ := src.State(); st != vmm.StateRunning {
		t.Fatalf("source %s after a refused migration", st)
	}
}

// proxy forwards a connection and can cut it, or stall it, on demand.
type proxy struct {
	uri     string
	forward atomic.Uint64 // bytes forwarded source→destination
	mu      sync.Mutex
	conns   []net.Conn
	stall   atomic.Bool
	corrupt atomic.Uint64 // if nonzero: flip a bit of the byte at this offset of the source's stream
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
			go p.copy(b, a, true)
			go p.copy(a, b, false)
		}
	}()
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) copy(dst, src net.Conn, count bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.stall.Load() {
			time.Sleep(10 * time.Millisecond)
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
			p.cut()
			return
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
// ends up running, with its guest making progress, and reports failed.
func TestAbort(t *testing.T) {
	testutil.RequiresKVM(t)
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
			src := newGuest(t, testMemory, "hotset:hot=1024", true)
			dst := newGuest(t, testMemory, "hotset:hot=1024", false)
			d := listenDestination(t, dst, ReceiveConfig{})
			p := newProxy(t, d.uri)
			cfg := Config{MaxBandwidth: 16 << 20, MaxRounds: 1, IdleTimeout: time.Second}
			if tc.how == "corrupt" {
				// A byte 3 MiB in, inside some compressed batch: the
				// record checksum must catch it.
				cfg.Mode = MECOM
				p.corrupt.Store(3 << 20)
			}
			// One live round, then a stop-and-copy of the whole hot set
			// at 16 MiB/s: long enough to be caught in either phase.
			m, err := Outgoing(src, p.uri, cfg)
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for tc.how != "corrupt" {
				info := m.Info()
				if info.Status == tc.phase && (tc.phase != StatusActive || p.forward.Load() > 4<<20) {
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
			if st, _ := src.State(); st != vmm.StateRunning {
				t.Fatalf("source is %s after the failed migration", st)
			}
			s, _ := src.GuestStatus()
			waitProgress(t, src, s.TotalProgress())
			p.stall.Store(false)
			p.cut()
			<-d.done
			if d.err == nil {
				t.Fatal("destination reported success")
			}
			if st, _ := dst.State(); st != vmm.StatePrelaunch {
				t.Fatalf("destination is %s, want never started", st)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	testutil.RequiresKVM(t)
	src := newGuest(t, testMemory, "hotset", true)
	dst := newGuest(t, testMemory, "hotset", false)
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
	if st, _ := src.State(); st != vmm.StateRunning {
		t.Fatalf("source is %s after cancel", st)
	}
	p.cut()
	<-d.done
	if d.err == nil {
		t.Fatal("destination reported success for a cancelled migration")
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
	// Ties at the top: the cut admits all of them, send stops at the budget.
	p := &predictive{prob: []float32{1, 1, 1, 1}, cut: 1, budget: 2}
	deferred := 0
	for gfn := range uint64(4) {
		if !p.send(gfn) {
			deferred++
		}
	}
	if deferred != 2 {
		t.Errorf("deferred %d of 4 equally likely pages with a budget of 2", deferred)
	}
}

// TestMigrateThrottle: on a link too slow for the hot set ever to fit the
// downtime limit, plain pre-copy runs into its round cap, while throttle
// slows the vCPUs until it fits, finishes within the downtime limit, and
// lifts the throttle afterwards.
func TestMigrateThrottle(t *testing.T) {
	testutil.RequiresKVM(t)
	const workload = "hotset:hot=2048,p=0.9"
	run := func(mode string, rounds int) (Info, *vmm.VM, *vmm.VM) {
		src := newGuest(t, testMemory, workload, true)
		dst := newGuest(t, testMemory, workload, false)
		d := listenDestination(t, dst, ReceiveConfig{})
		m, err := Outgoing(src, d.uri, Config{Mode: mode, MaxBandwidth: 16 << 20, MaxRounds: rounds})
		if err != nil {
			t.Fatal(err)
		}
		info, err := m.Wait()
		if err != nil {
			t.Fatal(err)
		}
		<-d.done
		if d.err != nil {
			t.Fatal(d.err)
		}
		t.Logf("%s: total %d ms, downtime %d ms, %.1f MiB, rounds %v, throttle %d%%, deferral off after round %d, stop: %s", mode,
			info.TotalTime, info.Downtime, float64(info.RAM.Transferred)/(1<<20), info.Pagecast.RoundPages, info.CPUThrottlePercentage,
			info.Pagecast.DeferralOff, info.Pagecast.StopReason)
		return info, src, dst
	}
	pre, _, _ := run(ModePrecopy, 6)
	if !strings.Contains(pre.Pagecast.StopReason, "round cap") {
		t.Fatalf("precopy converged (%s): the workload is too light for this test", pre.Pagecast.StopReason)
	}
	// Predictive cannot defer a hot set bigger than its budget; once its
	// rounds stop shrinking it must give deferral up rather than hold the
	// migration back.
	if pred, _, _ := run(ModePredictive, 6); strings.Contains(pred.Pagecast.StopReason, "round cap") && pred.Pagecast.DeferralOff == 0 {
		t.Errorf("predictive ran into the round cap still deferring")
	}
	thr, src, dst := run(ModeThrottle, 6)
	if strings.Contains(thr.Pagecast.StopReason, "round cap") {
		t.Errorf("throttle hit the round cap too: %s", thr.Pagecast.StopReason)
	}
	if thr.CPUThrottlePercentage == 0 {
		t.Error("throttle mode never throttled")
	}
	if thr.Downtime > DefaultDowntimeLimit.Milliseconds() {
		t.Errorf("downtime %d ms over the %v limit", thr.Downtime, DefaultDowntimeLimit)
	}
	if src.Throttle() != 0 || dst.Throttle() != 0 {
		t.Errorf("throttle left on: source %d%%, destination %d%%", src.Throttle(), dst.Throttle())
	}
	s, _ := dst.GuestStatus()
	waitProgress(t, dst, s.TotalProgress())
}

// TestMigrateModes checks memory equality, independently of the
// protocol's checksums, for the modes the tests above do not.
func TestMigrateModes(t *testing.T) {
	for _, mode := range []string{MECOM, ModePredictive + "+" + MECOM, ModeThrottle, ModeThrottle + "+" + MECOM} {
		t.Run(mode, func(t *testing.T) {
			info := migrateAndCheck(t, mode, 32<<20)
			if info.Pagecast.Mode != mode {
				t.Errorf("mode %q", info.Pagecast.Mode)
			}
		})
	}
}
