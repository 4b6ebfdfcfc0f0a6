package uffd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PageSize is the granule Drop, Faults and Fill work in: the host page size
// of the shmem mapping, which is also the guest page size pagecast tracks.
const PageSize = 4096

// ErrPresent is returned by Fill for a page that is already in memory,
// typically because it was filled before (on demand and by the pusher).
// Callers may ignore it.
var ErrPresent = errors.New("page already present")

// errUnavailable marks errors from Register that mean this kernel or user
// cannot have a userfaultfd at all, as opposed to a bad argument.
var errUnavailable = errors.New("userfaultfd is unavailable")

// The kernel interface, from <linux/userfaultfd.h>. The ioctl numbers and
// structure sizes were checked against that header with a C compiler; the
// size assertions below catch a layout drifting from it.
const (
	uffdAPI             = 0xaa
	uffdioAPI           = 0xc018aa3f // _IOWR(0xaa, 0x3f, struct uffdio_api)
	uffdioRegister      = 0xc020aa00 // _IOWR(0xaa, 0x00, struct uffdio_register)
	uffdioUnregister    = 0x8010aa01 // _IOR(0xaa, 0x01, struct uffdio_range)
	uffdioWake          = 0x8010aa02 // _IOR(0xaa, 0x02, struct uffdio_range)
	uffdioCopy          = 0xc028aa03 // _IOWR(0xaa, 0x03, struct uffdio_copy)
	ioctlCopyBit        = 1 << 0x03  // _UFFDIO_COPY in uffdio_register.ioctls
	registerModeMissing = 1 << 0     // UFFDIO_REGISTER_MODE_MISSING
	eventPagefault      = 0x12       // UFFD_EVENT_PAGEFAULT
	msgSize             = 32         // sizeof(struct uffd_msg)
	msgAddressOffset    = 16         // offsetof(struct uffd_msg, arg.pagefault.address)
	msgThreadOffset     = 24         // offsetof(struct uffd_msg, arg.pagefault.feat.ptid)
	featureThreadID     = 1 << 8     // UFFD_FEATURE_THREAD_ID (Linux 4.14)
)

type uffdioAPIArg struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

type uffdioRange struct {
	Start uint64
	Len   uint64
}

type uffdioRegisterArg struct {
	Range  uffdioRange
	Mode   uint64
	Ioctls uint64
}

type uffdioCopyArg struct {
	Dst uint64
	// Src is a Go pointer rather than a number so that the runtime keeps
	// it right if the caller's buffer lives on a stack that moves before
	// the ioctl. It takes the kernel's 64 bits only on 64-bit hosts, which
	// the assertions below require.
	Src  unsafe.Pointer
	Len  uint64
	Mode uint64
	Copy int64 // bytes copied, or a negated errno, written by the kernel
}

// Compile-time layout checks: each fails to compile (a negative constant
// array length) unless the size matches the kernel's.
var (
	_ [unsafe.Sizeof(uffdioAPIArg{}) - 24]byte
	_ [24 - unsafe.Sizeof(uffdioAPIArg{})]byte
	_ [unsafe.Sizeof(uffdioRegisterArg{}) - 32]byte
	_ [32 - unsafe.Sizeof(uffdioRegisterArg{})]byte
	_ [unsafe.Sizeof(uffdioCopyArg{}) - 40]byte
	_ [40 - unsafe.Sizeof(uffdioCopyArg{})]byte
)

// faultBacklog is how many reported faults may wait for the consumer before
// the reader stops reading the userfaultfd; the kernel keeps the rest
// queued, so nothing is lost, only delayed.
const faultBacklog = 1024

// copyRetries bounds Fill's retries of UFFDIO_COPY on EAGAIN, which the
// kernel returns when the address space was changing under the copy.
const copyRetries = 100

