package guest

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"unsafe"
)

// Layout of the status page (little-endian u32 fields); mirrored by
// struct status in guest.c.
const (
	StatusMagic   = 0x54534350 // 'PCST'
	StatusVersion = 1

	OffMagic          = 0
	OffVersion        = 4
	OffState          = 8
	OffGo             = 12 // written by the host: nonzero opens the gate
	OffWorkload       = 16
	OffCPUs           = 20
	OffArenaFirstPage = 24
	OffArenaPages     = 28
	OffError          = 32
	OffReplayCount    = 36 // written by the host: entries in the replay table
	OffCPUStatus      = 64 // MaxCPUs slots of CPUStatusSize bytes

	CPUStatusSize = 16
	OffProgressLo = 0 // within a CPU slot: writes completed, low half
	OffProgressHi = 4 // high half
	OffCPUState   = 8 // the CPU's own State
)

// State is the guest's (or one CPU's) state in the status page.
type State uint32

// States, in the order a guest goes through them.
const (
	StateBooting State = iota
	StateWaiting       // at the gate, waiting for the host's go
	StateRunning
	StateDone // a finite workload has finished
	StateFailed
)

var stateNames = [...]string{"booting", "waiting", "running", "done", "failed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint32(s))
}

// ErrorCode says why the guest failed.
type ErrorCode uint32

// Error codes in the status page.
const (
	ErrorNone    ErrorCode = iota
	ErrorBoot              // not started by a multiboot loader
	ErrorMemory            // no memory size, or less than MinMemory
	ErrorCmdline           // bad command line; the serial line says which word
	ErrorReplay            // replay count 0 or above ReplayTableMax
)

var errorNames = [...]string{"none", "boot", "memory", "cmdline", "replay"}

func (e ErrorCode) String() string {
	if int(e) < len(errorNames) {
		return errorNames[e]
	}
	return fmt.Sprintf("error(%d)", uint32(e))
}

// Status is a snapshot of the guest's status page.
type Status struct {
	Magic, Version uint32
	State          State
	Workload       uint32 // index into Workloads()
	CPUs           uint32
	ArenaFirstPage uint32 // guest page number of the arena's first page
	ArenaPages     uint32
	Error          ErrorCode
	ReplayCount    uint32
	CPUStates      []State  // per CPU, CPUs entries
	Progress       []uint64 // writes completed per CPU, CPUs entries
}

// TotalProgress is the number of writes all CPUs have completed.
func (s Status) TotalProgress() uint64 {
	var n uint64
	for _, p := range s.Progress {
		n += p
	}
	return n
}

func (s Status) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v workload=%s cpus=%d arena=%d+%d progress=%d",
		s.State, WorkloadName(s.Workload), s.CPUs, s.ArenaFirstPage, s.ArenaPages, s.TotalProgress())
	if s.Error != ErrorNone {
		fmt.Fprintf(&b, " error=%v", s.Error)
	}
	return b.String()
}

// ReadStatus reads the status page at statusAddr in guest memory (indexed by
// physical address) while the guest runs. A guest that has not started yet
// reads as StateBooting with no CPUs. Fields are loaded atomically (the host
// is little-endian, like the guest), and each progress counter is read
// high, low, high until both highs agree, so a carry is never torn.
func ReadStatus(mem []byte, statusAddr uint64) (Status, error) {
	page, err := statusPage(mem, statusAddr)
	if err != nil {
		return Status{}, fmt.Errorf("read guest status: %w", err)
	}
	field := func(off int) uint32 { return load32(page, off) }

	s := Status{
		Magic:          field(OffMagic),
		Version:        field(OffVersion),
		State:          State(field(OffState)),
		Workload:       field(OffWorkload),
		CPUs:           field(OffCPUs),
		ArenaFirstPage: field(OffArenaFirstPage),
		ArenaPages:     field(OffArenaPages),
		Error:          ErrorCode(field(OffError)),
		ReplayCount:    field(OffReplayCount),
	}
	if s.Magic == 0 {
		return Status{}, nil // the guest has not initialised the page yet
	}
	if s.Magic != StatusMagic {
		return Status{}, fmt.Errorf("read guest status: bad magic %#x at %#x", s.Magic, statusAddr)
	}
	if s.Version != StatusVersion {
		return Status{}, fmt.Errorf("read guest status: version %d, want %d", s.Version, StatusVersion)
	}
	n := min(int(s.CPUs), MaxCPUs)
	s.CPUStates = make([]State, n)
	s.Progress = make([]uint64, n)
	for i := range n {
		slot := OffCPUStatus + i*CPUStatusSize
		s.CPUStates[i] = State(field(slot + OffCPUState))
		for {
			hi := field(slot + OffProgressHi)
			lo := field(slot + OffProgressLo)
			if field(slot+OffProgressHi) == hi {
				s.Progress[i] = uint64(hi)<<32 | uint64(lo)
				break
			}
		}
	}
	return s, nil
}

// Release opens the gate of a guest started with gate=1.
func Release(mem []byte, statusAddr uint64) error {
	page, err := statusPage(mem, statusAddr)
	if err != nil {
		return fmt.Errorf("release guest: %w", err)
	}
	store32(page, OffGo, 1)
	return nil
}

// WriteReplayTable writes the pages (absolute guest page numbers) a replay
// workload writes, in order, and their count. Call it before boot, or while
// the guest waits at its gate.
func WriteReplayTable(mem []byte, statusAddr uint64, pages []uint32) error {
	page, err := statusPage(mem, statusAddr)
	if err != nil {
		return fmt.Errorf("write replay table: %w", err)
	}
	if len(pages) > ReplayTableMax {
		return fmt.Errorf("write replay table: %d entries, at most %d fit", len(pages), ReplayTableMax)
	}
	if len(mem) < ArenaStart {
		return fmt.Errorf("write replay table: memory of %#x bytes ends before the arena", len(mem))
	}
	table := mem[ReplayTableAddr:]
	for i, p := range pages {
		binary.LittleEndian.PutUint32(table[4*i:], p)
	}
	store32(page, OffReplayCount, uint32(len(pages)))
	return nil
}

// statusPage is the status page's slice of guest memory.
func statusPage(mem []byte, statusAddr uint64) ([]byte, error) {
	if statusAddr%PageSize != 0 || statusAddr+PageSize > uint64(len(mem)) {
		return nil, fmt.Errorf("status page at %#x outside memory of %#x bytes or not page aligned",
			statusAddr, len(mem))
	}
	return mem[statusAddr : statusAddr+PageSize], nil
}

// load32 and store32 access a u32 field of a page that the guest reads and
// writes concurrently. off is a multiple of 4 and guest memory (mapped, or
// allocated by Go) is at least 8-byte aligned, so the access is aligned.
func load32(page []byte, off int) uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&page[off])))
}

func store32(page []byte, off int, v uint32) {
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&page[off])), v)
}
