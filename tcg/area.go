package tcg

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Grace is how long a collector waits after SetEpoch before reading the
// epoch it closed: a vCPU that loaded the old epoch just before the switch
// finishes its mark within nanoseconds, unless its thread is preempted.
const Grace = 2 * time.Millisecond

// ErrBadArea is wrapped by Open's errors for a file that is not a plugin
// area (wrong magic, version or size).
var ErrBadArea = errors.New("not a pagecast TCG plugin area")

// ErrAreaBusy is wrapped by Open's error for an area another reader holds.
var ErrAreaBusy = errors.New("the TCG plugin's area is in use")

// Area is the plugin's shared memory, mapped by the collector.
type Area struct {
	f        *os.File // holds the area's lock
	mem      []byte
	capacity uint64
	bufs     [2][]byte
}

// Open maps the plugin area at path (written by a running or exited
// plugin) and checks its header. The capacity is trusted only as far as the
// file's real size allows. The area has one reader at a time: whoever
// reads its epochs takes them from every other (two profiles of one QEMU
// each got part of its pages; a profile beside a migration made the
// migration miss pages), so Open takes an exclusive lock (flock) on the
// file until Close, and refuses an area another holds, wrapping
// ErrAreaBusy and naming the holder.
func Open(path string) (_ *Area, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open plugin area: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			who, args := LockHolder(f)
			return nil, &BusyError{Path: path, Holder: who, Args: args}
		}
		return nil, fmt.Errorf("lock plugin area %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open plugin area: %w", err)
	}
	size := fi.Size()
	if size < HeaderSize {
		return nil, fmt.Errorf("open plugin area %s: %d bytes, shorter than the %d-byte header: %w",
			path, size, HeaderSize, ErrBadArea)
	}
	var hdr [64]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return nil, fmt.Errorf("open plugin area %s: read header: %w", path, err)
	}
	magic, version := le32(hdr[offMagic:]), le32(hdr[offVersion:])
	if magic != Magic {
		if magic == 0 {
			return nil, fmt.Errorf("open plugin area %s: no magic yet (the plugin is still starting?): %w",
				path, ErrBadArea)
		}
		return nil, fmt.Errorf("open plugin area %s: magic %#x, want %#x: %w", path, magic, Magic, ErrBadArea)
	}
	if version != LayoutVersion {
		return nil, fmt.Errorf("open plugin area %s: layout version %d, this pagecast reads %d: %w",
			path, version, LayoutVersion, ErrBadArea)
	}
	capacity := le64(hdr[offCapacity:])
	if capacity == 0 || capacity > MaxPages {
		return nil, fmt.Errorf("open plugin area %s: capacity %d pages out of range: %w", path, capacity, ErrBadArea)
	}
	need := HeaderSize + 2*capacity
	if uint64(size) < need {
		return nil, fmt.Errorf("open plugin area %s: %d bytes, %d pages need %d: %w",
			path, size, capacity, need, ErrBadArea)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(need), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map plugin area %s: %w", path, err)
	}
	a := &Area{f: f, mem: mem, capacity: capacity}
	a.bufs[0] = mem[HeaderSize : HeaderSize+capacity]
	a.bufs[1] = mem[HeaderSize+capacity : need]
	return a, nil
}

// Capacity is the number of 4 KiB guest-physical page frames the plugin
// records; writes at or beyond it count as OutOfRange.
func (a *Area) Capacity() uint64 { return a.capacity }

// ErrTooSmall is wrapped by CheckCovers' error.
var ErrTooSmall = errors.New("the TCG plugin records less than the guest's RAM")

// CheckCovers says whether the plugin records all of a guest RAM of
// ramBytes, which takes need pages (QEMU 7.2's plugin names a page by its
// offset in RAM: ramBytes/4 KiB; QEMU 8.2's by its guest-physical frame,
// the hole below 4 GiB counted: qemu.PluginAddresses), and if not, what
// to start QEMU with. (A plugin given pages=16384 in a 256 MiB guest
// recorded its first 64 MiB while the trace claimed 256 MiB; only a count
// of dropped writes hinted.)
func (a *Area) CheckCovers(ramBytes, need uint64) error {
	if a.capacity >= need {
		return nil
	}
	return fmt.Errorf("%w: it was given pages=%d (%s), the guest has %s of RAM, which takes pages=%d, and its writes past the first %d pages would not be recorded: "+
		"start QEMU with the plugin's pages=%d (`pagecast plugin --memory %s` prints the -plugin option)",
		ErrTooSmall, a.capacity, sizeString(a.capacity<<PageShift), sizeString(ramBytes), need, a.capacity,
		need, sizeString(ramBytes))
}