// Region is guest memory under userfaultfd.
type Region struct {
	mem   []byte
	base  uint64
	pages uint64

	// file holds the userfaultfd in Go's network poller: the reader's Read
	// parks its goroutine instead of an OS thread, and closing the file
	// wakes it. conn runs ioctls on the descriptor while holding a
	// reference, so a Fill racing Close never reaches a reused number.
	file *os.File
	conn syscall.RawConn

	absent  []atomic.Uint64 // one bit per page: dropped and not yet filled
	missing atomic.Uint64   // number of bits set in absent

	faults  chan uint64
	stop    chan struct{} // closed by Close to release a reader blocked on faults
	done    chan struct{} // closed by the reader when it exits
	readErr error         // why the reader stopped early, set before done closes

	closeOnce sync.Once
	closeErr  error

	// Blocked's count: the threads waiting on pages still absent, by
	// page, and the waits of those filled since. Times are offsets from
	// epoch, on the monotonic clock. threads: the kernel gives the
	// faulting thread's id; without it a page's first fault stands for
	// all of them.
	waitMu  sync.Mutex
	waiting map[uint64]faultTimes
	blocked time.Duration
	epoch   time.Time
	threads bool
}

// faultTimes are the threads waiting on one absent page, each from its
// first fault there (an offset from the Region's epoch). One thread is
// the common case: it needs no map.
type faultTimes struct {
	tid    uint32
	at     time.Duration
	others map[uint32]time.Duration
}

// Register puts mem (page-aligned, a MAP_SHARED memfd mapping, len a
// multiple of PageSize) under a userfaultfd in MISSING mode. Errors name the
// step and, for EPERM/ENOSYS, say that userfaultfd is unavailable (and for
// non-root: vm.unprivileged_userfaultfd).
func Register(mem []byte) (*Region, error) {
	if len(mem) == 0 || len(mem)%PageSize != 0 {
		return nil, fmt.Errorf("register guest memory: length %d is not a positive multiple of %d", len(mem), PageSize)
	}
	base := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem))))
	if base%PageSize != 0 {
		return nil, fmt.Errorf("register guest memory: address %#x is not page-aligned", base)
	}
	fd, err := open()
	if err != nil {
		return nil, fmt.Errorf("register guest memory: %w", err)
	}
	ufd := uintptr(fd)
	fail := func(err error) (*Region, error) {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("register guest memory: %w", err)
	}

	// MISSING faults on shmem need no feature bit, and none of the
	// non-cooperative events (fork, remap, remove, unmap) are wanted;
	// asking for them would make Drop's own madvise queue REMOVE events.
	// The faulting thread's id tells a thread's fault again (after a
	// signal) from another thread's (Blocked); a kernel without it is
	// asked for nothing.
	api := uffdioAPIArg{API: uffdAPI, Features: featureThreadID}
	threads := true
	if err := ioctl(ufd, uffdioAPI, unsafe.Pointer(&api)); err != nil {
		// A refused handshake cannot be repeated on the same descriptor.
		_ = unix.Close(fd)
		if fd, err = open(); err != nil {
			return nil, fmt.Errorf("register guest memory: %w", err)
		}
		ufd = uintptr(fd)
		api, threads = uffdioAPIArg{API: uffdAPI}, false
		if err := ioctl(ufd, uffdioAPI, unsafe.Pointer(&api)); err != nil {
			return fail(fmt.Errorf("handshake (UFFDIO_API): %w", err))
		}
	}
	reg := uffdioRegisterArg{
		Range: uffdioRange{Start: base, Len: uint64(len(mem))},
		Mode:  registerModeMissing,
	}
	if err := ioctl(ufd, uffdioRegister, unsafe.Pointer(&reg)); err != nil {
		return fail(fmt.Errorf("register %d KiB at %#x (UFFDIO_REGISTER): %w", len(mem)>>10, base, err))
	}
	if reg.Ioctls&ioctlCopyBit == 0 {
		// Closing the descriptor unregisters the range with it.
		return fail(fmt.Errorf("register %d KiB at %#x: the kernel offers no UFFDIO_COPY on this memory (ioctls %#x)", len(mem)>>10, base, reg.Ioctls))
	}

	// The descriptor is non-blocking, so os.NewFile adds it to the poller.
	file := os.NewFile(ufd, "userfaultfd")
	conn, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("register guest memory: %w", err)
	}
	pages := uint64(len(mem)) / PageSize
	r := &Region{
		mem:    mem,
		base:   base,
		pages:  pages,
		file:   file,
		conn:   conn,
		absent: make([]atomic.Uint64, (pages+63)/64),
		faults: make(chan uint64, faultBacklog),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),

		waiting: make(map[uint64]faultTimes),
		epoch:   time.Now(),
		threads: threads,
	}
	go r.read()
	return r, nil
}

