package qemuguest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/bitmap"
	"github.com/pagecast/pagecast/internal/proc"
	"github.com/pagecast/pagecast/migrator"
	"github.com/pagecast/pagecast/qemu"
)

var (
	_ migrator.Guest       = (*Source)(nil)
	_ migrator.StateSizer  = (*Source)(nil)
	_ migrator.PauseMarker = (*Source)(nil)
)

// Source is a running QEMU, the VM pagecast's engine migrates away.
type Source struct {
	vm
	mu         sync.Mutex
	throttle   cpuThrottle
	lastState  atomic.Uint64 // bytes of the last state saved; 0 before the first
	tcgLog     *tcgLog       // the dirty log under TCG, told of pauses; nil until StartDirtyLog
	reclaimed  bool          // a killed pagecast's throttle was looked for (New's, once a dirty log opened)
	switchover bool          // SaveState marked the guest paused for a switch-over (markSwitchover); Close clears it
	stoppedAt  time.Time     // the STOP event's time of the last Pause that stopped a running guest; zero if not known
}

// eventKeeper is a monitor that keeps the last event of each name
// (qmpclient.Client).
type eventKeeper interface {
	Latest(event string) (qmp.Event, bool)
}

// stateEstimate is what StateBytes says before a state was saved: about
// what QEMU 7.2 saves for pagecast's guest (318 687 bytes, TestSaveState;
// the simulator's default is 300 KiB).
const stateEstimate = 320 << 10

// vm is what Source and Dest share: the monitor, QEMU's process, its
// mapped RAM and identity.
type vm struct {
	mon   Monitor
	pid   int
	mem   []byte
	tids  []int // vCPU threads
	kvm   bool
	id    migrator.Identity
	v     *qemu.VM       // the QEMU StartSource or StartDest booted
	ram   *os.File       // the file mem maps, for its holes (migrator.MemoryFile)
	named bool           // the RAM's backend is a memory-backend-file, not a memfd (ramFile)
	owned []func() error // run by Close, last first
}

// Dial connects to the QMP socket of a running QEMU and maps its guest RAM.
// The socket is this Source's until Close (QEMU serves one client per QMP
// socket).
func Dial(qmpPath string) (*Source, error) {
	mon, err := dial(qmpPath)
	if err != nil {
		return nil, err
	}
	s, err := New(mon)
	if err != nil {
		mon.Disconnect()
		return nil, err
	}
	mon.SetAnswerWait(0) // attached: the migration's questions wait as long as QEMU takes
	s.owned = append(s.owned, mon.Disconnect)
	return s, nil
}

// New is the QEMU behind mon: its process is found from its vCPU threads,
// its guest RAM from its memory backend (shared, or an error naming the
// options that make it so).
func New(mon Monitor) (*Source, error) {
	s := &Source{}
	if err := s.attach(mon, 0, nil); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil // StartDirtyLog lifts a throttle a killed pagecast left (reclaim)
}

// ErrStateCarriesRAM is wrapped by CanSend's error for a QEMU whose own
// migration would carry its guest RAM with the device state.
var ErrStateCarriesRAM = errors.New("QEMU's migration would send the guest RAM with the device state")

// CanSend says why pagecast's engine cannot migrate this QEMU's guest away,
// nil where it can. The engine sends the RAM itself and takes only the
// vCPU and device state from QEMU's own migration, with x-ignore-shared;
// QEMU 8.1 and later skip only shared RAM in a named file there ("exec/
// memory: Introduce RAM_NAMED_FILE flag"), so a memfd's RAM went with the
// state, in the switch-over's pause: on QEMU 10.0.2 a 256 MiB guest's pause
// took 2.9 s (65.9 MB of state), a 1 GiB guest's failed past the state's 64
// MiB, and a destination pagecast started refused the stream ("block ram
// should not be migrated"; walk 111). As a destination a memfd's QEMU is
// fine.
func (s *Source) CanSend() error {
	if s.named {
		return nil
	}
	v, err := qemu.QueryVersion(s.mon)
	if err != nil || !qemu.MigratesMemfdRAM(v) {
		return nil // 7.2 skips it (an unanswered version: tried, as before)
	}
	return fmt.Errorf("qemu %d (QEMU %s): its guest RAM is not in a named file (memory-backend-memfd, not -file), and %w (from 8.1 on, x-ignore-shared skips only RAM in a named file), "+
		"so pagecast's engine would send the RAM twice, the second time in the switch-over's pause; "+
		"start QEMU with -object memory-backend-file,id=ram,size=SIZE,mem-path=/dev/shm/FILE,share=on -machine memory-backend=ram instead",
		s.pid, v, ErrStateCarriesRAM)
}

