package collector_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagecast/pagecast/bpf"
	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

// TestQEMU profiles a QEMU VM running the pagecast guest's sweep, under
// KVM with the eBPF programs (dirty ring on) and under TCG with the TCG
// plugin, and checks each epoch's arena pages against the pages the
// guest's own progress counter says it wrote: sweep writes arena page k
// mod N as its k-th write. The counter is read just before each epoch
// closes, so pages written in between may land one epoch later in the
// truth.
func TestQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	t.Run("kvm+ebpf", func(t *testing.T) {
		testutil.RequiresBPF(t)
		testutil.RequiresQEMUWithKVM(t)
		// The emulated KVM writes slowly: 40 spins between writes.
		testQEMUSweep(t, qemu.Options{Accel: qemu.AccelKVM, DirtyRingSize: 65536}, "sweep:delay=40", "tp_btf/kvm_dirty_ring_push")
	})
	t.Run("tcg+plugin", func(t *testing.T) {
		testutil.RequiresQEMU(t)
		dir := t.TempDir()
		so, err := tcg.WritePlugin(dir)
		if err != nil {
			t.Fatal(err)
		}
		// TCG writes ~3 M pages/s without a delay: slow it to a few
		// thousand pages an epoch, less than the arena.
		o := qemu.Options{Accel: qemu.AccelTCG, Plugin: tcg.PluginArg(so, filepath.Join(dir, "dirty.shm"), 128<<20/4096)}
		testQEMUSweep(t, o, "sweep:delay=100000", collector.HookTCG)
	})
}

