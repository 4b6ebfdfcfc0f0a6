package collector

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pagecast/pagecast/bpf"
	"github.com/pagecast/pagecast/qemu"
)

// Config describes a profiling session.
type Config struct {
	QMP string // the VMM's QMP socket; empty: PID and MemoryBytes say the VM
	PID int    // the VMM process; 0: found from its vCPU threads
	// MemoryBytes is the guest RAM when there is no QMP socket. The VMM
	// must then keep dirty logging on itself (as during a migration).
	MemoryBytes uint64
	// Layout is where that RAM lies in guest-physical memory, with no QMP
	// socket (qemu.ReadLayout); zero: a pc machine's.
	Layout qemu.Layout
	Epoch  time.Duration // default 1 s
	// Hook is a bpf.Hooks name or HookTCG; empty: the TCG plugin for a
	// QEMU running under TCG, else the best eBPF hook that works.
	Hook   string
	Events bool // also stream raw events (eBPF ring buffer)
	// RingIndices also follows the dirty rings' push and reset indices
	// (eBPF, ring mode; Profiler().RingIndices).
	RingIndices bool
	Log         *slog.Logger
}

// Epoch is the set of pages dirtied in one epoch.
type Epoch struct {
	Index    uint64
	Start    time.Time
	Duration time.Duration
	Pages    []uint64 // guest page frame numbers, ascending
}

// Collector profiles one VM.
type Collector struct {
	cfg       Config
	log       *slog.Logger
	vmm       *vmmControl
	hook      hook
	prof      *bpf.Profiler // with an eBPF hook
	fallbacks []bpf.HookStatus
	pageBuf   []uint64

	mu    sync.Mutex
	final *Stats    // the hook's counts when Run returned; nil while it runs
	epoch uint32    // the epoch the programs are recording
	start time.Time // of the current epoch
	began time.Time // of epoch 1
	total uint64    // pages summed over closed epochs
	rate  float64   // bytes/s dirtied in the latest epoch
	// lastLength is the latest closed epoch's measured length.
	lastLength time.Duration
	logging    bool
	closed     bool
}

// MinEpoch is the shortest epoch New takes.
const MinEpoch = 10 * time.Millisecond

