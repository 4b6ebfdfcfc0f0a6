package vmm

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pagecast/pagecast/guest"
)

// PageSize is the guest page size pagecast tracks.
const PageSize = 4096

// DefaultRingEntries is the dirty ring size per vCPU: 1 MiB, the most KVM
// allows, because where KVM emulates instructions every store takes an
// entry.
const DefaultRingEntries = 65536

// MinRingEntries is the smallest dirty ring a VM takes: KVM asks for
// collection 64 entries short of full, and a host that emulates the
// guest's instructions pushes up to a batch of them (kvm-pvm: 1024) before
// the vCPU exits. A ring of 256 overflowed within a second of profiling a
// uniform workload on kvm-pvm (ErrRingOverflow); 512 to 4096 did not.
const MinRingEntries = 4096

// Config describes a virtual machine.
type Config struct {
	MemoryBytes uint64 // guest RAM, a multiple of 1 MiB
	VCPUs       int
	Image       []byte // multiboot ELF kernel; guest.Image() by default
	Cmdline     string // multiboot command line
	DirtyMode   string // DirtyRing (default) or DirtyBitmap
	RingEntries int    // entries per vCPU dirty ring, a power of two (default and most KVM allows: 65536)
	KVMDevice   string // default /dev/kvm
	Log         *slog.Logger
	Serial      io.Writer // optional copy of the guest's serial lines
}

// ErrNoKVM is returned when the KVM device cannot be opened.
var ErrNoKVM = errors.New("KVM is not available")

// Run states, named as QEMU names them in query-status.
const (
	StatePrelaunch     = "prelaunch"
	StateRunning       = "running"
	StatePaused        = "paused"
	StateInternalError = "internal-error"
	// Reported by RunState only: a VM not started that waits for an
	// incoming migration (ExpectIncoming), and one paused whose guest a
	// completed migration moved away (MigratedOut).
	StateInMigrate   = "inmigrate"
	StatePostMigrate = "postmigrate"
	StateShutdown    = "shutdown"
)

// VM is a running KVM virtual machine with one memory slot at guest
// physical address 0.
type VM struct {
	cfg     Config
	log     *slog.Logger
	kvm     *os.File
	vmfd    int
	memfd   int
	mem     []byte
	vcpus   []*vcpu
	serial  *serialPort
	tracker dirtyTracker
	kernel  *guest.Kernel
	image   [32]byte // SHA-256 of the guest image
	started time.Time
	// stoppedAt is when a Pause last stopped the running vCPUs (its STOP
	// event), under mu.
	stoppedAt time.Time

	mu       sync.Mutex
	cond     *sync.Cond
	state    string
	pauseReq bool
	stopping atomic.Bool // pauseReq or quitting set: a throttled vCPU stops sleeping
	quitting bool
	incoming bool  // prelaunch waits for an incoming migration
	holdIn   bool  // stop while incoming: the guest stays paused once it has come
	movedOut bool  // paused after a completed outgoing migration
	err      error // why the guest stopped, if it failed

	dirtyMu      sync.Mutex
	logs         map[*DirtyLog]struct{}
	monitorDirty *Bitmap // pages the monitor itself wrote while logging
	reaperStop   chan struct{}
	reapers      sync.WaitGroup
	logsShut     bool // Close has begun: no dirty log may start

	rate      rateMeter
	onEvent   func(name string, data any)
	contGuard func() error // QMP cont asks it first (SetContGuard)

	migrationHeld bool   // paused, or being paused, by an outgoing migration (Migratable.Pause), until resumed
	pauses        uint64 // pauses so far: Cont asks its guard again where one came meanwhile
	pausing       int    // pauses waiting for the vCPUs to stop: a resume waits for them

	throttlePct atomic.Int32 // percent of vCPU time taken away (SetThrottle)
	sleepUntil  atomic.Int64 // unix ns: vCPUs sleep until then before entering the guest
	throttling  bool         // the throttler goroutine runs; guarded by mu
}

