package qemuguest

import (
	"slices"
	"time"

	"github.com/pagecast/pagecast/bpf"
)

// ringHold keeps the pages of a QEMU's KVM dirty log that may be written
// without the log seeing it. On hardware virtualisation KVM pushes a page
// to a vCPU's dirty ring at its first write after the page was
// write-protected (or its dirty bit cleared), and leaves it writable: later
// writes push nothing until QEMU has harvested the entry and reset the
// ring, about once a second (its dirty limit's period) or when a ring
// fills, and the reset is in force only once KVM has flushed the TLBs at
// the end of its reset ioctl. pagecast cannot reset QEMU's rings itself,
// so a page it harvested, sent, and that the guest wrote again before then
// would have gone to the destination stale. So each harvest also reports
// every page harvested before that a reset in force at the start of the
// epoch it closes had not passed (the page was last sent after the
// harvest before: a reset in force only later may follow a write made in
// between). The eBPF programs follow each ring's push index and its resets
// (bpf.RingIndex); a reset is in force once the next reset ioctl has begun
// or, where none follows (a guest that writes nothing: QEMU resets only
// what it reaped), inForceAfter after it was first seen.
//
// A page's push index is taken at the harvest after the one that found it
// (its push may be followed a moment after its page: fentry hooks record
// the page before KVM pushes it). Entries pushed before the programs came
// are unknown: every page counts as held until two reset ioctls after the
// first harvest are in force, or QEMU has gone quietAfter without a reset
// after the first quietFirst (its syncs, once a second, reaped nothing).
// kvm-pvm pushes every emulated store instead, so there the hold is not
// needed (qemu.KVMEmulates).
type ringHold struct {
	entries []heldPages
	started bool
	first   uint32    // the reset generation at the first harvest
	firstAt time.Time // and its time
	lastGen uint32
	resetAt time.Time   // when the generation last moved (or the first harvest)
	seen    []seenReset // per ring: its pending reset, and when first seen
	prev    *inForce    // what was in force at the last harvest
	allDone bool        // the entries pushed before the programs came are reset
}

// heldPages are one harvest's pages and each ring's push index read a
// harvest after them (nil until then).
type heldPages struct {
	pages  []uint64
	pushed []uint32
}

type seenReset struct {
	gen uint32
	at  time.Time
}

// inForce is, per ring, the reset index in force at a harvest (known:
// some reset is), and whether every page was to be held.
type inForce struct {
	index []uint32
	known []bool
	all   bool
}

// The hold's clocks: a reset's TLB flush ends within its ioctl, some
// milliseconds; QEMU syncs its rings once a second.
const (
	inForceAfter = time.Second
	quietFirst   = 3 * time.Second
	quietAfter   = 1500 * time.Millisecond
)

// maxHeld bounds the harvests held: past it the two oldest are merged (a
// QEMU that stopped resetting its rings would otherwise grow the hold for
// ever; merged, they are held until both would have been).
const maxHeld = 64

// harvest takes a harvest's pages, the ring indices and reset generation
// read after them and the time, and returns the pages of earlier harvests
// still held (unsorted), or all: every page is.
func (h *ringHold) harvest(pages []uint64, rings []bpf.RingIndex, gen uint32, now time.Time) (held []uint64, all bool) {
	n := 0
	for i, r := range rings {
		if r != (bpf.RingIndex{}) {
			n = i + 1
		}
	}
	if !h.started {
		h.started, h.first, h.firstAt, h.lastGen, h.resetAt = true, gen, now, gen, now
	}
	if gen != h.lastGen {
		h.lastGen, h.resetAt = gen, now
	}
	for len(h.seen) < n {
		h.seen = append(h.seen, seenReset{})
	}
	pushed := make([]uint32, n)
	cur := &inForce{index: make([]uint32, n), known: make([]bool, n)}
	for i, r := range rings[:n] {
		pushed[i] = uint32(r.Pushed)
		if h.seen[i].gen != r.PendingGen {
			h.seen[i] = seenReset{r.PendingGen, now}
		}
		switch {
		case r.PendingGen != 0 && (int32(gen-r.PendingGen) > 0 || now.Sub(h.seen[i].at) >= inForceAfter):
			cur.index[i], cur.known[i] = r.Pending, true
		case r.EffectiveGen != 0:
			cur.index[i], cur.known[i] = r.Effective, true
		}
	}
	// Once the entries from before the programs are known reset, they
	// stay so.
	h.allDone = h.allDone || int32(gen-h.first) >= 3 || now.Sub(h.firstAt) >= quietFirst && now.Sub(h.resetAt) >= quietAfter
	cur.all = !h.allDone

	prev := h.prev
	h.prev = cur
	all = prev == nil || prev.all
	keep := h.entries[:0]
	for _, e := range h.entries {
		switch {
		case e.pushed == nil:
			e.pushed = pushed
		case prev != nil && passed(prev.index, prev.known, e.pushed):
			continue
		}
		keep = append(keep, e)
	}
	clear(h.entries[len(keep):])
	h.entries = keep
	for _, e := range h.entries {
		held = append(held, e.pages...)
	}
	if len(pages) > 0 {
		h.entries = append(h.entries, heldPages{pages: pages})
	}
	if len(h.entries) > maxHeld {
		a, b := h.entries[0], h.entries[1]
		merged := heldPages{pages: append(slices.Clip(a.pages), b.pages...)}
		if a.pushed != nil && b.pushed != nil {
			merged.pushed = slices.Clone(b.pushed)
			for i := range min(len(a.pushed), len(b.pushed)) {
				if int32(a.pushed[i]-b.pushed[i]) > 0 {
					merged.pushed[i] = a.pushed[i]
				}
			}
			if len(a.pushed) > len(b.pushed) {
				merged.pushed = append(merged.pushed, a.pushed[len(b.pushed):]...)
			}
		}
		h.entries = append([]heldPages{merged}, h.entries[2:]...)
	}
	return held, all
}

// passed reports whether, on every ring an entry was pushed to, a reset in
// force has reached its push index (KVM's u32 indices, which wrap). A ring
// with no reset in force known has not.
func passed(index []uint32, known []bool, pushed []uint32) bool {
	for i, p := range pushed {
		if p == 0 {
			continue // nothing pushed to it (an index wrapped to exactly 0 is taken so too)
		}
		if i >= len(known) || !known[i] || int32(index[i]-p) < 0 {
			return false
		}
	}
	return true
}