// open creates the userfaultfd. It does not ask for UFFD_USER_MODE_ONLY:
// KVM touches guest memory from kernel mode, and those faults are the ones
// post-copy has to catch.
func open() (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	switch {
	case errno == 0:
		return int(fd), nil
	case errno == unix.ENOSYS:
		return -1, fmt.Errorf("userfaultfd(2): %w: %w (kernel built without CONFIG_USERFAULTFD)", errUnavailable, errno)
	case errno == unix.EPERM && os.Geteuid() != 0:
		return -1, fmt.Errorf("userfaultfd(2): %w: %w (faults from kernel mode need root or CAP_SYS_PTRACE unless sysctl vm.unprivileged_userfaultfd=1)", errUnavailable, errno)
	case errno == unix.EPERM:
		return -1, fmt.Errorf("userfaultfd(2): %w: %w (refused even to root: a seccomp filter or LSM policy?)", errUnavailable, errno)
	default:
		return -1, fmt.Errorf("userfaultfd(2): %w", errno)
	}
}

func ioctl(fd, req uintptr, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}

// Drop removes pages from memory so that their next access faults:
// madvise(MADV_REMOVE) on each run of consecutive pages (coalesce runs).
// Call before the guest runs.
func (r *Region) Drop(pages []uint64) error {
	sorted := slices.Compact(slices.Sorted(slices.Values(pages)))
	if len(sorted) == 0 {
		return nil
	}
	if last := sorted[len(sorted)-1]; last >= r.pages {
		return fmt.Errorf("drop page %d: beyond the region's %d pages", last, r.pages)
	}
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j] == sorted[j-1]+1 {
			j++
		}
		first, end := sorted[i], sorted[j-1]+1
		// MADV_REMOVE punches a hole in the memfd, freeing the page itself
		// and not just this mapping of it, so the next access finds no page
		// at all: exactly the MISSING case userfaultfd reports.
		if err := unix.Madvise(r.mem[first*PageSize:end*PageSize], unix.MADV_REMOVE); err != nil {
			return fmt.Errorf("drop pages %d..%d (madvise MADV_REMOVE, which needs a shared shmem mapping such as a memfd): %w", first, end-1, err)
		}
		for p := first; p < end; p++ {
			r.markDropped(p)
		}
		i = j
	}
	return nil
}

// AbsentWords marks absent the pages that the caller punched out of the
// memory itself before the region was made (MADV_REMOVE), as Drop marks
// those it punches out, without its system calls: a fault on one is
// reported, not filled with zeros. words is a bitmap of them (page p is
// bit p%64 of word p/64), marked a word at a time: page by page, 92 000
// pages took 4 ms of a post-copy's pause (walk 140).
func (r *Region) AbsentWords(words []uint64) error {
	for i := len(r.absent); i < len(words); i++ {
		if words[i] != 0 {
			return fmt.Errorf("mark page %d absent: beyond the region's %d pages", uint64(i)*64+uint64(bits.TrailingZeros64(words[i])), r.pages)
		}
	}
	words = words[:min(len(words), len(r.absent))]
	if n := len(words); n == len(r.absent) && r.pages%64 != 0 {
		if past := words[n-1] >> (r.pages % 64); past != 0 {
			return fmt.Errorf("mark page %d absent: beyond the region's %d pages", r.pages+uint64(bits.TrailingZeros64(past)), r.pages)
		}
	}
	for i, w := range words {
		if w == 0 {
			continue
		}
		if was := r.absent[i].Or(w); w&^was != 0 {
			r.missing.Add(uint64(bits.OnesCount64(w &^ was)))
		}
	}
	return nil
}

