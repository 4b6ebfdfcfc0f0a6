package bpf

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// Dirty tracking modes a hook serves.
const (
	ModeRing   = "ring"
	ModeBitmap = "bitmap"
)

// Hook is one place in the kernel where pagecast can see pages dirtied.
type Hook struct {
	Name    string   // as reported, e.g. "tp_btf/kvm_dirty_ring_push"
	Modes   []string // KVM dirty tracking modes it sees writes in
	About   string
	program string // program name in dirty.c
}

// Hooks lists every hook, best first.
var Hooks = []Hook{
	{"fentry/mark_page_dirty_in_slot", []string{ModeRing, ModeBitmap}, "every page KVM marks dirty", "fentry_mark_page_dirty"},
	{"tp_btf/kvm_dirty_ring_push", []string{ModeRing}, "every dirty ring push, typed arguments", "tp_btf_dirty_ring_push"},
	{"raw_tp/kvm_dirty_ring_push", []string{ModeRing}, "every dirty ring push, raw arguments", "raw_tp_dirty_ring_push"},
	{"tracepoint/kvm/kvm_dirty_ring_push", []string{ModeRing}, "every dirty ring push; needs the VMM's slot table", "tracepoint_dirty_ring_push"},
	{"tracepoint/kvm/kvm_page_fault", []string{ModeBitmap}, "write faults on write-protected pages", "tracepoint_page_fault"},
}

// HookByName finds a hook.
func HookByName(name string) (Hook, bool) {
	for _, h := range Hooks {
		if h.Name == name {
			return h, true
		}
	}
	return Hook{}, false
}

func (h Hook) serves(mode string) bool {
	for _, m := range h.Modes {
		if m == mode {
			return true
		}
	}
	return false
}

// Slot maps a KVM memory slot to guest page frames.
type Slot struct {
	ID      uint32
	BaseGFN uint64
	Pages   uint64
}

// Options configure a profiler.
type Options struct {
	PID      uint32 // the VMM process whose vCPUs are watched
	MaxPages uint64 // guest page frames tracked: pages [0, MaxPages)
	Mode     string // KVM dirty tracking mode of the VM: ModeRing or ModeBitmap
	Hook     string // a Hooks name; empty: the best that loads and attaches
	Slots    []Slot // the VMM's memory slots when known
	Events   bool   // also deliver every write on the events ring buffer
	// RingIndices also follows each dirty ring's push and reset indices
	// (Profiler.RingIndices), in ring mode.
	RingIndices bool
}

// Errors that say what is missing.
var (
	ErrNotRoot = errors.New("loading eBPF programs needs root (CAP_BPF and CAP_PERFMON)")
	ErrNoBPF   = errors.New("the kernel refuses eBPF programs")
	ErrNoHook  = errors.New("no usable KVM dirty tracking hook")
)

// Stats are the programs' counters, summed over CPUs.
type Stats struct {
	Events      uint64 // writes recorded
	OtherVM     uint64 // events of other processes, ignored
	SlotUnknown uint64 // dropped: memory slot not found
	OutOfRange  uint64 // dropped: page beyond MaxPages
	RingbufFull uint64 // raw events not delivered
	Contended   uint64 // history updates lost to concurrent writers
}

// Dropped is every event that reached a hook for the watched VM but was not
// recorded.
func (s Stats) Dropped() uint64 { return s.SlotUnknown + s.OutOfRange + s.Contended }

// PageState is one page's record, as the programs keep it.
type PageState = dirtyPageState

// HistoryBits is the length of a page's history in epochs.
const HistoryBits = 48

// Profiler is a loaded and attached set of dirty-page programs.
type Profiler struct {
	hook     Hook
	objs     *ebpf.Collection
	prog     *ebpf.Program
	link     link.Link
	pages    *ebpf.Map
	mem      *ebpf.Memory
	stats    *ebpf.Map
	epoch    *ebpf.Variable
	events   *ebpf.Map
	maxPage  uint64
	rings    *ebpf.Memory // with Options.RingIndices: the rings map
	ringBuf  []RingIndex
	resetGen *ebpf.Variable
	ringLks  []link.Link
	// Why better hooks were passed over, best first.
	Fallbacks []HookStatus
}