// sizeString prints n bytes as a whole number of GiB, MiB or KiB where it
// is one (as --memory takes it: 256M), else in bytes.
func sizeString(n uint64) string {
	for _, u := range []struct {
		shift uint
		unit  string
	}{{30, "G"}, {20, "M"}, {10, "K"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.unit)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// Epoch is the epoch the plugin records into.
func (a *Area) Epoch() uint32 { return atomic.LoadUint32(a.u32(offEpoch)) }

// SetEpoch makes the plugin record into buffer e&1 from now on. vCPUs see
// the switch within nanoseconds; wait Grace before reading the epoch closed.
func (a *Area) SetEpoch(e uint32) { atomic.StoreUint32(a.u32(offEpoch), e) }

// ReadEpoch appends to dst the pages written in epoch e, in ascending
// order, and clears that epoch's buffer for epoch e+2. Call it for a closed
// epoch: after SetEpoch(e+1) and a wait of Grace.
func (a *Area) ReadEpoch(e uint32, dst []uint64) []uint64 {
	buf := a.bufs[e&1]
	// Bytes one by one up to an 8-byte boundary (buffer 1 starts at one
	// only when the capacity is a multiple of 8), then words, then the tail.
	head := min(int(-uintptr(unsafe.Pointer(unsafe.SliceData(buf)))&7), len(buf))
	end := head + (len(buf)-head)&^7
	dst = readBytes(buf, 0, head, dst)
	base := unsafe.Pointer(unsafe.SliceData(buf))
	for i := head; i < end; i += 8 {
		w := (*uint64)(unsafe.Add(base, i))
		if *w == 0 {
			continue
		}
		// Swap, so a mark stored late into this word is never lost.
		v := atomic.SwapUint64(w, 0)
		for v != 0 {
			b := bits.TrailingZeros64(v) >> 3 // little endian: byte b of the word
			dst = append(dst, uint64(i+b))
			v &^= 0xff << (8 * b)
		}
	}
	return readBytes(buf, end, len(buf), dst)
}

// readBytes appends the marked pages of buf[from:to] and clears them.
func readBytes(buf []byte, from, to int, dst []uint64) []uint64 {
	for i := from; i < to; i++ {
		if buf[i] != 0 {
			buf[i] = 0
			dst = append(dst, uint64(i))
		}
	}
	return dst
}

// Stats are the plugin's counters and what it learnt from QEMU.
type Stats struct {
	Writes     uint64 // stores seen, summed over vCPUs (RAM, MMIO and out of range)
	OutOfRange uint64 // stores to RAM at or past Capacity, or that QEMU could not resolve
	IO         uint64 // stores to MMIO, not recorded as pages
	APIMin     uint32 // QEMU's oldest plugin API version
	APICur     uint32 // QEMU's plugin API version
	PluginAPI  uint32 // the plugin API version the plugin declared to this QEMU
	PID        int    // QEMU's process id
	Exited     bool   // QEMU has exited (its atexit ran)
}

// Stats reads the counters. Each vCPU's counter is read atomically; the
// sum is not a snapshot of one instant.
func (a *Area) Stats() Stats {
	s := Stats{
		APIMin:    atomic.LoadUint32(a.u32(offAPIMin)),
		APICur:    atomic.LoadUint32(a.u32(offAPICur)),
		PluginAPI: atomic.LoadUint32(a.u32(offPluginAPI)),
		PID:       int(atomic.LoadUint32(a.u32(offPID))),
		Exited:    atomic.LoadUint32(a.u32(offState)) == stateExited,
	}
	for i := range slotCount {
		off := slotOffset + i*slotSize
		s.Writes += atomic.LoadUint64(a.u64(off + slotWrites))
		s.OutOfRange += atomic.LoadUint64(a.u64(off + slotOOR))
		s.IO += atomic.LoadUint64(a.u64(off + slotIO))
	}
	return s
}

// Close unmaps the area and lets another reader open it. The file stays
// (the plugin owns it).
func (a *Area) Close() error {
	if a.mem == nil {
		return nil
	}
	err := unix.Munmap(a.mem)
	a.mem, a.bufs = nil, [2][]byte{}
	a.f.Close() // releases the lock
	if err != nil {
		return fmt.Errorf("unmap plugin area: %w", err)
	}
	return nil
}

// BusyError is Open's error for an area another process holds; it wraps
// ErrAreaBusy. A QEMU under KVM has no area, and its dirty log (eBPF) is
// kept to one pagecast process at a time by a lock file, whose holder is
// told the same way (KVM set).
type BusyError struct {
	Path   string
	Holder string   // who holds it, as said: "process 1234 (pagecast profile …)"
	Args   []string // the holder's command line, nil where it is not known
	KVM    bool     // Path is the lock file of a KVM QEMU's dirty log
}

func (e *BusyError) Error() string {
	if e.KVM {
		return fmt.Sprintf("the QEMU's dirty log is in use (lock %s), by %s: one pagecast process tracks a QEMU's dirty pages for a migration at a time; "+
			"wait for that one to end, or stop it", e.Path, e.Holder)
	}
	return fmt.Sprintf("open plugin area %s: %v, by %s: it has one reader at a time (another would take its epochs); "+
		"wait for that one to end, or stop it", e.Path, ErrAreaBusy, e.Holder)
}

func (e *BusyError) Unwrap() error { return ErrAreaBusy }

// Migrating reports whether the holder is pagecast migrate, whose engine
// is moving the VM (and not, say, a profile of it): its command, the
// first word after pagecast's own flags (--log-level takes a value), is
// migrate (any "migrate" among the words took a profile writing to a file
// of that name for one; found by a review walk).
func (e *BusyError) Migrating() bool {
	if len(e.Args) < 2 || !strings.HasPrefix(filepath.Base(e.Args[0]), "pagecast") {
		return false
	}
	for i := 1; i < len(e.Args); i++ {
		a := e.Args[i]
		if a == "--log-level" || a == "-log-level" {
			i++ // its value
			continue
		}
		if strings.HasPrefix(a, "-") {
			continue
		}
		return a == "migrate"
	}
	return false
}

// LockHolder names the process holding f's flock, from /proc/locks:
// "process 1234 (pagecast profile --qmp unix:q.sock)", or "another process"
// where it cannot be told, and its command line.
func LockHolder(f *os.File) (who string, args []string) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "another process", nil
	}
	// Lines such as "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF":
	// the device's major and minor in hex, then the inode.
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return "another process", nil
	}
	for _, line := range strings.Split(string(locks), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != id {
			continue
		}
		pid, err := strconv.Atoi(fields[4])
		if err != nil {
			continue
		}
		if pid == os.Getpid() {
			return fmt.Sprintf("this process (pid %d)", pid), nil
		}
		who := fmt.Sprintf("process %d", pid)
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(cmd) > 0 {
			args = strings.Split(strings.TrimSuffix(string(cmd), "\x00"), "\x00")
			who += " (" + strings.Join(args, " ") + ")"
		}
		return who, args
	}
	return "another process", nil
}

