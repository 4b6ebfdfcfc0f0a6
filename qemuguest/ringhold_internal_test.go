package qemuguest

import (
	"slices"
	"testing"

	"github.com/pagecast/pagecast/bpf"
)

// ring is a ring's indices as the eBPF programs leave them: pushed, and
// its last two resets with their generations.
func ring(pushed, pending, pendingGen, effective, effectiveGen uint32) bpf.RingIndex {
	return bpf.RingIndex{Pushed: pushed, Pending: pending, PendingGen: pendingGen, Effective: effective, EffectiveGen: effectiveGen}
}

// TestRingHold: every page is held until two reset ioctls after the first
// harvest are in force (entries pushed before the programs came are
// unknown); then a page pushed to a ring stays held until a reset in force
// (one whose ioctl has been followed by another) has passed its push
// index, taken a harvest after the page; a page on another ring waits for
// that ring's; the indices wrap.
func TestRingHold(t *testing.T) {
	rings := make([]bpf.RingIndex, bpf.MaxRings)
	var h ringHold
	step := func(pages []uint64, gen uint32, wantAll bool, want ...uint64) {
		t.Helper()
		got, all := h.harvest(pages, rings, gen)
		slices.Sort(got)
		got = slices.Compact(got)
		if all != wantAll || !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("held %v all %v, want %v all %v", got, all, want, wantAll)
		}
	}
	base := uint32(1<<32 - 2) // wraps during the test
	rings[0] = ring(base+3, base, 5, base, 4)
	rings[1] = ring(base+1, base+1, 5, base+1, 4)
	step([]uint64{10, 11, 12}, 5, true) // the first harvest, in generation 5
	step(nil, 5, true, 10, 11, 12)      // their push index is taken now
	rings[0] = ring(base+3, base+3, 6, base, 5)
	step(nil, 6, true, 10, 11, 12) // reset in generation 6, not in force: its ioctl may not have flushed
	step(nil, 7, true)             // in force now: 10-12 passed, but every page is held until generation 8
	step(nil, 8, false)
	rings[1].Pushed = base + 5       // 20 pushed to ring 1
	rings[0].Pushed = base + 4       // 21 to ring 0
	step([]uint64{20, 21}, 8, false) // held from the next harvest on
	step(nil, 8, false, 20, 21)
	rings[0] = ring(base+4, base+4, 9, base+3, 6)
	rings[1] = ring(base+5, base+1, 9, base+1, 6) // ring 1 reset without reaching 20's entry
	step(nil, 9, false, 20, 21)
	step(nil, 10, false, 20, 21) // ring 0's reset in force, ring 1's short of 20
	rings[1] = ring(base+5, base+5, 11, base+1, 9)
	step(nil, 11, false, 20, 21)
	step(nil, 12, false) // in force
	if len(h.entries) != 0 {
		t.Errorf("%d entries left", len(h.entries))
	}
}

// TestRingHoldUnknownReset: a ring whose reset has never been seen holds
// its pages, whatever its push index (0 was taken for a reset index, and a
// push index past 2^31 passed it: found by a review walk).
func TestRingHoldUnknownReset(t *testing.T) {
	rings := make([]bpf.RingIndex, bpf.MaxRings)
	var h ringHold
	rings[0] = ring(1<<31+5, 0, 0, 0, 0)
	for gen := range uint32(10) {
		held, all := h.harvest([]uint64{uint64(gen)}, rings, gen+100)
		if gen >= 3 && (all || !slices.Contains(held, 0)) {
			t.Fatalf("harvest %d: page 0 let go (held %v, all %v) with no reset ever seen", gen, held, all)
		}
	}
}

// TestRingHoldBounded: a QEMU that never resets its rings keeps every page
// held, in at most maxHeld entries.
func TestRingHoldBounded(t *testing.T) {
	rings := make([]bpf.RingIndex, bpf.MaxRings)
	rings[0] = ring(0, 1, 1, 1, 1)
	var h ringHold
	var got []uint64
	for i := range uint64(200) {
		rings[0].Pushed++
		got, _ = h.harvest([]uint64{i}, rings, 10)
	}
	if len(h.entries) > maxHeld {
		t.Errorf("%d entries, want at most %d", len(h.entries), maxHeld)
	}
	slices.Sort(got)
	if len(got) != 199 || got[0] != 0 || got[198] != 198 {
		t.Errorf("held %d pages (%v…), want 0..198", len(got), got[:min(len(got), 3)])
	}
}
