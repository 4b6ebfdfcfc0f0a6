package qemuguest_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/guest"
	"github.com/pagecast/pagecast/internal/testutil"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qemuguest"
	"github.com/pagecast/pagecast/qmpclient"
	"github.com/pagecast/pagecast/tcg"
)

const testMemory = 64 << 20

func options(t testing.TB, workload string) qemu.Options {
	t.Helper()
	w, err := guest.ParseWorkload(workload)
	if err != nil {
		t.Fatal(err)
	}
	return qemu.Options{MemoryBytes: testMemory, Cmdline: w.Cmdline(1), Accel: testutil.QEMUAccel()}
}

// startSource boots the pagecast guest running workload and waits until
// it writes.
func startSource(t testing.TB, workload string) *qemuguest.Source {
	t.Helper()
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	s, err := qemuguest.StartSource(options(t, workload))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	waitProgress(t, s.VM(), 1, 30*time.Second)
	return s
}

func progress(t testing.TB, vm *qemu.VM) uint64 {
	t.Helper()
	st, err := vm.GuestStatus()
	if err != nil {
		t.Fatal(err)
	}
	return st.TotalProgress()
}

// waitProgress waits until the guest has done more than n writes, and
// returns its count.
func waitProgress(t testing.TB, vm *qemu.VM, n uint64, timeout time.Duration) uint64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if p := progress(t, vm); p > n {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest did not pass %d writes in %s (at %d)", n, timeout, progress(t, vm))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitRuns checks that the guest runs: it passes from+100 writes within
// 30 s. Under TCG that takes milliseconds. On a host whose /dev/kvm
// emulates the guest's instructions (a nested PVM host: measured 46 writes
// a second for hotset:delay=25000, against 33 000 under TCG) it takes a
// few seconds.
func waitRuns(t testing.TB, vm *qemu.VM, from uint64) {
	t.Helper()
	waitProgress(t, vm, from+100, 30*time.Second)
}

func TestSaveState(t *testing.T) {
	src := startSource(t, "hotset:delay=25000")
	if ok, st := src.Running(); !ok {
		t.Fatalf("source not running: %s", st)
	}

	t.Run("resume after save state", func(t *testing.T) {
		if err := src.Pause(); err != nil {
			t.Fatal(err)
		}
		before := src.StateBytes()
		start := time.Now()
		state, err := src.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("state %d bytes in %s (estimated %d before)", len(state), time.Since(start).Round(time.Millisecond), before)
		// The engine counts StateBytes in what the switch-over sends:
		// the estimate before a state was saved is within a factor of
		// two of it, and the size after is the state's.
		if n := uint64(len(state)); before > 2*n || 2*before < n || src.StateBytes() != n {
			t.Errorf("StateBytes: %d before SaveState, %d after; the state is %d bytes", before, src.StateBytes(), n)
		}
		if ok, st := src.Running(); ok || st != "postmigrate" {
			t.Errorf("after SaveState: running %v, state %s; want postmigrate", ok, st)
		}
		// The engine refuses a source that has migrated away, saying so.
		if _, err := migrator.Outgoing(src, "tcp:127.0.0.1:1", migrator.Config{}); err == nil || !strings.Contains(err.Error(), "it has migrated away already") {
			t.Errorf("migrating a postmigrate source: %v, want it refused as migrated away", err)
		}
		p := progress(t, src.VM())
		if err := src.Resume(); err != nil {
			t.Fatal(err)
		}
		if ok, st := src.Running(); !ok {
			t.Fatalf("after Resume: %s", st)
		}
		waitRuns(t, src.VM(), p)
	})

	// A destination waits with -incoming defer (Restore names the socket)
	// or listens already; the source resumes after each.
	for _, incoming := range []string{"defer", "unix"} {
		t.Run("capture and restore/"+incoming, func(t *testing.T) {
			captureRestore(t, src, incoming)
		})
		if err := src.Resume(); err != nil {
			t.Fatal(err)
		}
	}
}

// captureRestore moves the guest from src to a new destination by hand:
// pause, copy RAM, save the state, restore it, start.
func captureRestore(t *testing.T, src *qemuguest.Source, incoming string) {
	o := options(t, "hotset:delay=25000")
	if incoming == "unix" {
		o.Incoming = "unix:" + filepath.Join(t.TempDir(), "in.sock")
	}
	dst, err := qemuguest.StartDest(o)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if ok, st := dst.Waiting(); !ok {
		t.Fatalf("destination not waiting: %s", st)
	}
	if si, di := src.Identity(), dst.Identity(); si.Image != di.Image || si.VCPUs != di.VCPUs || src.MemoryBytes() != dst.MemoryBytes() {
		t.Fatalf("identity %+v, %d bytes; destination %+v, %d bytes",
			src.Identity(), src.MemoryBytes(), dst.Identity(), dst.MemoryBytes())
	}
	if n := len(diffPages(dst.Memory(), make([]byte, len(dst.Memory())))); n > 0 {
		t.Logf("the waiting destination QEMU wrote %d pages of its RAM", n)
	}
	if err := src.Pause(); err != nil {
		t.Fatal(err)
	}
	pause := time.Now()
	switchedAt := progress(t, src.VM())
	copy(dst.Memory(), src.Memory())
	copied := time.Since(pause)
	state, err := src.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	saved := time.Since(pause)
	if err := dst.Restore(state); err != nil {
		t.Fatal(err)
	}
	restored := time.Since(pause)
	if ok, st := dst.Waiting(); ok || st != "paused" {
		t.Errorf("after Restore: waiting %v, state %s; want paused", ok, st)
	}
	// Neither QEMU wrote guest RAM while the state moved, except under KVM
	// QEMU's kvmvapic, which rewrites a few bytes of its option ROM's page
	// (0xe8000 here) in RAM when the state is loaded and when a VM
	// resumes: QEMU's write, consistent with the state just loaded.
	diff := diffPages(src.Memory(), dst.Memory())
	if src.VM().Accel() == qemu.AccelKVM {
		diff = slices.DeleteFunc(diff, func(pg int) bool {
			if pg*4096 >= 0xc0000 && pg*4096 < 0x100000 {
				t.Logf("under KVM QEMU wrote option ROM page %#x on Restore", pg*4096)
				return true
			}
			return false
		})
	}
	if len(diff) > 0 {
		t.Errorf("%d pages differ after Restore, first %#x", len(diff), diff[0]*4096)
	}
	if got := progress(t, dst.VM()); got != switchedAt {
		t.Errorf("destination holds %d writes, source stopped at %d", got, switchedAt)
	}
	if err := dst.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes of state; copy RAM %s, save %s, restore %s, downtime %s",
		len(state), copied.Round(time.Millisecond), (saved - copied).Round(time.Millisecond),
		(restored - saved).Round(time.Millisecond), time.Since(pause).Round(time.Millisecond))
	waitRuns(t, dst.VM(), switchedAt)
	if ok, st := src.Running(); ok {
		t.Errorf("source runs too (%s)", st)
	}
}

