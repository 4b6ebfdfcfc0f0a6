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
	Late    uint64            // pages marked after their epoch was read, reported with the next (eBPF)
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
//
// A program run that loaded the epoch number before setEpoch(e+1) and
// stored its page's history after the grace period (its CPU taken away
// by the host beneath: steal time) marks the page in epoch e after e
// was read, and reading e+1 does not show it. So each read also takes
// the pages marked in the epoch before that its own read did not report
// (late): reported one epoch late rather than never, which a migration's
// dirty log cannot afford.
type bpfHook struct {
	prof     *bpf.Profiler
	states   []bpf.PageState
	reported []uint64 // bit per page: reported for the epoch read last
	last     uint32   // that epoch; 0: none read yet
	late     atomic.Uint64
}

func (h *bpfHook) name() string            { return h.prof.Hook().Name }
func (h *bpfHook) setEpoch(e uint32) error { return h.prof.SetEpoch(e) }
func (h *bpfHook) close() error            { return h.prof.Close() }

func (h *bpfHook) pages(e uint32, dst []uint64) ([]uint64, error) {
	if err := h.prof.ReadPages(h.states); err != nil {
		return dst, err
	}
	return h.collect(e, dst), nil
}

// collect appends the pages h.states shows written in e, and those
// written late in e-1 (see bpfHook).
func (h *bpfHook) collect(e uint32, dst []uint64) []uint64 {
	if h.reported == nil {
		h.reported = make([]uint64, (len(h.states)+63)/64)
	}
	prev := h.last != 0 && h.last+1 == e
	var late uint64
	for gfn, s := range h.states {
		w, bit := gfn/64, uint64(1)<<(gfn%64)
		was := h.reported[w]&bit != 0
		switch {
		case bpf.DirtyIn(s, e, e+1):
			dst = append(dst, uint64(gfn))
			h.reported[w] |= bit
		case prev && !was && bpf.DirtyIn(s, e-1, e+1):
			dst = append(dst, uint64(gfn))
			h.reported[w] &^= bit // e's own read did not find it
			late++
		default:
			h.reported[w] &^= bit
		}
	}
	h.last = e
	h.late.Add(late)
	return dst
}

func (h *bpfHook) stats() (Stats, error) {
	s, err := h.prof.Stats()
	if err != nil {
		return Stats{}, err
	}
	return Stats{Events: s.Events, OtherVM: s.OtherVM, Late: h.late.Load(), Dropped: map[string]uint64{
		"slot_unknown": s.SlotUnknown, "out_of_range": s.OutOfRange,
		"contended": s.Contended, "ringbuf_full": s.RingbufFull,
	}}, nil
}

// tcgHook reads the byte maps pagecast's TCG plugin keeps in shared memory.
type tcgHook struct {
	area     *tcg.Area
	maxPages uint64
	// layout turns the plugin's pages into RAM pages where it names them
	// by guest-physical frame (QEMU 8.2): a trace names a TCG guest's pages
	// by offset in RAM whatever the QEMU (review 55); nil under 7.2.
	layout *qemu.Layout
	beyond atomic.Uint64 // pages the plugin saw written above the guest's RAM
	base   tcg.Stats     // the plugin's counters when the collector attached
	events atomic.Uint64 // the most events stats has said
}

// openTCG maps the plugin's area of QEMU process pid and starts a clean
// epoch 1: whatever the plugin recorded before is discarded.
// A plugin that records less than the guest's RAM is refused: its trace
// would claim all of RAM and hold only part.
func openTCG(pid int, ramBytes uint64, layout *qemu.Layout) (*tcgHook, error) {
	a, err := tcg.Attach(pid)
	if err != nil {
		return nil, err
	}
	need := ramBytes / 4096
	if layout != nil {
		need = layout.Frames()
	}
	if err := a.CheckCovers(ramBytes, need); err != nil {
		a.Close()
		return nil, fmt.Errorf("qemu %d: %w", pid, err)
	}
	return &tcgHook{area: a, maxPages: ramBytes / 4096, layout: layout, base: a.Stats()}, nil
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
		if h.layout != nil {
			q, ok := h.layout.Page(p)
			if !ok {
				h.beyond.Add(1)
				continue
			}
			p = q
		}
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
