package qemu

import (
	"bufio"
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// RAMRange is one stretch of a guest's RAM in its guest-physical address
// space: Size bytes from address GPA hold RAM from byte Offset of its
// memory backend (the RAM file pagecast maps).
type RAMRange struct {
	GPA, Offset, Size uint64
}

// Layout is where a guest's RAM lies in guest-physical memory. KVM's dirty
// tracking names a page by its guest-physical frame, pagecast's engine and
// the RAM file by its offset in RAM: Page turns one into the other. The
// split differs by machine (a pc keeps 3 GiB below 4 GiB, a q35 2 GiB,
// and -machine max-ram-below-4g moves either), so a running QEMU's is
// read from it (ReadLayout).
type Layout struct {
	ranges []RAMRange // by GPA, not overlapping
	ram    uint64     // bytes of RAM
}

// legacyEnd is the end of the first MiB, whose top (VGA window, option
// ROMs, BIOS) a PC's firmware maps to RAM or away as it boots: a frame
// there is the RAM at its own offset when it is RAM at all.
const legacyEnd = 1 << 20

// SplitLayout is the layout of a guest whose RAM of ramBytes holds its
// first lowBytes below 4 GiB and the rest from 4 GiB up, as pc and q35
// machines put it.
func SplitLayout(ramBytes, lowBytes uint64) Layout {
	lowBytes = min(lowBytes, ramBytes)
	l := Layout{ram: ramBytes, ranges: []RAMRange{{GPA: 0, Offset: 0, Size: lowBytes}}}
	if ramBytes > lowBytes {
		l.ranges = append(l.ranges, RAMRange{GPA: 1 << 32, Offset: lowBytes, Size: ramBytes - lowBytes})
	}
	return l
}

// MachineLayout is the layout QEMU 7.2 gives a machine of type machine
// (QEMU's name: "pc", "q35", "pc-q35-7.2-machine", …) with ramBytes of RAM
// and no max-ram-below-4g: a q35 keeps all of it below 4 GiB under
// 2.75 GiB, else 2 GiB; any other machine is taken for a pc (LowMemory).
func MachineLayout(machine string, ramBytes uint64) Layout {
	return SplitLayout(ramBytes, LowMemoryOf(machine, ramBytes))
}

// LowMemoryOf is how much of a machine's RAM of ramBytes QEMU puts below
// 4 GiB (see MachineLayout).
func LowMemoryOf(machine string, ramBytes uint64) uint64 {
	if strings.Contains(machine, "q35") {
		if ramBytes >= 0xb0000000 {
			return 0x80000000
		}
		return ramBytes
	}
	return LowMemory(ramBytes)
}

// Ranges are the layout's stretches of RAM, by guest-physical address.
func (l Layout) Ranges() []RAMRange { return slices.Clone(l.ranges) }

// RAMBytes is the size of the RAM the layout places.
func (l Layout) RAMBytes() uint64 { return l.ram }

// Frames is the number of guest-physical 4 KiB frames up to the end of the
// highest RAM: what a dirty tracker naming pages by frame must cover.
func (l Layout) Frames() uint64 {
	var end uint64
	for _, r := range l.ranges {
		end = max(end, r.GPA+r.Size)
	}
	return (end + 4095) / 4096
}

// Page is the index in RAM (in 4 KiB pages) of guest-physical frame gfn;
// ok is false for a frame that is not RAM (a hole, device memory, past the
// end).
func (l Layout) Page(gfn uint64) (page uint64, ok bool) {
	if gfn < legacyEnd/4096 {
		return gfn, gfn < l.ram/4096
	}
	gpa := gfn << 12
	if gpa>>12 != gfn {
		return 0, false
	}
	// The first range holding gpa, if any: a layout has a handful.
	for _, r := range l.ranges {
		if gpa >= r.GPA && gpa-r.GPA < r.Size {
			return (r.Offset + gpa - r.GPA) / 4096, true
		}
	}
	return 0, false
}

// GPA is the guest-physical address of byte offset of RAM; ok is false
// for one the layout does not map (the top of the first MiB, usually).
func (l Layout) GPA(offset uint64) (gpa uint64, ok bool) {
	for _, r := range l.ranges {
		if offset >= r.Offset && offset-r.Offset < r.Size {
			return r.GPA + offset - r.Offset, true
		}
	}
	return 0, false
}

// ReadLayout reads where QEMU puts its RAM backend named backend (the
// memory backend's id; "" for whichever RAM is at address 0) of ramBytes:
// HMP's `info mtree -f`, the flattened view of the address space the
// vCPUs see.
func ReadLayout(mon Runner, backend string, ramBytes uint64) (Layout, error) {
	var out string
	if err := QMP(mon, "human-monitor-command", map[string]any{"command-line": "info mtree -f"}, &out); err != nil {
		return Layout{}, fmt.Errorf("read the guest's memory layout: %w", err)
	}
	return ParseLayout(out, backend, ramBytes)
}

// ParseLayout reads a layout from the text of HMP's `info mtree -f` (see
// ReadLayout). The flat view of address space "memory" lists each
// stretch of RAM as
//
//	0000000000100000-000000007fffffff (prio 0, ram): mem @0000000000100000 KVM
//
// (start-end inclusive, the region's name, its offset in it if not 0).
// Every byte of RAM but the top of the first MiB must be placed once, and
// nothing past the RAM's end, or the text is refused: a layout read wrong
// would hand a migration the wrong pages.
func ParseLayout(text, backend string, ramBytes uint64) (Layout, error) {
	if ramBytes == 0 || ramBytes%4096 != 0 {
		return Layout{}, fmt.Errorf("guest memory layout: RAM of %d bytes is not a whole number of 4 KiB pages", ramBytes)
	}
	l := Layout{ram: ramBytes}
	type named struct {
		RAMRange
		name string
	}
	// The view of address space "memory" (the vCPUs' outside SMM), and
	// those of the vCPUs in SMM (TCG's cpu-smm-N, KVM's KVM-SMRAM).
	var mem, smm []named
	var view *[]named
	found := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "FlatView #"):
			view = nil // a view begins: its AS lines follow
			continue
		case strings.HasPrefix(line, `AS "memory"`):
			view, found = &mem, true
			continue
		case strings.HasPrefix(line, `AS "cpu-smm-`), strings.HasPrefix(line, `AS "KVM-SMRAM"`): // TCG's SMM view, KVM's
			if view != &mem {
				view = &smm
			}
			continue
		case view == nil:
			continue
		}
		if r, name, ok := parseMtreeRAM(line); ok {
			*view = append(*view, named{r, name})
		}
	}
	if err := sc.Err(); err != nil {
		return Layout{}, fmt.Errorf("guest memory layout: %w", err)
	}
	if !found {
		return Layout{}, fmt.Errorf(`guest memory layout: no address space "memory" in QEMU's info mtree -f`)
	}
	if backend == "" {
		for _, r := range mem {
			if r.GPA == 0 {
				backend = r.name // the RAM at address 0
			}
		}
	}
	for _, r := range mem {
		if r.name == backend {
			l.ranges = append(l.ranges, r.RAMRange)
		}
	}
	if len(l.ranges) == 0 {
		return Layout{}, fmt.Errorf("guest memory layout: RAM %q is nowhere in the guest's address space (info mtree -f)", backend)
	}
	// RAM that only SMM sees (q35's TSEG, the top of the RAM below 4 GiB,
	// hidden outside SMM by tseg-blackhole once firmware enables it) is
	// placed where SMM sees it: outside SMM nothing writes it, and KVM's
	// dirty log names SMM's writes by its SMM slots, which the collector
	// counts as unknown (every page dirty). (Such a q35 was refused: "RAM
	// from 0x7ff00000 to its end is placed nowhere"; review 54.)
	for _, r := range smm {
		if r.name != backend {
			continue
		}
		if r.Offset > l.ram || r.Size > l.ram-r.Offset {
			return Layout{}, fmt.Errorf("guest memory layout of RAM %q: %#x-%#x (@%#x, seen in SMM) runs past the RAM's %d bytes", backend, r.GPA, r.GPA+r.Size-1, r.Offset, l.ram)
		}
		for _, p := range unplaced(l.ranges, r.RAMRange) {
			// The first MiB's RAM is its own frames (Page): SMM's alias
			// of the VGA window's RAM at 0xfeda0000 would have counted
			// frames up to 4 GiB for a 2 GiB guest (review 55).
			if p.Offset+p.Size > legacyEnd {
				l.ranges = append(l.ranges, p)
			}
		}
	}
	if err := l.check(); err != nil {
		return Layout{}, fmt.Errorf("guest memory layout of RAM %q: %w", backend, err)
	}
	return l, nil
}

