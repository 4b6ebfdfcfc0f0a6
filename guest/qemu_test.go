package guest_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/qemu"
)

// The guest image under QEMU, the reference monitor: it must boot from
// -kernel, print its banner and run its workload there too, under KVM where
// /dev/kvm works and under TCG elsewhere.

const qemuMemory = 64 << 20

func startQEMU(t *testing.T, cmdline string, seed uint64) *qemu.VM {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	vm, err := qemu.Start(qemu.Options{MemoryBytes: qemuMemory, Cmdline: cmdline, Seed: seed, Accel: testutil.QEMUAccel()})
	if errors.Is(err, qemu.ErrNoQEMU) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm
}

func status(t *testing.T, vm *qemu.VM) guest.Status {
	t.Helper()
	s, err := vm.GuestStatus()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestQEMUSweep(t *testing.T) {
	t.Parallel()
	w, err := guest.ParseWorkload("sweep")
	if err != nil {
		t.Fatal(err)
	}
	vm := startQEMU(t, w.Cmdline(1), 1)
	banner, err := vm.WaitBanner(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(banner, "pagecast-guest v1 workload=sweep cpus=1 ") {
		t.Errorf("banner %q", banner)
	}

	before := status(t, vm)
	start := time.Now()
	time.Sleep(time.Second)
	after := status(t, vm)
	elapsed := time.Since(start)
	if after.State != guest.StateRunning || guest.WorkloadName(after.Workload) != "sweep" || after.CPUs != 1 {
		t.Errorf("status %v, want sweep running on 1 CPU", after)
	}
	if after.ArenaFirstPage != guest.ArenaStart/guest.PageSize || after.ArenaPages < (qemuMemory-guest.MinMemory)/guest.PageSize {
		t.Errorf("arena %d+%d pages, want it from 4 MiB to about 64 MiB", after.ArenaFirstPage, after.ArenaPages)
	}
	writes := after.TotalProgress() - before.TotalProgress()
	if writes == 0 {
		t.Fatalf("progress stuck at %d", after.TotalProgress())
	}
	t.Logf("sweep under %s: %.0f writes/s", vm.Accel(), float64(writes)/elapsed.Seconds())
}

// TestQEMUArenaContent boots a gated hotset: the arena content written into
// the guest's RAM file must arrive (read back through QMP's pmemsave), and
// the guest must wait at the gate until Release, then write.
func TestQEMUArenaContent(t *testing.T) {
	t.Parallel()
	w, err := guest.ParseWorkload("hotset:hot=16,p=1,gate=1")
	if err != nil {
		t.Fatal(err)
	}
	vm := startQEMU(t, w.Cmdline(1), 42)
	if _, err := vm.WaitBanner(60 * time.Second); err != nil {
		t.Fatal(err)
	}

	// Arena pages 64 to 127: far from the 16 hot pages the guest writes.
	want := make([]byte, qemuMemory)
	guest.FillArena(want, guest.DefaultMix, 42)
	addr := uint64(guest.ArenaStart + 64*guest.PageSize)
	got := pmemsave(t, vm, addr, 64*guest.PageSize)
	if !bytes.Equal(got, want[addr:addr+64*guest.PageSize]) {
		t.Error("arena content read back through pmemsave differs from FillArena's")
	}

	k, err := guest.Load(guest.Image())
	if err != nil {
		t.Fatal(err)
	}
	if s := status(t, vm); s.State != guest.StateWaiting || s.TotalProgress() != 0 {
		t.Fatalf("status %v, want waiting at the gate with no writes", s)
	}
	if err := guest.Release(vm.Memory(), k.StatusAddr); err != nil {
		t.Fatal(err)
	}
	s := status(t, vm)
	for deadline := time.Now().Add(3 * time.Second); s.TotalProgress() == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		s = status(t, vm)
	}
	if s.State != guest.StateRunning || s.TotalProgress() == 0 {
		t.Errorf("status %v after Release, want running with writes", s)
	}
}

// pmemsave reads size bytes of guest memory from physical address addr
// the way the guest sees them, through QMP's pmemsave.
func pmemsave(t *testing.T, vm *qemu.VM, addr, size uint64) []byte {
	t.Helper()
	dump := filepath.Join(t.TempDir(), "pmem")
	cmd := fmt.Sprintf(`{"execute":"pmemsave","arguments":{"val":%d,"size":%d,"filename":%q}}`, addr, size, dump)
	if _, err := vm.Monitor.Run([]byte(cmd)); err != nil {
		t.Fatalf("pmemsave: %v", err)
	}
	got, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestQEMUBadParameter(t *testing.T) {
	t.Parallel()
	vm := startQEMU(t, "workload=sweep colour=blue", 1)
	line, err := vm.WaitBanner(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if line != `pagecast-guest error: unknown parameter in "colour=blue"` {
		t.Errorf("serial line %q, want the error", line)
	}
	if s := status(t, vm); s.State != guest.StateFailed || s.Error != guest.ErrorCmdline {
		t.Errorf("status %v, want failed with error cmdline", s)
	}
}

// A guest of more than 2 GiB boots (QEMU's loader device, which once put
// the arena in place, read at most 2 GiB), sees the arena up to the top of
// its memory below 4 GiB, and finds there the content the host wrote.
func TestQEMUAboveTwoGiB(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("boots QEMU; skipped in short mode")
	}
	testutil.RequiresQEMU(t)
	const memory = 2304 << 20
	w, err := guest.ParseWorkload("hotset:hot=16,p=1,gate=1")
	if err != nil {
		t.Fatal(err)
	}
	vm, err := qemu.Start(qemu.Options{MemoryBytes: memory, Cmdline: w.Cmdline(1), Seed: 5, Accel: testutil.QEMUAccel()})
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
	s := status(t, vm)
	// Multiboot leaves out a little at the top (32 pages here).
	if top := uint64(s.ArenaFirstPage) + uint64(s.ArenaPages); top*guest.PageSize > memory || top*guest.PageSize < memory-(1<<20) {
		t.Errorf("arena %d+%d pages: want it to end within 1 MiB of %d", s.ArenaFirstPage, s.ArenaPages, memory)
	}
	// 64 arena pages past 2 GiB, read by the guest's side (QMP's
	// pmemsave) and the host's (the RAM file), hold the arena's content.
	addr := uint64(2<<30 + 64*guest.PageSize)
	got := pmemsave(t, vm, addr, 64*guest.PageSize)
	host := vm.Memory()[addr : addr+64*guest.PageSize]
	if !bytes.Equal(got, host) {
		t.Error("memory past 2 GiB read through pmemsave differs from the RAM file")
	}
	if bytes.Equal(host, make([]byte, len(host))) {
		t.Error("memory past 2 GiB is all zeros: the arena's content did not reach it")
	}
}
