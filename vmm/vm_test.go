package vmm_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/vmm"
)

// lockedBuffer collects the guest's serial lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// vmErr reports the latest VM's fatal error, so waits fail fast.
var vmErr func() (string, error)

func startVM(t *testing.T, cfg vmm.Config, workload string) (*vmm.VM, *lockedBuffer) {
	t.Helper()
	testutil.RequiresKVM(t)
	w, err := guest.ParseWorkload(workload)
	if err != nil {
		t.Fatal(err)
	}
	serial := &lockedBuffer{}
	cfg.Serial = serial
	if cfg.MemoryBytes == 0 {
		cfg.MemoryBytes = 32 << 20
	}
	cfg.Cmdline = w.Cmdline(max(cfg.VCPUs, 1))
	vm, err := vmm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vmErr = vm.State
	t.Cleanup(func() { vm.Close(); vmErr = nil })
	return vm, serial
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if vmErr != nil {
			if st, err := vmErr(); err != nil {
				t.Fatalf("waiting for %s: VM %s: %v", what, st, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func guestState(t *testing.T, vm *vmm.VM) guest.Status {
	t.Helper()
	s, err := vm.GuestStatus()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDirtySetExact runs a workload that writes a known set of pages once
// and checks that KVM's harvested dirty set is exactly that set, with each
// form of dirty tracking.
func TestDirtySetExact(t *testing.T) {
	for _, mode := range []string{vmm.DirtyRing, vmm.DirtyBitmap} {
		for _, write := range []string{"word", "page"} {
			t.Run(mode+"/"+write, func(t *testing.T) {
				vm, serial := startVM(t, vmm.Config{DirtyMode: mode},
					"replay:loops=1,gate=1,write="+write)
				arenaFirst := uint64(guest.ArenaStart / guest.PageSize)
				arenaPages := vm.MemoryBytes()/guest.PageSize - arenaFirst

				// A known random set of arena pages, in random order.
				rng := rand.New(rand.NewPCG(1, 2))
				want := vmm.NewBitmap(vm.MemoryBytes() / guest.PageSize)
				var table []uint32
				for len(table) < 1500 {
					p := arenaFirst + rng.Uint64N(arenaPages)
					if !want.Has(p) {
						want.Set(p)
						table = append(table, uint32(p))
					}
				}
				if err := vm.WriteReplayTable(table); err != nil {
					t.Fatal(err)
				}
				if err := vm.Start(); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "guest at its gate", 10*time.Second, func() bool {
					return guestState(t, vm).State == guest.StateWaiting
				})

				dl, err := vm.StartDirtyLog()
				if err != nil {
					t.Fatal(err)
				}
				defer dl.Close()
				if err := vm.ReleaseGate(); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "replay done", 30*time.Second, func() bool {
					return guestState(t, vm).State == guest.StateDone
				})
				if err := vm.Pause(); err != nil {
					t.Fatal(err)
				}
				got, err := dl.Harvest()
				if err != nil {
					t.Fatal(err)
				}
				if p := guestState(t, vm).TotalProgress(); p != uint64(len(table)) {
					t.Fatalf("guest progress %d, want %d writes", p, len(table))
				}

				// The arena holds only the workload's writes: exact equality.
				var missing, extra []uint64
				for p := arenaFirst; p < arenaFirst+arenaPages; p++ {
					switch {
					case want.Has(p) && !got.Has(p):
						missing = append(missing, p)
					case !want.Has(p) && got.Has(p):
						extra = append(extra, p)
					}
				}
				if len(missing)+len(extra) > 0 {
					t.Fatalf("arena dirty set differs: %d missing %v, %d extra %v", len(missing), head(missing), len(extra), head(extra))
				}
				// Below the arena only the guest's own status page and
				// stack may be written (and the status page the monitor
				// wrote to open the gate).
				statusPage := vm.Kernel().StatusAddr / guest.PageSize
				if !got.Has(statusPage) {
					t.Errorf("status page %d not reported dirty", statusPage)
				}
				got.ForEach(func(p uint64) {
					if p < arenaFirst && (p < 0x100000/guest.PageSize || p >= 0x200000/guest.PageSize) {
						t.Errorf("page %d outside the guest image dirtied", p)
					}
				})
				if !bytes.Contains([]byte(serial.String()), []byte("pagecast-guest ")) {
					t.Errorf("no banner on the serial port: %q", serial.String())
				}
			})
		}
	}
}

func head(s []uint64) string {
	if len(s) > 10 {
		return fmt.Sprint(s[:10], "…")
	}
	return fmt.Sprint(s)
}

// TestPauseResume checks that pausing freezes the guest's progress and
// resuming lets it continue, on several vCPUs.
func TestPauseResume(t *testing.T) {
	vm, _ := startVM(t, vmm.Config{VCPUs: 2}, "sweep")
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both vCPUs writing", 10*time.Second, func() bool {
		s := guestState(t, vm)
		return len(s.Progress) >= 2 && s.Progress[0] > 0 && s.Progress[1] > 0
	})
	if err := vm.Pause(); err != nil {
		t.Fatal(err)
	}
	if st, _ := vm.State(); st != vmm.StatePaused {
		t.Fatalf("state %s after pause", st)
	}
	frozen := guestState(t, vm).TotalProgress()
	time.Sleep(200 * time.Millisecond)
	if p := guestState(t, vm).TotalProgress(); p != frozen {
		t.Fatalf("progress moved while paused: %d -> %d", frozen, p)
	}
	if err := vm.Resume(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "progress after resume", 10*time.Second, func() bool {
		return guestState(t, vm).TotalProgress() > frozen
	})
}

// TestIncomingResumeEvent: a VM that waited for an incoming migration
// says RESUME to its monitor's clients when its guest starts running, as
// QEMU does (walk 137: the source's STOP came, no RESUME from the
// destination); one that starts paused (stopped while it waited) says it
// on cont, and a VM that simply boots says nothing.
func TestIncomingResumeEvent(t *testing.T) {
	for _, tc := range []struct {
		name              string
		incoming, paused  bool
		atStart, atResume int
	}{
		{"incoming", true, false, 1, 1},
		{"incoming, stopped while waiting", true, true, 0, 1},
		{"booted", false, false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm, _ := startVM(t, vmm.Config{}, "hotset:hot=64")
			var mu sync.Mutex
			resumes := 0
			vm.OnEvent(func(name string, _ any) {
				if name == "RESUME" {
					mu.Lock()
					resumes++
					mu.Unlock()
				}
			})
			count := func() int {
				mu.Lock()
				defer mu.Unlock()
				return resumes
			}
			if tc.incoming {
				vm.ExpectIncoming()
			}
			if tc.paused {
				if err := vm.Pause(); err != nil {
					t.Fatal(err)
				}
			}
			if err := vm.Start(); err != nil {
				t.Fatal(err)
			}
			if n := count(); n != tc.atStart {
				t.Errorf("%d RESUME events as it started, want %d", n, tc.atStart)
			}
			if tc.paused {
				if err := vm.Resume(); err != nil {
					t.Fatal(err)
				}
				if n := count(); n != tc.atResume {
					t.Errorf("%d RESUME events after cont, want %d", n, tc.atResume)
				}
			}
		})
	}
}

