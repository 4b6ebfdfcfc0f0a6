package migrator

import (
	"sync/atomic"
	"time"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/migrator/mecom"
)

// The engine knows a virtual machine only through these interfaces: the
// source side through Guest, the destination through Destination. pagecast's
// own KVM monitor (package vmm), a QEMU VM whose RAM is shared memory
// (package qemuguest) and, for the simulator, a guest driven by a recorded
// trace on a virtual clock implement them. Page size is PageSize for all.

// Guest is the VM being migrated away.
type Guest interface {
	// MemoryBytes is the size of guest RAM, a multiple of PageSize.
	MemoryBytes() uint64
	// Memory is guest RAM, read in place while the guest runs. The
	// engine only reads it.
	Memory() []byte
	// Identity is what the destination checks in the handshake.
	Identity() Identity
	// Running reports whether the guest runs (a migration starts only
	// from a running guest), and if not, its state in words.
	Running() (bool, string)
	// StartDirtyLog begins tracking the pages the guest writes.
	StartDirtyLog() (DirtyLog, error)
	// Pause stops the vCPUs; Resume runs them again (after a failed
	// switch-over).
	Pause() error
	Resume() error
	// Throttle is the percentage of vCPU time currently taken away;
	// SetThrottle takes pct percent (0 lifts it).
	Throttle() int
	SetThrottle(pct int) error
	// SaveState returns the paused guest's vCPU and device state, opaque
	// to the engine, for the destination's Restore. It is called once,
	// after Pause, and before the destination's verdict: a guest whose
	// state leaves with it (QEMU) must be able to Resume after it. The
	// stop-and-copy calls it on its own goroutine while it reads the
	// paused guest's Memory.
	SaveState() ([]byte, error)
	// EarlyPages are the pages among dirty that the destination's monitor
	// reads before the guest runs there (the pagecast guest's status
	// page): TSMC sends them during its pause rather than in stage 3.
	EarlyPages(dirty *bitmap.Bitmap) []uint64
}

// StateSizer is implemented by a Guest that knows, before it is paused,
// about how many bytes SaveState will return: the engine counts them in
// what the switch-over must send within the downtime limit.
type StateSizer interface {
	StateBytes() uint64
}

// Repauser is implemented by a Guest whose SaveState leaves it in a state
// other than paused (QEMU: postmigrate, which pagecast and its users read
// as a guest migrated away). After a failed migration of a guest its user
// had paused, the engine calls Repause to leave it paused as it was.
type Repauser interface {
	Repause() error
}

// MigratedOuter is implemented by a Guest that tells a guest moved away
// from one merely paused: the engine calls MigratedOut once a migration
// of it has completed (QEMU's run state postmigrate).
type MigratedOuter interface {
	MigratedOut()
}

// Destination is the VM a migration arrives in: created, not yet run.
type Destination interface {
	MemoryBytes() uint64
	// Memory is guest RAM, written in place by the receiver.
	Memory() []byte
	Identity() Identity
	// Waiting reports whether the guest waits for a migration (created,
	// never run), and if not, its state in words.
	Waiting() (bool, string)
	// Restore loads the source's SaveState. It is called once all memory
	// has arrived and before the verdict: a failure here is a failed
	// migration, and the guest stays with the source.
	Restore(state []byte) error
	// Start runs the guest, once the source has committed (or leaves it
	// paused where it was stopped while it waited, as QEMU's does).
	Start() error
	// Stop stops the guest Start ran, for good: its memory turned out
	// not to match the source's, which runs the guest on instead.
	Stop() error
}

// PausedStarter is implemented by a Destination that can take the guest
// in and hold it paused, without running its vCPUs: the receiver calls
// StartPaused in place of Start when the source's guest was paused before
// the switch-over (its user stopped it during the migration), as QEMU's
// own migration holds such a guest paused at the destination. Where a
// Destination lacks it, the guest runs there, and the receiver says so.
type PausedStarter interface {
	StartPaused() error
}

// NoPostcopy is implemented by a Destination that cannot run TSMC's stage
// 3 (pulling pages into guest memory as the guest touches them): it says
// why, and the receiver refuses a tsmc source in the handshake.
type NoPostcopy interface {
	NoPostcopy() string
}