// startGuestQEMU starts QEMU with o running the pagecast guest's workload
// on one vCPU, waits for its banner, and closes it when the test ends.
func startGuestQEMU(t *testing.T, o qemu.Options, workload string) *qemu.VM {
	t.Helper()
	w, err := guest.ParseWorkload(workload)
	if err != nil {
		t.Fatal(err)
	}
	o.Cmdline = w.Cmdline(1)
	vm, err := qemu.Start(o)
	if errors.Is(err, qemu.ErrNoQEMU) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if _, err := vm.WaitBanner(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	return vm
}

func testQEMUSweep(t *testing.T, o qemu.Options, workload, hook string) {
	o.MemoryBytes = 128 << 20
	vm := startGuestQEMU(t, o, workload)
	c, err := collector.New(collector.Config{QMP: vm.QMPPath, Epoch: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Target().Kind != "qemu" || c.Target().MemoryBytes != 128<<20 || c.Hook() != hook {
		t.Fatalf("target %+v hook %s, want hook %s", c.Target(), c.Hook(), hook)
	}
	progress := func() uint64 {
		s, err := vm.GuestStatus()
		if err != nil {
			t.Fatal(err)
		}
		return s.TotalProgress()
	}
	s, _ := vm.GuestStatus()
	first, n := uint64(s.ArenaFirstPage), uint64(s.ArenaPages)

	// The counter is read just before and just after each epoch switch;
	// writes between the two readings may fall in either epoch and are
	// left out of the comparison (and counted).
	// QEMU turns dirty logging on asynchronously after the dirty limit is
	// set: let the first epoch pass before comparing.
	time.Sleep(500 * time.Millisecond)
	a0 := progress()
	c.CloseEpoch()
	b0 := progress()
	var inter, union, boundary int
	var perEpoch []string
	prevAmbiguous := map[uint64]bool{}
	for k := a0 - 1; k < b0+1; k++ {
		prevAmbiguous[first+k%n] = true
	}
	for i := 0; i < 6; i++ {
		time.Sleep(500 * time.Millisecond)
		a1 := progress()
		t0 := time.Now()
		e, err := c.CloseEpoch()
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0).Round(time.Millisecond)
		b1 := progress()
		if b1-b0 >= n {
			t.Fatalf("sweep wrapped its %d-page arena within an epoch (%d writes)", n, b1-b0)
		}
		want, ambiguous := map[uint64]bool{}, map[uint64]bool{}
		// One more write each side: the guest bumps its counter and
		// writes the page as two stores, in either order to an observer.
		for k := a1 - 1; k < b1+1; k++ {
			ambiguous[first+k%n] = true
		}
		// Left out of both sides alike: a page written around either
		// switch may be in this epoch or its neighbour.
		for k := b0; k < a1; k++ {
			if p := first + k%n; !ambiguous[p] && !prevAmbiguous[p] {
				want[p] = true
			}
		}
		boundary += len(ambiguous)
		got := map[uint64]bool{}
		for _, p := range e.Pages {
			if p >= first && p < first+n && !ambiguous[p] && !prevAmbiguous[p] {
				got[p] = true
			}
		}
		both := countInter(got, want)
		inter += both
		union += len(got) + len(want) - both
		// For a failure's reading: pages the guest wrote that the epoch
		// lacks, and pages it has that the guest did not write then.
		perEpoch = append(perEpoch, fmt.Sprintf("%d missed/%d extra/%v", len(want)-both, len(got)-both, took))
		b0, prevAmbiguous = b1, ambiguous
	}
	agreement := float64(inter) / float64(union)
	st, _ := c.Stats()
	t.Logf("qemu sweep: %d pages in both of %d: agreement %.5f, %d pages written during epoch switches left out (hook %s); by epoch: %v; late %d, dropped %v",
		inter, union, agreement, boundary, c.Hook(), perEpoch, st.Late, st.Dropped)
	if inter < 5000 || agreement < 0.999 {
		t.Fatalf("agreement %.5f over %d pages, want ≥ 0.999 over at least 5000", agreement, inter)
	}
}

func countInter(got, want map[uint64]bool) int {
	n := 0
	for p := range got {
		if want[p] {
			n++
		}
	}
	return n
}

// TestRingIndices: with RingIndices, the eBPF programs follow a KVM QEMU's
// dirty ring: its push index moves with the guest's writes, each reset
// ioctl (about once a second, QEMU's dirty limit's period) begins a
// generation, and a reset in force (of a generation a later one has
// followed) comes to pass what was pushed before: what qemuguest's hold of
// pages on hardware virtualisation waits for.
func TestRingIndices(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresBPF(t)
	testutil.RequiresQEMUWithKVM(t)
	vm := startGuestQEMU(t, qemu.Options{Accel: qemu.AccelKVM, DirtyRingSize: 65536, MemoryBytes: 64 << 20}, "sweep:delay=40")
	c, err := collector.New(collector.Config{QMP: vm.QMPPath, Epoch: 100 * time.Millisecond, RingIndices: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rings := make([]bpf.RingIndex, bpf.MaxRings)
	read := func() (bpf.RingIndex, uint32) {
		t.Helper()
		gen, err := c.Profiler().RingIndices(rings)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rings[1:] {
			if r != (bpf.RingIndex{}) {
				t.Fatalf("a second ring's indices %+v for a one-vCPU guest", r)
			}
		}
		return rings[0], gen
	}
	time.Sleep(300 * time.Millisecond)
	first, gen0 := read()
	if first.Pushed == 0 {
		t.Fatalf("no push seen in 300 ms: %+v", first)
	}
	deadline := time.Now().Add(6 * time.Second)
	for {
		time.Sleep(100 * time.Millisecond)
		r, gen := read()
		inForce, known := r.Effective, r.EffectiveGen != 0
		if r.PendingGen != 0 && r.PendingGen < gen {
			inForce, known = r.Pending, true
		}
		if known && int32(inForce-uint32(first.Pushed)) >= 0 && int32(uint32(r.Pushed)-uint32(first.Pushed)) > 0 {
			t.Logf("pushed %d then %d; generation %d then %d, reset in force %d", first.Pushed, r.Pushed, gen0, gen, inForce)
			if r.Seq&1 != 0 || gen <= gen0 {
				t.Errorf("read %+v in generation %d (from %d)", r, gen, gen0)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("in 6 s no reset in force passed push index %d: now %+v, generation %d (from %d)", first.Pushed, r, gen, gen0)
		}
	}
}

// TestQEMULayout: the collector tracks the frames where QEMU put a q35
// machine's RAM: of 3 GiB, 2 GiB below 4 GiB and 1 GiB from 4 GiB up, so
// frames up to 5 GiB. (It took a pc's split, up to 4 GiB: the last GiB's
// writes were counted out of range.)
func TestQEMULayout(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresBPF(t)
	testutil.RequiresQEMUWithKVM(t)
	vm := startGuestQEMU(t, qemu.Options{Machine: "q35", MemoryBytes: 3 << 30, Mix: guest.Mix{Zero: 100}, Accel: qemu.AccelKVM, DirtyRingSize: 65536}, "idle")
	c, err := collector.New(collector.Config{QMP: vm.QMPPath, Epoch: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := c.Target().MaxPages(), uint64(5<<30/4096); got != want {
		t.Errorf("tracks %#x frames, want %#x (RAM up to 5 GiB): layout %x", got, want, c.Target().Layout.Ranges())
	}
	if p, ok := c.Target().RAMLayout().Page(4 << 30 / 4096); !ok || p != 2<<30/4096 {
		t.Errorf("the frame at 4 GiB is page %#x %v, want %#x (2 GiB into RAM)", p, ok, 2<<30/4096)
	}
}