// unplaced is the parts of r whose RAM (by offset) no range of placed
// holds, each at r's addresses for it.
func unplaced(placed []RAMRange, r RAMRange) []RAMRange {
	byOffset := slices.Clone(placed)
	slices.SortFunc(byOffset, func(a, b RAMRange) int { return cmp.Compare(a.Offset, b.Offset) })
	var out []RAMRange
	lo, hi := r.Offset, r.Offset+r.Size
	for _, p := range byOffset {
		if p.Offset+p.Size <= lo || p.Offset >= hi {
			continue
		}
		if p.Offset > lo {
			out = append(out, RAMRange{GPA: r.GPA + lo - r.Offset, Offset: lo, Size: p.Offset - lo})
		}
		lo = max(lo, p.Offset+p.Size)
	}
	if lo < hi {
		out = append(out, RAMRange{GPA: r.GPA + lo - r.Offset, Offset: lo, Size: hi - lo})
	}
	return out
}

// parseMtreeRAM reads one line of a flat view: a RAM region's range, name
// and offset; ok is false for any other line.
func parseMtreeRAM(line string) (r RAMRange, name string, ok bool) {
	span, rest, ok := strings.Cut(line, " (")
	if !ok {
		return r, "", false
	}
	attrs, rest, ok := strings.Cut(rest, "): ")
	if !ok || !strings.HasSuffix(attrs, ", ram") {
		return r, "", false
	}
	lo, hi, ok := strings.Cut(span, "-")
	if !ok {
		return r, "", false
	}
	start, err1 := strconv.ParseUint(lo, 16, 64)
	last, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || last < start || last == ^uint64(0) {
		return r, "", false
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return r, "", false
	}
	r = RAMRange{GPA: start, Size: last - start + 1}
	name = fields[0]
	if len(fields) > 1 && strings.HasPrefix(fields[1], "@") {
		off, err := strconv.ParseUint(fields[1][1:], 16, 64)
		if err != nil {
			return r, "", false
		}
		r.Offset = off
	}
	return r, name, true
}

