package qemuguest

import (
	"slices"
	"testing"
	"time"

	"github.com/pagecast/pagecast/bpf"
)

// ring is a ring's indices as the eBPF programs leave them: pushed, and
// its last two resets with their generations.
func ring(pushed, pending, pendingGen, effective, effectiveGen uint32) bpf.RingIndex {
	return bpf.RingIndex{Pushed: uint64(pushed), Pending: pending, PendingGen: pendingGen, Effective: effective, EffectiveGen: effectiveGen}
}

// holdSteps drives a ringHold a harvest every 100 ms.
type holdSteps struct {
	t     *testing.T
	h     ringHold
	rings []bpf.RingIndex
	now   time.Time
}

func newHoldSteps(t *testing.T) *holdSteps {
	return &holdSteps{t: t, rings: make([]bpf.RingIndex, bpf.MaxRings), now: time.Unix(1e9, 0)}
}

func (s *holdSteps) step(pages []uint64, gen uint32, wantAll bool, want ...uint64) {
	s.t.Helper()
	got, all := s.h.harvest(pages, s.rings, gen, s.now)
	s.now = s.now.Add(100 * time.Millisecond)
	slices.Sort(got)
	got = slices.Compact(got)
	if all != wantAll || !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		s.t.Fatalf("held %v all %v, want %v all %v", got, all, want, wantAll)
	}
}

// TestRingHold: every page is held until two reset ioctls after the first
// harvest are in force (entries pushed before the programs came are
// unknown); a page pushed to a ring stays held until a reset in force at
// the harvest before (one whose ioctl another has followed) has passed its
// push index, taken a harvest after the page; a page on another ring waits
// for that ring's; the indices wrap.
func TestRingHold(t *testing.T) {
	s := newHoldSteps(t)
	base := uint32(1<<32 - 2) // wraps during the test
	s.rings[0] = ring(base+3, base, 5, base, 4)
	s.rings[1] = ring(base+1, base+1, 5, base+1, 4)
	s.step([]uint64{10, 11, 12}, 5, true) // H1, in generation 5
	s.step(nil, 5, true, 10, 11, 12)      // H2: their push index is taken now
	s.rings[0] = ring(base+3, base+3, 6, base, 5)
	s.step(nil, 6, true, 10, 11, 12)     // H3: reset in generation 6, not in force: its ioctl may not have flushed
	s.step(nil, 7, true, 10, 11, 12)     // H4: in force now, but not at H3, when 10-12 were last sent
	s.step(nil, 7, true)                 // H5: passed at H4
	s.step(nil, 8, true)                 // H6: every page still held: at H5 generation 7 was only 2 past the first
	s.step(nil, 8, false)                // H7
	s.rings[1].Pushed = uint64(base + 5) // 20 pushed to ring 1
	s.rings[0].Pushed = uint64(base + 4) // 21 to ring 0
	s.step([]uint64{20, 21}, 8, false)   // H8
	s.step(nil, 8, false, 20, 21)        // H9: push indices taken
	s.rings[0] = ring(base+4, base+4, 9, base+3, 6)
	s.rings[1] = ring(base+5, base+1, 9, base+1, 5) // ring 1 reset short of 20's entry
	s.step(nil, 9, false, 20, 21)                   // H10
	s.step(nil, 10, false, 20, 21)                  // H11
	s.step(nil, 10, false, 20, 21)                  // H12: ring 0 passed at H11, ring 1 not
	s.rings[1] = ring(base+5, base+5, 11, base+1, 9)
	s.step(nil, 11, false, 20, 21) // H13
	s.step(nil, 12, false, 20, 21) // H14: not in force at H13
	s.step(nil, 12, false)         // H15: in force at H14
	if len(s.h.entries) != 0 {
		t.Errorf("%d entries left", len(s.h.entries))
	}
}

// TestRingHoldIdle: a guest that writes nothing has QEMU reset nothing
// (it resets only what it reaped), so no later ioctl shows a reset in
// force: the hold lets every page go once QEMU has been quiet a while,
// and takes a reset for in force a second after it was first seen; it held
// every page for ever, and the migration could not converge (found by a
// review walk).
func TestRingHoldIdle(t *testing.T) {
	s := newHoldSteps(t)
	s.rings[0] = ring(100, 100, 1, 0, 0)
	s.step(nil, 1, true)
	for range 29 { // to 3 s
		s.step(nil, 1, true)
	}
	s.step(nil, 1, true) // at the harvest before, 2.9 s after the first
	s.step(nil, 1, false)
	s.rings[0] = ring(101, 100, 1, 0, 0) // page 7 written
	s.step([]uint64{7}, 1, false)
	s.step(nil, 1, false, 7)
	s.rings[0] = ring(101, 101, 2, 100, 1) // QEMU reaps it and resets: generation 2, no ioctl after
	for range 11 {                         // the reset seen now, in force a second later
		s.step(nil, 2, false, 7)
	}
	s.step(nil, 2, false)
}

// TestRingHoldUnknownReset: a ring whose reset has never been seen holds
// its pages, whatever its push index (0 was taken for a reset index, and a
// push index past 2^31 passed it: found by a review walk).
func TestRingHoldUnknownReset(t *testing.T) {
	s := newHoldSteps(t)
	s.rings[0] = ring(1<<31+5, 0, 0, 0, 0)
	for gen := range uint32(10) {
		held, _ := s.h.harvest([]uint64{uint64(gen)}, s.rings, gen+100, s.now)
		s.now = s.now.Add(time.Second)
		if gen >= 2 && !slices.Contains(held, 0) {
			t.Fatalf("harvest %d: page 0 let go (held %v) with no reset ever seen", gen, held)
		}
	}
}

// TestRingHoldBounded: a QEMU that never resets its rings keeps every page
// held, in at most maxHeld entries.
func TestRingHoldBounded(t *testing.T) {
	s := newHoldSteps(t)
	s.rings[0] = ring(0, 1, 1, 1, 1)
	var got []uint64
	for i := range uint64(200) {
		s.rings[0].Pushed++
		got, _ = s.h.harvest([]uint64{i}, s.rings, 10, s.now)
	}
	if len(s.h.entries) > maxHeld {
		t.Errorf("%d entries, want at most %d", len(s.h.entries), maxHeld)
	}
	slices.Sort(got)
	if len(got) != 199 || got[0] != 0 || got[198] != 198 {
		t.Errorf("held %d pages (%v…), want 0..198", len(got), got[:min(len(got), 3)])
	}
}