func diffPages(a, b []byte) []int {
	var diff []int
	for off := 0; off < len(a); off += 4096 {
		if !bytes.Equal(a[off:off+4096], b[off:off+4096]) {
			diff = append(diff, off/4096)
		}
	}
	return diff
}

// TestDirtyLog checks a harvest against the guest's own count: sweep's
// write j (1-based) goes to arena page (j-1) mod ArenaPages, so between two
// pauses the pages written are known exactly.
func TestDirtyLog(t *testing.T) {
	src := startSource(t, "sweep:delay=50000")
	st, err := src.VM().GuestStatus()
	if err != nil {
		t.Fatal(err)
	}
	first, n := uint64(st.ArenaFirstPage), uint64(st.ArenaPages)
	log, err := src.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	for round := range 3 {
		if err := src.Pause(); err != nil {
			t.Fatal(err)
		}
		if _, err := log.Harvest(); err != nil {
			t.Fatal(err)
		}
		from := progress(t, src.VM())
		if err := src.Resume(); err != nil {
			t.Fatal(err)
		}
		// 100 ms, or until its first write: on a loaded host (a CI run
		// on 2026-12-03, other packages' QEMUs on the two cores) the
		// TCG vCPU wrote nothing in 100 ms.
		time.Sleep(100 * time.Millisecond)
		for i := 0; i < 20 && progress(t, src.VM()) == from; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if err := src.Pause(); err != nil {
			t.Fatal(err)
		}
		to := progress(t, src.VM())
		dirty, err := log.Harvest()
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Resume(); err != nil {
			t.Fatal(err)
		}
		if to-from >= n || to == from {
			t.Fatalf("round %d: %d writes, want 1…%d", round, to-from, n-1)
		}
		want := map[uint64]bool{}
		for j := from + 1; j <= to; j++ {
			want[first+(j-1)%n] = true
		}
		var missing, extra []uint64
		for p := range want {
			if !dirty.Has(p) {
				missing = append(missing, p)
			}
		}
		dirty.ForEach(func(p uint64) {
			if p >= first && p < first+n && !want[p] {
				extra = append(extra, p)
			}
		})
		t.Logf("round %d: %d writes, %d pages harvested", round, to-from, dirty.Count())
		if len(missing) > 0 || len(extra) > 0 {
			t.Errorf("round %d: %d arena pages missing (%x), %d extra (%x)", round, len(missing), head(missing), len(extra), head(extra))
		}
	}
}

