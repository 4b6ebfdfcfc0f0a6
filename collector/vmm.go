package collector

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pagecast/pagecast/bpf"
	"github.com/pagecast/pagecast/internal/proc"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/qmpclient"
	"github.com/pagecast/pagecast/trace"
)

// vcpuWait is how long a VM's vCPU threads are waited for.
const vcpuWait = 2 * time.Second

// Target is what the collector learned about the VM through QMP.
type Target struct {
	Kind        string // "pagecast" or "qemu"
	PID         int    // the VMM process
	MemoryBytes uint64
	DirtyMode   string     // bpf.ModeRing or bpf.ModeBitmap under KVM; DirtyTCG for QEMU under TCG
	Slots       []bpf.Slot // known memory slots (pagecast's monitor only)
	// SharedRAM: the guest RAM is shared memory another process can map
	// (always for pagecast's monitor; for QEMU, a memory backend with
	// share=on). Profiling does not need it; moving RAM with pagecast's
	// engine does.
	SharedRAM bool
	// Layout is where the RAM of a QEMU lies in guest-physical memory, as
	// QEMU says (qemu.ReadLayout), where pages are named by frame (KVM, or
	// TCG with PluginAddresses); zero where it was not read.
	Layout qemu.Layout
	// Guest is trace.GuestPagecast where the VM runs pagecast's own guest
	// (pagecast's monitor, or a QEMU whose guest's status page says so:
	// qemu.RunsPagecastGuest), else "": not known.
	Guest string
	// PluginAddresses: under TCG, the plugin names pages by guest-physical
	// frame (QEMU 8.2), not by offset in RAM (7.2); see
	// qemu.PluginAddresses. The collector turns them into RAM pages.
	PluginAddresses bool
}

// DirtyTCG is Target.DirtyMode of a QEMU that runs its guest under TCG: no
// KVM dirty tracking at all, pages come from pagecast's TCG plugin.
const DirtyTCG = "tcg"

// MaxPages is the number of page frames to track. KVM's hooks name a page
// by its guest-physical frame: guest RAM, plus the gap below 4 GiB where a
// large QEMU guest's memory is split. The TCG plugin names it by its
// offset in RAM (see package tcg): guest RAM, the part QEMU maps from
// 4 GiB up right after the 3 GiB below. (Until 2026-12-02 a TCG profile of
// a 5 GiB guest was a 6 GiB trace, whose last GiB was never written, and a
// simulation of it moved a GiB the guest does not have.) Frames follow
// the layout QEMU gave (a q35 keeps less below 4 GiB than a pc, and its
// top GiB was counted out of range), else a pc's.
func (t Target) MaxPages() uint64 {
	if t.DirtyMode == DirtyTCG {
		return t.MemoryBytes / 4096
	}
	return t.RAMLayout().Frames()
}

// RAMLayout is Layout where it was read, else a pc machine's of the
// target's memory size.
func (t Target) RAMLayout() qemu.Layout {
	if t.Layout.RAMBytes() != 0 {
		return t.Layout
	}
	return qemu.MachineLayout("pc", t.MemoryBytes)
}

// vmmControl is the QMP conversation the collector has with the VMM.
type vmmControl struct {
	mon     *qmpclient.Client
	target  Target
	logging *qemu.DirtyLogging // a KVM QEMU's dirty logging, held while logging
}