// reclaim lifts a throttle a killed pagecast left on a QEMU pagecast did
// not start, once: called with the dirty log open, which under TCG means
// the plugin's area is this process's, so no live pagecast migrate is
// throttling the QEMU. (Done in New, a second migrate, or one choosing
// its engine, lifted the throttle of a migration under way; found by a
// review.)
func (s *Source) reclaim() {
	if s.reclaimed {
		return
	}
	s.reclaimed = true
	switch lifted, err := reclaimThrottle(s.pid, s.tids); {
	case err != nil:
		slog.Warn("a killed pagecast left this QEMU's vCPUs throttled", "pid", s.pid, "err", err)
	case lifted:
		slog.Warn("a killed pagecast had left this QEMU's vCPUs throttled: the throttle is lifted", "pid", s.pid)
	}
}

// FromVM is the QEMU v started (qemu.Start), driven through v.Monitor; v
// stays the caller's to close.
func FromVM(v *qemu.VM) (*Source, error) {
	s := &Source{reclaimed: true} // its QEMU is this process's: no other pagecast's throttle on it
	if err := s.attach(v.Monitor, v.PID(), v.Memory()); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// attach learns the VM through mon. pid and mem are known already for a
// QEMU this process started, else 0 and nil.
func (g *vm) attach(mon Monitor, pid int, mem []byte) error {
	g.mon = mon
	cpus, err := vcpus(mon)
	if err != nil {
		return err
	}
	for _, c := range cpus {
		g.tids = append(g.tids, c.ThreadID)
	}
	if pid == 0 {
		if pid, err = qemuPID(cpus[0].ThreadID); err != nil {
			return err
		}
	}
	g.pid = pid
	path, size, named, err := ramFile(mon, pid)
	if err != nil {
		return err
	}
	g.named = named
	// Kept open: the engine finds its holes (migrator.MemoryFile).
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open qemu guest RAM: %w", err)
	}
	g.ram = f
	g.owned = append(g.owned, f.Close)
	if mem == nil {
		if mem, err = mapRAM(f, size); err != nil {
			return err
		}
		m := mem
		g.owned = append(g.owned, func() error { return unix.Munmap(m) })
	} else if uint64(len(mem)) != size {
		return fmt.Errorf("qemu %d: %d bytes of RAM mapped, its backend has %d", pid, len(mem), size)
	}
	g.mem = mem
	if g.kvm, err = accelIsKVM(mon); err != nil {
		return err
	}
	var machine string
	if err := qemu.QMP(mon, "qom-get", map[string]any{"path": "/machine", "property": "type"}, &machine); err != nil {
		return err
	}
	model := cpus[0].QOMType
	if model == "" {
		// QEMU 7.2's query-cpus-fast has no qom-type: the vCPU's own
		// type, asked of it (walk 122: left empty, two QEMUs that
		// differed in -cpu passed the handshake).
		if err := qemu.QMP(mon, "qom-get", map[string]any{"path": cpus[0].QOMPath, "property": "type"}, &model); err != nil {
			return fmt.Errorf("the vCPU model: %w", err)
		}
	}
	g.id = identity(machine, model, len(cpus), g.kvm)
	return nil
}

// identity is what must match between two QEMUs for one's device state to
// load in the other: the vCPU count, and a digest of the machine type (the
// versioned one, "pc-i440fx-7.2-machine"), the vCPU model and the
// accelerator. RAM size is compared by the engine on its own; the guest
// image is in RAM, which moves.
//
// A guest under KVM has device state TCG has not (kvmclock): a QEMU under
// TCG refused it once it came, after every page had been sent ("Unknown
// savevm section or instance 'kvmclock' 0"; walk 69), so a TCG destination
// refuses a KVM source in the handshake. A KVM destination takes a TCG
// source, whose state is a subset of its own.
func identity(machine, cpuModel string, n int, kvm bool) migrator.Identity {
	tcgImage := sha256.Sum256([]byte("qemu\x00" + machine + "\x00" + cpuModel))
	kvmImage := sha256.Sum256([]byte("qemu\x00" + machine + "\x00" + cpuModel + "\x00kvm"))
	if kvm {
		return migrator.Identity{VCPUs: n, Image: kvmImage, Takes: [][32]byte{tcgImage}}
	}
	return migrator.Identity{VCPUs: n, Image: tcgImage, Refuses: map[[32]byte]string{kvmImage: "the source's QEMU runs its guest under KVM and this destination's under TCG, " +
		"which cannot load a KVM guest's device state (its kvmclock): start the destination with --accel kvm (a guest under TCG moves to KVM, not back)"}}
}

