package qemuguest

import (
	"github.com/pagecast/pagecast/bpf"
)

// ringHold keeps the pages of a QEMU's KVM dirty log that may be written
// without the log seeing it. On hardware virtualisation KVM pushes a page
// to a vCPU's dirty ring at its first write after the page was
// write-protected (or its dirty bit cleared), and leaves it writable: later
// writes push nothing until QEMU has harvested the entry and reset the
// ring, about once a second (its dirty limit's period). pagecast cannot
// reset QEMU's rings itself, so a page it harvested, sent, and that the
// guest wrote again before QEMU's reset would have gone to the destination
// stale. So each harvest also reports every page harvested before whose
// ring entry the ring's reset has not yet passed: the reset index each
// ring had three harvests before, so that the reset's TLB flush, which
// ends KVM's reset ioctl, is over before the epoch the page is reported
// for began (a harvest waits its grace period after starting the next
// epoch). kvm-pvm pushes every emulated store instead, so there the hold
// is not needed (qemu.KVMEmulates).
type ringHold struct {
	entries []heldPages
	resets  [][]uint32 // each ring's reset index after each of the last three harvests, oldest first
}

// heldPages are one harvest's pages and each ring's push index (one past
// its last entry) read after them.
type heldPages struct {
	pages  []uint64
	pushed []uint32
}

// maxHeld bounds the harvests held: past it the two oldest are merged (a
// QEMU that stopped resetting its rings would otherwise grow the hold for
// ever; merged, its pages are held as long as the later one's).
const maxHeld = 64

// harvest takes a harvest's pages and the ring indices read after them,
// and returns the pages of earlier harvests still held (unsorted, maybe
// repeated).
func (h *ringHold) harvest(pages []uint64, rings []bpf.RingIndex) []uint64 {
	n := 0
	for i, r := range rings {
		if r.Pushed != 0 || r.Reset != 0 {
			n = i + 1
		}
	}
	pushed, reset := make([]uint32, n), make([]uint32, n)
	for i, r := range rings[:n] {
		pushed[i], reset[i] = r.Pushed, r.Reset
	}
	if len(h.resets) == 3 {
		old := h.resets[0]
		keep := h.entries[:0]
		for _, e := range h.entries {
			if !passed(old, e.pushed) {
				keep = append(keep, e)
			}
		}
		clear(h.entries[len(keep):])
		h.entries = keep
		h.resets = h.resets[1:]
	}
	var held []uint64
	for _, e := range h.entries {
		held = append(held, e.pages...)
	}
	if len(pages) > 0 {
		h.entries = append(h.entries, heldPages{pages: pages, pushed: pushed})
	}
	if len(h.entries) > maxHeld {
		a, b := h.entries[0], h.entries[1]
		merged := heldPages{pages: append(a.pages, b.pages...), pushed: b.pushed}
		for i := range min(len(a.pushed), len(b.pushed)) {
			if int32(a.pushed[i]-b.pushed[i]) > 0 {
				merged.pushed[i] = a.pushed[i]
			}
		}
		if len(a.pushed) > len(b.pushed) {
			merged.pushed = append(merged.pushed, a.pushed[len(b.pushed):]...)
		}
		h.entries = append([]heldPages{merged}, h.entries[2:]...)
	}
	h.resets = append(h.resets, reset)
	return held
}

// passed reports whether every ring's reset index has reached its push
// index (KVM's u32 indices, which wrap).
func passed(reset, pushed []uint32) bool {
	for i, p := range pushed {
		var r uint32
		if i < len(reset) {
			r = reset[i]
		}
		if int32(r-p) < 0 {
			return false
		}
	}
	return true
}