// HookStatus says whether a hook can be used, and if not, why.
type HookStatus struct {
	Hook Hook
	Err  error
}

// Load loads the programs for o.PID and attaches the chosen hook.
func Load(o Options) (*Profiler, error) {
	if o.MaxPages == 0 || o.MaxPages >= 1<<32 {
		// A map's size is 32 bits: 2^32 became 0, and every hook
		// failed to load, as if none could (found by a review walk).
		return nil, fmt.Errorf("load profiler: %d pages to track, want 1 to 2^32-1 (16 TiB of guest-physical addresses)", o.MaxPages)
	}
	if err := CheckPrivileges(); err != nil {
		return nil, err
	}
	var fallbacks []HookStatus
	for _, h := range Hooks {
		if o.Hook != "" && h.Name != o.Hook {
			continue
		}
		if !h.serves(o.Mode) {
			if o.Hook != "" {
				return nil, fmt.Errorf("hook %s does not see writes in dirty %s mode", h.Name, o.Mode)
			}
			continue
		}
		if h.Name == "tracepoint/kvm/kvm_dirty_ring_push" && len(o.Slots) == 0 {
			fallbacks = append(fallbacks, HookStatus{h, errors.New("needs the VMM's memory slots, which are unknown")})
			continue
		}
		p, err := load(h, o)
		if err == nil {
			p.Fallbacks = fallbacks
			return p, nil
		}
		if errors.Is(err, ErrNotRoot) {
			return nil, err
		}
		fallbacks = append(fallbacks, HookStatus{h, err})
	}
	if o.Hook != "" && len(fallbacks) == 0 {
		return nil, fmt.Errorf("unknown hook %q", o.Hook)
	}
	var b strings.Builder
	for _, f := range fallbacks {
		fmt.Fprintf(&b, "; %s: %v", f.Hook.Name, f.Err)
	}
	return nil, fmt.Errorf("%w for dirty %s mode%s", ErrNoHook, o.Mode, b.String())
}

// CheckPrivileges says whether this process may load eBPF programs.
func CheckPrivileges() error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("%w: %w", ErrNoBPF, err)
	}
	return nil
}

func load(h Hook, o Options) (_ *Profiler, err error) {
	spec, err := loadDirty()
	if err != nil {
		return nil, fmt.Errorf("read compiled programs: %w", err)
	}
	// Keep only the chosen program: the others may not load here.
	ringIndices := o.RingIndices && o.Mode == ModeRing
	for name := range spec.Programs {
		if name != h.program && !(ringIndices && ringIndexPrograms[name] != "") {
			delete(spec.Programs, name)
		}
	}
	spec.Maps["pages"].MaxEntries = uint32(o.MaxPages)
	if !o.Events {
		spec.Maps["events"].MaxEntries = uint32(os.Getpagesize()) // smallest allowed
	}
	if err := spec.Variables["target_tgid"].Set(o.PID); err != nil {
		return nil, err
	}
	var events uint8
	if o.Events {
		events = 1
	}
	if err := spec.Variables["emit_events"].Set(events); err != nil {
		return nil, err
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			// cilium/ebpf suggests raising MEMLOCK on EPERM, but that is
			// done: the kernel refused the program (the verifier's
			// reason, when it gave one, follows).
			msg := strings.Replace(err.Error(), " (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", "", 1)
			return nil, fmt.Errorf("load %s: the kernel refused it: %s: %w", h.Name, msg, os.ErrPermission)
		}
		return nil, fmt.Errorf("load %s: %w", h.Name, err)
	}
	p := &Profiler{
		hook:    h,
		objs:    coll,
		prog:    coll.Programs[h.program],
		pages:   coll.Maps["pages"],
		stats:   coll.Maps["stats"],
		events:  coll.Maps["events"],
		epoch:   coll.Variables["epoch"],
		maxPage: o.MaxPages,
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for _, s := range o.Slots {
		v := dirtySlotInfo{BaseGfn: s.BaseGFN, Npages: s.Pages}
		if err := coll.Maps["static_slots"].Put(s.ID, &v); err != nil {
			return nil, fmt.Errorf("slot %d: %w", s.ID, err)
		}
	}
	if p.mem, err = p.pages.Memory(); err != nil {
		return nil, fmt.Errorf("map page states: %w", err)
	}
	switch {
	case strings.HasPrefix(h.Name, "fentry/"), strings.HasPrefix(h.Name, "tp_btf/"):
		p.link, err = link.AttachTracing(link.TracingOptions{Program: p.prog})
	case strings.HasPrefix(h.Name, "raw_tp/"):
		p.link, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: strings.TrimPrefix(h.Name, "raw_tp/"), Program: p.prog})
	default:
		parts := strings.Split(h.Name, "/")
		if err = ensureTracefs(); err == nil {
			p.link, err = link.Tracepoint(parts[1], parts[2], p.prog, nil)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", h.Name, err)
	}
	if ringIndices {
		if p.rings, err = coll.Maps["rings"].Memory(); err != nil {
			return nil, fmt.Errorf("map ring indices: %w", err)
		}
		p.resetGen = coll.Variables["reset_gen"]
		if err := ensureTracefs(); err != nil {
			return nil, fmt.Errorf("ring indices: %w", err)
		}
		for _, name := range slices.Sorted(maps.Keys(ringIndexPrograms)) {
			l, err := link.Tracepoint("kvm", ringIndexPrograms[name], coll.Programs[name], nil)
			if err != nil {
				return nil, fmt.Errorf("attach the ring index program on tracepoint kvm/%s: %w", ringIndexPrograms[name], err)
			}
			p.ringLks = append(p.ringLks, l)
		}
	}
	return p, nil
}

