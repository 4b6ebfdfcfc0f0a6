package collector

import (
	"fmt"
	"sync/atomic"

	"github.com/pagecast/pagecast/bpf"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

// HookTCG is the name of the TCG plugin hook, beside bpf.Hooks' names.
const HookTCG = "tcg-plugin"

// Stats are a hook's counters since it was attached.
type Stats struct {
	Events  uint64            // page writes recorded
	OtherVM uint64            // events of other processes seen and ignored (eBPF)
	Dropped map[string]uint64 // writes of the VM not recorded, by reason
}

// DroppedAll sums Dropped.
func (s Stats) DroppedAll() uint64 {
	var n uint64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

// hook is where the collector learns which pages were written in an epoch:
// pagecast's eBPF programs on KVM's dirty tracking, or pagecast's plugin
// inside a QEMU that runs under TCG.
type hook interface {
	name() string
	// setEpoch starts epoch e: writes from now on count in e.
	setEpoch(e uint32) error
	// pages appends the pages written in closed epoch e, ascending, below
	// maxPages, to dst; it is called a grace period after setEpoch(e+1).
	pages(e uint32, dst []uint64) ([]uint64, error)
	stats() (Stats, error)
	close() error
}

// bpfHook reads the eBPF programs' per-page histories.
type bpfHook struct {
	prof   *bpf.Profiler
	states []bpf.PageState
}

func (h *bpfHook) name() string            { return h.prof.Hook().Name }
func (h *bpfHook) setEpoch(e uint32) error { return h.prof.SetEpoch(e) }
func (h *bpfHook) close() error            { return h.prof.Close() }

func (h *bpfHook) pages(e uint32, dst []uint64) ([]uint64, error) {
	if err := h.prof.ReadPages(h.states); err != nil {
		return dst, err
	}
	for gfn, s := range h.states {
		if bpf.DirtyIn(s, e, e+1) {
			dst = append(dst, uint64(gfn))
		}
	}
	return dst, nil
}

func (h *bpfHook) stats() (Stats, error) {
	s, err := h.prof.Stats()
	if err != nil {
		return Stats{}, err
	}
	return Stats{Events: s.Events, OtherVM: s.OtherVM, Dropped: map[string]uint64{
		"slot_unknown": s.SlotUnknown, "out_of_range": s.OutOfRange,
		"contended": s.Contended, "ringbuf_full": s.RingbufFull,
	}}, nil
}

// tcgHook reads the byte maps pagecast's TCG plugin keeps in shared memory.
type tcgHook struct {
	area     *tcg.Area
	maxPages uint64
	beyond   atomic.Uint64 // pages the plugin saw written above the guest's RAM
	base     tcg.Stats     // the plugin's counters when the collector attached
	events   atomic.Uint64 // the most events stats has said
}

// openTCG maps the plugin's area of QEMU process pid and starts a clean
// epoch 1: whatever the plugin recorded before is discarded.
// A plugin that records less than the guest's RAM is refused: its trace
// would claim all of RAM and hold only part.
func openTCG(pid int, maxPages uint64) (*tcgHook, error) {
	a, err := tcg.Attach(pid)
	if err != nil {
		return nil, err
	}
	if err := a.CheckCovers(maxPages*4096, qemu.PhysPages(maxPages*4096)); err != nil {
		a.Close()
		return nil, fmt.Errorf("qemu %d: %w", pid, err)
	}
	return &tcgHook{area: a, maxPages: maxPages, base: a.Stats()}, nil
}

func (h *tcgHook) name() string { return HookTCG }

func (h *tcgHook) setEpoch(e uint32) error { h.area.SetEpoch(e); return nil }

func (h *tcgHook) pages(e uint32, dst []uint64) ([]uint64, error) {
	if st := h.area.Stats(); st.Exited {
		return dst, &goneError{fmt.Sprintf("QEMU (pid %d) has exited: its TCG plugin stopped recording", st.PID)}
	}
	n := len(dst)
	dst = h.area.ReadEpoch(e, dst)
	keep := n
	for _, p := range dst[n:] {
		if p < h.maxPages {
			dst[keep] = p
			keep++
		} else {
			h.beyond.Add(1)
		}
	}
	return dst[:keep], nil
}

func (h *tcgHook) stats() (Stats, error) {
	// The plugin counts from QEMU's start (firmware included): count
	// from the attach. Stores to device memory (MMIO) are not guest RAM's
	// and are not counted at all.
	s := h.area.Stats()
	// Each counter is read apart, as the vCPUs go on: a store to MMIO
	// counted in writes and not yet in io when read counts as RAM's, and
	// the next read takes it back. So the count is kept from going back
	// (a Prometheus counter that does resets), nor below the attach's,
	// which it wrapped past, to some 1.8e19 (found by a review walk).
	ram := func(s tcg.Stats) int64 { return int64(s.Writes - s.IO - s.OutOfRange) }
	n := uint64(max(ram(s)-ram(h.base), 0))
	for {
		old := h.events.Load()
		if n <= old {
			n = old
			break
		}
		if h.events.CompareAndSwap(old, n) {
			break
		}
	}
	return Stats{Events: n, Dropped: map[string]uint64{
		"out_of_range": s.OutOfRange - h.base.OutOfRange, // beyond the plugin's capacity
		"beyond_ram":   h.beyond.Load(),
	}}, nil
}

func (h *tcgHook) close() error { return h.area.Close() }