// TestConcurrentPauses: two pauses at once (a QMP stop during a
// migration's switch-over) both succeed; the one that waited while the
// other paused the VM said "virtual machine is paused" (found by a review
// walk: 1 run of 3 at 200 rounds).
func TestConcurrentPauses(t *testing.T) {
	vm, _ := startVM(t, vmm.Config{VCPUs: 2}, "sweep")
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	for round := range 200 {
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- vm.Pause() }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if st, _ := vm.State(); st != vmm.StatePaused {
			t.Fatalf("round %d: state %s after two pauses", round, st)
		}
		if err := vm.Resume(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestContGuard: QMP cont (Cont) of a guest a migration paused asks the
// guard, and refuses with its error; one the user paused runs (the guard
// refused the user's own stop and cont during a pre-copy: walk 45).
func TestContGuard(t *testing.T) {
	vm, _ := startVM(t, vmm.Config{}, "sweep")
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	asked := 0
	vm.SetContGuard(func() error { asked++; return errors.New("held by a migration") })
	if err := vm.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := vm.Cont(); err != nil || asked != 0 {
		t.Errorf("cont of a guest the user paused: %v, guard asked %d times", err, asked)
	}
	if err := vm.Migratable().Pause(); err != nil {
		t.Fatal(err)
	}
	if err := vm.Cont(); err == nil || !strings.Contains(err.Error(), "held by a migration") {
		t.Errorf("cont of a guest a migration paused: %v, want the guard's refusal", err)
	}
	if st, _ := vm.State(); st != vmm.StatePaused {
		t.Errorf("state %s after a refused cont", st)
	}
	vm.SetContGuard(func() error { return nil })
	if err := vm.Cont(); err != nil {
		t.Errorf("cont the guard allows: %v", err)
	}
	if st, _ := vm.State(); st != vmm.StateRunning {
		t.Errorf("state %s after cont", st)
	}
}

// TestPauseContRace: a user's stop and cont around a migration's pause
// under way leave that pause whole: the guest paused, its vCPUs held.
// The cont came in while the migration's pause waited for the vCPUs, and
// either resumed them under it (the VM said paused, the guest ran on
// through the stop-and-copy) or left it waiting for good (found by a
// review walk: 7 bad rounds in 30 000).
func TestPauseContRace(t *testing.T) {
	vm, _ := startVM(t, vmm.Config{VCPUs: 2}, "sweep")
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	vm.SetContGuard(func() error { return errors.New("held by a migration") })
	bad := 0
	for round, deadline := 0, time.Now().Add(5*time.Second); round < 30000 && time.Now().Before(deadline); round++ {
		migrated := make(chan error, 1)
		go func() { migrated <- vm.Migratable().Pause() }()
		if err := vm.Pause(); err == nil {
			vm.Cont()
		}
		select {
		case err := <-migrated:
			if st, _ := vm.State(); err != nil || st != vmm.StatePaused || !vm.PauseRequested() {
				bad++
				t.Logf("round %d: the migration's pause: %v; state %s, vCPUs held %v", round, err, st, vm.PauseRequested())
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("round %d: the migration's pause waits for good", round)
		}
		if err := vm.Migratable().Resume(); err != nil {
			t.Fatal(err)
		}
	}
	if bad > 0 {
		t.Errorf("%d rounds left the migration's pause undone", bad)
	}
}

// TestSaveRestoreVCPUs moves a paused guest's memory and vCPU state into a
// second VM, which carries on from where the first stopped.
func TestSaveRestoreVCPUs(t *testing.T) {
	src, _ := startVM(t, vmm.Config{}, "sweep")
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "progress", 10*time.Second, func() bool { return guestState(t, src).TotalProgress() > 1000 })
	if err := src.Pause(); err != nil {
		t.Fatal(err)
	}
	states, err := src.SaveVCPUs()
	if err != nil {
		t.Fatal(err)
	}
	at := guestState(t, src).TotalProgress()

	dst, _ := startVM(t, vmm.Config{}, "idle")
	copy(dst.Memory(), src.Memory())
	if err := dst.RestoreVCPUs(states); err != nil {
		t.Fatal(err)
	}
	if err := dst.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "progress on the second VM", 10*time.Second, func() bool {
		return guestState(t, dst).TotalProgress() > at+1000
	})
	if p := guestState(t, src).TotalProgress(); p != at {
		t.Fatalf("paused source moved: %d -> %d", at, p)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  vmm.Config
		want string
	}{
		{"small memory", vmm.Config{MemoryBytes: 4 << 20}, "below the guest's minimum"},
		{"vcpus", vmm.Config{MemoryBytes: 32 << 20, VCPUs: 99}, "vcpus 99 out of range"},
		{"dirty mode", vmm.Config{MemoryBytes: 32 << 20, DirtyMode: "pml"}, `dirty tracking mode "pml"`},
		{"no kvm", vmm.Config{MemoryBytes: 32 << 20, KVMDevice: "/nonexistent/kvm"}, "KVM is not available"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := vmm.New(tc.cfg)
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestThrottle: taking 80% of the vCPUs' time slows the guest to about a
// fifth, and lifting it restores the pace (ratios within one run; the
// bounds are loose because the machine is shared).
func TestThrottle(t *testing.T) {
	vm, _ := startVM(t, vmm.Config{}, "sweep")
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "guest writing", 10*time.Second, func() bool { return guestState(t, vm).TotalProgress() > 0 })
	rate := func() float64 {
		p0, t0 := guestState(t, vm).TotalProgress(), time.Now()
		time.Sleep(500 * time.Millisecond)
		return float64(guestState(t, vm).TotalProgress()-p0) / time.Since(t0).Seconds()
	}
	free := rate()
	if err := vm.SetThrottle(80); err != nil {
		t.Fatal(err)
	}
	throttled := rate()
	if err := vm.SetThrottle(0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	// The pace must come back: in one of three windows, as a window
	// the host's other work takes the CPU from says little (0.44 in a
	// CI run beside another test run on two cores).
	lifted := rate()
	for range 2 {
		if lifted >= 0.6*free {
			break
		}
		lifted = max(lifted, rate())
	}
	// The guest's own pace is the faster of its unthrottled windows, as
	// other work only ever slows one: a CI run measured 38 505 writes a
	// second before the throttle and 58 006 after it, and took 17 536
	// throttled for 0.46 of the pace where it was 0.30.
	pace := max(free, lifted)
	t.Logf("writes/s: free %.0f, throttled 80%% %.0f (%.2f of %.0f), lifted %.0f", free, throttled, throttled/pace, pace, lifted)
	if throttled > 0.45*pace {
		t.Errorf("80%% throttle left the guest at %.2f of its pace", throttled/pace)
	}
	if lifted < 0.6*free {
		t.Errorf("after lifting the throttle the guest runs at %.2f of its pace", lifted/free)
	}
	if err := vm.SetThrottle(100); err == nil {
		t.Error("a 100% throttle was accepted")
	}
}

// TestPauseCutsThrottleRest: a pause does not wait for throttled vCPUs to
// rest out their period (at 99% 100 ms or more, and far more on a busy
// host: a switch-over's pause took 937 ms), with 2 vCPUs as with one.
func TestPauseCutsThrottleRest(t *testing.T) {
	vm, _ := startVM(t, vmm.Config{VCPUs: 2}, "sweep")
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "guest writing", 10*time.Second, func() bool { return guestState(t, vm).TotalProgress() > 0 })
	const rest = 3 * time.Second
	for range 3 {
		vm.ThrottleRest(rest)
		time.Sleep(20 * time.Millisecond) // the vCPUs are kicked into their rest
		start := time.Now()
		if err := vm.Pause(); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("pause during a %v rest took %v", rest, took)
		if took > rest/2 {
			t.Errorf("pause took %v: it waited for the vCPUs' %v rest", took, rest)
		}
		vm.ThrottleRest(0)
		if err := vm.Resume(); err != nil {
			t.Fatal(err)
		}
	}
}
