package vmm

import (
	"errors"
	"testing"
)

// TestRingFullAfterReap: a vCPU's ring-full exit that finds its ring
// already drained (by the reaper, a harvest or another vCPU's exit, which
// all drain every ring) lets the vCPU run on: it failed the guest as an
// overflow, and the reaper drains every 2 ms. A second such exit with
// nothing collected from the ring in between is an overflow. Needs no KVM:
// the ring is Go memory, and the reset ioctl's failure on no VM is the
// reaper's alone.
func TestRingFullAfterReap(t *testing.T) {
	const size = MinRingEntries
	fill := func(r *dirtyRing, from, to int) {
		for i := from; i < to; i++ {
			r.entries[i%size] = dirtyGFN{flags: kvmDirtyGFNFDirty, offset: uint64(i % size)}
		}
	}
	r := &dirtyRing{entries: make([]dirtyGFN, size)}
	rt := &ringTracker{vmfd: -1, rings: []*dirtyRing{r}, pending: NewBitmap(1 << 16)}
	fill(r, 0, size-64) // KVM's soft limit: it exits the vCPU
	rt.reap()           // the reaper's tick comes first
	if rt.pending.Count() != size-64 {
		t.Fatalf("the reaper collected %d pages, want %d", rt.pending.Count(), size-64)
	}
	if err := rt.ringFull(r); err != nil {
		t.Fatalf("ring-full exit after the reaper collected the ring: %v", err)
	}
	// The ring truly overflowed: KVM exits again at once, nothing new.
	if err := rt.ringFull(r); !errors.Is(err, ErrRingOverflow) {
		t.Errorf("a second ring-full exit with nothing collected since: %v, want ErrRingOverflow", err)
	}

	// Collected again between two empty exits: no overflow.
	r2 := &dirtyRing{entries: make([]dirtyGFN, size)}
	rt2 := &ringTracker{vmfd: -1, rings: []*dirtyRing{r2}, pending: NewBitmap(1 << 16)}
	fill(r2, 0, size-64)
	rt2.reap()
	if err := rt2.ringFull(r2); err != nil {
		t.Fatal(err)
	}
	fill(r2, size-64, 2*size-128)
	rt2.reap()
	if err := rt2.ringFull(r2); err != nil {
		t.Errorf("a ring-full exit after the ring was filled and collected again: %v", err)
	}
}
