package simulate_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/trace"
	"github.com/pagecast/pagecast/vmm"
)

// agreeWorkload is the live guest's: a hot set that pre-copy at
// agreeBandwidth cannot send within one round, so that rounds, deferral
// and throttle all have something to do.
const (
	agreeWorkload  = "hotset:hot=4096,p=0.95,delay=25000"
	agreeMemory    = 64 << 20
	agreeBandwidth = 32 << 20
	agreeEpoch     = 100 * time.Millisecond
	agreeEpochs    = 40
)

// TestAgreesWithLive records a real VM (QEMU under TCG, pagecast's
// guest) with pagecast's dirty hook, migrates VMs running the same
// workload live with pagecast's engine in each mode it runs on QEMU, and
// simulates each mode on the recording and compares bytes and rounds (see
// below for the bounds and why). (tsmc needs pagecast's own monitor as
// destination, which needs /dev/kvm: TestAgreesWithLiveTSMC.)
func TestAgreesWithLive(t *testing.T) {
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	if raceDetector {
		t.Skip("compares with live migrations' timing, which the race detector distorts; make test runs it without")
	}
	cfg := migrator.Config{MaxBandwidth: agreeBandwidth, MaxRounds: 8, TargetRound: 3}
	for _, mode := range []string{migrator.ModePrecopy, migrator.ModePredictive, migrator.ModeThrottle, migrator.MECOM,
		migrator.ModePredictive + "+" + migrator.MECOM} {
		t.Run(mode, func(t *testing.T) {
			// Record the guest's writes during its live migration, then
			// simulate the migration on that recording.
			src := startSource(t)
			mix := simulate.MeasureMix(src.Memory(), 1, nil)
			rec := &recorder{Guest: src}
			var before []trace.Epoch
			if mode == migrator.ModeThrottle {
				// A throttled guest's writes are those of a slowed
				// guest, which the simulation slows again: record
				// this one at full speed, just before.
				before = record(t, src)
			}
			cfg := cfg
			cfg.Mode = mode
			live := migrateLive(t, rec, cfg)
			epochs := rec.epochs(agreeEpoch)
			if before != nil {
				epochs = before
			}
			w := recording(t, epochs)
			// The live source shares two cores with the TCG guest and
			// moves less than the cap: simulate the link it achieved.
			achieved := achievedRate(t, live)
			// What the guest writes, as it stands in the paused source.
			written := writtenMix(src.Memory(), epochs)
			bw := min(achieved, agreeBandwidth)
			if strings.HasSuffix(mode, migrator.MECOM) {
				// Compression's time is charged by the simulation
				// itself (mecom.Encoder.BatchCPU).
				bw = agreeBandwidth
			}
			sim := simulate.Run(context.Background(), simulate.Options{Workload: w, Bandwidth: bw,
				MaxRounds: cfg.MaxRounds, TargetRound: cfg.TargetRound, Content: mix, Written: written}, mode)
			if sim.Err != nil {
				t.Fatal(sim.Err)
			}
			l, s := live, sim.Info
			t.Logf("content %s, written %s, %d epochs recorded, %d pages written an epoch", mix, written, len(epochs), pagesWritten(epochs)/uint64(len(epochs)))
			t.Logf("live:      %6.2f MiB, %d rounds %v, %4d ms, downtime %3d ms, deferred %d, throttle %d%%",
				mib(l.RAM.Transferred), l.Pagecast.Round, l.Pagecast.RoundPages, l.TotalTime, l.Downtime, l.Pagecast.DeferredAll, l.CPUThrottlePercentage)
			t.Logf("simulated: %6.2f MiB, %d rounds %v, %4d ms, downtime %3d ms, deferred %d, throttle %d%%",
				mib(s.RAM.Transferred), s.Pagecast.Round, s.Pagecast.RoundPages, s.TotalTime, s.Downtime, s.Pagecast.DeferredAll, s.CPUThrottlePercentage)
			// Pre-copy's rounds follow from the writes and the link
			// alone: it must agree within 10% and a round. The other
			// modes decide by timings that CPU contention on this
			// two-core machine moves from run to run — when deferral
			// stops paying, how hard to throttle, which codec pays
			// (MECOM also competes with the TCG guest for the cores):
			// over five runs they agreed within 1-13% (throttle),
			// 1-18% (predictive, one run 51%) and 1-36% (MECOM modes),
			// the live figures themselves spreading as much (live mecom
			// 30.8 to 61.4 MiB). They must agree within a factor of two.
			e := relErr(s.RAM.Transferred, l.RAM.Transferred)
			t.Logf("bytes %.1f%% apart, rounds %d and %d; guest slowed %.1f%% live (throttle %d ms), %.1f%% simulated (throttle %d ms)", 100*e, s.Pagecast.Round, l.Pagecast.Round,
				100*l.GuestSlowdown(), l.Pagecast.ThrottleTime, 100*s.GuestSlowdown(), s.Pagecast.ThrottleTime)
			if mode == migrator.ModePrecopy {
				if e > 0.10 {
					t.Errorf("bytes: simulated %.2f MiB, live %.2f MiB: %.0f%% apart, over 10%%", mib(s.RAM.Transferred), mib(l.RAM.Transferred), 100*e)
				}
				if d := s.Pagecast.Round - l.Pagecast.Round; d < -1 || d > 1 {
					t.Errorf("rounds: simulated %d, live %d", s.Pagecast.Round, l.Pagecast.Round)
				}
			} else if r := float64(s.RAM.Transferred) / float64(l.RAM.Transferred); r < 0.5 || r > 2 {
				t.Errorf("bytes: simulated %.2f MiB, live %.2f MiB: %.2f×", mib(s.RAM.Transferred), mib(l.RAM.Transferred), r)
			}
			// The vCPU time the throttle withheld (2026-12-02: 475 ms
			// live, 361 ms simulated), within a factor of two.
			if mode == migrator.ModeThrottle {
				if r := float64(s.Pagecast.ThrottleTime) / float64(max(l.Pagecast.ThrottleTime, 1)); r < 0.5 || r > 2 {
					t.Errorf("throttle-time: simulated %d ms, live %d ms: %.2f×", s.Pagecast.ThrottleTime, l.Pagecast.ThrottleTime, r)
				}
			}
		})
	}
}

