package bench

import (
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/vmm"
)

const (
	benchMemory = 64 << 20
	rateWindow  = 3 * time.Second
)

// BenchmarkGuestDirtyRate compares how fast the same guest image and
// workload dirty memory under pagecast's monitor and under QEMU, on the same
// KVM: writes per second from the guest's own progress counter (a word or a
// whole page each, as the workload says; a page written twice counts
// twice: not distinct pages, walk 162). Without KVM pagecast's monitor
// cannot run; QEMU then runs the guest under TCG and only its rate is
// reported, as qemu-tcg-writes/s.
func BenchmarkGuestDirtyRate(b *testing.B) {
	for _, workload := range []string{"sweep", "sweep:write=page", "hotset"} {
		b.Run(workload, func(b *testing.B) {
			testutil.RequiresQEMU(b)
			w, err := guest.ParseWorkload(workload)
			if err != nil {
				b.Fatal(err)
			}
			kvm := qemu.KVMUsable() == nil
			var pc, qm float64
			var accel string
			for range b.N {
				if kvm {
					pc += pagecastRate(b, w)
				}
				var r float64
				r, accel = qemuRate(b, w)
				qm += r
			}
			pc, qm = pc/float64(b.N), qm/float64(b.N)
			if accel == qemu.AccelTCG {
				b.ReportMetric(qm, "qemu-tcg-writes/s")
			} else {
				b.ReportMetric(qm, "qemu-writes/s")
			}
			if kvm {
				b.ReportMetric(pc, "pagecast-writes/s")
				b.ReportMetric(pc/qm, "pagecast/qemu")
			} else {
				b.Logf("%s: pagecast's monitor not run, QEMU under TCG only", testutil.NeedKVM)
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// progress reads the guest's progress counter.
func progress(b *testing.B, status func() (guest.Status, error)) uint64 {
	b.Helper()
	s, err := status()
	if err != nil {
		b.Fatal(err)
	}
	return s.TotalProgress()
}

// waitProgress waits until the guest has begun writing.
func waitProgress(b *testing.B, status func() (guest.Status, error)) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for progress(b, status) == 0 {
		if time.Now().After(deadline) {
			b.Fatal("guest made no progress in 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rate samples the guest's progress over rateWindow once it is running.
func rate(b *testing.B, status func() (guest.Status, error)) float64 {
	b.Helper()
	waitProgress(b, status)
	p0, t0 := progress(b, status), time.Now()
	time.Sleep(rateWindow)
	p1, t1 := progress(b, status), time.Now()
	return float64(p1-p0) / t1.Sub(t0).Seconds()
}

func pagecastRate(b *testing.B, w guest.Workload) float64 {
	vm, err := vmm.New(vmm.Config{MemoryBytes: benchMemory, Cmdline: w.Cmdline(1)})
	if err != nil {
		b.Fatal(err)
	}
	defer vm.Close()
	guest.FillArena(vm.Memory(), guest.DefaultMix, 1)
	if err := vm.Start(); err != nil {
		b.Fatal(err)
	}
	return rate(b, vm.GuestStatus)
}

// qemuRate is the guest's rate under QEMU, and the accelerator QEMU ran it
// with.
func qemuRate(b *testing.B, w guest.Workload) (float64, string) {
	vm, err := qemu.Start(qemu.Options{MemoryBytes: benchMemory, Cmdline: w.Cmdline(1), Seed: 1, Accel: testutil.QEMUAccel()})
	if err != nil {
		b.Fatal(err)
	}
	defer vm.Close()
	if _, err := vm.WaitBanner(30 * time.Second); err != nil {
		b.Fatal(err)
	}
	return rate(b, vm.GuestStatus), vm.Accel()
}
