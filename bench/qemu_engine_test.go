package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
)

// QEMU-engine scenarios: the same QEMU guest (64 MiB, default content mix,
// pagecast's plugin loaded in every row as pagecast's engine needs it under
// TCG, so the guest runs alike whichever engine moves it) and the same
// 32 MiB/s link, which moves 9.6 MiB (2 458 pages) in the 300 ms downtime
// limit. delay keeps the TCG guest at a moderate write rate (25000: about
// 25–60 k writes/s here, depending on the host's load).
//
//   - converging: an 8 MiB hot set written with p=0.99; the few scattered
//     writes let any pre-copy stop after a round or two.
//   - hot-resent: a 6 MiB hot set, within what predictive may defer (80 %
//     of the link's downtime budget) but, with the scattered pages
//     (p=0.85) dirtied while it is sent, more than QEMU's threshold: QEMU
//     resends the hot set every pass.
//   - non-converging: a 16 MiB hot set, more than the link moves in the
//     downtime limit, written about 4× faster (delay 5000) so that every
//     round finds it rewritten: no pre-copy converges, however many rounds.
var qemuEngineScenarios = []struct {
	name     string
	workload string
}{
	{"converging", "hotset:hot=2048,p=0.99,delay=25000"},
	{"hot-resent", "hotset:hot=1536,p=0.85,delay=25000"},
	{"non-converging", "hotset:hot=4096,p=0.99,delay=5000"},
}

// Rows of BenchmarkQEMUEngine besides pagecast's modes.
const (
	rowQEMUPrecopy = "qemu-precopy"
	// tsmc on QEMU is QEMU's own post-copy (migrator.PlanQEMU): pagecast's
	// stage 3 cannot pull pages into QEMU's memory (qemuguest's doc).
	rowQEMUPostcopy = "tsmc=qemu-postcopy"
)

var qemuEngineRows = []string{rowQEMUPrecopy, migrator.ModePrecopy, migrator.ModePredictive,
	migrator.ModeThrottle, rowQEMUPostcopy, migrator.MECOM}

// qemuEngineResult is one migration of a QEMU guest, measured the same way
// whichever engine moved it.
type qemuEngineResult struct {
	bytes uint64
	// total: from the migrate command until the destination has it all
	// and runs the guest (QEMU: its incoming side reports completed).
	total time.Duration
	// pause: the guest's own view of the downtime, from its last write on
	// the source to its first on the destination (post-copy: until the
	// destination runs, as its memory cannot be read before the pages
	// are in). QEMU's own downtime stops once it has written the last
	// bytes into its socket, which can be up to a link-downtime's worth
	// before they arrive.
	pause       time.Duration
	qmpDowntime time.Duration // what query-migrate says
	rounds      int           // passes over memory, the stop-and-copy included (QEMU: dirty syncs - 1)
	converged   bool          // stopped because what was left fit the downtime limit, not at a round cap
	pace        float64       // the guest's writes/s during the migration over its rate just before
}

// BenchmarkQEMUEngine migrates the same QEMU guest with QEMU's own
// pre-copy and with pagecast's engine in each mode, one after the other in
// one run, over the same 32 MiB/s link with the same 300 ms downtime limit
// and round cap (modeRounds live rounds; QEMU: forced switch-over past that
// many dirty syncs, reported as not converged), and reports bytes on the
// wire, total time, downtime as the guest saw it (and as query-migrate
// said), rounds, whether it converged, the guest's pace, and bytes, time
// and downtime over QEMU pre-copy's. QEMU's pre-copy stream goes through a
// token bucket too (newLink), as QEMU lifts its own cap for the
// stop-and-copy.
func BenchmarkQEMUEngine(b *testing.B) {
	for _, sc := range qemuEngineScenarios {
		var base qemuEngineResult
		for _, row := range qemuEngineRows {
			b.Run(sc.name+"/"+row, func(b *testing.B) {
				testutil.RequiresQEMU(b)
				var r qemuEngineResult
				for range b.N {
					switch row {
					case rowQEMUPrecopy:
						r = migrateQEMUNative(b, sc.workload, migrator.ModePrecopy)
					case rowQEMUPostcopy:
						r = migrateQEMUNative(b, sc.workload, migrator.ModeTSMC)
					default:
						r = migrateQEMUEngine(b, sc.workload, row)
					}
				}
				if row == rowQEMUPrecopy {
					base = r
				}
				r.report(b, base)
			})
		}
	}
}

func (r qemuEngineResult) report(b *testing.B, base qemuEngineResult) {
	b.ReportMetric(float64(r.bytes)/(1<<20), "MiB")
	b.ReportMetric(float64(r.total.Milliseconds()), "total-ms")
	b.ReportMetric(float64(r.pause.Milliseconds()), "downtime-ms")
	b.ReportMetric(float64(r.qmpDowntime.Milliseconds()), "qmp-downtime-ms")
	b.ReportMetric(float64(r.rounds), "rounds")
	b.ReportMetric(bool01(r.converged), "converged")
	b.ReportMetric(r.pace, "guest-pace")
	var bytes, total, pause float64
	if base.bytes > 0 {
		bytes = float64(r.bytes) / float64(base.bytes)
		total, pause = ratio(r.total, base.total), ratio(r.pause, base.pause)
	}
	b.ReportMetric(bytes, "bytes/qemu")
	b.ReportMetric(total, "time/qemu")
	b.ReportMetric(pause, "downtime/qemu")
	b.ReportMetric(0, "ns/op")
}