// ringIndexPrograms are the programs that fill the rings map, by the KVM
// tracepoint each is on.
var ringIndexPrograms = map[string]string{
	"ring_push_index":  "kvm_dirty_ring_push",
	"ring_reset_index": "kvm_dirty_ring_reset",
}

// MaxRings is how many dirty rings (vCPU ids) RingIndices follows; a
// vCPU id past it counts as a write dropped (slot_unknown).
const MaxRings = 4096

// RingIndex is one dirty ring's indices (KVM's u32 counters, which wrap):
// Pushed (a u32 in 64 bits) is one past the entry KVM last pushed; Pending where its last
// reset stopped, in reset generation PendingGen (0: none seen), in force
// once a later generation has begun; Effective the reset before, in force.
type RingIndex = dirtyRingIndex

// RingIndices copies each ring's indices into dst (MaxRings long), each
// entry whole (not torn by a program run writing it), and returns the
// reset generation read after them: each ioctl that resets the rings
// begins a generation. It fails where the profiler was not loaded with
// Options.RingIndices.
func (p *Profiler) RingIndices(dst []RingIndex) (gen uint32, err error) {
	if p.rings == nil {
		return 0, errors.New("ring indices: not followed (Options.RingIndices)")
	}
	if len(dst) != MaxRings {
		return 0, fmt.Errorf("ring indices: %d entries, want %d", len(dst), MaxRings)
	}
	if len(p.ringBuf) != MaxRings {
		p.ringBuf = make([]RingIndex, MaxRings)
	}
	bytes := func(r []RingIndex) []byte {
		return unsafe.Slice((*byte)(unsafe.Pointer(&r[0])), len(r)*int(unsafe.Sizeof(r[0])))
	}
	if _, err := p.rings.ReadAt(bytes(dst), 0); err != nil {
		return 0, fmt.Errorf("ring indices: %w", err)
	}
	if _, err := p.rings.ReadAt(bytes(p.ringBuf), 0); err != nil {
		return 0, fmt.Errorf("ring indices: %w", err)
	}
	size := int64(unsafe.Sizeof(dst[0]))
	for i := range dst {
		// seq guards the reset's fields (one writer: the reset ioctl
		// of the moment); a reset caught mid-write is read again alone.
		for try := 0; dst[i].Seq != p.ringBuf[i].Seq || dst[i].Seq&1 != 0; try++ {
			if try == 10000 {
				return 0, fmt.Errorf("ring indices: ring %d's entry written all the time, never read whole", i)
			}
			one := dst[i : i+1]
			if _, err := p.rings.ReadAt(bytes(one), int64(i)*size); err != nil {
				return 0, fmt.Errorf("ring indices: %w", err)
			}
			if _, err := p.rings.ReadAt(bytes(p.ringBuf[i:i+1]), int64(i)*size); err != nil {
				return 0, fmt.Errorf("ring indices: %w", err)
			}
		}
	}
	if err := p.resetGen.Get(&gen); err != nil {
		return 0, fmt.Errorf("ring indices: %w", err)
	}
	return gen, nil
}