func head(s []uint64) []uint64 { return s[:min(len(s), 5)] }

// TestThrottle measures the guest's write rate and its vCPU thread's CPU
// time with a share of that time taken away. The rate is only logged: on a
// loaded host the vCPU gets less than a whole CPU with or without the
// throttle; the thread's CPU time is what the quota bounds.
func TestThrottle(t *testing.T) {
	src := startSource(t, "hotset")
	tid := src.VCPUThreads()[0]
	measure := func() (rate, share float64) {
		p0, c0, t0 := progress(t, src.VM()), cpuTime(t, src.PID(), tid), time.Now()
		time.Sleep(500 * time.Millisecond)
		d := time.Since(t0)
		return float64(progress(t, src.VM())-p0) / d.Seconds(), float64(cpuTime(t, src.PID(), tid)-c0) / float64(d)
	}
	full, fullShare := measure()
	t.Logf("throttle 0%%: %.0f writes/s, vCPU thread on a CPU %.0f%% of the time", full, 100*fullShare)
	for _, pct := range []int{50, 80, 95} {
		if err := src.SetThrottle(pct); err != nil {
			t.Fatal(err)
		}
		if got := src.Throttle(); got != pct {
			t.Errorf("Throttle() = %d, want %d", got, pct)
		}
		r, share := measure()
		t.Logf("throttle %d%%: %.0f writes/s (%.2f of unthrottled), vCPU thread on a CPU %.0f%% of the time",
			pct, r, r/full, 100*share)
		if want := float64(100-pct) / 100; share > want+0.08 {
			t.Errorf("throttle %d%%: the vCPU thread ran %.0f%% of the time, want at most %.0f%%", pct, 100*share, 100*want)
		}
	}
	if err := src.SetThrottle(0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(qemuguest.CPUCgroupRoot, fmt.Sprintf("pagecast-%d", src.PID()))); !os.IsNotExist(err) {
		t.Errorf("the throttle's cgroup is left after it was lifted (%v)", err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", src.PID(), tid))
	if err != nil || strings.Contains(string(b), "pagecast-") {
		t.Errorf("vCPU thread's cgroups after the throttle was lifted: %s %v", b, err)
	}
	r, share := measure()
	t.Logf("lifted: %.0f writes/s, vCPU thread on a CPU %.0f%% of the time", r, 100*share)

	// A pagecast killed while it throttled leaves the thread in its
	// cgroup at 99%: the next throttle takes that cgroup over, and its
	// lift sends the thread home.
	// Of either layout: the thread in the throttle's cgroup (before
	// 2026-12-05), or in its own cgroup within it.
	left := filepath.Join(qemuguest.CPUCgroupRoot, fmt.Sprintf("pagecast-%d", src.PID()))
	leftThread := filepath.Join(left, fmt.Sprintf("vcpu-%d", tid))
	t.Cleanup(func() { // on failure; the QEMU, gone by then, left its tasks empty
		os.Remove(leftThread)
		os.Remove(left)
	})
	// leaveThrottle makes dir a killed pagecast's throttle: the vCPU
	// thread in it at 99%.
	leaveThrottle := func(dir string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, w := range [][2]string{{"cpu.cfs_period_us", "100000"}, {"cpu.cfs_quota_us", "1000"}, {"tasks", fmt.Sprint(tid)}} {
			if err := os.WriteFile(filepath.Join(dir, w[0]), []byte(w[1]), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct{ what, dir string }{
		{"a killed pagecast's cgroup", left},
		{"a killed pagecast's cgroup of a thread", leftThread},
	} {
		leaveThrottle(tc.dir)
		if err := src.SetThrottle(50); err != nil {
			t.Fatalf("throttle over %s: %v", tc.what, err)
		}
		r, share = measure()
		t.Logf("throttle 50%% over %s: %.0f writes/s, vCPU thread on a CPU %.0f%% of the time", tc.what, r, 100*share)
		if share > 0.58 || share < 0.1 {
			t.Errorf("throttle 50%% over %s: the vCPU thread ran %.0f%% of the time", tc.what, 100*share)
		}
		if err := src.SetThrottle(0); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(left); !os.IsNotExist(err) {
			t.Errorf("%s is left after the throttle was lifted (%v)", tc.what, err)
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", src.PID(), tid)); err != nil || strings.Contains(string(b), "pagecast-") {
			t.Errorf("vCPU thread's cgroups after the throttle over %s was lifted: %s %v", tc.what, b, err)
		}
	}

	// And a pagecast that attaches to the QEMU lifts such a throttle at
	// once, whatever mode it then migrates in (it stayed for good, the
	// guest at a quarter of its pace, until a throttle migration came),
	// and removes the cgroup an exited QEMU's throttle left.
	leaveThrottle(left)
	gone := filepath.Join(qemuguest.CPUCgroupRoot, "pagecast-2147483647") // no such process
	if err := os.Mkdir(gone, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(gone) })
	lifted, err := qemuguest.ReclaimThrottle(src.PID(), src.VCPUThreads())
	if !lifted || err != nil {
		t.Fatalf("reclaim a killed pagecast's throttle: %v, %v", lifted, err)
	}
	r, share = measure()
	t.Logf("after the reclaim: %.0f writes/s, vCPU thread on a CPU %.0f%% of the time", r, 100*share)
	for _, dir := range []string{left, gone} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s is left after the reclaim (%v)", dir, err)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", src.PID(), tid)); err != nil || strings.Contains(string(b), "pagecast-") {
		t.Errorf("vCPU thread's cgroups after the reclaim: %s %v", b, err)
	}
	if lifted, err := qemuguest.ReclaimThrottle(src.PID(), src.VCPUThreads()); lifted || err != nil {
		t.Errorf("a second reclaim: %v, %v; want nothing to do", lifted, err)
	}

	// The reclaim of today's layout, the thread in its own cgroup, and an
	// exited QEMU's throttle with a thread's cgroup in it.
	leaveThrottle(leftThread)
	goneThread := filepath.Join(gone, "vcpu-1")
	if err := os.MkdirAll(goneThread, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(goneThread); os.Remove(gone) })
	if lifted, err := qemuguest.ReclaimThrottle(src.PID(), src.VCPUThreads()); !lifted || err != nil {
		t.Fatalf("reclaim a killed pagecast's throttle of a thread: %v, %v", lifted, err)
	}
	for _, dir := range []string{left, gone} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s is left after the reclaim of today's layout (%v)", dir, err)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", src.PID(), tid)); err != nil || strings.Contains(string(b), "pagecast-") {
		t.Errorf("vCPU thread's cgroups after the reclaim of today's layout: %s %v", b, err)
	}
}

