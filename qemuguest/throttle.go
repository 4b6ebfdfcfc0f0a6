package qemuguest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pagecast/pagecast/qemu"
)

// CPUCgroupRoot is where cgroup v1's cpu controller is mounted.
var CPUCgroupRoot = "/sys/fs/cgroup/cpu"

// cpuThrottle slows QEMU's vCPU threads from outside: a cgroup of the cpu
// controller, pagecast-<pid>, of no quota of its own, holding a cgroup for
// each vCPU thread, vcpu-<tid>, whose CFS quota is the share of each period
// that thread may run. Only the vCPU threads go in, so QEMU's monitor and
// I/O threads keep their pace.
type cpuThrottle struct {
	dir  string         // the cgroup, created on first use
	lock *os.File       // dir, flocked while this process throttles (lockThrottle)
	home map[int]string // each thread's cgroup before, to go back to
	// threads are dir's cgroups, one a vCPU thread (vcpu-TID), each with
	// its quota: one for them all, in dir, let a busy vCPU take an idle
	// one's share (review 84).
	threads []string
	pct     int
}

// threadCgroup is the name of a vCPU thread's cgroup in the throttle's.
func threadCgroup(tid int) string { return fmt.Sprintf("vcpu-%d", tid) }

// homeOf is where a thread in cgroup cg (relative to CPUCgroupRoot) goes
// back to, and whether cg is throttle name's (a killed pagecast's: the
// thread in name/vcpu-TID, or in name itself as before 2026-12-05).
func homeOf(cg, name string) (string, bool) {
	if strings.HasPrefix(filepath.Base(cg), "vcpu-") && filepath.Base(filepath.Dir(cg)) == name {
		return filepath.Dir(filepath.Dir(cg)), true
	}
	if filepath.Base(cg) == name {
		return filepath.Dir(cg), true
	}
	return cg, false
}

// lockThrottle opens a throttle's cgroup dir and takes its flock, which
// the kernel lets go when the process holding it exits, killed or not: a
// throttle whose lock is held is a live pagecast's, one whose lock can be
// taken was left by a pagecast killed mid-migration. It returns
// errThrottleHeld where another process holds it.
func lockThrottle(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	switch ok, err := qemu.TryLock(f, syscall.LOCK_EX); {
	case err != nil:
		f.Close()
		return nil, err
	case !ok:
		f.Close()
		return nil, errThrottleHeld
	}
	return f, nil
}

// errThrottleHeld is a throttle another live process holds.
var errThrottleHeld = errors.New("another pagecast is throttling this QEMU")

// cfsPeriod is the CFS period the quota is a share of: short, so a
// throttled guest runs in slices of a few milliseconds rather than stalling
// for long ones; longer where the quota would fall below the kernel's
// 1 ms minimum.
func cfsPeriod(pct int) time.Duration {
	const base, minQuota = 20 * time.Millisecond, time.Millisecond
	p := base
	if left := time.Duration(100 - pct); left*base/100 < minQuota {
		// Rounded up, to whole microseconds as the kernel takes it: 97%
		// rounded down gave a period of 33 333 µs and a quota of 999,
		// which the kernel refused (EINVAL) and the migration failed
		// (found by a new-user walk).
		p = ((minQuota*100+left-1)/left + time.Microsecond - 1).Truncate(time.Microsecond)
	}
	return p
}

// cfsQuota is the quota of pct's period: what is left of it, in whole
// microseconds, at least the kernel's 1 ms.
func cfsQuota(period time.Duration, pct int) time.Duration {
	return max(time.Millisecond, (period * time.Duration(100-pct) / 100).Truncate(time.Microsecond))
}