// PID is QEMU's process id.
func (g *vm) PID() int { return g.pid }

// VCPUThreads are the host thread ids of the vCPUs (query-cpus-fast).
func (g *vm) VCPUThreads() []int { return slices.Clone(g.tids) }

// VCPUTime is the CPU time the vCPU threads have had, summed
// (proc.ThreadCPU).
func (g *vm) VCPUTime() (time.Duration, error) {
	var sum time.Duration
	// Under TCG with one thread (thread=single) every vCPU names the
	// same thread: counted once (review 73).
	tids := slices.Clone(g.tids)
	slices.Sort(tids)
	for _, tid := range slices.Compact(tids) {
		t, err := proc.ThreadCPU(g.pid, tid)
		if err != nil {
			return 0, err
		}
		sum += t
	}
	return sum, nil
}

// KVM says whether QEMU runs the guest under KVM (its dirty pages through
// eBPF), else TCG (through the plugin's area, one reader at a time).
func (g *vm) KVM() bool { return g.kvm }

func (g *vm) MemoryBytes() uint64         { return uint64(len(g.mem)) }
func (g *vm) Memory() []byte              { return g.mem }
func (g *vm) Identity() migrator.Identity { return g.id }

// MemoryFD is the descriptor of the file guest RAM is mapped from, or -1:
// migrator.MemoryFile.
func (g *vm) MemoryFD() int {
	if g.ram == nil {
		return -1
	}
	return int(g.ram.Fd())
}

// Close releases what this side opened: the RAM mapping, the QMP
// connection or QEMU it started.
func (g *vm) close() error {
	var errs []error
	for i := len(g.owned) - 1; i >= 0; i-- {
		errs = append(errs, g.owned[i]())
	}
	g.owned = nil
	return errors.Join(errs...)
}

// Running reports whether the guest runs, else QEMU's run state.
func (s *Source) Running() (bool, string) {
	st, err := qemu.RunState(s.mon)
	if err != nil {
		return false, err.Error()
	}
	return st == "running", st
}

// Gone says, once the source QEMU has exited (killed, or quit), that it
// has (migrator.Goner): the migration then fails at once rather than
// when it next asks QEMU, and says why.
func (s *Source) Gone() error {
	if s.pid == 0 || !proc.Gone(s.pid) {
		return nil
	}
	return fmt.Errorf("the source QEMU (pid %d) has exited", s.pid)
}

var _ migrator.Goner = (*Source)(nil)

// StartDirtyLog tracks the pages the vCPUs write: pagecast's plugin under
// TCG, the collector's eBPF hooks under KVM.
func (s *Source) StartDirtyLog() (migrator.DirtyLog, error) {
	pages := s.MemoryBytes() / 4096
	if s.kvm {
		layout, err := readLayout(s.mon, s.pid, s.MemoryBytes())
		if err != nil {
			return nil, err
		}
		l, err := openKVMLog(s.mon, s.pid, layout)
		if err == nil {
			s.mu.Lock()
			s.reclaim()
			s.mu.Unlock()
		}
		return l, err
	}
	// QEMU 8.2's plugin API names pages by guest-physical address, 7.2's
	// by offset in RAM: above 4 GiB they differ (review 54).
	var layout *qemu.Layout
	switch v, err := qemu.QueryVersion(s.mon); {
	case err != nil:
		return nil, err
	case qemu.PluginAddresses(v):
		l, err := readLayout(s.mon, s.pid, s.MemoryBytes())
		if err != nil {
			return nil, err
		}
		layout = &l
	}
	l, err := openTCGLog(s.pid, pages, layout)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.tcgLog = l
	s.reclaim()
	s.mu.Unlock()
	return l, nil
}