// New creates the virtual machine, its memory and vCPUs, and loads the
// kernel. The vCPUs do not run until Start.
func New(cfg Config) (_ *VM, err error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Image == nil {
		cfg.Image = guest.Image()
	}
	if cfg.VCPUs == 0 {
		cfg.VCPUs = 1
	}
	if cfg.DirtyMode == "" {
		cfg.DirtyMode = DirtyRing
	}
	if cfg.RingEntries == 0 {
		cfg.RingEntries = DefaultRingEntries
	}
	if cfg.KVMDevice == "" {
		cfg.KVMDevice = "/dev/kvm"
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	kernel, err := guest.Load(cfg.Image)
	if err != nil {
		return nil, fmt.Errorf("load guest image: %w", err)
	}

	vm := &VM{
		cfg:          cfg,
		log:          cfg.Log.With("component", "vmm"),
		vmfd:         -1,
		memfd:        -1,
		kernel:       kernel,
		image:        sha256.Sum256(cfg.Image),
		state:        StatePrelaunch,
		logs:         map[*DirtyLog]struct{}{},
		monitorDirty: NewBitmap(cfg.MemoryBytes / PageSize),
	}
	vm.cond = sync.NewCond(&vm.mu)
	vm.serial = &serialPort{out: cfg.Serial, log: cfg.Log.With("component", "serial")}
	defer func() {
		if err != nil {
			vm.release()
		}
	}()

	if err := vm.openKVM(); err != nil {
		return nil, err
	}
	if err := vm.createMemory(); err != nil {
		return nil, err
	}
	if err := vm.createTracker(); err != nil {
		return nil, err
	}
	if err := vm.setMemoryRegion(0); err != nil {
		return nil, err
	}
	for i := 0; i < cfg.VCPUs; i++ {
		if err := vm.createVCPU(i); err != nil {
			return nil, err
		}
	}
	if err := vm.boot(); err != nil {
		return nil, err
	}
	return vm, nil
}

func (c *Config) validate() error {
	switch {
	case c.MemoryBytes < guest.MinMemory:
		return fmt.Errorf("memory %d MiB is below the guest's minimum of %d MiB", c.MemoryBytes>>20, guest.MinMemory>>20)
	case c.MemoryBytes%(1<<20) != 0:
		return fmt.Errorf("memory %d bytes is not a whole number of MiB", c.MemoryBytes)
	case c.MemoryBytes > 3<<30:
		// In GiB past a TiB: 9E read "9895604649984 MiB" (walk 128).
		size := fmt.Sprintf("%d MiB", c.MemoryBytes>>20)
		if c.MemoryBytes >= 1<<40 {
			size = fmt.Sprintf("%d GiB", c.MemoryBytes>>30)
		}
		return fmt.Errorf("memory %s is above the 3072 MiB this monitor maps below the PCI hole (vm run --monitor qemu runs larger guests)", size)
	case c.VCPUs < 1 || c.VCPUs > guest.MaxCPUs:
		return fmt.Errorf("vcpus %d out of range 1..%d", c.VCPUs, guest.MaxCPUs)
	case c.DirtyMode != DirtyRing && c.DirtyMode != DirtyBitmap:
		return fmt.Errorf("dirty tracking mode %q: want %q or %q", c.DirtyMode, DirtyRing, DirtyBitmap)
	case c.RingEntries < MinRingEntries || c.RingEntries&(c.RingEntries-1) != 0:
		return fmt.Errorf("dirty ring size %d: want a power of two of at least %d", c.RingEntries, MinRingEntries)
	}
	return nil
}

func (vm *VM) openKVM() error {
	f, err := os.OpenFile(vm.cfg.KVMDevice, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoKVM, err)
	}
	vm.kvm = f
	kfd := int(f.Fd())
	if v, err := ioctl(kfd, kvmGetAPIVersion, 0); err != nil {
		// Not -1 printed unsigned (walk 128: --kvm /dev/null).
		return fmt.Errorf("%w: %s: KVM_GET_API_VERSION failed (%v): not a KVM device", ErrNoKVM, vm.cfg.KVMDevice, err)
	} else if v != 12 {
		return fmt.Errorf("%w: %s: unexpected KVM API version %d, want 12", ErrNoKVM, vm.cfg.KVMDevice, v)
	}
	fd, err := ioctl(kfd, kvmCreateVM, 0)
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	vm.vmfd = int(fd)
	if _, err := ioctl(vm.vmfd, kvmSetTSSAddr, 0xfffbd000); err != nil {
		return fmt.Errorf("KVM_SET_TSS_ADDR: %w", err)
	}
	return nil
}

