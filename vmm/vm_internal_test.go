package vmm

import (
	"log/slog"
	"os"
	"os/exec"
	"strings"
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

// TestThrottleAfterLift: a throttle set while the throttler of a lifted one
// is on its way out throttles (it read 0 and cleared its flag later, once
// it had vm.mu: a SetThrottle in between found it running, started none,
// and Throttle said 50 while nothing throttled). vm.mu held a while, as
// Pause holds it, widens the gap. No KVM needed.
func TestThrottleAfterLift(t *testing.T) {
	for try := range 10 {
		vm := memoryVM(t, 16<<20)
		if err := vm.SetThrottle(50); err != nil {
			t.Fatal(err)
		}
		for u := vm.sleepUntil.Load(); vm.sleepUntil.Load() == u; {
			time.Sleep(100 * time.Microsecond) // a rest period has begun
		}
		vm.SetThrottle(0) // a migration ends
		vm.mu.Lock()
		time.Sleep(20 * time.Millisecond) // the throttler wakes, finds 0, waits for vm.mu
		vm.mu.Unlock()
		vm.SetThrottle(50) // the next one throttles
		time.Sleep(20 * time.Millisecond)
		before := vm.sleepUntil.Load()
		time.Sleep(50 * time.Millisecond)
		advanced := vm.sleepUntil.Load() != before
		vm.SetThrottle(0)
		vm.Close()
		if !advanced {
			t.Fatalf("try %d: throttle 50%% set, no rest period begun in 50 ms", try)
		}
	}
}

// TestClosedMemory: the guest's status and writes into its memory, asked
// of a closed VM (a QMP client's x-pagecast-query-guest racing quit), are
// errors, not reads of memory Close has unmapped. No KVM needed.
func TestClosedMemory(t *testing.T) {
	vm := memoryVM(t, 16<<20)
	if err := vm.WriteGuest(4096, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.GuestStatus(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("GuestStatus of a closed VM: %v", err)
	}
	if err := vm.WriteGuest(4096, []byte{1}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("WriteGuest into a closed VM: %v", err)
	}
}

// TestDirtyLogDuringClose: a dirty log asked for over QMP while Close
// waits for the reapers to go (Close has let go of dirtyMu there) is
// refused as the VM closes; it was started, with a reaper on the rings
// Close then unmapped (found by a review walk). A reaper that has not yet
// ended holds Close in that wait. No KVM needed: without the fix the start
// reaches KVM's ioctl and fails otherwise.
func TestDirtyLogDuringClose(t *testing.T) {
	vm := memoryVM(t, 16<<20)
	vm.reapers.Add(1) // a reaper on its way out
	closed := make(chan error, 1)
	go func() { closed <- vm.Close() }()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		vm.mu.Lock()
		shut := vm.state == StateShutdown
		vm.mu.Unlock()
		if shut {
			break
		}
	}
	time.Sleep(20 * time.Millisecond) // Close is in its wait for the reapers
	_, err := vm.StartDirtyLog()
	vm.reapers.Done()
	if cerr := <-closed; cerr != nil {
		t.Fatal(cerr)
	}
	if err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("a dirty log started while the VM closed: %v; want it refused as closed", err)
	}
}
