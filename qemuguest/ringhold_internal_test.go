package qemuguest

import (
	"slices"
	"testing"

	"github.com/pagecast/pagecast/bpf"
)

// TestRingHold: a page pushed to a ring stays reported at every harvest
// until the ring's reset index, as read three harvests before, has passed
// its entry; a page on another ring waits for that ring's reset; the
// indices wrap.
func TestRingHold(t *testing.T) {
	rings := make([]bpf.RingIndex, bpf.MaxRings)
	var h ringHold
	step := func(pages []uint64, want ...uint64) {
		t.Helper()
		got := h.harvest(pages, rings)
		slices.Sort(got)
		got = slices.Compact(got)
		if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("held %v, want %v", got, want)
		}
	}
	base := uint32(1<<32 - 2) // wraps during the test
	rings[0] = bpf.RingIndex{Pushed: base + 3, Reset: base}
	rings[1] = bpf.RingIndex{Pushed: base + 1, Reset: base + 1}
	step([]uint64{10, 11, 12}) // harvest 1: 10-12 pushed to ring 0, entries base..base+2
	step(nil, 10, 11, 12)      // 2
	rings[0].Reset = base + 3  // QEMU reaps and resets ring 0
	step(nil, 10, 11, 12)      // 3: the reset is read now
	step(nil, 10, 11, 12)      // 4: the vector of harvest 1 is used
	step(nil, 10, 11, 12)      // 5: of harvest 2
	step(nil)                  // 6: of harvest 3, read after the reset
	rings[1].Pushed = base + 5 // 20 pushed to ring 1, 21 to ring 0
	rings[0].Pushed = base + 4
	step([]uint64{20, 21})    // 8
	rings[0].Reset = base + 4 // ring 0 reset; ring 1 not
	for range 6 {
		step(nil, 20, 21)
	}
	rings[1].Reset = base + 5
	step(nil, 20, 21)
	step(nil, 20, 21)
	step(nil, 20, 21)
	step(nil)
	if len(h.entries) != 0 {
		t.Errorf("%d entries left", len(h.entries))
	}
}

// TestRingHoldBounded: a QEMU that never resets its rings keeps every page
// held, in at most maxHeld entries.
func TestRingHoldBounded(t *testing.T) {
	rings := make([]bpf.RingIndex, bpf.MaxRings)
	var h ringHold
	var got []uint64
	for i := range uint64(200) {
		rings[0].Pushed++
		got = h.harvest([]uint64{i}, rings)
	}
	if len(h.entries) > maxHeld {
		t.Errorf("%d entries, want at most %d", len(h.entries), maxHeld)
	}
	slices.Sort(got)
	if len(got) != 199 || got[0] != 0 || got[198] != 198 {
		t.Errorf("held %d pages (%v…), want 0..198", len(got), got[:min(len(got), 3)])
	}
}