// Pause stops the vCPUs (QMP stop). A throttled vCPU thread is let run
// at full pace while it stops, and throttled again once stopped, so that a
// resume finds it as it was: QEMU's stop waits for every vCPU thread to
// see it, and one throttled to 1% sees it only in its next CFS period
// (measured: 48-250 ms at 99%, 5-29 ms at 90%, 0.5 ms unthrottled), the
// guest running and dirtying pages meanwhile (the engine's downtime starts
// once Pause returns, but the migration waited that long).
func (s *Source) Pause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pct := s.throttle.pct
	if pct > 0 {
		if err := s.throttle.unbound(); err != nil {
			return err
		}
	}
	keeper, _ := s.mon.(eventKeeper)
	var before qmp.Event
	if keeper != nil {
		before, _ = keeper.Latest("STOP")
	}
	err := qemu.QMP(s.mon, "stop", nil, nil)
	s.stoppedAt = time.Time{}
	if err == nil && keeper != nil {
		// QEMU sends STOP once the vCPUs have stopped, before stop's
		// reply; none if the guest was paused already.
		if e, ok := keeper.Latest("STOP"); ok && e.Timestamp != before.Timestamp {
			s.stoppedAt = time.Unix(e.Timestamp.Seconds, e.Timestamp.Microseconds*1000)
		}
	}
	if err == nil && s.tcgLog != nil {
		s.tcgLog.setPaused(true)
	}
	if pct > 0 {
		if rerr := s.throttle.set(s.pid, s.tids, pct); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}

// PausedAt is when the last Pause stopped the running vCPUs, by QEMU's
// STOP event (migrator.PauseMarker); zero where the monitor keeps no
// events or the guest was paused already. stop's reply comes later, by
// as long as QEMU's main loop and the engine's thread wait for a CPU.
func (s *Source) PausedAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stoppedAt
}

// Resume runs the vCPUs again (QMP cont), from paused or from the
// postmigrate state SaveState leaves QEMU in.
func (s *Source) Resume() error {
	s.mu.Lock()
	l := s.tcgLog
	s.mu.Unlock()
	if l != nil {
		// Before cont: a harvest after it must not take the open epoch's
		// marks as the vCPUs write them.
		l.setPaused(false)
	}
	return qemu.QMP(s.mon, "cont", nil, nil)
}

// Repause leaves QEMU paused after a failed migration of a guest its user
// had paused (migrator.Repauser): SaveState left it in postmigrate, which
// says the guest migrated away (a second migrate refused it so, the guest's
// only copy: walk 117), and QEMU has no way from there to paused but
// through running: it runs for the moment between cont and stop (a QMP
// round trip, and RESUME and STOP events).
func (s *Source) Repause() error {
	st, err := qemu.RunState(s.mon)
	if err != nil || st != "postmigrate" {
		return err // paused still: SaveState had not run
	}
	if err := qemu.QMP(s.mon, "cont", nil, nil); err != nil {
		return err
	}
	return qemu.QMP(s.mon, "stop", nil, nil)
}

var _ migrator.Repauser = (*Source)(nil)

// Throttle is the share of vCPU time taken away, in percent.
func (s *Source) Throttle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttle.pct
}

// CanThrottle says why SetThrottle would fail on this machine (cgroup
// v1's cpu controller missing, or no right to make a cgroup in it); nil
// where it would not.
func (s *Source) CanThrottle() error {
	return canThrottle(s.pid, s.tids)
}

// SetThrottle takes pct percent of each vCPU thread's time away (at most
// 99; 0 lifts the throttle).
func (s *Source) SetThrottle(pct int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.throttle.set(s.pid, s.tids, min(pct, 99))
}

// SaveState captures QEMU's vCPU and device state from the paused guest
// (see state.go).
func (s *Source) SaveState() ([]byte, error) {
	s.mu.Lock()
	if !s.switchover {
		s.switchover = true
		markSwitchover(s.pid)
	}
	s.mu.Unlock()
	state, err := saveState(s.mon, s.pid)
	if err == nil {
		s.lastState.Store(uint64(len(state)))
	}
	return state, err
}

// StateBytes is about how big SaveState's state will be, for the engine's
// downtime estimate (migrator.StateSizer): the size of the last one saved,
// or, before one was, stateEstimate.
func (s *Source) StateBytes() uint64 {
	if n := s.lastState.Load(); n > 0 {
		return n
	}
	return stateEstimate
}

// EarlyPages is nil: a destination QEMU reads no guest page before it
// runs the guest.
func (s *Source) EarlyPages(*bitmap.Bitmap) []uint64 { return nil }

// LeaveUnconfirmed keeps the mark SaveState left of the guest paused for
// the switch-over after Close (see AbandonedSwitchover): the migration
// completed, but its destination did not confirm that it runs the guest,
// which may be only here.
func (s *Source) LeaveUnconfirmed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.switchover {
		s.switchover = false
		leaveUnconfirmed(s.pid)
	}
}

// Close lifts a throttle and releases the RAM mapping and whatever this
// Source opened or started.
func (s *Source) Close() error {
	s.mu.Lock()
	err := s.throttle.lift()
	if s.switchover {
		s.switchover = false
		clearSwitchover(s.pid)
	}
	s.mu.Unlock()
	return errors.Join(err, s.close())
}
