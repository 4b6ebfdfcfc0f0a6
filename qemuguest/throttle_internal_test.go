package qemuguest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSweepThrottlesProbes: the sweep removes the throttle cgroups and
// canThrottle's probes of processes that are gone, and keeps those of
// live ones (a probe a killed pagecast left was never removed; review 64).
func TestSweepThrottlesProbes(t *testing.T) {
	defer func(root string) { CPUCgroupRoot = root }(CPUCgroupRoot)
	CPUCgroupRoot = t.TempDir()
	const gone = 2147483647 // no such process
	live := os.Getpid()
	names := map[string]bool{ // kept
		fmt.Sprintf("pagecast-%d", gone):                    false,
		fmt.Sprintf("pagecast-probe-%d-123", gone):          false,
		fmt.Sprintf("user.slice/pagecast-probe-%d-9", gone): false,
		fmt.Sprintf("pagecast-%d", live):                    true,
		fmt.Sprintf("pagecast-probe-%d-456", live):          true,
		"pagecast-not-a-pid":                                true,
	}
	for n := range names {
		if err := os.MkdirAll(filepath.Join(CPUCgroupRoot, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sweepThrottles()
	for n, kept := range names {
		_, err := os.Stat(filepath.Join(CPUCgroupRoot, n))
		if (err == nil) != kept {
			t.Errorf("%s: kept %v, want %v", n, err == nil, kept)
		}
	}
}

// TestThrottleEachThread throttles two threads of this process as vCPU
// threads, one spinning and one idle, then both spinning: each runs at
// most the share asked for. One quota of a share for each, pooled, let
// the busy thread run on the idle one's (review 84: a 2-vCPU guest's one
// busy vCPU ran at 0.9 of a CPU under a 54% throttle).
func TestThrottleEachThread(t *testing.T) {
	var stop atomic.Bool
	spin := make(chan bool, 2) // each true makes a thread spin
	defer func() {
		stop.Store(true)
		close(spin)
	}()
	tids := throttleThreads(t, 2, func() {
		for busy := range spin {
			for busy && !stop.Load() {
			}
			if stop.Load() {
				return
			}
		}
	})
	busy, idle := tids[0], tids[1]
	pid := os.Getpid()
	var c cpuThrottle
	if err := c.set(pid, []int{busy, idle}, 80); err != nil {
		t.Fatal(err)
	}
	defer c.lift()
	share := func(tid int) float64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, tid))
		if err != nil {
			t.Fatal(err)
		}
		var ns int64
		fmt.Sscan(string(b), &ns)
		return float64(ns)
	}
	measure := func(tids ...int) []float64 {
		before, t0 := make([]float64, len(tids)), time.Now()
		for i, tid := range tids {
			before[i] = share(tid)
		}
		time.Sleep(time.Second)
		d := float64(time.Since(t0))
		for i, tid := range tids {
			before[i] = (share(tid) - before[i]) / d
		}
		return before
	}
	spin <- true // the first thread to take it spins: find which
	time.Sleep(100 * time.Millisecond)
	s := measure(busy, idle)
	if s[1] > s[0] {
		busy, idle = idle, busy
		s[0], s[1] = s[1], s[0]
	}
	t.Logf("80%%, one thread spinning: %.0f%% and %.0f%% of a CPU", 100*s[0], 100*s[1])
	if s[0] > 0.28 {
		t.Errorf("throttled 80%%, the spinning thread ran %.0f%% of a CPU: it had the idle one's share too", 100*s[0])
	}
	spin <- true
	time.Sleep(100 * time.Millisecond)
	s = measure(busy, idle)
	t.Logf("80%%, both spinning: %.0f%% and %.0f%% of a CPU", 100*s[0], 100*s[1])
	for i, v := range s {
		if v > 0.28 {
			t.Errorf("throttled 80%%, thread %d ran %.0f%% of a CPU", i, 100*v)
		}
	}
	dir := c.dir
	if err := c.lift(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the throttle's cgroup %s is left after the lift (%v)", dir, err)
	}
}

