package vmm

import (
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// memoryVM is a VM with guest memory and no KVM: enough for the parts of
// the monitor that issue no ioctl.
func memoryVM(t *testing.T, memBytes uint64) *VM {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, int(memBytes), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	vm := &VM{
		cfg:          Config{MemoryBytes: memBytes},
		log:          slog.New(slog.DiscardHandler),
		vmfd:         -1,
		memfd:        -1,
		mem:          mem,
		state:        StateRunning,
		started:      time.Now(),
		logs:         map[*DirtyLog]struct{}{},
		monitorDirty: NewBitmap(memBytes / PageSize),
	}
	vm.cond = sync.NewCond(&vm.mu)
	return vm
}

// TestDirtyRateAtClose: a page-sampling calc-dirty-rate still measuring
// when the VM closes (QMP quit, SIGINT) ends with it, and reads no memory
// Close has unmapped (the process died: slice bounds out of range, or a
// fault). Run in a child process, as the bug takes the process down; no
// KVM needed.
func TestDirtyRateAtClose(t *testing.T) {
	if os.Getenv("PAGECAST_DIRTYRATE_CHILD") == "1" {
		vm := memoryVM(t, 16<<20)
		if err := vm.CalcDirtyRate(time.Second, RateModePageSampling, 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the sample is hashed; the window runs
		start := time.Now()
		if err := vm.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("Close waited %v for a 1 s measurement: want it ended at once", d)
		}
		if r := vm.QueryDirtyRate(); r.Status != "unstarted" {
			t.Errorf("after Close: %+v, want unstarted", r)
		}
		if err := vm.CalcDirtyRate(time.Second, RateModePageSampling, 0); err == nil {
			t.Error("calc-dirty-rate on a closed VM started")
		}
		time.Sleep(100 * time.Millisecond)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDirtyRateAtClose$", "-test.v")
	cmd.Env = append(os.Environ(), "PAGECAST_DIRTYRATE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("a VM closed during calc-dirty-rate: %v\n%s", err, out)
	}
}