// zeroPage fills a hole that was never dropped.
var zeroPage [PageSize]byte

// Faults returns a channel of page numbers the guest (or KVM on its behalf)
// touched while absent (dropped and not filled yet; a hole that was not
// dropped is filled with zeros at once). Each distinct absent page is reported at least once
// while it stays absent; duplicates are allowed. The channel is closed by
// Close, or earlier if reading the userfaultfd fails (Close then returns
// the error).
func (r *Region) Faults() <-chan uint64 { return r.faults }

// read is the fault reader: it reads uffd_msg records as the poller says
// they are there and passes the page of each page fault on.
func (r *Region) read() {
	defer close(r.done)
	defer close(r.faults)
	// A read returns as many queued messages as fit; each is moved to the
	// kernel's waiting list, so it is reported once unless the faulting
	// thread retries (after a signal, say) and faults again.
	buf := make([]byte, 64*msgSize)
	for {
		n, err := r.file.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				r.readErr = fmt.Errorf("read userfaultfd: %w", err)
			}
			return
		}
		for off := 0; off+msgSize <= n; off += msgSize {
			msg := buf[off : off+msgSize]
			if msg[0] != eventPagefault {
				continue // no other events were asked for
			}
			addr := binary.NativeEndian.Uint64(msg[msgAddressOffset:])
			if addr < r.base || addr >= r.base+r.pages*PageSize {
				continue
			}
			p := (addr - r.base) / PageSize
			if r.absent[p/64].Load()&(1<<(p%64)) == 0 {
				// Not dropped (or filled since): a hole of the memfd, a
				// zero page the receiver punched out. It reads as zero, as
				// it would without userfaultfd; no one else would fill it,
				// and the faulting thread would wait until Close. Should
				// that fail, the fault is reported as any other.
				if err := r.Fill(p, zeroPage[:]); err == nil || errors.Is(err, ErrPresent) {
					continue
				}
			}
			r.faulted(p, binary.NativeEndian.Uint32(msg[msgThreadOffset:]))
			select {
			case r.faults <- p:
			case <-r.stop:
				return
			}
		}
	}
}

// Fill copies data (PageSize bytes) into absent page p with UFFDIO_COPY and
// wakes whoever waits on it. A page already present (EEXIST, e.g. filled
// before) returns ErrPresent; callers may ignore it. Safe for concurrent use
// with the fault reader.
func (r *Region) Fill(p uint64, data []byte) error {
	if p >= r.pages {
		return fmt.Errorf("fill page %d: beyond the region's %d pages", p, r.pages)
	}
	if len(data) != PageSize {
		return fmt.Errorf("fill page %d: %d bytes of data, want %d", p, len(data), PageSize)
	}
	dst := r.base + p*PageSize
	arg := uffdioCopyArg{Dst: dst, Src: unsafe.Pointer(&data[0]), Len: PageSize}
	var err error
	for range copyRetries {
		arg.Copy = 0
		if cerr := r.conn.Control(func(fd uintptr) { err = ioctl(fd, uffdioCopy, unsafe.Pointer(&arg)) }); cerr != nil {
			return fmt.Errorf("fill page %d: %w", p, cerr)
		}
		if err != unix.EAGAIN || arg.Copy == PageSize {
			break
		}
	}
	switch {
	case err == nil || arg.Copy == PageSize:
		r.markFilled(p)
		r.woken(p)
		return nil
	case err == unix.EEXIST:
		r.markFilled(p)
		defer r.woken(p)
		// A failed copy wakes nobody, yet a thread may be waiting: one that
		// faulted while the page was absent from this mapping but came into
		// the memfd another way (a write through the file). Wake it to
		// retry; it then finds the page.
		wake := uffdioRange{Start: dst, Len: PageSize}
		var werr error
		if cerr := r.conn.Control(func(fd uintptr) { werr = ioctl(fd, uffdioWake, unsafe.Pointer(&wake)) }); cerr != nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("fill page %d: %w; wake its waiters (UFFDIO_WAKE): %w", p, ErrPresent, werr)
		}
		return fmt.Errorf("fill page %d: %w", p, ErrPresent)
	default:
		return fmt.Errorf("fill page %d (UFFDIO_COPY): %w", p, err)
	}
}

