package vmm

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Dirty tracking modes.
const (
	DirtyRing   = "ring"   // KVM_CAP_DIRTY_LOG_RING: per-vCPU rings of dirtied gfns
	DirtyBitmap = "bitmap" // KVM_GET_DIRTY_LOG with manual protect (KVM_CLEAR_DIRTY_LOG)
)

// dirtyTracker is KVM's dirty page logging for the guest memory slot, in one
// of its two forms. Harvest adds every page dirtied since the previous
// harvest to set and re-arms write protection for them.
type dirtyTracker interface {
	mode() string
	// harvest is safe to call while vCPUs run.
	harvest(set *Bitmap) error
}

// bitmapTracker reads and clears KVM's per-slot dirty bitmap.
type bitmapTracker struct {
	vmfd  int
	slot  uint32
	pages uint64
	buf   *Bitmap
}

var _ dirtyTracker = (*bitmapTracker)(nil)

func (t *bitmapTracker) mode() string { return DirtyBitmap }

func (t *bitmapTracker) harvest(set *Bitmap) error {
	t.buf.Clear()
	words := t.buf.Words()
	dl := dirtyLog{Slot: t.slot, Bitmap: uintptr(unsafe.Pointer(&words[0]))}
	if err := ioctlPtr(t.vmfd, kvmGetDirtyLog, &dl); err != nil {
		return fmt.Errorf("KVM_GET_DIRTY_LOG: %w", err)
	}
	// Re-protect exactly the pages reported. A page written again between
	// the two calls was already reported and faults once more afterwards,
	// so nothing is lost.
	cl := clearDirtyLog{Slot: t.slot, NumPages: uint32(t.pages), Bitmap: uintptr(unsafe.Pointer(&words[0]))}
	if err := ioctlPtr(t.vmfd, kvmClearDirtyLog, &cl); err != nil {
		return fmt.Errorf("KVM_CLEAR_DIRTY_LOG: %w", err)
	}
	set.Or(t.buf)
	return nil
}

// dirtyGFN is struct kvm_dirty_gfn, one entry of a dirty ring.
type dirtyGFN struct {
	flags  uint32
	slot   uint32
	offset uint64
}

// dirtyRing is one vCPU's ring, shared with the kernel.
type dirtyRing struct {
	entries []dirtyGFN
	fetch   uint32 // next entry to read; only grows
	// emptyFull is set by a ring-full exit that found nothing in this
	// ring to collect, at fetch emptyAt (see ringFull).
	emptyFull bool
	emptyAt   uint32
}

// ErrRingOverflow reports a dirty ring that KVM overfilled. KVM reserves
// only a few entries past the point where it asks the monitor to collect,
// and where it emulates instructions (as on machines without hardware
// virtualisation) every guest store pushes an entry and a run of
// instructions can push thousands before the vCPU exits. Entries are then
// lost and the ring cannot recover; the monitor collects often and uses
// large rings to stay clear of it.
var ErrRingOverflow = errors.New("dirty ring overflowed: KVM overwrote entries before they were collected (use a larger --ring-size, or --dirty bitmap)")

// ringTracker collects from the vCPUs' dirty rings. The vCPU threads also
// drain their own ring when KVM reports it full, so the rings are read
// under a lock and pages drained early wait in pending.
type ringTracker struct {
	vmfd  int
	rings []*dirtyRing

	mu      sync.Mutex
	pending *Bitmap
	full    atomic.Uint64 // ring-full exits seen
}

var _ dirtyTracker = (*ringTracker)(nil)

func (t *ringTracker) mode() string { return DirtyRing }

// mapRing maps a vCPU's ring of n entries.
func mapRing(vcpufd int, n int) (*dirtyRing, error) {
	size := n * int(unsafe.Sizeof(dirtyGFN{}))
	mem, err := unix.Mmap(vcpufd, int64(kvmDirtyLogPageOffset*unix.Getpagesize()), size,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map dirty ring: %w", err)
	}
	return &dirtyRing{entries: unsafe.Slice((*dirtyGFN)(unsafe.Pointer(&mem[0])), n)}, nil
}

// drain moves every published entry of every ring into pending, marks the
// entries for reset and asks KVM to reset them (re-protect the pages).
// Callers hold t.mu.
func (t *ringTracker) drain() (int, error) {
	n := 0
	for _, r := range t.rings {
		size := uint32(len(r.entries))
		for {
			e := &r.entries[r.fetch%size]
			if atomic.LoadUint32(&e.flags)&kvmDirtyGFNFDirty == 0 {
				break
			}
			if e.slot == 0 {
				t.pending.Set(e.offset)
			}
			atomic.StoreUint32(&e.flags, kvmDirtyGFNFReset)
			r.fetch++
			n++
		}
	}
	if n == 0 {
		return 0, nil
	}
	if _, err := ioctl(t.vmfd, kvmResetDirtyRings, 0); err != nil {
		return n, fmt.Errorf("KVM_RESET_DIRTY_RINGS: %w", err)
	}
	return n, nil
}

func (t *ringTracker) harvest(set *Bitmap) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := t.drain(); err != nil {
		return err
	}
	set.Or(t.pending)
	t.pending.Clear()
	return nil
}

// reap drains the rings into pending, re-arming the pages, without
// handing anything out.
func (t *ringTracker) reap() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err := t.drain()
	return err
}

// ringFull is called by a vCPU thread on KVM_EXIT_DIRTY_RING_FULL of its
// ring r. Finding nothing in r to collect is no overflow by itself: the
// reaper, a harvest or another vCPU's exit may have drained r (and reset
// it) between KVM's exit and this (found by a review walk: the reaper
// drains every 2 ms, and a vCPU that filled its ring then failed its
// guest). The vCPU runs on; a ring that overflowed exits full again at
// once with still nothing to collect, and that second empty exit, nothing
// collected from r between the two, is the overflow.
func (t *ringTracker) ringFull(r *dirtyRing) error {
	t.full.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	before := r.fetch
	if _, err := t.drain(); err != nil {
		return err
	}
	switch {
	case r.fetch != before:
		r.emptyFull = false
	case r.emptyFull && r.emptyAt == r.fetch:
		// KVM says the ring is full but holds nothing to collect: it
		// overflowed and overwrote entries, and can never drain again.
		return ErrRingOverflow
	default:
		r.emptyFull, r.emptyAt = true, r.fetch
	}
	return nil
}