// connect opens the QMP socket and learns the target.
func connect(path string, pid int) (*vmmControl, error) {
	mon, err := qmpclient.Open(path, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &vmmControl{mon: mon}
	// A VMM that greets and then answers nothing (stopped with SIGSTOP,
	// or stuck) held the collector for good (found by a review walk):
	// hanging up ends the command waiting for its reply.
	learned := make(chan error, 1)
	go func() { learned <- c.learn(pid) }()
	select {
	case err := <-learned:
		if err != nil {
			mon.Disconnect()
			return nil, err
		}
		return c, nil
	case <-time.After(learnWait):
		mon.Disconnect()
		<-learned
		return nil, fmt.Errorf("qmp %s: the VM greeted, then answered no command in %v: is it stopped (SIGSTOP) or stuck?", path, learnWait)
	}
}

// learnWait is how long the VMM has to answer what the collector asks of it.
var learnWait = 10 * time.Second

func (c *vmmControl) learn(pid int) error {
	var version struct {
		Package string       `json:"package"`
		QEMU    qemu.Version `json:"qemu"`
	}
	if err := qemu.QMP(c.mon, "query-version", nil, &version); err != nil {
		return err
	}
	t := &c.target
	t.Kind = "qemu"
	if strings.HasPrefix(version.Package, "pagecast") {
		t.Kind = "pagecast"
	}
	var mem struct {
		Base uint64 `json:"base-memory"`
	}
	if err := qemu.QMP(c.mon, "query-memory-size-summary", nil, &mem); err != nil {
		return err
	}
	t.MemoryBytes = mem.Base
	t.PID = pid
	switch st, err := qemu.RunState(c.mon); {
	case err == nil && st == "inmigrate":
		// No vCPU threads yet on pagecast's monitor, and nothing written
		// under QEMU: it said "give --pid", and with one recorded empty
		// epochs (found by a new-user walk).
		return errors.New("the VM is waiting for an incoming migration (run state inmigrate): no guest runs there to profile until the migration has brought it")
	case err == nil && st == "postmigrate":
		// It ended at once, exit 0, with an empty trace and a scan of the
		// memory the guest left (walk 82).
		return errors.New("the VM has migrated away (run state postmigrate): its guest runs elsewhere: give the destination's QMP socket")
	}
	var cpus []vcpu
	// A VM just started may not have its vCPU threads yet: asked again
	// for a while (CI, under load: "reports no vCPU threads" for a VM
	// whose threads came a moment later).
	for deadline := time.Now().Add(vcpuWait); ; time.Sleep(20 * time.Millisecond) {
		cpus = nil
		if err := qemu.QMP(c.mon, "query-cpus-fast", nil, &cpus); err != nil {
			return err
		}
		if pid != 0 || len(cpus) > 0 && cpus[0].ThreadID != 0 || time.Now().After(deadline) {
			break
		}
	}
	switch {
	case pid != 0:
		if err := checkPID(pid, cpus); err != nil {
			return err
		}
	case len(cpus) == 0 || cpus[0].ThreadID == 0:
		return errors.New("the VMM reports no vCPU threads; give --pid")
	default:
		p, err := tgid(cpus[0].ThreadID)
		if err != nil {
			return err
		}
		t.PID = p
	}
	if t.Kind == "pagecast" {
		t.Guest = trace.GuestPagecast
		t.SharedRAM = true
		var slots []struct {
			Slot  uint32 `json:"slot"`
			Addr  uint64 `json:"guest-phys-addr"`
			Size  uint64 `json:"size"`
			Dirty string `json:"dirty-mode"`
		}
		if err := qemu.QMP(c.mon, "x-pagecast-query-memslots", nil, &slots); err != nil {
			return err
		}
		for _, s := range slots {
			t.Slots = append(t.Slots, bpf.Slot{ID: s.Slot, BaseGFN: s.Addr / 4096, Pages: s.Size / 4096})
			t.DirtyMode = s.Dirty
		}
		return nil
	}
	var memdevs []struct {
		ID    string `json:"id"`
		Share bool   `json:"share"`
	}
	if err := qemu.QMP(c.mon, "query-memdev", nil, &memdevs); err != nil {
		return err
	}
	t.SharedRAM = len(memdevs) > 0
	switch own, err := qemu.RunsPagecastGuest(c.mon); {
	case err != nil:
		slog.Debug("could not tell whether the guest is pagecast's own", "err", err)
	case own:
		t.Guest = trace.GuestPagecast
	}
	for _, m := range memdevs {
		t.SharedRAM = t.SharedRAM && m.Share
	}
	// QEMU under TCG has no KVM dirty tracking (and some dirty-rate
	// commands crash it): only query-kvm is asked.
	var kvm struct {
		Enabled bool `json:"enabled"`
	}
	if err := qemu.QMP(c.mon, "query-kvm", nil, &kvm); err != nil {
		return err
	}
	if !kvm.Enabled {
		t.DirtyMode = DirtyTCG
		if t.PluginAddresses = qemu.PluginAddresses(version.QEMU); !t.PluginAddresses {
			return nil
		}
	} else {
		// QEMU under KVM: a dirty limit works only with the dirty ring,
		// so trying it is the test; it is set when logging starts.
		t.DirtyMode = bpf.ModeRing
	}
	backend := "" // the RAM at address 0
	if len(memdevs) == 1 {
		backend = memdevs[0].ID
	}
	l, err := qemu.ReadLayout(c.mon, backend, t.MemoryBytes)
	if err != nil {
		// The machine's usual split, not a pc's whatever the machine
		// (review 54: a q35's top GiB was then out of range).
		var machine string
		if qemu.QMP(c.mon, "qom-get", map[string]any{"path": "/machine", "property": "type"}, &machine) != nil {
			machine = "pc"
		}
		l = qemu.MachineLayout(machine, t.MemoryBytes)
		slog.Warn("taking the guest's RAM to lie where QEMU puts a machine's by default: pages past 4 GiB may be named wrongly", "machine", machine, "err", err)
	}
	t.Layout = l
	return nil
}

var errTgid = errors.New("vCPU thread not found")

// vcpu is a vCPU as query-cpus-fast gives it.
type vcpu struct {
	ThreadID int `json:"thread-id"`
}

// checkPID checks that process pid (--pid) is the VM behind the QMP socket,
// whose vCPU threads are cpus: they must be among its threads. (Until
// 2026-12-04 another VM's pid was taken as it came: its writes were
// recorded under the QMP VM's memory size.) Without a thread id to go by,
// nothing is said.
func checkPID(pid int, cpus []vcpu) error {
	// A thread's id passes for its process's in /proc (the vCPU's
	// thread-id, as query-cpus-fast shows it, say): the hooks match
	// events by process, and would match none (found by a review walk).
	if owner, err := tgid(pid); err == nil && owner != pid {
		return fmt.Errorf("--pid %d is a thread of process %d, not a process: give --pid %d, or leave --pid out", pid, owner, owner)
	}
	for _, cpu := range cpus {
		if cpu.ThreadID == 0 {
			continue
		}
		_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", pid, cpu.ThreadID))
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("check that --pid %d is the VM behind the QMP socket: %w", pid, err)
		}
		if owner, err := tgid(cpu.ThreadID); err == nil {
			return fmt.Errorf("--pid %d is not the VM behind the QMP socket: that VM is process %d (its vCPU thread %d); "+
				"give --pid %d, or leave --pid out", pid, owner, cpu.ThreadID, owner)
		}
		return fmt.Errorf("--pid %d is not the VM behind the QMP socket: its vCPU thread %d is not among process %d's threads; "+
			"leave --pid out to find the VM from its vCPU threads", pid, cpu.ThreadID, pid)
	}
	return nil
}