// set throttles threads tids of QEMU pid to 100-pct percent of a CPU each,
// each period (pct 1…99), or lifts the throttle (pct 0). Each thread (a
// vCPU's under KVM and TCG's multi-threaded mode; one TCG thread runs every
// vCPU in its single-threaded mode) has a cgroup and quota of its own. One
// quota of one CPU's share for them all gave a 2-vCPU guest throttled
// "93%" 3.5% of a CPU a vCPU (walk 82); one of a share for each, pooled,
// let a busy vCPU run on an idle one's (review 84).
func (c *cpuThrottle) set(pid int, tids []int, pct int) error {
	if pct <= 0 {
		return c.lift()
	}
	if c.dir == "" {
		if err := c.create(pid, tids); err != nil {
			return err
		}
	}
	period := cfsPeriod(pct)
	quota := cfsQuota(period, pct)
	write := []struct {
		file string
		val  int64
	}{{"cpu.cfs_period_us", period.Microseconds()}, {"cpu.cfs_quota_us", quota.Microseconds()}}
	// Every thread is tried: stopping at the first that failed left
	// the others at their last share, the guest's vCPUs slowed apart.
	var errs []error
	for _, th := range c.threads {
		for _, w := range write {
			if err := writeInt(filepath.Join(c.dir, th, w.file), w.val); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("throttle qemu %d to %d%%: %w", pid, pct, err)
	}
	c.pct = pct
	return nil
}

// canThrottle says why this process cannot throttle threads tids of QEMU
// pid, nil where it can: throttle mode slowed the guest only once its
// rounds had run, and failed there as another user than root, "mkdir
// /sys/fs/cgroup/cpu/pagecast-N: permission denied" (found by a walk).
func canThrottle(pid int, tids []int) error {
	if len(tids) == 0 {
		return fmt.Errorf("QEMU %d: no vCPU thread found to throttle", pid)
	}
	if _, err := os.Stat(filepath.Join(CPUCgroupRoot, "cpu.cfs_quota_us")); err != nil {
		return fmt.Errorf("cgroup v1's cpu controller, through which pagecast slows QEMU's vCPU threads, is not mounted at %s", CPUCgroupRoot)
	}
	cg, err := cpuCgroupOf(pid, tids[0])
	if err != nil {
		return err
	}
	cg, _ = homeOf(cg, fmt.Sprintf("pagecast-%d", pid)) // a killed pagecast's throttle, taken over (create)
	// Made and removed, as create makes its own: access(2) judged by the
	// real user, not the capabilities a process has (review 63).
	dir := filepath.Join(CPUCgroupRoot, cg)
	// Named for this process and the moment: mkdir says "exists" before
	// "not permitted", so a leftover of the same name would pass
	// (review 64). sweepThrottles removes one a killed pagecast left.
	probe := filepath.Join(dir, fmt.Sprintf("pagecast-probe-%d-%d", os.Getpid(), time.Now().UnixNano()))
	err = os.Mkdir(probe, 0o755)
	if err == nil {
		os.Remove(probe)
		return nil
	}
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("pagecast slows QEMU's vCPU threads through a cgroup it makes in %s, and may not (%w): run pagecast as root", dir, err)
	}
	return fmt.Errorf("pagecast slows QEMU's vCPU threads through a cgroup it makes in %s, and cannot (%w)", dir, err)
}

