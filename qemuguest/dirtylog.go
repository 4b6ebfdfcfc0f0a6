package qemuguest

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/bpf"
	"github.com/pagecast/pagecast/collector"
	"github.com/pagecast/pagecast/qemu"
	"github.com/pagecast/pagecast/tcg"
)

// tcgLog is the dirty log of a QEMU under TCG: pagecast's plugin marks the
// pages the vCPUs write in one of two buffers, picked by the epoch
// published in its area; each Harvest switches epochs and reads the one
// closed. It is the area's only reader: the area's lock (tcg.Open) keeps a
// collector (pagecast profile) on the same QEMU from taking epochs from it.
//
// A vCPU thread preempted between loading the epoch and marking its page
// marks into the buffer of the epoch closed, after it was read: the page
// shows at the harvest after next. The migration's last harvest, after
// the pause, has no next; so a harvest while the vCPUs are stopped
// (setPaused) also reads the open epoch's buffer, where such a late mark
// lands, QEMU's stop having waited for every vCPU to finish its store and
// its mark (found by a review walk: a page written in a first write just
// before the pause went to the destination stale).
type tcgLog struct {
	mu       sync.Mutex
	area     *tcg.Area
	epoch    uint32
	ramPages uint64
	// layout, where the plugin names pages by guest-physical frame
	// (QEMU 8.2: qemu.PluginAddresses), turns them into RAM pages; nil
	// where it names them by offset in RAM (QEMU 7.2).
	layout *qemu.Layout
	buf    []uint64
	paused bool // the vCPUs are stopped: nothing marks
}

// setPaused says whether the vCPUs are stopped (QMP stop has returned).
func (l *tcgLog) setPaused(paused bool) {
	l.mu.Lock()
	l.paused = paused
	l.mu.Unlock()
}

// openTCGLog opens the plugin's area of QEMU pid, whose RAM has ramPages
// pages; layout is nil where the plugin names pages by offset in RAM, else
// where the RAM lies (see tcgLog).
func openTCGLog(pid int, ramPages uint64, layout *qemu.Layout) (*tcgLog, error) {
	a, err := tcg.Attach(pid)
	if err != nil {
		return nil, err
	}
	need := ramPages
	if layout != nil {
		need = layout.Frames()
	}
	if err := a.CheckCovers(ramPages*4096, need); err != nil {
		a.Close()
		return nil, fmt.Errorf("qemu %d: %w", pid, err)
	}
	return &tcgLog{area: a, epoch: 1, ramPages: ramPages, layout: layout}, nil
}

func (l *tcgLog) Harvest() (*bitmap.Bitmap, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.area == nil {
		return nil, fmt.Errorf("harvest: dirty log closed")
	}
	if st := l.area.Stats(); st.Exited {
		return nil, fmt.Errorf("harvest: QEMU (pid %d) has exited", st.PID)
	}
	closed := l.epoch
	l.area.SetEpoch(closed + 1)
	l.epoch = closed + 1
	time.Sleep(tcg.Grace)
	l.buf = l.area.ReadEpoch(closed, l.buf[:0])
	if l.paused {
		l.buf = l.area.ReadEpoch(l.epoch, l.buf) // late marks: nothing writes it now
	}
	if l.layout != nil {
		return pageSet(l.buf, *l.layout), nil
	}
	return ramSet(l.buf, l.ramPages), nil
}

func (l *tcgLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.area == nil {
		return nil
	}
	err := l.area.Close()
	l.area = nil
	return err
}

// ramSet is the set of the TCG plugin's pages below ramPages. The plugin
// reports a page of guest RAM by its offset in RAM, which is its offset in
// the shared RAM file (see package tcg): the guest-physical address below
// 4 GiB, but on a pc machine of 3.5 GiB or more the part QEMU maps from
// 4 GiB up comes right after the 3 GiB below it. Pages past the RAM are
// other blocks' (the BIOS's). (Until 2026-12-02 they went through pageSet
// as guest-physical frames: a 64-bit guest of 5 GiB writing its high
// memory had those pages dropped or put 1 GiB too low, and the migration's
// memory check failed in 35 chunks from 0xc0000000 up.)
func ramSet(pages []uint64, ramPages uint64) *bitmap.Bitmap {
	b := bitmap.New(ramPages)
	for _, p := range pages {
		if p < ramPages {
			b.Set(p)
		}
	}
	return b
}

// pageSet turns guest page frames (KVM's dirty ring's) into a set of RAM
// pages, where layout puts them.
func pageSet(gfns []uint64, layout qemu.Layout) *bitmap.Bitmap {
	b := bitmap.New(layout.RAMBytes() / 4096)
	for _, g := range gfns {
		if p, ok := layout.Page(g); ok {
			b.Set(p)
		}
	}
	return b
}

// kvmLog is the dirty log of a QEMU under KVM: the collector's eBPF hooks on
// KVM's dirty ring, with QEMU's dirty logging kept on by a dirty limit far
// above any vCPU's rate (QEMU needs -accel kvm,dirty-ring-size=N), shared
// with any other pagecast process profiling or migrating the QEMU.
type kvmLog struct {
	mu      sync.Mutex
	lock    *os.File // its lock file, flocked: one such log per QEMU (lockKVMLog)
	logging *qemu.DirtyLogging
	col     epochs
	layout  qemu.Layout // where the guest's RAM lies: KVM names pages by frame
	lost    uint64      // writes the hooks dropped (slot unknown, contended) at the last harvest

	// Where KVM write-protects (hardware virtualisation): the pages a
	// harvest must report again until QEMU's ring resets pass them.
	hold      *ringHold
	readRings func([]bpf.RingIndex) (uint32, error)
	allHeld   int // harvests in a row the hold has held every page
	pid       int
	rings     []bpf.RingIndex
}