func (vm *VM) createMemory() error {
	fd, err := unix.MemfdCreate("pagecast-guest-ram", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("create guest memory: %w", err)
	}
	vm.memfd = fd
	if err := unix.Ftruncate(fd, int64(vm.cfg.MemoryBytes)); err != nil {
		return fmt.Errorf("size guest memory: %w", err)
	}
	mem, err := unix.Mmap(fd, 0, int(vm.cfg.MemoryBytes), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map guest memory: %w", err)
	}
	vm.mem = mem
	return nil
}

func (vm *VM) createTracker() error {
	pages := vm.cfg.MemoryBytes / PageSize
	switch vm.cfg.DirtyMode {
	case DirtyRing:
		max, err := ioctl(vm.vmfd, kvmCheckExtension, kvmCapDirtyLogRing)
		if err != nil || max == 0 {
			return fmt.Errorf("dirty ring: kernel lacks KVM_CAP_DIRTY_LOG_RING (use --dirty bitmap)")
		}
		bytes := uint64(vm.cfg.RingEntries) * 16
		if bytes > uint64(max) {
			return fmt.Errorf("dirty ring of %d entries exceeds the kernel's maximum of %d", vm.cfg.RingEntries, max/16)
		}
		ec := enableCap{Cap: kvmCapDirtyLogRing, Args: [4]uint64{bytes}}
		if err := ioctlPtr(vm.vmfd, kvmEnableCap, &ec); err != nil {
			return fmt.Errorf("enable dirty ring: %w", err)
		}
		vm.tracker = &ringTracker{vmfd: vm.vmfd, pending: NewBitmap(pages)}
	case DirtyBitmap:
		if v, err := ioctl(vm.vmfd, kvmCheckExtension, kvmCapManualDirtyLogProtect2); err != nil || v&kvmDirtyLogManualProtectEnable == 0 {
			return fmt.Errorf("dirty bitmap: kernel lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2")
		}
		ec := enableCap{Cap: kvmCapManualDirtyLogProtect2, Args: [4]uint64{kvmDirtyLogManualProtectEnable}}
		if err := ioctlPtr(vm.vmfd, kvmEnableCap, &ec); err != nil {
			return fmt.Errorf("enable manual dirty log protect: %w", err)
		}
		vm.tracker = &bitmapTracker{vmfd: vm.vmfd, pages: pages, buf: NewBitmap(pages)}
	}
	return nil
}

// setMemoryRegion (re)registers the guest memory slot with the given flags,
// which is how KVM turns dirty logging on and off.
func (vm *VM) setMemoryRegion(flags uint32) error {
	r := userspaceMemoryRegion{
		Slot:          0,
		Flags:         flags,
		MemorySize:    vm.cfg.MemoryBytes,
		UserspaceAddr: uint64(uintptrOf(vm.mem)),
	}
	if err := ioctlPtr(vm.vmfd, kvmSetUserMemoryRegion, &r); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION: %w", err)
	}
	return nil
}

func (vm *VM) createVCPU(id int) error {
	fd, err := ioctl(vm.vmfd, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	c := &vcpu{id: id, fd: int(fd), vm: vm}
	vm.vcpus = append(vm.vcpus, c)
	size, err := ioctl(int(vm.kvm.Fd()), kvmGetVCPUMmapSize, 0)
	if err != nil {
		return fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	run, err := unix.Mmap(c.fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map kvm_run of vcpu %d: %w", id, err)
	}
	c.run = run
	if rt, ok := vm.tracker.(*ringTracker); ok {
		ring, err := mapRing(c.fd, vm.cfg.RingEntries)
		if err != nil {
			return fmt.Errorf("vcpu %d: %w", id, err)
		}
		c.ring = ring
		rt.rings = append(rt.rings, ring)
	}
	return nil
}

// Start runs the vCPUs.
func (vm *VM) Start() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.startLocked()
}

// StartPaused starts the VM paused, as Start does one stopped while it
// waited for an incoming migration: its guest was paused on the source
// (QMP cont runs it).
func (vm *VM) StartPaused() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.state == StatePrelaunch {
		vm.holdIn = true
	}
	return vm.startLocked()
}