// New connects to the VM and attaches a hook: pagecast's TCG plugin for a
// QEMU that runs the guest under TCG (started with -plugin, see package
// tcg), else the eBPF programs, with KVM dirty logging turned on. Close
// undoes it all.
func New(cfg Config) (_ *Collector, err error) {
	if cfg.Epoch == 0 {
		cfg.Epoch = time.Second
	}
	if cfg.Epoch < MinEpoch {
		return nil, fmt.Errorf("epoch %s is shorter than %v", cfg.Epoch, MinEpoch)
	}
	if _, ok := bpf.HookByName(cfg.Hook); cfg.Hook != "" && cfg.Hook != HookTCG && !ok {
		names := []string{HookTCG}
		for _, h := range bpf.Hooks {
			names = append(names, h.Name)
		}
		return nil, fmt.Errorf("--hook: unknown hook %q; the hooks are %s (--list-hooks says which work here)", cfg.Hook, strings.Join(names, ", "))
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Collector{cfg: cfg, log: cfg.Log.With("component", "collector")}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if cfg.QMP == "" {
		if cfg.PID == 0 || cfg.MemoryBytes == 0 {
			return nil, errors.New("profile: give the VM's QMP socket, or its process id and memory size")
		}
		if err := holdsKVMVM(cfg.PID); err != nil {
			return nil, err
		}
		c.vmm = &vmmControl{target: Target{Kind: "process", PID: cfg.PID, MemoryBytes: cfg.MemoryBytes, DirtyMode: bpf.ModeRing, Layout: cfg.Layout}}
	} else if c.vmm, err = connect(cfg.QMP, cfg.PID); err != nil {
		return nil, err
	}
	t := c.vmm.target
	useTCG := cfg.Hook == HookTCG || (cfg.Hook == "" && t.DirtyMode == DirtyTCG)
	switch {
	case useTCG && t.DirtyMode != DirtyTCG:
		return nil, fmt.Errorf("--hook %s: the VM does not run under QEMU's TCG (its dirty tracking is %s)", HookTCG, t.DirtyMode)
	case !useTCG && t.DirtyMode == DirtyTCG:
		return nil, fmt.Errorf("--hook %s: QEMU runs this VM under TCG, where KVM's hooks see nothing; use %s", cfg.Hook, HookTCG)
	case useTCG:
		var layout *qemu.Layout
		if t.PluginAddresses {
			l := t.RAMLayout()
			layout = &l
		}
		h, err := openTCG(t.PID, t.MemoryBytes, layout)
		if err != nil {
			return nil, err
		}
		c.hook = h
	default:
		if err := bpf.CheckPrivileges(); err != nil {
			return nil, err
		}
		prof, err := bpf.Load(bpf.Options{
			PID:         uint32(t.PID),
			MaxPages:    t.MaxPages(),
			Mode:        t.DirtyMode,
			Hook:        cfg.Hook,
			Slots:       t.Slots,
			Events:      cfg.Events,
			RingIndices: cfg.RingIndices,
		})
		if err != nil {
			return nil, err
		}
		c.prof = prof
		c.hook = &bpfHook{prof: prof, states: make([]bpf.PageState, t.MaxPages())}
		c.fallbacks = prof.Fallbacks
		for _, f := range prof.Fallbacks {
			c.log.Debug("hook unavailable, falling back", "hook", f.Hook.Name, "reason", f.Err)
		}
	}
	c.epoch = 1
	if err := c.hook.setEpoch(c.epoch); err != nil {
		return nil, err
	}
	if err := c.vmm.startLogging(); err != nil {
		return nil, err
	}
	c.logging = true
	c.start = time.Now()
	c.began = c.start
	c.log.Info("profiling", "vmm", t.Kind, "pid", t.PID, "memory_bytes", t.MemoryBytes,
		"dirty_mode", t.DirtyMode, "hook", c.hook.name())
	return c, nil
}

// Began is when the first epoch started.
func (c *Collector) Began() time.Time { return c.began }

// Target describes the profiled VM.
func (c *Collector) Target() Target { return c.vmm.target }

// Monitor is the collector's connection to the VM's QMP socket, for asking
// the VM more (a QEMU serves one client at a time); nil once closed.
func (c *Collector) Monitor() qemu.Runner {
	if c.vmm.mon == nil {
		return nil
	}
	return c.vmm.mon
}

// Hook is the name of the hook in use: a bpf.Hooks name or HookTCG.
func (c *Collector) Hook() string { return c.hook.name() }

// Fallbacks are the better eBPF hooks that could not be used, and why.
func (c *Collector) Fallbacks() []bpf.HookStatus { return c.fallbacks }

// Profiler is the loaded eBPF programs; nil with the TCG plugin.
func (c *Collector) Profiler() *bpf.Profiler { return c.prof }

// Stats are the hook's counters.
func (c *Collector) Stats() (Stats, error) {
	c.mu.Lock()
	final := c.final
	c.mu.Unlock()
	if final != nil {
		return *final, nil
	}
	return c.hook.stats()
}

// grace lets program runs that read the old epoch number finish their
// update before the map is read.
const grace = 2 * time.Millisecond

// CloseEpoch ends the current epoch and returns the pages dirtied in it.
func (c *Collector) CloseEpoch() (Epoch, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	closed := c.epoch
	end := time.Now()
	if err := c.vmm.alive(); err != nil {
		return Epoch{}, err
	}
	if err := c.hook.setEpoch(closed + 1); err != nil {
		return Epoch{}, err
	}
	c.epoch = closed + 1
	time.Sleep(grace)
	pages, err := c.hook.pages(closed, c.pageBuf[:0])
	if err != nil {
		return Epoch{}, err
	}
	c.pageBuf = pages
	e := Epoch{Index: uint64(closed), Start: c.start, Duration: end.Sub(c.start), Pages: slices.Clone(pages)}
	c.start = end
	c.total += uint64(len(e.Pages))
	c.rate = float64(len(e.Pages)) * 4096 / e.Duration.Seconds()
	c.lastLength = e.Duration
	return e, nil
}

// Run closes an epoch every cfg.Epoch and hands each to fn, until ctx ends
// or fn fails. The epoch under way when ctx ends is closed and handed on
// too where it has run half an epoch or more: profile --duration of n
// epochs ends just before the n-th closes (its deadline is set before Run
// starts), and it recorded n-1, none for --duration equal to --epoch
// (found by a review walk). One cut shorter is dropped, as an epoch of a
// few milliseconds would be taken for a whole one.
//
// Once Run returns, the hook's counts are those when it did: the plugin
// counts on, and a profile's metrics served on after its end (lingering
// for Prometheus) showed 408 M writes recorded where it said 286 M (found
// by a new-user walk).
func (c *Collector) Run(ctx context.Context, fn func(Epoch) error) error {
	c.mu.Lock()
	c.final = nil
	c.mu.Unlock()
	defer func() {
		if s, err := c.hook.stats(); err == nil {
			c.mu.Lock()
			c.final = &s
			c.mu.Unlock()
		}
	}()
	next := time.Now().Add(c.cfg.Epoch)
	for {
		select {
		case <-ctx.Done():
			if time.Until(next) > c.cfg.Epoch/2 {
				return nil
			}
			e, err := c.CloseEpoch()
			if err != nil {
				return err
			}
			return fn(e)
		case <-time.After(time.Until(next)):
		}
		next = next.Add(c.cfg.Epoch)
		if time.Since(next) > -c.cfg.Epoch/2 {
			// Behind by half an epoch or more (fn was slow: a blocked
			// stdout, a slow disk under the trace, a stalled host): the
			// epochs go on from now, the one closing now the longer,
			// rather than a burst of epochs of a few ms each, every one
			// taken for a whole epoch (9 of 14 were, after a 1 s stall;
			// found by a review walk).
			next = time.Now().Add(c.cfg.Epoch)
		}
		e, err := c.CloseEpoch()
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// Region is a stretch of guest memory and how many of its pages were
// dirtied.
type Region struct {
	Start, End uint64 // guest physical addresses, End exclusive
	Pages      int
}

// Hottest groups an epoch's pages into regions of size bytes and returns
// the n with the most dirtied pages.
func Hottest(pages []uint64, size uint64, n int) []Region {
	per := size / 4096
	counts := map[uint64]int{}
	for _, p := range pages {
		counts[p/per]++
	}
	out := make([]Region, 0, len(counts))
	for r, k := range counts {
		out = append(out, Region{Start: r * size, End: (r + 1) * size, Pages: k})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pages != out[j].Pages {
			return out[i].Pages > out[j].Pages
		}
		return out[i].Start < out[j].Start
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// Close stops dirty logging, detaches the hook and disconnects. Closing
// again does nothing.
func (c *Collector) Close() error {
	var err error
	if c.logging {
		if err = c.vmm.stopLogging(); err != nil && c.vmm.alive() == nil {
			c.log.Warn("stop dirty logging", "err", err)
		} // a VM that has gone took its dirty logging with it
		c.logging = false
	}
	if c.closed {
		return err
	}
	c.closed = true
	if c.hook != nil {
		c.hook.close()
	}
	if c.vmm != nil {
		c.vmm.close()
	}
	return err
}

// holdsKVMVM checks that process pid holds a KVM VM (an open
// anon_inode:kvm-vm), so that profiling another process is refused rather
// than recording nothing (pid 1: "0 dirty pages", exit 0). Where its open
// files cannot be read, nothing is said.
func holdsKVMVM(pid int) error {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("profile: no process %d", pid)
	}
	if err != nil {
		return nil
	}
	for _, fd := range fds {
		if link, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && link == "anon_inode:kvm-vm" {
			return nil
		}
	}
	if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		if name, _, _ := strings.Cut(string(cmd), "\x00"); strings.Contains(filepath.Base(name), "qemu") {
			// It is the VMM: it was told to give the VMM's process id.
			return fmt.Errorf("profile: process %d is QEMU but holds no KVM VM (it runs its guest under TCG): "+
				"--pid without --qmp works only for a VM under KVM; give QEMU's QMP socket (--qmp) to profile it through pagecast's TCG plugin", pid)
		}
	}
	return fmt.Errorf("profile: process %d holds no KVM VM (no anon_inode:kvm-vm among its open files): "+
		"--pid without --qmp works only for a VMM running a VM under KVM; give that process's id, or the VM's QMP socket (--qmp)", pid)
}
