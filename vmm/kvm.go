package vmm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// KVM ioctl numbers and structures, from <linux/kvm.h> and <asm/kvm.h> (x86_64).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmCheckExtension      = 0xAE03
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmGetDirtyLog         = 0x4010AE42 // _IOW(0xAE, 0x42, struct kvm_dirty_log)
	kvmSetUserMemoryRegion = 0x4020AE46 // _IOW(0xAE, 0x46, struct kvm_userspace_memory_region)
	kvmSetTSSAddr          = 0xAE47
	kvmSetIdentityMapAddr  = 0x4008AE48
	kvmRun                 = 0xAE80
	kvmGetRegs             = 0x8090AE81
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84
	kvmGetFPU              = 0x81A0AE8C
	kvmSetFPU              = 0x41A0AE8D
	kvmGetVCPUEvents       = 0x8040AE9F
	kvmSetVCPUEvents       = 0x4040AEA0
	kvmEnableCap           = 0x4068AEA3
	kvmClearDirtyLog       = 0xC018AEC0 // _IOWR(0xAE, 0xc0, struct kvm_clear_dirty_log)
	kvmResetDirtyRings     = 0xAEC7

	kvmCapImmediateExit            = 136
	kvmCapManualDirtyLogProtect2   = 168
	kvmCapDirtyLogRing             = 192
	kvmDirtyLogManualProtectEnable = 1

	kvmMemLogDirtyPages = 1

	kvmDirtyLogPageOffset = 64 // KVM_DIRTY_LOG_PAGE_OFFSET on x86
	kvmDirtyGFNFDirty     = 1
	kvmDirtyGFNFReset     = 2

	kvmExitUnknown       = 0
	kvmExitIO            = 2
	kvmExitHLT           = 5
	kvmExitMMIO          = 6
	kvmExitShutdown      = 8
	kvmExitFailEntry     = 9
	kvmExitIntr          = 10
	kvmExitInternalError = 17
	kvmExitSystemEvent   = 24
	kvmExitDirtyRingFull = 31
	kvmExitIOIn          = 0
	kvmExitIOOut         = 1
)

// Offsets into struct kvm_run.
const (
	runImmediateExit = 1
	runExitReason    = 8
	runIODirection   = 32
	runIOSize        = 33
	runIOPort        = 34
	runIOCount       = 36
	runIODataOffset  = 40
	runMMIOPhysAddr  = 32
	runMMIOData      = 40
	runMMIOLen       = 48
	runMMIOIsWrite   = 52
	runInternalSub   = 32
)

type userspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

type dirtyLog struct {
	Slot   uint32
	_      uint32
	Bitmap uintptr
}

type clearDirtyLog struct {
	Slot      uint32
	NumPages  uint32
	FirstPage uint64
	Bitmap    uintptr
}

type enableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	_     [64]byte
}

// Regs is struct kvm_regs: the general purpose registers of a vCPU.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is struct kvm_segment.
type Segment struct {
	Base                           uint64
	Limit                          uint32
	Selector                       uint16
	Type                           uint8
	Present, DPL, DB, S, L, G, AVL uint8
	Unusable                       uint8
	_                              uint8
}

// DTable is struct kvm_dtable (GDTR, IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs: segment and control registers of a vCPU.
type Sregs struct {
	CS, DS, ES, FS, GS, SS  Segment
	TR, LDT                 Segment
	GDT, IDT                DTable
	CR0, CR2, CR3, CR4, CR8 uint64
	EFER                    uint64
	APICBase                uint64
	InterruptBitmap         [4]uint64
}

// FPU is struct kvm_fpu, kept opaque: it is only saved and restored.
type FPU [416]byte

// VCPUEvents is struct kvm_vcpu_events, kept opaque: pending exceptions,
// interrupts and NMIs, saved and restored with the registers.
type VCPUEvents [64]byte

// The structures above must match the kernel's layout exactly: these fail
// to compile if a size drifts.
var (
	_ [144]byte = [unsafe.Sizeof(Regs{})]byte{}
	_ [312]byte = [unsafe.Sizeof(Sregs{})]byte{}
	_ [24]byte  = [unsafe.Sizeof(Segment{})]byte{}
	_ [32]byte  = [unsafe.Sizeof(userspaceMemoryRegion{})]byte{}
	_ [16]byte  = [unsafe.Sizeof(dirtyLog{})]byte{}
	_ [24]byte  = [unsafe.Sizeof(clearDirtyLog{})]byte{}
	_ [104]byte = [unsafe.Sizeof(enableCap{})]byte{}
)

// ioctl issues an ioctl and returns its result; the error is an unix.Errno.
func ioctl(fd int, req uintptr, arg uintptr) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

func ioctlPtr[T any](fd int, req uintptr, v *T) error {
	_, err := ioctl(fd, req, uintptr(unsafe.Pointer(v)))
	return err
}