// TestHomeOf: a thread in a killed pagecast's throttle, of either layout,
// goes home to the cgroup the throttle was made in; one elsewhere stays.
func TestHomeOf(t *testing.T) {
	for _, tc := range []struct {
		cg, home string
		in       bool
	}{
		{"/machine.slice/qemu", "/machine.slice/qemu", false},
		{"/machine.slice/pagecast-7", "/machine.slice", true},
		{"/machine.slice/pagecast-7/vcpu-12", "/machine.slice", true},
		{"/pagecast-7/vcpu-12", "/", true},
		{"/pagecast-8/vcpu-12", "/pagecast-8/vcpu-12", false},
		{"/vcpu-12", "/vcpu-12", false},
	} {
		if home, in := homeOf(tc.cg, "pagecast-7"); home != tc.home || in != tc.in {
			t.Errorf("homeOf(%q) = %q, %v; want %q, %v", tc.cg, home, in, tc.home, tc.in)
		}
	}
}

// TestThrottleEveryThread: a thread's cgroup that cannot be written (here
// removed, its thread moved home) fails set and unbound, and the other
// threads are set all the same: both stopped at the first, leaving the
// rest at their last share (throttled through the stop-and-copy).
func TestThrottleEveryThread(t *testing.T) {
	done := make(chan struct{})
	defer close(done)
	tids := throttleThreads(t, 2, func() { <-done })
	a, b := tids[0], tids[1]
	pid := os.Getpid()
	var c cpuThrottle
	if err := c.set(pid, []int{a, b}, 50); err != nil {
		t.Fatal(err)
	}
	defer c.lift()
	// The first thread in c's order loses its cgroup; the second is the
	// one that must still be set.
	gone, kept := c.threads[0], c.threads[1]
	var goneTID int
	fmt.Sscanf(gone, "vcpu-%d", &goneTID)
	if err := writeInt(filepath.Join(CPUCgroupRoot, c.home[goneTID], "tasks"), int64(goneTID)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(c.dir, gone)); err != nil {
		t.Fatal(err)
	}
	want := cfsQuota(cfsPeriod(80), 80).Microseconds()
	if err := c.set(pid, []int{a, b}, 80); err == nil {
		t.Error("set with a thread's cgroup gone succeeded")
	}
	if q := readInt(t, filepath.Join(c.dir, kept), "cpu.cfs_quota_us"); q != want {
		t.Errorf("set 80%% failed on %s: %s's quota %d µs, want %d", gone, kept, q, want)
	}
	if err := c.unbound(); err == nil {
		t.Error("unbound with a thread's cgroup gone succeeded")
	}
	if q := readInt(t, filepath.Join(c.dir, kept), "cpu.cfs_quota_us"); q != -1 {
		t.Errorf("unbound failed on %s: %s's quota %d µs, want -1", gone, kept, q)
	}
	dir := c.dir
	if err := c.lift(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the throttle's cgroup %s is left after the lift (%v)", dir, err)
	}
}

// throttleThreads skips the test where this process cannot make cgroups
// of v1's cpu controller, and starts n threads of its own, each running
// body locked to it; it returns their thread ids. Once the test's own
// deferred calls have run (which must make body return), it waits for
// the threads to end: locked, each exits with its goroutine, as it was
// in the test's cgroups.
func throttleThreads(t *testing.T, n int, body func()) []int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("makes cgroups: needs root")
	}
	if _, err := os.Stat(filepath.Join(CPUCgroupRoot, "cpu.cfs_quota_us")); err != nil {
		t.Skipf("cgroup v1's cpu controller is not at %s", CPUCgroupRoot)
	}
	ids := make(chan int, n)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			ids <- unix.Gettid()
			body()
		}()
	}
	tids := make([]int, n)
	for i := range tids {
		tids[i] = <-ids
	}
	return tids
}