// Probe tries every hook for mode on the running kernel.
func Probe(mode string) []HookStatus {
	var out []HookStatus
	for _, h := range Hooks {
		if !h.serves(mode) {
			continue
		}
		o := Options{PID: 0xffffffff, MaxPages: 1, Mode: mode, Slots: []Slot{{ID: 0, Pages: 1}}}
		var err error
		if err = CheckPrivileges(); err == nil {
			var p *Profiler
			if p, err = load(h, o); err == nil {
				p.Close()
			}
		}
		out = append(out, HookStatus{h, err})
	}
	return out
}

// Hook is the hook in use.
func (p *Profiler) Hook() Hook { return p.hook }

// Program is the loaded program, for its run-time statistics.
func (p *Profiler) Program() *ebpf.Program { return p.prog }

// Events is the ring buffer of raw events (Options.Events).
func (p *Profiler) Events() *ebpf.Map { return p.events }

// SetEpoch starts epoch e: writes from now on set bit 0 of a page's history.
func (p *Profiler) SetEpoch(e uint32) error {
	return p.epoch.Set(e)
}

// ReadPages copies every page's record into dst (len MaxPages), straight
// from the map's memory.
func (p *Profiler) ReadPages(dst []PageState) error {
	if uint64(len(dst)) != p.maxPage {
		return fmt.Errorf("read pages: buffer of %d for %d pages", len(dst), p.maxPage)
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), len(dst)*int(unsafe.Sizeof(PageState{})))
	if _, err := p.mem.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("read pages: %w", err)
	}
	return nil
}

// Stats sums the programs' per-CPU counters, and the pages' write counts
// for Events (counting per event would cost every event a map update).
func (p *Profiler) Stats() (Stats, error) {
	var s Stats
	pages := make([]PageState, p.maxPage)
	if err := p.ReadPages(pages); err != nil {
		return s, err
	}
	for _, ps := range pages {
		s.Events += ps.Count
	}
	fields := []*uint64{&s.OtherVM, &s.SlotUnknown, &s.OutOfRange, &s.RingbufFull, &s.Contended}
	for i, f := range fields {
		var per []uint64
		if err := p.stats.Lookup(uint32(i), &per); err != nil {
			return s, fmt.Errorf("read stats: %w", err)
		}
		for _, v := range per {
			*f += v
		}
	}
	return s, nil
}

// Close detaches and unloads the programs.
func (p *Profiler) Close() error {
	for _, l := range p.ringLks {
		l.Close()
	}
	if p.link != nil {
		p.link.Close()
	}
	if p.objs != nil {
		p.objs.Close()
	}
	return nil
}

// DirtyIn reports whether a page's record shows a write in epoch e, given
// that the record was read while the current epoch was cur (e <= cur).
func DirtyIn(s PageState, e, cur uint32) bool {
	last := uint32(s.State & 0xffff)
	hist := s.State >> 16
	// The record was last shifted to epoch `last` (16 bits of it): the
	// most recent epoch at or before cur with those low bits.
	lastFull := cur - uint32(uint16(cur)-uint16(last))
	if e > lastFull {
		return false
	}
	back := lastFull - e
	return back < HistoryBits && hist>>back&1 != 0
}

// Floor attaches a program that does nothing to tp_btf/kvm_dirty_ring_push:
// its run time per event (with BPF statistics on) is what any program on
// the hook costs here, the baseline for the profiler's own cost. Close the
// returned link, then the program.
func Floor() (*ebpf.Program, link.Link, error) {
	if err := CheckPrivileges(); err != nil {
		return nil, nil, err
	}
	spec, err := loadDirty()
	if err != nil {
		return nil, nil, err
	}
	prog, err := ebpf.NewProgram(spec.Programs["tp_btf_floor"])
	if err != nil {
		return nil, nil, fmt.Errorf("load floor program: %w", err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		prog.Close()
		return nil, nil, fmt.Errorf("attach floor program: %w", err)
	}
	return prog, l, nil
}
