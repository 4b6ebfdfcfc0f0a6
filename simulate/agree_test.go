package simulate_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
	"github.com/pagecast/pagecast/simulate"
	"github.com/pagecast/pagecast/trace"
)

// agreeWorkload is the live guest's: a hot set that pre-copy at
// agreeBandwidth cannot send within one round, so that rounds, deferral
// and throttle all have something to do.
const (
	agreeWorkload  = "hotset:hot=2048,p=0.95,delay=25000"
	agreeMemory    = 64 << 20
	agreeBandwidth = 32 << 20
	agreeEpoch     = 100 * time.Millisecond
	agreeEpochs    = 40
)

// TestAgreesWithLive records a real VM (QEMU, TCG without KVM, pagecast's
// guest) with pagecast's dirty hook, migrates VMs running the same
// workload live with pagecast's engine in each mode it runs on QEMU, and
// simulates each mode on the recording: bytes and rounds must agree
// within the model's stated error. (tsmc needs pagecast's own monitor as
// destination, which needs /dev/kvm.)
func TestAgreesWithLive(t *testing.T) {
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	rec, mix := record(t)
	w, err := simulate.NewTrace("recorded", trace.Meta{MemoryBytes: agreeMemory, PageSize: 4096, Epoch: agreeEpoch}, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("recorded %d epochs, content %s", len(rec), mix)
	cfg := migrator.Config{MaxBandwidth: agreeBandwidth, MaxRounds: 8, TargetRound: 3}
	for _, mode := range []string{migrator.ModePrecopy, migrator.ModePredictive, migrator.ModeThrottle, migrator.MECOM,
		migrator.ModePredictive + "+" + migrator.MECOM} {
		t.Run(mode, func(t *testing.T) {
			cfg := cfg
			cfg.Mode = mode
			live := migrateLive(t, cfg)
			sim := simulate.Run(context.Background(), simulate.Options{Workload: w, Bandwidth: agreeBandwidth,
				MaxRounds: cfg.MaxRounds, TargetRound: cfg.TargetRound, Content: mix}, mode)
			if sim.Err != nil {
				t.Fatal(sim.Err)
			}
			l, s := live, sim.Info
			t.Logf("live:      %6.2f MiB, %d rounds %v, %4d ms, downtime %3d ms, deferred %d, throttle %d%%",
				mib(l.RAM.Transferred), l.Pagecast.Round, l.Pagecast.RoundPages, l.TotalTime, l.Downtime, l.Pagecast.DeferredAll, l.CPUThrottlePercentage)
			t.Logf("simulated: %6.2f MiB, %d rounds %v, %4d ms, downtime %3d ms, deferred %d, throttle %d%%",
				mib(s.RAM.Transferred), s.Pagecast.Round, s.Pagecast.RoundPages, s.TotalTime, s.Downtime, s.Pagecast.DeferredAll, s.CPUThrottlePercentage)
			if e := relErr(s.RAM.Transferred, l.RAM.Transferred); e > 0.10 {
				t.Errorf("bytes: simulated %.2f MiB, live %.2f MiB: %.0f%% apart, over 10%%", mib(s.RAM.Transferred), mib(l.RAM.Transferred), 100*e)
			}
			if d := s.Pagecast.Round - l.Pagecast.Round; d < -1 || d > 1 {
				t.Errorf("rounds: simulated %d, live %d", s.Pagecast.Round, l.Pagecast.Round)
			}
		})
	}
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
	return qemu.Options{MemoryBytes: agreeMemory, Cmdline: w.Cmdline(1)}
}

func startSource(t *testing.T) *qemuguest.Source {
	src, err := qemuguest.StartSource(options(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	// The guest writes once it has booted: wait for its first harvest
	// that holds pages.
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
	return src
}

// record harvests a running guest's dirty log every epoch, as pagecast
// profile does, and measures its memory's content.
func record(t *testing.T) ([]trace.Epoch, simulate.Mix) {
	src := startSource(t)
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
	return epochs, simulate.MeasureMix(src.Memory(), 1)
}

// migrateLive migrates a fresh guest to a fresh destination with cfg.
func migrateLive(t *testing.T, cfg migrator.Config) migrator.Info {
	src := startSource(t)
	dst, err := qemuguest.StartDest(options(t))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	l, err := migrator.Listen("tcp:127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		l.Close()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = migrator.Receive(context.Background(), c, dst, migrator.ReceiveConfig{})
		done <- err
	}()
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