func bool01(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// engineOptions is the QEMU both ends of every row run: the same image,
// memory, content and workload, under TCG on every machine. The scenarios'
// delays are sized for TCG; where /dev/kvm emulates the guest's
// instructions (a nested PVM host) the same guest wrote 51 times a second
// (hot-resent) and every scenario converged in two rounds, whatever the
// engine (measured 2026-12-01).
func engineOptions(b *testing.B, workload, incoming string) qemu.Options {
	w, err := guest.ParseWorkload(workload)
	if err != nil {
		b.Fatal(err)
	}
	return qemu.Options{MemoryBytes: migrateMemory, Cmdline: w.Cmdline(1), Seed: 1, Incoming: incoming, Accel: qemu.AccelTCG}
}

// startEngineQEMUs boots the source, waits until its workload is in its
// steady state, and boots the destination waiting with -incoming
// (incoming; "" for pagecast's engine, which restores the device state
// itself).
func startEngineQEMUs(b *testing.B, workload, incoming string) (*qemuguest.Source, *qemuguest.Dest) {
	src, err := qemuguest.StartSource(engineOptions(b, workload, ""))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() })
	dst, err := qemuguest.StartDest(engineOptions(b, workload, incoming))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dst.Close() })
	waitRunning(b, src.VM().GuestStatus)
	return src, dst
}

// baselineRate is the guest's write rate over a second, and its progress
// counter at the end of it.
func baselineRate(b *testing.B, v *qemu.VM) (rate float64, at uint64) {
	p0, t0 := progress(b, v.GuestStatus), time.Now()
	time.Sleep(time.Second)
	at = progress(b, v.GuestStatus)
	return float64(at-p0) / time.Since(t0).Seconds(), at
}

// migrateQEMUNative migrates with QEMU's own engine, planned as pagecast
// plans a mode for QEMU (precopy: plain pre-copy; tsmc: post-copy after
// the first pass), through the token-bucket link.
func migrateQEMUNative(b *testing.B, workload, mode string) qemuEngineResult {
	uri := freePort(b)
	src, dst := startEngineQEMUs(b, workload, uri)
	link := newLink(b, uri, migrateBandwidth)
	smon, dmon := src.VM().Monitor, dst.VM().Monitor
	plan, err := migrator.SetupQEMU(smon, dmon, migrator.Params{Mode: mode, MaxBandwidth: migrateBandwidth,
		DowntimeLimit: migrateDowntime, MaxRounds: modeRounds})
	if err != nil {
		b.Fatal(err)
	}
	baseline, before := baselineRate(b, src.VM())
	var w *pauseWatch
	if plan.Postcopy {
		// The destination's RAM is under userfaultfd until every page is
		// in: reading it here could fault in a page QEMU then cannot place.
		w = watchPause(b, src.VM(), nil, func() bool { _, st := dst.Waiting(); return st == "running" })
	} else {
		w = watchPause(b, src.VM(), dst.VM(), nil)
	}
	t0 := time.Now()
	if err := migrator.Migrate(smon, link); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), qemuGiveUp)
	defer cancel()
	info, err := migrator.WaitQEMU(ctx, smon, &plan, 10*time.Millisecond, nil)
	r := qemuEngineResult{qmpDowntime: time.Duration(info.Downtime) * time.Millisecond, converged: err == nil && !plan.Forced}
	if info.RAM != nil {
		r.bytes, r.rounds = info.RAM.Transferred, int(info.RAM.DirtySyncCount)-1
	}
	if err != nil {
		if ctx.Err() == nil {
			b.Fatal(err)
		}
		// Given up on and cancelled: the guest stays on the source.
		w.stop()
		r.total = time.Since(t0)
		b.Logf("%s: given up after %v (%d syncs, %.1f MiB): not converged", mode, qemuGiveUp, r.rounds+1, float64(r.bytes)/(1<<20))
		return r
	}
	pause, ok := w.wait(10 * time.Second)
	if !ok {
		b.Fatal("the guest did not run on the destination within 10 s of the migration's end")
	}
	// The destination has it all once its incoming side is completed.
	if err := incomingCompleted(dmon, 10*time.Second); err != nil {
		b.Fatalf("destination: %v", err)
	}
	r.total, r.pause = time.Since(t0), pause
	r.pace = float64(progress(b, dst.VM().GuestStatus)-before) / r.total.Seconds() / baseline
	b.Logf("%s: QEMU total %d ms, downtime %d ms, %d syncs, forced switch-over %v; guest %.0f writes/s before",
		mode, info.TotalTime, info.Downtime, r.rounds+1, plan.Forced, baseline)
	return r
}