func (vm *VM) startLocked() error {
	if vm.state != StatePrelaunch {
		return fmt.Errorf("start: virtual machine is %s", vm.state)
	}
	vm.state = StateRunning
	if vm.holdIn {
		// Stopped while it waited: it starts paused, as QEMU's guest
		// does after an incoming migration once stop has turned its
		// autostart off.
		vm.state = StatePaused
		vm.pauseReq = true
		vm.stopping.Store(true)
	}
	vm.started = time.Now()
	for _, c := range vm.vcpus {
		go c.loop()
	}
	if vm.incoming && vm.state == StateRunning {
		// The guest migrated in runs: QEMU says so to its monitor's
		// clients (walk 137: the source's STOP came, no RESUME here).
		vm.emit("RESUME", nil)
	}
	return nil
}

// Pause stops every vCPU and returns once none is inside KVM_RUN. A VM
// waiting for an incoming migration will start paused (QEMU's stop under
// -incoming).
func (vm *VM) Pause() error { return vm.pause(false) }

// pause is Pause; forMigration marks the guest as held paused by an
// outgoing migration, which QMP cont then asks the cont guard about.
func (vm *VM) pause(forMigration bool) error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	switch {
	case vm.state == StatePaused:
		vm.pauses++
		vm.migrationHeld = vm.migrationHeld || forMigration
		return nil
	case vm.state == StatePrelaunch && vm.incoming:
		vm.holdIn = true
		return nil
	case vm.state == StateRunning:
	default:
		return fmt.Errorf("pause: virtual machine is %s", vm.state)
	}
	// Known before the wait, which lets go of vm.mu: a cont meanwhile
	// (Cont, resumeLocked) waits for it, and one of a guest a migration
	// is pausing asks the guard. A user's stop and cont around the
	// migration's pause undid it, the guest running while the VM said
	// paused, or left it waiting for good (found by a review walk).
	vm.pausing++
	vm.migrationHeld = vm.migrationHeld || forMigration
	vm.pauseReq = true
	vm.stopVCPUsLocked()
	vm.pausing--
	vm.cond.Broadcast()
	switch vm.state {
	case StateRunning:
		vm.state = StatePaused
		vm.stoppedAt = time.Now()
		vm.emit("STOP", nil)
	case StatePaused: // another Pause, while this one waited
	default:
		// A vCPU failed the guest while this waited (stopVCPUsLocked lets
		// go of vm.mu): paused over it, the VM said paused, and cont then
		// running, with a dead vCPU (argued by a review walk).
		return fmt.Errorf("pause: virtual machine is %s", vm.state)
	}
	vm.pauses++
	return nil
}