// recording is the workload of epochs recorded from agreeMemory's guest.
func recording(t *testing.T, epochs []trace.Epoch) simulate.Workload {
	return recordingOf(t, agreeMemory, epochs)
}

// recordingOf is recording for a guest of memory bytes.
func recordingOf(t *testing.T, memory uint64, epochs []trace.Epoch) simulate.Workload {
	w, err := simulate.NewTrace("recorded", trace.Meta{MemoryBytes: memory, PageSize: 4096, Epoch: agreeEpoch}, epochs)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// achievedRate is the bytes a second a live migration moved while active.
func achievedRate(t *testing.T, live migrator.Info) uint64 {
	active := time.Duration(live.TotalTime-live.SetupTime) * time.Millisecond
	achieved := uint64(float64(live.RAM.Transferred) / active.Seconds())
	t.Logf("the live link moved %.1f MiB/s of the %d MiB/s cap", mib(achieved), agreeBandwidth>>20)
	return achieved
}

// writtenMix classifies the pages written in epochs.
func writtenMix(mem []byte, epochs []trace.Epoch) simulate.Mix {
	seen := map[uint64]bool{}
	var pages []byte
	for _, e := range epochs {
		for _, p := range e.Pages {
			if !seen[p] {
				seen[p] = true
				pages = append(pages, mem[p*4096:(p+1)*4096]...)
			}
		}
	}
	return simulate.MeasureMix(pages, 1, nil)
}

func pagesWritten(epochs []trace.Epoch) uint64 {
	var n uint64
	for _, e := range epochs {
		n += uint64(len(e.Pages))
	}
	return n
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func relErr(got, want uint64) float64 {
	return math.Abs(float64(got)-float64(want)) / float64(want)
}

func options(t *testing.T) qemu.Options {
	w, err := guest.ParseWorkload(agreeWorkload)
	if err != nil {
		t.Fatal(err)
	}
	// TCG on every machine: the bounds below were measured there, and
	// where /dev/kvm emulates the guest's instructions (a nested PVM
	// host) the guest writes 46 times a second, not 33 000, and leaves
	// no migration anything to do.
	return qemu.Options{MemoryBytes: agreeMemory, Cmdline: w.Cmdline(1), Accel: qemu.AccelTCG}
}

func startSource(t *testing.T) *qemuguest.Source {
	src, err := qemuguest.StartSource(options(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	waitWrites(t, src)
	return src
}

// waitWrites waits for the guest's first harvest that holds pages: it
// writes once it has booted.
func waitWrites(t *testing.T, src *qemuguest.Source) {
	t.Helper()
	log, err := src.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	for deadline := time.Now().Add(30 * time.Second); ; {
		time.Sleep(agreeEpoch)
		h, err := log.Harvest()
		if err != nil {
			t.Fatal(err)
		}
		if h.Count() > 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the guest wrote nothing in 30 s")
		}
	}
}

// recorder is a guest whose dirty log keeps what the engine harvests,
// and when: the guest's writes during its own migration.
type recorder struct {
	migrator.Guest
	start    time.Time
	harvests []harvest
}

type harvest struct {
	at    time.Duration
	pages []uint64
}

func (r *recorder) StartDirtyLog() (migrator.DirtyLog, error) {
	log, err := r.Guest.StartDirtyLog()
	r.start = time.Now()
	return &recorderLog{DirtyLog: log, r: r}, err
}

type recorderLog struct {
	migrator.DirtyLog
	r *recorder
}

func (l *recorderLog) Harvest() (*bitmap.Bitmap, error) {
	h, err := l.DirtyLog.Harvest()
	if err == nil {
		l.r.harvests = append(l.r.harvests, harvest{at: time.Since(l.r.start), pages: h.List()})
	}
	return h, err
}

// epochs puts the harvests into epochs of length epoch, by when each was
// taken.
func (r *recorder) epochs(epoch time.Duration) []trace.Epoch {
	var out []trace.Epoch
	var last time.Duration
	for _, h := range r.harvests {
		// The pages were written since the harvest before: put them in
		// the epoch of the middle of that stretch.
		i := uint64((last + h.at) / 2 / epoch)
		last = h.at
		if len(out) == 0 || out[len(out)-1].Index != i {
			out = append(out, trace.Epoch{Index: i})
		}
		e := &out[len(out)-1]
		e.Pages = append(e.Pages, h.pages...)
		slices.Sort(e.Pages)
		e.Pages = slices.Compact(e.Pages)
	}
	if len(out) > 0 && out[0].Index != 0 {
		out = append([]trace.Epoch{{Index: 0}}, out...)
	}
	return out
}

// record harvests a running guest's dirty log every epoch for 4 s, as
// pagecast profile does.
func record(t *testing.T, src *qemuguest.Source) []trace.Epoch {
	log, err := src.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	var epochs []trace.Epoch
	next := time.Now()
	for i := range agreeEpochs {
		next = next.Add(agreeEpoch)
		time.Sleep(time.Until(next))
		h, err := log.Harvest()
		if err != nil {
			t.Fatal(err)
		}
		epochs = append(epochs, trace.Epoch{Index: uint64(i), Pages: h.List()})
	}
	return epochs
}

// migrateLive migrates src to a fresh destination with cfg.
func migrateLive(t *testing.T, src migrator.Guest, cfg migrator.Config) migrator.Info {
	dst, err := qemuguest.StartDest(options(t))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	return migrateTo(t, src, dst, cfg)
}

// TestAgreesWithLiveTSMC does for tsmc what TestAgreesWithLive does for
// the other modes, on pagecast's own KVM monitor, the destination tsmc
// needs: the guest's writes recorded during its live migration (stage 1's
// harvests; stage 3 runs at the destination, whose writes no source sees),
// then tsmc simulated on them. Its bytes follow from the writes and the
// link alone, as pre-copy's do: stage 1 sends every page once, stage 3
// what was written meanwhile.
func TestAgreesWithLiveTSMC(t *testing.T) {
	testutil.RequiresKVM(t)
	if testing.Short() {
		t.Skip("boots two VMs")
	}
	if raceDetector {
		t.Skip("compares with a live migration's timing, which the race detector distorts; make test runs it without")
	}
	// On KVM the guest needs no delay to write at the pace of
	// agreeWorkload's under TCG (some 40 000 writes a second).
	const workload = "hotset:hot=4096,p=0.95"
	src := startOwn(t, workload)
	dst := startOwn(t, workload)
	guest.FillArena(src.Memory(), guest.DefaultMix, 1)
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if st, err := src.GuestStatus(); err == nil && st.TotalProgress() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the guest did not start writing in 20 s")
		}
	}
	time.Sleep(time.Second) // past its first sweep of the arena
	mix := simulate.MeasureMix(src.Memory(), 1, nil)
	rec := &recorder{Guest: src.Migratable()}
	cfg := migrator.Config{Mode: migrator.ModeTSMC, MaxBandwidth: agreeBandwidth}
	live := migrateTo(t, rec, dst.Migratable(), cfg)
	epochs := rec.epochs(agreeEpoch)
	w := recording(t, epochs)
	achieved := achievedRate(t, live)
	written := writtenMix(src.Memory(), epochs)
	sim := simulate.Run(context.Background(), simulate.Options{Workload: w, Bandwidth: min(achieved, agreeBandwidth),
		Content: mix, Written: written, VCPUs: live.Pagecast.VCPUs}, migrator.ModeTSMC)
	if sim.Err != nil {
		t.Fatal(sim.Err)
	}
	l, s := live, sim.Info
	t.Logf("content %s, written %s, %d epochs recorded, %d pages written an epoch", mix, written, len(epochs), pagesWritten(epochs)/uint64(max(len(epochs), 1)))
	t.Logf("live:      %6.2f MiB, pages %v, %4d ms, downtime %3d ms, pulled %d",
		mib(l.RAM.Transferred), l.Pagecast.RoundPages, l.TotalTime, l.Downtime, l.RAM.PostcopyRequests)
	t.Logf("simulated: %6.2f MiB, pages %v, %4d ms, downtime %3d ms, pulled %d",
		mib(s.RAM.Transferred), s.Pagecast.RoundPages, s.TotalTime, s.Downtime, s.RAM.PostcopyRequests)
	e := relErr(s.RAM.Transferred, l.RAM.Transferred)
	t.Logf("bytes %.1f%% apart; guest slowed %.1f%% live (faults %d ms), %.1f%% simulated (faults %d ms)", 100*e,
		100*l.GuestSlowdown(), l.Pagecast.FaultTime, 100*s.GuestSlowdown(), s.Pagecast.FaultTime)
	if e > 0.10 {
		t.Errorf("bytes: simulated %.2f MiB, live %.2f MiB: %.0f%% apart, over 10%%", mib(s.RAM.Transferred), mib(l.RAM.Transferred), 100*e)
	}
	// A live vCPU waits for each page it faults on, so the pages pulled
	// are about stage 3's time over a fault's wait, not every page the
	// guest touches before the push reaches it (over four runs on
	// 2026-12-02: live 130-136, simulated 166-168; simulated 3 742-4 095
	// when every touch was a pull). Within a factor of two.
	if r := float64(s.RAM.PostcopyRequests) / float64(max(l.RAM.PostcopyRequests, 1)); r < 0.5 || r > 2 {
		t.Errorf("pulled: simulated %d pages, live %d: %.2f×", s.RAM.PostcopyRequests, l.RAM.PostcopyRequests, r)
	}
	// And the vCPU time those faults cost (2026-12-02: 436 ms live, 645
	// ms simulated: a live request arrives during a push, not as it
	// begins), within a factor of two.
	if r := float64(s.Pagecast.FaultTime) / float64(max(l.Pagecast.FaultTime, 1)); r < 0.5 || r > 2 {
		t.Errorf("fault-time: simulated %d ms, live %d ms: %.2f×", s.Pagecast.FaultTime, l.Pagecast.FaultTime, r)
	}
}

// TestAgreesWithLiveSlowdown: the slowdown the live engine counts
// (throttle-time, fault-time) against the guest's own: the work its
// writer did over the migration's running time, against what it did a
// second of its vCPU's time a moment before (a second of the wall clock
// holds less of that on a busy host: with the pace by the wall clock, 5 of
// 6 runs on 2026-12-03 failed beside other tests, and 1 of 3 alone, the
// guest seeming to speed up under the throttle). The guest's count also holds what the
// migration costs it besides, which the engine does not count: dirty
// logging, and the engine's and the destination's CPU beside the vCPU on
// two cores. On 2026-12-02 plain pre-copy, which the engine counts as
// nothing, slowed it 6.0-6.1% on an idle machine; by the guest's count
// and the engine's, throttle 16.8% and 16.1%, 17.9% and 15.8% there, and
// 19.5-33.4% against 12.6-15.6% with other work on the machine; tsmc
// 13.4% and 19.7%, 22.9% and 19.0%, and 22.7-38.5% against 18.5-18.8%.
// So the engine's count is what the migration withholds by design, a
// lower bound of what the guest feels: it must not exceed the guest's
// own by more than 5 points.
func TestAgreesWithLiveSlowdown(t *testing.T) {
	testutil.RequiresKVM(t)
	if testing.Short() {
		t.Skip("boots four VMs")
	}
	if raceDetector {
		t.Skip("compares with a live guest's pace, which the race detector distorts; make test runs it without")
	}
	for _, mode := range []string{migrator.ModeThrottle, migrator.ModeTSMC} {
		t.Run(mode, func(t *testing.T) {
			// A guest whose pace before and after differ by more than
			// a tenth was measured on a host slowed meanwhile (a CI run
			// on 2026-12-03: 34 442 and 38 364 writes a vCPU second,
			// where 45-50 k is usual, and the guest's count said 1.1%
			// against the engine's 12.6%): its count is no reference,
			// and the pair is measured once more.
			for attempt := 1; ; attempt++ {
				msg, noisy := agreeSlowdown(t, mode)
				if msg == "" {
					return
				}
				if !noisy || attempt == 2 {
					t.Error(msg)
					return
				}
				t.Logf("%s; the guest's pace moved by more than a tenth, so measuring again", msg)
			}
		})
	}
}

// agreeSlowdown migrates a guest on pagecast's own monitor in mode and
// compares the engine's count of its slowdown with the guest's own work:
// "" where they agree, else why not, and whether the guest's pace before
// and after the migration differed by more than a tenth.
func agreeSlowdown(t *testing.T, mode string) (msg string, noisy bool) {
	const workload = "hotset:hot=4096,p=0.95"
	src, dst := startOwn(t, workload), startOwn(t, workload)
	guest.FillArena(src.Memory(), guest.DefaultMix, 1)
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	progress := func(vm *vmm.VM) uint64 {
		st, err := vm.GuestStatus()
		if err != nil {
			t.Fatal(err)
		}
		return st.TotalProgress()
	}
	// The guest's pace is its writes a second of its vCPU's
	// time on a CPU: a second of the wall clock holds less of it
	// on a busy host (other tests, or the host's other guests,
	// on the two cores), by as much as half, which made the
	// guest seem to speed up under the throttle.
	vcpuTime := func(vm *vmm.VM) time.Duration {
		var sum time.Duration
		for _, tid := range vm.VCPUThreads() {
			sum += threadCPUTime(t, tid)
		}
		return sum
	}
	paceOver := func(vm *vmm.VM, d time.Duration) (perCPU, perWall float64) {
		a, c, at := progress(vm), vcpuTime(vm), time.Now()
		time.Sleep(d)
		did := float64(progress(vm) - a)
		return did / (vcpuTime(vm) - c).Seconds(), did / time.Since(at).Seconds()
	}
	// Its first sweep of the arena faults memory in and goes
	// slower: wait until two half seconds agree within 5%.
	time.Sleep(time.Second)
	for p, i := 0.0, 0; i < 10; i++ {
		q, _ := paceOver(src, 500*time.Millisecond)
		if math.Abs(q-p) <= 0.05*max(p, q) {
			break
		}
		p = q
	}
	// The fastest of three seconds: other work only slows a window (a
	// CI run on 2026-12-03: 44 283 and 44 741 writes a vCPU second
	// before and after, where 45-50 k is usual, and the guest's count
	// said 9.4% slowed against the engine's 15.3%: 125 177 writes in
	// the 3.09 s it ran, more than 44 741 a second allows with the
	// 471 ms the throttle withheld).
	var pace, wallPace float64
	for range 3 {
		if p, w := paceOver(src, time.Second); p > pace {
			pace, wallPace = p, w
		}
	}
	before := progress(src)
	info := migrateTo(t, src.Migratable(), dst.Migratable(), migrator.Config{Mode: mode, MaxBandwidth: agreeBandwidth, MaxRounds: 8, TargetRound: 3})
	did := float64(progress(dst) - before) // the counter is in guest memory: the destination's goes on from the source's
	// The pace again, on the destination after the migration:
	// the guest's true pace is at least the faster of the two,
	// as other work only slows a window. (A CI run on
	// 2026-12-03 measured 44 756 writes a vCPU second before a
	// throttle migration and the guest's count then said 8.7%
	// slowed where the engine counted 15.8%; the usual is the
	// guest's count at or above the engine's.)
	after, _ := paceOver(dst, time.Second)
	ref := max(pace, after)
	running := time.Duration(info.TotalTime-info.Downtime) * time.Millisecond
	guestSays := 1 - did/(ref*running.Seconds())
	t.Logf("%s: %d ms, downtime %d ms; the guest did %.0f writes where it did %.0f a second of its vCPU's time before (%.0f a second of the wall clock) and %.0f after: slowed %.1f%% by its count, %.1f%% by the engine's (throttle %d ms, faults %d ms, %d pages pulled)",
		mode, info.TotalTime, info.Downtime, did, pace, wallPace, after, 100*guestSays, 100*info.GuestSlowdown(), info.Pagecast.ThrottleTime, info.Pagecast.FaultTime, info.RAM.PostcopyRequests)
	if info.GuestSlowdown() <= 0 || info.GuestSlowdown() > guestSays+0.05 {
		return fmt.Sprintf("%s: the engine counts the guest slowed %.1f%%, the guest's own work says %.1f%%", mode, 100*info.GuestSlowdown(), 100*guestSays),
			math.Abs(pace-after) > 0.1*max(pace, after)
	}
	return "", false
}

// startOwn makes a VM on pagecast's own KVM monitor, not yet started,
// that will run workload.
func startOwn(t *testing.T, workload string) *vmm.VM {
	w, err := guest.ParseWorkload(workload)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := vmm.New(vmm.Config{MemoryBytes: agreeMemory, Cmdline: w.Cmdline(1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

// migrateTo migrates src to dst with cfg, dst's memory verified.
func migrateTo(t *testing.T, src migrator.Guest, dst migrator.Destination, cfg migrator.Config) migrator.Info {
	l, err := migrator.Listen("tcp:127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := migrator.ReceiveOnce(l, dst, migrator.ReceiveConfig{})
	m, err := migrator.Outgoing(src, "tcp:"+l.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(fmt.Errorf("destination: %w", err))
	}
	if !info.Pagecast.Verified {
		t.Fatal("the destination did not verify its memory")
	}
	return info
}

// threadCPUTime is the time thread tid of this process has run on a CPU
// (/proc/self/task/TID/schedstat).
func threadCPUTime(t *testing.T, tid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", tid))
	if err != nil {
		t.Fatalf("vCPU thread %d: %v", tid, err)
	}
	var ns int64
	if _, err := fmt.Sscan(string(b), &ns); err != nil {
		t.Fatalf("vCPU thread %d's schedstat %q: %v", tid, b, err)
	}
	return time.Duration(ns)
}