// cpuTime is the time thread tid has spent on a CPU.
func cpuTime(t *testing.T, pid, tid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	var ns int64
	fmt.Sscan(string(b), &ns)
	return time.Duration(ns)
}

// TestAttach attaches to QEMUs started by hand, with guest RAM shared in a
// memfd or a file, or not shared.
func TestAttach(t *testing.T) {
	bin := testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("starts QEMU")
	}
	const mem = "-machine pc,memory-backend=mem -object "
	tests := []struct {
		name    string
		args    string
		wantErr error
	}{
		{"memfd", mem + "memory-backend-memfd,id=mem,size=64M,share=on", nil},
		{"file", mem + "memory-backend-file,id=mem,size=64M,share=on,mem-path=DIR/ram", nil},
		{"file with -cpu max", mem + "memory-backend-file,id=mem,size=64M,share=on,mem-path=DIR/ram -cpu max", nil},
		{"plain memory", "-m 64M", qemuguest.ErrNotShared},
		{"file not shared", mem + "memory-backend-file,id=mem,size=64M,mem-path=DIR/ram", qemuguest.ErrNotShared},
	}
	images := map[string][32]byte{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			sock := filepath.Join(dir, "qmp.sock")
			args := append(strings.Fields(strings.ReplaceAll(tt.args, "DIR", dir)),
				"-accel", "tcg", "-S", "-nodefaults", "-nographic", "-qmp", "unix:"+sock+",server=on,wait=off")
			cmd := exec.Command(bin, args...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			// QEMU binds its QMP socket before it listens: dial until it
			// answers.
			var s *qemuguest.Source
			var err error
			for i := 0; ; i++ {
				s, err = qemuguest.Dial(sock)
				if err == nil || !(errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist)) {
					break
				}
				if i == 500 {
					t.Fatalf("QMP socket not up after 5s: %v", err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || strings.Contains(fmt.Sprint(err), "\n") {
					t.Fatalf("Dial: %v; want one line wrapping %v", err, tt.wantErr)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.MemoryBytes() != 64<<20 || s.PID() != cmd.Process.Pid || s.Identity().VCPUs != 1 {
				t.Fatalf("%d bytes, pid %d (want %d), identity %+v", s.MemoryBytes(), s.PID(), cmd.Process.Pid, s.Identity())
			}
			images[tt.name] = s.Identity().Image
			// QEMU 8.1 and later send a memfd's RAM with the device state
			// (walk 111): pagecast's engine does not send such a guest.
			v, err := qemu.BinaryVersion(bin)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.CanSend(); (err != nil) != (tt.name == "memfd" && qemu.MigratesMemfdRAM(v)) ||
				err != nil && (!errors.Is(err, qemuguest.ErrStateCarriesRAM) || !strings.Contains(err.Error(), "memory-backend-file")) {
				t.Errorf("QEMU %s, %s: CanSend %v", v, tt.name, err)
			}
			// What this process writes QEMU's guest sees.
			copy(s.Memory()[0x100000:], []byte{0x78, 0x56, 0x34, 0x12})
			if got, err := qemuguest.HMP(s, "xp /1wx 0x100000"); err != nil || !strings.Contains(got, "0x12345678") {
				t.Errorf("guest reads %q, %v at 0x100000, want 0x12345678", got, err)
			}
		})
	}
	// The handshake compares the vCPU model too: on QEMU 7.2, whose
	// query-cpus-fast does not give it, it was left out (walk 122).
	if images["memfd"] != images["file"] {
		t.Errorf("two QEMUs alike but for their RAM's backend have identities %x and %x", images["memfd"], images["file"])
	}
	if images["file"] == images["file with -cpu max"] {
		t.Errorf("QEMUs with -cpu qemu64 and -cpu max have the same identity %x", images["file"])
	}
}

// A 3 GiB guest's RAM is all below 4 GiB: its writes past 2.75 GiB, where
// a q35 machine would have its hole, are in the dirty log (they were once
// dropped, and a migration of such a guest failed its memory check).
func TestDirtyLogPastTwoAndThreeQuarterGiB(t *testing.T) {
	t.Parallel()
	testutil.RequiresQEMU(t)
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	const memory = 3 << 30
	o := options(t, "uniform")
	o.MemoryBytes = memory
	s, err := qemuguest.StartSource(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitProgress(t, s.VM(), 1, 60*time.Second)
	log, err := s.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	var high, all uint64
	for deadline := time.Now().Add(30 * time.Second); high == 0 && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		b, err := log.Harvest()
		if err != nil {
			t.Fatal(err)
		}
		b.ForEach(func(p uint64) {
			all++
			if p >= 0xB0000000/4096 {
				high++
			}
		})
	}
	t.Logf("%d dirty pages, %d of them past 2.75 GiB", all, high)
	if high == 0 {
		t.Errorf("no dirty page past 2.75 GiB in %d, from a guest writing uniformly over 3 GiB", all)
	}
}

// quotaAtStop is the QEMU's monitor, noting the throttle's CFS quota as
// QMP stop is sent.
type quotaAtStop struct {
	qemuguest.Monitor
	dir   string
	quota []string
}

func (q *quotaAtStop) Run(cmd []byte) ([]byte, error) {
	if strings.Contains(string(cmd), `"stop"`) {
		b, _ := os.ReadFile(filepath.Join(q.dir, "cpu.cfs_quota_us"))
		q.quota = append(q.quota, strings.TrimSpace(string(b)))
	}
	return q.Monitor.Run(cmd)
}

// TestPauseThrottled: a throttled guest is stopped at full pace and
// throttled again once stopped. QEMU's stop waits for each vCPU thread to
// see it, which one throttled to 1% did only in its next CFS period: 48-250
// ms with the guest running and dirtying, in the migration's downtime.
func TestPauseThrottled(t *testing.T) {
	src := startSource(t, "hotset")
	// The vCPU thread's own cgroup in the throttle's holds its quota.
	mon := &quotaAtStop{Monitor: src.VM().Monitor, dir: filepath.Join(qemuguest.CPUCgroupRoot, fmt.Sprintf("pagecast-%d", src.PID()), fmt.Sprintf("vcpu-%d", src.VCPUThreads()[0]))}
	s, err := qemuguest.New(mon)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetThrottle(99); err != nil {
		t.Fatal(err)
	}
	var took []time.Duration
	for range 3 {
		t0 := time.Now()
		if err := s.Pause(); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(t0))
		if b, err := os.ReadFile(filepath.Join(mon.dir, "cpu.cfs_quota_us")); err != nil || strings.TrimSpace(string(b)) != "1000" {
			t.Errorf("the quota once stopped: %q %v, want 1000 (1%% of a 100 ms period) again", b, err)
		}
		if err := s.Resume(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	t.Logf("stopping the guest throttled at 99%% took %v", took)
	if want := []string{"-1", "-1", "-1"}; !slices.Equal(mon.quota, want) {
		t.Errorf("the quota as stop was sent: %v, want %v (unbounded)", mon.quota, want)
	}
	if s.Throttle() != 99 {
		t.Errorf("Throttle() after the pauses: %d, want 99", s.Throttle())
	}
}

// TestSecondAttachKeepsThrottle: a second pagecast attaching to a QEMU
// that a migration throttles (another pagecast migrate, or one choosing
// its engine) leaves that throttle alone: its dirty log is refused, the
// plugin's area (under TCG) or the dirty log's lock (under KVM) being the
// migration's, and the throttle's lock, held by the migration's process,
// would tell it the throttle is not a killed pagecast's. It may not
// throttle the QEMU itself either. Only once the migration's process is gone (its
// lock let go, as the kernel does for a killed process) does the next
// pagecast whose dirty log opens lift the throttle left behind. (New
// lifted it from under the migration, found by a review; under KVM a
// second dirty log opened and lifted it, found when /dev/kvm came back.)
func TestSecondAttachKeepsThrottle(t *testing.T) {
	src := startSource(t, "hotset")
	log, err := src.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if err := src.SetThrottle(50); err != nil {
		t.Fatal(err)
	}
	defer src.SetThrottle(0)
	tid := src.VCPUThreads()[0]
	throttled := func() bool {
		t.Helper()
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", src.PID(), tid))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(string(b), fmt.Sprintf("pagecast-%d", src.PID()))
	}
	second, err := qemuguest.Dial(src.VM().QMPPath)
	if err != nil {
		t.Fatal(err)
	}
	if l2, err := second.StartDirtyLog(); !errors.Is(err, tcg.ErrAreaBusy) {
		t.Errorf("a second dirty log of a QEMU a migration holds: %v, want it busy", err)
		if err == nil {
			l2.Close()
		}
	} else if !strings.Contains(err.Error(), fmt.Sprintf("this process (pid %d)", os.Getpid())) {
		t.Errorf("a second dirty log refused, not naming its holder: %v", err)
	}
	if !throttled() {
		t.Errorf("the migration's throttle was lifted by a second attach")
	}
	if err := second.SetThrottle(30); err == nil || !strings.Contains(err.Error(), "another pagecast") {
		t.Errorf("a second pagecast's throttle of a QEMU a migration throttles: %v, want refused", err)
	}
	second.Close()
	if !throttled() {
		t.Errorf("the migration's throttle was lifted by a second pagecast's close")
	}
	// The migration's pagecast gone (its area and throttle lock let go,
	// its throttle left), the next one whose dirty log opens lifts the
	// throttle.
	qemuguest.AbandonThrottle(src)
	log.Close()
	third, err := qemuguest.Dial(src.VM().QMPPath)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	l3, err := third.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	if throttled() {
		t.Errorf("a throttle left behind, after a pagecast's dirty log opened")
	}
}

// TestSecondLogKeepsFirst: a profile of a QEMU under KVM (eBPF, which
// any number of processes may attach) that starts and ends beside a
// migration's dirty log leaves that log seeing the guest's writes. Each
// kept QEMU's dirty logging on with its own dirty limit, and the
// profile's end cancelled it for both: the migration's log went blind
// (0 pages in 500 ms of a hotset guest; found when /dev/kvm came back).
// Under TCG the profile is refused, the plugin's area being the log's.
func TestSecondLogKeepsFirst(t *testing.T) {
	src := startSource(t, "hotset")
	first, err := src.StartDirtyLog()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	profile, err := collector.New(collector.Config{QMP: src.VM().QMPPath, Epoch: 100 * time.Millisecond})
	if src.VM().Accel() != qemu.AccelKVM {
		if !errors.Is(err, tcg.ErrAreaBusy) {
			t.Errorf("a profile beside a migration's dirty log under TCG: %v, want the area busy", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := profile.CloseEpoch(); err != nil {
		t.Fatal(err)
	}
	if err := profile.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Harvest(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	b, err := first.Harvest()
	if err != nil {
		t.Fatal(err)
	}
	if n := b.Count(); n == 0 {
		t.Errorf("the migration's dirty log saw no page written in 500 ms after a profile beside it ended")
	} else {
		t.Logf("%d pages in 500 ms", n)
	}
}

// lateReply answers stop 40 ms after QEMU did, as when the engine's thread
// waits for a CPU.
type lateReply struct{ *qmpclient.Client }

func (m lateReply) Run(cmd []byte) ([]byte, error) {
	out, err := m.Client.Run(cmd)
	if strings.Contains(string(cmd), `"stop"`) {
		time.Sleep(40 * time.Millisecond)
	}
	return out, err
}

// TestPausedAtStop: a QEMU source says when Pause stopped its vCPUs by
// QEMU's STOP event (migrator.PauseMarker), which the engine counts the
// downtime from, not by stop's reply read late; a Pause of a guest paused
// already says nothing.
func TestPausedAtStop(t *testing.T) {
	src := startSource(t, "hotset")
	s, err := qemuguest.New(lateReply{src.VM().Monitor})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var last time.Time
	for i := range 2 {
		t0 := time.Now().Truncate(time.Microsecond) // QEMU stamps its events to the µs
		if err := s.Pause(); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		at := s.PausedAt()
		if at.IsZero() || at.Before(t0) || t1.Sub(at) < 40*time.Millisecond {
			t.Errorf("pause %d: paused at %v, from %v to %v: want the STOP's time, at least 40 ms before stop's late reply",
				i, at.Format(time.StampMicro), t0.Format(time.StampMicro), t1.Format(time.StampMicro))
		}
		if !at.After(last) {
			t.Errorf("pause %d: paused at %v, not after the last pause's %v", i, at, last)
		}
		last = at
		if i == 0 {
			if err := s.Resume(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	if at := s.PausedAt(); !at.IsZero() {
		t.Errorf("a Pause of a paused guest: paused at %v, want zero (no STOP: it was paused)", at)
	}
}