// stopVCPUsLocked kicks every vCPU out of KVM_RUN and waits until each has
// acknowledged the pause request (or stopped). Callers hold vm.mu and have
// set pauseReq or quitting.
func (vm *VM) stopVCPUsLocked() {
	vm.stopping.Store(true)
	for _, c := range vm.vcpus {
		c.setImmediateExit(true)
	}
	vcpus := vm.vcpus
	done, kicked := make(chan struct{}), make(chan struct{})
	defer func() { close(done); <-kicked }()
	go func() {
		// A kick can land just before the thread enters KVM_RUN, where
		// immediate_exit catches it; keep kicking until all have answered.
		defer close(kicked)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			for _, c := range vcpus {
				c.kick()
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	for !vm.allStoppedLocked() {
		vm.cond.Wait()
	}
}

func (vm *VM) allStoppedLocked() bool {
	for _, c := range vm.vcpus {
		if !(c.paused || c.stopped || c.halted) {
			return false
		}
	}
	return true
}

// Resume lets paused vCPUs run again. A VM waiting for an incoming
// migration will run once it has come, as it would have without Pause
// (QEMU's cont under -incoming).
func (vm *VM) Resume() error {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.resumeLocked()
}

// Cont is QMP cont: Resume, but where an outgoing migration paused the
// guest it first asks the cont guard (SetContGuard), and refuses with its
// error. cont of a source whose switch-over held the guest paused ran it
// here and on the destination at once (found by a review walk); one the
// user paused is the user's to run. A pause that comes while the guard
// is asked has it asked again.
//
// A guest that migrated away (postmigrate) asks the guard too, unless
// forced (ContForced): it runs on the destination, and cont here ran it in
// two places (walk 154). QEMU's cont takes it back unasked.
func (vm *VM) Cont() error { return vm.cont(false) }

// ContForced is Cont of a guest that migrated away without asking the
// guard: the user has seen that the destination's copy does not run.
func (vm *VM) ContForced() error { return vm.cont(true) }

func (vm *VM) cont(force bool) error {
	for {
		vm.mu.Lock()
		for vm.pausing > 0 {
			vm.cond.Wait()
		}
		held := vm.migrationHeld && vm.state == StatePaused && !vm.movedOut
		moved := vm.movedOut && vm.state == StatePaused
		guard, pauses := vm.contGuard, vm.pauses
		vm.mu.Unlock()
		if (held || moved && !force) && guard != nil {
			// Asked without vm.mu: the guard asks the migration, whose
			// own locks are taken before the VM's.
			if err := guard(); err != nil {
				return err
			}
		}
		vm.mu.Lock()
		if vm.pauses != pauses || vm.pausing > 0 {
			vm.mu.Unlock()
			continue
		}
		err := vm.resumeLocked()
		vm.mu.Unlock()
		return err
	}
}

func (vm *VM) resumeLocked() error {
	for vm.pausing > 0 {
		vm.cond.Wait() // a pause under way ends first; its guest is then paused
	}
	switch {
	case vm.state == StateRunning:
		return nil
	case vm.state == StatePrelaunch && vm.incoming:
		vm.holdIn = false
		return nil
	case vm.state == StatePaused:
	default:
		return fmt.Errorf("resume: virtual machine is %s", vm.state)
	}
	for _, c := range vm.vcpus {
		c.setImmediateExit(false)
	}
	vm.pauseReq = false
	vm.stopping.Store(false)
	vm.movedOut = false
	vm.migrationHeld = false
	vm.state = StateRunning
	vm.cond.Broadcast()
	vm.emit("RESUME", nil)
	return nil
}

// guestFailed records a fatal guest error and stops the other vCPUs.
func (vm *VM) guestFailed(err error) {
	vm.log.Error("guest stopped", "err", err)
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.err == nil {
		vm.err = err
	}
	vm.state = StateInternalError
	vm.pauseReq = true
	vm.stopping.Store(true)
	for _, c := range vm.vcpus {
		c.setImmediateExit(true)
		c.kick()
	}
	vm.emit("STOP", nil)
}

// ExpectIncoming marks a VM not started as waiting for an incoming
// migration: RunState says inmigrate, as QEMU with -incoming does.
func (vm *VM) ExpectIncoming() {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.incoming = true
}

// MigratedOut marks a paused VM whose guest a completed migration moved
// away: RunState says postmigrate until it runs again.
func (vm *VM) MigratedOut() {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.movedOut = vm.state == StatePaused
}

// RunState is the run state as QEMU's query-status would name it: State's,
// but inmigrate for a VM waiting for an incoming migration and postmigrate
// for one whose guest migrated away.
func (vm *VM) RunState() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	switch {
	case vm.state == StatePrelaunch && vm.incoming:
		return StateInMigrate
	case vm.state == StatePaused && vm.movedOut:
		return StatePostMigrate
	}
	return vm.state
}

// State is the run state, and the guest's fatal error if it has one.
// prelaunch and paused include what RunState calls inmigrate and
// postmigrate.
func (vm *VM) State() (string, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.state, vm.err
}

// Close stops the vCPUs and frees the virtual machine.
func (vm *VM) Close() error {
	vm.mu.Lock()
	if vm.state == StateShutdown {
		vm.mu.Unlock()
		return nil
	}
	running := vm.state != StatePrelaunch
	vm.quitting = true
	vm.state = StateShutdown
	vm.cond.Broadcast()
	if running {
		vm.stopVCPUsLocked()
		for !vm.allExitedLocked() {
			vm.cond.Wait()
		}
	}
	vm.emit("SHUTDOWN", map[string]any{"guest": false, "reason": "host-qmp-quit"})
	vm.mu.Unlock()

	vm.rate.shut() // a calc-dirty-rate reads the memory, or starts a dirty log
	vm.dirtyMu.Lock()
	vm.logsShut = true // a log started over QMP while Close waits below would start a reaper on rings about to go
	if len(vm.logs) > 0 {
		close(vm.reaperStop)
		for d := range vm.logs {
			d.closed = true
		}
		clear(vm.logs)
	}
	vm.dirtyMu.Unlock()
	vm.reapers.Wait() // no reaper may touch the rings once they are unmapped
	vm.dirtyMu.Lock()
	defer vm.dirtyMu.Unlock()
	vm.release()
	return nil
}

func (vm *VM) allExitedLocked() bool {
	for _, c := range vm.vcpus {
		if !c.stopped {
			return false
		}
	}
	return true
}

func (vm *VM) release() {
	for _, c := range vm.vcpus {
		if c.ring != nil {
			_ = unix.Munmap(sliceBytes(c.ring))
		}
		if c.run != nil {
			_ = unix.Munmap(c.run)
		}
		_ = unix.Close(c.fd)
	}
	vm.vcpus = nil
	if vm.mem != nil {
		_ = unix.Munmap(vm.mem)
		vm.mem = nil
	}
	if vm.memfd >= 0 {
		_ = unix.Close(vm.memfd)
		vm.memfd = -1
	}
	if vm.vmfd >= 0 {
		_ = unix.Close(vm.vmfd)
		vm.vmfd = -1
	}
	if vm.kvm != nil {
		_ = vm.kvm.Close()
		vm.kvm = nil
	}
}

// OnEvent sets the function that receives QMP-style events (STOP, RESUME,
// SHUTDOWN). Set it before Start.
func (vm *VM) OnEvent(fn func(name string, data any)) { vm.onEvent = fn }

// SetContGuard has QMP cont (Cont) of a guest an outgoing migration
// paused ask guard first, and refuse with its error: whether that
// migration still holds the guest. guard must not call the VM's methods.
func (vm *VM) SetContGuard(guard func() error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.contGuard = guard
}

func (vm *VM) emit(name string, data any) {
	if vm.onEvent != nil {
		vm.onEvent(name, data)
	}
}

// Memory is the guest's RAM. Reads are safe at any time; writes through
// WriteGuest are tracked as dirty.
func (vm *VM) Memory() []byte { return vm.mem }

// MemoryBytes is the size of guest RAM.
func (vm *VM) MemoryBytes() uint64 { return vm.cfg.MemoryBytes }

// VCPUs is the number of vCPUs.
func (vm *VM) VCPUs() int { return len(vm.vcpus) }

// VCPUThreads returns the host thread ID each vCPU runs on, as QMP's
// query-cpus-fast says it (thread-id): 0 for one not yet running.
func (vm *VM) VCPUThreads() []int {
	tids := make([]int, len(vm.vcpus))
	for i, c := range vm.vcpus {
		tids[i] = int(c.tid.Load())
	}
	return tids
}

// DirtyMode is the dirty tracking mode in use (DirtyRing or DirtyBitmap).
func (vm *VM) DirtyMode() string { return vm.tracker.mode() }

// ImageDigest is the SHA-256 of the guest image: a migration's two ends
// must run the same one.
func (vm *VM) ImageDigest() [32]byte { return vm.image }

// Kernel is the loaded guest image.
func (vm *VM) Kernel() *guest.Kernel { return vm.kernel }

// GuestStatus reads the guest's status page (progress counters, state).
func (vm *VM) GuestStatus() (guest.Status, error) {
	vm.dirtyMu.Lock() // Close unmaps the memory under it (a status read after faulted; found by a review walk)
	defer vm.dirtyMu.Unlock()
	if vm.mem == nil {
		return guest.Status{}, errors.New("guest status: the virtual machine is closed")
	}
	return guest.ReadStatus(vm.mem, vm.kernel.StatusAddr)
}
