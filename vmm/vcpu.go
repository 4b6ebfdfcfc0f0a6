package vmm

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vcpu is one virtual CPU: its KVM file, its shared kvm_run page and the
// locked OS thread that runs it.
type vcpu struct {
	id   int
	fd   int
	run  []byte
	tid  atomic.Int32
	vm   *VM
	ring *dirtyRing

	// Guarded by vm.mu.
	paused  bool // acknowledged a pause request
	halted  bool // executed HLT with interrupts off: parked for good
	stopped bool // the run loop returned

	pendingIO bool // the last exit was an I/O or MMIO access KVM completes on the next KVM_RUN (the vCPU's thread only)
}

func (c *vcpu) exitReason() uint32 {
	return *(*uint32)(unsafe.Pointer(&c.run[runExitReason]))
}

// setImmediateExit makes the next KVM_RUN (and the current one, once
// kicked) return at once with EINTR. The kernel reads the byte on entry.
func (c *vcpu) setImmediateExit(on bool) {
	c.run[runImmediateExit] = 0
	if on {
		c.run[runImmediateExit] = 1
	}
}

// kick interrupts KVM_RUN on the vCPU's thread. Go's runtime tolerates a
// stray SIGURG (it uses it for preemption), and the signal makes KVM_RUN
// return EINTR.
func (c *vcpu) kick() {
	if tid := c.tid.Load(); tid != 0 {
		_ = unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG)
	}
}

// loop runs the vCPU until the VM quits or the guest fails.
func (c *vcpu) loop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c.tid.Store(int32(unix.Gettid()))
	vm := c.vm
	defer func() {
		vm.mu.Lock()
		c.stopped = true
		vm.cond.Broadcast()
		vm.mu.Unlock()
	}()
	for {
		vm.mu.Lock()
		if c.pendingIO && vm.pauseReq && !vm.quitting {
			vm.mu.Unlock()
			if err := c.completeIO(); err != nil {
				vm.guestFailed(fmt.Errorf("vcpu %d: %w", c.id, err))
				return
			}
			vm.mu.Lock()
		}
		for (vm.pauseReq || c.halted) && !vm.quitting {
			if !c.paused {
				c.paused = true
				vm.cond.Broadcast()
			}
			vm.cond.Wait()
		}
		c.paused = false
		quit := vm.quitting
		vm.mu.Unlock()
		if quit {
			return
		}
		c.throttleSleep()

		_, err := ioctl(c.fd, kvmRun, 0)
		c.pendingIO = false
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			vm.guestFailed(fmt.Errorf("vcpu %d: KVM_RUN: %w", c.id, err))
			return
		}
		if err := c.handleExit(); err != nil {
			vm.guestFailed(fmt.Errorf("vcpu %d: %w", c.id, err))
			return
		}
	}
}

// completeIO finishes the I/O or MMIO access the last exit handed to
// userspace before the vCPU parks for a pause: KVM completes it (an IN's
// value into the register, RIP past an OUT) only when KVM_RUN is entered
// again, and state saved before that would have the destination run the
// instruction again (KVM's API: "userspace should ensure that the
// operation is completed before performing a live migration"). With
// immediate_exit set, as a pause sets it, KVM_RUN completes the access
// and returns EINTR without running the guest; a string I/O may exit
// again for its next part, which is handled and completed in turn.
func (c *vcpu) completeIO() error {
	for c.pendingIO {
		_, err := ioctl(c.fd, kvmRun, 0)
		c.pendingIO = false
		switch {
		case errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN):
			return nil
		case err != nil:
			return fmt.Errorf("KVM_RUN to complete an I/O before a pause: %w", err)
		}
		if err := c.handleExit(); err != nil {
			return err
		}
	}
	return nil
}

func (c *vcpu) handleExit() error {
	switch r := c.exitReason(); r {
	case kvmExitIO:
		c.handleIO()
		c.pendingIO = true
	case kvmExitMMIO:
		c.handleMMIO()
		c.pendingIO = true
	case kvmExitHLT:
		c.vm.mu.Lock()
		c.halted = true
		c.vm.mu.Unlock()
		c.vm.log.Debug("vcpu halted", "vcpu", c.id)
	case kvmExitIntr:
	case kvmExitDirtyRingFull:
		rt, ok := c.vm.tracker.(*ringTracker)
		if !ok {
			return errors.New("dirty ring full exit without a dirty ring")
		}
		return rt.ringFull(c.ring)
	case kvmExitShutdown:
		return errors.New("guest shut down (triple fault)")
	case kvmExitFailEntry:
		return fmt.Errorf("KVM_EXIT_FAIL_ENTRY: hardware entry failure reason %#x",
			*(*uint64)(unsafe.Pointer(&c.run[32])))
	case kvmExitInternalError:
		return fmt.Errorf("KVM_EXIT_INTERNAL_ERROR: suberror %d",
			*(*uint32)(unsafe.Pointer(&c.run[runInternalSub])))
	case kvmExitSystemEvent:
		return errors.New("guest requested a system event (reset or shutdown)")
	default:
		return fmt.Errorf("unhandled KVM exit reason %d", r)
	}
	return nil
}

// handleIO emulates the only device the guest uses, the COM1 serial port.
func (c *vcpu) handleIO() {
	dir := c.run[runIODirection]
	size := int(c.run[runIOSize])
	port := *(*uint16)(unsafe.Pointer(&c.run[runIOPort]))
	count := int(*(*uint32)(unsafe.Pointer(&c.run[runIOCount])))
	off := int(*(*uint64)(unsafe.Pointer(&c.run[runIODataOffset])))
	data := c.run[off : off+size*count]
	switch {
	case dir == kvmExitIOOut && port == com1:
		for i := 0; i < count; i++ {
			c.vm.serial.writeByte(data[i*size])
		}
	case dir == kvmExitIOIn && port == com1+5: // line status: transmitter empty
		for i := range data {
			data[i] = 0x60
		}
	case dir == kvmExitIOIn:
		for i := range data {
			data[i] = 0xff
		}
	}
}

// handleMMIO answers accesses outside guest memory: reads see all ones,
// writes are dropped.
func (c *vcpu) handleMMIO() {
	if c.run[runMMIOIsWrite] == 0 {
		for i := 0; i < 8; i++ {
			c.run[runMMIOData+i] = 0xff
		}
	}
	c.vm.log.Debug("mmio outside guest memory", "vcpu", c.id,
		"addr", fmt.Sprintf("%#x", *(*uint64)(unsafe.Pointer(&c.run[runMMIOPhysAddr]))))
}