// check says whether the layout places its RAM whole: page-aligned
// ranges, within the RAM, each byte once, and every byte placed but the
// top of the first MiB.
func (l *Layout) check() error {
	slices.SortFunc(l.ranges, func(a, b RAMRange) int { return cmp.Compare(a.GPA, b.GPA) })
	for i, r := range l.ranges {
		if r.GPA%4096 != 0 || r.Offset%4096 != 0 || r.Size%4096 != 0 {
			return fmt.Errorf("%#x-%#x (@%#x) is not in whole 4 KiB pages", r.GPA, r.GPA+r.Size-1, r.Offset)
		}
		if r.Offset > l.ram || r.Size > l.ram-r.Offset {
			return fmt.Errorf("%#x-%#x (@%#x) runs past the RAM's %d bytes", r.GPA, r.GPA+r.Size-1, r.Offset, l.ram)
		}
		if i > 0 && l.ranges[i-1].GPA+l.ranges[i-1].Size > r.GPA {
			return fmt.Errorf("%#x-%#x overlaps the range before it", r.GPA, r.GPA+r.Size-1)
		}
	}
	byOffset := slices.Clone(l.ranges)
	slices.SortFunc(byOffset, func(a, b RAMRange) int { return cmp.Compare(a.Offset, b.Offset) })
	var next uint64 // the first byte of RAM not yet placed
	for _, r := range byOffset {
		if r.Offset < next {
			return fmt.Errorf("RAM from %#x is placed twice", r.Offset)
		}
		if r.Offset > next && (next >= legacyEnd || r.Offset > legacyEnd) {
			return fmt.Errorf("RAM from %#x to %#x is placed nowhere", next, r.Offset)
		}
		next = r.Offset + r.Size
	}
	if next != l.ram {
		return fmt.Errorf("RAM from %#x to its end (%#x) is placed nowhere", next, l.ram)
	}
	return nil
}