// incomingCompleted polls a destination's query-migrate every 5 ms until
// its incoming side is completed, failing after within. Not
// migrator.Wait, which asks a completed migration again for its
// total-time for a second, and a destination's has none (walk 162: the
// QEMU rows' total was 1.1-1.4 s past the guest running on the
// destination, and pagecast's engine's rows were not).
func incomingCompleted(mon qmp.Monitor, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		info, err := migrator.Query(mon)
		switch {
		case err != nil:
			return err
		case info.Status == migrator.StatusCompleted:
			return nil
		case info.Status == migrator.StatusFailed || info.Status == migrator.StatusCancelled:
			return fmt.Errorf("incoming migration %s", info.Status)
		case time.Now().After(deadline):
			return fmt.Errorf("incoming migration still %q %v after the guest ran here", info.Status, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// migrateQEMUEngine migrates with pagecast's engine in mode: the pages by
// pagecast over its own 32 MiB/s link, the device state by QEMU.
func migrateQEMUEngine(b *testing.B, workload, mode string) qemuEngineResult {
	src, dst := startEngineQEMUs(b, workload, "")
	l, err := migrator.Listen("tcp:127.0.0.1:0", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	received := migrator.ReceiveOnce(l, dst, migrator.ReceiveConfig{})
	baseline, before := baselineRate(b, src.VM())
	w := watchPause(b, src.VM(), dst.VM(), nil)
	t0 := time.Now()
	m, err := migrator.Outgoing(src, "tcp:"+l.Addr().String(), migrator.Config{Mode: mode,
		MaxBandwidth: migrateBandwidth, DowntimeLimit: migrateDowntime, MaxRounds: modeRounds})
	if err != nil {
		b.Fatal(err)
	}
	info, err := m.Wait()
	if err != nil {
		b.Fatal(err)
	}
	if err := <-received; err != nil {
		b.Fatal(err)
	}
	pause, ok := w.wait(10 * time.Second)
	if !ok {
		b.Fatal("the guest did not run on the destination within 10 s of the migration's end")
	}
	x := info.Pagecast
	r := qemuEngineResult{bytes: info.RAM.Transferred, total: time.Since(t0), pause: pause,
		qmpDowntime: time.Duration(info.Downtime) * time.Millisecond, rounds: x.Round,
		converged: !strings.HasPrefix(x.StopReason, "round cap")}
	r.pace = float64(progress(b, dst.VM().GuestStatus)-before) / r.total.Seconds() / baseline
	var last uint64 // bytes sent in the stop-and-copy
	if n := len(x.RoundBytes); n > 0 {
		last = x.RoundBytes[n-1]
	}
	b.Logf("%s: engine total %d ms, downtime %d ms (%.1f MiB sent in it), pages per round %v, deferred %d, throttle %d%%, stopped: %s; guest %.0f writes/s before",
		mode, info.TotalTime, info.Downtime, float64(last)/(1<<20), x.RoundPages, x.DeferredAll,
		info.CPUThrottlePercentage, x.StopReason, baseline)
	return r
}

// pauseWatch measures the guest's pause at switch-over from its progress
// counter: the last time it moved on the source, and the first time it
// passed the source's count on the destination (or, without the
// destination's memory, the first time its QEMU runs).
type pauseWatch struct {
	quit     chan struct{}
	done     chan struct{}
	once     sync.Once
	srcLast  time.Time
	dstFirst time.Time
}

func watchPause(b *testing.B, src, dst *qemu.VM, dstRunning func() bool) *pauseWatch {
	w := &pauseWatch{quit: make(chan struct{}), done: make(chan struct{})}
	b.Cleanup(w.stop) // before the VMs close: cleanups run last first
	read := func(v *qemu.VM) uint64 {
		s, err := v.GuestStatus()
		if err != nil {
			return 0
		}
		return s.TotalProgress()
	}
	go func() {
		defer close(w.done)
		last, tick := read(src), 250*time.Microsecond
		w.srcLast = time.Now()
		if dst == nil {
			tick = 2 * time.Millisecond // a QMP query each
		}
		for {
			select {
			case <-w.quit:
				return
			default:
			}
			now := time.Now()
			if p := read(src); p != last {
				last, w.srcLast = p, now
			}
			switch {
			case dst != nil && read(dst) > last:
				w.dstFirst = now
				return
			case dst == nil && now.Sub(w.srcLast) > 5*time.Millisecond && dstRunning():
				w.dstFirst = now
				return
			}
			time.Sleep(tick)
		}
	}()
	return w
}

func (w *pauseWatch) stop() {
	w.once.Do(func() { close(w.quit) })
	<-w.done
}

// wait returns the pause once the guest runs on the destination, or false
// after timeout.
func (w *pauseWatch) wait(timeout time.Duration) (time.Duration, bool) {
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.stop()
	}
	if w.dstFirst.IsZero() {
		return 0, false
	}
	return w.dstFirst.Sub(w.srcLast), true
}