// create makes the cgroup beside the vCPU threads' own and moves them in.
func (c *cpuThrottle) create(pid int, tids []int) error {
	if _, err := os.Stat(filepath.Join(CPUCgroupRoot, "cpu.cfs_quota_us")); err != nil {
		return fmt.Errorf("throttle qemu %d: cgroup v1's cpu controller is not mounted at %s: %w", pid, CPUCgroupRoot, err)
	}
	name := fmt.Sprintf("pagecast-%d", pid)
	home := map[int]string{}
	for _, tid := range tids {
		cg, err := cpuCgroupOf(pid, tid)
		if err != nil {
			return err
		}
		// A pagecast killed (SIGKILL) while it throttled this QEMU left
		// the thread in its cgroup: that cgroup is taken over, and the
		// thread goes home when this throttle lifts.
		home[tid], _ = homeOf(cg, name)
	}
	dir := filepath.Join(CPUCgroupRoot, home[tids[0]], name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("throttle qemu %d: %w", pid, err)
	}
	lock, err := lockThrottle(dir)
	if err != nil {
		return fmt.Errorf("throttle qemu %d: %w", pid, err)
	}
	c.dir, c.lock, c.home = dir, lock, home
	// The group's own quota, a killed pagecast's before 2026-12-05, would
	// bound its threads' (and refuse theirs above it).
	if err := writeInt(filepath.Join(dir, "cpu.cfs_quota_us"), -1); err != nil {
		c.lift()
		return fmt.Errorf("throttle qemu %d: %w", pid, err)
	}
	for tid := range home { // each thread once: one TCG thread may run every vCPU
		th := threadCgroup(tid)
		if err := os.Mkdir(filepath.Join(dir, th), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			c.lift()
			return fmt.Errorf("throttle qemu %d: %w", pid, err)
		}
		c.threads = append(c.threads, th)
		if err := writeInt(filepath.Join(dir, th, "tasks"), int64(tid)); err != nil && !isNoProcess(err) { // one that exited needs none
			c.lift()
			return fmt.Errorf("throttle qemu %d: move vCPU thread %d: %w", pid, tid, err)
		}
	}
	return nil
}

// unbound lets the throttled threads run at full pace, in their cgroup,
// until the next set.
func (c *cpuThrottle) unbound() error {
	if c.dir == "" {
		return nil
	}
	// Every thread is tried: stopping at the first that failed left the
	// others throttled through the stop-and-copy.
	var errs []error
	for _, th := range c.threads {
		if err := writeInt(filepath.Join(c.dir, th, "cpu.cfs_quota_us"), -1); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unthrottle for the stop: %w", err)
	}
	return nil
}

// lift moves the threads back where they were and removes the cgroup.
// Each thread's quota goes first: moved out while throttled, a vCPU
// thread sometimes stood runnable and did not run for up to a second (20
// of 86 lifts after 50, 90 and 99%, on a QEMU started by vm run and
// throttled from another process, as migrate does; none where the
// throttling process had started QEMU itself), and auto's page-rate probe,
// reading the vCPUs' CPU time then, took a busy guest for idle. Unbounded
// first, none of 41 stalled.
func (c *cpuThrottle) lift() error {
	if c.dir == "" {
		return nil
	}
	var errs []error
	for _, th := range c.threads {
		err := writeInt(filepath.Join(c.dir, th, "cpu.cfs_quota_us"), -1)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unbound %s: %w", th, err))
		}
	}
	for tid, home := range c.home {
		err := writeInt(filepath.Join(CPUCgroupRoot, home, "tasks"), int64(tid))
		if err != nil && !errors.Is(err, os.ErrNotExist) && !isNoProcess(err) {
			errs = append(errs, fmt.Errorf("move vCPU thread %d back: %w", tid, err))
		}
	}
	if err := removeThrottle(c.dir); err != nil {
		errs = append(errs, err)
	}
	c.lock.Close()
	c.dir, c.lock, c.home, c.threads, c.pct = "", nil, nil, nil, 0
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lift throttle: %w", err)
	}
	return nil
}