// u32 and u64 point at aligned header fields, shared with QEMU.
func (a *Area) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&a.mem[off])) }
func (a *Area) u64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&a.mem[off])) }

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }

// Attach maps the area of the plugin inside QEMU process pid and starts
// clean at epoch 1: whatever the plugin recorded before (the boot, an
// earlier profile) is discarded, each buffer cleared while the plugin
// writes into the other. It first removes the areas of QEMUs that have
// gone without removing theirs (RemoveStale).
func Attach(pid int) (*Area, error) {
	RemoveStale()
	shm, err := FindShm(pid)
	if err != nil {
		return nil, err
	}
	a, err := Open(shm)
	if err != nil {
		return nil, err
	}
	if st := a.Stats(); !samePID(pid, st.PID) {
		// Another QEMU's area by the same name: its pages are not
		// this guest's (a relative shm= found in pagecast's directory).
		a.Close()
		return nil, fmt.Errorf("the TCG plugin area %s is process %d's, not qemu %d's: give each QEMU's plugin a shm= of its own, as an absolute path (a relative one is the QEMU's working directory's when it started)", shm, st.PID, pid)
	}
	a.SetEpoch(0)
	time.Sleep(Grace)
	a.ReadEpoch(1, nil)
	a.SetEpoch(1)
	time.Sleep(Grace)
	a.ReadEpoch(0, nil)
	return a, nil
}
