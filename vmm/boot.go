package vmm

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/pagecast/pagecast/guest"
)

// Where the monitor puts the multiboot information and command line: low
// memory, which the guest never touches.
const (
	multibootInfoAddr = 0x8000
	cmdlineAddr       = 0x8100
	cmdlineMax        = 0x7000 - 1
)

// boot loads the kernel and points every vCPU at its entry in 32-bit
// protected mode, the state a multiboot loader leaves: flat segments,
// paging and interrupts off, EAX the boot magic and EBX the information
// structure. Extra vCPUs enter at the same point with guest.APMagic and
// their index in ESI (the guest has no interrupt controller to start them).
func (vm *VM) boot() error {
	if err := vm.kernel.LoadInto(vm.mem); err != nil {
		return err
	}
	if len(vm.cfg.Cmdline) > cmdlineMax {
		return fmt.Errorf("guest command line is %d bytes, above %d", len(vm.cfg.Cmdline), cmdlineMax)
	}
	copy(vm.mem[cmdlineAddr:], vm.cfg.Cmdline)
	vm.mem[cmdlineAddr+len(vm.cfg.Cmdline)] = 0

	mbi := vm.mem[multibootInfoAddr:]
	const flagsMem, flagsCmdline = 1 << 0, 1 << 2
	binary.LittleEndian.PutUint32(mbi[0:], flagsMem|flagsCmdline)
	binary.LittleEndian.PutUint32(mbi[4:], 640)                                 // mem_lower, KiB
	binary.LittleEndian.PutUint32(mbi[8:], uint32(vm.cfg.MemoryBytes>>10)-1024) // mem_upper, KiB above 1 MiB
	binary.LittleEndian.PutUint32(mbi[16:], cmdlineAddr)

	for _, c := range vm.vcpus {
		if err := c.setBootState(vm.kernel.Entry); err != nil {
			return fmt.Errorf("vcpu %d: %w", c.id, err)
		}
	}
	return nil
}

func (c *vcpu) setBootState(entry uint32) error {
	var s Sregs
	if err := ioctlPtr(c.fd, kvmGetSregs, &s); err != nil {
		return fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	code := Segment{Limit: 0xffffffff, Selector: 0x08, Type: 0xb, Present: 1, DB: 1, S: 1, G: 1}
	data := code
	data.Selector, data.Type = 0x10, 0x3
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.CR0 = 0x11 // PE | ET: protected mode, paging off, caches on
	s.CR4 = 0
	s.EFER = 0
	if err := ioctlPtr(c.fd, kvmSetSregs, &s); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	r := Regs{RIP: uint64(entry), RFLAGS: 2, RAX: guest.BootMagic, RBX: multibootInfoAddr}
	if c.id > 0 {
		r.RAX, r.RSI = guest.APMagic, uint64(c.id)
	}
	if err := ioctlPtr(c.fd, kvmSetRegs, &r); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	return nil
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// sliceBytes is the mapping behind a dirty ring, for munmap.
func sliceBytes(r *dirtyRing) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&r.entries[0])), len(r.entries)*int(unsafe.Sizeof(dirtyGFN{})))
}