// RestorePreparer is implemented by a Destination that can get ready for
// Restore before the switch-over (QEMU: its incoming migration set up), so
// that the pause does not wait for it. The receiver calls it once it has
// accepted a source; if it fails, the receiver says so and Restore does
// all of its work.
type RestorePreparer interface {
	PrepareRestore() error
}

// Identity is what must match between source and destination.
type Identity struct {
	VCPUs int
	Image [32]byte // digest of the guest image (zero where there is none to compare)
	// Takes are other images whose guests a destination takes too (a
	// QEMU under KVM takes one from a QEMU under TCG), and Refuses those
	// it knows it cannot, with why, said in place of "guest image
	// differs".
	Takes   [][32]byte
	Refuses map[[32]byte]string
}

// DirtyLog is one consumer's view of the guest's dirty pages.
type DirtyLog interface {
	// Harvest returns the pages written since the log started or was
	// last harvested.
	Harvest() (*bitmap.Bitmap, error)
	Close() error
}

// PageLister is a DirtyLog that can also hand over a harvest as a list of
// pages, which costs far less than a bitmap when a large guest dirties
// few pages an epoch (the simulator's terabyte guests). The engine prefers
// it where a log offers it.
type PageLister interface {
	// HarvestPages is Harvest as a list, ascending, each page once.
	HarvestPages() ([]uint64, error)
}

// Clock is the engine's time: the wall clock live, a virtual one in the
// simulator. Epochs, rounds, link pacing and timeouts go through it.
type Clock interface {
	Now() time.Time
	Sleep(d time.Duration)
	After(d time.Duration) <-chan time.Time
}

// WallClock is the Clock of live migrations.
type WallClock struct{}

func (WallClock) Now() time.Time                         { return time.Now() }
func (WallClock) Sleep(d time.Duration)                  { time.Sleep(d) }
func (WallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Contents is implemented by a guest whose RAM is not mapped, the
// simulator's, whose pages stand for a mix of contents: the engine asks it
// about each page it sends instead of reading Memory, which may then be
// nil.
type Contents interface {
	// Zero reports whether page gfn is all zero bytes.
	Zero(gfn uint64) bool
	// Page returns page gfn's PageSize bytes, to be compressed. It is
	// called from several goroutines at once. What it returns never
	// changes, and one buffer may stand for many pages: the compressor
	// codes each buffer once (mecom.Encoder.Memoize).
	Page(gfn uint64) []byte
	// Memo is where the compressor keeps each buffer's codings; guests
	// whose pages are the same buffers share one, so that every
	// migration of them sees the same timings.
	Memo() *mecom.Memo
}

// mappedContents is Contents over mapped guest memory.
type mappedContents []byte

func (m mappedContents) Zero(gfn uint64) bool { return mecom.IsZero(m.Page(gfn)) }

func (m mappedContents) Page(gfn uint64) []byte {
	return m[gfn*PageSize : (gfn+1)*PageSize : (gfn+1)*PageSize]
}

// Memo is nil: a running guest's pages change, so no coding is kept.
func (mappedContents) Memo() *mecom.Memo { return nil }

// recordReader is where the source reads the destination's records: the
// wire (Reader), or the simulator's virtual destination.
type recordReader interface {
	Next() (*Record, error)
	SetLimits(pages uint64)
}

// VirtualClock is the simulator's Clock: time stands still until the
// engine waits (Sleep, After) or the virtual link carries bytes (Advance).
// Now may be read from any goroutine; one goroutine advances it.
type VirtualClock struct {
	now atomic.Pointer[time.Time] // made once per Advance rather than per Now
}

// NewVirtualClock returns a clock reading start.
func NewVirtualClock(start time.Time) *VirtualClock {
	c := &VirtualClock{}
	c.now.Store(&start)
	return c
}

func (c *VirtualClock) Now() time.Time { return *c.now.Load() }

// Advance moves the clock d forward (nothing, if d is not positive).
func (c *VirtualClock) Advance(d time.Duration) {
	if d > 0 {
		t := c.now.Load().Add(d)
		c.now.Store(&t)
	}
}

func (c *VirtualClock) Sleep(d time.Duration) { c.Advance(d) }

// After advances the clock by d and returns a channel that is ready.
func (c *VirtualClock) After(d time.Duration) <-chan time.Time {
	c.Advance(d)
	ch := make(chan time.Time, 1)
	ch <- c.Now()
	return ch
}