// ringHoldEnv forces the ring hold on where KVM emulates the guest
// (kvm-pvm), which needs none, to exercise it there.
const ringHoldEnv = "PAGECAST_RING_HOLD"

// epochs is what kvmLog uses of a *collector.Collector.
type epochs interface {
	CloseEpoch() (collector.Epoch, error)
	Stats() (collector.Stats, error)
	Close() error
}

// openKVMLog opens the dirty log of QEMU pid, whose RAM lies where layout
// says.
func openKVMLog(mon Monitor, pid int, layout qemu.Layout) (*kvmLog, error) {
	lock, err := lockKVMLog(pid)
	if err != nil {
		return nil, err
	}
	logging, err := qemu.HoldDirtyLogging(mon, pid)
	if err != nil {
		lock.Close()
		return nil, err
	}
	hold := !qemu.KVMEmulates() || os.Getenv(ringHoldEnv) == "1"
	col, err := collector.New(collector.Config{PID: pid, MemoryBytes: layout.RAMBytes(), Layout: layout, RingIndices: hold})
	if err != nil {
		logging.Release()
		lock.Close()
		return nil, err
	}
	l := &kvmLog{lock: lock, logging: logging, col: col, layout: layout, pid: pid}
	if hold {
		l.hold, l.readRings, l.rings = &ringHold{}, col.Profiler().RingIndices, make([]bpf.RingIndex, bpf.MaxRings)
	}
	return l, nil
}

// lockKVMLog takes QEMU pid's dirty-log lock, as the TCG plugin's area is
// taken under TCG: one migration's dirty log per QEMU (a profile, which
// takes none, may watch beside it). Under KVM nothing kept a second
// pagecast migrate, or one choosing its engine, off a QEMU a migration
// was moving (found when /dev/kvm came back). The error is a
// *tcg.BusyError naming the holder.
func lockKVMLog(pid int) (*os.File, error) {
	// LockDir not writable: the log opens unguarded, as before locks (a
	// KVM profile or migration failed for it; walk 45).
	f, err := takeLock("dirty-log", pid, "a second pagecast migrate of this QEMU would not be refused")
	var busy *tcg.BusyError
	if errors.As(err, &busy) {
		busy.KVM = true
	}
	return f, err
}

// takeLock takes QEMU pid's lock file of kind (qemu.OpenLock) without
// waiting and returns it, held; where another process holds it, a
// *tcg.BusyError naming that process. Where LockDir cannot be written it
// logs unguarded as a warning and returns nil, nil: the caller goes on
// without the lock.
func takeLock(kind string, pid int, unguarded string) (*os.File, error) {
	f, err := qemu.OpenLock(kind, pid)
	if err != nil {
		slog.Warn(unguarded, "err", err)
		return nil, nil
	}
	switch ok, err := qemu.TryLock(f, syscall.LOCK_EX); {
	case err != nil:
		f.Close()
		return nil, err
	case !ok:
		defer f.Close()
		who, args := tcg.LockHolder(f)
		return nil, &tcg.BusyError{Path: f.Name(), Holder: who, Args: args}
	}
	return f, nil
}

func (l *kvmLog) Harvest() (*bitmap.Bitmap, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.col == nil {
		return nil, fmt.Errorf("harvest: dirty log closed")
	}
	e, err := l.col.CloseEpoch()
	if err != nil {
		return nil, fmt.Errorf("harvest: %w", err)
	}
	b := pageSet(e.Pages, l.layout)
	all := false
	if l.hold != nil {
		gen, err := l.readRings(l.rings)
		if err != nil {
			return nil, fmt.Errorf("harvest: %w", err)
		}
		held, holdAll := l.hold.harvest(e.Pages, l.rings, gen, time.Now())
		for _, g := range held {
			if p, ok := l.layout.Page(g); ok {
				b.Set(p)
			}
		}
		all = holdAll
		if l.allHeld++; !holdAll {
			l.allHeld = 0
		} else if l.allHeld == 50 {
			slog.Warn("QEMU has not reset its vCPUs' dirty rings (two reset ioctls in force) in 50 harvests: every page counts as dirty until it does, and the migration cannot converge",
				"pid", l.pid)
		}
	}
	st, err := l.col.Stats()
	if err != nil {
		return nil, fmt.Errorf("harvest: %w", err)
	}
	if lost := st.Dropped["slot_unknown"] + st.Dropped["contended"]; lost != l.lost {
		// Writes to RAM the hooks saw and could not place: which pages
		// is unknown, so every page is taken as dirty.
		slog.Warn("the dirty log lost writes it could not place; every page counts as dirty this round",
			"lost", lost-l.lost, "dropped", st.Dropped)
		l.lost = lost
		all = true
	}
	if all {
		for p := range l.layout.RAMBytes() / 4096 {
			b.Set(p)
		}
	}
	return b, nil
}

func (l *kvmLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.col == nil {
		return nil
	}
	err := l.col.Close()
	l.col = nil
	if rerr := l.logging.Release(); err == nil {
		err = rerr
	}
	l.lock.Close()
	return err
}