// tgid maps a thread id to its process id.
func tgid(tid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errTgid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("%w: no Tgid in /proc/%d/status", errTgid, tid)
}

// startLogging keeps KVM dirty logging on for the VM.
func (c *vmmControl) startLogging() error {
	if c.mon == nil || c.target.DirtyMode == DirtyTCG {
		return nil // no QMP: the VMM keeps logging on itself; TCG: the plugin records
	}
	if c.target.Kind == "pagecast" {
		return qemu.QMP(c.mon, "x-pagecast-dirty-log-start", nil, nil)
	}
	// QEMU's dirty limit, shared with any other pagecast process on this
	// QEMU (a migration beside the profile): the last to stop cancels it.
	logging, err := qemu.HoldDirtyLogging(c.mon, c.target.PID)
	if err != nil {
		return err
	}
	c.logging = logging
	return nil
}

func (c *vmmControl) stopLogging() error {
	if c.mon == nil || c.target.DirtyMode == DirtyTCG {
		return nil
	}
	if c.target.Kind == "pagecast" {
		return qemu.QMP(c.mon, "x-pagecast-dirty-log-stop", nil, nil)
	}
	err := c.logging.Release()
	c.logging = nil
	return err
}

// ErrVMGone is what the collector's errors match (errors.Is) once the VM's
// process has exited.
var ErrVMGone = errors.New("the VM has exited")

// goneError says how the VM has gone, and is ErrVMGone.
type goneError struct{ msg string }

func (e *goneError) Error() string        { return e.msg }
func (e *goneError) Is(target error) bool { return target == ErrVMGone }

// Seams for the liveness check: signal 0 and /proc/PID/stat.
var (
	signalProcess = syscall.Kill
	readProcStat  = func(pid int) ([]byte, error) { return os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)) }
)

// alive returns an error wrapping ErrVMGone once the VMM process has gone
// (no such process, or a zombie), and another error when that cannot be
// told: a process out of file descriptors cannot read /proc, but its VM
// may well run on (until 2026-12-04 that was reported as an exit).
func (c *vmmControl) alive() error {
	pid := c.target.PID
	if pid == 0 {
		return nil
	}
	gone := func(how string) error {
		return &goneError{fmt.Sprintf("the VM's %s (pid %d) %s", c.target.Kind, pid, how)}
	}
	// Signal 0 needs no file descriptor; EPERM means the process exists.
	if err := signalProcess(pid, 0); errors.Is(err, syscall.ESRCH) {
		return gone("has exited")
	}
	b, err := readProcStat(pid)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return gone("has exited")
	}
	if err != nil {
		return fmt.Errorf("check that the VM's %s (pid %d) still runs: %w", c.target.Kind, pid, err)
	}
	if proc.Exited(b) { // a zombie has exited too
		return gone("has exited")
	}
	return nil
}

func (c *vmmControl) close() {
	if c.mon != nil {
		c.mon.Disconnect()
	}
}