// reclaimThrottle lifts a throttle a pagecast killed mid-migration left on
// QEMU pid (its vCPU threads tids still in cgroup pagecast-<pid>, or in its
// vcpu-<tid>, at their quota: they would run throttled for good) and
// removes what such cgroups are left of QEMUs that have exited. It reports
// whether it lifted one. A throttle whose lock a live process holds is that process's and
// is left as it is: under KVM nothing else keeps a second pagecast off a
// QEMU one is migrating (found when /dev/kvm came back).
func reclaimThrottle(pid int, tids []int) (bool, error) {
	sweepThrottles()
	name := fmt.Sprintf("pagecast-%d", pid)
	var dir string
	var errs []error
	for _, tid := range tids {
		cg, err := cpuCgroupOf(pid, tid)
		if err != nil {
			continue
		}
		home, in := homeOf(cg, name)
		if !in {
			continue
		}
		if dir == "" {
			lock, err := lockThrottle(filepath.Join(CPUCgroupRoot, home, name))
			if errors.Is(err, errThrottleHeld) {
				return false, nil
			}
			if err == nil {
				defer lock.Close()
			}
		}
		dir = filepath.Join(CPUCgroupRoot, home, name)
		// Unbounded before it moves, as lift does.
		if err := writeInt(filepath.Join(CPUCgroupRoot, cg, "cpu.cfs_quota_us"), -1); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unbound vCPU thread %d in %s: %w", tid, cg, err))
		}
		if err := writeInt(filepath.Join(CPUCgroupRoot, home, "tasks"), int64(tid)); err != nil && !isNoProcess(err) {
			errs = append(errs, fmt.Errorf("move vCPU thread %d out of %s: %w", tid, dir, err))
		}
	}
	if dir == "" {
		return false, nil
	}
	if err := removeThrottle(dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return true, fmt.Errorf("lift the throttle a killed pagecast left on qemu %d: %w", pid, err)
	}
	return true, nil
}

// LiftLeftThrottle lifts a throttle a pagecast killed mid-migration left on
// QEMU process pid (any of its threads in cgroup pagecast-<pid> or its
// vcpu-<tid>, no live process holding its lock), and reports whether it did: for a profile,
// which measured a guest slowed to a twentieth of its pace, unsaid (found
// by a new-user walk). A live migration's throttle is left alone.
func LiftLeftThrottle(pid int) (bool, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false, fmt.Errorf("threads of qemu %d: %w", pid, err)
	}
	var tids []int
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return reclaimThrottle(pid, tids)
}

// sweepThrottles removes the cgroups pagecast-<pid> of QEMUs that have
// exited, at the top of the cpu controller and a level down (beside a
// QEMU's own cgroup): a throttle left by a killed pagecast outlives its
// QEMU, empty.
func sweepThrottles() {
	for _, pattern := range []string{"pagecast-*", "*/pagecast-*"} {
		dirs, _ := filepath.Glob(filepath.Join(CPUCgroupRoot, pattern))
		for _, dir := range dirs {
			name := strings.TrimPrefix(filepath.Base(dir), "pagecast-")
			if probe, ok := strings.CutPrefix(name, "probe-"); ok {
				name, _, _ = strings.Cut(probe, "-") // canThrottle's, by its pid
			}
			pid, err := strconv.Atoi(name)
			if err != nil {
				continue
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
				removeThrottle(dir) // fails, harmlessly, if a task is still in it
			}
		}
	}
}

// removeThrottle removes a throttle's cgroup dir and its threads' within.
func removeThrottle(dir string) error {
	threads, _ := filepath.Glob(filepath.Join(dir, "vcpu-*"))
	var errs []error
	for _, th := range threads {
		if err := os.Remove(th); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// isNoProcess is the error of writing a thread that has exited to tasks.
func isNoProcess(err error) bool { return strings.Contains(err.Error(), "no such process") }

// cpuCgroupOf is the cpu controller's cgroup of thread tid of process pid,
// relative to CPUCgroupRoot.
func cpuCgroupOf(pid, tid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/cgroup", pid, tid))
	if err != nil {
		return "", fmt.Errorf("cgroup of vCPU thread %d: %w", tid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, ctl := range strings.Split(f[1], ",") {
			if ctl == "cpu" {
				return f[2], nil
			}
		}
	}
	return "", fmt.Errorf("vCPU thread %d is in no cgroup of v1's cpu controller", tid)
}

func writeInt(path string, v int64) error {
	return os.WriteFile(path, []byte(strconv.FormatInt(v, 10)), 0)
}