// Blocked is the time the threads that faulted on absent pages waited
// for them, summed over their faults: from the fault's reading here to
// the page's Fill. It is what post-copy cost the guest's vCPUs (QEMU's
// postcopy-vcpu-blocktime, summed). A fault read after its page was
// filled, whose thread the Fill woke already, counts nothing; waits still
// under way are not in it.
func (r *Region) Blocked() time.Duration {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	return r.blocked
}

// faulted notes thread tid's fault on page p, if p is still absent: a
// thread faulting again on the same page (its wait broken by a signal,
// as the Go runtime's preemption and QEMU's vCPU kicks do) waits on from
// its first fault.
func (r *Region) faulted(p uint64, tid uint32) {
	at := time.Since(r.epoch)
	if !r.threads {
		tid = 0
	}
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	// Under the lock, so that a Fill clearing the bit after this finds
	// the fault in waiting (woken takes the lock after markFilled).
	if r.absent[p/64].Load()&(1<<(p%64)) == 0 {
		return
	}
	w, ok := r.waiting[p]
	switch {
	case !ok:
		r.waiting[p] = faultTimes{tid: tid, at: at}
	case w.tid == tid:
	default:
		if w.others == nil {
			w.others = make(map[uint32]time.Duration)
			r.waiting[p] = w
		}
		if _, ok := w.others[tid]; !ok {
			w.others[tid] = at
		}
	}
}

// woken ends the waits on page p, just filled.
func (r *Region) woken(p uint64) {
	now := time.Since(r.epoch)
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	w, ok := r.waiting[p]
	if !ok {
		return
	}
	delete(r.waiting, p)
	r.blocked += now - w.at
	for _, at := range w.others {
		r.blocked += now - at
	}
}

// Missing reports how many dropped pages have not been filled yet (track
// with an atomic bitmap/counter: Drop sets, Fill/EEXIST clears).
func (r *Region) Missing() uint64 { return r.missing.Load() }

// MissingWords returns the dropped pages not filled yet as bitmap words
// (page p is bit p%64 of word p/64): what a post-copy source must still
// send after a reconnection.
func (r *Region) MissingWords() []uint64 {
	out := make([]uint64, len(r.absent))
	for i := range r.absent {
		out[i] = r.absent[i].Load()
	}
	return out
}

func (r *Region) markDropped(p uint64) {
	bit := uint64(1) << (p % 64)
	if r.absent[p/64].Or(bit)&bit == 0 {
		r.missing.Add(1)
	}
}

func (r *Region) markFilled(p uint64) {
	bit := uint64(1) << (p % 64)
	if r.absent[p/64].And(^bit)&bit != 0 {
		r.missing.Add(^uint64(0))
	}
}

// Close unregisters the range, stops the reader and closes the fd. Pages
// still absent afterwards read as zero: callers fill everything first.
// Threads still waiting on absent pages are woken and see zeros.
func (r *Region) Close() error {
	r.closeOnce.Do(func() {
		var errs []error
		rng := uffdioRange{Start: r.base, Len: r.pages * PageSize}
		var uerr error
		if err := r.conn.Control(func(fd uintptr) { uerr = ioctl(fd, uffdioUnregister, unsafe.Pointer(&rng)) }); err != nil {
			uerr = err
		}
		if uerr != nil {
			// Closing the descriptor below still releases the range.
			errs = append(errs, fmt.Errorf("unregister (UFFDIO_UNREGISTER): %w", uerr))
		}
		close(r.stop)
		if err := r.file.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close userfaultfd: %w", err))
		}
		<-r.done
		if r.readErr != nil {
			errs = append(errs, r.readErr)
		}
		if err := errors.Join(errs...); err != nil {
			r.closeErr = fmt.Errorf("close userfaultfd region: %w", err)
		}
	})
	return r.closeErr
}
